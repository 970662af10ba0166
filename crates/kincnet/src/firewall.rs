//! The firewall kincnet needs (masquerade of the pod subnet, DNAT of port mappings),
//! behind a trait so the commands do not depend on how it is programmed.
//! The real implementation is `kinc-nft` (nf_tables over netlink, one table per network).

use std::net::Ipv4Addr;

use crate::config::{NetConf, PortMapping};
use crate::error::{CniError, Code};

#[derive(Debug, thiserror::Error)]
#[error("firewall (nftables table {table}): {msg}")]
pub struct FwError {
    pub table: String,
    pub msg: String,
    /// EBUSY/EAGAIN-like: the runtime should retry.
    pub transient: bool,
}

impl From<FwError> for CniError {
    fn from(e: FwError) -> CniError {
        let code = if e.transient {
            Code::TryAgainLater
        } else {
            Code::Generic
        };
        CniError::new(code, e.to_string())
    }
}

/// Per-network firewall state. All calls act in the calling thread's netns.
pub trait Firewall {
    /// Table, chains, maps and the per-network rules; cheap when already there.
    fn ensure(&self) -> Result<(), FwError>;
    /// The pod's port mappings as map elements; nothing at all when `mappings` is empty.
    fn add_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FwError>;
    /// Removes exactly those elements; missing ones are not an error.
    fn remove_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FwError>;
    /// The mappings programmed for `ip` (CHECK).
    fn pod_mappings(&self, ip: Ipv4Addr) -> Result<Vec<PortMapping>, FwError>;
    /// Removes every element whose target is not in `keep` (GC); returns how many.
    fn retain_pods(&self, keep: &[Ipv4Addr]) -> Result<usize, FwError>;
}

/// The nftables table kincnet owns for a network: one per bridge.
pub fn table_name(conf: &NetConf) -> String {
    format!("kincnet-{}", conf.bridge)
}

pub use backend::for_network;

mod backend {
    use super::*;

    /// Stand-in until kinc-nft is merged: masquerade is not installed and a pod
    /// with port mappings fails ADD, loudly.
    pub struct Unavailable {
        table: String,
    }

    pub fn for_network(conf: &NetConf) -> Unavailable {
        Unavailable {
            table: table_name(conf),
        }
    }

    impl Unavailable {
        fn err(&self) -> FwError {
            FwError {
                table: self.table.clone(),
                msg: "this kincnet was built without kinc-nft: no port mappings".into(),
                transient: false,
            }
        }
    }

    impl Firewall for Unavailable {
        fn ensure(&self) -> Result<(), FwError> {
            Ok(())
        }
        fn add_pod(&self, _: Ipv4Addr, m: &[PortMapping]) -> Result<(), FwError> {
            if m.is_empty() {
                Ok(())
            } else {
                Err(self.err())
            }
        }
        fn remove_pod(&self, _: Ipv4Addr, _: &[PortMapping]) -> Result<(), FwError> {
            Ok(())
        }
        fn pod_mappings(&self, _: Ipv4Addr) -> Result<Vec<PortMapping>, FwError> {
            Ok(Vec::new())
        }
        fn retain_pods(&self, _: &[Ipv4Addr]) -> Result<usize, FwError> {
            Ok(0)
        }
    }
}
