//! What kinc-init remembers on the `/var` volume between boots.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use kinc_types::fsutil::write_atomic;
use serde::{Deserialize, Serialize};

use crate::paths::NodePaths;
use kinc_types::ClusterConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// The cluster this `/var` belongs to (set on first boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Boots seen with this `/var`, this one included.
    #[serde(default)]
    pub boots: u32,
    /// True once `kubeadm init` has succeeded: it is never run again on this `/var`.
    #[serde(default)]
    pub initialized: bool,
    /// The node's address on this boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_ip: Option<Ipv4Addr>,
    /// The address the control plane's certificates and manifests were made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading node state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing node state {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing node state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NodeState {
    /// The saved state, or the empty state of a node that never booted.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut json = serde_json::to_vec_pretty(self).expect("state always serializes");
        json.push(b'\n');
        write_atomic(path, &json, Some(0o644)).map_err(err)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChooseConfigError {
    #[error(transparent)]
    Config(#[from] kinc_types::config::ConfigError),
    #[error("no cluster config: neither {mounted} (the mounted config volume) nor {baked} (the image default) exists")]
    Missing { mounted: PathBuf, baked: PathBuf },
}

/// The mounted config when the host provided one, else the image's default. A mounted
/// file that does not parse is an error, never a silent fall-back to the default.
pub fn choose_config(paths: &NodePaths) -> Result<(ClusterConfig, PathBuf), ChooseConfigError> {
    let mounted = paths.mounted_config();
    let baked = paths.baked_config();
    for p in [&mounted, &baked] {
        if p.exists() {
            return Ok((ClusterConfig::load(p)?, p.clone()));
        }
    }
    Err(ChooseConfigError::Missing { mounted, baked })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinc_types::ClusterName;

    fn write_cfg(path: &Path, name: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = ClusterConfig::new(
            ClusterName::new(name).unwrap(),
            6443,
            "10.244.43.0/24".parse().unwrap(),
            "10.43.0.0/16".parse().unwrap(),
        );
        std::fs::write(path, c.to_json()).unwrap();
    }

    #[test]
    fn mounted_config_wins_over_baked() {
        let d = tempfile::tempdir().unwrap();
        let p = NodePaths::under(d.path());
        assert!(matches!(
            choose_config(&p),
            Err(ChooseConfigError::Missing { .. })
        ));
        write_cfg(&p.baked_config(), "default");
        assert_eq!(choose_config(&p).unwrap().0.name.as_str(), "default");
        write_cfg(&p.mounted_config(), "dev");
        let (cfg, from) = choose_config(&p).unwrap();
        assert_eq!(cfg.name.as_str(), "dev");
        assert_eq!(from, p.mounted_config());
    }

    #[test]
    fn broken_mounted_config_is_an_error_not_a_fallback() {
        let d = tempfile::tempdir().unwrap();
        let p = NodePaths::under(d.path());
        write_cfg(&p.baked_config(), "default");
        std::fs::create_dir_all(p.mounted_config().parent().unwrap()).unwrap();
        std::fs::write(p.mounted_config(), "{not json").unwrap();
        let err = choose_config(&p).unwrap_err().to_string();
        assert!(err.contains("cluster.json"), "{err}");
    }

    #[test]
    fn state_round_trips_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("var/lib/kinc/node.json");
        assert_eq!(NodeState::load(&path).unwrap(), NodeState::default());
        let s = NodeState {
            cluster: Some("dev".into()),
            boots: 2,
            initialized: true,
            current_ip: Some(Ipv4Addr::new(10, 88, 0, 3)),
            cluster_ip: Some(Ipv4Addr::new(10, 88, 0, 2)),
        };
        s.save(&path).unwrap();
        assert_eq!(NodeState::load(&path).unwrap(), s);
    }
}
