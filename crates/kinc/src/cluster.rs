//! The provider-level operations: find kinc's clusters through their labels, delete
//! them, and read what a node publishes on its `/var` volume. `create` lives in
//! [`crate::create`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use kinc_types::{labels, BootstrapStatus, ClusterName};
use serde::Serialize;

use crate::alloc::Allocation;
use crate::host::Host;
use crate::kubeconfig::{self, Kubeconfig, KubeconfigError};
use crate::podman::{ContainerSummary, Podman, PodmanError};
use crate::quadlet;
use crate::runner::{RunError, Runner};
use crate::state::{LockedState, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Podman(#[from] PodmanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("no kinc cluster named {0:?} (see `kinc get clusters`)")]
    NotFound(String),
    #[error("cluster {name:?} has no node container (only leftovers: run `kinc delete cluster --name {name}`)")]
    NoNode { name: String },
    #[error("the node of cluster {name:?} has not written {path} yet: it is still starting (see `kinc status --name {name}`)")]
    NotPublished { name: String, path: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A cluster as `kinc get clusters -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub name: String,
    /// Podman's state of the node (`running`, `exited`, ...), or `missing`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<Ipv4Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_subnet: Option<Ipv4Network>,
    pub volumes: Vec<String>,
}

/// What `delete` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub units: Vec<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
}

impl DeleteReport {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.volumes.is_empty() && self.units.is_empty()
    }
}

/// The allocation a node container's labels carry.
pub fn allocation_from_labels(l: &BTreeMap<String, String>) -> Option<Allocation> {
    Some(Allocation {
        api_port: l.get(labels::API_PORT)?.parse().ok()?,
        pod_subnet: l.get(labels::POD_SUBNET)?.parse().ok()?,
        service_subnet: l.get(labels::SERVICE_SUBNET)?.parse().ok()?,
    })
}

/// The path on the host of `node_path` (under the node's `/var`), given the var
/// volume's mountpoint.
pub fn var_path(mountpoint: &Path, node_path: &str) -> PathBuf {
    mountpoint.join(node_path.trim_start_matches("/var/"))
}

/// The bootstrap status of cluster `name` whose var volume is mounted at `mountpoint`:
/// a file read, no podman call, so a wait can afford it on every poll.
pub fn read_status(name: &ClusterName, mountpoint: &Path) -> Result<BootstrapStatus, ClusterError> {
    let p = var_path(mountpoint, kinc_types::status::STATUS_PATH);
    if !p.exists() {
        return Err(ClusterError::NotPublished {
            name: name.to_string(),
            path: kinc_types::status::STATUS_PATH.into(),
        });
    }
    BootstrapStatus::load(&p)
        .map_err(|e| ClusterError::Other(crate::excerpt::bounded(&e.to_string())))
}

/// kinc over a container runtime: the library behind every command.
pub struct Kinc<R: Runner> {
    pub podman: Podman<R>,
    pub data_dir: PathBuf,
    /// Where Quadlet units go; None when there is no HOME.
    pub unit_dir: Option<PathBuf>,
    pub routes_path: PathBuf,
    /// Where `export kubeconfig` and `delete` merge; None to leave kubeconfigs alone.
    pub kubeconfig_path: Option<PathBuf>,
    /// The machine: who runs kinc, the files doctor reads, the 127.0.0.1 ports.
    pub host: Host,
}

const OWNER: (&str, &str) = (labels::OWNER, labels::OWNER_VALUE);

impl<R: Runner> Kinc<R> {
    /// kinc for the calling user on `host`: data in XDG_DATA_HOME, units in
    /// XDG_CONFIG_HOME, kubeconfig from KUBECONFIG or ~/.kube/config.
    pub fn from_env(runner: R, host: Host) -> Result<Self, ClusterError> {
        let env = |k: &str| std::env::var_os(k);
        Ok(Self {
            podman: Podman::new(runner),
            data_dir: crate::state::default_data_dir()?,
            unit_dir: quadlet::unit_dir_from(&env),
            routes_path: PathBuf::from(crate::routes::PROC_NET_ROUTE),
            kubeconfig_path: kubeconfig::merge_path(&env).ok(),
            host,
        })
    }

    fn owned_containers(
        &self,
        name: Option<&ClusterName>,
    ) -> Result<Vec<ContainerSummary>, ClusterError> {
        let mut f = vec![OWNER];
        if let Some(n) = name {
            f.push((labels::CLUSTER, n.as_str()));
        }
        Ok(self.podman.containers(&f)?)
    }

    /// Every cluster that has at least one kinc-labelled container or volume.
    pub fn clusters(&self) -> Result<Vec<ClusterInfo>, ClusterError> {
        let mut map: BTreeMap<String, ClusterInfo> = BTreeMap::new();
        let blank = |name: &str| ClusterInfo {
            name: name.to_string(),
            state: "missing".into(),
            container: None,
            image: None,
            api_port: None,
            server: None,
            pod_subnet: None,
            service_subnet: None,
            volumes: Vec::new(),
        };
        for c in self.owned_containers(None)? {
            let Some(name) = c.labels.get(labels::CLUSTER) else {
                continue;
            };
            if c.labels.get(labels::ROLE).map(String::as_str) != Some(labels::ROLE_NODE) {
                continue;
            }
            let e = map.entry(name.clone()).or_insert_with(|| blank(name));
            e.state = c.state.clone();
            e.container = Some(c.name().to_string());
            e.image = Some(c.image.clone());
            if let Some(a) = allocation_from_labels(&c.labels) {
                e.api_port = Some(a.api_port);
                e.server = Some(format!("https://127.0.0.1:{}", a.api_port));
                e.pod_subnet = Some(a.pod_subnet);
                e.service_subnet = Some(a.service_subnet);
            }
        }
        for v in self.podman.volumes(&[OWNER])? {
            if let Some(name) = v.labels.get(labels::CLUSTER) {
                map.entry(name.clone())
                    .or_insert_with(|| blank(name))
                    .volumes
                    .push(v.name.clone());
            }
        }
        Ok(map.into_values().collect())
    }

    /// Clusters that hold podman resources, with the allocation of their node.
    pub fn held(&self) -> Result<BTreeMap<String, Option<Allocation>>, ClusterError> {
        Ok(self
            .clusters()?
            .into_iter()
            .map(|c| {
                let a = match (c.api_port, c.pod_subnet, c.service_subnet) {
                    (Some(api_port), Some(pod_subnet), Some(service_subnet)) => Some(Allocation {
                        api_port,
                        pod_subnet,
                        service_subnet,
                    }),
                    _ => None,
                };
                (c.name, a)
            })
            .collect())
    }

    /// Locks the allocation record and reconciles it with podman.
    pub fn lock_state(&self) -> Result<LockedState, ClusterError> {
        let mut s = LockedState::open(&self.data_dir)?;
        let held = self.held()?;
        if !s.state.reconcile(&held).is_empty() {
            s.save()?;
        }
        Ok(s)
    }

    pub fn info(&self, name: &ClusterName) -> Result<ClusterInfo, ClusterError> {
        self.clusters()?
            .into_iter()
            .find(|c| c.name == name.as_str())
            .ok_or_else(|| ClusterError::NotFound(name.to_string()))
    }

    /// Whether a systemd user manager answers (never for root: rootful clusters run
    /// with plain `podman run`).
    pub fn systemd_user_manager(&self) -> bool {
        if !self.host.rootless() {
            return false;
        }
        let args = ["--user", "is-system-running"].map(String::from);
        match self.podman.runner().try_run("systemctl", &args) {
            Ok(out) => matches!(
                out.stdout_str().trim(),
                "running" | "degraded" | "starting" | "initializing"
            ),
            Err(_) => false,
        }
    }

    fn systemctl_user(&self, args: &[&str]) -> Result<(), RunError> {
        let mut a = vec!["--user".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        self.podman.runner().run("systemctl", &a).map(|_| ())
    }

    /// Removes every kinc-labelled resource of `name` (and only those), its Quadlet
    /// units, its kubeconfig entries and its allocation. Idempotent.
    pub fn delete(&self, name: &ClusterName) -> Result<DeleteReport, ClusterError> {
        let mut state = LockedState::open(&self.data_dir)?;
        let report = self.delete_resources(name)?;
        if state.state.clusters.remove(name.as_str()).is_some() {
            state.save()?;
        }
        Ok(report)
    }

    /// `delete` without taking the state lock (the caller holds it, or has none).
    pub fn delete_resources(&self, name: &ClusterName) -> Result<DeleteReport, ClusterError> {
        let mut report = DeleteReport::default();
        // Listed before the units stop: stopping a Quadlet node removes its container,
        // and the report names what delete removed either way.
        let existed = self.owned_containers(Some(name))?;
        if let Some(dir) = &self.unit_dir {
            let units = quadlet::installed_units(dir, name);
            if !units.is_empty() {
                let systemd = self.systemd_user_manager();
                if systemd {
                    // Stopping may fail when the unit never started; removal goes on.
                    let _ = self.systemctl_user(&["stop", &quadlet::node_service(name)]);
                }
                for u in &units {
                    std::fs::remove_file(u).map_err(|source| ClusterError::Io {
                        what: "removing",
                        path: u.display().to_string(),
                        source,
                    })?;
                }
                if systemd {
                    self.systemctl_user(&["daemon-reload"])?;
                }
                report.units = units;
            }
        }
        let mut removed: BTreeSet<String> = existed.iter().map(|c| c.name().to_string()).collect();
        // Only a unit stop can have changed the list since.
        let left = if report.units.is_empty() {
            existed
        } else {
            self.owned_containers(Some(name))?
        };
        let ids: Vec<String> = left.iter().map(|c| c.id.clone()).collect();
        self.podman.container_rm(&ids)?;
        removed.extend(left.iter().map(|c| c.name().to_string()));
        report.containers = removed.into_iter().collect();
        let vols: Vec<String> = self
            .podman
            .volumes(&[OWNER, (labels::CLUSTER, name.as_str())])?
            .into_iter()
            .map(|v| v.name)
            .collect();
        self.podman.volume_rm(&vols)?;
        report.volumes = vols;
        if let Some(path) = &self.kubeconfig_path {
            if path.exists() {
                let mut removed = false;
                kubeconfig::update_file(path, |k| {
                    removed = k.remove(&name.context());
                    removed
                })?;
                if removed {
                    report.kubeconfig = Some(path.clone());
                }
            }
        }
        Ok(report)
    }

    /// The host directory behind the node's `/var`.
    pub fn var_mountpoint(&self, name: &ClusterName) -> Result<PathBuf, ClusterError> {
        match self.podman.volume_inspect(&name.var_volume())? {
            Some(v)
                if v.labels.get(labels::OWNER).map(String::as_str) == Some(labels::OWNER_VALUE) =>
            {
                Ok(PathBuf::from(v.mountpoint))
            }
            _ => Err(ClusterError::NotFound(name.to_string())),
        }
    }

    /// The node's bootstrap status, read from the var volume (no exec).
    pub fn status(&self, name: &ClusterName) -> Result<BootstrapStatus, ClusterError> {
        let mp = self.var_mountpoint(name)?;
        read_status(name, &mp)
    }

    /// The admin kubeconfig as the host sees it: context `kinc-<name>`, server on
    /// 127.0.0.1 at the cluster's port.
    pub fn kubeconfig(&self, name: &ClusterName) -> Result<Kubeconfig, ClusterError> {
        let info = self.info(name)?;
        let port = info.api_port.ok_or_else(|| ClusterError::NoNode {
            name: name.to_string(),
        })?;
        let mp = self.var_mountpoint(name)?;
        let p = var_path(&mp, kinc_types::node::ADMIN_KUBECONFIG);
        let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClusterError::NotPublished {
                name: name.to_string(),
                path: kinc_types::node::ADMIN_KUBECONFIG.into(),
            },
            _ => ClusterError::Io {
                what: "reading",
                path: p.display().to_string(),
                source: e,
            },
        })?;
        let admin = Kubeconfig::parse(&text, &p.display().to_string())?;
        Ok(admin.for_host(&name.context(), port, &p.display().to_string())?)
    }

    /// Merges the cluster's kubeconfig into `kubeconfig_path`; returns the path.
    pub fn export_kubeconfig(&self, name: &ClusterName) -> Result<PathBuf, ClusterError> {
        let ours = self.kubeconfig(name)?;
        let path = self
            .kubeconfig_path
            .clone()
            .ok_or(ClusterError::Kubeconfig(KubeconfigError::NoPath))?;
        kubeconfig::update_file(&path, |k| {
            k.merge(&ours);
            true
        })?;
        Ok(path)
    }

    /// Waits until the node's systemd reached its default target, seen in the
    /// container's console output or in a Ready status file. Only then may anything be
    /// `podman exec`ed: an earlier exec lands in the root cgroup and breaks delegation.
    pub fn wait_for_systemd(
        &self,
        name: &ClusterName,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.status(name).map(|s| s.is_ready()).unwrap_or(false) {
                return Ok(());
            }
            let logs = self.podman.logs(&name.container(), None)?;
            if reached_default_target(&logs) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClusterError::Other(format!(
                    "the node's systemd of cluster \"{name}\" did not reach its default target within {}",
                    humantime::format_duration(timeout)
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// What `kinc logs` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLogs {
    pub container: String,
    /// The node's journal read from its `/var` volume with the host's `journalctl`
    /// (no exec), or why it could not be read.
    pub journal: Result<String, String>,
}

impl<R: Runner> Kinc<R> {
    pub fn logs(&self, name: &ClusterName, tail: Option<usize>) -> Result<NodeLogs, ClusterError> {
        let info = self.info(name)?;
        let container = match &info.container {
            Some(c) => self.podman.logs(c, tail)?,
            None => String::new(),
        };
        let mp = self.var_mountpoint(name)?;
        let dir = var_path(&mp, "/var/log/journal");
        let journal = if !dir.is_dir() {
            Err(format!(
                "the node has no persistent journal yet ({} is missing)",
                dir.display()
            ))
        } else {
            let mut args = vec![
                format!("--directory={}", dir.display()),
                "--no-pager".to_string(),
                "--output=short-precise".to_string(),
            ];
            if let Some(n) = tail {
                args.push(format!("--lines={n}"));
            }
            self.podman
                .runner()
                .run("journalctl", &args)
                .map(|o| o.stdout_str())
                .map_err(|e| e.to_string())
        };
        Ok(NodeLogs { container, journal })
    }
}

/// systemd's console line once the default target is up.
pub fn reached_default_target(console: &str) -> bool {
    console.lines().any(|l| {
        l.contains("Reached target")
            && [
                "Multi-User System",
                "multi-user.target",
                "Graphical Interface",
                "graphical.target",
            ]
            .iter()
            .any(|t| l.contains(t))
    })
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
pub(crate) mod tests;
