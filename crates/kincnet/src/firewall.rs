//! The firewall kincnet needs (masquerade of the pod subnet, DNAT of port mappings),
//! behind a trait so the commands do not depend on how it is programmed.
//! The implementation is `kinc-nft`: nf_tables over netlink, no `nft` process.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::{NetConf, PortMapping, Proto};
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
    /// kincnet-policy's namespace keys (`None`: no controller in this netns).
    fn policy_namespaces(&self) -> Result<Option<BTreeSet<u32>>, FwError>;
    /// Drops every forwarded packet from or to `ip` until unpended.
    fn pend(&self, ip: Ipv4Addr) -> Result<(), FwError>;
    /// Undoes `pend`; fine when `ip` is not pending.
    fn unpend(&self, ip: Ipv4Addr) -> Result<(), FwError>;
    /// Whether `ip` is pending.
    fn is_pending(&self, ip: Ipv4Addr) -> Result<bool, FwError>;
    /// Removes every kincnet-policy element that names `ip` (when the controller did
    /// not confirm a release); returns how many.
    fn purge_policy(&self, ip: Ipv4Addr) -> Result<usize, FwError>;
}

/// The nftables table (family ip) kincnet owns; networks share it, each with its
/// own masquerade rules keyed by bridge.
pub const TABLE: &str = "kincnet";

/// kinc-nft's firewall for this network.
pub fn for_network(conf: &NetConf) -> Nft {
    Nft(kinc_nft::NetworkFirewall {
        table: TABLE.to_string(),
        bridge: conf.bridge.clone(),
        subnet: conf.ipam.subnet,
        masquerade: conf.ip_masq,
    })
}

pub struct Nft(pub kinc_nft::NetworkFirewall);

fn to_nft(m: &PortMapping) -> kinc_nft::PortMapping {
    kinc_nft::PortMapping {
        host_ip: m.host_ip,
        host_port: m.host_port,
        container_port: m.container_port,
        proto: match m.protocol {
            Proto::Tcp => kinc_nft::Proto::Tcp,
            Proto::Udp => kinc_nft::Proto::Udp,
        },
    }
}

fn from_nft(m: kinc_nft::PortMapping) -> PortMapping {
    PortMapping {
        host_ip: m.host_ip,
        host_port: m.host_port,
        container_port: m.container_port,
        protocol: match m.proto {
            kinc_nft::Proto::Tcp => Proto::Tcp,
            kinc_nft::Proto::Udp => Proto::Udp,
        },
    }
}

impl Nft {
    fn err(&self, e: kinc_nft::FirewallError) -> FwError {
        FwError {
            table: self.0.table.clone(),
            transient: e.is_transient(),
            msg: e.to_string(),
        }
    }
}

impl Firewall for Nft {
    fn ensure(&self) -> Result<(), FwError> {
        self.0.ensure().map_err(|e| self.err(e))
    }
    fn add_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FwError> {
        let m: Vec<_> = mappings.iter().map(to_nft).collect();
        self.0.add_pod(ip, &m).map_err(|e| self.err(e))
    }
    fn remove_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FwError> {
        let m: Vec<_> = mappings.iter().map(to_nft).collect();
        self.0.remove_pod(ip, &m).map_err(|e| self.err(e))
    }
    fn pod_mappings(&self, ip: Ipv4Addr) -> Result<Vec<PortMapping>, FwError> {
        let m = self.0.pod_mappings(ip).map_err(|e| self.err(e))?;
        Ok(m.into_iter().map(from_nft).collect())
    }
    fn retain_pods(&self, keep: &[Ipv4Addr]) -> Result<usize, FwError> {
        self.0.retain_pods(keep).map_err(|e| self.err(e))
    }
    fn policy_namespaces(&self) -> Result<Option<BTreeSet<u32>>, FwError> {
        self.0.policy_namespaces().map_err(|e| self.err(e))
    }
    fn pend(&self, ip: Ipv4Addr) -> Result<(), FwError> {
        self.0.pend_pod(ip).map_err(|e| self.err(e))
    }
    fn unpend(&self, ip: Ipv4Addr) -> Result<(), FwError> {
        self.0.unpend_pod(ip).map_err(|e| self.err(e))
    }
    fn is_pending(&self, ip: Ipv4Addr) -> Result<bool, FwError> {
        self.0.is_pending(ip).map_err(|e| self.err(e))
    }
    fn purge_policy(&self, ip: Ipv4Addr) -> Result<usize, FwError> {
        self.0.purge_policy(ip).map_err(|e| self.err(e))
    }
}
