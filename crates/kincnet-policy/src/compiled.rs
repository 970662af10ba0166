//! The compiled model (what nf_tables holds) and the diff between two of them.
//!
//! Per direction: the set of isolated pod addresses, and the allow elements
//! `local ip . peer ip range . l4proto range . port range`. A change anywhere in the
//! cluster becomes element additions and removals here; the rules never change.

use std::collections::{BTreeMap, BTreeSet};
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

    /// Whether a packet from/to `peer` with `proto`/`port` falls in this element.
    pub fn matches(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.peer_lo <= peer
            && peer <= self.peer_hi
            && self.proto_lo <= proto
            && proto <= self.proto_hi
            && self.port_lo <= port
            && port <= self.port_hi
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

/// One pod's compiled rules; `None` per direction: not isolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRules {
    pub ingress: Option<BTreeSet<AllowElem>>,
    pub egress: Option<BTreeSet<AllowElem>>,
}

/// Every pod's compiled rules, keyed by address (the key of the nf_tables elements).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compiled {
    pub ingress: BTreeMap<Ipv4Addr, BTreeSet<AllowElem>>,
    pub egress: BTreeMap<Ipv4Addr, BTreeSet<AllowElem>>,
}

impl Compiled {
    pub fn dir(&self, d: Direction) -> &BTreeMap<Ipv4Addr, BTreeSet<AllowElem>> {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Replaces the rules of `ip` (an empty `PodRules` removes it).
    pub fn set(&mut self, ip: Ipv4Addr, rules: PodRules) {
        match rules.ingress {
            Some(e) => self.ingress.insert(ip, e),
            None => self.ingress.remove(&ip),
        };
        match rules.egress {
            Some(e) => self.egress.insert(ip, e),
            None => self.egress.remove(&ip),
        };
    }

    pub fn get(&self, ip: Ipv4Addr) -> PodRules {
        PodRules {
            ingress: self.ingress.get(&ip).cloned(),
            egress: self.egress.get(&ip).cloned(),
        }
    }

    /// Total allow elements (both directions).
    pub fn element_count(&self) -> usize {
        self.ingress
            .values()
            .chain(self.egress.values())
            .map(BTreeSet::len)
            .sum()
    }

    /// What the data path decides for a new connection `src -> dst` (`proto`, `dport`):
    /// the reference semantics the nf_tables rules implement, used by tests.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> bool {
        let eg = self
            .egress
            .get(&src)
            .is_none_or(|els| els.iter().any(|e| e.matches(dst, proto, dport)));
        let ing = self
            .ingress
            .get(&dst)
            .is_none_or(|els| els.iter().any(|e| e.matches(src, proto, dport)));
        eg && ing
    }
}

/// Changes for one direction. Applying order within one transaction: isolate and add
/// first or remove first makes no difference, since the whole batch is atomic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirDiff {
    pub isolate: Vec<Ipv4Addr>,
    pub unisolate: Vec<Ipv4Addr>,
    pub add: Vec<(Ipv4Addr, AllowElem)>,
    pub remove: Vec<(Ipv4Addr, AllowElem)>,
}

impl DirDiff {
    pub fn is_empty(&self) -> bool {
        self.isolate.is_empty()
            && self.unisolate.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
    }
    pub fn len(&self) -> usize {
        self.isolate.len() + self.unisolate.len() + self.add.len() + self.remove.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub ingress: DirDiff,
    pub egress: DirDiff,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.egress.is_empty()
    }
    /// Number of element operations.
    pub fn len(&self) -> usize {
        self.ingress.len() + self.egress.len()
    }
    pub fn dir(&self, d: Direction) -> &DirDiff {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

fn diff_one(
    ip: Ipv4Addr,
    old: Option<&BTreeSet<AllowElem>>,
    new: Option<&BTreeSet<AllowElem>>,
    out: &mut DirDiff,
) {
    let empty = BTreeSet::new();
    match (old.is_some(), new.is_some()) {
        (false, true) => out.isolate.push(ip),
        (true, false) => out.unisolate.push(ip),
        _ => {}
    }
    let (o, n) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    out.remove.extend(o.difference(n).map(|e| (ip, *e)));
    out.add.extend(n.difference(o).map(|e| (ip, *e)));
}

/// Element additions and removals that turn `old` into `new`.
pub fn diff(old: &Compiled, new: &Compiled) -> Diff {
    let mut d = Diff::default();
    for (dir, out) in [
        (Direction::Ingress, &mut d.ingress),
        (Direction::Egress, &mut d.egress),
    ] {
        let (o, n) = (old.dir(dir), new.dir(dir));
        let ips: BTreeSet<&Ipv4Addr> = o.keys().chain(n.keys()).collect();
        for ip in ips {
            diff_one(*ip, o.get(ip), n.get(ip), out);
        }
    }
    d
}

/// The diff for one address, from its old to its new rules.
pub fn diff_pod(ip: Ipv4Addr, old: &PodRules, new: &PodRules, out: &mut Diff) {
    diff_one(
        ip,
        old.ingress.as_ref(),
        new.ingress.as_ref(),
        &mut out.ingress,
    );
    diff_one(
        ip,
        old.egress.as_ref(),
        new.egress.as_ref(),
        &mut out.egress,
    );
}

impl Diff {
    /// Applies this diff to a model (the bookkeeping twin of the nf_tables transaction).
    pub fn apply_to(&self, c: &mut Compiled) {
        for (d, map) in [
            (&self.ingress, &mut c.ingress),
            (&self.egress, &mut c.egress),
        ] {
            for (ip, e) in &d.remove {
                if let Some(s) = map.get_mut(ip) {
                    s.remove(e);
                }
            }
            for ip in &d.unisolate {
                map.remove(ip);
            }
            for ip in &d.isolate {
                map.entry(*ip).or_default();
            }
            for (ip, e) in &d.add {
                map.entry(*ip).or_default().insert(*e);
            }
        }
    }
}
