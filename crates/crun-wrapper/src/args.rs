//! crun's command line, as crun 1.8.1 (GNU argp) reads it: global options, the verb,
//! then the verb's options and the container id in any order.
//!
//! Only what the wrapper needs is extracted (verb, bundle, config file); the argv itself
//! is never rebuilt, so every call passes to crun exactly as it came, except for the
//! optional `--no-new-keyring` inserted right after `create`/`run`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One option of crun's argp tables: long name, short letter, whether it takes a value.
struct Opt {
    long: &'static str,
    short: Option<u8>,
    value: bool,
}

const fn opt(long: &'static str, short: Option<u8>, value: bool) -> Opt {
    Opt { long, short, value }
}

/// `crun --help` (1.8.1), plus `--log-level` from later releases.
const GLOBAL: &[Opt] = &[
    opt("cgroup-manager", None, true),
    opt("debug", None, false),
    opt("log", None, true),
    opt("log-format", None, true),
    opt("log-level", None, true),
    opt("root", None, true),
    opt("rootless", None, true),
    opt("systemd-cgroup", None, false),
    opt("help", Some(b'?'), false),
    opt("usage", None, false),
    opt("version", Some(b'V'), false),
    opt("version", Some(b'v'), false),
];

/// `crun create --help` and `crun run --help` (1.8.1); `detach` is run-only.
const CREATE_RUN: &[Opt] = &[
    opt("bundle", Some(b'b'), true),
    opt("console-socket", None, true),
    opt("detach", Some(b'd'), false),
    opt("config", Some(b'f'), true),
    opt("no-new-keyring", None, false),
    opt("no-pivot", None, false),
    opt("no-subreaper", None, false),
    opt("pid-file", None, true),
    opt("preserve-fds", None, true),
    opt("help", Some(b'?'), false),
    opt("usage", None, false),
];

/// What the wrapper learned from crun's argv.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrunCall {
    /// The verb (`create`, `run`, `state`, ...) and its index in argv (`argv[0]` excluded).
    pub verb: Option<(usize, String)>,
    /// `--bundle`/`-b` of create/run, last one wins like argp.
    pub bundle: Option<PathBuf>,
    /// `--config`/`-f` of create/run.
    pub config: Option<PathBuf>,
    /// First positional argument after the verb.
    pub container_id: Option<String>,
    /// The call already asks for `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// The call only asks for help/usage, so crun will not touch a bundle.
    pub help_only: bool,
}

impl CrunCall {
    /// Reads crun's arguments (without `argv[0]`).
    pub fn parse(args: &[OsString]) -> CrunCall {
        let mut call = CrunCall::default();
        let mut i = 0;
        // Global options end at the first non-option: the verb.
        while i < args.len() {
            let a = args[i].as_bytes();
            if a == b"--" {
                i += 1;
                break;
            }
            if a.len() > 1 && a[0] == b'-' {
                let (_, consumed) = take_option(GLOBAL, args, i, &mut |_, _| {});
                i += consumed;
            } else {
                break;
            }
        }
        let Some(verb) = args.get(i) else {
            return call;
        };
        let verb = verb.to_string_lossy().into_owned();
        let verb_index = i;
        i += 1;
        if !matches!(verb.as_str(), "create" | "run") {
            call.verb = Some((verb_index, verb));
            return call;
        }
        let mut positional_only = false;
        while i < args.len() {
            let a = args[i].as_bytes();
            if !positional_only && a == b"--" {
                positional_only = true;
                i += 1;
                continue;
            }
            if !positional_only && a.len() > 1 && a[0] == b'-' {
                let (_, consumed) = take_option(CREATE_RUN, args, i, &mut |name, value| match (
                    name, value,
                ) {
                    ("bundle", Some(v)) => call.bundle = Some(PathBuf::from(v)),
                    ("config", Some(v)) => call.config = Some(PathBuf::from(v)),
                    ("no-new-keyring", _) => call.no_new_keyring = true,
                    ("help" | "usage", _) => call.help_only = true,
                    _ => {}
                });
                i += consumed;
                continue;
            }
            if call.container_id.is_none() {
                call.container_id = Some(args[i].to_string_lossy().into_owned());
            }
            i += 1;
        }
        call.verb = Some((verb_index, verb));
        call
    }

    /// `create` and `run` are the only verbs that read a bundle's config.json.
    pub fn touches_bundle(&self) -> bool {
        !self.help_only && matches!(self.verb.as_ref(), Some((_, v)) if v == "create" || v == "run")
    }

    /// The spec crun will load: `--config` relative to the bundle (crun chdirs into the
    /// bundle before loading it), bundle defaulting to `cwd`.
    pub fn spec_path(&self, cwd: &Path) -> PathBuf {
        let bundle = match &self.bundle {
            Some(b) => cwd.join(b),
            None => cwd.to_path_buf(),
        };
        bundle.join(self.config.as_deref().unwrap_or(Path::new("config.json")))
    }

    /// argv with `--no-new-keyring` right after the verb, when the call is create/run
    /// and does not have it yet; otherwise the argv unchanged.
    pub fn with_no_new_keyring(&self, args: &[OsString]) -> Vec<OsString> {
        let mut out = args.to_vec();
        if let Some((idx, _)) = &self.verb {
            if self.touches_bundle() && !self.no_new_keyring {
                out.insert(idx + 1, OsString::from("--no-new-keyring"));
            }
        }
        out
    }
}

/// Reads the option at `args[i]` against `table`, calling `seen(long_name, value)` for each
/// option found (a short cluster like `-db DIR` holds several). Returns how many argv
/// entries were consumed. Unknown options are taken as flags: crun rejects them itself.
fn take_option(
    table: &[Opt],
    args: &[OsString],
    i: usize,
    seen: &mut dyn FnMut(&str, Option<&OsStr>),
) -> (bool, usize) {
    let a = args[i].as_bytes();
    if let Some(long) = a.strip_prefix(b"--") {
        let (name, inline) = match long.iter().position(|&c| c == b'=') {
            Some(p) => (&long[..p], Some(OsStr::from_bytes(&long[p + 1..]))),
            None => (long, None),
        };
        let Some(o) = find_long(table, name) else {
            return (false, 1);
        };
        if !o.value {
            seen(o.long, None);
            return (true, 1);
        }
        if let Some(v) = inline {
            seen(o.long, Some(v));
            return (true, 1);
        }
        let v = args.get(i + 1).map(|s| s.as_os_str());
        seen(o.long, v);
        return (true, if v.is_some() { 2 } else { 1 });
    }
    // Short cluster: flags first, a value-taking letter eats the rest or the next arg.
    let cluster = &a[1..];
    for (k, &c) in cluster.iter().enumerate() {
        let Some(o) = table.iter().find(|o| o.short == Some(c)) else {
            return (false, 1);
        };
        if !o.value {
            seen(o.long, None);
            continue;
        }
        let rest = &cluster[k + 1..];
        if !rest.is_empty() {
            seen(o.long, Some(OsStr::from_bytes(rest)));
            return (true, 1);
        }
        let v = args.get(i + 1).map(|s| s.as_os_str());
        seen(o.long, v);
        return (true, if v.is_some() { 2 } else { 1 });
    }
    (true, 1)
}

/// argp accepts an exact long name or an unambiguous prefix of one.
fn find_long<'t>(table: &'t [Opt], name: &[u8]) -> Option<&'t Opt> {
    if let Some(o) = table.iter().find(|o| o.long.as_bytes() == name) {
        return Some(o);
    }
    let mut hits = table
        .iter()
        .filter(|o| !name.is_empty() && o.long.as_bytes().starts_with(name));
    let first = hits.next()?;
    if hits.any(|o| o.long != first.long) {
        return None;
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> CrunCall {
        let v: Vec<OsString> = s.iter().map(OsString::from).collect();
        CrunCall::parse(&v)
    }

    fn verb(c: &CrunCall) -> Option<&str> {
        c.verb.as_ref().map(|(_, v)| v.as_str())
    }

    #[test]
    fn bundle_forms() {
        let cwd = Path::new("/cwd");
        for argv in [
            &["create", "--bundle", "/b", "id"][..],
            &["create", "-b", "/b", "id"],
            &["create", "--bundle=/b", "id"],
            &["create", "-b/b", "id"],
            &["create", "id", "--bundle", "/b"],
            &["create", "--bund", "/b", "id"],
            &["run", "-db", "/b", "id"],
        ] {
            let c = parse(argv);
            assert!(c.touches_bundle(), "{argv:?}");
            assert_eq!(c.spec_path(cwd), Path::new("/b/config.json"), "{argv:?}");
            assert_eq!(c.container_id.as_deref(), Some("id"), "{argv:?}");
        }
        let c = parse(&["create", "id"]);
        assert_eq!(c.spec_path(cwd), Path::new("/cwd/config.json"));
        let c = parse(&["create", "-b", "rel", "id"]);
        assert_eq!(c.spec_path(cwd), Path::new("/cwd/rel/config.json"));
    }

    #[test]
    fn config_is_relative_to_bundle() {
        let cwd = Path::new("/cwd");
        let c = parse(&["create", "-b", "/b", "--config", "other.json", "id"]);
        assert_eq!(c.spec_path(cwd), Path::new("/b/other.json"));
        let c = parse(&["create", "-f", "/abs/spec.json", "id"]);
        assert_eq!(c.spec_path(cwd), Path::new("/abs/spec.json"));
    }

    #[test]
    fn global_options_before_the_verb() {
        let c = parse(&[
            "--log-format=json",
            "--log",
            "/x/create/oci-log",
            "--root",
            "/run/create",
            "--systemd-cgroup",
            "--debug",
            "--cgroup-manager",
            "disabled",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p/create",
            "id",
        ]);
        assert_eq!(verb(&c), Some("create"));
        assert_eq!(c.verb.as_ref().unwrap().0, 9);
        assert_eq!(c.bundle.as_deref(), Some(Path::new("/b")));
    }

    #[test]
    fn create_in_paths_is_not_a_verb() {
        // H2: "create" in a --root/--log path or the id must not make `run`/`state` a create.
        let c = parse(&["--root", "create", "state", "create"]);
        assert_eq!(verb(&c), Some("state"));
        assert!(!c.touches_bundle());
        let c = parse(&["--log=/create", "delete", "--force", "create-1"]);
        assert_eq!(verb(&c), Some("delete"));
        assert!(!c.touches_bundle());
    }

    #[test]
    fn other_verbs_and_help_do_not_touch_bundles() {
        for argv in [
            &["--version"][..],
            &["state", "id"],
            &["exec", "--process", "/p", "id"],
            &["kill", "id", "9"],
            &["create", "--help"],
            &[],
        ] {
            assert!(!parse(argv).touches_bundle(), "{argv:?}");
        }
    }

    #[test]
    fn pid_file_value_is_not_the_id() {
        let c = parse(&[
            "create",
            "--pid-file",
            "pf",
            "--console-socket",
            "s",
            "the-id",
        ]);
        assert_eq!(c.container_id.as_deref(), Some("the-id"));
    }

    #[test]
    fn keyring_inserted_once_after_verb() {
        let argv: Vec<OsString> = ["--root", "/r", "create", "-b", "/b", "id"]
            .iter()
            .map(OsString::from)
            .collect();
        let c = CrunCall::parse(&argv);
        let out = c.with_no_new_keyring(&argv);
        assert_eq!(
            out,
            [
                "--root",
                "/r",
                "create",
                "--no-new-keyring",
                "-b",
                "/b",
                "id"
            ]
            .iter()
            .map(OsString::from)
            .collect::<Vec<_>>()
        );
        let c2 = CrunCall::parse(&out);
        assert!(c2.no_new_keyring);
        assert_eq!(c2.with_no_new_keyring(&out), out);
        let st: Vec<OsString> = ["state", "id"].iter().map(OsString::from).collect();
        assert_eq!(CrunCall::parse(&st).with_no_new_keyring(&st), st);
    }
}
