//! Paths and values inside the node container that more than one crate relies on:
//! the image puts things here, the bootstrap and the host CLI find them here.

/// The admin kubeconfig that `kinc-init` copies onto the `/var` volume (mode 0600), so the
/// host CLI can read it from the volume without exec'ing into the node.
pub const ADMIN_KUBECONFIG: &str = "/var/lib/kinc/admin.conf";

/// kubelet's `cgroupRoot` (cgroupfs driver); `cgroup-setup` delegates controllers down to it.
pub const KUBELET_CGROUP_ROOT: &str = "/kubelet";

/// Where the CNI plugin binaries live (CRI-O's default plugin dir).
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Where `kinc-init` writes kincnet's conflist.
pub const KINCNET_CONFLIST: &str = "/etc/cni/net.d/10-kincnet.conflist";
/// Name of the CNI network, and of the bridge kincnet creates in the node.
pub const KINCNET_NETWORK: &str = "kinc";
pub const KINCNET_BRIDGE: &str = "kinc0";
/// kincnet's nf_tables table (family ip): kincnet's NAT and hostPort chains and
/// kincnet-policy's policy chains and sets live in it.
pub const KINCNET_TABLE: &str = "kincnet";
/// The kubeconfig (ServiceAccount token, mode 0600) `kinc-init` writes for kincnet-policy,
/// and whose appearance starts `kincnet-policy.service`.
pub const POLICY_KUBECONFIG: &str = "/etc/kinc/kincnet-policy.kubeconfig";

/// crun-wrapper's config file and the real crun it runs.
pub const CRUN_WRAPPER_BIN: &str = "/usr/local/bin/crun-wrapper";
pub const CRUN_WRAPPER_CONFIG: &str = "/etc/kinc/crun-wrapper.toml";
pub const REAL_CRUN: &str = "/usr/bin/crun";

/// CRI-O's `default_capabilities` (the node image keeps CRI-O's default): what a pod's
/// container holds unless its securityContext says otherwise, so what every pod spec
/// crun-wrapper sees carries. The CRI-O-shaped specs in the tests are built from it.
pub const CRIO_DEFAULT_CAPABILITIES: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

/// Where the host's container storage is mounted read-only, for CRI-O's
/// `additionalimagestores` (clusters reuse what the host already pulled).
pub const HOST_IMAGE_STORE: &str = "/usr/lib/kinc/host-storage";

/// The node image the CLI runs by default, and what `cargo xtask image` tags.
pub const DEFAULT_NODE_IMAGE: &str = "localhost/kinc/node:v1.33.5";
