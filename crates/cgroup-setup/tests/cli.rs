//! The binary's contract with its callers (the systemd unit, `kinc-init`): exit status,
//! JSON on stdout, the error and its fix on stderr. No root needed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cgroup-setup");

#[test]
fn no_cgroup_mount_is_a_failure_with_json_and_a_hint() {
    let out = Command::new(BIN)
        .args(["--json", "--cgroup-mount", "/nonexistent-kinc-cgroup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["layout"]["kind"], "missing");
    assert_eq!(
        j["error"],
        "no cgroup filesystem is mounted at /nonexistent-kinc-cgroup"
    );
    assert!(j["hint"].as_str().unwrap().contains("--cgroupns=private"));
    assert!(out.stderr.is_empty(), "--json keeps stderr clean");
}

#[test]
fn human_output_puts_the_error_and_hint_on_stderr() {
    let out = Command::new(BIN)
        .args(["--cgroup-mount", "/nonexistent-kinc-cgroup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "error: no cgroup filesystem is mounted at /nonexistent-kinc-cgroup\nhint: "
        ),
        "{err}"
    );
}

#[test]
fn bad_options_exit_2_before_touching_anything() {
    for args in [
        ["--kubelet-cgroup-root", "kubelet"],
        ["--kubelet-cgroup-root", "/a/../b"],
        ["--leaf", "x/y"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(args[0]), "{err}");
    }
}

#[test]
fn help_explains_the_job() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--kubelet-cgroup-root",
        "--json",
        "--dry-run",
        "EBUSY",
        "Delegate",
    ] {
        assert!(help.contains(needle), "{needle} not in --help:\n{help}");
    }
}
