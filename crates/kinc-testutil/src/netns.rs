//! Named network namespaces for root tests: made with `ip netns add`, loopback up,
//! deleted on drop (also when the test panics), entered from a scoped thread so the
//! test's own thread never changes namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::run;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<prefix><pid>x<n>`: unique to this process and call, so parallel tests and
/// parallel test binaries never collide.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with a unique name starting with `prefix`.
    pub fn new(prefix: &str) -> Netns {
        Netns::named(unique(prefix))
    }

    /// A namespace named exactly `name`; the caller keeps it unique.
    pub fn named(name: impl Into<String>) -> Netns {
        let name = name.into();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// An open handle on the namespace, for [`enter`].
    pub fn file(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("open netns {}: {e}", self.name))
    }

    /// `ip -n <ns> <args>`, its stdout.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        run("ip", &v)
    }

    /// `ip netns exec <ns> <prog> <args>`, its stdout; panics when it fails.
    #[track_caller]
    pub fn exec(&self, prog: &str, args: &[&str]) -> String {
        let mut v = vec!["netns", "exec", &self.name, prog];
        v.extend_from_slice(args);
        run("ip", &v)
    }

    /// The `ip netns exec <ns> <prog> <args>` command, for callers that want its status.
    pub fn command(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]).args(args);
        c
    }

    #[track_caller]
    pub fn sysctl(&self, key: &str, val: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={val}")]);
    }

    /// Runs `f` on a thread that joined this namespace; sockets made there stay in it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread into the namespace behind `f`; for threads a test spawns
/// to serve from inside a namespace.
pub fn enter(f: &File) {
    // SAFETY: setns changes only the calling thread's namespace, with a valid fd.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a scoped thread inside the namespace at `path`.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    let ns = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&ns);
            f()
        })
        .join()
        .expect("thread in netns panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let (a, b) = (unique("kt"), unique("kt"));
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("kt{}x", std::process::id())), "{a}");
    }

    #[test]
    #[ignore = "needs root, ip"]
    fn a_namespace_is_isolated_and_removed_on_drop() {
        crate::require_root_and!("ip");
        let ns = Netns::new("ktu");
        let path = ns.path();
        assert!(path.exists());
        // Only loopback, up, inside: the host's links are not there.
        let links = ns.ip(&["-o", "link", "show"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");
        let inode =
            |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let inside = ns.run(|| inode(Path::new("/proc/thread-self/ns/net")).unwrap());
        assert_eq!(inside, inode(&path).unwrap());
        assert_ne!(
            inside,
            inode(Path::new("/proc/thread-self/ns/net")).unwrap()
        );
        drop(ns);
        assert!(!path.exists());
    }
}
