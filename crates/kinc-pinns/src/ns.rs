//! The namespaces pinns can pin and where their pins live.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// A namespace kind. The order is the order pins are bind-mounted in (as upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    User,
    Uts,
    Ipc,
    Net,
    Cgroup,
    Mnt,
}

impl Namespace {
    pub const ALL: [Namespace; 6] = [
        Namespace::User,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Cgroup,
        Namespace::Mnt,
    ];

    /// The name under `/proc/<pid>/ns/`, and the stem of its pin directory.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
            Namespace::Cgroup => "cgroup",
            Namespace::Mnt => "mnt",
        }
    }

    pub fn clone_flag(self) -> CloneFlags {
        match self {
            Namespace::User => CloneFlags::CLONE_NEWUSER,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a namespace is created for the pod or is pinns' own (`--net=host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    New,
    Host,
}

/// `<dir>/<ns>ns`: the directory CRI-O keeps one kind of pin in.
pub fn pin_dir(dir: &Path, ns: Namespace) -> PathBuf {
    dir.join(format!("{}ns", ns.name()))
}

/// `<dir>/<ns>ns/<file>`: where the namespace is pinned; CRI-O computes the same path
/// (`filepath.Join(namespacesDir, type+"ns", pinnedNamespace)`).
pub fn pin_path(dir: &Path, ns: Namespace, file: &str) -> PathBuf {
    pin_dir(dir, ns).join(file)
}

/// The namespace file of a process: `None` is pinns itself.
pub fn proc_ns_path(pid: Option<i32>, ns: Namespace) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/{}", ns.name())),
        None => PathBuf::from(format!("/proc/self/ns/{}", ns.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_live_in_a_directory_per_kind() {
        let d = Path::new("/var/run/crio/ns");
        let want = [
            (Namespace::User, "/var/run/crio/ns/userns/abc"),
            (Namespace::Uts, "/var/run/crio/ns/utsns/abc"),
            (Namespace::Ipc, "/var/run/crio/ns/ipcns/abc"),
            (Namespace::Net, "/var/run/crio/ns/netns/abc"),
            (Namespace::Cgroup, "/var/run/crio/ns/cgroupns/abc"),
            (Namespace::Mnt, "/var/run/crio/ns/mntns/abc"),
        ];
        for (ns, path) in want {
            assert_eq!(pin_path(d, ns, "abc"), Path::new(path));
        }
        assert_eq!(Namespace::ALL.len(), want.len());
    }

    #[test]
    fn proc_paths_name_the_process() {
        assert_eq!(
            proc_ns_path(None, Namespace::Net),
            Path::new("/proc/self/ns/net")
        );
        assert_eq!(
            proc_ns_path(Some(42), Namespace::Mnt),
            Path::new("/proc/42/ns/mnt")
        );
    }

    #[test]
    fn bind_order_is_upstreams() {
        let mut v = vec![
            Namespace::Mnt,
            Namespace::Net,
            Namespace::User,
            Namespace::Ipc,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Namespace::User,
                Namespace::Ipc,
                Namespace::Net,
                Namespace::Mnt
            ]
        );
    }
}
