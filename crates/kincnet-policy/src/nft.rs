//! Enforcement in kincnet's nf_tables table (family ip), through `kinc_nft::nl`.
//!
//! ```text
//! table ip <table> {
//!   set policy_in_isolated { type ipv4_addr }       # pods some policy isolates for ingress
//!   set policy_in_peer  { type ipv4_addr . ipv4_addr }                          # every port
//!   set policy_in_proto { type ipv4_addr . ipv4_addr . inet_proto }             # every port of one protocol
//!   set policy_in_port  { type ipv4_addr . ipv4_addr . inet_proto . inet_service }
//!   map policy_in_class { type ipv4_addr : verdict }  # pod -> goto its range class chain
//!   ... and the same five for egress (policy_eg_*)
//!   chain policy-forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     ip saddr @policy_eg_isolated jump policy-egress
//!     ip daddr @policy_in_isolated jump policy-ingress }
//!   chain policy-ingress {
//!     ip daddr . ip saddr @policy_in_peer return
//!     ip daddr . ip saddr . meta l4proto @policy_in_proto return
//!     ip daddr . ip saddr . meta l4proto . th dport @policy_in_port return
//!     ip daddr vmap @policy_in_class
//!     counter drop }
//!   # one per range class (a distinct list of range elements, shared by its pods):
//!   set policy_in_r<id> { type ipv4_addr . inet_proto . inet_service; flags interval }
//!   chain policy-in-r<id> {
//!     ip saddr . meta l4proto . th dport @policy_in_r<id> return
//!     counter drop }
//!   chain policy-egress, policy-eg-r<id>: the same with saddr and daddr swapped
//! }
//! ```
//! The exact sets are hash sets: adding or deleting an element costs the same whatever
//! their size. Only ranges (ipBlocks, long endPort ranges) go to interval sets (the
//! pipapo backend, whose updates, deletes above all, cost O(set size)), and there once
//! per class rather than once per pod, in one small set per class. The class map
//! `goto`s, so a hit's `return` leaves for `policy-forward` and a miss drops; a pod
//! without ranges has no class entry and falls through to the drop.
//!
//! The forward hook runs after prerouting's DNAT, so service traffic is judged by pod
//! addresses; pod-to-pod traffic reaches it because kincnet isolates the bridge ports
//! and the node routes between pods (no br_netfilter needed). Traffic the
//! node itself sends (kubelet's probes) takes the output path and is never filtered.
//! The checks end in `drop` rather than in a `!=` lookup, so a packet whose ports cannot
//! be read (NFT_BREAK) is dropped, not waved through.

use std::net::Ipv4Addr;

use kinc_nft::nl::consts::*;
use kinc_nft::nl::with_socket;
use kinc_nft::nl::{
    concat_type, reg, BaseChain, Chain, ChainType, CmpOp, CtKey, Elem, Expr, Family, Hook, MetaKey,
    Msg, PayloadBase, Rule, Set, Socket, Table, Verdict,
};

use kinc_nft::kincnet::{pending_set, policy_namespaces_set as namespaces_set};
use kinc_types::policy_gate::SYNCED_KEY;

use crate::compiled::{AllowElem, Compiled, Diff, DirDiff, Shape};
use crate::controller::Enforcer;
use crate::model::Direction;

pub const CHAIN_FORWARD: &str = "policy-forward";
pub const CHAIN_INGRESS: &str = "policy-ingress";
pub const CHAIN_EGRESS: &str = "policy-egress";
pub const SET_IN_ISOLATED: &str = "policy_in_isolated";
pub const SET_EG_ISOLATED: &str = "policy_eg_isolated";

/// The fixed sets of one direction, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Isolated,
    Peer,
    Proto,
    Port,
    Class,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Isolated,
        Role::Peer,
        Role::Proto,
        Role::Port,
        Role::Class,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Role::Isolated => "isolated",
            Role::Peer => "peer",
            Role::Proto => "proto",
            Role::Port => "port",
            Role::Class => "class",
        }
    }
}

fn dir_tag(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    }
}

/// Name of a fixed policy set, e.g. `policy_in_port`.
pub fn set_name(dir: Direction, role: Role) -> String {
    format!("policy_{}_{}", dir_tag(dir), role.suffix())
}

/// Name of the range set of class `id`, e.g. `policy_in_r0badcafe`.
pub fn class_set_name(dir: Direction, id: u32) -> String {
    format!("policy_{}_r{id:08x}", dir_tag(dir))
}

/// Name of the chain of class `id`, e.g. `policy-in-r0badcafe`.
pub fn class_chain_name(dir: Direction, id: u32) -> String {
    format!("policy-{}-r{id:08x}", dir_tag(dir))
}

/// Whether `name` is a class set or chain (of an earlier run, to clean up).
fn is_class_object(name: &str) -> bool {
    ["policy_in_r", "policy_eg_r", "policy-in-r", "policy-eg-r"]
        .iter()
        .any(|p| {
            name.strip_prefix(p)
                .is_some_and(|id| id.len() == 8 && u32::from_str_radix(id, 16).is_ok())
        })
}

/// Sets of the first layout (one interval set per direction, O(size) updates): a
/// full rewrite after an upgrade deletes them, once the chains no longer use them.
const LEGACY_SETS: [&str; 2] = ["policy_in_allow", "policy_eg_allow"];

/// Elements per netlink message; all messages still form one transaction.
const CHUNK: usize = 512;

const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_ESTABLISHED_RELATED: u32 = 2 | 4;

#[derive(Debug, thiserror::Error)]
#[error("nf_tables table {table}: {source}")]
pub struct NftError {
    pub table: String,
    #[source]
    pub source: kinc_nft::nl::Error,
}

/// The policy objects inside kincnet's table `table`.
#[derive(Debug, Clone)]
pub struct NftEnforcer {
    pub table: String,
}

fn policy_set(table: &str, dir: Direction, role: Role) -> Set {
    let (types, fields, data): (&[u32], Vec<u32>, _) = match role {
        Role::Isolated => (&[TYPE_IPADDR], vec![4], None),
        Role::Peer => (&[TYPE_IPADDR, TYPE_IPADDR], vec![4, 4], None),
        Role::Proto => (
            &[TYPE_IPADDR, TYPE_IPADDR, TYPE_INET_PROTOCOL],
            vec![4, 4, 1],
            None,
        ),
        Role::Port => (
            &[
                TYPE_IPADDR,
                TYPE_IPADDR,
                TYPE_INET_PROTOCOL,
                TYPE_INET_SERVICE,
            ],
            vec![4, 4, 1, 2],
            None,
        ),
        Role::Class => (&[TYPE_IPADDR], vec![4], Some((NFT_DATA_VERDICT, vec![]))),
    };
    Set {
        family: Family::Ip,
        table: table.into(),
        name: set_name(dir, role),
        key_type: concat_type(types),
        key_fields: fields,
        data,
        flags: 0,
    }
}

fn class_set(table: &str, dir: Direction, id: u32) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: class_set_name(dir, id),
        key_type: concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        key_fields: vec![4, 1, 2],
        data: None,
        flags: NFT_SET_INTERVAL,
    }
}

fn regular_chain(table: &str, name: String) -> Chain {
    Chain {
        family: Family::Ip,
        table: table.into(),
        name,
        base: None,
    }
}

/// (local, peer) address offsets in the IPv4 header for a direction.
fn offsets(dir: Direction) -> (u32, u32) {
    match dir {
        Direction::Ingress => (IP_DADDR, IP_SADDR),
        Direction::Egress => (IP_SADDR, IP_DADDR),
    }
}

fn load(base: PayloadBase, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

fn lookup(set: &str, sreg: u32) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg: None,
        invert: false,
    }
}

/// Key bytes in register layout: each field padded to 4 bytes.
fn key(fields: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    for f in fields {
        k.extend_from_slice(f);
        k.resize(k.len().next_multiple_of(4), 0);
    }
    k
}

/// The set role and element of one exact element of pod `local`.
fn exact_elem(local: Ipv4Addr, e: &AllowElem) -> (Role, Elem) {
    let (l, p) = (local.octets(), e.peer_lo.octets());
    match e.shape() {
        Shape::Peer => (Role::Peer, Elem::key(key(&[&l, &p]))),
        Shape::Proto => (Role::Proto, Elem::key(key(&[&l, &p, &[e.proto_lo]]))),
        // Range-shaped elements never reach the exact list (the compiler moves them).
        Shape::Port | Shape::Range => (
            Role::Port,
            Elem::key(key(&[&l, &p, &[e.proto_lo], &e.port_lo.to_be_bytes()])),
        ),
    }
}

fn range_elem(e: &AllowElem) -> Elem {
    Elem::range(
        key(&[&e.peer_lo.octets(), &[e.proto_lo], &e.port_lo.to_be_bytes()]),
        key(&[&e.peer_hi.octets(), &[e.proto_hi], &e.port_hi.to_be_bytes()]),
    )
}

impl NftEnforcer {
    pub fn new(table: impl Into<String>) -> Self {
        NftEnforcer {
            table: table.into(),
        }
    }

    fn err(&self, source: kinc_nft::nl::Error) -> NftError {
        NftError {
            table: self.table.clone(),
            source,
        }
    }

    fn set(&self, d: Direction, role: Role) -> Set {
        policy_set(&self.table, d, role)
    }

    fn rule(&self, chain: &str, exprs: Vec<Expr>) -> Rule {
        Rule {
            family: Family::Ip,
            table: self.table.clone(),
            chain: chain.into(),
            handle: None,
            exprs,
            comment: Some(format!("kinc:policy:{chain}")),
        }
    }

    /// The checks of one direction's chain: a hit in any allow set returns.
    fn check_rules(&self, dir: Direction) -> Vec<Vec<Expr>> {
        let (local, peer) = offsets(dir);
        let name = |r| set_name(dir, r);
        let l4 = Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: reg(2),
        };
        let dport = load(PayloadBase::Transport, 2, 2, reg(3));
        let local = load(PayloadBase::Network, local, 4, reg(0));
        let peer = load(PayloadBase::Network, peer, 4, reg(1));
        let ret = Expr::Verdict(Verdict::Return);
        vec![
            vec![
                local.clone(),
                peer.clone(),
                lookup(&name(Role::Peer), reg(0)),
                ret.clone(),
            ],
            vec![
                local.clone(),
                peer.clone(),
                l4.clone(),
                lookup(&name(Role::Proto), reg(0)),
                ret.clone(),
            ],
            vec![
                local.clone(),
                peer,
                l4,
                dport,
                lookup(&name(Role::Port), reg(0)),
                ret,
            ],
            vec![
                local,
                Expr::Lookup {
                    set: name(Role::Class),
                    sreg: reg(0),
                    dreg: Some(NFT_REG_VERDICT),
                    invert: false,
                },
            ],
            vec![Expr::Counter, Expr::Verdict(Verdict::Drop)],
        ]
    }

    /// Creates class `id`: its range set (with `elems`) and its chain.
    fn class_add_msgs(&self, msgs: &mut Vec<Msg>, dir: Direction, id: u32, set_id: u32) {
        let set = class_set(&self.table, dir, id);
        msgs.push(set.add_msg(set_id));
        let chain = class_chain_name(dir, id);
        msgs.push(regular_chain(&self.table, chain.clone()).add_msg());
        let (_, peer) = offsets(dir);
        let check = vec![
            load(PayloadBase::Network, peer, 4, reg(0)),
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: reg(1),
            },
            load(PayloadBase::Transport, 2, 2, reg(2)),
            lookup(&set.name, reg(0)),
            Expr::Verdict(Verdict::Return),
        ];
        msgs.push(self.rule(&chain, check).add_msg());
        msgs.push(
            self.rule(&chain, vec![Expr::Counter, Expr::Verdict(Verdict::Drop)])
                .add_msg(),
        );
    }

    /// Deletes a class chain and its set (named, so leftovers of a crash go too).
    fn class_del_msgs(&self, msgs: &mut Vec<Msg>, chain: Option<String>, set: Option<String>) {
        if let Some(c) = chain {
            let c = regular_chain(&self.table, c);
            msgs.push(c.flush_msg());
            msgs.push(c.del_msg());
        }
        if let Some(name) = set {
            let mut s = class_set(&self.table, Direction::Ingress, 0);
            s.name = name;
            msgs.push(s.del_msg());
        }
    }

    /// Table, sets, chains and rules, idempotently: the chains are flushed and refilled
    /// in the same transaction, the sets keep their elements.
    fn objects(&self) -> Vec<Msg> {
        let t = &self.table;
        let mut msgs = vec![Table {
            family: Family::Ip,
            name: t.clone(),
        }
        .add_msg()];
        let mut id = 0;
        for dir in [Direction::Ingress, Direction::Egress] {
            for role in Role::ALL {
                id += 1;
                msgs.push(self.set(dir, role).add_msg(id));
            }
        }
        // The gate (kinc_types::policy_gate): created here too, so the controller's
        // transactions that name them work before kincnet's first ADD made its objects.
        // Their elements are kept: `policy_namespaces` without `SYNCED_KEY` is what
        // tells kincnet that this controller has not synced yet.
        msgs.push(namespaces_set(t).add_msg(id + 1));
        msgs.push(pending_set(t).add_msg(id + 2));
        let regular = |name: &str| Chain {
            family: Family::Ip,
            table: t.clone(),
            name: name.into(),
            base: None,
        };
        let forward = Chain {
            family: Family::Ip,
            table: t.clone(),
            name: CHAIN_FORWARD.into(),
            base: Some(BaseChain {
                ty: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Some(Verdict::Accept),
            }),
        };
        let chains = [regular(CHAIN_INGRESS), regular(CHAIN_EGRESS), forward];
        for c in &chains {
            msgs.push(c.add_msg());
            msgs.push(c.flush_msg());
        }
        for (chain, dir) in [
            (CHAIN_EGRESS, Direction::Egress),
            (CHAIN_INGRESS, Direction::Ingress),
        ] {
            for exprs in self.check_rules(dir) {
                msgs.push(self.rule(chain, exprs).add_msg());
            }
        }
        let fwd = [
            vec![
                Expr::Ct {
                    key: CtKey::State,
                    dir: None,
                    dreg: reg(0),
                },
                Expr::Bitwise {
                    sreg: reg(0),
                    dreg: reg(0),
                    mask: CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp {
                    sreg: reg(0),
                    op: CmpOp::Neq,
                    data: vec![0; 4],
                },
                Expr::Verdict(Verdict::Accept),
            ],
            vec![
                load(PayloadBase::Network, IP_SADDR, 4, reg(0)),
                lookup(SET_EG_ISOLATED, reg(0)),
                Expr::Verdict(Verdict::Jump(CHAIN_EGRESS.into())),
            ],
            vec![
                load(PayloadBase::Network, IP_DADDR, 4, reg(0)),
                lookup(SET_IN_ISOLATED, reg(0)),
                Expr::Verdict(Verdict::Jump(CHAIN_INGRESS.into())),
            ],
        ];
        for exprs in fwd {
            msgs.push(self.rule(CHAIN_FORWARD, exprs).add_msg());
        }
        msgs
    }

    fn push_elems(&self, msgs: &mut Vec<Msg>, set: &Set, add: bool, elems: &[Elem]) {
        for chunk in elems.chunks(CHUNK) {
            msgs.push(if add {
                set.add_elems_msg(chunk)
            } else {
                set.del_elems_msg(chunk)
            });
        }
    }

    /// One direction's removals (`add == false`) or additions, set by set.
    fn dir_msgs(&self, msgs: &mut Vec<Msg>, dir: Direction, d: &DirDiff, add: bool) {
        let mut by_role: Vec<(Role, Vec<Elem>)> = Role::ALL.iter().map(|r| (*r, vec![])).collect();
        let mut push = |role: Role, e: Elem| {
            if let Some((_, v)) = by_role.iter_mut().find(|(r, _)| *r == role) {
                v.push(e);
            }
        };
        let (iso, exact, class, ranges) = if add {
            (&d.isolate, &d.add, &d.bind, &d.range_add)
        } else {
            (&d.unisolate, &d.remove, &d.unbind, &d.range_remove)
        };
        for ip in iso {
            push(Role::Isolated, Elem::key(ip.octets().to_vec()));
        }
        for (ip, e) in exact {
            let (role, el) = exact_elem(*ip, e);
            push(role, el);
        }
        for (ip, id) in class {
            push(
                Role::Class,
                Elem::vmap(
                    ip.octets().to_vec(),
                    Verdict::Goto(class_chain_name(dir, *id)),
                ),
            );
        }
        // Range elements by class; a dropped class goes with its set, not element-wise.
        let mut by_class: std::collections::BTreeMap<u32, Vec<Elem>> = Default::default();
        for (id, e) in ranges {
            if !add && d.class_gone.contains(id) {
                continue;
            }
            by_class.entry(*id).or_default().push(range_elem(e));
        }
        if add {
            // New classes first: their chains must exist before the map points at them.
            for (i, id) in d.class_new.iter().enumerate() {
                self.class_add_msgs(msgs, dir, *id, 1000 + i as u32);
            }
            for (id, elems) in &by_class {
                self.push_elems(msgs, &class_set(&self.table, dir, *id), true, elems);
            }
        }
        let order: &[Role] = if add {
            &[
                Role::Class,
                Role::Peer,
                Role::Proto,
                Role::Port,
                Role::Isolated,
            ]
        } else {
            &[
                Role::Isolated,
                Role::Class,
                Role::Peer,
                Role::Proto,
                Role::Port,
            ]
        };
        for role in order {
            if let Some((_, elems)) = by_role.iter().find(|(r, _)| r == role) {
                self.push_elems(msgs, &self.set(dir, *role), add, elems);
            }
        }
        if !add {
            for (id, elems) in &by_class {
                self.push_elems(msgs, &class_set(&self.table, dir, *id), false, elems);
            }
            // Unbound above, so nothing points at these chains any more.
            for id in &d.class_gone {
                self.class_del_msgs(
                    msgs,
                    Some(class_chain_name(dir, *id)),
                    Some(class_set_name(dir, *id)),
                );
            }
        }
    }

    fn diff_msgs(&self, diff: &Diff) -> Vec<Msg> {
        let mut msgs = Vec::new();
        // Every removal first: a class map entry is replaced by delete + add.
        for add in [false, true] {
            for dir in [Direction::Ingress, Direction::Egress] {
                self.dir_msgs(&mut msgs, dir, diff.dir(dir), add);
            }
        }
        let ns = namespaces_set(&self.table);
        let keys = |v: &[u32]| -> Vec<Elem> {
            v.iter()
                .map(|k| Elem::key(k.to_ne_bytes().to_vec()))
                .collect()
        };
        self.push_elems(&mut msgs, &ns, false, &keys(&diff.ns_remove));
        self.push_elems(&mut msgs, &ns, true, &keys(&diff.ns_add));
        // Last: the pod's rules above are in force by the time its pending drop goes.
        for ip in &diff.unpend {
            msgs.extend(kinc_nft::kincnet::unpend_msgs(&self.table, *ip));
        }
        msgs
    }

    /// Creates (or repairs) the policy objects; keeps programmed elements.
    pub fn ensure(&self) -> Result<(), NftError> {
        self.commit(&self.objects())
    }

    /// One transaction on this thread's cached socket: closing a socket after deletes
    /// waits for an RCU grace period (5-25 ms), which would dominate a small change.
    fn commit(&self, msgs: &[Msg]) -> Result<(), NftError> {
        with_socket(|s: &mut Socket| s.commit(msgs, None)).map_err(|e| self.err(e))
    }
}

impl Enforcer for NftEnforcer {
    type Error = NftError;

    fn apply(&mut self, diff: &Diff) -> Result<(), NftError> {
        self.commit(&self.diff_msgs(diff))
    }

    fn replace_all(&mut self, model: &Compiled) -> Result<(), NftError> {
        // Class chains and sets of an earlier run: found by name, dropped in the same
        // transaction that rebuilds everything. No generation guard: only this
        // controller creates them, and other tables' churn (kube-proxy) must not make
        // the rewrite fail over and over.
        let (chains, sets) = with_socket(|s: &mut Socket| {
            if !s.table_exists(Family::Ip, &self.table)? {
                return Ok((Vec::new(), Vec::new()));
            }
            let chains = s.list_chains(Family::Ip, &self.table)?;
            Ok::<_, kinc_nft::nl::Error>((chains, s.list_sets(Family::Ip, &self.table)?))
        })
        .map_err(|e| self.err(e))?;
        let mut msgs = self.objects();
        for dir in [Direction::Ingress, Direction::Egress] {
            for role in Role::ALL {
                msgs.push(self.set(dir, role).flush_msg());
            }
        }
        for (c, _) in chains.into_iter().filter(|(c, _)| is_class_object(c)) {
            self.class_del_msgs(&mut msgs, Some(c), None);
        }
        let stale = |s: &String| is_class_object(s) || LEGACY_SETS.contains(&s.as_str());
        for s in sets.into_iter().filter(stale) {
            self.class_del_msgs(&mut msgs, None, Some(s));
        }
        msgs.push(namespaces_set(&self.table).flush_msg());
        let all = crate::compiled::diff(&Compiled::default(), model);
        msgs.extend(self.diff_msgs(&all));
        // A complete model: kincnet may trust `policy_namespaces` from now on.
        msgs.push(
            namespaces_set(&self.table)
                .add_elems_msg(&[Elem::key(SYNCED_KEY.to_ne_bytes().to_vec())]),
        );
        self.commit(&msgs)
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    /// kincnet deletes an address's elements itself (DEL, controller silent) from the
    /// sets `kinc_nft::kincnet::POLICY_ADDR_SETS` names: they must be this layout's.
    #[test]
    fn kincnet_purges_the_sets_this_layout_keys_by_address() {
        let mut ours: Vec<(String, Vec<usize>)> = Vec::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            for role in Role::ALL {
                let set = policy_set("t", dir, role);
                // Every set of a fixed role starts with the local pod's address; the
                // allow sets follow it with the peer's.
                let offsets = if set.key_fields.len() >= 2 {
                    vec![0, 4]
                } else {
                    vec![0]
                };
                assert_eq!(set.key_fields[0], 4);
                if offsets.len() == 2 {
                    assert_eq!(set.key_fields[1], 4);
                }
                ours.push((set.name, offsets));
            }
        }
        ours.sort();
        let mut theirs: Vec<(String, Vec<usize>)> = kinc_nft::kincnet::POLICY_ADDR_SETS
            .iter()
            .map(|(n, o)| (n.to_string(), o.to_vec()))
            .collect();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
