//! The binary end to end with a stand-in crun that prints its argv: pass-through is
//! exact, only create/run get `--no-new-keyring`, a missing crun is a clear error.
//! No root needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_crun-wrapper");
const ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/argv-echo");

fn wrapper(config: &Path, crun: &str, cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("KINC_CRUN_WRAPPER_CONFIG", config)
        .env("KINC_CRUN", crun)
        .output()
        .unwrap()
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn setup(no_new_keyring: bool) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("w.toml");
    std::fs::write(&cfg, format!("no_new_keyring = {no_new_keyring}\n")).unwrap();
    (d, cfg)
}

#[test]
fn other_verbs_pass_through_unchanged() {
    let (d, cfg) = setup(true);
    for argv in [
        &["--version"][..],
        &["--root", "/run/create", "state", "create-1"],
        &[
            "--log-format=json",
            "--log",
            "/l",
            "exec",
            "--process",
            "/p",
            "--detach",
            "id",
        ],
        &["kill", "id", "9"],
        &["delete", "--force", "id"],
        &["odd arg with spaces", "", "--"],
    ] {
        let o = wrapper(&cfg, ECHO, d.path(), argv);
        assert!(o.status.success());
        assert_eq!(lines(&o), argv, "argv must reach crun unchanged");
        assert!(
            o.stderr.is_empty(),
            "pass-through logs nothing: {:?}",
            o.stderr
        );
    }
}

#[test]
fn create_and_run_get_no_new_keyring_when_configured() {
    let (d, cfg) = setup(true);
    let bundle = d.path().join("b");
    std::fs::create_dir(&bundle).unwrap();
    // Already runnable by anyone: the spec is not rewritten.
    std::fs::write(
        bundle.join("config.json"),
        br#"{"process":{"oomScoreAdj":1000}}"#,
    )
    .unwrap();
    let b = bundle.to_str().unwrap();
    let o = wrapper(
        &cfg,
        ECHO,
        d.path(),
        &["--log-format=json", "create", "--bundle", b, "id"],
    );
    assert_eq!(
        lines(&o),
        [
            "--log-format=json",
            "create",
            "--no-new-keyring",
            "--bundle",
            b,
            "id"
        ]
    );
    let o = wrapper(
        &cfg,
        ECHO,
        d.path(),
        &["run", "--no-new-keyring", "-b", b, "id"],
    );
    assert_eq!(lines(&o), ["run", "--no-new-keyring", "-b", b, "id"]);
    let (d2, cfg_off) = setup(false);
    let o = wrapper(&cfg_off, ECHO, d2.path(), &["create", "-b", b, "id"]);
    assert_eq!(lines(&o), ["create", "-b", b, "id"]);
}

/// The wrapper as a caller that may not lower oom_score_adj, whoever runs the test: no
/// CAP_SYS_RESOURCE it could pass on (bounding, inheritable and ambient sets), and its own
/// oom_score_adj raised to 1000, which anyone may do. Only async-signal-safe calls run
/// between fork and exec: the test process has other threads.
fn unprivileged_wrapper(config: &Path, cwd: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(cwd)
        .env("KINC_CRUN_WRAPPER_CONFIG", config)
        .env("KINC_CRUN", ECHO);
    // SAFETY: prctl, capget/capset, open, write and close are async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            const CAP_SYS_RESOURCE: u32 = 24;
            // An unprivileged caller has nothing to drop (EPERM); root drops it here.
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                CAP_SYS_RESOURCE as libc::c_ulong,
                0,
                0,
                0,
            );
            #[repr(C)]
            struct Header {
                version: u32,
                pid: libc::c_int,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut h = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let zero = Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            };
            let mut d = [zero; 2];
            if libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            d[0].inheritable &= !(1 << CAP_SYS_RESOURCE);
            if libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"1000".as_ptr().cast(), 4) != 4 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    c.output().unwrap()
}

#[test]
fn bundle_from_cwd_and_config_option_are_rewritten() {
    let (d, cfg) = setup(false);
    // oomScoreAdj -1000 is below what this caller can grant: its own value, 1000.
    let spec =
        br#"{"ociVersion":"1.0.2","process":{"oomScoreAdj":-1000,"user":{"uid":0,"gid":0}}}"#;
    std::fs::write(d.path().join("config.json"), spec).unwrap();
    std::fs::write(d.path().join("other.json"), spec).unwrap();
    let o = unprivileged_wrapper(&cfg, d.path(), &["create", "id"]);
    assert!(o.status.success(), "{o:?}");
    let o2 = unprivileged_wrapper(&cfg, d.path(), &["create", "--config=other.json", "id"]);
    assert!(o2.status.success(), "{o2:?}");
    for (name, out) in [("config.json", &o), ("other.json", &o2)] {
        let now: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(name)).unwrap()).unwrap();
        assert_eq!(now["process"]["oomScoreAdj"], 1000, "{name}");
        assert_eq!(now["process"]["user"]["uid"], 0, "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("id: process.oomScoreAdj: -1000 -> 1000 ("),
            "{name}: {err}"
        );
    }
}

#[test]
fn malformed_spec_reaches_crun_unchanged() {
    let (d, cfg) = setup(false);
    std::fs::write(d.path().join("config.json"), b"{not json").unwrap();
    let o = wrapper(&cfg, ECHO, d.path(), &["create", "id"]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(d.path().join("config.json")).unwrap(),
        b"{not json"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("passed to crun unchanged"));
}

#[test]
fn missing_crun_is_a_clear_error() {
    let (d, cfg) = setup(false);
    let o = wrapper(&cfg, "/nonexistent/crun", d.path(), &["state", "id"]);
    assert_eq!(o.status.code(), Some(127));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/crun") && err.contains("KINC_CRUN"),
        "{err}"
    );
}

#[test]
fn bad_config_file_names_itself() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("w.toml");
    std::fs::write(&cfg, "no_new_keyring = \"yes\"\n").unwrap();
    let o = wrapper(&cfg, ECHO, d.path(), &["state", "id"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(cfg.to_str().unwrap()));
}

#[test]
fn explain_cli_text_and_json() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        br#"{"process":{"oomScoreAdj":-1000,"capabilities":{"effective":["CAP_CHOWN"]}}}"#,
    )
    .unwrap();
    let before = std::fs::read(d.path().join("config.json")).unwrap();
    let o = Command::new(BIN)
        .args(["explain", "--json"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["changes"].is_array() && j["notes"].is_array());
    let o = Command::new(BIN)
        .arg("explain")
        .arg(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("caller: oom_score_adj"), "{text}");
    assert_eq!(std::fs::read(d.path().join("config.json")).unwrap(), before);
    let o = Command::new(BIN)
        .args(["explain", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("Nothing is written"));
}
