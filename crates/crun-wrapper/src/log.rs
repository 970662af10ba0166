//! One line per change, to stderr (CRI-O keeps the runtime's stderr) or to a file that
//! is rotated once it reaches a size, so nothing grows without bound.
//!
//! A line that cannot be written is dropped: the wrapper's job is to reach crun, and
//! stderr may be a closed pipe or a full disk (`eprintln!` would panic there).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

pub enum Logger {
    Stderr,
    File { path: PathBuf, max_bytes: u64 },
}

impl Logger {
    pub fn line(&self, msg: &str) {
        match self {
            Logger::Stderr => stderr_line(msg),
            Logger::File { path, max_bytes } => {
                if std::fs::metadata(path).is_ok_and(|m| m.len() >= *max_bytes) {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    let _ = std::fs::rename(path, old);
                }
                let line = format!(
                    "{} crun-wrapper[{}]: {msg}\n",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                    std::process::id()
                );
                let written = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    // One write per line: O_APPEND keeps concurrent wrappers' lines whole.
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    stderr_line(&format!("cannot write log {}: {e}; {msg}", path.display()));
                }
            }
        }
    }
}

/// `crun-wrapper: <msg>` on stderr, if stderr takes it.
pub fn stderr_line(msg: &str) {
    let _ = writeln!(std::io::stderr(), "crun-wrapper: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_log_rotates_at_limit() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("w.log");
        let log = Logger::File {
            path: path.clone(),
            max_bytes: 200,
        };
        for i in 0..50 {
            log.line(&format!("change number {i}"));
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(d.path().join("w.log.1")).unwrap().len();
        assert!(cur < 200 + 80 && old < 200 + 80, "{cur} {old}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("change number 49"));
    }
}
