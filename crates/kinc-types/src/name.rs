//! Cluster names and every resource name derived from one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted cluster name. `kinc-<name>-control-plane` becomes the node's
/// hostname, which must stay a DNS-1123 label (63 characters).
pub const MAX_NAME_LEN: usize = 63 - "kinc-".len() - "-control-plane".len();

/// Name used when neither `--name` nor `KINC_CLUSTER_NAME` is given.
pub const DEFAULT_NAME: &str = "default";

/// Environment variable that sets the default cluster name.
pub const NAME_ENV: &str = "KINC_CLUSTER_NAME";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("cluster name must not be empty")]
    Empty,
    #[error("cluster name {name:?} is {len} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong { name: String, len: usize },
    #[error(
        "cluster name {name:?} has {found:?} at position {pos}: use lower-case letters, digits and '-' (a DNS-1123 label)"
    )]
    BadChar {
        name: String,
        found: char,
        pos: usize,
    },
    #[error("cluster name {name:?} must start and end with a lower-case letter or digit")]
    BadEdge { name: String },
}

/// A validated cluster name: a DNS-1123 label short enough for every derived name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                name: name.to_string(),
                len: name.len(),
            });
        }
        if let Some((pos, found)) = name
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: name.to_string(),
                found,
                pos,
            });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(NameError::BadEdge {
                name: name.to_string(),
            });
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node container (also its hostname and the Quadlet unit's base name).
    pub fn container(&self) -> String {
        format!("kinc-{}-control-plane", self.0)
    }

    /// The volume mounted at `/var` in the node.
    pub fn var_volume(&self) -> String {
        format!("kinc-{}-var-data", self.0)
    }

    /// The volume holding the rendered cluster config, mounted read-only.
    pub fn config_volume(&self) -> String {
        format!("kinc-{}-config", self.0)
    }

    /// The kubeconfig context name used by `kinc export kubeconfig`.
    pub fn context(&self) -> String {
        format!("kinc-{}", self.0)
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ClusterName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<ClusterName> for String {
    fn from(n: ClusterName) -> Self {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["default", "a", "dev-1", "0abc", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(ClusterName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_with_the_reason() {
        assert_eq!(ClusterName::new(""), Err(NameError::Empty));
        assert!(matches!(
            ClusterName::new("Dev"),
            Err(NameError::BadChar {
                found: 'D',
                pos: 0,
                ..
            })
        ));
        assert!(matches!(
            ClusterName::new("a_b"),
            Err(NameError::BadChar {
                found: '_',
                pos: 1,
                ..
            })
        ));
        assert!(matches!(
            ClusterName::new("-a"),
            Err(NameError::BadEdge { .. })
        ));
        assert!(matches!(
            ClusterName::new("a-"),
            Err(NameError::BadEdge { .. })
        ));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            ClusterName::new(&long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn derived_names_fit_a_dns_label() {
        let n = ClusterName::new(&"x".repeat(MAX_NAME_LEN)).unwrap();
        assert_eq!(n.container().len(), 63);
        let d = ClusterName::new("dev").unwrap();
        assert_eq!(d.container(), "kinc-dev-control-plane");
        assert_eq!(d.var_volume(), "kinc-dev-var-data");
        assert_eq!(d.config_volume(), "kinc-dev-config");
        assert_eq!(d.context(), "kinc-dev");
    }

    #[test]
    fn serde_validates() {
        let n: ClusterName = serde_json::from_str("\"ok\"").unwrap();
        assert_eq!(n.as_str(), "ok");
        assert!(serde_json::from_str::<ClusterName>("\"NO\"").is_err());
    }
}
