//! The plain kubeadm side of `bench-ready`, as root directly on the VM: the same kubeadm,
//! kubelet, kubectl, containerd, runc shim, crun, kincnet and loopback taken out of the
//! node archive's layer, containerd's and kubelet's config and units as in the node, the
//! component images imported before the clock starts (kubeadm's usual pre-pulled state),
//! then `kubeadm init` timed to node Ready and CoreDNS Ready.
//!
//! What differs from the node, and why: crun runs directly (crun-wrapper only fits pod
//! specs to a rootless user namespace); kubelet has no `cgroupRoot` (`/kubelet` exists
//! only because cgroup-setup delegates it in the node) and no `KubeletInUserNamespace`
//! gate; the node's own drop-ins (ordering after kinc's units, no modprobe in a container)
//! are left out. Everything else is the node's (the documents mirror kinc-init's
//! renderer; a test compares them with its golden file).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kinc_types::node::{self as kn, Cri, ImageList, NodeImageInfo};
use kinc_types::{ClusterConfig, ClusterName};
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use super::bench_guest::{record, record_ready, run_timed, tail, wait_ready};
use super::bench_ready::{kubeadm_spans, now_unix, MachineInfo, Side, SideResult, Span, API_PORT};
use super::config::{CTL_MOUNT, HOSTNAME};
use super::e2e_checks::{ok, quiet, sh};

/// Where the node's `usr/share/kinc` (image list, component archives) is unpacked.
pub const BENCH_ROOT: &str = "/var/lib/kinc-bench";
/// The node's crun, beside the VM's own (podman's runtime, left alone).
pub const BENCH_CRUN: &str = "/usr/local/lib/kinc-bench/crun";
pub const KUBEADM_CONFIG: &str = "/etc/kinc-bench/kubeadm.yaml";
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The node's address, as kinc-init gives a node with no usable one (the VM has no NIC):
/// RFC 7600's IPv4 dummy address on a dummy link.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
pub const DUMMY_LINK: &str = "kinc-node";
/// What kinc's allocator gives the first cluster on a host with no routes (the kinc side's
/// cluster had the same; it is deleted by now).
pub const POD_SUBNET: &str = "10.64.0.0/20";
pub const SERVICE_SUBNET: &str = "10.64.16.0/20";

/// Files of the node's layer installed on the VM: (path in the layer, path on the VM).
/// The node's paths unless the VM has its own file there.
pub const INSTALL: &[(&str, &str)] = &[
    // The multi-call binary; the three below are links to it.
    ("usr/local/bin/kube", "/usr/local/bin/kube"),
    ("usr/local/bin/kubeadm", "/usr/local/bin/kubeadm"),
    ("usr/local/bin/kubelet", "/usr/local/bin/kubelet"),
    ("usr/local/bin/kubectl", "/usr/local/bin/kubectl"),
    ("usr/bin/containerd", "/usr/bin/containerd"),
    (
        "usr/bin/containerd-shim-runc-v2",
        "/usr/bin/containerd-shim-runc-v2",
    ),
    ("usr/bin/ctr", "/usr/bin/ctr"),
    ("usr/bin/crun", BENCH_CRUN),
    ("opt/cni/bin/kincnet", "/opt/cni/bin/kincnet"),
    // A link to Debian's plugin, as in the node.
    ("opt/cni/bin/loopback", "/opt/cni/bin/loopback"),
    ("usr/lib/cni/loopback", "/usr/lib/cni/loopback"),
    (
        "usr/lib/systemd/system/containerd.service",
        "/etc/systemd/system/containerd.service",
    ),
    (
        "etc/systemd/system/kubelet.service",
        "/etc/systemd/system/kubelet.service",
    ),
    (
        "etc/systemd/system/kubelet.service.d/20-kubeadm.conf",
        "/etc/systemd/system/kubelet.service.d/20-kubeadm.conf",
    ),
];
/// Unpacked below [`BENCH_ROOT`] as a whole: node-image.json and the images it names.
pub const NODE_SHARE: &str = "usr/share/kinc/";
pub const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";

// --- containerd's config: the node's file, typed (an unknown key fails the parse, so a
// change to the node's config is noticed here).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdConfig {
    pub version: u32,
    pub plugins: Plugins,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    #[serde(rename = "io.containerd.grpc.v1.cri")]
    pub cri: CriPlugin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriPlugin {
    pub sandbox_image: String,
    pub restrict_oom_score_adj: bool,
    pub disable_apparmor: bool,
    pub disable_hugetlb_controller: bool,
    pub containerd: CriContainerd,
    pub cni: CriCni,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriContainerd {
    pub snapshotter: String,
    pub default_runtime_name: String,
    pub runtimes: BTreeMap<String, Runtime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub runtime_type: String,
    pub options: RuntimeOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOptions {
    #[serde(rename = "BinaryName")]
    pub binary_name: String,
    #[serde(rename = "SystemdCgroup")]
    pub systemd_cgroup: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriCni {
    pub bin_dir: String,
    pub conf_dir: String,
}

/// The node's containerd config with crun itself as every runtime's binary: crun-wrapper
/// adapts pod specs to a rootless user namespace, which real root does not need.
pub fn plain_containerd(mut node: ContainerdConfig, crun: &str) -> ContainerdConfig {
    for rt in node.plugins.cri.containerd.runtimes.values_mut() {
        rt.options.binary_name = crun.to_string();
    }
    node
}

// --- kubeadm's documents, as kinc-init renders them (crates/kinc-init/src/kubeadm.rs)
// minus what only a rootless node needs.

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arg {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    pub node_registration: NodeRegistration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiEndpoint {
    pub advertise_address: Ipv4Addr,
    pub bind_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRegistration {
    pub name: String,
    pub cri_socket: String,
    pub kubelet_extra_args: Vec<Arg>,
    /// As kinc: every preflight check runs and reports, none stops init.
    pub ignore_preflight_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub networking: Networking,
    pub api_server: ApiServer,
    pub controller_manager: ControlPlaneComponent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    pub pod_subnet: String,
    pub service_subnet: String,
    pub dns_domain: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneComponent {
    pub extra_args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cgroup_driver: String,
    pub container_runtime_endpoint: String,
    pub fail_swap_on: bool,
    pub memory_swap: MemorySwap,
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: u8,
    pub local_storage_capacity_isolation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemorySwap {
    pub swap_behavior: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    pub api_version: String,
    pub kind: String,
    pub mode: String,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub conntrack: Conntrack,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conntrack {
    pub max_per_core: u32,
    pub min: u32,
    pub tcp_established_timeout: String,
    pub tcp_close_wait_timeout: String,
}

/// What kinc-init's kubeadm config has that plain kubeadm leaves at kubeadm's default,
/// and why.
pub const KINC_ONLY: &[(&str, &str)] = &[
    (
        "KubeletConfiguration.cgroupRoot",
        "the cgroup cgroup-setup delegates in the node",
    ),
    (
        "KubeletConfiguration.featureGates.KubeletInUserNamespace",
        "a rootless node",
    ),
    (
        "InitConfiguration.timeouts",
        "kinc waits longer for a starved API server; plain kubeadm keeps its defaults (they only matter when the API server is slow)",
    ),
    (
        "InitConfiguration.nodeRegistration.taints",
        "kinc's one node takes workloads; kubeadm keeps the control-plane taint",
    ),
    (
        "ClusterConfiguration.controllerManager.extraArgs[leader-elect]",
        "kinc's choice for one node; kubeadm's default elects a leader",
    ),
    (
        "ClusterConfiguration.scheduler.extraArgs[leader-elect]",
        "kinc's choice for one node; kubeadm's default elects a leader",
    ),
    (
        "ClusterConfiguration.etcd.local",
        "kinc's etcd waits longer before timing a request out, and collects garbage less often",
    ),
    (
        "ClusterConfiguration.apiServer.extraArgs[etcd-healthcheck-timeout]",
        "kinc's API server gives etcd 10 s in its liveness check, not 2 s",
    ),
    (
        "ClusterConfiguration.apiServer.extraArgs[endpoint-reconciler-type]",
        "kinc's API server writes the kubernetes Service's endpoint without a 15 s lease, which a starved API server let expire",
    ),
    (
        "ClusterConfiguration.apiServer.extraEnvs",
        "GOGC=400: fewer collections on a starved node",
    ),
    (
        "ClusterConfiguration.controllerManager.extraEnvs",
        "GOGC=400: fewer collections on a starved node",
    ),
    (
        "ClusterConfiguration.scheduler.extraEnvs",
        "GOGC=400: fewer collections on a starved node",
    ),
    (
        "InitConfiguration.patches",
        "kinc's control-plane liveness probes wait 4 minutes before a restart; kubeadm's 80 s killed a starved, working API server",
    ),
    (
        "InitConfiguration.skipPhases",
        "kinc starts the controller manager and scheduler after kubeadm init, so they do not take the CPU the API server needs to start",
    ),
    (
        "ClusterConfiguration.featureGates.WaitForAllControlPlaneComponents",
        "off in kinc: kubeadm init waits for the API server only, the controllers come after it",
    ),
    (
        "ClusterConfiguration.encryptionAlgorithm",
        "kinc's ECDSA P-256 keys make every TLS handshake cheaper; kubeadm's default is RSA-2048",
    ),
];

fn arg(name: &str, value: impl Into<String>) -> Arg {
    Arg {
        name: name.into(),
        value: value.into(),
    }
}

/// The kubeadm config for `cfg` on node `node_name` at `ip`, containerd as the CRI.
pub fn kubeadm_config(cfg: &ClusterConfig, node_name: &str, ip: Ipv4Addr) -> String {
    const API: &str = "kubeadm.k8s.io/v1beta4";
    let cri = Cri::Containerd.endpoint();
    let init = InitConfiguration {
        api_version: API.into(),
        kind: "InitConfiguration".into(),
        local_api_endpoint: ApiEndpoint {
            advertise_address: ip,
            bind_port: kinc_types::config::NODE_API_PORT,
        },
        node_registration: NodeRegistration {
            name: node_name.into(),
            cri_socket: cri.clone(),
            kubelet_extra_args: vec![arg("node-ip", ip.to_string())],
            ignore_preflight_errors: vec!["all".into()],
        },
    };
    let cluster = ClusterConfiguration {
        api_version: API.into(),
        kind: "ClusterConfiguration".into(),
        cluster_name: cfg.name.context(),
        kubernetes_version: cfg.kubernetes_version.clone(),
        control_plane_endpoint: format!("127.0.0.1:{}", kinc_types::config::NODE_API_PORT),
        networking: Networking {
            pod_subnet: cfg.pod_subnet.to_string(),
            service_subnet: cfg.service_subnet.to_string(),
            dns_domain: cfg.dns_domain.clone(),
        },
        api_server: ApiServer {
            cert_sans: vec!["localhost".into(), "127.0.0.1".into(), node_name.into()],
        },
        controller_manager: ControlPlaneComponent {
            extra_args: vec![arg(
                "node-cidr-mask-size-ipv4",
                cfg.pod_subnet.prefix().to_string(),
            )],
        },
    };
    let kubelet = KubeletConfiguration {
        api_version: "kubelet.config.k8s.io/v1beta1".into(),
        kind: "KubeletConfiguration".into(),
        cgroup_driver: "cgroupfs".into(),
        container_runtime_endpoint: cri,
        fail_swap_on: false,
        memory_swap: MemorySwap {
            swap_behavior: "NoSwap".into(),
        },
        eviction_hard: ["imagefs.available", "nodefs.available", "nodefs.inodesFree"]
            .into_iter()
            .map(|k| (k.to_string(), "0%".to_string()))
            .collect(),
        image_gc_high_threshold_percent: 100,
        local_storage_capacity_isolation: false,
    };
    let proxy = KubeProxyConfiguration {
        api_version: "kubeproxy.config.k8s.io/v1alpha1".into(),
        kind: "KubeProxyConfiguration".into(),
        mode: "nftables".into(),
        cluster_cidr: cfg.pod_subnet.to_string(),
        conntrack: Conntrack {
            max_per_core: 0,
            min: 0,
            tcp_established_timeout: "0s".into(),
            tcp_close_wait_timeout: "0s".into(),
        },
    };
    let docs = [
        serde_yaml::to_string(&init),
        serde_yaml::to_string(&cluster),
        serde_yaml::to_string(&kubelet),
        serde_yaml::to_string(&proxy),
    ];
    docs.into_iter()
        .map(|d| d.expect("kubeadm config always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

// --- the node archive.

/// A path in a tar as the layer means it: no leading `./` or `/`.
pub fn layer_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// The digest (hex) of the one layer of the OCI archive at `archive`.
fn layer_digest(archive: &Path) -> Result<String> {
    let mut ar =
        tar::Archive::new(File::open(archive).with_context(|| archive.display().to_string())?);
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut index = None;
    for e in ar.entries_with_seek()? {
        let mut e = e?;
        let p = layer_path(&e.path()?);
        let read = |e: &mut tar::Entry<'_, File>| -> Result<Vec<u8>> {
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            Ok(b)
        };
        if p == "index.json" {
            index = Some(read(&mut e)?);
        } else if let Some(hex) = p.strip_prefix("blobs/sha256/") {
            if e.header().size()? <= 1 << 20 {
                small.insert(hex.to_string(), read(&mut e)?);
            }
        }
    }
    let index = ImageIndex::from_reader(&index.context("no index.json in the node archive")?[..])?;
    let [desc] = index.manifests().as_slice() else {
        bail!(
            "the node archive's index lists {} manifests, expected 1",
            index.manifests().len()
        );
    };
    let mhex = desc
        .as_digest_sha256()
        .context("the manifest digest is not sha256")?;
    let manifest =
        ImageManifest::from_reader(&small.get(mhex).context("the manifest blob is missing")?[..])?;
    let [layer] = manifest.layers().as_slice() else {
        bail!(
            "the node image has {} layers, expected 1",
            manifest.layers().len()
        );
    };
    ensure!(
        *layer.media_type() == MediaType::ImageLayer,
        "the node's layer is {}, expected an uncompressed tar",
        layer.media_type()
    );
    Ok(layer
        .as_digest_sha256()
        .context("the layer digest is not sha256")?
        .to_string())
}

/// Installs [`INSTALL`] from the node archive's layer, unpacks [`NODE_SHARE`] below
/// `stage`, and returns the node's containerd config.
fn extract(archive: &Path, stage: &Path) -> Result<String> {
    let hex = layer_digest(archive)?;
    let wanted: HashMap<&str, &str> = INSTALL.iter().copied().collect();
    let mut found: Vec<&str> = Vec::new();
    let mut containerd = None;
    let mut ar = tar::Archive::new(File::open(archive)?);
    for e in ar.entries_with_seek()? {
        let e = e?;
        if layer_path(&e.path()?) != format!("blobs/sha256/{hex}") {
            continue;
        }
        let mut layer = tar::Archive::new(e);
        for inner in layer.entries()? {
            let mut inner = inner?;
            let p = layer_path(&inner.path()?);
            let kind = inner.header().entry_type();
            let dest: PathBuf = if let Some(to) = wanted.get(p.as_str()) {
                found.push(INSTALL.iter().find(|(f, _)| *f == p).expect("wanted").0);
                PathBuf::from(to)
            } else if p.starts_with(NODE_SHARE) && !kind.is_dir() {
                stage.join(&p)
            } else if p == CONTAINERD_CONFIG {
                let mut s = String::new();
                inner.read_to_string(&mut s)?;
                containerd = Some(s);
                continue;
            } else {
                continue;
            };
            ensure!(
                kind.is_file() || kind.is_symlink(),
                "{p} in the node's layer is a {kind:?}, not a file or a link"
            );
            if let Some(d) = dest.parent() {
                fs::create_dir_all(d)?;
            }
            let _ = fs::remove_file(&dest);
            inner
                .unpack(&dest)
                .with_context(|| format!("unpacking {p} to {}", dest.display()))?;
        }
        break;
    }
    let missing: Vec<&str> = INSTALL
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| !found.contains(f))
        .collect();
    ensure!(missing.is_empty(), "not in the node's layer: {missing:?}");
    containerd.with_context(|| format!("no {CONTAINERD_CONFIG} in the node's layer"))
}

fn write(path: &str, content: &str, mode: u32) -> Result<()> {
    let p = Path::new(path);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    kinc_types::fsutil::write_atomic(p, content.as_bytes(), Some(mode))
        .with_context(|| format!("writing {path}"))
}

/// `ctr` in containerd's CRI namespace, as kinc-init runs it.
fn ctr(args: &[&str]) -> Result<String> {
    let mut v = vec!["ctr", "--namespace", kn::CONTAINERD_K8S_NAMESPACE];
    v.extend_from_slice(args);
    ok(&v)
}

/// The node address on a dummy link, and a default route if the VM has none (kubelet,
/// kube-proxy and CoreDNS expect one on any real host).
fn node_address() -> Result<()> {
    if quiet(&["ip", "link", "show", "dev", DUMMY_LINK]).is_none() {
        ok(&["ip", "link", "add", DUMMY_LINK, "type", "dummy"])?;
    }
    ok(&[
        "ip",
        "address",
        "replace",
        &format!("{NODE_IP}/32"),
        "dev",
        DUMMY_LINK,
    ])?;
    ok(&["ip", "link", "set", "dev", DUMMY_LINK, "up"])?;
    if quiet(&["ip", "route", "show", "default"]).is_none_or(|r| r.is_empty()) {
        ok(&["ip", "route", "add", "default", "dev", DUMMY_LINK])?;
    }
    Ok(())
}

/// Fails when a binary needs a library the VM lacks (a static one is fine).
fn check_libraries(bins: &[&str]) -> Result<()> {
    for b in bins {
        if let Some(out) = quiet(&["ldd", b]) {
            ensure!(
                !out.contains("not found"),
                "{b} lacks libraries on the VM:\n{out}"
            );
        }
    }
    Ok(())
}

/// Everything before the clock: files, units, config, containerd up, images imported.
fn set_up(r: &mut SideResult) -> Result<()> {
    let archive = PathBuf::from(format!("{CTL_MOUNT}/{}", super::e2e_real::ARCHIVE));
    let stage = Path::new(BENCH_ROOT).join("node");
    let t = Instant::now();
    let node_containerd = extract(&archive, &stage)?;
    println!(
        "  extracted the node's files: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    check_libraries(&[
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        BENCH_CRUN,
    ])?;
    let node_cfg: ContainerdConfig =
        toml::from_str(&node_containerd).context("the node's containerd config")?;
    write(
        "/etc/containerd/config.toml",
        &toml::to_string(&plain_containerd(node_cfg, BENCH_CRUN))?,
        0o644,
    )?;
    let info = NodeImageInfo::load(&stage.join(kn::NODE_IMAGE_INFO.trim_start_matches('/')))?;
    ensure!(
        info.cri == Cri::Containerd,
        "the node image's CRI is {}",
        info.cri
    );
    let images_dir = stage.join(
        info.images_dir
            .as_deref()
            .context("node-image.json names no imagesDir")?
            .trim_start_matches('/'),
    );
    let list = ImageList::load(&images_dir.join(kn::IMAGE_LIST_FILE))?;
    write(
        kn::KINCNET_CONFLIST,
        &kinc_init::cni::Conflist::for_pod_subnet(POD_SUBNET.parse()?).to_json(),
        0o644,
    )?;
    let cfg = ClusterConfig::new(
        ClusterName::new(super::bench_ready::CLUSTER).map_err(|e| anyhow::anyhow!("{e}"))?,
        API_PORT,
        POD_SUBNET.parse()?,
        SERVICE_SUBNET.parse()?,
    );
    write(
        KUBEADM_CONFIG,
        &kubeadm_config(&cfg, HOSTNAME, NODE_IP),
        0o600,
    )?;
    node_address()?;
    ok(&["systemctl", "daemon-reload"])?;
    // As a kubelet package leaves it: enabled, started by kubeadm.
    ok(&["systemctl", "enable", "kubelet.service"])?;
    ok(&["systemctl", "start", "containerd.service"])?;
    super::e2e_checks::poll("containerd answering", Duration::from_secs(120), || {
        quiet(&["ctr", "version"])
    })?;
    let t = Instant::now();
    // An archive may hold several images (the Kubernetes ones share it): import it once.
    let mut imported = std::collections::BTreeSet::new();
    for img in &list.0 {
        if imported.insert(img.file.as_str()) {
            let file = images_dir.join(&img.file).display().to_string();
            ctr(&[
                "images",
                "import",
                "--local",
                "--snapshotter",
                kn::CONTAINERD_SNAPSHOTTER,
                &file,
            ])?;
        }
        ctr(&[
            "images",
            "label",
            &img.name,
            "io.cri-containerd.pinned=pinned",
        ])?;
    }
    r.image_import_seconds = Some(t.elapsed().as_secs_f64());
    // Nothing can be pulled here: every image kubeadm will ask for must be there.
    let want = ok(&[
        "kubeadm",
        "config",
        "images",
        "list",
        "--config",
        KUBEADM_CONFIG,
    ])?;
    let have = ctr(&["images", "list", "--quiet"])?;
    let missing: Vec<&str> = want
        .lines()
        .map(str::trim)
        .filter(|w| !w.is_empty() && !have.lines().any(|h| h.trim() == *w))
        .collect();
    ensure!(
        missing.is_empty(),
        "kubeadm would pull {missing:?}: not imported"
    );
    Ok(())
}

/// What the node says when plain kubeadm failed.
fn diagnose() {
    println!("--- diagnostics for plain kubeadm ---");
    for (unit, n) in [("kubelet", "80"), ("containerd", "40")] {
        let _ = sh(&["journalctl", "--no-pager", "-o", "cat", "-n", n, "-u", unit]);
    }
    let _ = sh(&["ctr", "--namespace", "k8s.io", "tasks", "list"]);
    let kc = |args: &[&str]| {
        let mut v = vec!["kubectl", "--kubeconfig", ADMIN_CONF];
        v.extend_from_slice(args);
        let _ = sh(&v);
    };
    kc(&["get", "nodes", "-o", "wide"]);
    kc(&["get", "pods", "--all-namespaces", "-o", "wide"]);
    kc(&[
        "--namespace",
        "kube-system",
        "describe",
        "pods",
        "-l",
        "k8s-app=kube-dns",
    ]);
}

fn measure(r: &mut SideResult) -> Result<()> {
    let t = Instant::now();
    set_up(r)?;
    super::bench_guest::settle();
    r.setup_seconds = Some(t.elapsed().as_secs_f64());
    r.notes.push(format!(
        "the kubeadm config is kinc-init's without {}",
        KINC_ONLY
            .iter()
            .map(|(k, why)| format!("{k} ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    r.command = ["kubeadm", "init", "--config", KUBEADM_CONFIG]
        .map(String::from)
        .to_vec();
    r.guest = Some(MachineInfo::here());
    let t0 = Instant::now();
    r.started_unix = now_unix();
    let timed = run_timed(&r.command, t0, API_PORT, Duration::from_secs(1500))?;
    record(r, &timed);
    r.spans = kubeadm_spans(&timed.stdout, timed.seconds);
    r.kubeadm_init = Some(Span {
        name: "kubeadm init".into(),
        start: 0.0,
        end: timed.seconds,
    });
    ensure!(
        timed.exit_code == 0,
        "exited {}: {}",
        timed.exit_code,
        tail(&timed.stderr, 5)
    );
    let kubectl = ["kubectl", "--kubeconfig", ADMIN_CONF].map(String::from);
    let ready = wait_ready(&kubectl, t0, r.started_unix, Duration::from_secs(900))?;
    record_ready(r, &ready);
    Ok(())
}

/// Plain kubeadm's side, as root on the VM.
pub fn kubeadm_side(out: &Path) -> Result<()> {
    let mut r = SideResult::new(Side::Kubeadm);
    let res = measure(&mut r);
    if let Err(e) = &res {
        r.error = Some(format!("{e:#}"));
        diagnose();
    }
    r.save(out)?;
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostvm::build::workspace_root;

    #[test]
    fn containerd_config_is_the_nodes_with_crun_itself() {
        let path = workspace_root().join("image/offline/files/etc/containerd/config.toml");
        let text = fs::read_to_string(&path).unwrap();
        let node: ContainerdConfig = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("the node's containerd config changed shape: {e}"));
        let plain = toml::to_string(&plain_containerd(node, BENCH_CRUN)).unwrap();
        let mut want: toml::Value = toml::from_str(&text).unwrap();
        let opts = &mut want["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
            ["crun"]["options"];
        assert_eq!(opts["BinaryName"].as_str(), Some(kn::CRUN_WRAPPER_BIN));
        opts["BinaryName"] = toml::Value::String(BENCH_CRUN.into());
        let got: toml::Value = toml::from_str(&plain).unwrap();
        assert_eq!(got, want, "{plain}");
    }

    /// `(document kind.path, value)` for every scalar of a multi-document YAML; list items
    /// that are `name`/`value` pairs (component flags) are keyed by their name.
    fn leaves(text: &str) -> BTreeMap<String, String> {
        fn walk(v: &serde_yaml::Value, path: String, out: &mut BTreeMap<String, String>) {
            match v {
                serde_yaml::Value::Mapping(m) => {
                    for (k, v) in m {
                        let k = k.as_str().unwrap_or("?");
                        walk(v, format!("{path}.{k}"), out);
                    }
                }
                serde_yaml::Value::Sequence(items) if items.is_empty() => {
                    out.insert(path, "[]".into());
                }
                serde_yaml::Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match (item.get("name").and_then(|n| n.as_str()), item.get("value")) {
                            (Some(n), Some(v)) => walk(v, format!("{path}[{n}]"), out),
                            _ => walk(item, format!("{path}[{i}]"), out),
                        }
                    }
                }
                other => {
                    out.insert(path, serde_yaml::to_string(other).unwrap().trim().into());
                }
            }
        }
        let mut out = BTreeMap::new();
        for d in serde_yaml::Deserializer::from_str(text) {
            let v = serde_yaml::Value::deserialize(d).unwrap();
            let kind = v["kind"].as_str().unwrap_or("?").to_string();
            walk(&v, kind, &mut out);
        }
        out
    }

    #[test]
    fn kubeadm_config_is_kinc_inits_but_plain() {
        // The golden file kinc-init's own tests render for containerd.
        let golden = leaves(
            &fs::read_to_string(
                workspace_root().join("crates/kinc-init/tests/golden/containerd.yaml"),
            )
            .unwrap(),
        );
        let cfg = ClusterConfig::new(
            ClusterName::new("default").unwrap(),
            6443,
            "10.244.43.0/24".parse().unwrap(),
            "10.43.0.0/16".parse().unwrap(),
        );
        let text = kubeadm_config(
            &cfg,
            "kinc-default-control-plane",
            Ipv4Addr::new(10, 88, 0, 2),
        );
        let ours = leaves(&text);
        // Everything plain kubeadm sets, kinc sets the same.
        for (path, v) in &ours {
            assert_eq!(
                golden.get(path),
                Some(v),
                "{path} differs from kinc-init's\n{text}"
            );
        }
        // Everything else kinc sets is a deliberate difference; a new one needs a decision:
        // the same for plain kubeadm (set it in kubeadm_config) or kinc's own (KINC_ONLY).
        for path in golden.keys().filter(|p| !ours.contains_key(*p)) {
            assert!(
                KINC_ONLY.iter().any(|(k, _)| path.starts_with(k)),
                "kinc-init's kubeadm config sets {path}, which plain kubeadm neither sets nor \
                 lists in KINC_ONLY (bench_kubeadm.rs): decide which"
            );
        }
        assert!(ours.len() > 30, "{ours:?}");
    }

    #[test]
    fn install_list_matches_the_image_recipe() {
        // kincnet where containerd's bin_dir is, and loopback beside it.
        let cni = kn::CNI_BIN_DIR.trim_start_matches('/');
        assert!(INSTALL
            .iter()
            .any(|(from, _)| *from == format!("{cni}/kincnet")));
        assert!(INSTALL
            .iter()
            .any(|(from, _)| *from == format!("{cni}/loopback")));
        assert!(crate::image::offline::NODE_PACKAGES.contains(&"containerd"));
        assert_eq!(
            layer_path(Path::new("./usr/bin/ctr")),
            "usr/bin/ctr".to_string()
        );
        assert_eq!(layer_path(Path::new("/etc/x")), "etc/x");
        // No two files land on one path, and the VM's own crun is left alone.
        let mut to: Vec<&str> = INSTALL.iter().map(|(_, t)| *t).collect();
        to.sort();
        to.dedup();
        assert_eq!(to.len(), INSTALL.len());
        assert!(!to.contains(&kn::REAL_CRUN));
    }
}
