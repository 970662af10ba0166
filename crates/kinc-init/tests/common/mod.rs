//! A fake node root in a temp dir: a cluster config, a listening CRI socket (CRI-O, or
//! containerd with the offline image's `node-image.json` and preloaded archives), and a
//! recording runner whose `kubeadm init` leaves what the real one leaves and whose `ctr`
//! keeps a small image store (a file under the root, so it survives between boots).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinc_init::runner::{Cmd, Output, RecordingRunner};
use kinc_init::{Bootstrap, InitError, NodePaths, Timeouts};
use kinc_types::node::{self, Cri, ImageList, NodeImageInfo, PreloadedImage};
use kinc_types::{BootstrapStatus, ClusterConfig, ClusterName, StepState};

pub struct FakeNode {
    pub dir: tempfile::TempDir,
    pub paths: NodePaths,
    pub cri: Cri,
    _cri_socket: Option<UnixListener>,
}

/// Two of the offline image's archives, as the image build lists them.
pub const APISERVER: (&str, &str) = (
    "registry.k8s.io/kube-apiserver:v1.33.13",
    "kube-apiserver.tar",
);
pub const PAUSE: (&str, &str) = ("registry.k8s.io/pause:3.10", "pause.tar");

/// The filter `load-images` lists containerd's images with: pinned ones only.
pub const PINNED_FILTER: &str = r#"labels."io.cri-containerd.pinned"==pinned"#;

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
    /// The Fedora image: no node-image.json, CRI-O.
    pub fn new(cfg: &ClusterConfig) -> Self {
        Self::with_cri(cfg, Cri::Crio)
    }

    fn with_cri(cfg: &ClusterConfig, cri: Cri) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = NodePaths::under(dir.path());
        write(&paths.mounted_config(), &cfg.to_json());
        let sock = paths.cri_socket(cri);
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let listener = UnixListener::bind(&sock).unwrap();
        Self {
            dir,
            paths,
            cri,
            _cri_socket: Some(listener),
        }
    }

    /// The offline image: containerd, and `images` (name, file) as OCI archives in
    /// /usr/share/kinc/images with their images.json.
    pub fn containerd(cfg: &ClusterConfig, images: &[(&str, &str)]) -> Self {
        let n = Self::with_cri(cfg, Cri::Containerd);
        let info = NodeImageInfo {
            cri: Cri::Containerd,
            images_dir: Some(node::PRELOADED_IMAGES_DIR.into()),
        };
        write(&n.paths.node_image_info(), &info.to_json());
        let dir = n.images_dir();
        let list = ImageList(
            images
                .iter()
                .map(|(name, file)| PreloadedImage {
                    name: name.to_string(),
                    file: file.to_string(),
                })
                .collect(),
        );
        write(&dir.join(node::IMAGE_LIST_FILE), &list.to_json());
        for (_, file) in images {
            write(&dir.join(file), "an OCI archive");
        }
        n
    }

    /// The CRI never comes up.
    pub fn without_cri(mut self) -> Self {
        self._cri_socket = None;
        std::fs::remove_file(self.paths.cri_socket(self.cri)).unwrap();
        self
    }

    /// The images dir below the root.
    pub fn images_dir(&self) -> PathBuf {
        self.paths.at(node::PRELOADED_IMAGES_DIR)
    }

    /// Puts `name` into the fake containerd store as if imported on an earlier boot.
    pub fn containerd_has(&self, name: &str, pinned: bool) {
        let mut store = ctr_store(self.root());
        store.insert(name.to_string(), pinned);
        save_ctr_store(self.root(), &store);
    }

    /// The fake containerd store: image name -> pinned.
    pub fn containerd_images(&self) -> BTreeMap<String, bool> {
        ctr_store(self.root())
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
        cri: Duration::from_millis(300),
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
        if cmd.program == "ctr" {
            return fake_ctr(&root, &cmd.args);
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

fn ctr_store_path(root: &Path) -> PathBuf {
    root.join("fake-containerd-images.json")
}

fn ctr_store(root: &Path) -> BTreeMap<String, bool> {
    std::fs::read(ctr_store_path(root))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_default()
}

fn save_ctr_store(root: &Path, store: &BTreeMap<String, bool>) {
    std::fs::write(ctr_store_path(root), serde_json::to_vec(store).unwrap()).unwrap();
}

/// Serialises the fake store's read-modify-write: `load-images` runs several `ctr` at once
/// (containerd's own store has its locks).
static CTR_STORE_LOCK: Mutex<()> = Mutex::new(());

/// `ctr` 1.7 as far as kinc-init uses it, against containerd's socket below `root`: the
/// image an archive holds is the one its directory's images.json names (the archive's
/// `io.containerd.image.name` annotation in the real image).
pub fn fake_ctr(root: &Path, args: &[String]) -> Output {
    let _store = CTR_STORE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let sock = root.join("run/containerd/containerd.sock");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(rest) = a.strip_prefix(&["--address", sock.to_str().unwrap()][..]) else {
        return fail(
            1,
            "ctr: failed to dial: connection refused (wrong --address)",
        );
    };
    if rest == ["version"] {
        return Output {
            code: Some(0),
            stdout: "Client:\n  Version:  1.7.24\nServer:\n  Version:  1.7.24\n".into(),
            ..Output::default()
        };
    }
    let Some(rest) = rest.strip_prefix(&["--namespace", "k8s.io", "images"][..]) else {
        return fail(1, &format!("ctr: unexpected arguments {a:?}"));
    };
    let mut store = ctr_store(root);
    match rest {
        ["list", "--quiet", filter] => {
            if *filter != PINNED_FILTER {
                return fail(1, &format!("ctr: unexpected filter {filter}"));
            }
            let names: Vec<&str> = store
                .iter()
                .filter(|(_, pinned)| **pinned)
                .map(|(n, _)| n.as_str())
                .collect();
            Output {
                code: Some(0),
                stdout: names.iter().map(|n| format!("{n}\n")).collect(),
                ..Output::default()
            }
        }
        ["import", "--local", "--snapshotter", "overlayfs", archive] => {
            let archive = Path::new(archive);
            if !archive.is_file() {
                return fail(
                    1,
                    &format!("ctr: open {}: no such file or directory", archive.display()),
                );
            }
            let list = ImageList::load(&archive.parent().unwrap().join("images.json")).unwrap();
            let file = archive.file_name().unwrap().to_str().unwrap();
            // An archive may hold several images: ctr imports and names each.
            let mut stdout = String::new();
            for img in list.0.iter().filter(|i| i.file == file) {
                store.entry(img.name.clone()).or_insert(false);
                stdout += &format!("unpacking {} (sha256:00)...done\n", img.name);
            }
            save_ctr_store(root, &store);
            Output {
                code: Some(0),
                stdout,
                ..Output::default()
            }
        }
        ["label", name, "io.cri-containerd.pinned=pinned"] => match store.get_mut(*name) {
            Some(pinned) => {
                *pinned = true;
                save_ctr_store(root, &store);
                ok()
            }
            None => fail(1, &format!("ctr: image \"{name}\": not found")),
        },
        _ => fail(1, &format!("ctr: unexpected arguments {a:?}")),
    }
}

pub fn boot(
    node: &FakeNode,
    runner: &RecordingRunner,
    ip: &IpKnob,
) -> Result<BootstrapStatus, InitError> {
    let knob = ip.clone();
    Bootstrap::new(node.paths.clone(), runner)
        .with_timeouts(fast())
        .with_node_ip(move || Ok(knob.get()))
        .run_all()
}

pub fn saved_status(node: &FakeNode) -> BootstrapStatus {
    BootstrapStatus::load(&node.paths.status()).unwrap()
}

pub fn state_of(s: &BootstrapStatus, name: &str) -> StepState {
    s.step(name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .state
}

pub fn message_of(s: &BootstrapStatus, name: &str) -> String {
    s.step(name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .message
        .clone()
        .unwrap_or_else(|| panic!("step {name} has no message"))
}

/// Command lines with the temp root replaced by `/`, so they read like the real node's.
pub fn calls(node: &FakeNode, runner: &RecordingRunner) -> Vec<String> {
    let root = format!("{}/", node.root().display());
    runner
        .lines()
        .iter()
        .map(|l| l.replace(&root, "/"))
        .collect()
}

/// The kubeadm commands among [`calls`], in order.
pub fn kubeadm_calls(node: &FakeNode, runner: &RecordingRunner) -> Vec<String> {
    calls(node, runner)
        .into_iter()
        .filter(|l| l.starts_with("kubeadm"))
        .collect()
}
