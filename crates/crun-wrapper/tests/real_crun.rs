//! Real crun (Debian's 1.8.1), as root in CI: for each spec that plain crun refuses in a
//! rootless or nested caller, the wrapper runs it to completion; the user never changes.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::*;

const CRUN: &str = "/usr/bin/crun";

struct Case {
    name: &'static str,
    edit: fn(&mut Value),
    /// What plain crun says (crun 1.8.1's message).
    crun_error: &'static str,
    /// The field the wrapper must report changing.
    field: &'static str,
}

const LIMITS: Limits = Limits {
    oom_score_adj: 500,
    nofile_hard: 20000,
    nproc_hard: 50000,
};

fn oom(s: &mut Value) {
    s["process"]["oomScoreAdj"] = json!(-998);
}
fn nofile(s: &mut Value) {
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]);
}
fn nproc(s: &mut Value) {
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_NPROC", "hard": 4194304, "soft": 4194304}]);
}
fn mknod(s: &mut Value) {
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    }
}
fn ping(s: &mut Value) {
    s["linux"]["sysctl"] = json!({"net.ipv4.ping_group_range": "0 2147483647"});
}

const NESTED_CASES: &[Case] = &[
    Case {
        name: "oom",
        edit: oom,
        crun_error: "oom_score_adj",
        field: "process.oomScoreAdj",
    },
    Case {
        name: "nofile",
        edit: nofile,
        crun_error: "RLIMIT_NOFILE",
        field: "process.rlimits[RLIMIT_NOFILE].hard",
    },
    Case {
        name: "nproc",
        edit: nproc,
        crun_error: "RLIMIT_NPROC",
        field: "process.rlimits[RLIMIT_NPROC].hard",
    },
    Case {
        name: "mknod",
        edit: mknod,
        crun_error: "capset",
        field: "process.capabilities.effective",
    },
    Case {
        name: "ping",
        edit: ping,
        crun_error: "ping_group_range",
        field: "linux.sysctl.net.ipv4.ping_group_range",
    },
];

const ROOTLESS_CASES: &[Case] = &[
    Case {
        name: "oom",
        edit: oom,
        crun_error: "oom_score_adj",
        field: "process.oomScoreAdj",
    },
    Case {
        name: "nofile",
        edit: nofile,
        crun_error: "RLIMIT_NOFILE",
        field: "process.rlimits[RLIMIT_NOFILE].hard",
    },
];

/// `crun --root <bundle>/state --cgroup-manager=disabled run --bundle <bundle> <id>`.
fn run(
    user: &TestUser,
    mode: Mode,
    lab: &Lab,
    program: &Path,
    bundle: &Path,
    id: &str,
) -> (bool, String, String) {
    let state = bundle.join("state");
    let out = run_as(
        user,
        mode,
        LIMITS,
        lab,
        program,
        &[
            "--root",
            state.to_str().unwrap(),
            "--cgroup-manager=disabled",
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            id,
        ],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rootless_spec(user: &TestUser, lab: &Lab, args: &[&str]) -> Value {
    let mut s = base_spec(&lab.rootfs, args);
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    s["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": user.subuid, "size": 65536}]);
    s["linux"]["gidMappings"] = json!([
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": user.subgid, "size": 65536}]);
    s
}

fn spec_for(mode: Mode, user: &TestUser, lab: &Lab, args: &[&str]) -> Value {
    match mode {
        Mode::Nested => base_spec(&lab.rootfs, args),
        Mode::Rootless => rootless_spec(user, lab, args),
    }
}

fn check_mode(mode: Mode, tag: &str, cases: &[Case]) {
    let user = TestUser::create(tag);
    let lab = Lab::new(&user);
    let id = |n: &str| format!("kcw-{}-{tag}-{n}", std::process::id());
    let ok_args = ["/bin/sh", "-c", "echo ok"];

    // The reduced spec itself runs under plain crun: every failure below is the case's.
    let b = lab.bundle(&user, "base", &spec_for(mode, &user, &lab, &ok_args));
    let (ok, out, err) = run(&user, mode, &lab, CRUN.as_ref(), &b, &id("base"));
    assert!(
        ok && out == "ok\n",
        "{mode:?} base spec under plain crun: {out} {err}"
    );

    for c in cases {
        let mut spec = spec_for(mode, &user, &lab, &ok_args);
        (c.edit)(&mut spec);
        let plain = lab.bundle(&user, &format!("{}-plain", c.name), &spec);
        let (ok, _, err) = run(&user, mode, &lab, CRUN.as_ref(), &plain, &id(c.name));
        assert!(
            !ok && err.contains(c.crun_error),
            "{mode:?} {}: plain crun should fail with {}: {err}",
            c.name,
            c.crun_error
        );

        let wrapped = lab.bundle(&user, &format!("{}-wrap", c.name), &spec);
        let (ok, out, err) = run(&user, mode, &lab, &lab.wrapper, &wrapped, &id(c.name));
        assert!(
            ok && out == "ok\n",
            "{mode:?} {}: wrapper should run it: out={out:?} err={err}",
            c.name
        );
        assert!(
            err.contains(c.field),
            "{mode:?} {}: no log line for {}: {err}",
            c.name,
            c.field
        );
        // The rewrite kept the file's mode and left nothing else in the bundle.
        let meta = std::fs::metadata(wrapped.join("config.json")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let mut names: Vec<_> = std::fs::read_dir(&wrapped)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["config.json", "state"], "{mode:?} {}", c.name);
    }

    // runAsUser 1000 in a spec that needs rewriting: runs as 1000, not as root.
    let mut spec = spec_for(mode, &user, &lab, &["/bin/sh", "-c", "id -u; id -g; id -G"]);
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]});
    oom(&mut spec);
    let plain = lab.bundle(&user, "uid-plain", &spec);
    let (ok, _, err) = run(&user, mode, &lab, CRUN.as_ref(), &plain, &id("uid"));
    assert!(
        !ok,
        "{mode:?} uid 1000 + oom -998 should fail under plain crun: {err}"
    );
    let wrapped = lab.bundle(&user, "uid-wrap", &spec);
    let (ok, out, err) = run(&user, mode, &lab, &lab.wrapper, &wrapped, &id("uid"));
    assert!(ok, "{mode:?} uid 1000 via wrapper: {err}");
    assert_eq!(out, "1000\n1000\n1000 2000\n", "{mode:?}: {err}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(wrapped.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["process"]["user"], spec["process"]["user"]);
}

#[test]
#[ignore = "needs root, setpriv, unshare, newuidmap, useradd, crun"]
fn nested_in_podman_style_userns() {
    kinc_testutil::require_root_and!("setpriv", "unshare", "newuidmap", "useradd", "crun");
    check_mode(Mode::Nested, "n", NESTED_CASES);
}

#[test]
#[ignore = "needs root, setpriv, newuidmap, useradd, crun"]
fn rootless_unprivileged_user() {
    kinc_testutil::require_root_and!("setpriv", "newuidmap", "useradd", "crun");
    check_mode(Mode::Rootless, "r", ROOTLESS_CASES);
}

/// A user outside the namespace's ids has no safe reduction: the wrapper reports it
/// and leaves `process.user` alone, so crun refuses it just as without the wrapper.
#[test]
#[ignore = "needs root, setpriv, unshare, newuidmap, useradd, crun"]
fn unmapped_user_is_refused_not_rewritten() {
    kinc_testutil::require_root_and!("setpriv", "unshare", "newuidmap", "useradd", "crun");
    let user = TestUser::create("u");
    let lab = Lab::new(&user);
    let mut spec = base_spec(&lab.rootfs, &["/bin/sh", "-c", "id -u"]);
    spec["process"]["user"] = json!({"uid": 1000, "gid": 70000});
    oom(&mut spec);
    let b = lab.bundle(&user, "unmapped", &spec);
    let id = format!("kcw-{}-unmapped", std::process::id());
    let (ok, out, err) = run(&user, Mode::Nested, &lab, &lab.wrapper, &b, &id);
    assert!(!ok, "must not run: {out}");
    assert!(
        err.contains("gid 70000 is not mapped") && err.contains("0-65536"),
        "{err}"
    );
    assert!(
        err.contains("setresgid"),
        "crun's own error expected: {err}"
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["process"]["user"], spec["process"]["user"]);
}
