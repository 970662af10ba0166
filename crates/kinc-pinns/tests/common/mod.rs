//! Helpers for running the built `pinns` and cleaning up what it mounts.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::{umount2, MntFlags};

pub const PINNS: &str = env!("CARGO_BIN_EXE_pinns");

pub fn pinns(args: &[&str]) -> Output {
    Command::new(PINNS).args(args).output().expect("run pinns")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temporary namespaces directory; dropping it unmounts whatever is mounted below it
/// (deepest first), then removes it.
pub struct NsDir {
    pub dir: tempfile::TempDir,
}

impl NsDir {
    /// Only the root-only tests (`#[ignore = "needs root: ..."]`) make one: run without
    /// root they fail here, saying so, instead of on the first mount.
    pub fn new() -> NsDir {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test needs root (it is #[ignore]d for that reason)"
        );
        NsDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&self) -> &str {
        self.path().to_str().expect("utf-8 tempdir")
    }

    pub fn pin(&self, ns: &str, file: &str) -> PathBuf {
        self.path().join(format!("{ns}ns")).join(file)
    }

    /// Mount points at or below the directory, deepest and latest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        let root = self.path().canonicalize().expect("canonical tempdir");
        let mut v: Vec<PathBuf> = kinc_pinns::pin::mount_points(&info)
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&root))
            .collect();
        v.reverse();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        v
    }
}

impl Drop for NsDir {
    fn drop(&mut self) {
        for m in self.mounts() {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
    }
}

pub fn inode(path: impl AsRef<Path>) -> u64 {
    let p = path.as_ref();
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

/// Runs `nsenter --<kind>=<pin> <cmd...>` and returns its trimmed stdout.
pub fn nsenter(kind: &str, pin: &Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{kind}={}", pin.display()))
        .args(cmd)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter --{kind}={} {cmd:?}: {}",
        pin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .to_string()
}
