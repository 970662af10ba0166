//! The cluster config: rendered by the host CLI into the `kinc-<name>-config` volume,
//! read by `kinc-init` inside the node. One JSON document, versioned by `apiVersion`.

use std::path::Path;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::name::ClusterName;

pub const API_VERSION: &str = "kinc.dev/v1alpha1";
pub const KIND: &str = "ClusterConfig";

/// Where the host's config volume is mounted in the node (read-only).
pub const MOUNTED_CONFIG_DIR: &str = "/etc/kinc/config";
/// Where the image carries a default config, used when nothing is mounted.
pub const BAKED_CONFIG_DIR: &str = "/usr/share/kinc/config";
/// File name of the config inside either directory.
pub const CONFIG_FILE: &str = "cluster.json";

/// Kubernetes version the image carries and the config defaults to.
pub const DEFAULT_KUBERNETES_VERSION: &str = crate::versions::KUBERNETES;
/// The API server's port inside the node; the host publishes `api_port` to it.
pub const NODE_API_PORT: u16 = 6443;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub api_version: String,
    pub kind: String,
    pub name: ClusterName,
    pub kubernetes_version: String,
    /// Host port on 127.0.0.1 that forwards to the node's API server.
    pub api_port: u16,
    pub pod_subnet: Ipv4Network,
    pub service_subnet: Ipv4Network,
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// Extra subject alternative names for the API server certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_sans: Vec<String>,
}

fn default_dns_domain() -> String {
    "cluster.local".to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading cluster config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing cluster config {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cluster config {path}: {msg}")]
    Invalid { path: String, msg: String },
}

impl ClusterConfig {
    pub fn new(
        name: ClusterName,
        api_port: u16,
        pod_subnet: Ipv4Network,
        service_subnet: Ipv4Network,
    ) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            name,
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.to_string(),
            api_port,
            pod_subnet,
            service_subnet,
            dns_domain: default_dns_domain(),
            extra_sans: Vec::new(),
        }
    }

    /// Checks what serde cannot: the document's kind and that the two ranges are disjoint.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_version != API_VERSION {
            return Err(format!(
                "apiVersion is {:?}; this kinc reads {API_VERSION:?}",
                self.api_version
            ));
        }
        if self.kind != KIND {
            return Err(format!("kind is {:?}; expected {KIND:?}", self.kind));
        }
        if self.pod_subnet.overlaps(self.service_subnet) {
            return Err(format!(
                "podSubnet {} overlaps serviceSubnet {}",
                self.pod_subnet, self.service_subnet
            ));
        }
        if self.api_port == 0 {
            return Err("apiPort must not be 0".to_string());
        }
        Ok(())
    }

    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_json::from_slice(bytes).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })?;
        cfg.validate().map_err(|msg| ConfigError::Invalid {
            path: path.to_string(),
            msg,
        })?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&bytes, &path.display().to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("ClusterConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterConfig {
        ClusterConfig::new(
            ClusterName::new("dev").unwrap(),
            6444,
            "10.244.0.0/24".parse().unwrap(),
            "10.96.0.0/20".parse().unwrap(),
        )
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let back = ClusterConfig::from_json(c.to_json().as_bytes(), "mem").unwrap();
        assert_eq!(back, c);
        assert!(c.to_json().contains("\"podSubnet\": \"10.244.0.0/24\""));
    }

    #[test]
    fn rejects_overlap_and_wrong_kind() {
        let mut c = sample();
        c.service_subnet = "10.244.0.128/25".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("overlaps"));
        let mut c = sample();
        c.kind = "Other".into();
        let err = ClusterConfig::from_json(c.to_json().as_bytes(), "f.json").unwrap_err();
        assert!(err.to_string().contains("f.json"), "{err}");
    }

    #[test]
    fn bad_name_in_document_is_a_parse_error() {
        let json = sample().to_json().replace("\"dev\"", "\"Dev\"");
        assert!(matches!(
            ClusterConfig::from_json(json.as_bytes(), "x"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
