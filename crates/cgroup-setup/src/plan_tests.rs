//! Planning against cgroupfs trees laid out as files in a temp dir.

use std::path::Path;

use super::*;
use crate::controllers::{join, parse_list, parse_proc_cgroups};
use crate::fs::{HostCgroupfs, HostProcfs};
use crate::testkit::{cg_dir, proc_dir, ALL};

struct Tree {
    _dir: tempfile::TempDir,
    fs: HostCgroupfs,
    procs: HostProcfs,
}

fn tree(build: impl FnOnce(&Path, &Path)) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let cg = dir.path().join("cg");
    let pr = dir.path().join("proc");
    std::fs::create_dir_all(&pr).unwrap();
    build(&cg, &pr);
    Tree {
        fs: HostCgroupfs::new(&cg),
        procs: HostProcfs::new(&pr),
        _dir: dir,
    }
}

/// A fresh container: namespace root with systemd and a shell in it, nothing below.
fn fresh_container(cg: &Path, pr: &Path, controllers: &str) {
    cg_dir(cg, "/", controllers, "", &[1, 40]);
    std::fs::write(cg.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    proc_dir(pr, &[1, 40], &[]);
}

fn kernel_all() -> ControllerSet {
    parse_list(ALL)
}

#[test]
fn fresh_container_moves_everyone_and_enables_everything_down_to_kubelet() {
    let t = tree(|cg, pr| fresh_container(cg, pr, ALL));
    let p = plan(&t.fs, &t.procs, Some(&kernel_all()), &Options::default()).unwrap();
    assert!(p.nested);
    assert_eq!(
        join(&p.target),
        "cpu cpuset hugetlb io memory misc pids rdma"
    );
    assert_eq!(p.levels.len(), 2);
    let root = &p.levels[0];
    assert_eq!(
        (root.cgroup.as_str(), root.leaf.as_str()),
        ("/", "/init.scope")
    );
    assert_eq!(root.pids, vec![1, 40]);
    assert_eq!(root.enable, p.target);
    let kubelet = &p.levels[1];
    assert_eq!(kubelet.cgroup, "/kubelet");
    assert!(!kubelet.exists);
    assert_eq!(kubelet.enable, p.target);
    assert!(p.missing_required.is_empty() && p.missing_optional.is_empty());
    assert!(!p.is_noop());
}

#[test]
fn set_up_tree_plans_nothing() {
    let t = tree(|cg, pr| {
        fresh_container(cg, pr, ALL);
        cg_dir(cg, "/", ALL, ALL, &[]);
        cg_dir(cg, "/init.scope", ALL, "", &[1, 40]);
        cg_dir(cg, "/kubelet", ALL, ALL, &[]);
    });
    let p = plan(&t.fs, &t.procs, Some(&kernel_all()), &Options::default()).unwrap();
    assert!(p.is_noop(), "{p:#?}");
}

#[test]
fn kernel_threads_and_exited_pids_are_not_planned_to_move() {
    // The real root of a VM: kernel threads stay, pid 999 is listed but gone.
    let t = tree(|cg, pr| {
        cg_dir(cg, "/", ALL, "", &[1, 2, 3, 57, 999]);
        proc_dir(pr, &[1, 57], &[2, 3]);
    });
    let p = plan(&t.fs, &t.procs, Some(&kernel_all()), &Options::default()).unwrap();
    assert!(!p.nested, "the real root has no cgroup.events");
    assert_eq!(p.levels[0].pids, vec![1, 57]);
}

#[test]
fn only_what_is_missing_is_enabled_and_deep_roots_get_every_level() {
    let t = tree(|cg, pr| {
        fresh_container(cg, pr, ALL);
        cg_dir(cg, "/", ALL, "cpu memory", &[]);
        cg_dir(cg, "/init.scope", ALL, "", &[1]);
        cg_dir(cg, "/kinc", "cpu memory", "", &[]);
    });
    let opts = Options {
        kubelet_root: "/kinc/kubelet".into(),
        ..Options::default()
    };
    let p = plan(&t.fs, &t.procs, None, &opts).unwrap();
    let names: Vec<_> = p.levels.iter().map(|l| l.cgroup.as_str()).collect();
    assert_eq!(names, ["/", "/kinc", "/kinc/kubelet"]);
    assert_eq!(
        join(&p.levels[0].enable),
        "cpuset hugetlb io misc pids rdma"
    );
    assert_eq!(join(&p.levels[1].enable), ALL_SORTED);
    assert!(p.levels[1].exists && !p.levels[2].exists);
    assert!(p.levels[0].pids.is_empty());
}

const ALL_SORTED: &str = "cpu cpuset hugetlb io memory misc pids rdma";

#[test]
fn withheld_required_controller_is_reported_as_not_delegated() {
    // What trixie's user@.service delegates by default: cpu memory pids.
    let t = tree(|cg, pr| fresh_container(cg, pr, "cpu memory pids"));
    let p = plan(&t.fs, &t.procs, Some(&kernel_all()), &Options::default()).unwrap();
    let missing: Vec<_> = p
        .missing_required
        .iter()
        .map(|m| (m.controller.as_str(), m.reason))
        .collect();
    assert_eq!(
        missing,
        [
            ("cpuset", MissingReason::NotDelegated),
            ("io", MissingReason::NotDelegated)
        ]
    );
    let optional: Vec<_> = p
        .missing_optional
        .iter()
        .map(|m| m.controller.as_str())
        .collect();
    assert_eq!(optional, ["hugetlb", "misc"]);
}

#[test]
fn at_the_real_root_missing_means_kernel_or_v1() {
    let t = tree(|cg, pr| {
        cg_dir(cg, "/", "cpu memory pids io", "", &[1]);
        proc_dir(pr, &[1], &[]);
    });
    let kernel = parse_proc_cgroups("cpuset 3 1 1\ncpu 0 1 1\nmemory 0 1 1\n");
    let p = plan(&t.fs, &t.procs, Some(&kernel), &Options::default()).unwrap();
    let missing: Vec<_> = p
        .missing_required
        .iter()
        .map(|m| (m.controller.as_str(), m.reason))
        .collect();
    assert_eq!(missing, [("cpuset", MissingReason::BoundToV1)]);
    assert!(
        p.missing_optional.is_empty(),
        "the kernel has no hugetlb/misc: no warning"
    );
}

#[test]
fn threaded_cgroup_on_the_path_is_refused() {
    let t = tree(|cg, pr| {
        fresh_container(cg, pr, ALL);
        cg_dir(cg, "/kubelet", ALL, "", &[]);
        std::fs::write(cg.join("kubelet/cgroup.type"), "domain threaded\n").unwrap();
    });
    let e = plan(&t.fs, &t.procs, None, &Options::default()).unwrap_err();
    assert!(
        matches!(&e, Error::NotDomain { cgroup, kind } if cgroup == "/kubelet" && kind == "domain threaded"),
        "{e}"
    );
}

#[test]
fn leaf_with_controllers_enabled_is_refused() {
    let t = tree(|cg, pr| {
        fresh_container(cg, pr, ALL);
        cg_dir(cg, "/init.scope", ALL, "memory", &[]);
    });
    let e = plan(&t.fs, &t.procs, None, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("--leaf"), "{e}");
}

#[test]
fn bad_options_name_the_flag() {
    for (root, leaf, flag) in [
        ("kubelet", "init.scope", "--kubelet-cgroup-root"),
        ("/a/../b", "init.scope", "--kubelet-cgroup-root"),
        ("/cgroup.procs", "init.scope", "--kubelet-cgroup-root"),
        ("/kubelet", "a/b", "--leaf"),
        ("/kubelet", "", "--leaf"),
        ("/kubelet", "kubelet", "--leaf"),
    ] {
        let opts = Options {
            kubelet_root: root.into(),
            leaf: leaf.into(),
        };
        let e = levels_of(&opts).unwrap_err();
        assert!(e.to_string().contains(flag), "{root} {leaf}: {e}");
    }
    let opts = Options {
        kubelet_root: "/a//b/".into(),
        ..Options::default()
    };
    assert_eq!(levels_of(&opts).unwrap(), ["/", "/a", "/a/b"]);
}

#[test]
fn unreadable_tree_names_the_file() {
    let t = tree(|cg, _| std::fs::create_dir_all(cg).unwrap());
    let e = plan(&t.fs, &t.procs, None, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("cgroup.controllers"), "{e}");
}
