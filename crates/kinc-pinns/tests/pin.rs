//! The built `pinns` creating and pinning namespaces for real (root only), checked from
//! outside: the pins are nsfs bind mounts of new namespaces that another process can
//! join, the sysctls are set there and not on the host, and failures leave nothing.

mod common;

use std::path::Path;

use common::*;
use nix::sys::statfs::{statfs, NSFS_MAGIC};

fn assert_pinned_new(ns: &str, pin: &Path, own: &str) {
    assert_eq!(
        statfs(pin).unwrap().filesystem_type(),
        NSFS_MAGIC,
        "{} is not an nsfs bind mount",
        pin.display()
    );
    assert_ne!(
        inode(pin),
        inode(format!("/proc/self/ns/{own}")),
        "{} pins the test's own {ns} namespace",
        pin.display()
    );
}

/// The inode of the user namespace that owns the namespace pinned at `pin`.
fn owning_userns(pin: &Path) -> u64 {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    // NS_GET_USERNS, _IO(0xb7, 0x1) in linux/nsfs.h.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let f = std::fs::File::open(pin).expect("open pin");
    let fd = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_USERNS as _) };
    assert!(
        fd >= 0,
        "NS_GET_USERNS on {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    owner.metadata().unwrap().ino()
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn pins_new_net_uts_ipc_with_their_sysctls() {
    let d = NsDir::new();
    let host_fwd = read_trim("/proc/sys/net/ipv4/ip_forward");
    let host_shm = read_trim("/proc/sys/kernel/shm_rmid_forced");
    // Both must change inside for the test to tell the namespaces from the host.
    let want_fwd = if host_fwd == "1" { "0" } else { "1" };
    let want_shm = if host_shm == "1" { "0" } else { "1" };
    let out = pinns(&[
        "-d",
        d.arg(),
        "-f",
        "pod1",
        "-s",
        &format!("net.ipv4.ip_forward={want_fwd}"),
        "-s",
        &format!("kernel.shm_rmid_forced={want_shm}"),
        "--ipc",
        "--net",
        "--uts",
    ]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "pinns stderr: {}", stderr(&out));

    for ns in ["net", "uts", "ipc"] {
        assert_pinned_new(ns, &d.pin(ns, "pod1"), ns);
    }
    assert_eq!(d.mounts().len(), 3, "{:?}", d.mounts());
    assert_eq!(
        nsenter(
            "net",
            &d.pin("net", "pod1"),
            &["cat", "/proc/sys/net/ipv4/ip_forward"]
        ),
        want_fwd
    );
    assert_eq!(
        nsenter(
            "ipc",
            &d.pin("ipc", "pod1"),
            &["cat", "/proc/sys/kernel/shm_rmid_forced"]
        ),
        want_shm
    );
    assert_eq!(read_trim("/proc/sys/net/ipv4/ip_forward"), host_fwd);
    assert_eq!(read_trim("/proc/sys/kernel/shm_rmid_forced"), host_shm);
    // The pins are the only thing keeping the namespaces: another pod gets others.
    let out = pinns(&["-d", d.arg(), "-f", "pod2", "--net"]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    assert_ne!(inode(d.pin("net", "pod1")), inode(d.pin("net", "pod2")));

    for m in d.mounts() {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).expect("unmount pin");
        std::fs::remove_file(&m).expect("remove pin");
    }
    assert!(d.mounts().is_empty());
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn host_mode_pins_pinns_own_namespace() {
    let d = NsDir::new();
    let out = pinns(&[
        "-d",
        d.arg(),
        "-f",
        "p",
        "--net=host",
        "--ipc=host",
        "--uts",
    ]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    assert_eq!(inode(d.pin("net", "p")), inode("/proc/self/ns/net"));
    assert_eq!(inode(d.pin("ipc", "p")), inode("/proc/self/ns/ipc"));
    assert_pinned_new("uts", &d.pin("uts", "p"), "uts");
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn failing_sysctl_leaves_no_mount_or_file() {
    let d = NsDir::new();
    let out = pinns(&[
        "-d",
        d.arg(),
        "-f",
        "p",
        "--net",
        "--ipc",
        "--uts",
        "-s",
        "net.ipv4.no_such_sysctl=1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "sysctl \"net.ipv4.no_such_sysctl=1\": write /proc/sys/net/ipv4/no_such_sysctl"
        ),
        "{err}"
    );
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    for ns in ["net", "ipc", "uts"] {
        assert!(!d.pin(ns, "p").exists(), "{ns} pin left behind");
    }
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn failing_bind_takes_back_earlier_pins() {
    let d = NsDir::new();
    // Binding uts and ipc works; net (bound last) fails on a directory in its place.
    std::fs::create_dir_all(d.pin("net", "p")).unwrap();
    let out = pinns(&["-d", d.arg(), "-f", "p", "--net", "--ipc", "--uts"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let want = format!(
        "bind-mount net namespace /proc/self/ns/net on {}",
        d.pin("net", "p").display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    assert!(!d.pin("uts", "p").exists() && !d.pin("ipc", "p").exists());
    // What pinns did not create stays.
    assert!(d.pin("net", "p").is_dir());
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn user_namespace_gets_mappings_and_owns_the_others() {
    let d = NsDir::new();
    let out = pinns(&[
        "-d",
        d.arg(),
        "-f",
        "p",
        "--ipc",
        "--net",
        "--uts",
        "--user",
        "--uid-mapping=0-100000-65536@",
        "--gid-mapping=0-200000-65536@",
        "-s",
        "net.ipv4.ping_group_range=0 65535",
    ]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    for ns in ["user", "net", "uts", "ipc"] {
        assert_pinned_new(ns, &d.pin(ns, "p"), ns);
    }
    let user = d.pin("user", "p");
    let maps = |f: &str| {
        nsenter("user", &user, &["cat", f])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(maps("/proc/self/uid_map"), "0 100000 65536");
    assert_eq!(maps("/proc/self/gid_map"), "0 200000 65536");
    let range = nsenter(
        "net",
        &d.pin("net", "p"),
        &["cat", "/proc/sys/net/ipv4/ping_group_range"],
    );
    // Written as gids of the new user namespace, read back as the host's gids.
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["200000", "265535"]
    );
    // The other namespaces were made inside the new user namespace, so it owns them.
    for ns in ["net", "uts", "ipc"] {
        assert_eq!(
            owning_userns(&d.pin(ns, "p")),
            inode(&user),
            "owner of {ns}"
        );
    }
}

#[test]
#[ignore = "needs root: unshare and bind-mount namespaces"]
fn mount_namespace_is_pinned_on_an_unbindable_mount() {
    let d = NsDir::new();
    let out = pinns(&["-d", d.arg(), "-f", "p", "--mnt"]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    assert_pinned_new("mnt", &d.pin("mnt", "p"), "mnt");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mntns = d.path().join("mntns").canonicalize().unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == mntns.to_str())
        .unwrap_or_else(|| panic!("{} is not a mount point", mntns.display()));
    assert!(line.contains(" unbindable "), "{line}");
    assert_eq!(nsenter("mount", &d.pin("mnt", "p"), &["true"]), "");
    // A second pod reuses the unbindable mount instead of stacking another.
    let out = pinns(&["-d", d.arg(), "-f", "q", "--mnt"]);
    assert!(out.status.success(), "pinns: {}", stderr(&out));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let n = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == mntns.to_str())
        .count();
    assert_eq!(n, 1, "mntns mounted {n} times");
}
