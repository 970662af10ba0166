//! Shared by the podman integration tests: a stand-in node image built FROM scratch
//! from busybox-static, a containers.conf that works around this kind of host's two
//! blockers (crun vs hybrid cgroups → runc; rootful rlimits → default_ulimits), and a
//! way to run `kinc` and `podman` as root or as a throwaway unprivileged user.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use serde_json::Value;

/// The stand-in's entrypoint: writes a Ready status file and serves on 6443, like a
/// node whose bootstrap finished. A hostname containing "slow" never gets Ready (for
/// the interrupted-create tests). sh as PID 1 ignores SIGTERM unless trapped.
const INIT: &str = r#"#!/bin/sh
trap 'exit 0' TERM INT
mkdir -p /var/lib/kinc /www
echo ok > /www/index.html
case "$(hostname)" in *slow*) ;; *)
  printf '{"cluster":"standin","phase":"ready","boot":1,"updatedAt":"2026-01-01T00:00:00Z","steps":[{"name":"standin","state":"done"}]}\n' > /var/lib/kinc/status.tmp
  mv /var/lib/kinc/status.tmp /var/lib/kinc/status.json
  umask 077
  printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    certificate-authority-data: Q0E=\n    server: https://standin:6443\nusers:\n- name: kubernetes-admin\n  user:\n    token: standin\ncontexts:\n- name: kubernetes-admin@kubernetes\n  context:\n    cluster: kubernetes\n    user: kubernetes-admin\ncurrent-context: kubernetes-admin@kubernetes\n' > /var/lib/kinc/admin.conf
  httpd -f -p 6443 -h /www & ;;
esac
while :; do sleep 1 & wait $!; done
"#;

pub fn rlimit_hard(res: libc::__rlimit_resource_t) -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into `l`.
    unsafe { libc::getrlimit(res, &mut l) };
    l.rlim_max
}

/// A world-readable scratch directory (the rootless user reads the config and binary).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kinc-cli-it.")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// containers.conf for this host: runc (crun 1.8 refuses hybrid cgroups) and
    /// rlimits no higher than this process may set (rootful podman asks for 1048576).
    pub fn containers_conf(&self) -> PathBuf {
        let nofile = rlimit_hard(libc::RLIMIT_NOFILE).min(1 << 20);
        let nproc = rlimit_hard(libc::RLIMIT_NPROC).min(32768);
        let p = self.path().join("containers.conf");
        std::fs::write(
            &p,
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n[engine]\nruntime = \"runc\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// Builds the stand-in image as root (no RUN step, so no runtime is needed).
    pub fn build_image(&self, tag: &str, conf: &Path) {
        let ctx = self.path().join("image");
        let r = ctx.join("rootfs");
        for d in ["bin", "etc", "tmp", "root", "var", "www"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(r.join("init"), INIT).unwrap();
        std::fs::set_permissions(r.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            ctx.join("Containerfile"),
            "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"/init\"]\n",
        )
        .unwrap();
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", conf)
            .args(["build", "-q", "-t", tag])
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Who runs kinc and podman: root, or an unprivileged user (through `setpriv`, which
/// execs directly so a signal to the child reaches kinc itself).
#[derive(Clone)]
pub struct Runner {
    pub kinc: PathBuf,
    pub env: Vec<(String, String)>,
    pub user: Option<(u32, u32)>,
    pub cwd: PathBuf,
}

impl Runner {
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = match self.user {
            None => {
                let mut c = Command::new(program);
                c.envs(self.env.iter().map(|(k, v)| (k, v)));
                c
            }
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg("env")
                    .arg("-i");
                for (k, v) in &self.env {
                    c.arg(format!("{k}={v}"));
                }
                c.arg(program);
                c
            }
        };
        c.args(args).current_dir(&self.cwd);
        c
    }

    pub fn kinc(&self, args: &[&str]) -> Output {
        let k = self.kinc.display().to_string();
        self.command(&k, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn kinc_ok(&self, args: &[&str]) -> String {
        let o = self.kinc(args);
        assert!(
            o.status.success(),
            "kinc {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn spawn_kinc(&self, args: &[&str]) -> Child {
        let k = self.kinc.display().to_string();
        self.command(&k, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        self.command("podman", args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn podman_ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn clusters(&self) -> Vec<Value> {
        serde_json::from_str(&self.kinc_ok(&["get", "clusters", "-o", "json"])).unwrap()
    }

    pub fn cluster(&self, name: &str) -> Option<Value> {
        self.clusters().into_iter().find(|c| c["name"] == name)
    }

    /// Names of every container and volume podman holds (labelled or not).
    pub fn all_names(&self) -> Vec<String> {
        let c = self.podman_ok(&["ps", "-a", "--format", "{{.Names}}"]);
        let v = self.podman_ok(&["volume", "ls", "--format", "{{.Name}}"]);
        c.lines().chain(v.lines()).map(str::to_string).collect()
    }

    /// Names of containers and volumes that belong to cluster `name` by name.
    pub fn leftovers(&self, name: &str) -> Vec<String> {
        let prefix = format!("kinc-{name}-");
        self.all_names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    pub fn state_of(&self, container: &str) -> String {
        let o = self.podman(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Status}}",
            container,
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The kubeconfig file kinc merges into for this runner.
    pub fn kubeconfig_path(&self) -> PathBuf {
        let get = |k: &str| {
            self.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        match get("KUBECONFIG") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(get("HOME").unwrap()).join(".kube/config"),
        }
    }

    /// Writes a file as the runner's user (so kinc may replace it).
    pub fn write_as_user(&self, p: &Path, text: &str, mode: u32) {
        let dir = p.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }

    pub fn labels_of_volume(&self, vol: &str) -> Value {
        let v: Value =
            serde_json::from_str(&self.podman_ok(&["volume", "inspect", "--format", "json", vol]))
                .unwrap();
        v[0]["Labels"].clone()
    }
}

/// Deletes the named clusters when dropped (also on panic).
pub struct ClusterGuard<'a> {
    pub runner: &'a Runner,
    pub names: Vec<String>,
}

impl Drop for ClusterGuard<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.runner.kinc(&["delete", "cluster", "--name", n]);
        }
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every listening TCP socket on `port` in this network namespace is on 127.0.0.1,
/// and there is at least one.
pub fn listens_on_loopback_only(port: u16) -> Result<(), String> {
    let mut found = 0;
    for (file, loopback) in [("/proc/net/tcp", "0100007F"), ("/proc/net/tcp6", "")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = f[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            if addr != loopback {
                return Err(format!("{file}: port {port} listens on {addr}"));
            }
            found += 1;
        }
    }
    if found == 0 {
        return Err(format!("nothing listens on port {port}"));
    }
    Ok(())
}

pub fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn subnets(c: &Value) -> [Ipv4Network; 2] {
    [
        c["podSubnet"].as_str().unwrap().parse().unwrap(),
        c["serviceSubnet"].as_str().unwrap().parse().unwrap(),
    ]
}

/// The scenarios both root and rootless run.
pub mod scenarios;
