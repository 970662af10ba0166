//! The two kernel interfaces the helper reads and writes: cgroupfs and procfs. Both are
//! traits so planning runs against a directory tree in a temp dir and the apply loop runs
//! against a simulated kernel in unit tests; the real implementations take their root
//! path as a parameter and only `main` names `/sys/fs/cgroup` and `/proc`.

use std::io;
use std::path::{Path, PathBuf};

/// A cgroup v2 filesystem. Cgroups are named by their path from the mount's root:
/// `/`, `/kubelet`, `/init.scope`.
pub trait Cgroupfs {
    fn read(&self, cgroup: &str, file: &str) -> io::Result<String>;
    /// One `write(2)` of `data`: the kernel acts on each write as a whole.
    fn write(&self, cgroup: &str, file: &str, data: &str) -> io::Result<()>;
    /// Creates the cgroup; an existing one is fine.
    fn mkdir(&self, cgroup: &str) -> io::Result<()>;
    fn exists(&self, cgroup: &str) -> bool;
    fn has_file(&self, cgroup: &str, file: &str) -> bool;
    /// The file's full path, for messages.
    fn path(&self, cgroup: &str, file: &str) -> PathBuf;
}

/// The real cgroupfs mounted at `root` (or a plain directory tree laid out like one).
pub struct HostCgroupfs {
    root: PathBuf,
}

impl HostCgroupfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn dir(&self, cgroup: &str) -> PathBuf {
        self.root.join(cgroup.trim_start_matches('/'))
    }
}

impl Cgroupfs for HostCgroupfs {
    fn read(&self, cgroup: &str, file: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(cgroup, file))
    }

    fn write(&self, cgroup: &str, file: &str, data: &str) -> io::Result<()> {
        use std::io::Write;
        // No O_CREAT: a cgroup interface file that isn't there must fail, not be created.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(cgroup, file))?;
        // write_all on one buffer is a single write(2) for these short strings; the kernel
        // accepts or rejects it as a whole.
        f.write_all(data.as_bytes())
    }

    fn mkdir(&self, cgroup: &str) -> io::Result<()> {
        match std::fs::create_dir(self.dir(cgroup)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn exists(&self, cgroup: &str) -> bool {
        self.dir(cgroup).is_dir()
    }

    fn has_file(&self, cgroup: &str, file: &str) -> bool {
        self.path(cgroup, file).exists()
    }

    fn path(&self, cgroup: &str, file: &str) -> PathBuf {
        self.dir(cgroup).join(file)
    }
}

/// The path of `name` below `cgroup`.
pub fn child(cgroup: &str, name: &str) -> String {
    if cgroup == "/" {
        format!("/{name}")
    } else {
        format!("{cgroup}/{name}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcKind {
    /// Exited (or never existed in this pid namespace).
    Gone,
    /// A kernel thread: the kernel refuses to move these, and they are exempt from the
    /// no-internal-process rule anyway (they only show up in the real root).
    Kernel,
    User,
}

pub trait ProcInfo {
    fn kind(&self, pid: u32) -> ProcKind;
}

/// procfs mounted at `root`.
pub struct HostProcfs {
    root: PathBuf,
}

impl HostProcfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcInfo for HostProcfs {
    fn kind(&self, pid: u32) -> ProcKind {
        match std::fs::read_to_string(self.root.join(pid.to_string()).join("stat")) {
            Ok(stat) => stat_kind(&stat),
            Err(_) => ProcKind::Gone,
        }
    }
}

/// Reads the flags (field 9) of a `/proc/<pid>/stat` line. `comm` (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn stat_kind(stat: &str) -> ProcKind {
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok());
    match flags {
        Some(f) if f & PF_KTHREAD != 0 => ProcKind::Kernel,
        Some(_) => ProcKind::User,
        None => ProcKind::Gone,
    }
}

/// Parses `cgroup.procs`: one pid per line.
pub fn parse_pids(text: &str, file: &Path) -> Result<Vec<u32>, crate::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| crate::Error::Parse {
                path: file.to_path_buf(),
                what: format!("pid {l:?}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_apart_by_pf_kthread() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2";
        let user = "1 (sh) S 0 1 1 0 -1 4194560 363 0 0 0 0 0 0 0 20 0 1 0 8";
        let odd = "77 (a) b (c)) R 1 77 77 0 -1 4194304 0 0";
        assert_eq!(stat_kind(kthread), ProcKind::Kernel);
        assert_eq!(stat_kind(user), ProcKind::User);
        assert_eq!(stat_kind(odd), ProcKind::User);
        assert_eq!(stat_kind(""), ProcKind::Gone);
    }

    #[test]
    fn child_paths() {
        assert_eq!(child("/", "init.scope"), "/init.scope");
        assert_eq!(child("/kubelet", "init.scope"), "/kubelet/init.scope");
    }

    #[test]
    fn host_cgroupfs_never_creates_interface_files() {
        let d = tempfile::tempdir().unwrap();
        let fs = HostCgroupfs::new(d.path());
        fs.mkdir("/a").unwrap();
        fs.mkdir("/a").unwrap();
        assert!(fs.exists("/a"));
        let e = fs.write("/a", "cgroup.procs", "1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!fs.has_file("/a", "cgroup.procs"));
    }
}
