//! A fake node root in a temp dir: a cluster config, a listening "CRI-O" socket, and a
//! recording runner whose `kubeadm init` leaves what the real one leaves.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinc_init::runner::{Cmd, Output, RecordingRunner};
use kinc_init::{NodePaths, Timeouts};
use kinc_types::{ClusterConfig, ClusterName};

pub struct FakeNode {
    pub dir: tempfile::TempDir,
    pub paths: NodePaths,
    _crio: Option<UnixListener>,
}

pub fn cluster(name: &str, port: u16) -> ClusterConfig {
    let octet = port % 100;
    ClusterConfig::new(
        ClusterName::new(name).unwrap(),
        port,
        format!("10.244.{octet}.0/24").parse().unwrap(),
        format!("10.{octet}.0.0/16").parse().unwrap(),
    )
}

impl FakeNode {
    pub fn new(cfg: &ClusterConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = NodePaths::under(dir.path());
        write(&paths.mounted_config(), &cfg.to_json());
        let sock = paths.crio_socket();
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let crio = UnixListener::bind(&sock).unwrap();
        Self {
            dir,
            paths,
            _crio: Some(crio),
        }
    }

    /// CRI-O never comes up.
    pub fn without_crio(cfg: &ClusterConfig) -> Self {
        let mut n = Self::new(cfg);
        n._crio = None;
        std::fs::remove_file(n.paths.crio_socket()).unwrap();
        n
    }

    /// A runner where every program succeeds as on a healthy node.
    pub fn healthy(&self) -> RecordingRunner {
        healthy_runner(self.root().to_path_buf(), |_| None)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn fast() -> Timeouts {
    Timeouts {
        crio: Duration::from_millis(300),
        api: Duration::from_millis(300),
        node_ready: Duration::from_millis(300),
        coredns: Duration::from_millis(300),
        poll: Duration::from_millis(20),
        kubectl_wait: Duration::from_secs(1),
    }
}

pub fn ok() -> Output {
    Output {
        code: Some(0),
        ..Output::default()
    }
}

pub fn fail(code: i32, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stderr: stderr.to_string(),
        ..Output::default()
    }
}

/// An admin.conf shaped like kubeadm's (CA "CA", client certificate "CERT").
pub const ADMIN_CONF: &str = include_str!("../fixtures/admin.conf");

/// The token kube-controller-manager put in the kincnet-policy Secret ("sa-token").
pub const SA_TOKEN: &str = "sa-token";

/// `kubectl get secret kincnet-policy-token -o json` once the token is issued.
pub fn token_secret_json(token: Option<&str>) -> String {
    let mut s = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "kincnet-policy-token", "namespace": "kube-system",
            "annotations": {"kubernetes.io/service-account.name": "kincnet-policy"}},
    });
    if let Some(t) = token {
        let b64 = serde_json::to_value(k8s_openapi::ByteString(t.as_bytes().to_vec())).unwrap();
        s["data"] = serde_json::json!({ "token": b64 });
    }
    s.to_string()
}

pub fn is_get_token_secret(cmd: &Cmd) -> bool {
    cmd.program == "kubectl" && cmd.args.iter().any(|a| a == "kincnet-policy-token")
}

/// What `kubeadm init` leaves in /etc/kubernetes and /var.
pub fn fake_kubeadm_init(root: &Path) {
    let etc = root.join("etc/kubernetes");
    write(&etc.join("admin.conf"), ADMIN_CONF);
    write(&etc.join("pki/ca.crt"), "ca");
    write(&etc.join("pki/apiserver.crt"), "old-cert");
    write(&etc.join("pki/apiserver.key"), "old-key");
    write(&etc.join("manifests/kube-apiserver.yaml"), "kind: Pod\n");
}

/// A runner that behaves like a healthy node; `tweak` may override any answer.
pub fn healthy_runner(
    root: PathBuf,
    tweak: impl Fn(&Cmd) -> Option<Output> + Send + Sync + 'static,
) -> RecordingRunner {
    RecordingRunner::with(move |cmd| {
        if let Some(o) = tweak(cmd) {
            return o;
        }
        if cmd.program == "kubeadm"
            && cmd.args.first().map(String::as_str) == Some("init")
            && cmd.args.get(1).map(String::as_str) == Some("--config")
        {
            fake_kubeadm_init(&root);
        }
        if cmd.program == "kubeadm" && cmd.args[..2] == ["init", "phase"] && cmd.args[2] == "certs"
        {
            write(&root.join("etc/kubernetes/pki/apiserver.crt"), "new-cert");
        }
        if is_get_token_secret(cmd) {
            return Output {
                code: Some(0),
                stdout: token_secret_json(Some(SA_TOKEN)),
                ..Output::default()
            };
        }
        ok()
    })
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, last)
}

/// A node IP source the test can change between boots.
#[derive(Clone)]
pub struct IpKnob(pub Arc<Mutex<Ipv4Addr>>);

impl IpKnob {
    pub fn new(a: Ipv4Addr) -> Self {
        Self(Arc::new(Mutex::new(a)))
    }
    pub fn set(&self, a: Ipv4Addr) {
        *self.0.lock().unwrap() = a;
    }
    pub fn get(&self) -> Ipv4Addr {
        *self.0.lock().unwrap()
    }
}
