//! Golden kubeadm configs for a few clusters. After an intended change, regenerate with
//! `KINC_BLESS=1 cargo test -p kinc-init --test golden` and review the diff.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::cluster;
use kinc_init::bootstrap::render_kubeadm;
use kinc_init::kubeadm::KubeadmConfig;
use kinc_types::node::Cri;
use kinc_types::ClusterConfig;

fn golden(name: &str, cfg: &ClusterConfig, ip: Ipv4Addr) {
    golden_with(name, cfg, ip, Cri::Crio)
}

fn golden_with(name: &str, cfg: &ClusterConfig, ip: Ipv4Addr, cri: Cri) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.yaml"));
    let got = render_kubeadm(cfg, ip, cri);
    if std::env::var_os("KINC_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KINC_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "{name}: rendering differs from {}",
        path.display()
    );
    // The file parses back into the same typed documents (every field known).
    assert_eq!(
        KubeadmConfig::from_yaml(&got).unwrap(),
        KubeadmConfig::new(cfg, ip, cri)
    );
}

#[test]
fn default_cluster() {
    golden(
        "default",
        &cluster("default", 6443),
        Ipv4Addr::new(10, 88, 0, 2),
    );
}

#[test]
fn second_cluster_on_the_next_port() {
    golden("dev", &cluster("dev", 6444), Ipv4Addr::new(10, 0, 2, 100));
}

#[test]
fn extra_sans_and_dns_domain() {
    let mut cfg = cluster("edge-1", 6450);
    cfg.extra_sans = vec![
        "kinc.example.test".into(),
        "127.0.0.1".into(),
        "192.0.2.10".into(),
    ];
    cfg.dns_domain = "edge.local".into();
    cfg.pod_subnet = "10.250.0.0/16".parse().unwrap();
    cfg.service_subnet = "10.251.0.0/20".parse().unwrap();
    golden("edge-1", &cfg, Ipv4Addr::new(172, 16, 5, 9));
}

/// The offline image's runtime: only the two socket fields differ from `default.yaml`.
#[test]
fn containerd_node() {
    golden_with(
        "containerd",
        &cluster("default", 6443),
        Ipv4Addr::new(10, 88, 0, 2),
        Cri::Containerd,
    );
    let ip = Ipv4Addr::new(10, 88, 0, 2);
    let crio = render_kubeadm(&cluster("default", 6443), ip, Cri::Crio);
    let containerd = render_kubeadm(&cluster("default", 6443), ip, Cri::Containerd);
    let differ: Vec<(&str, &str)> = crio
        .lines()
        .zip(containerd.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        differ,
        [
            (
                "  criSocket: unix:///var/run/crio/crio.sock",
                "  criSocket: unix:///run/containerd/containerd.sock"
            ),
            (
                "containerRuntimeEndpoint: unix:///var/run/crio/crio.sock",
                "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock"
            ),
        ]
    );
}

#[test]
fn documents_have_kubeadms_kinds_and_the_rootless_settings() {
    let yaml = render_kubeadm(
        &cluster("dev", 6444),
        Ipv4Addr::new(10, 88, 0, 2),
        Cri::Crio,
    );
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration"
        ]
    );
    let kubelet = &docs[2];
    assert_eq!(kubelet["featureGates"]["KubeletInUserNamespace"], true);
    assert_eq!(kubelet["cgroupDriver"], "cgroupfs");
    assert_eq!(kubelet["cgroupRoot"], kinc_types::node::KUBELET_CGROUP_ROOT);
    assert_eq!(kubelet["failSwapOn"], false);
    let proxy = &docs[3];
    assert_eq!(proxy["mode"], "nftables");
    assert_eq!(proxy["conntrack"]["maxPerCore"], 0);
    assert_eq!(proxy["conntrack"]["tcpEstablishedTimeout"], "0s");
    assert_eq!(docs[1]["networking"]["serviceSubnet"], "10.44.0.0/16");
    assert_eq!(docs[1]["clusterName"], "kinc-dev");
    assert_eq!(
        docs[0]["nodeRegistration"]["name"],
        "kinc-dev-control-plane"
    );
    // kubeadm's field names keep their acronyms upper-case; plain camelCase would be ignored.
    assert_eq!(docs[0]["localAPIEndpoint"]["advertiseAddress"], "10.88.0.2");
    assert_eq!(kubelet["imageGCHighThresholdPercent"], 100);
    assert_eq!(proxy["clusterCIDR"], "10.244.44.0/24");
    assert!(docs[1]["apiServer"]["certSANs"].is_sequence());
}
