//! The wrapper's own settings: a small TOML file plus environment overrides.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable naming the real crun (wins over the file).
pub const ENV_CRUN: &str = "KINC_CRUN";
/// Environment variable naming the config file (default `kinc_types::node::CRUN_WRAPPER_CONFIG`).
pub const ENV_CONFIG: &str = "KINC_CRUN_WRAPPER_CONFIG";
/// A log file is rotated to `<file>.1` once it reaches this size, unless configured.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read crun-wrapper config {path}: {err}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    /// `msg` says where and what, with at most a short excerpt of the file (toml's own
    /// `Display` quotes the whole offending line).
    #[error("invalid crun-wrapper config {path}: {msg}")]
    Parse { path: PathBuf, msg: String },
}

/// Contents of `crun-wrapper.toml`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Path of the real crun.
    pub crun: Option<PathBuf>,
    /// Pass `--no-new-keyring` on create/run.
    #[serde(default)]
    pub no_new_keyring: bool,
    /// Append change lines here instead of stderr.
    pub log_file: Option<PathBuf>,
    /// Size at which `log_file` is rotated to `<log_file>.1`.
    pub log_max_bytes: Option<u64>,
}

/// The settings in effect, and where the crun path came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub crun: PathBuf,
    pub crun_source: String,
    pub no_new_keyring: bool,
    pub log_file: Option<PathBuf>,
    pub log_max_bytes: u64,
}

impl Config {
    /// Reads the config file named by `KINC_CRUN_WRAPPER_CONFIG` or the default path
    /// (a missing default file means defaults), then applies `KINC_CRUN`.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (path, explicit) = match env(ENV_CONFIG).filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(kinc_types::node::CRUN_WRAPPER_CONFIG), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse_file(&path, &text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(err) => return Err(ConfigError::Read { path, err }),
        };
        Ok(Self::resolve(&path, file, env(ENV_CRUN)))
    }

    /// Merges defaults, the file and `KINC_CRUN` (in rising priority).
    pub fn resolve(path: &Path, file: Option<FileConfig>, env_crun: Option<String>) -> Config {
        let file = file.unwrap_or(FileConfig {
            crun: None,
            no_new_keyring: false,
            log_file: None,
            log_max_bytes: None,
        });
        let (crun, crun_source) = match (env_crun.filter(|c| !c.is_empty()), &file.crun) {
            (Some(c), _) => (PathBuf::from(c), format!("environment variable {ENV_CRUN}")),
            (None, Some(c)) => (c.clone(), format!("key `crun` in {}", path.display())),
            (None, None) => (
                PathBuf::from(kinc_types::node::REAL_CRUN),
                "the built-in default".to_string(),
            ),
        };
        Config {
            crun,
            crun_source,
            no_new_keyring: file.no_new_keyring,
            log_file: file.log_file,
            log_max_bytes: file.log_max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES),
        }
    }
}

pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let what = kinc_types::excerpt::bounded(err.message());
        let msg = match err.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!("line {line}, column {column}: {what}")
            }
            None => what,
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            msg,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_node_config_parses() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../image/files/etc/kinc/crun-wrapper.toml"
        ));
        let f = parse_file(p, &std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(f.crun.as_deref(), Some(Path::new("/usr/bin/crun")));
        assert!(f.no_new_keyring);
    }

    #[test]
    fn env_wins_over_file_and_file_over_default() {
        let p = Path::new("/etc/x.toml");
        let f = parse_file(p, "crun = \"/opt/crun\"\nno_new_keyring = true\n").unwrap();
        let c = Config::resolve(p, Some(f.clone()), None);
        assert_eq!(c.crun, Path::new("/opt/crun"));
        assert!(c.crun_source.contains("/etc/x.toml"));
        assert!(c.no_new_keyring);
        let c = Config::resolve(p, Some(f), Some("/e/crun".into()));
        assert_eq!(c.crun, Path::new("/e/crun"));
        let c = Config::resolve(p, None, None);
        assert_eq!(c.crun, Path::new(kinc_types::node::REAL_CRUN));
        assert!(!c.no_new_keyring);
        assert_eq!(c.log_max_bytes, DEFAULT_LOG_MAX_BYTES);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let e = parse_file(Path::new("/etc/x.toml"), "crunn = \"/x\"").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/x.toml") && msg.contains("crunn"),
            "{msg}"
        );
    }

    #[test]
    fn parse_errors_say_where_with_a_short_excerpt() {
        let text = format!(
            "no_new_keyring = true\ncrun = \"{}SECRET=hunter2\"\nlog_max_bytes = \"x\"\n",
            "A".repeat(100_000)
        );
        let msg = parse_file(Path::new("/etc/x.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid crun-wrapper config /etc/x.toml: line 3, column 17: "),
            "{msg}"
        );
        assert!(msg.len() < 200 && !msg.contains("SECRET"), "{msg}");
        let text = format!(
            "crun = \"/x\"\nlog_file = 7 # {}SECRET\n",
            "A".repeat(100_000)
        );
        let msg = parse_file(Path::new("/x.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2, column 12: invalid type: integer `7`"),
            "{msg}"
        );
        assert!(msg.len() < 200 && !msg.contains("SECRET"), "{msg}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let env = |k: &str| (k == ENV_CONFIG).then(|| "/nonexistent/kcw.toml".to_string());
        let e = Config::load(&env).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kcw.toml"));
    }
}
