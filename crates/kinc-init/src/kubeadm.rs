//! kubeadm's configuration as typed structs: `InitConfiguration` and
//! `ClusterConfiguration` (kubeadm.k8s.io/v1beta4), `KubeletConfiguration`
//! (kubelet.config.k8s.io/v1beta1) and `KubeProxyConfiguration`
//! (kubeproxy.config.k8s.io/v1alpha1). Only the fields kinc sets are modelled;
//! kubeadm defaults the rest. k8s-openapi has no types for these component configs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kinc_types::config::NODE_API_PORT;
use kinc_types::node::{self, Cri};
use kinc_types::ClusterConfig;
use serde::{Deserialize, Serialize};

pub const KUBEADM_API: &str = "kubeadm.k8s.io/v1beta4";
pub const KUBELET_API: &str = "kubelet.config.k8s.io/v1beta1";
pub const KUBE_PROXY_API: &str = "kubeproxy.config.k8s.io/v1alpha1";

/// v1beta4 writes component flags as a list of name/value pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    pub name: String,
    pub value: String,
}

/// One control-plane node has nobody to elect. With election on, a lease renewal that
/// misses its deadline on a starved laptop (or under TCG) restarts the controller manager
/// or scheduler, and after a node restart each waits out the old lease (15 s) first.
fn no_leader_election() -> Arg {
    arg("leader-elect", "false")
}

fn arg(name: &str, value: impl Into<String>) -> Arg {
    Arg {
        name: name.to_string(),
        value: value.into(),
    }
}

/// An environment variable of a control-plane container (v1beta4 `extraEnvs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// The Go garbage collector's target for the control plane and etcd: a collection when
/// the heap has grown 4x past what survived the last one, not Go's default 2x. Starting
/// an API server allocates heavily; on 2 emulated CPUs the collections were a large part
/// of the CPU that etcd and the API server fought over while kubeadm waited. The price is
/// memory (a few hundred MB more for the API server), which a node has more of than CPU.
fn fewer_collections() -> Vec<EnvVar> {
    vec![EnvVar {
        name: "GOGC".into(),
        value: "400".into(),
    }]
}

/// etcd's own patience. Its request timeout is 5 s plus two election timeouts (7 s by
/// default); a proposal slower than that fails with "etcdserver: request timed out", and an
/// API server post-start hook that gets that error exits the API server (seen on a starved
/// node: the API server died twice before kubeadm could create the admin binding). One
/// member never holds an election, so a longer election timeout costs nothing: 15 s.
/// How the API server keeps the `kubernetes` Service's endpoint: `master-count` (with
/// `--apiserver-count` at its default, 1) writes its own address on every pass, with no
/// lease that can expire.
pub const API_ENDPOINT_RECONCILER: &str = "master-count";

fn patient_etcd() -> Vec<Arg> {
    vec![
        arg("heartbeat-interval", "500"),
        arg("election-timeout", "5000"),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    pub node_registration: NodeRegistration,
    /// The controller manager's and scheduler's manifests: kinc-init writes them once
    /// `kubeadm init` is through ([`CONTROLLER_PHASES`]).
    pub skip_phases: Vec<String>,
    pub timeouts: InitTimeouts,
    pub patches: Patches,
}

/// Where kubeadm finds patches for what it generates ([`probe_patches`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patches {
    pub directory: String,
}

/// The control-plane static pods kubeadm writes, each named as its container.
pub const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Seconds a liveness probe may take, and failures in a row before kubelet restarts the
/// container: kubeadm's 15 s and 8 (80 s of failing) killed a starved but working API
/// server (exit 137 while it served, slowly, on 2 emulated CPUs), and its restart cost
/// the node minutes of CPU. Now a component must fail for 4 minutes.
pub const LIVENESS_TIMEOUT_SECONDS: i32 = 30;
pub const LIVENESS_FAILURES: i32 = 24;

/// One strategic-merge patch per control-plane static pod, as kubeadm reads them from
/// [`Patches::directory`]: (file name, JSON). Only the liveness probe's patience changes;
/// its handler and period stay kubeadm's.
pub fn probe_patches() -> Vec<(String, String)> {
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
    STATIC_PODS
        .iter()
        .map(|name| {
            let pod = Pod {
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: name.to_string(),
                        liveness_probe: Some(Probe {
                            timeout_seconds: Some(LIVENESS_TIMEOUT_SECONDS),
                            failure_threshold: Some(LIVENESS_FAILURES),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let json = serde_json::to_string_pretty(&pod).expect("a Pod always serializes");
            (format!("{name}+strategic.json"), json)
        })
        .collect()
}

/// kubeadm's own waits (v1beta4 `timeouts`), as Go durations. Its defaults (1 min for an
/// API call, 4 min for the control plane) are for a host with CPU to spare: on a starved
/// one (a laptop under load, 2 emulated CPUs) the API server was seen to answer more than
/// a minute after its container started, and kubeadm init gave up with "could not
/// bootstrap the admin user ... connection refused". Longer waits cost nothing when the
/// API answers sooner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitTimeouts {
    pub control_plane_component_health_check: String,
    pub kubelet_health_check: String,
    #[serde(rename = "kubernetesAPICall")]
    pub kubernetes_api_call: String,
}

impl Default for InitTimeouts {
    fn default() -> Self {
        Self {
            control_plane_component_health_check: "10m0s".into(),
            kubelet_health_check: "10m0s".into(),
            kubernetes_api_call: "5m0s".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    pub advertise_address: Ipv4Addr,
    pub bind_port: u16,
}

/// A node taint as kubeadm's `nodeRegistration.taints` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    pub effect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    pub name: String,
    pub cri_socket: String,
    pub kubelet_extra_args: Vec<Arg>,
    /// Preflight checks that cannot pass in a rootless node (swap, kernel modules,
    /// sysctls owned by the host); reported in the journal, not fatal.
    pub ignore_preflight_errors: Vec<String>,
    /// Empty, not absent: kubeadm then registers the node without the control-plane
    /// taint, so the one node runs workloads without a `kubectl taint` after init.
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cluster_name: String,
    pub kubernetes_version: String,
    /// Loopback, not the container IP: every client inside the node keeps working when
    /// the container comes back with another address.
    pub control_plane_endpoint: String,
    pub networking: Networking,
    pub api_server: ApiServer,
    pub controller_manager: ControlPlaneComponent,
    pub scheduler: ControlPlaneComponent,
    pub etcd: Etcd,
    /// `WaitForAllControlPlaneComponents` off: kubeadm's wait-control-plane then waits for
    /// the API server alone, as the controller manager and scheduler do not run yet.
    pub feature_gates: BTreeMap<String, bool>,
    /// Keys and certificates as ECDSA P-256, not kubeadm's default RSA-2048: every TLS
    /// handshake with the API server, etcd and kubelet signs with the server's key, and a
    /// P-256 signature costs a fraction of an RSA-2048 one. On a starved node (2 emulated
    /// CPUs) the RSA handshakes of probes and controllers were seen timing out.
    pub encryption_algorithm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    pub pod_subnet: String,
    pub service_subnet: String,
    pub dns_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    pub extra_args: Vec<Arg>,
    pub extra_envs: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    pub extra_args: Vec<Arg>,
    pub extra_envs: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    pub local: LocalEtcd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    pub data_dir: String,
    pub extra_args: Vec<Arg>,
    pub extra_envs: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cgroup_driver: String,
    pub cgroup_root: String,
    pub container_runtime_endpoint: String,
    pub feature_gates: BTreeMap<String, bool>,
    /// A laptop has swap on; kubelet must start anyway, and keep pods out of swap.
    pub fail_swap_on: bool,
    pub memory_swap: MemorySwap,
    /// Eviction off: a laptop's disk is often above 85 % and evicting the control
    /// plane's own pods would take the cluster down.
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: u8,
    /// Ephemeral-storage accounting needs filesystem quotas a user namespace lacks.
    pub local_storage_capacity_isolation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemorySwap {
    pub swap_behavior: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyConfiguration {
    pub api_version: String,
    pub kind: String,
    pub mode: String,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub conntrack: Conntrack,
}

/// kube-proxy writes these `nf_conntrack_*` sysctls at start-up; in a user namespace
/// they are read-only and the write fails. Zero means "leave the kernel's value".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conntrack {
    pub max_per_core: u32,
    pub min: u32,
    pub tcp_established_timeout: String,
    pub tcp_close_wait_timeout: String,
}

/// The controller manager and scheduler, started only once `kubeadm init` is through.
/// Started with the API server, they spend the CPU it needs to start: on a starved node (2
/// emulated CPUs) they took a quarter of it (controller manager 17 s, scheduler 11-16 s
/// of CPU a minute) retrying an API server that did not answer yet, and the controller
/// manager crash-looped. Nothing `kubeadm init` does needs them.
pub const CONTROLLER_PHASES: &[&[&str]] = &[
    &["control-plane", "controller-manager"],
    &["control-plane", "scheduler"],
];

/// `kubeadm init`'s phases from `wait-control-plane` on, in its order, as `kubeadm init
/// phase` takes them (`upload-certs` and `show-join-command` do nothing for one node).
/// Each waits for or creates API objects, so running one again is safe.
/// `wait-control-plane` first makes sure the admin user's binding exists, within one
/// `kubernetesAPICall` timeout; a starved API server was seen taking longer.
pub const LATE_PHASES: &[&[&str]] = &[
    &["wait-control-plane"],
    &["upload-config", "all"],
    &["mark-control-plane"],
    &["bootstrap-token"],
    &["kubelet-finalize", "all"],
    &["addon", "all"],
];

/// Which of [`LATE_PHASES`] to run again after `kubeadm init` printed `output` and failed:
/// the failed one and those after it, when it failed after the control plane was up
/// (kubeadm's client gives every request 10 s, and some phases, such as the CoreDNS
/// addon's Service, do not retry; a starved API server was seen missing that). `None`
/// when it failed earlier (in preflight, certificates, manifests, the kubelet's start) or
/// said nothing kinc recognises: that failure is real.
pub fn phases_to_resume(output: &str) -> Option<&'static [&'static [&'static str]]> {
    const MARK: &str = "error execution phase ";
    let at = output.rfind(MARK)? + MARK.len();
    let phase = output[at..]
        .split([':', ' ', '\n'])
        .next()?
        .split('/')
        .next()?;
    let from = |name: &str| {
        LATE_PHASES
            .iter()
            .position(|p| p[0] == name)
            .map(|i| &LATE_PHASES[i..])
    };
    match phase {
        // Only the API server was too slow; a kubelet or a control plane that never came
        // up fails for real, and at once.
        "wait-control-plane" if output[at..].contains("could not bootstrap the admin user") => {
            from(phase)
        }
        "wait-control-plane" => None,
        // Skipped for one node; the next phase is where to go on.
        "upload-certs" => from("mark-control-plane"),
        "show-join-command" => Some(&[]),
        _ => from(phase),
    }
}

/// The four documents kubeadm reads from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeadmConfig {
    pub init: InitConfiguration,
    pub cluster: ClusterConfiguration,
    pub kubelet: KubeletConfiguration,
    pub kube_proxy: KubeProxyConfiguration,
}

impl KubeadmConfig {
    /// The configuration for `cfg`'s cluster on a node whose address is `node_ip` and
    /// whose container runtime is `cri`.
    pub fn new(cfg: &ClusterConfig, node_ip: Ipv4Addr, cri: Cri) -> Self {
        let node_name = cfg.name.container();
        let mut sans = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            node_name.clone(),
        ];
        for s in &cfg.extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let init = InitConfiguration {
            api_version: KUBEADM_API.into(),
            kind: "InitConfiguration".into(),
            local_api_endpoint: ApiEndpoint {
                advertise_address: node_ip,
                bind_port: NODE_API_PORT,
            },
            node_registration: NodeRegistration {
                name: node_name,
                cri_socket: cri.endpoint(),
                kubelet_extra_args: vec![arg("node-ip", node_ip.to_string())],
                ignore_preflight_errors: vec!["all".into()],
                taints: Vec::new(),
            },
            skip_phases: CONTROLLER_PHASES.iter().map(|p| p.join("/")).collect(),
            timeouts: InitTimeouts::default(),
            patches: Patches {
                directory: crate::paths::KUBEADM_PATCHES.into(),
            },
        };
        let cluster = ClusterConfiguration {
            api_version: KUBEADM_API.into(),
            kind: "ClusterConfiguration".into(),
            cluster_name: cfg.name.context(),
            kubernetes_version: cfg.kubernetes_version.clone(),
            control_plane_endpoint: format!("127.0.0.1:{NODE_API_PORT}"),
            networking: Networking {
                pod_subnet: cfg.pod_subnet.to_string(),
                service_subnet: cfg.service_subnet.to_string(),
                dns_domain: cfg.dns_domain.clone(),
            },
            api_server: ApiServer {
                cert_sans: sans,
                // The API server's liveness (`/livez`) includes an etcd read with a 2 s
                // limit; on a starved node etcd answered in up to 10 s, and eight failed
                // probes in a row restart the API server, which starves the node more.
                extra_args: vec![
                    arg("etcd-healthcheck-timeout", "10s"),
                    // The `kubernetes` Service's endpoint, written without a lease. The
                    // default reconciler lists the API servers whose 15 s lease is alive;
                    // a starved API server renewed its own too late, found none, never
                    // wrote its address, and pods got "connection refused" from the
                    // Service for minutes or for good (CoreDNS never Ready). One API
                    // server needs no lease.
                    arg("endpoint-reconciler-type", API_ENDPOINT_RECONCILER),
                ],
                extra_envs: fewer_collections(),
            },
            controller_manager: ControlPlaneComponent {
                // The node gets the whole pod subnet (kincnet allocates from it), so the
                // controller manager's per-node CIDR is the subnet itself.
                extra_args: vec![
                    arg(
                        "node-cidr-mask-size-ipv4",
                        cfg.pod_subnet.prefix().to_string(),
                    ),
                    no_leader_election(),
                ],
                extra_envs: fewer_collections(),
            },
            scheduler: ControlPlaneComponent {
                extra_args: vec![no_leader_election()],
                extra_envs: fewer_collections(),
            },
            etcd: Etcd {
                local: LocalEtcd {
                    data_dir: "/var/lib/etcd".into(),
                    extra_args: patient_etcd(),
                    extra_envs: fewer_collections(),
                },
            },
            feature_gates: BTreeMap::from([(
                "WaitForAllControlPlaneComponents".to_string(),
                false,
            )]),
            encryption_algorithm: "ECDSA-P256".into(),
        };
        let kubelet = KubeletConfiguration {
            api_version: KUBELET_API.into(),
            kind: "KubeletConfiguration".into(),
            cgroup_driver: "cgroupfs".into(),
            cgroup_root: node::KUBELET_CGROUP_ROOT.into(),
            container_runtime_endpoint: cri.endpoint(),
            feature_gates: BTreeMap::from([("KubeletInUserNamespace".to_string(), true)]),
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
        let kube_proxy = KubeProxyConfiguration {
            api_version: KUBE_PROXY_API.into(),
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
        Self {
            init,
            cluster,
            kubelet,
            kube_proxy,
        }
    }

    /// The multi-document YAML file given to `kubeadm --config`.
    pub fn to_yaml(&self) -> String {
        let docs = [
            serde_yaml::to_string(&self.init),
            serde_yaml::to_string(&self.cluster),
            serde_yaml::to_string(&self.kubelet),
            serde_yaml::to_string(&self.kube_proxy),
        ];
        let docs: Vec<String> = docs
            .into_iter()
            .map(|d| d.expect("kubeadm config always serializes"))
            .collect();
        format!(
            "# Rendered by kinc-init on every boot; edits are overwritten.\n{}",
            docs.join("---\n")
        )
    }

    /// Parses a file written by [`Self::to_yaml`] (every document, every field known).
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        let mut docs = serde_yaml::Deserializer::from_str(text);
        let mut next = || {
            docs.next()
                .ok_or_else(|| <serde_yaml::Error as serde::de::Error>::custom("missing document"))
        };
        let init = InitConfiguration::deserialize(next()?)?;
        let cluster = ClusterConfiguration::deserialize(next()?)?;
        let kubelet = KubeletConfiguration::deserialize(next()?)?;
        let kube_proxy = KubeProxyConfiguration::deserialize(next()?)?;
        Ok(Self {
            init,
            cluster,
            kubelet,
            kube_proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_from_the_phase_kubeadm_names() {
        let out = "[WARNING ...]\nerror execution phase addon/coredns: unable to create a new \
                   DNS service: Post \"https://x/api?timeout=10s\": Client.Timeout exceeded\n";
        assert_eq!(phases_to_resume(out), Some(&LATE_PHASES[5..]));
        let out = "error execution phase upload-config/kubelet: timed out";
        assert_eq!(phases_to_resume(out), Some(&LATE_PHASES[1..]));
        let out = "error execution phase mark-control-plane: nodes not found";
        assert_eq!(phases_to_resume(out), Some(&LATE_PHASES[2..]));
        assert_eq!(
            phases_to_resume("error execution phase upload-certs: x"),
            Some(&LATE_PHASES[2..])
        );
        let out = "error execution phase wait-control-plane: cannot obtain client without \
                   bootstrap: could not bootstrap the admin user in file admin.conf: unable \
                   to create ClusterRoleBinding: Post \"https://x\": context deadline exceeded";
        assert_eq!(phases_to_resume(out), Some(LATE_PHASES));
        assert_eq!(
            phases_to_resume("error execution phase show-join-command: x"),
            Some(&[][..])
        );
    }

    #[test]
    fn the_api_server_keeps_its_service_endpoint_without_a_lease() {
        let cfg = ClusterConfig::new(
            kinc_types::ClusterName::new("dev").unwrap(),
            6444,
            "10.64.0.0/20".parse().unwrap(),
            "10.64.16.0/20".parse().unwrap(),
        );
        let docs = KubeadmConfig::new(&cfg, Ipv4Addr::new(192, 0, 0, 8), Cri::Containerd);
        let args = &docs.cluster.api_server.extra_args;
        assert!(
            args.iter()
                .any(|a| a.name == "endpoint-reconciler-type" && a.value == "master-count"),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|a| a.name == "apiserver-count"),
            "{args:?}"
        );
    }

    #[test]
    fn each_control_plane_pod_gets_a_patient_liveness_probe_and_nothing_else() {
        use k8s_openapi::api::core::v1::Pod;
        let patches = probe_patches();
        let files: Vec<&str> = patches.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "etcd+strategic.json",
                "kube-apiserver+strategic.json",
                "kube-controller-manager+strategic.json",
                "kube-scheduler+strategic.json"
            ]
        );
        for ((file, json), name) in patches.iter().zip(STATIC_PODS) {
            let pod: Pod = serde_json::from_str(json).unwrap();
            let spec = pod.spec.unwrap();
            assert_eq!(spec.containers.len(), 1, "{file}");
            let c = &spec.containers[0];
            // Strategic merge matches containers by name.
            assert_eq!(c.name, name);
            let p = c.liveness_probe.as_ref().unwrap();
            assert_eq!(p.timeout_seconds, Some(30), "{file}");
            assert_eq!(p.failure_threshold, Some(24), "{file}");
            // kubeadm's handler and period are kept: the patch does not name them.
            assert!(p.http_get.is_none() && p.period_seconds.is_none(), "{file}");
            assert!(c.readiness_probe.is_none() && c.startup_probe.is_none());
        }
    }

    #[test]
    fn an_early_or_unknown_failure_is_not_resumed() {
        for out in [
            "error execution phase wait-control-plane: failed while waiting for the kubelet \
             to start: Get \"http://127.0.0.1:10248/healthz\": connection refused",
            "[WARNING x]: could not bootstrap the admin user\nerror execution phase \
             wait-control-plane: failed while waiting for the control plane to start",
            "error execution phase preflight: [ERROR Port-6443]: Port 6443 is in use",
            "error execution phase certs/apiserver: failure loading key",
            "couldn't validate the identity of the API Server",
            "",
        ] {
            assert_eq!(phases_to_resume(out), None, "{out}");
        }
    }

    #[test]
    fn late_phases_are_the_ones_kubeadm_runs_after_the_control_plane() {
        let names: Vec<&str> = LATE_PHASES.iter().map(|p| p[0]).collect();
        assert_eq!(
            names,
            [
                "wait-control-plane",
                "upload-config",
                "mark-control-plane",
                "bootstrap-token",
                "kubelet-finalize",
                "addon"
            ]
        );
    }
}
