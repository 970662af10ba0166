//! The reconcile: watch events in, one element diff per event out.
//!
//! [`Reconciler`] keeps its own parsed copy of the cluster (so it knows what an event
//! changed) and the model it believes is programmed. An event recomputes only the pods
//! it can affect: the pod itself, and the pods selected by every policy whose peers
//! match the pod (or the namespace) before or after the change. A full resync rebuilds
//! everything from the reflector stores and diffs it against the programmed model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::compile::{Cluster, PeerCache, Warning};
use crate::compiled::{diff, Compiled, Diff, PodRules};
use crate::model::{namespace_labels, Direction, Peer, PodInfo, PolicyInfo, PortSel};
use crate::selector::Labels;

/// One object change, as the watchers report it.
#[derive(Debug, Clone)]
pub enum Change<K> {
    Apply(K),
    Delete(K),
}

/// Counters for `--status` and the log.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub events: u64,
    pub full_resyncs: u64,
    pub last_change_elements: usize,
}

#[derive(Debug, Default)]
pub struct Reconciler {
    cluster: Cluster,
    programmed: Compiled,
    /// Warnings of the last compile of each address, so each is logged once.
    pod_warnings: BTreeMap<Ipv4Addr, Vec<Warning>>,
    pub stats: Stats,
    pub last_sync: Option<SystemTime>,
}

impl Reconciler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// What the data path should hold now.
    pub fn programmed(&self) -> &Compiled {
        &self.programmed
    }

    /// Every current warning: the policies' own and the last compile's.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut w: Vec<Warning> = self.pod_warnings.values().flatten().cloned().collect();
        for p in self.cluster.policies() {
            w.extend(p.warnings.iter().map(|m| Warning {
                subject: format!("networkpolicy {}", p.key),
                message: m.clone(),
            }));
        }
        w.sort();
        w.dedup();
        w
    }

    fn finish(&mut self, d: Diff) -> Diff {
        self.stats.events += 1;
        self.stats.last_change_elements = d.len();
        self.last_sync = Some(SystemTime::now());
        d
    }

    pub fn pod(&mut self, ch: Change<Pod>) -> Diff {
        let (old, new) = match ch {
            Change::Apply(p) => {
                let Some(info) = PodInfo::from_k8s(&p) else {
                    return Diff::default();
                };
                if self.cluster.pod(&info.key) == Some(&info) {
                    // Status churn (conditions, restarts) that policies do not see.
                    return Diff::default();
                }
                let old = self.cluster.upsert_pod(info.clone());
                (old, Some(info))
            }
            Change::Delete(p) => {
                let Some(info) = PodInfo::from_k8s(&p) else {
                    return Diff::default();
                };
                (self.cluster.remove_pod(&info.key), None)
            }
        };
        let mut dirty: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let touched: Vec<&PodInfo> = old.iter().chain(new.iter()).collect();
        dirty.extend(touched.iter().filter_map(|p| p.ip));
        for pol in self.cluster.policies() {
            if touched.iter().any(|p| self.peer_depends_on(pol, p)) {
                dirty.extend(self.cluster.selected_pods(pol).filter_map(|p| p.ip));
            }
        }
        let d = self.recompute(dirty);
        self.finish(d)
    }

    /// Whether `pol`'s rules could change when `pod` appears, goes or changes.
    fn peer_depends_on(&self, pol: &PolicyInfo, pod: &PodInfo) -> bool {
        let ns_labels = self.cluster.ns_labels(&pod.key.ns);
        for dir in [Direction::Ingress, Direction::Egress] {
            for rule in pol.rules(dir).into_iter().flatten() {
                let named = dir == Direction::Egress
                    && rule
                        .ports
                        .iter()
                        .flatten()
                        .any(|p| matches!(p, PortSel::Named { .. }));
                let Some(peers) = &rule.peers else {
                    // "Every peer": only egress named ports look at the destination pods.
                    if named {
                        return true;
                    }
                    continue;
                };
                for peer in peers {
                    let hit = match peer {
                        Peer::Pods { .. } => self.cluster.peer_matches(pol, peer, pod, &ns_labels),
                        Peer::Block(spans) => {
                            named
                                && pod.ip.is_some_and(|ip| {
                                    let ip = u64::from(u32::from(ip));
                                    spans.iter().any(|s| s.0 <= ip && ip <= s.1)
                                })
                        }
                        Peer::Nothing => false,
                    };
                    if hit {
                        return true;
                    }
                }
            }
        }
        false
    }

    pub fn namespace(&mut self, ch: Change<Namespace>) -> Diff {
        let (name, old, new) = match ch {
            Change::Apply(ns) => {
                let Some((name, labels)) = namespace_labels(&ns) else {
                    return Diff::default();
                };
                if self.cluster.namespace(&name) == Some(&labels) {
                    return Diff::default();
                }
                let old = self.cluster.ns_labels(&name);
                self.cluster.upsert_namespace(name.clone(), labels.clone());
                (name, old, labels)
            }
            Change::Delete(ns) => {
                let Some((name, _)) = namespace_labels(&ns) else {
                    return Diff::default();
                };
                let old = self.cluster.ns_labels(&name);
                self.cluster.remove_namespace(&name);
                let new = self.cluster.ns_labels(&name);
                (name, old, new)
            }
        };
        let dirty = self.dirty_for_namespace(&name, &old, &new);
        let d = self.recompute(dirty);
        self.finish(d)
    }

    fn dirty_for_namespace(&self, ns: &str, old: &Labels, new: &Labels) -> BTreeSet<Ipv4Addr> {
        let mut dirty = BTreeSet::new();
        let pods: Vec<&PodInfo> = self.cluster.pods_in(ns).collect();
        for pol in self.cluster.policies() {
            let affected = [Direction::Ingress, Direction::Egress].iter().any(|d| {
                pol.rules(*d).into_iter().flatten().any(|r| {
                    r.peers.iter().flatten().any(|peer| match peer {
                        Peer::Pods {
                            namespaces: crate::model::NsSel::Matching(sel),
                            pods: psel,
                        } => {
                            sel.matches(old) != sel.matches(new)
                                && pods.iter().any(|p| psel.matches(&p.labels))
                        }
                        _ => false,
                    })
                })
            });
            if affected {
                dirty.extend(self.cluster.selected_pods(pol).filter_map(|p| p.ip));
            }
        }
        dirty
    }

    pub fn policy(&mut self, ch: Change<NetworkPolicy>) -> Diff {
        let (old, new) = match ch {
            Change::Apply(np) => {
                let Some(info) = PolicyInfo::from_k8s(&np) else {
                    return Diff::default();
                };
                if self.cluster.policy(&info.key) == Some(&info) {
                    return Diff::default();
                }
                for w in &info.warnings {
                    tracing::warn!(policy = %info.key, "{w}");
                }
                (self.cluster.upsert_policy(info.clone()), Some(info))
            }
            Change::Delete(np) => {
                let Some(info) = PolicyInfo::from_k8s(&np) else {
                    return Diff::default();
                };
                (self.cluster.remove_policy(&info.key), None)
            }
        };
        let mut dirty = BTreeSet::new();
        for pol in old.iter().chain(new.iter()) {
            dirty.extend(self.cluster.selected_pods(pol).filter_map(|p| p.ip));
        }
        let mut d = self.recompute(dirty);
        let now = self.cluster.policy_namespaces();
        d.ns_add = now
            .difference(&self.programmed.namespaces)
            .copied()
            .collect();
        d.ns_remove = self
            .programmed
            .namespaces
            .difference(&now)
            .copied()
            .collect();
        self.programmed.namespaces = now;
        self.finish(d)
    }

    fn recompute(&mut self, ips: BTreeSet<Ipv4Addr>) -> Diff {
        let mut cache = PeerCache::default();
        let fresh: Vec<(Ipv4Addr, PodRules, Vec<Warning>)> = ips
            .into_iter()
            .map(|ip| {
                let mut warnings = Vec::new();
                let rules = match self.cluster.owner_of(ip) {
                    Some(pod) => self
                        .cluster
                        .compile_pod_with(pod, &mut warnings, &mut cache),
                    None => PodRules::default(),
                };
                (ip, rules, warnings)
            })
            .collect();
        let mut d = Diff::default();
        for (ip, new, warnings) in fresh {
            self.programmed.set(ip, new, &mut d);
            self.note_warnings(ip, warnings);
        }
        d.normalize();
        d
    }

    fn note_warnings(&mut self, ip: Ipv4Addr, mut warnings: Vec<Warning>) {
        warnings.sort();
        warnings.dedup();
        let before = self.pod_warnings.get(&ip);
        for w in &warnings {
            if !before.is_some_and(|b| b.contains(w)) {
                tracing::warn!("{w}");
            }
        }
        if warnings.is_empty() {
            self.pod_warnings.remove(&ip);
        } else {
            self.pod_warnings.insert(ip, warnings);
        }
    }

    /// Rebuilds everything from complete object lists (the reflector stores) and returns
    /// the diff from what is programmed.
    pub fn resync<'a>(
        &mut self,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        pods: impl IntoIterator<Item = &'a Pod>,
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    ) -> Diff {
        let mut c = Cluster::default();
        for ns in namespaces {
            if let Some((n, l)) = namespace_labels(ns) {
                c.upsert_namespace(n, l);
            }
        }
        for p in pods.into_iter().filter_map(PodInfo::from_k8s) {
            c.upsert_pod(p);
        }
        for p in policies.into_iter().filter_map(PolicyInfo::from_k8s) {
            c.upsert_policy(p);
        }
        let (model, warnings) = c.compile();
        let d = diff(&self.programmed, &model);
        self.cluster = c;
        self.programmed = model;
        self.pod_warnings.clear();
        let fresh: BTreeSet<Warning> = warnings.into_iter().collect();
        for w in &fresh {
            tracing::warn!("{w}");
        }
        // Keep them for --status under a neutral key; the next event recompute refines them.
        if !fresh.is_empty() {
            self.pod_warnings
                .insert(Ipv4Addr::UNSPECIFIED, fresh.into_iter().collect());
        }
        self.stats.full_resyncs += 1;
        self.finish(d)
    }

    /// Forgets what is programmed, e.g. after a failed transaction; the next
    /// resync's diff then rewrites every element.
    pub fn forget_programmed(&mut self) {
        self.programmed = Compiled::default();
    }
}
