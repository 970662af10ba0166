//! Harness for the tests with real crun: a throwaway user with subordinate ids, a busybox
//! bundle, and a way to run crun or the wrapper as that user, rootless or nested in a
//! podman-style user namespace. Host quirks are handled here, never in the product:
//! crun 1.8.1 refuses hybrid cgroups, so each run happens in a private mount namespace
//! where `/sys/fs/cgroup/unified/cgroup.controllers` is hidden, with `--cgroup-manager=disabled`.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const HYBRID_FILE: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

/// A user created for one test, removed (with its subuid/subgid ranges) on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub subuid: u32,
    pub subgid: u32,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sub_start(file: &str, name: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {file} entry for {name}"))
}

impl TestUser {
    pub fn create(tag: &str) -> TestUser {
        let name = format!("kcw{}{tag}", std::process::id());
        // Other test processes may hold the passwd lock for a moment: retry.
        let mut last = String::new();
        for _ in 0..20 {
            let out = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", &name])
                .output()
                .unwrap();
            if out.status.success() {
                last.clear();
                break;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(last.is_empty(), "useradd {name}: {last}");
        let uid = run_ok(Command::new("id").args(["-u", &name]))
            .trim()
            .parse()
            .unwrap();
        let gid = run_ok(Command::new("id").args(["-g", &name]))
            .trim()
            .parse()
            .unwrap();
        TestUser {
            subuid: sub_start("/etc/subuid", &name),
            subgid: sub_start("/etc/subgid", &name),
            name,
            uid,
            gid,
        }
    }

    pub fn chown(&self, p: &Path) {
        run_ok(Command::new("chown").args([
            "-R",
            &format!("{}:{}", self.uid, self.gid),
            p.to_str().unwrap(),
        ]));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..20 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("could not remove test user {}", self.name);
    }
}

/// A directory readable by the test user, removed on drop; holds the rootfs, the
/// wrapper binary (the target dir may not be reachable by the user), and bundles.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub wrapper: PathBuf,
    pub wrapper_config: PathBuf,
}

impl Lab {
    pub fn new(user: &TestUser) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("kcw-lab-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "run"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "id", "cat", "echo", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        user.chown(&rootfs);
        let wrapper = dir.path().join("crun-wrapper");
        std::fs::copy(env!("CARGO_BIN_EXE_crun-wrapper"), &wrapper).unwrap();
        let wrapper_config = dir.path().join("crun-wrapper.toml");
        std::fs::write(
            &wrapper_config,
            "crun = \"/usr/bin/crun\"\nno_new_keyring = true\n",
        )
        .unwrap();
        Lab {
            dir,
            rootfs,
            wrapper,
            wrapper_config,
        }
    }

    /// A fresh bundle owned by the user, with `spec` as its config.json (mode 0600).
    pub fn bundle(&self, user: &TestUser, name: &str, spec: &Value) -> PathBuf {
        let b = self.dir.path().join(name);
        std::fs::create_dir_all(&b).unwrap();
        let p = b.join("config.json");
        std::fs::write(&p, serde_json::to_vec(spec).unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let state = b.join("state");
        std::fs::create_dir_all(&state).unwrap();
        user.chown(&b);
        b
    }
}

/// A CRI-O-shaped spec (the app fixture) reduced to what runs on a busybox rootfs:
/// its own namespaces, no host paths, no cgroup; then `args` as the process.
pub fn base_spec(rootfs: &Path, args: &[&str]) -> Value {
    let mut s: Value = serde_json::from_str(include_str!("../fixtures/app.json")).unwrap();
    s["root"] = json!({"path": rootfs, "readonly": true});
    let p = s["process"].as_object_mut().unwrap();
    p.insert("args".into(), json!(args));
    p.insert("oomScoreAdj".into(), json!(968));
    p.remove("apparmorProfile");
    p.insert("user".into(), json!({"uid": 0, "gid": 0}));
    let caps = json!(kinc_types::node::CRIO_DEFAULT_CAPABILITIES);
    p.insert(
        "capabilities".into(),
        json!({"bounding": caps, "effective": caps, "permitted": caps}),
    );
    p.insert(
        "rlimits".into(),
        json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]),
    );
    s["mounts"] = json!([
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
    ]);
    let l = s["linux"].as_object_mut().unwrap();
    l.insert(
        "namespaces".into(),
        json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]),
    );
    l.remove("cgroupsPath");
    l.remove("resources");
    s
}

/// How crun is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The unprivileged user runs crun; the spec brings its own user namespace.
    Rootless,
    /// The user makes a podman-style user namespace (65537 ids), is uid 0 in it with
    /// the node container's 18 capabilities as bounding set, and runs crun there.
    Nested,
}

/// Caller limits set before the user's program starts (lowering/raising needs no privilege).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub oom_score_adj: i32,
    pub nofile_hard: u64,
    pub nproc_hard: u64,
}

pub const NODE_BSET: &str = "-all,+chown,+dac_override,+dac_read_search,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_admin,+net_raw,+sys_chroot,+sys_ptrace,+sys_admin,+sys_resource,+setfcap,+audit_write";

/// Runs `program args...` (crun or the wrapper) as `user` in `mode`, with the hybrid
/// cgroup file hidden and the caller limits applied; waits at most 60 s.
pub fn run_as(
    user: &TestUser,
    mode: Mode,
    limits: Limits,
    lab: &Lab,
    program: &Path,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &user.uid.to_string(),
        "--regid",
        &user.gid.to_string(),
        "--clear-groups",
        "--",
    ]);
    if mode == Mode::Nested {
        cmd.args([
            "unshare",
            "--map-user=0",
            &format!("--map-users={},1,65536", user.subuid),
            "--map-group=0",
            &format!("--map-groups={},1,65536", user.subgid),
            "-m",
            "--",
            "setpriv",
            "--bounding-set",
            NODE_BSET,
            "--",
        ]);
    }
    cmd.arg(program).args(args);
    cmd.env("KINC_CRUN", "/usr/bin/crun")
        .env("KINC_CRUN_WRAPPER_CONFIG", &lab.wrapper_config)
        .env("HOME", lab.dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let hybrid = std::fs::read_to_string(HYBRID_FILE).is_ok_and(|s| !s.trim().is_empty());
    let target = CString::new(HYBRID_FILE).unwrap();
    // SAFETY: the closure only makes raw syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let err = std::io::Error::last_os_error;
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            if hybrid
                && libc::mount(
                    c"/dev/null".as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(err());
            }
            let set = |res, v: u64| {
                let rl = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                libc::setrlimit(res, &rl)
            };
            if set(libc::RLIMIT_NOFILE, limits.nofile_hard) != 0
                || set(libc::RLIMIT_NPROC, limits.nproc_hard) != 0
            {
                return Err(err());
            }
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(err());
            }
            let mut buf = [0u8; 16];
            let n = fmt_i32(limits.oom_score_adj, &mut buf);
            let w = libc::write(fd, buf.as_ptr().cast(), n);
            libc::close(fd);
            if w < 0 {
                return Err(err());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Formats without allocating (runs between fork and exec).
fn fmt_i32(v: i32, buf: &mut [u8; 16]) -> usize {
    let mut n = 0;
    let mut x = i64::from(v);
    if x < 0 {
        buf[0] = b'-';
        n = 1;
        x = -x;
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    loop {
        digits[d] = b'0' + (x % 10) as u8;
        d += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    n
}
