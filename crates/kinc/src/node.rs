//! How a cluster's node container is started: one typed [`NodeSpec`], turned either
//! into `podman run` arguments or into Quadlet units ([`crate::quadlet`]), so both
//! ways start the same container.

use std::path::PathBuf;

use kinc_types::config::{MOUNTED_CONFIG_DIR, NODE_API_PORT};
use kinc_types::{labels, ClusterConfig, ClusterName};

/// Everything that decides how the node container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub config: ClusterConfig,
    pub image: String,
    /// The host's container storage (`podman info` graphRoot), mounted read-only for
    /// CRI-O's additional image store; None when it does not exist.
    pub host_store: Option<PathBuf>,
    /// Whether `/dev/fuse` exists on the host (fuse-overlayfs in the node needs it).
    pub fuse: bool,
}

impl NodeSpec {
    pub fn name(&self) -> &ClusterName {
        &self.config.name
    }

    /// Labels of the node container: ownership plus what the allocator reconciles from.
    pub fn node_labels(&self) -> Vec<(String, String)> {
        let mut l = volume_labels(self.name(), labels::ROLE_NODE);
        l.push((labels::API_PORT.into(), self.config.api_port.to_string()));
        l.push((
            labels::POD_SUBNET.into(),
            self.config.pod_subnet.to_string(),
        ));
        l.push((
            labels::SERVICE_SUBNET.into(),
            self.config.service_subnet.to_string(),
        ));
        l
    }

    /// `podman run` arguments (after `run`).
    pub fn run_args(&self) -> Vec<String> {
        let n = self.name();
        let c = n.container();
        let mut a: Vec<String> = vec![
            "--detach".into(),
            "--name".into(),
            c.clone(),
            "--hostname".into(),
            c,
        ];
        for (k, v) in self.node_labels() {
            a.push("--label".into());
            a.push(format!("{k}={v}"));
        }
        a.extend(
            [
                // A Kubernetes node mounts, makes namespaces and runs CRI-O: inside the
                // user namespace of rootless Podman that is still unprivileged on the host.
                "--privileged",
                // systemd is PID 1; an own cgroup namespace keeps its tree self-contained.
                "--systemd=always",
                "--cgroupns=private",
                // Every pod's processes count against the node: no Podman pids limit.
                "--pids-limit=-1",
                "--restart=on-failure:3",
                "--stop-timeout=30",
            ]
            .map(String::from),
        );
        a.push("--publish".into());
        a.push(format!(
            "127.0.0.1:{}:{}/tcp",
            self.config.api_port, NODE_API_PORT
        ));
        a.push("--volume".into());
        a.push(format!("{}:/var", n.var_volume()));
        a.push("--volume".into());
        a.push(format!("{}:{}:ro", n.config_volume(), MOUNTED_CONFIG_DIR));
        if let Some(store) = &self.host_store {
            a.push("--volume".into());
            a.push(host_store_mount(store));
        }
        if self.fuse {
            a.push("--device".into());
            a.push("/dev/fuse".into());
        }
        a.push(self.image.clone());
        a
    }
}

/// Labels of a cluster's volume with the given role.
pub fn volume_labels(name: &ClusterName, role: &str) -> Vec<(String, String)> {
    vec![
        (labels::OWNER.into(), labels::OWNER_VALUE.into()),
        (labels::CLUSTER.into(), name.to_string()),
        (labels::ROLE.into(), role.into()),
    ]
}

pub fn host_store_mount(store: &std::path::Path) -> String {
    format!(
        "{}:{}:ro",
        store.display(),
        kinc_types::node::HOST_IMAGE_STORE
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec() -> NodeSpec {
        NodeSpec {
            config: ClusterConfig::new(
                ClusterName::new("dev").unwrap(),
                6444,
                "10.64.32.0/20".parse().unwrap(),
                "10.64.48.0/20".parse().unwrap(),
            ),
            image: "localhost/kinc/node:v1.33.13".into(),
            host_store: Some("/home/u/.local/share/containers/storage".into()),
            fuse: true,
        }
    }

    #[test]
    fn run_args_publish_on_loopback_and_mount_everything() {
        let a = spec().run_args().join(" ");
        for want in [
            "--name kinc-dev-control-plane",
            "--hostname kinc-dev-control-plane",
            "--label io.kinc.owner=kinc",
            "--label io.kinc.cluster=dev",
            "--label io.kinc.role=node",
            "--label io.kinc.api-port=6444",
            "--label io.kinc.pod-subnet=10.64.32.0/20",
            "--label io.kinc.service-subnet=10.64.48.0/20",
            "--systemd=always",
            "--cgroupns=private",
            "--pids-limit=-1",
            "--restart=on-failure:3",
            "--publish 127.0.0.1:6444:6443/tcp",
            "--volume kinc-dev-var-data:/var",
            "--volume kinc-dev-config:/etc/kinc/config:ro",
            "--volume /home/u/.local/share/containers/storage:/usr/lib/kinc/host-storage:ro",
            "--device /dev/fuse",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        assert!(a.ends_with(" localhost/kinc/node:v1.33.13"), "{a}");
    }

    #[test]
    fn optional_mounts_are_left_out() {
        let mut s = spec();
        s.host_store = None;
        s.fuse = false;
        let a = s.run_args().join(" ");
        assert!(
            !a.contains("host-storage") && !a.contains("/dev/fuse"),
            "{a}"
        );
    }
}
