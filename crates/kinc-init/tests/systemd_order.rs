//! kinc-init's units under a real systemd (PID 1 in a rootful podman container built
//! offline from debootstrap), with stand-in `cgroup-setup`, `crio`, `crictl`, `kubeadm`,
//! `kubectl` and `kubelet` that record their arguments. Proves, end to end: unit order
//! (cgroup-setup -> kinc-prepare -> crio -> kinc-init; kubelet only once kubeadm wrote its
//! config), the mounted config chosen, the status file, and the restart paths: a stopped
//! and started container never runs `kubeadm init` again, and a container recreated on the
//! same `/var` with a new IP gets `/etc/kubernetes` back and the IP-dependent phases redone.
//! Also the image's `kincnet-policy.path`: the controller (a stand-in) starts once kinc-init
//! wrote its kubeconfig, with the unit's arguments, and again at the next boot.
//!
//! Needs root, podman, debootstrap, tar. The Debian rootfs is cached in
//! CARGO_TARGET_TMPDIR (keyed by what goes into it) and imported once as an image.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kinc_types::status::Phase;
use kinc_types::{BootstrapStatus, ClusterConfig, ClusterName, StepState};

const SUITE: &str = "bookworm";
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,procps,netcat-openbsd";
/// Bump when the base image recipe changes.
const RECIPE: &str = "kinc-init-it-1";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let o = run(program, args);
    assert!(
        o.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The Debian mirror apt already uses on this host (nothing new is contacted).
fn mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    if let Some(u) = deb822.lines().find_map(|l| l.strip_prefix("URIs:")) {
        return u.split_whitespace().next().unwrap().to_string();
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    list.lines()
        .filter(|l| l.starts_with("deb "))
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http")))
        .unwrap_or("http://deb.debian.org/debian")
        .to_string()
}

/// `localhost/kinc-init-it-systemd:<key>`, built from a cached debootstrap rootfs.
fn base_image() -> String {
    let mirror = mirror();
    let mut h = DefaultHasher::new();
    (RECIPE, SUITE, INCLUDE, &mirror).hash(&mut h);
    let key = format!("{:016x}", h.finish());
    let image = format!("localhost/kinc-init-it-systemd:{key}");
    if run("podman", &["image", "exists", &image]).status.success() {
        return image;
    }
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kinc-init-it");
    std::fs::create_dir_all(&cache).unwrap();
    let tar = cache.join(format!("rootfs-{key}.tar"));
    if !tar.exists() {
        let rootfs = cache.join(format!("rootfs-{key}.tmp"));
        let _ = std::fs::remove_dir_all(&rootfs);
        eprintln!(
            "debootstrap {SUITE} from {mirror} (cached in {} afterwards)",
            tar.display()
        );
        run_ok(
            "debootstrap",
            &[
                "--variant=minbase",
                &format!("--include={INCLUDE}"),
                SUITE,
                rootfs.to_str().unwrap(),
                &mirror,
            ],
        );
        for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let p = rootfs.join(d);
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
        }
        let partial = cache.join(format!("rootfs-{key}.tar.partial"));
        run_ok(
            "tar",
            &[
                "-C",
                rootfs.to_str().unwrap(),
                "--numeric-owner",
                "-cf",
                partial.to_str().unwrap(),
                ".",
            ],
        );
        std::fs::rename(&partial, &tar).unwrap();
        std::fs::remove_dir_all(&rootfs).unwrap();
    }
    run_ok(
        "podman",
        &[
            "import",
            "-q",
            "--change",
            "CMD [\"/sbin/init\"]",
            "--change",
            "STOPSIGNAL=SIGRTMIN+3",
            "--change",
            "ENV=container=podman",
            tar.to_str().unwrap(),
            &image,
        ],
    );
    image
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

const LOG: &str = "/var/log/kinc-test/calls.log";

fn recorder(name: &str, extra: &str) -> String {
    format!("#!/bin/sh\nmkdir -p /var/log/kinc-test\necho \"{name} $*\" >> {LOG}\n{extra}exit 0\n")
}

/// The layer on top of the base: kinc-init, the repository's units and drop-ins, and
/// the stand-ins.
fn overlay(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let units = repo.join("image/files/etc/systemd/system");
    let bin = std::fs::read(env!("CARGO_BIN_EXE_kinc-init")).unwrap();
    let p = dir.join("usr/local/bin/kinc-init");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bin).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    for rel in [
        "kinc-prepare.service",
        "kinc-init.service",
        "crio.service.d/10-kinc.conf",
        "kubelet.service.d/10-kinc.conf",
        "kincnet-policy.service",
        "kincnet-policy.path",
    ] {
        let text = std::fs::read_to_string(units.join(rel)).unwrap();
        write(dir, &format!("etc/systemd/system/{rel}"), &text, 0o644);
    }
    // Stand-ins for what packages and other crates provide.
    write(dir, "etc/systemd/system/kinc-cgroup-setup.service",
        "[Unit]\nDescription=stand-in cgroup-setup\nBefore=crio.service kubelet.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/bin/cgroup-setup\n[Install]\nWantedBy=multi-user.target\n", 0o644);
    write(dir, "etc/systemd/system/crio.service",
        "[Unit]\nDescription=stand-in CRI-O\n[Service]\nExecStartPre=/usr/local/bin/crio-start\nExecStartPre=/bin/rm -f /run/crio/crio.sock\nExecStart=/bin/nc -lkU /run/crio/crio.sock\n[Install]\nWantedBy=multi-user.target\n", 0o644);
    write(dir, "etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=stand-in kubelet\n[Service]\nExecStartPre=/usr/local/bin/kubelet-start\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n", 0o644);
    write(
        dir,
        "usr/local/bin/cgroup-setup",
        &recorder("cgroup-setup", ""),
        0o755,
    );
    write(
        dir,
        "usr/local/bin/crio-start",
        &recorder("crio-start", "mkdir -p /run/crio\n"),
        0o755,
    );
    write(
        dir,
        "usr/local/bin/kubelet-start",
        &recorder("kubelet-start", ""),
        0o755,
    );
    write(dir, "usr/local/bin/crictl", &recorder("crictl", ""), 0o755);
    // The kincnet-policy token Secret as kube-controller-manager completes it.
    write(
        dir,
        "usr/local/bin/kubectl",
        &recorder(
            "kubectl",
            &format!(
                "case \"$*\" in *kincnet-policy-token*) printf '%s' '{TOKEN_SECRET}' ;; esac\n"
            ),
        ),
        0o755,
    );
    // The controller: records how systemd started it and stays up.
    write(
        dir,
        "usr/local/bin/kincnet-policy",
        &recorder("kincnet-policy", "exec sleep infinity\n"),
        0o755,
    );
    // kubeadm init leaves what kinc-init and kubelet look for, and (re)starts kubelet.
    write(dir, "usr/local/bin/kubeadm", &recorder("kubeadm",
        &format!("if [ \"$1 $2\" = \"init --config\" ] || [ \"$3\" = kubelet-start ]; then\n  mkdir -p /etc/kubernetes/pki /var/lib/kubelet\n  printf '%s' '{ADMIN_CONF}' > /etc/kubernetes/admin.conf\n  echo ca > /etc/kubernetes/pki/ca.crt\n  echo 'kind: KubeletConfiguration' > /var/lib/kubelet/config.yaml\n  systemctl restart kubelet.service\nfi\n")), 0o755);
    for u in [
        "kinc-cgroup-setup",
        "kinc-prepare",
        "kinc-init",
        "crio",
        "kubelet",
    ] {
        let link = dir.join(format!(
            "etc/systemd/system/multi-user.target.wants/{u}.service"
        ));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{u}.service"), link).unwrap();
    }
    let link = dir.join("etc/systemd/system/multi-user.target.wants/kincnet-policy.path");
    std::os::unix::fs::symlink("/etc/systemd/system/kincnet-policy.path", link).unwrap();
}

/// kubeadm's admin.conf, shaped as kubeadm writes it (no single quotes: printed by sh).
const ADMIN_CONF: &str = include_str!("fixtures/admin.conf");

/// `kubectl get secret kincnet-policy-token -o json`, token "it-token".
const TOKEN_SECRET: &str = r#"{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token","metadata":{"name":"kincnet-policy-token","namespace":"kube-system","annotations":{"kubernetes.io/service-account.name":"kincnet-policy"}},"data":{"token":"aXQtdG9rZW4="}}"#;

const POLICY_CMD: &str = "kincnet-policy --kubeconfig /etc/kinc/kincnet-policy.kubeconfig --table kincnet --status-file /run/kincnet-policy/status.json";

/// Removes everything the test made, also on panic.
struct Cleanup {
    name: String,
    image: String,
    network: String,
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("podman", &["rm", "-f", "-t", "0", "--ignore", &self.name]);
        let _ = run("podman", &["volume", "rm", "-f", &self.volume]);
        let _ = run("podman", &["network", "rm", "-f", &self.network]);
        let _ = run("podman", &["rmi", "-f", &self.image]);
    }
}

struct Node<'a> {
    c: &'a Cleanup,
    image: String,
    config_dir: PathBuf,
}

impl Node<'_> {
    fn start_new(&self, ip: &str) {
        let vol = format!("{}:/var", self.c.volume);
        let cfg = format!("{}:/etc/kinc/config:ro", self.config_dir.display());
        run_ok(
            "podman",
            &[
                "run",
                "-d",
                "--name",
                &self.c.name,
                "--hostname",
                "kinc-ittest-control-plane",
                "--systemd=always",
                // Host blockers on this VM (podman-here.md §1): crun refuses hybrid cgroups,
                // and root lacks CAP_SYS_RESOURCE to raise rlimits.
                "--runtime",
                "runc",
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
                "--network",
                &self.c.network,
                "--ip",
                ip,
                "-v",
                &vol,
                "-v",
                &cfg,
                &self.image,
            ],
        );
        self.wait_booted();
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.c.name.as_str()];
        all.extend_from_slice(args);
        run("podman", &all)
    }

    /// Until kinc-init.service finished (active or failed).
    fn wait_booted(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let o = self.exec(&["systemctl", "is-active", "kinc-init.service"]);
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if state == "active" || state == "failed" {
                return;
            }
            if Instant::now() > deadline {
                let j = self.exec(&["journalctl", "--no-pager", "-b", "-n", "80"]);
                panic!(
                    "kinc-init.service still {state:?}; journal:\n{}",
                    String::from_utf8_lossy(&j.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Until `unit` is active (started by a path unit, so it may lag kinc-init a little).
    fn wait_active(&self, unit: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = self.exec(&["systemctl", "is-active", unit]);
            if String::from_utf8_lossy(&o.stdout).trim() == "active" {
                return;
            }
            if Instant::now() > deadline {
                let j = self.exec(&["journalctl", "--no-pager", "-b", "-u", unit]);
                panic!(
                    "{unit} not active: {o:?}; journal:\n{}",
                    String::from_utf8_lossy(&j.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn status(&self) -> BootstrapStatus {
        let o = self.exec(&["cat", kinc_types::status::STATUS_PATH]);
        assert!(
            o.status.success(),
            "no status file: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        BootstrapStatus::from_json(&o.stdout, "status.json").unwrap()
    }

    fn calls(&self) -> Vec<String> {
        let o = self.exec(&["cat", LOG]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Monotonic µs of a unit property (e.g. ActiveEnterTimestampMonotonic).
    fn mono(&self, unit: &str, prop: &str) -> u64 {
        let o = self.exec(&["systemctl", "show", "--value", "-p", prop, unit]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{unit} {prop}: {o:?}"))
    }

    fn journal(&self) -> String {
        String::from_utf8_lossy(
            &self
                .exec(&[
                    "journalctl",
                    "--no-pager",
                    "-b",
                    "-u",
                    "kinc-prepare",
                    "-u",
                    "kinc-init",
                ])
                .stdout,
        )
        .into_owned()
    }
}

fn index(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
}

#[test]
#[ignore = "needs root, podman, debootstrap, tar, a Debian mirror (first run)"]
fn units_run_in_order_and_restarts_never_rerun_kubeadm_init() {
    kinc_testutil::require_root_and!("podman", "debootstrap", "tar");
    let pid = std::process::id();
    let c = Cleanup {
        name: format!("kinc-init-it-{pid}"),
        image: format!("localhost/kinc-init-it-node:{pid}"),
        network: format!("kinc-init-it-{pid}"),
        volume: format!("kinc-init-it-{pid}-var"),
    };
    let base = base_image();

    let work = tempfile::tempdir().unwrap();
    let layer = work.path().join("layer");
    overlay(&layer);
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    run_ok(
        "tar",
        &[
            "-C",
            layer.to_str().unwrap(),
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-cf",
            ctx.join("layer.tar").to_str().unwrap(),
            ".",
        ],
    );
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM {base}\nADD layer.tar /\n"),
    )
    .unwrap();
    // No RUN step: podman build needs no OCI runtime here.
    run_ok(
        "podman",
        &["build", "-q", "-t", &c.image, ctx.to_str().unwrap()],
    );

    let config_dir = work.path().join("config");
    let cfg = ClusterConfig::new(
        ClusterName::new("ittest").unwrap(),
        6460,
        "10.244.60.0/24".parse().unwrap(),
        "10.60.0.0/16".parse().unwrap(),
    );
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("cluster.json"), cfg.to_json()).unwrap();

    let octet = 16 + pid % 200;
    let subnet = format!("10.218.{octet}.0/24");
    let (ip1, ip2) = (format!("10.218.{octet}.10"), format!("10.218.{octet}.20"));
    run_ok(
        "podman",
        &["network", "create", "--subnet", &subnet, &c.network],
    );
    let node = Node {
        c: &c,
        image: c.image.clone(),
        config_dir,
    };

    // ---- first boot ----
    node.start_new(&ip1);
    let s = node.status();
    assert_eq!(s.phase, Phase::Ready, "{s:#?}\n{}", node.journal());
    assert_eq!((s.cluster.as_str(), s.boot), ("ittest", 1));
    let calls = node.calls();
    let order = ["cgroup-setup", "crio-start", "crictl --runtime-endpoint unix:///var/run/crio/crio.sock info",
        "kubeadm init --config /var/lib/kinc/kubeadm.yaml", "kubelet-start",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /usr/share/kinc/manifests/cluster",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf --namespace kube-system get secret kincnet-policy-token --output json",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf wait --for=condition=Ready node/kinc-ittest-control-plane",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf --namespace kube-system wait --for=condition=Available deployment/coredns"];
    let idx: Vec<usize> = order.iter().map(|p| index(&calls, p)).collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "order {idx:?} in {calls:#?}"
    );
    // systemd's own record of the unit order.
    let active = |u: &str| node.mono(u, "ActiveEnterTimestampMonotonic");
    let started = |u: &str| node.mono(u, "InactiveExitTimestampMonotonic");
    assert!(active("kinc-cgroup-setup.service") <= started("kinc-prepare.service"));
    assert!(active("kinc-prepare.service") <= started("crio.service"));
    assert!(active("crio.service") <= started("kinc-init.service"));
    // The rendered config is the mounted cluster's, at this container's IP.
    let kubeadm =
        String::from_utf8_lossy(&node.exec(&["cat", "/var/lib/kinc/kubeadm.yaml"]).stdout)
            .into_owned();
    assert!(
        kubeadm.contains(&format!("advertiseAddress: {ip1}"))
            && kubeadm.contains("podSubnet: 10.244.60.0/24"),
        "{kubeadm}"
    );
    let conflist = String::from_utf8_lossy(
        &node
            .exec(&["cat", kinc_types::node::KINCNET_CONFLIST])
            .stdout,
    )
    .into_owned();
    assert!(conflist.contains("10.244.60.0/24"), "{conflist}");
    let mode = run_ok(
        "podman",
        &[
            "exec",
            &c.name,
            "stat",
            "-c",
            "%a",
            kinc_types::node::ADMIN_KUBECONFIG,
        ],
    );
    assert_eq!(mode.trim(), "600");
    // kincnet-policy.path started the controller once its kubeconfig was written, with
    // the unit's arguments, and the file holds the Secret's token.
    node.wait_active("kincnet-policy.service");
    let calls = node.calls();
    assert!(
        index(&calls, POLICY_CMD) > index(&calls, "kubectl --kubeconfig /etc/kubernetes/admin.conf --namespace kube-system get secret"),
        "{calls:#?}"
    );
    let mode = run_ok(
        "podman",
        &[
            "exec",
            &c.name,
            "stat",
            "-c",
            "%a",
            "/etc/kinc/kincnet-policy.kubeconfig",
        ],
    );
    assert_eq!(mode.trim(), "600");
    let kc = run_ok(
        "podman",
        &[
            "exec",
            &c.name,
            "cat",
            "/etc/kinc/kincnet-policy.kubeconfig",
        ],
    );
    assert!(
        kc.contains("token: it-token") && kc.contains("server: https://127.0.0.1:6443"),
        "{kc}"
    );

    // ---- stop and start: same container, same IP ----
    let before = calls.len();
    run_ok("podman", &["stop", "-t", "20", &c.name]);
    run_ok("podman", &["start", &c.name]);
    node.wait_booted();
    let s = node.status();
    assert_eq!(s.phase, Phase::Ready, "{s:#?}\n{}", node.journal());
    assert_eq!(s.boot, 2);
    assert_eq!(s.step("kubeadm-init").unwrap().state, StepState::Skipped);
    let new: Vec<String> = node.calls()[before..].to_vec();
    assert!(new.iter().all(|l| !l.starts_with("kubeadm")), "{new:#?}");
    assert!(
        new.iter().any(|l| l.contains("wait --for=condition=Ready")),
        "{new:#?}"
    );
    // The kubeconfig is still there, so the controller is started at boot again.
    node.wait_active("kincnet-policy.service");
    let new: Vec<String> = node.calls()[before..].to_vec();
    assert!(new.iter().any(|l| l == POLICY_CMD), "{new:#?}");

    // ---- recreated on the same /var with a new IP ----
    let before = new.len() + before;
    run_ok("podman", &["rm", "-f", "-t", "20", &c.name]);
    node.start_new(&ip2);
    let s = node.status();
    assert_eq!(s.phase, Phase::Ready, "{s:#?}\n{}", node.journal());
    assert_eq!(s.boot, 3);
    let restore = s.step("restore-node").unwrap();
    let note = restore.message.clone().unwrap_or_default();
    assert!(
        note.contains("restored") && note.contains(&format!("from {ip1} to {ip2}")),
        "{note}"
    );
    let new: Vec<String> = node.calls()[before..]
        .iter()
        .filter(|l| l.starts_with("kubeadm"))
        .cloned()
        .collect();
    assert_eq!(
        new,
        [
            "kubeadm init phase certs apiserver --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase control-plane apiserver --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase etcd local --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase kubelet-start --config /var/lib/kinc/kubeadm.yaml",
        ]
    );
}
