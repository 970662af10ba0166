//! `kinc` against real rootless podman: the test makes an unprivileged user with
//! subordinate ids, prepares its runtime dir and overlay storage before the first
//! podman call, loads the stand-in image into its store and runs kinc as that user.
//! Needs root (to make the user), podman, setpriv and newuidmap.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::scenarios;
use common::{Runner, Scratch};

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The throwaway user; dropping it ends the processes it still runs (podman's pause
/// process), by pid, and removes the user with its home and runtime dir.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create(name: &str) -> Self {
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", name]));
        let id = |flag: &str| -> u32 {
            run(Command::new("id").args([flag, name]))
                .trim()
                .parse()
                .unwrap()
        };
        let u = Self {
            name: name.into(),
            uid: id("-u"),
            gid: id("-g"),
        };
        for f in ["/etc/subuid", "/etc/subgid"] {
            let has = std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{name}:")));
            if !has {
                // useradd on this system did not assign ranges: pick a free-looking one.
                let flag = if f.ends_with("uid") {
                    "--add-subuids"
                } else {
                    "--add-subgids"
                };
                let start = 200_000 + (u.uid as u64 % 1000) * 65536;
                run(Command::new("usermod").args([
                    flag,
                    &format!("{start}-{}", start + 65535),
                    name,
                ]));
            }
        }
        u
    }

    fn home(&self) -> String {
        format!("/home/{}", self.name)
    }

    fn runtime_dir(&self) -> String {
        format!("/run/user/{}", self.uid)
    }

    /// What podman-here.md §3 says must exist before the user's first podman call.
    fn prepare(&self) {
        let rd = self.runtime_dir();
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::set_permissions(&rd, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&rd, Some(self.uid), Some(self.gid)).unwrap();
        let cfg = format!("{}/.config/containers", self.home());
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            format!("{cfg}/storage.conf"),
            "[storage]\ndriver = \"overlay\"\n",
        )
        .unwrap();
        for p in [
            format!("{}/.config", self.home()),
            cfg.clone(),
            format!("{cfg}/storage.conf"),
        ] {
            std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        }
    }

    fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u32>().ok());
            if uid == Some(self.uid) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..20 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) on processes of the user this test created.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.runtime_dir());
        let _ = std::fs::remove_dir_all(self.home());
    }
}

struct RootImage(String);

impl Drop for RootImage {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root, podman, busybox, runc, setpriv, useradd, newuidmap"]
fn rootless_podman_create_list_delete_parallel_foreign_killed_interrupted() {
    kinc_testutil::require_root_and!(
        "podman",
        "busybox",
        "runc",
        "setpriv",
        "useradd",
        "newuidmap"
    );
    let pid = std::process::id();
    let s = Scratch::new();
    let conf = s.containers_conf();
    let image = format!("localhost/kinc-cli-standin:rootless{pid}");
    s.build_image(&image, &conf);
    let _root_image = RootImage(image.clone());
    let archive = s.path().join("standin.tar");
    run(Command::new("podman")
        .env("CONTAINERS_CONF", &conf)
        .args(["save", "--quiet", "-o"])
        .arg(&archive)
        .arg(&image));
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The user cannot read the test binary's directory on every CI layout: copy it.
    let kinc_bin = s.path().join("kinc");
    std::fs::copy(env!("CARGO_BIN_EXE_kinc"), &kinc_bin).unwrap();
    std::fs::set_permissions(&kinc_bin, std::fs::Permissions::from_mode(0o755)).unwrap();

    let user = TestUser::create(&format!("kcli{pid}"));
    user.prepare();
    let r = Runner {
        kinc: kinc_bin,
        env: vec![
            ("HOME".into(), user.home()),
            ("USER".into(), user.name.clone()),
            ("LOGNAME".into(), user.name.clone()),
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
            ),
            ("XDG_RUNTIME_DIR".into(), user.runtime_dir()),
            ("CONTAINERS_CONF".into(), conf.display().to_string()),
            ("KINC_SKIP_CHECKS".into(), "cgroup-v2".into()),
        ],
        user: Some((user.uid, user.gid)),
        cwd: s.path().to_path_buf(),
    };
    let archive = archive.display().to_string();
    r.podman_ok(&["load", "--quiet", "--input", &archive]);
    let info = r.podman_ok(&[
        "info",
        "--format",
        "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}",
    ]);
    assert_eq!(info.trim(), "true overlay", "rootless with overlay storage");

    let unit_dir = std::path::PathBuf::from(user.home()).join(".config/containers/systemd");
    let name = |s: &str| format!("kclr{pid}{s}");
    scenarios::create_list_delete(&r, &name("a"), &image);
    scenarios::foreign_untouched(&r, &name("f"), &image);
    scenarios::parallel_creates(&r, &name("p"), &image, 5);
    scenarios::killed_create_cleaned_by_delete(&r, &name("slowk"), &image, &unit_dir);
    scenarios::interrupted_create_cleans_up(&r, &name("slowi"), &image);
    // The allocation record lives in the user's data dir and is empty again.
    let state = std::fs::read_to_string(format!("{}/.local/share/kinc/clusters.json", user.home()))
        .unwrap();
    assert!(state.contains("\"clusters\": {}"), "{state}");
}
