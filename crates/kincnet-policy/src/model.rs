//! Typed views of the three watched kinds, reduced to what enforcement needs.
//!
//! Parsing happens once per object change; the compiler then only matches parsed
//! selectors and walks parsed rules. Anything a policy says that cannot be enforced
//! exactly becomes a rule that matches less (never more) plus a warning naming the policy.

use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::boxes::Span;
use crate::selector::{Labels, Selector};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Maps a Kubernetes protocol name (default TCP) to its IP protocol number.
pub fn proto_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(PROTO_TCP),
        "UDP" => Some(PROTO_UDP),
        "SCTP" => Some(PROTO_SCTP),
        _ => None,
    }
}

/// `namespace/name`, ordered by namespace first so one namespace is a contiguous range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub ns: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(ns: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            ns: ns.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub proto: u8,
    pub port: u16,
}

/// A pod as policies see it. `ip` is `None` for pods that take no part in enforcement:
/// not yet scheduled or addressed, finished (Succeeded/Failed), or on the host network
/// (upstream leaves policies for host-network pods undefined; the node's traffic is open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: ObjKey,
    pub labels: Labels,
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<NamedPort>,
}

impl PodInfo {
    pub fn from_k8s(pod: &Pod) -> Option<Self> {
        let key = ObjKey::new(pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let ip = if host_network || finished {
            None
        } else {
            status.and_then(|s| {
                s.pod_ips
                    .iter()
                    .flatten()
                    .map(|p| p.ip.as_str())
                    .chain(s.pod_ip.as_deref())
                    .find_map(|a| a.parse::<Ipv4Addr>().ok())
            })
        };
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            // Sidecars (init containers that keep running) serve named ports too.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    let (Some(name), Some(proto), Ok(port)) = (
                        p.name.as_ref(),
                        proto_number(p.protocol.as_deref()),
                        u16::try_from(p.container_port),
                    ) else {
                        continue;
                    };
                    ports.push(NamedPort {
                        name: name.clone(),
                        proto,
                        port,
                    });
                }
            }
        }
        Some(PodInfo {
            key,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            ports,
        })
    }

    /// Ports this pod's containers declare under `name` for `proto`.
    pub fn named_port<'a>(&'a self, name: &'a str, proto: u8) -> impl Iterator<Item = u16> + 'a {
        self.ports
            .iter()
            .filter(move |p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

pub fn namespace_labels(ns: &Namespace) -> Option<(String, Labels)> {
    let name = ns.metadata.name.clone()?;
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    // The API server sets this label itself; add it for objects that lack it (tests, old data).
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| name.clone());
    Some((name, labels))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsSel {
    /// The policy's own namespace (a peer with only `podSelector`).
    Same,
    Matching(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Pods {
        namespaces: NsSel,
        pods: Selector,
    },
    /// Address spans of `cidr` minus `except`.
    Block(Vec<Span>),
    /// A peer that cannot be expressed: matches nothing.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSel {
    /// `lo..=hi` of `proto`; a protocol with no port is `0..=65535`.
    Range { proto: u8, lo: u16, hi: u16 },
    /// Resolved per pod: for ingress against the selected pod, for egress against the peer.
    Named { proto: u8, name: String },
    /// An entry that cannot be expressed: matches nothing.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: every peer (the field is missing or empty).
    pub peers: Option<Vec<Peer>>,
    /// `None`: every protocol and port.
    pub ports: Option<Vec<PortSel>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub key: ObjKey,
    pub pod_selector: Selector,
    /// `None`: this policy does not isolate in that direction; `Some(empty)`: deny all.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    /// What could not be expressed exactly, for the log and `--status`.
    pub warnings: Vec<String>,
}

impl PolicyInfo {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    pub fn from_k8s(np: &NetworkPolicy) -> Option<Self> {
        let key = ObjKey::new(np.metadata.namespace.clone()?, np.metadata.name.clone()?);
        let mut warnings = Vec::new();
        let spec = np.spec.clone().unwrap_or_default();
        // podSelector is optional since 1.31 and then means every pod of the namespace.
        let pod_selector = spec
            .pod_selector
            .as_ref()
            .map(Selector::parse)
            .unwrap_or_else(Selector::everything);
        let (mut want_in, mut want_eg) = (true, false);
        match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => {
                want_in = false;
                for t in types {
                    match t.as_str() {
                        "Ingress" => want_in = true,
                        "Egress" => want_eg = true,
                        other => warnings.push(format!("unknown policyType {other:?} ignored")),
                    }
                }
            }
            // The API server's default: Ingress always, Egress when egress rules exist.
            _ => want_eg = spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        }
        let ingress = want_in.then(|| {
            let rules = spec.ingress.unwrap_or_default();
            parse_rules(rules.into_iter().map(|r| (r.from, r.ports)), &mut warnings)
        });
        let egress = want_eg.then(|| {
            let rules = spec.egress.unwrap_or_default();
            parse_rules(rules.into_iter().map(|r| (r.to, r.ports)), &mut warnings)
        });
        if let Some(why) = pod_selector.invalid() {
            warnings.push(format!(
                "podSelector is invalid ({why}): the policy selects no pod"
            ));
        }
        Some(PolicyInfo {
            key,
            pod_selector,
            ingress,
            egress,
            warnings,
        })
    }
}

type RawRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

fn parse_rules(rules: impl Iterator<Item = RawRule>, warnings: &mut Vec<String>) -> Vec<Rule> {
    rules
        .map(|(peers, ports)| Rule {
            // An empty list means the same as a missing one: everything.
            peers: peers
                .filter(|p| !p.is_empty())
                .map(|ps| ps.iter().map(|p| parse_peer(p, warnings)).collect()),
            ports: ports
                .filter(|p| !p.is_empty())
                .map(|ps| ps.iter().map(|p| parse_port(p, warnings)).collect()),
        })
        .collect()
}

fn parse_peer(p: &NetworkPolicyPeer, warnings: &mut Vec<String>) -> Peer {
    let selector = |s: &_, what: &str, warnings: &mut Vec<String>| {
        let sel = Selector::parse(s);
        if let Some(why) = sel.invalid() {
            warnings.push(format!("{what} is invalid ({why}): it matches nothing"));
        }
        sel
    };
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(block), None, None) => parse_block(block, warnings),
        (None, ns, pods) if ns.is_some() || pods.is_some() => Peer::Pods {
            namespaces: match ns {
                Some(s) => NsSel::Matching(selector(s, "namespaceSelector", warnings)),
                None => NsSel::Same,
            },
            pods: match pods {
                Some(s) => selector(s, "podSelector", warnings),
                None => Selector::everything(),
            },
        },
        _ => {
            warnings.push(
                "a peer must set exactly one of ipBlock or pod/namespace selectors: it matches nothing"
                    .into(),
            );
            Peer::Nothing
        }
    }
}

fn parse_cidr(s: &str) -> Option<Span> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let host_bits = 32 - len;
    let mask: u64 = (1u64 << host_bits) - 1;
    let lo = u64::from(u32::from(addr)) & !mask;
    Some((lo, lo | mask))
}

fn parse_block(b: &IPBlock, warnings: &mut Vec<String>) -> Peer {
    if b.cidr.contains(':') {
        // IPv6 blocks cannot match the IPv4 pod network; they allow nothing here.
        return Peer::Nothing;
    }
    let Some(whole) = parse_cidr(&b.cidr) else {
        warnings.push(format!(
            "ipBlock.cidr {:?} is not an IPv4 CIDR: it matches nothing",
            b.cidr
        ));
        return Peer::Nothing;
    };
    let mut spans = vec![whole];
    for ex in b.except.iter().flatten() {
        if ex.contains(':') {
            continue;
        }
        let Some((elo, ehi)) = parse_cidr(ex) else {
            // Excepting less than asked would open traffic: drop the whole block instead.
            warnings.push(format!(
                "ipBlock.except {ex:?} is not an IPv4 CIDR: the block matches nothing"
            ));
            return Peer::Nothing;
        };
        spans = spans
            .into_iter()
            .flat_map(|(lo, hi)| {
                let mut out = Vec::new();
                if ehi < lo || elo > hi {
                    out.push((lo, hi));
                } else {
                    if elo > lo {
                        out.push((lo, elo - 1));
                    }
                    if ehi < hi {
                        out.push((ehi + 1, hi));
                    }
                }
                out
            })
            .collect();
    }
    Peer::Block(spans)
}

fn parse_port(p: &NetworkPolicyPort, warnings: &mut Vec<String>) -> PortSel {
    let Some(proto) = proto_number(p.protocol.as_deref()) else {
        warnings.push(format!(
            "unknown protocol {:?}: this port entry matches nothing",
            p.protocol.as_deref().unwrap_or_default()
        ));
        return PortSel::Nothing;
    };
    match (&p.port, p.end_port) {
        (None, None) => PortSel::Range {
            proto,
            lo: 0,
            hi: u16::MAX,
        },
        (Some(IntOrString::Int(port)), end) => {
            let end = end.unwrap_or(*port);
            match (u16::try_from(*port), u16::try_from(end)) {
                (Ok(lo), Ok(hi)) if lo >= 1 && lo <= hi => PortSel::Range { proto, lo, hi },
                _ => {
                    warnings.push(format!(
                        "port {port} endPort {end} is not a valid range: this port entry matches nothing"
                    ));
                    PortSel::Nothing
                }
            }
        }
        (Some(IntOrString::String(name)), None) => PortSel::Named {
            proto,
            name: name.clone(),
        },
        (Some(IntOrString::String(name)), Some(_)) => {
            warnings.push(format!(
                "endPort with the named port {name:?} is not allowed: this port entry matches nothing"
            ));
            PortSel::Nothing
        }
        (None, Some(_)) => {
            warnings.push("endPort without port: this port entry matches nothing".into());
            PortSel::Nothing
        }
    }
}

/// Fail closed: every malformed peer or port entry becomes one that matches nothing, with
/// a warning; never one that matches more (an entry skipped, a bound dropped).
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::policy;

    /// The single ingress rule of a policy with `rule`, and the warnings.
    fn rule(rule: serde_json::Value) -> (Rule, Vec<String>) {
        let p = policy(json!({
            "metadata": { "namespace": "x", "name": "p" },
            "spec": { "podSelector": {}, "ingress": [rule] }
        }));
        let mut info = PolicyInfo::from_k8s(&p).unwrap();
        let mut rules = info.ingress.take().unwrap();
        assert_eq!(rules.len(), 1);
        (rules.remove(0), info.warnings)
    }

    fn peer(p: serde_json::Value) -> (Peer, Vec<String>) {
        let (r, w) = rule(json!({ "from": [p] }));
        let mut peers = r.peers.unwrap();
        assert_eq!(peers.len(), 1);
        (peers.remove(0), w)
    }

    fn port(p: serde_json::Value) -> (PortSel, Vec<String>) {
        let (r, w) = rule(json!({ "ports": [p] }));
        let mut ports = r.ports.unwrap();
        assert_eq!(ports.len(), 1);
        (ports.remove(0), w)
    }

    fn span(lo: [u8; 4], hi: [u8; 4]) -> Span {
        (
            u64::from(u32::from(Ipv4Addr::from(lo))),
            u64::from(u32::from(Ipv4Addr::from(hi))),
        )
    }

    #[test]
    fn well_formed_blocks_are_the_cidr_minus_its_excepts() {
        let (p, w) = peer(json!({ "ipBlock": { "cidr": "10.1.0.0/16",
                                               "except": ["10.1.2.0/24", "fd00::/8"] } }));
        assert_eq!(
            p,
            Peer::Block(vec![
                span([10, 1, 0, 0], [10, 1, 1, 255]),
                span([10, 1, 3, 0], [10, 1, 255, 255]),
            ])
        );
        assert!(w.is_empty(), "{w:?}");
        // Host bits are ignored, as the API server's own validation would not be here.
        let (p, _) = peer(json!({ "ipBlock": { "cidr": "10.1.2.3/31" } }));
        assert_eq!(p, Peer::Block(vec![span([10, 1, 2, 2], [10, 1, 2, 3])]));
    }

    #[test]
    fn a_malformed_except_closes_the_whole_block() {
        for except in [
            json!(["bogus"]),
            json!(["10.1.2.0"]),
            json!(["10.1.2.0/33"]),
            json!(["10.1.2.0/-1"]),
            json!(["10.1.2/24"]),
            json!([""]),
            // A bad entry after a good one, and before one.
            json!(["10.1.2.0/24", "10.1.300.0/24"]),
            json!(["10.1.2.0/24x", "10.1.3.0/24"]),
        ] {
            let (p, w) = peer(json!({ "ipBlock": { "cidr": "10.1.0.0/16", "except": except } }));
            assert_eq!(p, Peer::Nothing, "except {except}");
            assert!(
                w.len() == 1 && w[0].contains("ipBlock.except") && w[0].contains("matches nothing"),
                "except {except}: {w:?}"
            );
        }
    }

    #[test]
    fn a_malformed_cidr_matches_nothing() {
        for cidr in [
            "bogus",
            "",
            "10.1.0.0",
            "10.1.0.0/",
            "10.1.0.0/33",
            "10.1.0.0/16/8",
            "10.1.0/16",
            "256.1.0.0/16",
            "/16",
        ] {
            let (p, w) = peer(json!({ "ipBlock": { "cidr": cidr, "except": ["10.1.2.0/24"] } }));
            assert_eq!(p, Peer::Nothing, "cidr {cidr:?}");
            assert!(
                w.len() == 1 && w[0].contains("ipBlock.cidr"),
                "cidr {cidr:?}: {w:?}"
            );
        }
        // IPv6 cannot match the IPv4 pod network: nothing, and nothing to warn about.
        let (p, w) = peer(json!({ "ipBlock": { "cidr": "fd00::/8" } }));
        assert_eq!((p, w), (Peer::Nothing, vec![]));
    }

    #[test]
    fn a_peer_that_mixes_or_lacks_kinds_matches_nothing() {
        for p in [
            json!({}),
            json!({ "ipBlock": { "cidr": "10.1.0.0/16" }, "podSelector": {} }),
            json!({ "ipBlock": { "cidr": "10.1.0.0/16" }, "namespaceSelector": {} }),
            json!({ "ipBlock": { "cidr": "10.1.0.0/16" }, "podSelector": {}, "namespaceSelector": {} }),
        ] {
            let (got, w) = peer(p.clone());
            assert_eq!(got, Peer::Nothing, "{p}");
            assert!(w.len() == 1 && w[0].contains("exactly one"), "{p}: {w:?}");
        }
    }

    #[test]
    fn a_malformed_selector_matches_nothing() {
        let bad =
            json!({ "matchExpressions": [{ "key": "pod", "operator": "Bogus", "values": ["a"] }] });
        for (p, what) in [
            (json!({ "podSelector": bad }), "podSelector"),
            (json!({ "namespaceSelector": bad }), "namespaceSelector"),
        ] {
            let (got, w) = peer(p);
            let Peer::Pods { namespaces, pods } = got else {
                panic!("{what}: {got:?}");
            };
            let sel = match namespaces {
                NsSel::Matching(s) if what == "namespaceSelector" => s,
                _ => pods,
            };
            assert!(sel.invalid().is_some(), "{what}");
            assert!(
                !sel.matches(&[("pod".to_string(), "a".to_string())].into()),
                "{what}"
            );
            assert!(w.len() == 1 && w[0].starts_with(what), "{what}: {w:?}");
        }
    }

    #[test]
    fn well_formed_ports_are_exact_ranges() {
        let tcp = PROTO_TCP;
        for (p, want) in [
            (
                json!({ "port": 80 }),
                PortSel::Range {
                    proto: tcp,
                    lo: 80,
                    hi: 80,
                },
            ),
            (
                json!({ "port": 1, "endPort": 65535, "protocol": "UDP" }),
                PortSel::Range {
                    proto: PROTO_UDP,
                    lo: 1,
                    hi: 65535,
                },
            ),
            (
                json!({ "port": 80, "endPort": 80 }),
                PortSel::Range {
                    proto: tcp,
                    lo: 80,
                    hi: 80,
                },
            ),
            (
                json!({ "protocol": "SCTP" }),
                PortSel::Range {
                    proto: PROTO_SCTP,
                    lo: 0,
                    hi: 65535,
                },
            ),
            (
                json!({ "port": "http" }),
                PortSel::Named {
                    proto: tcp,
                    name: "http".into(),
                },
            ),
        ] {
            let (got, w) = port(p.clone());
            assert_eq!(got, want, "{p}");
            assert!(w.is_empty(), "{p}: {w:?}");
        }
    }

    #[test]
    fn a_malformed_port_entry_matches_nothing() {
        for p in [
            json!({ "port": 80, "protocol": "ICMP" }),
            json!({ "port": 80, "protocol": "tcp" }),
            json!({ "protocol": "" }),
            json!({ "port": 0 }),
            json!({ "port": -1 }),
            json!({ "port": 65536 }),
            json!({ "port": 0, "endPort": 80 }),
            json!({ "port": 90, "endPort": 80 }),
            json!({ "port": 80, "endPort": 65536 }),
            json!({ "port": 80, "endPort": -1 }),
            json!({ "endPort": 80 }),
            json!({ "port": "http", "endPort": 90 }),
        ] {
            let (got, w) = port(p.clone());
            assert_eq!(got, PortSel::Nothing, "{p}");
            assert!(
                w.len() == 1 && w[0].contains("matches nothing"),
                "{p}: {w:?}"
            );
        }
    }
}
