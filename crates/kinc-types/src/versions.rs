//! Every version the node image carries, in one place: `cargo xtask image` builds the
//! offline image from these (and checks the Go modules under `image/go/` pin the same),
//! passes them to the Fedora Containerfile as build arguments, and the CLI's default node
//! image and cluster config follow them.
//!
//! Kubernetes is the 1.33 line: the Go module proxy serves `k8s.io/kubernetes` v1.33.13
//! with the matching `v0.33.13` staging modules. etcd, CoreDNS and pause are the versions
//! kubeadm v1.33.13 names by default (`kubeadm config images list`), so the preloaded
//! images carry exactly the names kubeadm asks for.

/// Kubernetes (`k8s.io/kubernetes`), and its staging modules at `v0.<minor>.<patch>`.
pub const KUBERNETES: &str = "v1.33.13";
pub const KUBERNETES_STAGING: &str = "v0.33.13";
/// etcd (`go.etcd.io/etcd/server/v3`) and the image tag kubeadm gives it.
pub const ETCD: &str = "v3.5.24";
pub const ETCD_IMAGE_TAG: &str = "3.5.24-0";
/// CoreDNS (`github.com/coredns/coredns`), tagged as kubeadm names it.
pub const COREDNS: &str = "v1.12.0";
/// The pause image's tag (our own `kinc-pause` binary).
pub const PAUSE: &str = "3.10";
/// local-path-provisioner (`github.com/rancher/local-path-provisioner`): v0.0.30 is the
/// newest release the module proxy serves.
pub const LOCAL_PATH_PROVISIONER: &str = "v0.0.30";
/// busybox (Debian's busybox-static in the offline image): the local-path helper pod and
/// the test workloads run `docker.io/library/busybox:<this>`.
pub const BUSYBOX: &str = "1.37";
/// Debian release of the offline image's base (debootstrap).
pub const DEBIAN_SUITE: &str = "trixie";
/// The Fedora path (`cargo xtask image` without `--offline`): Fedora release and CRI-O's
/// package stream.
pub const FEDORA: &str = "42";
pub const CRIO_STREAM: &str = "v1.33";

/// `registry.k8s.io` names of the images kubeadm runs, as `kubeadm config images list
/// --kubernetes-version KUBERNETES` prints them.
pub fn kubeadm_images() -> Vec<String> {
    let mut v: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|c| format!("registry.k8s.io/{c}:{KUBERNETES}"))
    .collect();
    v.push(format!("registry.k8s.io/coredns/coredns:{COREDNS}"));
    v.push(format!("registry.k8s.io/pause:{PAUSE}"));
    v.push(format!("registry.k8s.io/etcd:{ETCD_IMAGE_TAG}"));
    v
}

/// The minor of a `vMAJOR.MINOR.PATCH` version ("33" for "v1.33.13").
pub fn minor(version: &str) -> Option<&str> {
    version.trim_start_matches('v').split('.').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_modules_follow_kubernetes() {
        let k = KUBERNETES.trim_start_matches("v1.");
        assert_eq!(KUBERNETES_STAGING, format!("v0.{k}"));
        assert_eq!(minor(KUBERNETES), Some("33"));
        assert_eq!(CRIO_STREAM, format!("v1.{}", minor(KUBERNETES).unwrap()));
        assert!(ETCD_IMAGE_TAG.starts_with(ETCD.trim_start_matches('v')));
    }

    #[test]
    fn default_node_image_is_tagged_with_kubernetes() {
        assert_eq!(
            crate::node::DEFAULT_NODE_IMAGE,
            format!("localhost/kinc/node:{KUBERNETES}")
        );
        assert_eq!(crate::config::DEFAULT_KUBERNETES_VERSION, KUBERNETES);
    }

    #[test]
    fn kubeadm_image_names() {
        let imgs = kubeadm_images();
        assert!(imgs.contains(&"registry.k8s.io/kube-apiserver:v1.33.13".to_string()));
        assert!(imgs.contains(&"registry.k8s.io/etcd:3.5.24-0".to_string()));
        assert!(imgs.contains(&"registry.k8s.io/pause:3.10".to_string()));
        assert!(imgs.contains(&"registry.k8s.io/coredns/coredns:v1.12.0".to_string()));
        assert_eq!(imgs.len(), 7);
    }
}
