//! API ports and pod/service CIDRs for clusters that run side by side.
//!
//! The planner is pure: it gets what is taken (recorded allocations, the host's routes,
//! a port probe) and returns the first free API port and the first free CIDR block. The
//! CIDRs come from a fixed pool split into equal blocks, never from the port's digits
//! (that older scheme collided past port 6499). [`crate::state`] makes it atomic.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// Where cluster CIDRs come from: 10.64.0.0/10 (10.64.0.0 to 10.127.255.255).
pub const POOL: &str = "10.64.0.0/10";
/// Each cluster gets one /19 block of the pool: pod /20 then service /20, so the
/// default pool holds 512 clusters.
pub const BLOCK_PREFIX: u8 = 19;
/// The first cluster's API port; later ones take the next free port.
pub const FIRST_API_PORT: u16 = 6443;
/// Networks Podman itself uses by default (`podman` network); never handed out even
/// when no route shows them yet.
pub const PODMAN_DEFAULTS: &[&str] = &["10.88.0.0/16"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub api_port: u16,
    pub pod_subnet: Ipv4Network,
    pub service_subnet: Ipv4Network,
}

impl Allocation {
    pub fn overlaps(&self, net: Ipv4Network) -> bool {
        self.pod_subnet.overlaps(net) || self.service_subnet.overlaps(net)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("API port {port} is already allocated to cluster {cluster:?}")]
    PortAllocated { port: u16, cluster: String },
    #[error(
        "API port {port} on 127.0.0.1 is in use by another program; pick another with --api-port"
    )]
    PortInUse { port: u16 },
    #[error("no free API port between {first} and 65535")]
    NoFreePort { first: u16 },
    #[error(
        "no free CIDR block left in {pool} ({taken} clusters allocated, {routed} blocks overlap host routes); delete a cluster first"
    )]
    Exhausted {
        pool: Ipv4Network,
        taken: usize,
        routed: usize,
    },
    #[error("CIDR pool {pool} cannot be split into /{block} blocks")]
    BadPool { pool: Ipv4Network, block: u8 },
}

/// Plans allocations over a pool, avoiding the given networks (host routes, Podman's).
#[derive(Debug, Clone)]
pub struct Planner {
    pool: Ipv4Network,
    block_prefix: u8,
    first_port: u16,
    avoid: Vec<Ipv4Network>,
}

impl Planner {
    /// The default pool, avoiding `host_routes` and Podman's default networks.
    pub fn new(host_routes: &[Ipv4Network]) -> Self {
        let mut avoid: Vec<Ipv4Network> = host_routes.to_vec();
        avoid.extend(
            PODMAN_DEFAULTS
                .iter()
                .map(|n| n.parse::<Ipv4Network>().unwrap()),
        );
        Self {
            pool: POOL.parse().unwrap(),
            block_prefix: BLOCK_PREFIX,
            first_port: FIRST_API_PORT,
            avoid,
        }
    }

    /// A planner over another pool (tests use small ones to reach exhaustion).
    pub fn with_pool(
        pool: Ipv4Network,
        block_prefix: u8,
        avoid: &[Ipv4Network],
    ) -> Result<Self, AllocError> {
        if block_prefix < pool.prefix() || block_prefix > 30 {
            return Err(AllocError::BadPool {
                pool,
                block: block_prefix,
            });
        }
        Ok(Self {
            pool,
            block_prefix,
            first_port: FIRST_API_PORT,
            avoid: avoid.to_vec(),
        })
    }

    /// How many blocks the pool has in total.
    pub fn capacity(&self) -> usize {
        1usize << (self.block_prefix - self.pool.prefix())
    }

    /// Block `i` of the pool as (pod subnet, service subnet): its two halves.
    pub fn block(&self, i: usize) -> (Ipv4Network, Ipv4Network) {
        let size = 1u32 << (32 - self.block_prefix);
        let base = u32::from(self.pool.network()) + (i as u32) * size;
        let half = self.block_prefix + 1;
        let pod = Ipv4Network::new(Ipv4Addr::from(base), half).unwrap();
        let svc = Ipv4Network::new(Ipv4Addr::from(base + size / 2), half).unwrap();
        (pod, svc)
    }

    /// Picks a port and a CIDR block not in `taken` (name, allocation) and not avoided.
    /// `port_free` probes whether nothing else on the host listens on 127.0.0.1:port.
    pub fn plan(
        &self,
        taken: &[(String, Allocation)],
        requested_port: Option<u16>,
        port_free: &dyn Fn(u16) -> bool,
    ) -> Result<Allocation, AllocError> {
        let api_port = self.pick_port(taken, requested_port, port_free)?;
        let mut routed = 0;
        for i in 0..self.capacity() {
            let (pod, svc) = self.block(i);
            let clash = |n: Ipv4Network| n.overlaps(pod) || n.overlaps(svc);
            if self.avoid.iter().any(|n| clash(*n)) {
                routed += 1;
                continue;
            }
            if taken
                .iter()
                .any(|(_, a)| a.overlaps(pod) || a.overlaps(svc))
            {
                continue;
            }
            return Ok(Allocation {
                api_port,
                pod_subnet: pod,
                service_subnet: svc,
            });
        }
        Err(AllocError::Exhausted {
            pool: self.pool,
            taken: taken.len(),
            routed,
        })
    }

    fn pick_port(
        &self,
        taken: &[(String, Allocation)],
        requested: Option<u16>,
        port_free: &dyn Fn(u16) -> bool,
    ) -> Result<u16, AllocError> {
        let holder = |p: u16| taken.iter().find(|(_, a)| a.api_port == p);
        if let Some(port) = requested {
            if let Some((cluster, _)) = holder(port) {
                return Err(AllocError::PortAllocated {
                    port,
                    cluster: cluster.clone(),
                });
            }
            if !port_free(port) {
                return Err(AllocError::PortInUse { port });
            }
            return Ok(port);
        }
        (self.first_port..=u16::MAX)
            .find(|&p| holder(p).is_none() && port_free(p))
            .ok_or(AllocError::NoFreePort {
                first: self.first_port,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn all_free(_: u16) -> bool {
        true
    }

    fn fill(p: &Planner, n: usize) -> Vec<(String, Allocation)> {
        let mut taken = Vec::new();
        for i in 0..n {
            let a = p.plan(&taken, None, &all_free).unwrap();
            taken.push((format!("c{i}"), a));
        }
        taken
    }

    #[test]
    fn first_cluster_gets_6443_and_the_first_block() {
        let a = Planner::new(&[]).plan(&[], None, &all_free).unwrap();
        assert_eq!(a.api_port, 6443);
        assert_eq!(a.pod_subnet, net("10.64.0.0/20"));
        assert_eq!(a.service_subnet, net("10.64.16.0/20"));
    }

    #[test]
    fn two_hundred_fifty_clusters_are_pairwise_disjoint() {
        let p = Planner::new(&[]);
        let taken = fill(&p, 250);
        let mut nets = Vec::new();
        let mut ports = std::collections::BTreeSet::new();
        for (_, a) in &taken {
            assert!(!a.pod_subnet.overlaps(a.service_subnet));
            nets.push(a.pod_subnet);
            nets.push(a.service_subnet);
            assert!(ports.insert(a.api_port));
        }
        for (i, x) in nets.iter().enumerate() {
            for y in &nets[i + 1..] {
                assert!(!x.overlaps(*y), "{x} overlaps {y}");
            }
        }
        // Ports past 6499 too, and CIDRs have nothing to do with them.
        assert_eq!(taken[249].1.api_port, 6443 + 249);
        assert!(p.capacity() >= 250);
    }

    #[test]
    fn never_overlaps_host_routes_or_podman_default() {
        let routes = [net("10.64.0.0/16"), net("10.70.8.0/24"), net("10.0.2.0/24")];
        let p = Planner::new(&routes);
        for (_, a) in fill(&p, 250) {
            for r in routes.iter().chain([&net("10.88.0.0/16")]) {
                assert!(!a.overlaps(*r), "{a:?} overlaps {r}");
            }
        }
    }

    #[test]
    fn exhaustion_is_an_error_and_delete_frees_the_block() {
        let p = Planner::with_pool(net("10.200.0.0/22"), 24, &[net("10.200.1.0/24")]).unwrap();
        assert_eq!(p.capacity(), 4);
        let mut taken = fill(&p, 3);
        let e = p.plan(&taken, None, &all_free).unwrap_err();
        assert_eq!(
            e,
            AllocError::Exhausted {
                pool: net("10.200.0.0/22"),
                taken: 3,
                routed: 1
            }
        );
        // Deleting the middle cluster frees exactly its block and its port.
        let gone = taken.remove(1);
        let again = p.plan(&taken, None, &all_free).unwrap();
        assert_eq!(again, gone.1);
    }

    #[test]
    fn ports_skip_busy_and_allocated_and_honour_requests() {
        let p = Planner::new(&[]);
        let busy = |port: u16| port != 6443;
        let a = p.plan(&[], None, &busy).unwrap();
        assert_eq!(a.api_port, 6444);
        let taken = vec![("one".to_string(), a)];
        let b = p.plan(&taken, None, &all_free).unwrap();
        assert_eq!(b.api_port, 6443);
        assert_eq!(
            p.plan(&taken, Some(6444), &all_free).unwrap_err(),
            AllocError::PortAllocated {
                port: 6444,
                cluster: "one".into()
            }
        );
        assert_eq!(
            p.plan(&taken, Some(7000), &|_| false).unwrap_err(),
            AllocError::PortInUse { port: 7000 }
        );
        assert_eq!(
            p.plan(&taken, Some(7000), &all_free).unwrap().api_port,
            7000
        );
    }

    #[test]
    fn bad_pool_is_rejected() {
        assert!(Planner::with_pool(net("10.0.0.0/24"), 20, &[]).is_err());
    }
}
