//! The policy compiler: cluster state in, per-pod allow elements out.
//!
//! For every pod some policy selects, and per direction, the allowed traffic is the union
//! over the selecting policies' rules of `peer addresses x protocols x ports`. That union
//! is written as canonical disjoint boxes ([`crate::boxes`]) keyed by the pod's address,
//! which become the elements of one concatenated interval set per direction:
//! `local pod ip . peer ip range . l4proto range . port range`. The data path then does
//! one lookup per direction, whatever the number of policies or pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use crate::boxes::{canonical, Box3, Span};
use crate::compiled::{AllowElem, Compiled, DirRules, PodRules, Shape};
use crate::model::{Direction, NamedPort, NsSel, ObjKey, Peer, PodInfo, PolicyInfo, PortSel, Rule};
use crate::selector::Labels;

const ALL_ADDRS: Span = (0, u32::MAX as u64);
const ALL_PROTOS: Span = (0, 255);
const ALL_PORTS: Span = (0, 65535);

/// Something the compiler could not express exactly, named by the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `networkpolicy ns/name` or `pod ns/name`.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

fn policy_subject(k: &ObjKey) -> String {
    format!("networkpolicy {k}")
}

/// Work shared by the pods of one compile batch: many pods share the same policies.
#[derive(Default)]
pub struct PeerCache<'a> {
    /// Selector peers, resolved once.
    map: HashMap<(&'a ObjKey, Direction, usize, usize), Vec<&'a PodInfo>>,
    /// Whole results, by what they depend on: the direction, the selecting policies and
    /// the pod's declared ports (ingress named ports resolve against them).
    rules: HashMap<RulesKey<'a>, DirRules>,
}

type RulesKey<'a> = (Direction, Vec<&'a ObjKey>, Vec<NamedPort>);

/// The watched objects, parsed, with the indexes the compiler and the reconcile need.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    namespaces: BTreeMap<String, Labels>,
    pods: BTreeMap<ObjKey, PodInfo>,
    policies: BTreeMap<ObjKey, PolicyInfo>,
    by_ip: BTreeMap<Ipv4Addr, BTreeSet<ObjKey>>,
}

impl Cluster {
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }
    pub fn pod(&self, k: &ObjKey) -> Option<&PodInfo> {
        self.pods.get(k)
    }
    pub fn policies(&self) -> impl Iterator<Item = &PolicyInfo> {
        self.policies.values()
    }
    pub fn policy(&self, k: &ObjKey) -> Option<&PolicyInfo> {
        self.policies.get(k)
    }
    pub fn namespace(&self, name: &str) -> Option<&Labels> {
        self.namespaces.get(name)
    }
    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Labels)> {
        self.namespaces.iter()
    }

    /// Replaces (or adds) a pod; returns the previous version.
    pub fn upsert_pod(&mut self, pod: PodInfo) -> Option<PodInfo> {
        if let Some(ip) = pod.ip {
            self.by_ip.entry(ip).or_default().insert(pod.key.clone());
        }
        let old = self.pods.insert(pod.key.clone(), pod);
        if let Some(o) = &old {
            let new_ip = self.pods[&o.key].ip;
            if o.ip != new_ip {
                self.unindex(o);
            }
        }
        old
    }

    pub fn remove_pod(&mut self, k: &ObjKey) -> Option<PodInfo> {
        let old = self.pods.remove(k)?;
        self.unindex(&old);
        Some(old)
    }

    fn unindex(&mut self, pod: &PodInfo) {
        if let Some(ip) = pod.ip {
            if let Some(set) = self.by_ip.get_mut(&ip) {
                set.remove(&pod.key);
                if set.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    pub fn upsert_policy(&mut self, p: PolicyInfo) -> Option<PolicyInfo> {
        self.policies.insert(p.key.clone(), p)
    }
    pub fn remove_policy(&mut self, k: &ObjKey) -> Option<PolicyInfo> {
        self.policies.remove(k)
    }
    pub fn upsert_namespace(&mut self, name: String, labels: Labels) -> Option<Labels> {
        self.namespaces.insert(name, labels)
    }
    pub fn remove_namespace(&mut self, name: &str) -> Option<Labels> {
        self.namespaces.remove(name)
    }

    /// The gate keys of the namespaces that have at least one policy.
    pub fn policy_namespaces(&self) -> BTreeSet<u32> {
        self.policies
            .keys()
            .map(|k| kinc_types::policy_gate::namespace_key(&k.ns))
            .collect()
    }

    /// Labels of namespace `ns`; a namespace not (yet) seen has only its name label.
    pub fn ns_labels(&self, ns: &str) -> Labels {
        self.namespaces.get(ns).cloned().unwrap_or_else(|| {
            Labels::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())])
        })
    }

    fn range_ns<'a, V>(map: &'a BTreeMap<ObjKey, V>, ns: &str) -> impl Iterator<Item = &'a V> + 'a {
        let ns = ns.to_string();
        map.range(ObjKey::new(ns.clone(), "")..)
            .take_while(move |(k, _)| k.ns == ns)
            .map(|(_, v)| v)
    }

    pub fn pods_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        Self::range_ns(&self.pods, ns)
    }
    pub fn policies_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a PolicyInfo> + 'a {
        Self::range_ns(&self.policies, ns)
    }

    /// The pod that owns `ip` for enforcement: the first by key among live pods claiming it.
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<&PodInfo> {
        let k = self.by_ip.get(&ip)?.iter().next()?;
        self.pods.get(k)
    }

    pub fn selects(&self, pol: &PolicyInfo, pod: &PodInfo) -> bool {
        pol.key.ns == pod.key.ns && pol.pod_selector.matches(&pod.labels)
    }

    /// Pods the policy's `podSelector` selects (with or without an address).
    pub fn selected_pods<'a>(
        &'a self,
        pol: &'a PolicyInfo,
    ) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.pods_in(&pol.key.ns)
            .filter(move |p| pol.pod_selector.matches(&p.labels))
    }

    /// Whether a selector peer of `pol` matches `pod` (given that pod's namespace labels).
    pub fn peer_matches(&self, pol: &PolicyInfo, peer: &Peer, pod: &PodInfo, ns: &Labels) -> bool {
        match peer {
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    NsSel::Same => pod.key.ns == pol.key.ns,
                    NsSel::Matching(sel) => sel.matches(ns),
                };
                ns_ok && pods.matches(&pod.labels)
            }
            Peer::Block(_) | Peer::Nothing => false,
        }
    }

    /// Addressed pods matched by a selector peer.
    fn peer_pods<'a>(&'a self, pol: &'a PolicyInfo, peer: &'a Peer) -> Vec<&'a PodInfo> {
        let mut out = Vec::new();
        match peer {
            Peer::Pods {
                namespaces: NsSel::Same,
                pods,
            } => out.extend(
                self.pods_in(&pol.key.ns)
                    .filter(|p| p.ip.is_some() && pods.matches(&p.labels)),
            ),
            Peer::Pods {
                namespaces: NsSel::Matching(nsel),
                pods,
            } => {
                // Pods are ordered by namespace: judge each namespace once, in one pass.
                let mut current: Option<(&str, bool)> = None;
                for p in self.pods.values() {
                    let ns_ok = match current {
                        Some((ns, ok)) if ns == p.key.ns => ok,
                        _ => {
                            let ok = match self.namespaces.get(&p.key.ns) {
                                Some(l) => nsel.matches(l),
                                // Namespaces known only through their pods: name label only.
                                None => nsel.matches(&self.ns_labels(&p.key.ns)),
                            };
                            current = Some((&p.key.ns, ok));
                            ok
                        }
                    };
                    if ns_ok && p.ip.is_some() && pods.matches(&p.labels) {
                        out.push(p);
                    }
                }
            }
            Peer::Block(_) | Peer::Nothing => {}
        }
        out
    }

    /// The allow rules of one pod: `None` per direction when no policy isolates it.
    pub fn compile_pod(&self, pod: &PodInfo, warnings: &mut Vec<Warning>) -> PodRules {
        self.compile_pod_with(pod, warnings, &mut PeerCache::default())
    }

    /// [`Cluster::compile_pod`] sharing resolved peers with other pods of one batch.
    pub fn compile_pod_with<'a>(
        &'a self,
        pod: &PodInfo,
        warnings: &mut Vec<Warning>,
        cache: &mut PeerCache<'a>,
    ) -> PodRules {
        let mut rules = PodRules::default();
        if pod.ip.is_none() {
            return rules;
        }
        let selecting: Vec<&PolicyInfo> = self
            .policies_in(&pod.key.ns)
            .filter(|pol| pol.pod_selector.matches(&pod.labels))
            .collect();
        for dir in [Direction::Ingress, Direction::Egress] {
            let pols: Vec<&PolicyInfo> = selecting
                .iter()
                .copied()
                .filter(|p| p.rules(dir).is_some())
                .collect();
            if pols.is_empty() {
                continue;
            }
            let key: RulesKey<'a> = (
                dir,
                pols.iter().map(|p| &p.key).collect(),
                pod.ports.clone(),
            );
            let elems = match cache.rules.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let mut acc = Acc::default();
                    let before = warnings.len();
                    for pol in &pols {
                        for (ri, rule) in pol.rules(dir).into_iter().flatten().enumerate() {
                            let at = RuleAt {
                                pol,
                                dir,
                                index: ri,
                            };
                            self.rule_boxes(at, rule, pod, &mut acc, warnings, cache);
                        }
                    }
                    let elems = acc.finish();
                    // Warnings name the pod: such results are not shared.
                    if warnings.len() == before {
                        cache.rules.insert(key, elems.clone());
                    }
                    elems
                }
            };
            match dir {
                Direction::Ingress => rules.ingress = Some(elems),
                Direction::Egress => rules.egress = Some(elems),
            }
        }
        rules
    }

    fn rule_boxes<'a>(
        &'a self,
        at: RuleAt<'a>,
        rule: &'a Rule,
        local: &PodInfo,
        out: &mut Acc,
        warnings: &mut Vec<Warning>,
        cache: &mut PeerCache<'a>,
    ) {
        let (pol, dir) = (at.pol, at.dir);
        // Peer ranges (ipBlocks) and single peers (pods, /32 blocks).
        let mut spans: Vec<Span> = Vec::new();
        let mut peers: Vec<Ipv4Addr> = Vec::new();
        let mut peer_pods: Vec<&PodInfo> = Vec::new();
        // Address spans that are not selector peers, for egress named-port resolution.
        let mut block_spans: Vec<Span> = Vec::new();
        match &rule.peers {
            None => {
                spans.push(ALL_ADDRS);
                block_spans.push(ALL_ADDRS);
            }
            Some(rule_peers) => {
                for (pi, peer) in rule_peers.iter().enumerate() {
                    match peer {
                        Peer::Pods { .. } => {
                            let resolved = cache
                                .map
                                .entry((&pol.key, dir, at.index, pi))
                                .or_insert_with(|| self.peer_pods(pol, peer));
                            for &p in resolved.iter() {
                                peers.push(p.ip.expect("peer_pods has ip"));
                                peer_pods.push(p);
                            }
                        }
                        Peer::Block(b) => {
                            for s in b {
                                if s.0 == s.1 {
                                    peers.push(Ipv4Addr::from(s.0 as u32));
                                } else {
                                    spans.push(*s);
                                }
                            }
                            block_spans.extend_from_slice(b);
                        }
                        Peer::Nothing => {}
                    }
                }
            }
        }
        if spans.is_empty() && peers.is_empty() {
            return;
        }
        let Some(ports) = &rule.ports else {
            out.exact
                .extend(peers.iter().map(|a| AllowElem::exact(*a, None, None)));
            out.boxes
                .extend(spans.iter().map(|s| [*s, ALL_PROTOS, ALL_PORTS]));
            return;
        };
        for port in ports {
            match port {
                PortSel::Range { proto, lo, hi } => {
                    out.ports(&peers, &spans, *proto, *lo, *hi);
                }
                PortSel::Named { proto, name } => {
                    let before = out.len();
                    match dir {
                        Direction::Ingress => {
                            for port in local.named_port(name, *proto) {
                                out.ports(&peers, &spans, *proto, port, port);
                            }
                            if out.len() == before {
                                warnings.push(Warning {
                                    subject: policy_subject(&pol.key),
                                    message: format!(
                                        "named port {name:?} ({}) is not declared by selected pod {}: nothing is allowed by that port entry",
                                        proto_name(*proto),
                                        local.key
                                    ),
                                });
                            }
                        }
                        Direction::Egress => {
                            // Upstream resolves egress named ports against the destination pods.
                            let in_blocks = self.pods.values().filter(|d| {
                                d.ip.is_some_and(|ip| {
                                    let ip = u64::from(u32::from(ip));
                                    block_spans.iter().any(|s| s.0 <= ip && ip <= s.1)
                                })
                            });
                            for dst in peer_pods.iter().copied().chain(in_blocks) {
                                let ip = dst.ip.expect("filtered");
                                for port in dst.named_port(name, *proto) {
                                    out.exact
                                        .push(AllowElem::exact(ip, Some(*proto), Some(port)));
                                }
                            }
                            if out.len() == before {
                                warnings.push(Warning {
                                    subject: policy_subject(&pol.key),
                                    message: format!(
                                        "named port {name:?} ({}) is declared by no destination pod of an egress rule: nothing is allowed by that port entry",
                                        proto_name(*proto)
                                    ),
                                });
                            }
                        }
                    }
                }
                PortSel::Nothing => {}
            }
        }
    }

    /// Compiles every pod. Two live pods claiming one address: the first by key wins.
    pub fn compile(&self) -> (Compiled, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut out = Compiled::default();
        let mut cache = PeerCache::default();
        for (ip, keys) in &self.by_ip {
            if keys.len() > 1 {
                warnings.push(Warning {
                    subject: format!("address {ip}"),
                    message: format!(
                        "claimed by several pods ({}): enforcing for the first",
                        keys.iter()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            if let Some(pod) = self.owner_of(*ip) {
                let rules = self.compile_pod_with(pod, &mut warnings, &mut cache);
                out.set(*ip, rules, &mut crate::compiled::Diff::default());
            }
        }
        out.namespaces = self.policy_namespaces();
        for pol in self.policies.values() {
            warnings.extend(pol.warnings.iter().map(|m| Warning {
                subject: policy_subject(&pol.key),
                message: m.clone(),
            }));
        }
        warnings.sort();
        warnings.dedup();
        (out, warnings)
    }
}

/// Port ranges up to this many ports are written as exact elements for single peers:
/// hash-set updates cost O(1), interval-set updates O(set size).
const EXPAND_PORTS: u16 = 16;

/// One pod's allowed region in one direction while it is being compiled.
#[derive(Default)]
struct Acc {
    exact: Vec<AllowElem>,
    boxes: Vec<Box3>,
}

impl Acc {
    fn len(&self) -> usize {
        self.exact.len() + self.boxes.len()
    }

    /// `proto` ports `lo..=hi` from single `peers` and from `spans`.
    fn ports(&mut self, peers: &[Ipv4Addr], spans: &[Span], proto: u8, lo: u16, hi: u16) {
        let p = Some(proto);
        if lo == 0 && hi == u16::MAX {
            self.exact
                .extend(peers.iter().map(|a| AllowElem::exact(*a, p, None)));
        } else if hi - lo < EXPAND_PORTS {
            for port in lo..=hi {
                self.exact
                    .extend(peers.iter().map(|a| AllowElem::exact(*a, p, Some(port))));
            }
        } else {
            self.boxes.extend(peers.iter().map(|a| {
                let a = u64::from(u32::from(*a));
                [
                    (a, a),
                    (u64::from(proto), u64::from(proto)),
                    (u64::from(lo), u64::from(hi)),
                ]
            }));
        }
        let (proto, lo, hi) = (u64::from(proto), u64::from(lo), u64::from(hi));
        self.boxes
            .extend(spans.iter().map(|s| [*s, (proto, proto), (lo, hi)]));
    }

    /// Exact elements, pruned, and the ranges as canonical disjoint boxes (the
    /// interval set refuses overlaps); a piece that came out exact moves to the exact ones.
    fn finish(mut self) -> DirRules {
        // Policies often repeat each other; identical boxes add nothing.
        self.boxes.sort_unstable();
        self.boxes.dedup();
        let mut out = DirRules::default();
        for e in canonical(&self.boxes).into_iter().map(AllowElem::from_box) {
            if e.shape() == Shape::Range {
                out.ranges.insert(e);
            } else {
                self.exact.push(e);
            }
        }
        out.exact = self.exact.into_iter().collect();
        out.prune();
        out
    }
}

/// Where a rule sits: its policy, direction and index (the peer cache's key).
#[derive(Clone, Copy)]
struct RuleAt<'a> {
    pol: &'a PolicyInfo,
    dir: Direction,
    index: usize,
}

pub fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => format!("protocol {n}"),
    }
}
