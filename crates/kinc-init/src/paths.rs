//! Every file kinc-init reads or writes, rooted at a directory so tests can run the
//! whole bootstrap inside a temp dir. Production uses `/`.

use std::path::{Path, PathBuf};

use kinc_types::{config, node, status};

/// Where the rendered kubeadm config goes: on the `/var` volume, so it can be read
/// from the host for debugging; it is rendered again on every boot.
pub const KUBEADM_CONFIG: &str = "/var/lib/kinc/kubeadm.yaml";
/// kubeadm's patches for the static pods (`InitConfiguration.patches.directory`).
pub const KUBEADM_PATCHES: &str = "/var/lib/kinc/kubeadm-patches";
/// What kinc-init remembers across boots (initialised or not, the IP the control plane
/// was configured for).
pub const NODE_STATE: &str = "/var/lib/kinc/node.json";
/// A copy of `/etc/kubernetes` on the `/var` volume: a node container recreated with the
/// same `/var` gets its certificates and kubeconfigs back from here.
pub const ETC_KUBERNETES_BACKUP: &str = "/var/lib/kinc/etc-kubernetes";
pub const ETC_KUBERNETES: &str = "/etc/kubernetes";
/// Manifests kinc-init applies after `kubeadm init` (the image copies `manifests/` to
/// `/usr/share/kinc/manifests`; only the `cluster` directory is applied).
pub const CLUSTER_MANIFESTS: &str = "/usr/share/kinc/manifests/cluster";

#[derive(Debug, Clone)]
pub struct NodePaths {
    root: PathBuf,
}

impl NodePaths {
    /// The real node: paths as they are.
    pub fn system() -> Self {
        Self::under("/")
    }

    /// Every path prefixed with `root` (tests).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `abs` (an absolute node path) below the root.
    pub fn at(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn mounted_config(&self) -> PathBuf {
        self.at(config::MOUNTED_CONFIG_DIR)
            .join(config::CONFIG_FILE)
    }
    pub fn baked_config(&self) -> PathBuf {
        self.at(config::BAKED_CONFIG_DIR).join(config::CONFIG_FILE)
    }
    pub fn status(&self) -> PathBuf {
        self.at(status::STATUS_PATH)
    }
    pub fn node_state(&self) -> PathBuf {
        self.at(NODE_STATE)
    }
    pub fn kubeadm_config(&self) -> PathBuf {
        self.at(KUBEADM_CONFIG)
    }
    pub fn kubeadm_patches(&self) -> PathBuf {
        self.at(KUBEADM_PATCHES)
    }
    pub fn conflist(&self) -> PathBuf {
        self.at(node::KINCNET_CONFLIST)
    }
    pub fn etc_kubernetes(&self) -> PathBuf {
        self.at(ETC_KUBERNETES)
    }
    pub fn etc_kubernetes_backup(&self) -> PathBuf {
        self.at(ETC_KUBERNETES_BACKUP)
    }
    /// kubeadm's admin kubeconfig, the one every kubectl call uses.
    pub fn admin_conf(&self) -> PathBuf {
        self.etc_kubernetes().join("admin.conf")
    }
    /// The copy the host CLI reads from the `/var` volume.
    pub fn exported_admin_conf(&self) -> PathBuf {
        self.at(node::ADMIN_KUBECONFIG)
    }
    /// The kincnet-policy controller's kubeconfig (its ServiceAccount token).
    pub fn policy_kubeconfig(&self) -> PathBuf {
        self.at(crate::policy::POLICY_KUBECONFIG)
    }
    /// Which CRI the image carries and where its preloaded images are.
    pub fn node_image_info(&self) -> PathBuf {
        self.at(node::NODE_IMAGE_INFO)
    }
    /// The CRI's socket.
    pub fn cri_socket(&self, cri: node::Cri) -> PathBuf {
        self.at(cri.socket_path())
    }
    pub fn cluster_manifests(&self) -> PathBuf {
        self.at(CLUSTER_MANIFESTS)
    }
    /// The API server's serving certificate: it names the node IP, so it is
    /// regenerated when the IP changes.
    pub fn apiserver_cert(&self) -> [PathBuf; 2] {
        let pki = self.etc_kubernetes().join("pki");
        [pki.join("apiserver.crt"), pki.join("apiserver.key")]
    }
    /// Files a half-finished `kubeadm init` leaves behind.
    pub fn init_leftovers(&self) -> Vec<PathBuf> {
        vec![
            self.etc_kubernetes().join("manifests/kube-apiserver.yaml"),
            self.etc_kubernetes().join("pki/ca.crt"),
            self.admin_conf(),
            self.at("/var/lib/etcd/member"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_paths() {
        let p = NodePaths::under("/tmp/x");
        assert_eq!(
            p.mounted_config(),
            Path::new("/tmp/x/etc/kinc/config/cluster.json")
        );
        assert_eq!(p.status(), Path::new("/tmp/x/var/lib/kinc/status.json"));
        assert_eq!(
            NodePaths::system().conflist(),
            Path::new(node::KINCNET_CONFLIST)
        );
        assert_eq!(
            p.node_image_info(),
            Path::new("/tmp/x/usr/share/kinc/node-image.json")
        );
        assert_eq!(
            p.cri_socket(node::Cri::Containerd),
            Path::new("/tmp/x/run/containerd/containerd.sock")
        );
        assert_eq!(
            p.cri_socket(node::Cri::Crio),
            Path::new("/tmp/x/var/run/crio/crio.sock")
        );
    }
}
