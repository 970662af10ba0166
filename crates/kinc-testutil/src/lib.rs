//! Helpers shared by the integration tests of every crate.
//!
//! The rule for a test that needs root, a tool or a VM: it is marked
//! `#[ignore = "needs root, ip, nft"]` (its needs, as libtest then lists it), and its
//! first line checks them with [`require_root_and!`] or [`require`], which panic with
//! what is missing. So a plain `cargo test` reports it as ignored, with the reason, and
//! `cargo test -- --include-ignored` (CI, as root) runs it or fails: no test reports `ok`
//! without having run its assertions.

use std::path::{Path, PathBuf};

pub mod netns;

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

/// Panics with `what` unless `ok`: a privileged test (marked `#[ignore = ...]`) run
/// without what it needs fails, naming it, instead of passing untested.
#[track_caller]
pub fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "this test needs {what}; it is #[ignore]d for that reason, and was run anyway \
         (--include-ignored): run it as root with the packages of .ci/install-deps"
    );
}

/// [`require`] for root.
#[track_caller]
pub fn require_root() {
    require(is_root(), "root");
}

/// [`require`] for each tool being on PATH.
#[track_caller]
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    require(
        missing.is_empty(),
        &format!("{} on PATH", missing.join(", ")),
    );
}

/// The first line of a privileged test: panics unless root and every tool is on PATH.
#[macro_export]
macro_rules! require_root_and {
    ($($tool:expr),* $(,)?) => {
        $crate::require_root();
        $crate::require_tools(&[$($tool),*]);
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
    fn requirements_pass_or_panic_naming_what_is_missing() {
        require(true, "never shown");
        require_tools(&["sh"]);
        let e =
            std::panic::catch_unwind(|| require_tools(&["sh", "no-such-tool-kinc"])).unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.contains("needs no-such-tool-kinc on PATH"), "{msg}");
        assert!(!msg.contains("sh,"), "{msg}");
        let e = std::panic::catch_unwind(|| require(false, "a VM")).unwrap_err();
        assert!(e.downcast_ref::<String>().unwrap().contains("needs a VM"));
    }
}
