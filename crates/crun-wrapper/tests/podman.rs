//! A real client: rootful `podman --runtime <crun-wrapper>` runs a busybox container.
//! The wrapper's configured crun is a test shim that only hides this host's hybrid
//! cgroup file (tests/fixtures/crun-hybrid-shim).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const SHIM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/crun-hybrid-shim"
);
const APPLETS: &[&str] = &["sh", "id", "cat", "echo", "true"];

/// Removes the test's container and image whatever happens.
struct Cleanup {
    container: String,
    image: String,
    conf: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&self.conf, &["rm", "-f", "--ignore", &self.container]);
        let _ = podman(&self.conf, &["rmi", "-f", &self.image]);
    }
}

fn podman(conf: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The busybox image FROM scratch (no registry here).
fn build_image(conf: &Path, dir: &Path, tag: &str) {
    let root = dir.join("ctx/rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        dir.join("ctx/Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n",
    )
    .unwrap();
    let o = podman(
        conf,
        &["build", "-q", "-t", tag, dir.join("ctx").to_str().unwrap()],
    );
    assert!(o.status.success(), "podman build: {}", text(&o.stderr));
}

#[test]
#[ignore = "needs root, podman, crun, unshare, busybox"]
fn podman_runs_busybox_through_the_wrapper() {
    kinc_testutil::require_root_and!("podman", "crun", "unshare", "busybox");
    let dir = tempfile::Builder::new()
        .prefix("kcw-podman-")
        .tempdir()
        .unwrap();
    let pid = std::process::id();
    let wrapper = dir.path().join("crun-wrapper");
    std::fs::copy(env!("CARGO_BIN_EXE_crun-wrapper"), &wrapper).unwrap();
    let log = dir.path().join("wrapper.log");
    let wconf = dir.path().join("crun-wrapper.toml");
    std::fs::write(
        &wconf,
        format!(
            "crun = \"{SHIM}\"\nno_new_keyring = true\nlog_file = \"{}\"\n",
            log.display()
        ),
    )
    .unwrap();
    // conmon starts the runtime with only `conmon_env_vars`: the config path goes there.
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[engine]\nconmon_env_vars = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"KINC_CRUN_WRAPPER_CONFIG={}\"]\n",
            wconf.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("localhost/kcw-busybox-{pid}:test");
    let name = format!("kcw-podman-{pid}");
    let _cleanup = Cleanup {
        container: name.clone(),
        image: image.clone(),
        conf: conf.clone(),
    };
    build_image(&conf, dir.path(), &image);

    let run = |runtime: &str, cname: &str| {
        Command::new("podman")
            .args([
                "--runtime",
                runtime,
                "run",
                "--name",
                cname,
                "--oom-score-adj=-999",
            ])
            .args([
                &image,
                "/bin/sh",
                "-c",
                "id -u; cat /proc/self/oom_score_adj",
            ])
            .env("CONTAINERS_CONF", &conf)
            .env("KINC_CRUN_WRAPPER_CONFIG", &wconf)
            .output()
            .unwrap()
    };
    let o = run(wrapper.to_str().unwrap(), &name);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        o.status.success(),
        "podman via wrapper: {}\nwrapper log:\n{logged}",
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let oom: i32 = lines.next().unwrap().parse().unwrap();
    let inspect = podman(&conf, &["inspect", "--format", "{{.OCIRuntime}}", &name]);
    assert_eq!(text(&inspect.stdout).trim(), wrapper.to_str().unwrap());

    let privileged = caps::has_cap(
        None,
        caps::CapSet::Permitted,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap();
    if privileged {
        assert_eq!(oom, -999);
    } else {
        // Without CAP_SYS_RESOURCE, crun alone fails on podman's spec; the wrapper raised
        // the oom score and clamped rlimits, each with a log line.
        assert_eq!(oom, 0, "{logged}");
        assert!(
            logged.contains("process.oomScoreAdj: -999 -> 0"),
            "{logged}"
        );
        let plain_name = format!("{name}-plain");
        let plain = run(SHIM, &plain_name);
        let _ = podman(&conf, &["rm", "-f", "--ignore", &plain_name]);
        assert!(!plain.status.success(), "plain crun should refuse it");
    }
}
