//! The rules on realistic CRI-O specs: each changes exactly its own fields.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use crun_wrapper::rewrite::{rewrite_file, Outcome};
use crun_wrapper::rules::{self, UserNs};
use crun_wrapper::{IdMap, Lsm};
use serde_json::{json, Value};

const NO_LSM: Lsm = Lsm {
    apparmor: false,
    selinux: false,
};
const ALL_LSM: Lsm = Lsm {
    apparmor: true,
    selinux: true,
};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn app_in_kinc_node_changes_exactly_the_rule_fields() {
    let before = load(APP);
    let mut after = before.clone();
    let report = rules::apply(&mut after, &kinc_caller(), NO_LSM);
    assert_eq!(
        diff(&before, &after),
        set(&[
            "/process/oomScoreAdj",
            "/process/capabilities/bounding",
            "/process/capabilities/effective",
            "/process/capabilities/permitted",
            "/process/rlimits/0/hard",
            "/process/rlimits/0/soft",
            "/process/rlimits/1/hard",
            "/process/rlimits/1/soft",
            "/process/apparmorProfile",
        ]),
        "{report:#?}"
    );
    assert_eq!(after["process"]["oomScoreAdj"], json!(200));
    // MKNOD is outside the node's 18 caps; the unknown name stays for crun to judge.
    let bounding = strings(&after["process"]["capabilities"]["bounding"]);
    assert!(!bounding.contains(&"CAP_MKNOD".to_string()));
    assert!(bounding.contains(&"CAP_FUTURE_THING".to_string()));
    assert!(bounding.contains(&"CAP_NET_RAW".to_string()));
    assert_eq!(
        after["process"]["rlimits"][0],
        json!({"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000})
    );
    assert_eq!(report.notes, vec![]);
    // One change line per field (the three capability sets are one line each).
    assert_eq!(report.changes.len(), 9);
}

#[test]
fn nproc_and_infinity() {
    let mut spec = load(APP);
    rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    let rl = &spec["process"]["rlimits"];
    assert_eq!(
        rl[1],
        json!({"type": "RLIMIT_NPROC", "hard": 96365, "soft": 96365})
    );
    // RLIM_INFINITY survives the round trip as the exact u64.
    assert_eq!(rl[2]["hard"], json!(18446744073709551615u64));
    // An rlimit oci-spec cannot type is left alone.
    assert_eq!(
        rl[3],
        json!({"type": "RLIMIT_FOO", "hard": 99999999, "soft": 1})
    );
}

#[test]
fn pause_in_kinc_node() {
    let before = load(PAUSE);
    let mut after = before.clone();
    let report = rules::apply(&mut after, &kinc_caller(), NO_LSM);
    assert_eq!(
        diff(&before, &after),
        set(&[
            "/process/oomScoreAdj",
            "/process/selinuxLabel",
            "/linux/mountLabel",
            "/linux/sysctl/net.ipv4.ping_group_range",
        ])
    );
    assert_eq!(after["process"]["oomScoreAdj"], json!(200));
    assert_eq!(
        after["linux"]["sysctl"]["net.ipv4.ping_group_range"],
        json!("0 65536")
    );
    assert_eq!(report.changes.len(), 4);
    // The pause user 65535 is mapped: no note.
    assert!(report.notes.is_empty());
}

#[test]
fn identity_fields_survive() {
    for fixture in [APP, PAUSE] {
        let before = load(fixture);
        let mut after = before.clone();
        rules::apply(&mut after, &kinc_caller(), NO_LSM);
        assert_eq!(before["process"]["user"], after["process"]["user"]);
        for keep in ["annotations", "mounts", "root", "hostname", "ociVersion"] {
            assert_eq!(before[keep], after[keep], "{keep}");
        }
        for keep in [
            "seccomp",
            "namespaces",
            "resources",
            "maskedPaths",
            "cgroupsPath",
        ] {
            assert_eq!(before["linux"][keep], after["linux"][keep], "{keep}");
        }
    }
}

#[test]
fn privileged_caller_changes_nothing_but_disabled_lsm_labels() {
    for fixture in [APP, PAUSE] {
        let before = load(fixture);
        let mut after = before.clone();
        let report = rules::apply(&mut after, &privileged_caller(), ALL_LSM);
        assert_eq!(report.changes, vec![]);
        assert_eq!(before, after);
    }
}

#[test]
fn best_effort_oom_is_kept() {
    let mut spec = load(APP);
    spec["process"]["oomScoreAdj"] = json!(1000);
    rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    assert_eq!(spec["process"]["oomScoreAdj"], json!(1000));
    let mut spec = load(APP);
    spec["process"]
        .as_object_mut()
        .unwrap()
        .remove("oomScoreAdj");
    let r = rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    assert!(spec["process"].get("oomScoreAdj").is_none());
    assert!(r.changes.iter().all(|c| c.field != "process.oomScoreAdj"));
}

/// crun refuses anything below the caller's value, and the caller's value itself is fine:
/// one below is raised to exactly it, it and above are kept.
#[test]
fn oom_is_raised_to_exactly_the_callers_value() {
    for (want, got) in [(-1000, 200), (199, 200), (200, 200), (201, 201)] {
        let mut spec = load(APP);
        spec["process"]["oomScoreAdj"] = json!(want);
        let r = rules::apply(&mut spec, &kinc_caller(), NO_LSM);
        assert_eq!(spec["process"]["oomScoreAdj"], json!(got), "{want}");
        let change = r.changes.iter().find(|c| c.field == "process.oomScoreAdj");
        assert_eq!(
            change.map(|c| (c.from.as_str(), c.to.as_str())),
            (want != got).then_some((&*want.to_string(), "200")),
            "{want}"
        );
    }
}

#[test]
fn own_user_namespace_keeps_caps_but_clamps_oom_and_rlimits() {
    let mut spec = load(APP);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1, "size": 65536}]);
    let before = spec.clone();
    let report = rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    assert_eq!(
        before["process"]["capabilities"],
        spec["process"]["capabilities"]
    );
    assert_eq!(spec["process"]["oomScoreAdj"], json!(200));
    assert_eq!(spec["process"]["rlimits"][0]["hard"], json!(20000));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let ns = UserNs::of(&spec);
    assert!(ns.own);
    assert_eq!(ns.uid_map, Some(IdMap::parse("0 1 65536")));
}

#[test]
fn unmapped_user_is_reported_never_changed() {
    let mut spec = load(APP);
    spec["process"]["user"] = json!({"uid": 1000, "gid": 70000, "additionalGids": [5, 70001]});
    let before = spec["process"]["user"].clone();
    let report = rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    assert_eq!(spec["process"]["user"], before);
    let fields: Vec<_> = report.notes.iter().map(|n| n.field.as_str()).collect();
    assert_eq!(
        fields,
        ["process.user.gid", "process.user.additionalGids[1]"]
    );
    let msg = &report.notes[0].message;
    assert!(msg.contains("70000") && msg.contains("0-65536"), "{msg}");
}

#[test]
fn soft_above_own_hard_is_left_for_crun() {
    let mut spec = load(APP);
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 8192}]);
    let r = rules::apply(&mut spec, &kinc_caller(), ALL_LSM);
    assert!(r
        .changes
        .iter()
        .all(|c| !c.field.starts_with("process.rlimits")));
}

#[test]
fn ping_group_range_forms() {
    let caller = kinc_caller();
    let ns = UserNs::default();
    for (have, want) in [
        ("0 2147483647", Some("0 65536")),
        ("1 0", None),
        ("0 100", None),
        ("70000 80000", None),
        ("garbage", None),
    ] {
        let mut spec = json!({"linux": {"sysctl": {"net.ipv4.ping_group_range": have}}});
        let c = rules::ping_group_range(&mut spec, &caller, &ns);
        assert_eq!(c.as_ref().map(|c| c.to.as_str()), want, "{have}");
        if want.is_none() {
            assert_eq!(
                spec["linux"]["sysctl"]["net.ipv4.ping_group_range"],
                json!(have)
            );
        }
    }
}

#[test]
fn lowercase_capability_names_are_judged_and_kept_verbatim() {
    let mut spec = json!({"process": {"capabilities": {"effective": ["cap_chown", "cap_mknod", "CAP_WHATEVER"]}}});
    rules::capabilities(&mut spec, &kinc_caller(), &UserNs::default());
    assert_eq!(
        spec["process"]["capabilities"]["effective"],
        json!(["cap_chown", "CAP_WHATEVER"])
    );
}

#[test]
fn key_order_is_preserved_in_output() {
    let (report, out) =
        crun_wrapper::rewrite::rewrite_bytes(APP.as_bytes(), &kinc_caller(), ALL_LSM).unwrap();
    assert!(!report.changes.is_empty());
    let out: Value = serde_json::from_slice(&out.unwrap()).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let before = load(APP);
    assert_eq!(keys(&before), keys(&out));
    assert_eq!(keys(&before["process"]), keys(&out["process"]));
}

#[test]
fn file_rewrite_is_atomic_keeps_mode_and_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("config.json");
    std::fs::write(&p, APP).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    let out = rewrite_file(&p, &kinc_caller(), NO_LSM).unwrap();
    assert!(matches!(out, Outcome::Checked { written: true, .. }));
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(
        meta.ino(),
        ino,
        "replaced by rename, not truncated in place"
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        1,
        "no temp or backup files"
    );
    // Second pass: nothing left to change, so nothing is written.
    let ino = meta.ino();
    let bytes = std::fs::read(&p).unwrap();
    let out = rewrite_file(&p, &kinc_caller(), NO_LSM).unwrap();
    assert!(matches!(out, Outcome::Checked { written: false, .. }));
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
}

#[test]
fn malformed_spec_is_not_touched() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("config.json");
    for bad in [&b"{\"process\": {"[..], b"[1,2]", b"\xff\xfe"] {
        std::fs::write(&p, bad).unwrap();
        let out = rewrite_file(&p, &kinc_caller(), NO_LSM).unwrap();
        assert!(matches!(out, Outcome::Malformed(_)), "{out:?}");
        assert_eq!(std::fs::read(&p).unwrap(), bad);
    }
}

#[test]
fn explain_reports_without_writing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("config.json");
    std::fs::write(&p, APP).unwrap();
    let caller = kinc_caller();
    let e =
        crun_wrapper::explain::explain(d.path(), "config.json".as_ref(), &caller, NO_LSM).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), APP);
    let text = crun_wrapper::explain::render_text(&e, &caller);
    assert!(text.contains("process.oomScoreAdj: -997 -> 200"), "{text}");
    assert!(text.contains("CAP_MKNOD"), "{text}");
    // The unknown capability name is why oci-spec's typed Spec refuses this file.
    assert!(
        e.oci_spec_check.contains("FUTURE_THING"),
        "{}",
        e.oci_spec_check
    );
    let j = serde_json::to_value(&e).unwrap();
    assert_eq!(
        j["changes"].as_array().unwrap().len(),
        e.report.changes.len()
    );
}

/// Issue 17 item 9: numbers a `serde_json::Value` cannot hold exactly (a uid beyond u64,
/// an unknown field below i64, `1.0e2`, `-0`), escapes and layout survive a rewrite byte
/// for byte; only the values the rules change differ, and `process.user` never does.
#[test]
fn rewrite_changes_only_the_bytes_of_changed_values() {
    let before = r#"{
  "ociVersion": "1.0.2",
  "process": {
    "user": { "uid": 18446744073709551616, "gid": -0, "additionalGids": [1.0e2] },
    "oomScoreAdj": -1000,
    "capabilities": {
      "bounding": [ "CAP_SYS_TIME", "CAP_CHOWN", "CAP_SYS_MODULE", "CAP_KILL", "CAP_BPF" ],
      "x-kind": "\u00e9\/"
    },
    "apparmorProfile": "crio-default",
    "x-unknown": -9223372036854775809
  },
  "linux": {"mountLabel": "system_u:object_r:container_file_t:s0", "x-big": 123456789012345678901234567890}
}"#;
    let after = r#"{
  "ociVersion": "1.0.2",
  "process": {
    "user": { "uid": 18446744073709551616, "gid": -0, "additionalGids": [1.0e2] },
    "oomScoreAdj": 200,
    "capabilities": {
      "bounding": [ "CAP_CHOWN", "CAP_KILL" ],
      "x-kind": "\u00e9\/"
    },
    "x-unknown": -9223372036854775809
  },
  "linux": {"x-big": 123456789012345678901234567890}
}"#;
    let (report, out) =
        crun_wrapper::rewrite::rewrite_bytes(before.as_bytes(), &kinc_caller(), NO_LSM).unwrap();
    assert_eq!(report.changes.len(), 4, "{report:?}");
    assert_eq!(String::from_utf8(out.unwrap()).unwrap(), after);
}

#[test]
fn duplicate_keys_leave_the_spec_to_crun() {
    // serde_json reads the last oomScoreAdj, other readers the first: no edit is safe.
    let spec = br#"{"process":{"oomScoreAdj":-1000,"oomScoreAdj":-999}}"#;
    let e = crun_wrapper::rewrite::rewrite_bytes(spec, &kinc_caller(), NO_LSM).unwrap_err();
    assert!(e.contains("duplicate key \"oomScoreAdj\""), "{e}");
}

#[test]
fn only_a_regular_file_of_bounded_size_is_read() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("config.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Would block forever without O_NONBLOCK (no writer).
    let out = rewrite_file(&fifo, &kinc_caller(), NO_LSM).unwrap();
    assert_eq!(out, Outcome::Malformed("not a regular file".into()));
    let big = d.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(crun_wrapper::rewrite::MAX_SPEC_BYTES + 1)
        .unwrap();
    let out = rewrite_file(&big, &kinc_caller(), NO_LSM).unwrap();
    assert!(
        matches!(out, Outcome::Malformed(ref w) if w.contains("larger than")),
        "{out:?}"
    );
}

#[test]
fn explain_quotes_at_most_an_excerpt_of_a_bad_value() {
    let d = tempfile::tempdir().unwrap();
    let big = format!("{}SECRET", "A".repeat(100_000));
    let spec =
        json!({"ociVersion": "1.0.2", "process": {"args": big, "cwd": "/"}, "root": {"path": "r"}});
    std::fs::write(d.path().join("config.json"), spec.to_string()).unwrap();
    let e =
        crun_wrapper::explain::explain(d.path(), "config.json".as_ref(), &kinc_caller(), NO_LSM)
            .unwrap();
    let c = &e.oci_spec_check;
    assert!(
        c.starts_with("oci-spec cannot type it") && c.len() < 300 && !c.contains("SECRET"),
        "{c}"
    );
}
