//! Helpers shared by the integration tests of every crate.
//!
//! The rule: a test that needs root or a missing tool fails loudly on CI (`CI` set,
//! CI runs as root with every package installed) and may skip, printing why, elsewhere.

use std::path::{Path, PathBuf};

pub mod netns;

/// True when running on CI (`CI` set to anything but empty, `0` or `false`).
pub fn on_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds `tool` in `PATH` (and the sbin directories a non-login root shell may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// Runs `prog args...` and returns its stdout; panics with the command, its stdout and
/// stderr when it cannot start or exits non-zero. For test set-up (`ip`, `nft`, ...).
#[track_caller]
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Returns whether the test may go on. When `ok` is false: on CI it panics with
/// `what`; elsewhere it prints `SKIP <test>: <what>` and returns false.
#[track_caller]
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if on_ci() {
        panic!("required for this test on CI: {what}");
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    eprintln!("SKIP {name}: {what}");
    false
}

/// `require` for root.
#[track_caller]
pub fn require_root() -> bool {
    require(is_root(), "must run as root")
}

/// `require` for each tool being on PATH.
#[track_caller]
pub fn require_tools(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|t| require(which(t).is_some(), &format!("`{t}` is not installed")))
}

/// Skips (or fails on CI) the calling test unless root and the tools are present.
#[macro_export]
macro_rules! require_root_and {
    ($($tool:expr),* $(,)?) => {
        if !$crate::require_root() || !$crate::require_tools(&[$($tool),*]) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-kinc").is_none());
    }

    #[test]
    fn run_returns_stdout_and_panics_on_failure() {
        assert_eq!(run("echo", &["hi"]), "hi\n");
        assert!(std::panic::catch_unwind(|| run("false", &[])).is_err());
    }

    #[test]
    fn require_true_passes() {
        assert!(require(true, "never shown"));
    }
}
