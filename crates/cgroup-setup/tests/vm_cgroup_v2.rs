//! `cgroup-setup` on a real cgroup v2 kernel: Debian's kernel booted under QEMU with a
//! busybox initramfs holding the binary. One boot runs every case (guest-cases.sh); each
//! test asserts on its part of what the guest printed. Needs root (to read
//! /boot/vmlinuz-*), qemu-system-x86_64, busybox-static, util-linux's unshare, xz.

mod vm;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use cgroup_setup::controllers::{parse_list, ControllerSet};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgroup-setup");

struct Guest {
    lines: Vec<String>,
    console: String,
}

impl Guest {
    /// Values of the lines `KIND TAG VALUE`.
    fn all(&self, kind: &str, tag: &str) -> Vec<&str> {
        let prefix = format!("{kind} {tag} ");
        let bare = format!("{kind} {tag}");
        self.lines
            .iter()
            .filter_map(|l| {
                l.strip_prefix(&prefix)
                    .or_else(|| (l == &bare).then_some(""))
            })
            .collect()
    }

    fn one(&self, kind: &str, tag: &str) -> &str {
        match self.all(kind, tag)[..] {
            [v] => v,
            ref v => panic!(
                "expected one `{kind} {tag}` line, got {v:?}; console:\n{}",
                self.console
            ),
        }
    }

    fn rc(&self, tag: &str) -> i32 {
        self.one("RC", tag).trim().parse().unwrap()
    }

    fn json(&self, tag: &str) -> Value {
        let text = self.one("JSON", tag);
        serde_json::from_str(text).unwrap_or_else(|e| panic!("JSON {tag}: {e}: {text}"))
    }

    fn state(&self, tag: &str, key: &str) -> ControllerSet {
        let line = format!("{key} ");
        let v = self
            .all("STATE", tag)
            .into_iter()
            .find_map(|l| l.strip_prefix(&line).or_else(|| (l == key).then_some("")))
            .unwrap_or_else(|| panic!("no STATE {tag} {key}; console:\n{}", self.console));
        parse_list(v)
    }

    fn count(&self, tag: &str, key: &str) -> usize {
        let v = self.state(tag, key);
        let n = v.iter().next().map_or("0", String::as_str);
        n.parse()
            .unwrap_or_else(|_| panic!("STATE {tag} {key}: {v:?}"))
    }

    fn text(&self, kind: &str, tag: &str) -> String {
        self.all(kind, tag).join("\n")
    }
}

/// Panics naming what is missing (the tests are ignored unless asked for).
fn requirements() {
    kinc_testutil::require_root_and!("qemu-system-x86_64", "busybox", "unshare", "ldd", "xz");
    let busybox = kinc_testutil::which("busybox").unwrap();
    kinc_testutil::require(
        vm::find_kernel().is_some(),
        "a /boot/vmlinuz-* (linux-image-amd64)",
    );
    kinc_testutil::require(
        vm::initramfs::is_static(&busybox),
        "a static busybox (busybox-static)",
    );
}

/// Boots once for all tests in this file; the first caller boots, the others wait. A
/// failed boot is remembered too, so it is not retried by every test.
fn guest() -> &'static Guest {
    static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();
    let g = GUEST.get_or_init(|| {
        std::panic::catch_unwind(boot_guest).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match g {
        Ok(g) => g,
        Err(e) => panic!("the guest run failed: {e}"),
    }
}

fn boot_guest() -> Guest {
    let mut rd = vm::Initramfs::new();
    let busybox = kinc_testutil::which("busybox").unwrap();
    rd.add_host_file(&busybox, "/bin/busybox", 0o755);
    rd.add_binary_with_libs(Path::new(BIN), "/usr/local/bin/cgroup-setup");
    rd.add_binary_with_libs(
        &kinc_testutil::which("unshare").unwrap(),
        "/usr/bin/unshare",
    );
    rd.add_bytes("/vm/lib", include_str!("vm/guest-lib.sh"), 0o644);
    rd.add_bytes("/vm/inner", include_str!("vm/guest-ns.sh"), 0o755);
    let run = vm::boot(
        &vm::find_kernel().unwrap(),
        rd,
        include_str!("vm/guest-cases.sh"),
    );
    eprintln!("guest ran in {:?}", run.elapsed);
    for l in run.output().iter().filter(|l| l.starts_with("TIME ")) {
        eprintln!("{l}");
    }
    assert_eq!(
        run.status,
        Some(0),
        "guest script status; console:\n{}",
        run.console
    );
    let lines: Vec<String> = run.output().into_iter().map(str::to_string).collect();
    assert!(lines.iter().any(|l| l == "DONE"), "{}", run.console);
    Guest {
        lines,
        console: run.console,
    }
}

fn set(words: &str) -> ControllerSet {
    parse_list(words)
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs root, qemu-system-x86_64, busybox-static, unshare, ldd, xz, /boot/vmlinuz-*"]
fn real_root_gets_every_controller_down_to_kubelet_and_is_emptied() {
    requirements();
    let g = guest();
    assert_eq!(g.rc("root1"), 0, "{}", g.console);
    let j = g.json("root1");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["changed"], true);
    assert_eq!(j["nested"], false, "the VM's root is the real root");
    // Every controller the kernel has on v2 (the real root's cgroup.controllers), which
    // covers what /proc/cgroups lists for v2 and what kubelet needs.
    let kernel_v2 = g.state("root1", "controllers");
    // /proc/cgroups names io by its v1 name.
    let mut kernel = set(g.one("KERNEL", "-"));
    if kernel.remove("blkio") {
        kernel.insert("io".to_string());
    }
    for c in ["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "misc"] {
        assert!(kernel_v2.contains(c), "{c} missing in {kernel_v2:?}");
        assert!(
            kernel.contains(c),
            "{c} missing in /proc/cgroups {kernel:?}"
        );
    }
    assert_eq!(g.state("root1", "sc:/"), kernel_v2);
    assert_eq!(g.state("root1", "sc:/kubelet"), kernel_v2);
    assert_eq!(
        strings(&j["subtreeControl"]["/kubelet"]),
        kernel_v2,
        "the report matches the kernel"
    );
    // No user process is left in the root: PID 1, the shell, the sleepers and the
    // children the forking loop made while cgroup-setup worked all went to /init.scope.
    assert!(g.state("root1", "rootprocs").is_empty(), "{}", g.console);
    let moved = j["changes"]["moved"].as_array().unwrap();
    assert!(moved.len() >= 5, "{j}");
    assert!(moved
        .iter()
        .all(|m| m["from"] == "/" && m["to"] == "/init.scope"));
    assert!(moved.iter().any(|m| m["pid"] == 1), "PID 1 moved: {j}");
    assert_eq!(
        strings(&j["changes"]["created"]),
        set("/init.scope /kubelet")
    );
}

#[test]
#[ignore = "needs root, qemu-system-x86_64, busybox-static, unshare, ldd, xz, /boot/vmlinuz-*"]
fn second_run_in_the_same_boot_changes_nothing() {
    requirements();
    let g = guest();
    assert_eq!(g.rc("root2"), 0, "{}", g.console);
    let j = g.json("root2");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["changed"], false, "{j}");
    for k in ["created", "moved", "enabled"] {
        assert_eq!(j["changes"][k].as_array().unwrap().len(), 0, "{k}: {j}");
    }
    assert_eq!(g.rc("root2h"), 0);
    assert!(
        g.text("OUT", "root2h")
            .contains("(already set up, nothing changed)"),
        "{}",
        g.text("OUT", "root2h")
    );
    assert_eq!(g.text("ERR", "root2h"), "");
    assert_eq!(
        g.state("root2", "sc:/kubelet"),
        g.state("root1", "sc:/kubelet")
    );
    assert!(g.state("root2", "rootprocs").is_empty());
}

#[test]
#[ignore = "needs root, qemu-system-x86_64, busybox-static, unshare, ldd, xz, /boot/vmlinuz-*"]
fn controller_withheld_by_the_parent_is_named_with_the_host_fix_and_nothing_changes() {
    requirements();
    let g = guest();
    assert_eq!(
        g.state("withheld", "controllers"),
        set("cpu cpuset memory pids misc rdma"),
        "the parent delegates everything but io and hugetlb"
    );
    assert_eq!(g.rc("withheld"), 1, "{}", g.console);
    let j = g.json("withheld");
    assert_eq!(j["ok"], false);
    assert_eq!(j["nested"], true);
    assert_eq!(j["changed"], false, "refused before touching anything: {j}");
    let missing: Vec<_> = j["missingRequired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["controller"].as_str().unwrap(),
                m["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(missing, [("io", "notDelegated")], "{j}");
    assert_eq!(j["missingOptional"][0]["controller"], "hugetlb", "{j}");
    assert_eq!(
        j["hostFix"]["path"],
        "/etc/systemd/system/user@.service.d/delegate.conf"
    );
    assert_eq!(
        j["hostFix"]["content"],
        "[Service]\nDelegate=cpu cpuset io memory pids\n"
    );
    let err = g.text("ERR", "withheld");
    assert_eq!(g.rc("withheldh"), 1);
    let err_h = g.text("ERR", "withheldh");
    assert!(err.is_empty(), "--json keeps stderr clean: {err}");
    for needle in [
        "error: the host did not delegate the cgroup v2 controller(s) io to this container",
        "warning: optional controller hugetlb is not available",
        "/etc/systemd/system/user@.service.d/delegate.conf",
        "\n[Service]\nDelegate=cpu cpuset io memory pids\n",
        "sudo systemctl daemon-reload",
        "sudo systemctl restart user@$(id -u).service",
    ] {
        assert!(err_h.contains(needle), "{needle:?} not in:\n{err_h}");
    }
    // Processes still where they were, nothing enabled, no cgroup created.
    assert_eq!(g.state("withheld", "rootprocs").len(), 2, "{}", g.console);
    assert!(g.state("withheld", "sc:/").is_empty());
    assert_eq!(g.count("withheld", "leafprocs"), 0, "no leaf created");
}

#[test]
#[ignore = "needs root, qemu-system-x86_64, busybox-static, unshare, ldd, xz, /boot/vmlinuz-*"]
fn cgroup_namespace_below_a_delegated_subtree_is_set_up_like_a_container() {
    requirements();
    let g = guest();
    assert_eq!(g.one("CGNS", "ns"), "0::/", "at its cgroup namespace root");
    assert_eq!(g.rc("ns"), 0, "{}", g.console);
    let j = g.json("ns");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["nested"], true, "{j}");
    let delegated = set("cpu cpuset hugetlb io memory misc pids rdma");
    assert_eq!(g.state("ns", "controllers"), delegated);
    assert_eq!(g.state("ns", "sc:/"), delegated);
    assert_eq!(g.state("ns", "sc:/kubelet"), delegated);
    // The namespace root held this shell and a sleeper: both now in /init.scope.
    assert!(g.state("ns", "rootprocs").is_empty(), "{}", g.console);
    assert!(g.count("ns", "leafprocs") >= 2, "{}", g.console);
    let moved = j["changes"]["moved"].as_array().unwrap();
    // This shell, the sleeper and cgroup-setup itself.
    assert!(moved.len() >= 3, "{j}");
    // The second run, for people: nothing to do.
    assert_eq!(g.rc("nsh"), 0);
    let out = g.text("OUT", "nsh");
    assert!(
        out.contains("a cgroup namespace root below a delegated subtree"),
        "{out}"
    );
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(g.rc("ns-outer"), 0);
}
