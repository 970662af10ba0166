use super::*;
use crate::host::fake::{self, put};

fn healthy() -> (tempfile::TempDir, HostFacts) {
    let d = tempfile::tempdir().unwrap();
    let host = fake::healthy(d.path());
    let f = HostFacts::of(&host, Some("5.4.2".into()), true);
    (d, f)
}

fn find<'a>(v: &'a [Finding], check: &str) -> &'a Finding {
    v.iter().find(|f| f.check == check).unwrap()
}

#[test]
fn healthy_host_is_all_ok() {
    let (_d, f) = healthy();
    let v = run_checks(&f);
    assert_eq!(v.len(), 15);
    for x in &v {
        assert_eq!(x.level, Level::Ok, "{x:?}");
    }
    assert!(blocking(&v, &[]).is_empty());
}

#[test]
fn every_finding_carries_its_fix() {
    let (d, mut f) = healthy();
    let r = d.path();
    std::fs::remove_file(r.join("sys/fs/cgroup/cgroup.controllers")).unwrap();
    put(
        r,
        "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers",
        "cpu memory pids",
    );
    put(
        r,
        "/sys/fs/cgroup/user.slice/user-1000.slice/pids.max",
        "4096",
    );
    std::fs::remove_file(r.join("var/lib/systemd/linger/alice")).unwrap();
    put(r, "/etc/subuid", "alice:100000:1000\n");
    put(r, "/proc/sys/fs/inotify/max_user_instances", "128\n");
    put(r, "/proc/sys/kernel/keys/maxkeys", "200\n");
    put(r, "/proc/sys/net/ipv4/ip_forward", "0\n");
    std::fs::remove_dir_all(r.join("sys/module/nft_chain_nat")).unwrap();
    f.podman_version = Some("4.3.1".into());
    f.nofile_hard = 20000;
    f.systemd_user = false;
    f.first_port_free = false;
    let v = run_checks(&f);
    for x in &v {
        if x.check == "rootless" || x.check == "subgid" {
            assert_eq!(x.level, Level::Ok, "{x:?}");
        } else {
            assert_ne!(x.level, Level::Ok, "{x:?}");
            assert!(x.fix.as_deref().is_some_and(|s| !s.is_empty()), "{x:?}");
        }
    }
    assert!(find(&v, "cgroup-delegation").summary.contains("cpuset io"));
    // Missing controllers stop a create: the node's cgroup-setup would refuse later.
    assert_eq!(find(&v, "cgroup-delegation").level, Level::Fail);
    assert!(find(&v, "cgroup-delegation")
        .fix
        .as_ref()
        .unwrap()
        .contains("Delegate=cpu cpuset io memory pids"));
    assert!(find(&v, "linger")
        .fix
        .as_ref()
        .unwrap()
        .contains("enable-linger alice"));
    assert!(find(&v, "subuid")
        .fix
        .as_ref()
        .unwrap()
        .contains("usermod --add-subuids"));
    assert!(find(&v, "pids-limit")
        .fix
        .as_ref()
        .unwrap()
        .contains("user-1000.slice TasksMax=infinity"));
    assert!(find(&v, "nf-tables").summary.contains("nft_chain_nat"));
    assert!(find(&v, "keyring")
        .fix
        .as_ref()
        .unwrap()
        .contains("kernel.keys.maxkeys"));
    let mut names: Vec<&str> = blocking(&v, &[]).iter().map(|f| f.check).collect();
    names.sort();
    assert_eq!(names, vec!["cgroup-delegation", "cgroup-v2", "subuid"]);
    let skipped = blocking(
        &v,
        &[
            "cgroup-v2".into(),
            "subuid".into(),
            "cgroup-delegation".into(),
        ],
    );
    assert!(skipped.is_empty());
}

#[test]
fn missing_or_ancient_podman_blocks() {
    let (_d, mut f) = healthy();
    f.podman_version = None;
    assert_eq!(find(&run_checks(&f), "podman").level, Level::Fail);
    f.podman_version = Some("3.4.4".into());
    assert_eq!(find(&run_checks(&f), "podman").level, Level::Fail);
}

#[test]
fn keyring_nearly_full_warns() {
    let (d, f) = healthy();
    put(
        d.path(),
        "/proc/key-users",
        " 1000:   5 5/5 19000/20000 50/400000\n",
    );
    let k = keyring(&f);
    assert_eq!(k.level, Level::Warn);
    assert!(k.summary.contains("19000 of 20000"), "{k:?}");
}

#[test]
fn root_is_checked_against_root_limits() {
    let (d, mut f) = healthy();
    f.uid = 0;
    f.user = "root".into();
    put(d.path(), "/proc/sys/kernel/keys/root_maxkeys", "1000000\n");
    let v = run_checks(&f);
    assert_eq!(find(&v, "rootless").level, Level::Warn);
    assert_eq!(find(&v, "subuid").level, Level::Ok);
    assert_eq!(find(&v, "keyring").level, Level::Ok);
}

#[test]
fn facts_come_from_the_host_and_what_podman_and_systemd_said() {
    let d = tempfile::tempdir().unwrap();
    let mut host = fake::healthy(d.path());
    host.port_free = Box::new(|p| p != crate::alloc::FIRST_API_PORT);
    let f = HostFacts::of(&host, None, false);
    assert_eq!(f.root, d.path());
    assert_eq!((f.uid, f.user.as_str()), (fake::UID, fake::USER));
    assert_eq!(f.nofile_hard, host.nofile_hard);
    assert_eq!(f.podman_version, None);
    assert!(!f.systemd_user && !f.first_port_free);
    assert_eq!(find(&run_checks(&f), "ports").level, Level::Warn);
}
