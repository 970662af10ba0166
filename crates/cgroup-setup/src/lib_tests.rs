//! The whole run (plan, apply, verify, report) against the in-memory kernel.

use std::path::Path;

use super::*;
use crate::layout::classify;
use crate::testkit::{FakeKernel, ALL};

const V2: &str = "30 25 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

fn system<'a>(k: &'a FakeKernel, mountinfo: &str, init: &str) -> System<'a> {
    System {
        fs: k,
        procs: k,
        layout: classify(mountinfo, Path::new("/sys/fs/cgroup")),
        init_cgroup: Some(init.to_string()),
        kernel: Some(controllers::parse_list(ALL)),
    }
}

#[test]
fn container_run_then_rerun_is_a_noop() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1, 30]);
    let sys = system(&k, V2, "/");
    let r = run(&sys, &Options::default(), false);
    assert!(r.ok && r.changed, "{r:#?}");
    assert_eq!(r.nested, Some(true));
    let all = controllers::parse_list(ALL);
    assert_eq!(r.subtree_control["/"], all);
    assert_eq!(r.subtree_control["/kubelet"], all);
    let (out, err) = r.human();
    assert!(
        out.contains("moved 2 process(es) from / to /init.scope (1 30)"),
        "{out}"
    );
    assert!(
        out.contains(
            "enabled cpu cpuset hugetlb io memory misc pids rdma in /cgroup.subtree_control"
        ),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");

    let writes = k.writes.borrow().len();
    let r2 = run(&sys, &Options::default(), false);
    assert!(r2.ok && !r2.changed, "{r2:#?}");
    assert_eq!(k.writes.borrow().len(), writes);
    assert!(r2.human().0.contains("nothing changed"));
    let json: serde_json::Value = serde_json::from_str(&r2.to_json()).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["changed"], false);
    assert_eq!(
        json["subtreeControl"]["/kubelet"].as_array().unwrap().len(),
        8
    );
}

#[test]
fn withheld_controllers_change_nothing_and_say_how_to_delegate() {
    let k = FakeKernel::new("cpu memory pids hugetlb misc", true);
    k.add("/", &[1]);
    let r = run(&system(&k, V2, "/"), &Options::default(), false);
    assert!(!r.ok);
    assert!(!r.changed && k.writes.borrow().is_empty(), "untouched");
    let e = r.error.as_deref().unwrap();
    assert!(
        e.contains("did not delegate the cgroup v2 controller(s) cpuset io"),
        "{e}"
    );
    let h = r.hint.as_deref().unwrap();
    assert!(
        h.contains("/etc/systemd/system/user@.service.d/delegate.conf"),
        "{h}"
    );
    assert!(
        h.contains("[Service]\nDelegate=cpu cpuset io memory pids\n"),
        "{h}"
    );
    assert!(
        h.contains("systemctl daemon-reload") && h.contains("restart user@$(id -u).service"),
        "{h}"
    );
    let fix = r.host_fix.as_ref().unwrap();
    assert_eq!(fix.path, controllers::DELEGATE_DROPIN_PATH);
    let (_, err) = r.human();
    assert!(err.starts_with("error: the host did not delegate"), "{err}");
    assert!(err.contains("hint: rootless Podman"), "{err}");
}

#[test]
fn hybrid_host_is_refused_before_anything_is_read() {
    let k = FakeKernel::new(ALL, true);
    let hybrid = "26 25 0:24 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                  27 26 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                  28 26 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let r = run(&system(&k, hybrid, "/"), &Options::default(), false);
    assert!(!r.ok);
    assert!(r.error.as_deref().unwrap().contains("hybrid"));
    assert!(r
        .hint
        .as_deref()
        .unwrap()
        .contains("systemd.unified_cgroup_hierarchy=1"));
    assert!(k.writes.borrow().is_empty());
    assert_eq!(r.to_json().matches("\"kind\":\"hybrid\"").count(), 1);
}

#[test]
fn host_hierarchy_without_cgroup_namespace_is_refused() {
    let k = FakeKernel::new(ALL, false);
    k.add("/", &[1]);
    let r = run(
        &system(&k, V2, "/user.slice/user-1000.slice/libpod-abc.scope"),
        &Options::default(),
        false,
    );
    assert!(!r.ok);
    assert!(
        r.error.as_deref().unwrap().contains("whole host hierarchy"),
        "{r:?}"
    );
    assert!(r.hint.as_deref().unwrap().contains("--cgroupns=host"));
    assert!(k.writes.borrow().is_empty());
}

#[test]
fn dry_run_plans_without_writing() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1]);
    let r = run(&system(&k, V2, "/"), &Options::default(), true);
    assert!(r.ok && !r.changed);
    assert!(k.writes.borrow().is_empty());
    let (out, _) = r.human();
    assert!(
        out.contains("would move 1 process(es) from / to /init.scope"),
        "{out}"
    );
    assert!(out.contains("would create cgroup /kubelet"), "{out}");
}

#[test]
fn missing_optional_controllers_warn_but_succeed() {
    let k = FakeKernel::new("cpu cpuset io memory pids", true);
    let r = run(&system(&k, V2, "/init.scope"), &Options::default(), false);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    let (_, err) = r.human();
    assert!(
        err.contains(
            "warning: optional controller hugetlb is not available (the host did not delegate it"
        ),
        "{err}"
    );
}
