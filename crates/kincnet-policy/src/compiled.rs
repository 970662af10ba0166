//! The compiled model (what nf_tables holds) and the diff between two of them.
//!
//! Per direction, each isolated pod has
//! - exact elements (one peer address, one protocol or all, one port or all), which go
//!   into hash sets whose insert and delete cost does not depend on their size, and
//! - optionally a range class: the id of a shared list of range elements (peer ranges
//!   from ipBlocks, port ranges from endPort). Pods with the same ranges (those selected
//!   by the same policies, typically) share one class, so the interval set (pipapo, whose
//!   updates cost O(set size)) holds each distinct list once.
//!
//! A change anywhere in the cluster becomes element additions and removals here; the
//! rules never change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::boxes::Box3;
use crate::compile::proto_name;
use crate::model::Direction;

/// One allow element minus its local address (the map key that holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AllowElem {
    pub peer_lo: Ipv4Addr,
    pub peer_hi: Ipv4Addr,
    pub proto_lo: u8,
    pub proto_hi: u8,
    pub port_lo: u16,
    pub port_hi: u16,
}

/// Which set an element belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One peer, every protocol and port: `local . peer`.
    Peer,
    /// One peer, one protocol, every port: `local . peer . proto`.
    Proto,
    /// One peer, protocol and port: `local . peer . proto . port`.
    Port,
    /// Anything with a range: `class . peer . proto . port`, interval set.
    Range,
}

impl AllowElem {
    pub(crate) fn from_box(b: Box3) -> Self {
        // The compiler only builds boxes inside these widths.
        AllowElem {
            peer_lo: Ipv4Addr::from(b[0].0 as u32),
            peer_hi: Ipv4Addr::from(b[0].1 as u32),
            proto_lo: b[1].0 as u8,
            proto_hi: b[1].1 as u8,
            port_lo: b[2].0 as u16,
            port_hi: b[2].1 as u16,
        }
    }

    /// One peer; `proto`/`port` `None` mean all of them.
    pub fn exact(peer: Ipv4Addr, proto: Option<u8>, port: Option<u16>) -> Self {
        let (proto_lo, proto_hi) = proto.map_or((0, 255), |p| (p, p));
        let (port_lo, port_hi) = port.map_or((0, 65535), |p| (p, p));
        AllowElem {
            peer_lo: peer,
            peer_hi: peer,
            proto_lo,
            proto_hi,
            port_lo,
            port_hi,
        }
    }

    pub fn shape(&self) -> Shape {
        let all_protos = self.proto_lo == 0 && self.proto_hi == 255;
        let all_ports = self.port_lo == 0 && self.port_hi == 65535;
        if self.peer_lo != self.peer_hi {
            Shape::Range
        } else if all_protos && all_ports {
            Shape::Peer
        } else if self.proto_lo != self.proto_hi {
            Shape::Range
        } else if all_ports {
            Shape::Proto
        } else if self.port_lo == self.port_hi {
            Shape::Port
        } else {
            Shape::Range
        }
    }

    /// Whether a packet from/to `peer` with `proto`/`port` falls in this element.
    pub fn matches(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.peer_lo <= peer
            && peer <= self.peer_hi
            && self.proto_lo <= proto
            && proto <= self.proto_hi
            && self.port_lo <= port
            && port <= self.port_hi
    }

    /// Whether `self` covers all of `other`.
    fn covers(&self, other: &AllowElem) -> bool {
        self.peer_lo <= other.peer_lo
            && other.peer_hi <= self.peer_hi
            && self.proto_lo <= other.proto_lo
            && other.proto_hi <= self.proto_hi
            && self.port_lo <= other.port_lo
            && other.port_hi <= self.port_hi
    }
}

impl fmt::Display for AllowElem {
    /// nft's notation, for logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.peer_lo == self.peer_hi {
            write!(f, "{}", self.peer_lo)?;
        } else {
            write!(f, "{}-{}", self.peer_lo, self.peer_hi)?;
        }
        if self.proto_lo == self.proto_hi {
            write!(f, " . {}", proto_name(self.proto_lo).to_lowercase())?;
        } else {
            write!(f, " . {}-{}", self.proto_lo, self.proto_hi)?;
        }
        if self.port_lo == self.port_hi {
            write!(f, " . {}", self.port_lo)
        } else {
            write!(f, " . {}-{}", self.port_lo, self.port_hi)
        }
    }
}

/// What one pod may do in one direction, as compiled: exact elements (no element
/// covered by another one) and disjoint range elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirRules {
    pub exact: BTreeSet<AllowElem>,
    pub ranges: BTreeSet<AllowElem>,
}

impl DirRules {
    /// Every element, exact and ranges.
    pub fn elements(&self) -> BTreeSet<AllowElem> {
        self.exact.iter().chain(&self.ranges).copied().collect()
    }

    /// Drops exact elements another exact element covers: an element per protocol or
    /// port under an all-protocol one would only cost kernel work.
    pub(crate) fn prune(&mut self) {
        let mut keep: BTreeSet<AllowElem> = BTreeSet::new();
        // Sorted by peer, then protocol (0-255 before single ones), then port.
        let mut wide: Vec<AllowElem> = Vec::new();
        for e in &self.exact {
            if wide.last().is_some_and(|w| w.peer_lo != e.peer_lo) {
                wide.clear();
            }
            if wide.iter().any(|w| w.covers(e)) {
                continue;
            }
            if e.shape() != Shape::Port {
                wide.push(*e);
            }
            keep.insert(*e);
        }
        self.exact = keep;
    }
}

/// One pod's compiled rules; `None` per direction: not isolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRules {
    pub ingress: Option<DirRules>,
    pub egress: Option<DirRules>,
}

/// One isolated pod in one direction, as programmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodDir {
    pub exact: BTreeSet<AllowElem>,
    /// Its range class (an element of the class map), if it has ranges.
    pub class: Option<u32>,
}

/// Range classes of one direction: id -> range elements, plus derived indexes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Classes {
    pub ranges: BTreeMap<u32, BTreeSet<AllowElem>>,
    #[serde(skip)]
    by_content: HashMap<BTreeSet<AllowElem>, u32>,
    #[serde(skip)]
    refs: HashMap<u32, usize>,
}

impl PartialEq for Classes {
    fn eq(&self, other: &Self) -> bool {
        self.ranges == other.ranges
    }
}
impl Eq for Classes {}

/// FNV-1a of the elements: a class id that depends on the content only, so a full
/// recompile names classes as the incremental path did.
fn content_id(ranges: &BTreeSet<AllowElem>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for e in ranges {
        let bytes = [
            &e.peer_lo.octets()[..],
            &e.peer_hi.octets(),
            &[e.proto_lo, e.proto_hi],
            &e.port_lo.to_be_bytes(),
            &e.port_hi.to_be_bytes(),
        ];
        for b in bytes.iter().flat_map(|s| s.iter()) {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

impl Classes {
    /// The class holding `ranges` (created, with its elements added to `out`, if new),
    /// with one more reference.
    fn acquire(&mut self, ranges: &BTreeSet<AllowElem>, out: &mut DirDiff) -> u32 {
        let id = match self.by_content.get(ranges) {
            Some(id) => *id,
            None => {
                let mut id = content_id(ranges);
                while self.ranges.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                out.class_new.push(id);
                out.range_add.extend(ranges.iter().map(|e| (id, *e)));
                self.ranges.insert(id, ranges.clone());
                self.by_content.insert(ranges.clone(), id);
                id
            }
        };
        *self.refs.entry(id).or_default() += 1;
        id
    }

    /// Drops one reference; the last one removes the class and its elements.
    fn release(&mut self, id: u32, out: &mut DirDiff) {
        let Some(n) = self.refs.get_mut(&id) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.refs.remove(&id);
        if let Some(r) = self.ranges.remove(&id) {
            out.class_gone.push(id);
            out.range_remove.extend(r.iter().map(|e| (id, *e)));
            self.by_content.remove(&r);
        }
    }

    /// Rebuilds the indexes from `ranges` and the pods' bindings.
    fn reindex<'a>(&mut self, pods: impl Iterator<Item = &'a PodDir>) {
        self.by_content = self.ranges.iter().map(|(id, r)| (r.clone(), *id)).collect();
        self.refs.clear();
        for c in pods.filter_map(|p| p.class) {
            *self.refs.entry(c).or_default() += 1;
        }
    }

    pub fn element_count(&self) -> usize {
        self.ranges.values().map(BTreeSet::len).sum()
    }
}

/// Every pod's compiled rules, keyed by address (the key of the nf_tables elements).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compiled {
    /// Pods isolated for ingress.
    pub ingress: BTreeMap<Ipv4Addr, PodDir>,
    /// Pods isolated for egress.
    pub egress: BTreeMap<Ipv4Addr, PodDir>,
    pub in_classes: Classes,
    pub eg_classes: Classes,
    /// `kinc_types::policy_gate::namespace_key` of every namespace with a policy: the
    /// elements of `policy_namespaces`, which tell kincnet which pods to gate.
    pub namespaces: BTreeSet<u32>,
}

impl Compiled {
    pub fn dir(&self, d: Direction) -> (&BTreeMap<Ipv4Addr, PodDir>, &Classes) {
        match d {
            Direction::Ingress => (&self.ingress, &self.in_classes),
            Direction::Egress => (&self.egress, &self.eg_classes),
        }
    }

    fn dir_mut(&mut self, d: Direction) -> (&mut BTreeMap<Ipv4Addr, PodDir>, &mut Classes) {
        match d {
            Direction::Ingress => (&mut self.ingress, &mut self.in_classes),
            Direction::Egress => (&mut self.egress, &mut self.eg_classes),
        }
    }

    /// Replaces the rules of `ip` (an empty `PodRules` removes it), recording in `out`
    /// the element changes that makes.
    pub fn set(&mut self, ip: Ipv4Addr, rules: PodRules, out: &mut Diff) {
        for (dir, new) in [
            (Direction::Ingress, rules.ingress),
            (Direction::Egress, rules.egress),
        ] {
            let (pods, classes) = self.dir_mut(dir);
            let out = out.dir_mut(dir);
            let old = pods.remove(&ip);
            match (&old, &new) {
                (None, Some(_)) => out.isolate.push(ip),
                (Some(_), None) => out.unisolate.push(ip),
                _ => {}
            }
            let empty = BTreeSet::new();
            let old_exact = old.as_ref().map_or(&empty, |o| &o.exact);
            let new_exact = new.as_ref().map_or(&empty, |n| &n.exact);
            out.remove
                .extend(old_exact.difference(new_exact).map(|e| (ip, *e)));
            out.add
                .extend(new_exact.difference(old_exact).map(|e| (ip, *e)));
            let new_class = new
                .as_ref()
                .filter(|n| !n.ranges.is_empty())
                .map(|n| classes.acquire(&n.ranges, out));
            let old_class = old.as_ref().and_then(|o| o.class);
            if old_class != new_class {
                if let Some(c) = old_class {
                    out.unbind.push((ip, c));
                }
                if let Some(c) = new_class {
                    out.bind.push((ip, c));
                }
            }
            if let Some(c) = old_class {
                classes.release(c, out);
            }
            if let Some(n) = new {
                pods.insert(
                    ip,
                    PodDir {
                        exact: n.exact,
                        class: new_class,
                    },
                );
            }
        }
    }

    /// Every element of `ip` in direction `d` (exact and its class's ranges);
    /// `None` when not isolated.
    pub fn elements(&self, d: Direction, ip: Ipv4Addr) -> Option<BTreeSet<AllowElem>> {
        let (pods, classes) = self.dir(d);
        let p = pods.get(&ip)?;
        let mut all = p.exact.clone();
        if let Some(r) = p.class.and_then(|c| classes.ranges.get(&c)) {
            all.extend(r.iter().copied());
        }
        Some(all)
    }

    /// Allow elements the kernel holds (both directions): exact ones plus each
    /// class's ranges once.
    pub fn element_count(&self) -> usize {
        let exact: usize = self
            .ingress
            .values()
            .chain(self.egress.values())
            .map(|p| p.exact.len())
            .sum();
        exact + self.in_classes.element_count() + self.eg_classes.element_count()
    }

    fn dir_allows(
        &self,
        d: Direction,
        local: Ipv4Addr,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> bool {
        let (pods, classes) = self.dir(d);
        let Some(p) = pods.get(&local) else {
            return true;
        };
        p.exact.iter().any(|e| e.matches(peer, proto, port))
            || p.class
                .and_then(|c| classes.ranges.get(&c))
                .is_some_and(|r| r.iter().any(|e| e.matches(peer, proto, port)))
    }

    /// What the data path decides for a new connection `src -> dst` (`proto`, `dport`):
    /// the reference semantics the nf_tables rules implement, used by tests.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> bool {
        self.dir_allows(Direction::Egress, src, dst, proto, dport)
            && self.dir_allows(Direction::Ingress, dst, src, proto, dport)
    }
}

/// Changes for one direction. In the transaction, every removal comes before every
/// addition (a class map entry is replaced by delete + add).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirDiff {
    pub isolate: Vec<Ipv4Addr>,
    pub unisolate: Vec<Ipv4Addr>,
    /// Exact elements.
    pub add: Vec<(Ipv4Addr, AllowElem)>,
    pub remove: Vec<(Ipv4Addr, AllowElem)>,
    /// Class map entries `pod -> class`.
    pub bind: Vec<(Ipv4Addr, u32)>,
    pub unbind: Vec<(Ipv4Addr, u32)>,
    /// Range elements of classes.
    pub range_add: Vec<(u32, AllowElem)>,
    pub range_remove: Vec<(u32, AllowElem)>,
    /// Classes created and dropped (their elements are in `range_add`/`range_remove`).
    pub class_new: Vec<u32>,
    pub class_gone: Vec<u32>,
}

impl DirDiff {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn len(&self) -> usize {
        self.isolate.len()
            + self.unisolate.len()
            + self.add.len()
            + self.remove.len()
            + self.bind.len()
            + self.unbind.len()
            + self.range_add.len()
            + self.range_remove.len()
    }

    /// Cancels what one batch both removed and added (a class dropped by one pod and
    /// created again by the next, a binding undone and redone).
    pub(crate) fn normalize(&mut self) {
        fn cancel<T: Eq + std::hash::Hash + Copy>(a: &mut Vec<T>, b: &mut Vec<T>) {
            if a.is_empty() || b.is_empty() {
                return;
            }
            let both: std::collections::HashSet<T> = {
                let bs: std::collections::HashSet<T> = b.iter().copied().collect();
                a.iter().copied().filter(|x| bs.contains(x)).collect()
            };
            a.retain(|x| !both.contains(x));
            b.retain(|x| !both.contains(x));
        }
        cancel(&mut self.class_new, &mut self.class_gone);
        cancel(&mut self.range_add, &mut self.range_remove);
        cancel(&mut self.bind, &mut self.unbind);
        cancel(&mut self.add, &mut self.remove);
        cancel(&mut self.isolate, &mut self.unisolate);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub ingress: DirDiff,
    pub egress: DirDiff,
    /// `policy_namespaces` keys added and removed.
    pub ns_add: Vec<u32>,
    pub ns_remove: Vec<u32>,
    /// Addresses to delete from kincnet's `pod_pending`, after everything else in the
    /// same transaction (a pod CNI ADD is waiting for).
    pub unpend: Vec<Ipv4Addr>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of element operations.
    pub fn len(&self) -> usize {
        self.ingress.len()
            + self.egress.len()
            + self.ns_add.len()
            + self.ns_remove.len()
            + self.unpend.len()
    }
    pub fn dir(&self, d: Direction) -> &DirDiff {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub(crate) fn normalize(&mut self) {
        self.ingress.normalize();
        self.egress.normalize();
    }

    fn dir_mut(&mut self, d: Direction) -> &mut DirDiff {
        match d {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// Applies this diff to a model (the bookkeeping twin of the nf_tables transaction).
    pub fn apply_to(&self, c: &mut Compiled) {
        for k in &self.ns_remove {
            c.namespaces.remove(k);
        }
        c.namespaces.extend(self.ns_add.iter().copied());
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = self.dir(dir);
            let (pods, classes) = c.dir_mut(dir);
            for (ip, e) in &d.remove {
                if let Some(p) = pods.get_mut(ip) {
                    p.exact.remove(e);
                }
            }
            for (ip, _) in &d.unbind {
                if let Some(p) = pods.get_mut(ip) {
                    p.class = None;
                }
            }
            for (id, e) in &d.range_remove {
                if let Some(r) = classes.ranges.get_mut(id) {
                    r.remove(e);
                    if r.is_empty() {
                        classes.ranges.remove(id);
                    }
                }
            }
            for ip in &d.unisolate {
                pods.remove(ip);
            }
            for ip in &d.isolate {
                pods.entry(*ip).or_default();
            }
            for (id, e) in &d.range_add {
                classes.ranges.entry(*id).or_default().insert(*e);
            }
            for (ip, id) in &d.bind {
                pods.entry(*ip).or_default().class = Some(*id);
            }
            for (ip, e) in &d.add {
                pods.entry(*ip).or_default().exact.insert(*e);
            }
            classes.reindex(pods.values());
        }
    }
}

fn diff_sets<K: Copy, V: Ord + Copy>(
    key: K,
    old: &BTreeSet<V>,
    new: &BTreeSet<V>,
    remove: &mut Vec<(K, V)>,
    add: &mut Vec<(K, V)>,
) {
    remove.extend(old.difference(new).map(|e| (key, *e)));
    add.extend(new.difference(old).map(|e| (key, *e)));
}

/// Element additions and removals that turn `old` into `new`.
pub fn diff(old: &Compiled, new: &Compiled) -> Diff {
    let mut d = Diff {
        ns_add: new
            .namespaces
            .difference(&old.namespaces)
            .copied()
            .collect(),
        ns_remove: old
            .namespaces
            .difference(&new.namespaces)
            .copied()
            .collect(),
        ..Diff::default()
    };
    let empty = BTreeSet::new();
    for dir in [Direction::Ingress, Direction::Egress] {
        let ((op, oc), (np, nc)) = (old.dir(dir), new.dir(dir));
        let out = d.dir_mut(dir);
        let ips: BTreeSet<&Ipv4Addr> = op.keys().chain(np.keys()).collect();
        for ip in ips {
            let (o, n) = (op.get(ip), np.get(ip));
            match (o.is_some(), n.is_some()) {
                (false, true) => out.isolate.push(*ip),
                (true, false) => out.unisolate.push(*ip),
                _ => {}
            }
            diff_sets(
                *ip,
                o.map_or(&empty, |p| &p.exact),
                n.map_or(&empty, |p| &p.exact),
                &mut out.remove,
                &mut out.add,
            );
            let (ocl, ncl) = (o.and_then(|p| p.class), n.and_then(|p| p.class));
            if ocl != ncl {
                out.unbind.extend(ocl.map(|c| (*ip, c)));
                out.bind.extend(ncl.map(|c| (*ip, c)));
            }
        }
        let ids: BTreeSet<&u32> = oc.ranges.keys().chain(nc.ranges.keys()).collect();
        for id in ids {
            match (oc.ranges.contains_key(id), nc.ranges.contains_key(id)) {
                (false, true) => out.class_new.push(*id),
                (true, false) => out.class_gone.push(*id),
                _ => {}
            }
            diff_sets(
                *id,
                oc.ranges.get(id).unwrap_or(&empty),
                nc.ranges.get(id).unwrap_or(&empty),
                &mut out.range_remove,
                &mut out.range_add,
            );
        }
    }
    d
}
