//! The node of the CNI gate tests and benchmark: a network namespace with the fake API
//! server on 127.0.0.1 (namespaces `prod`, with a policy isolating `role=db` pods both
//! ways, and `other`, without policies), the real `kincnet-policy` binary, and kincnet's
//! ADD/DEL run in-process exactly as its binary runs them.
#![allow(dead_code)]

#[path = "../apiserver/fake.rs"]
#[allow(dead_code)]
mod fake;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use fake::{FakeApi, Kind};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kinc_testutil::netns::{enter, Netns};
use kincnet_policy::Status;
use serde_json::{json, Value};

const MANIFEST: &str = include_str!("../../../../manifests/cluster/kincnet-policy.yaml");
const TABLE: &str = "kincnet";
const SUBNET: &str = "10.97.0.0/24";

/// The CA of the kubeconfig (public part only; the connection is plain HTTP).
const TEST_CA: &str = include_str!("../test-ca.pem");

pub fn role_rules() -> Vec<PolicyRule> {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(MANIFEST)
        .map(|d| serde::Deserialize::deserialize(d).expect("manifest YAML"))
        .collect();
    let role = docs
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    serde_json::from_value::<ClusterRole>(role)
        .unwrap()
        .rules
        .unwrap_or_default()
}

/// The controller process, killed on drop.
pub struct Ctl {
    child: Child,
    log: PathBuf,
}

impl Ctl {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node: its netns with the fake API server on 127.0.0.1, kincnet's IPAM directory,
/// the controller's socket and status file.
pub struct Lab {
    pub node: Netns,
    pub api: FakeApi,
    addr: SocketAddr,
    pub token: String,
    pub dir: tempfile::TempDir,
    socket: PathBuf,
    status_file: PathBuf,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let node = Netns::named(format!("kg{tag}{pid}"));
        node.ip(&["link", "set", "lo", "up"]);
        let listener = node.run(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
        let addr = listener.local_addr().unwrap();
        let token = format!("kg-token-{pid}");
        let api = FakeApi::start(listener, &token, role_rules());
        api.edit(|e| {
            for ns in ["prod", "other"] {
                e.apply(
                    Kind::Namespace,
                    json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}),
                );
            }
            e.apply(
                Kind::NetworkPolicy,
                json!({"metadata": {"name": "db-isolated", "namespace": "prod"},
                       "spec": {"podSelector": {"matchLabels": {"role": "db"}},
                                "policyTypes": ["Ingress", "Egress"]}}),
            );
        });
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cni.sock");
        let status_file = dir.path().join("status.json");
        Lab {
            node,
            api,
            addr,
            token,
            dir,
            socket,
            status_file,
        }
    }

    /// Starts the controller in the node with `token`.
    pub fn controller(&self, token: &str) -> Ctl {
        let ca =
            serde_json::to_value(k8s_openapi::ByteString(TEST_CA.as_bytes().to_vec())).unwrap();
        let admin = kube::config::Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: http://{}\n    certificate-authority-data: {}\ncontexts:\n- name: admin\n  context: {{cluster: kubernetes, user: admin}}\ncurrent-context: admin\nusers:\n- name: admin\n  user: {{token: not-for-the-controller}}\n",
            self.addr,
            ca.as_str().unwrap()
        ))
        .unwrap();
        let kc = kinc_init::policy::controller_kubeconfig(&admin, Path::new("admin.conf"), token)
            .unwrap();
        let kc_path = self.dir.path().join("kincnet-policy.kubeconfig");
        std::fs::write(&kc_path, kinc_init::policy::to_yaml(&kc)).unwrap();
        std::fs::set_permissions(&kc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = self.dir.path().join("controller.log");
        let bin = std::env::var("KINCNET_POLICY_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kincnet-policy").to_string());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node.name, &bin, "--kubeconfig"])
            .arg(&kc_path)
            .args(["--table", TABLE, "--resync", "1h", "--status-file"])
            .arg(&self.status_file)
            .arg("--cni-socket")
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawning kincnet-policy");
        Ctl { child, log }
    }

    pub fn status(&self) -> Option<Status> {
        let bin = env!("CARGO_BIN_EXE_kincnet-policy");
        let out = Command::new(bin)
            .args(["--status", "-o", "json", "--status-file"])
            .arg(&self.status_file)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
    }

    pub fn wait_for(&self, ctl: &Ctl, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.status().filter(|s| ok(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {:#?}\n{}",
                self.status(),
                ctl.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn conf(&self, timeout_ms: u64) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "kgate", "type": "kincnet", "bridge": "kinc0",
            "policySocket": self.socket, "policyTimeoutMs": timeout_ms,
            "ipam": {"subnet": SUBNET, "dataDir": self.dir.path().join("ipam")}
        })
    }

    /// Runs kincnet's `command` in the node, as the runtime would for pod `ns/name`.
    pub fn cni(
        &self,
        command: &str,
        conf: &Value,
        cid: &str,
        netns: Option<&Path>,
        pod: Option<(&str, &str)>,
    ) -> kincnet::plugin::Output {
        self.cni_timed(command, conf, cid, netns, pod).0
    }

    /// `cni`, and how long the call took to answer. The binary's answer is its exit;
    /// in-process the thread's exit closes the nf_tables socket, which can wait for an
    /// RCU grace period that the binary leaves to a child (`plugin::exit_detached`), so
    /// the time is taken inside the thread.
    pub fn cni_timed(
        &self,
        command: &str,
        conf: &Value,
        cid: &str,
        netns: Option<&Path>,
        pod: Option<(&str, &str)>,
    ) -> (kincnet::plugin::Output, Duration) {
        let mut env = vec![
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), "/nonexistent".into()),
        ];
        if let Some(n) = netns {
            env.push(("CNI_NETNS".into(), n.display().to_string()));
        }
        if let Some((ns, name)) = pod {
            env.push((
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_UID=u"),
            ));
        }
        let stdin = conf.to_string();
        self.node.run(|| {
            let t = Instant::now();
            let out = kincnet::plugin::run(
                &|k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
                stdin.as_bytes(),
            );
            (out, t.elapsed())
        })
    }

    pub fn set(&self, name: &str) -> Vec<String> {
        let out = self
            .node
            .command("nft", &["-j", "list", "set", "ip", TABLE, name])
            .output()
            .unwrap();
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|o| o["set"]["elem"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                e.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect()
    }

    pub fn host_veths(&self) -> usize {
        self.node
            .ip(&["-o", "link", "show"])
            .lines()
            .filter(|l| l.contains(": kn"))
            .count()
    }

    pub fn allocations(&self) -> usize {
        std::fs::read(self.dir.path().join("ipam/kgate/allocations.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["allocations"].as_object().map(|m| m.len()))
            .unwrap_or(0)
    }
}

pub fn pending_pod(ns: &str, name: &str, role: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"role": role}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Pending"},
    })
}

pub fn result_ip(out: &kincnet::plugin::Output) -> Ipv4Addr {
    let v: Value = serde_json::from_str(&out.stdout).expect("ADD result");
    v["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A TCP connect from inside `from`, armed in advance (the thread is in the namespace
/// already) and fired by sending the destination: it starts at once.
pub struct Armed {
    tx: mpsc::Sender<Ipv4Addr>,
    done: JoinHandle<bool>,
}

pub fn arm(from: &Netns, port: u16, timeout: Duration) -> Armed {
    let (tx, rx) = mpsc::channel::<Ipv4Addr>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let f = from.file();
    let done = std::thread::spawn(move || {
        enter(&f);
        ready_tx.send(()).unwrap();
        let Ok(to) = rx.recv() else { return false };
        let addr = SocketAddr::V4(SocketAddrV4::new(to, port));
        TcpStream::connect_timeout(&addr, timeout).is_ok()
    });
    ready_rx.recv().unwrap();
    Armed { tx, done }
}

impl Armed {
    pub fn fire(&self, to: Ipv4Addr) {
        self.tx.send(to).unwrap();
    }
    pub fn connected(self) -> bool {
        self.done.join().unwrap()
    }
}
