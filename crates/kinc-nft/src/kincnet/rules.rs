//! What kincnet's table holds: chains, maps and rules, as data (no I/O here).
//!
//! ```text
//! table ip <table> {
//!   map hostports_ip  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   map hostports_any { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump hostports }
//!   chain output      { type nat hook output priority dstnat;      fib daddr type local jump hostports }
//!   chain hostports   { dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip
//!                       dnat ip to meta l4proto . th dport map @hostports_any }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!                       ip saddr 127.0.0.0/8 ct status dnat masquerade   # 127.0.0.1:hostPort
//!                       ip saddr <subnet> jump nat-<bridge> }            # one per network
//!   chain nat-<bridge> { ip daddr != <subnet> masquerade                  # if masquerade
//!                        ct status dnat ct original ip daddr . meta l4proto . ct original proto-dst @hostports_ip masquerade
//!                        ct status dnat meta l4proto . ct original proto-dst @hostports_any masquerade }
//! }
//! ```
//!   set pod_pending { type ipv4_addr }   # pods whose NetworkPolicy is not programmed yet
//!   chain pod-gate { type filter hook forward priority -10; policy accept;
//!                    ip saddr @pod_pending drop
//!                    ip daddr @pod_pending drop }
//! The last two rules masquerade a pod's connection to a hostPort that lands on a pod
//! (hairpin included: without it the pod would see its own address as the source and
//! drop the reply as a martian). They look the ORIGINAL destination up in the same maps,
//! so DNAT done by anyone else (kube-proxy's services) is not masqueraded.
//! Every rule carries a comment `kinc:shared:<name> <fingerprint>` or
//! `kinc:net:<bridge>:<name> <fingerprint>`; `ensure` compares and repairs only rules
//! with those comments, so other users of the table (a NetworkPolicy controller) keep
//! theirs.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::nl::consts::*;
use crate::nl::{
    concat_type, encode_list, reg, AttrWriter, BaseChain, Chain, ChainType, CmpOp, CtDir, CtKey,
    Expr, Family, Hook, MetaKey, NatType, PayloadBase, Rule, Set, Table, Verdict,
};

pub const CHAIN_PREROUTING: &str = "prerouting";
pub const CHAIN_OUTPUT: &str = "output";
pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_HOSTPORTS: &str = "hostports";
pub const MAP_HOSTPORTS_IP: &str = "hostports_ip";
pub const MAP_HOSTPORTS_ANY: &str = "hostports_any";
pub const SHARED_PREFIX: &str = "kinc:shared:";
/// Drops every forwarded packet from or to a pod in [`SET_PENDING`]; runs before
/// kincnet-policy's `policy-forward` (priority 0), and before its conntrack shortcut.
pub const CHAIN_GATE: &str = "pod-gate";
pub const GATE_PRIORITY: i32 = -10;
/// Pods whose NetworkPolicy rules are not in the kernel yet (kincnet adds them during
/// ADD, kincnet-policy deletes them in the transaction that programs their rules).
pub const SET_PENDING: &str = "pod_pending";
/// kincnet-policy's: the namespaces with NetworkPolicies, as
/// `kinc_types::policy_gate::namespace_key`s, and `SYNCED_KEY` once it has synced.
pub const SET_POLICY_NAMESPACES: &str = "policy_namespaces";

/// kincnet-policy's sets whose elements are keyed by pod addresses, and the byte
/// offsets of the addresses in their keys (`local` first, then `peer`). kincnet deletes
/// an address's elements from them on DEL when the controller did not confirm it did.
/// kincnet-policy's `nft.rs` tests that its layout matches this table.
pub const POLICY_ADDR_SETS: [(&str, &[usize]); 10] = [
    ("policy_in_isolated", &[0]),
    ("policy_in_class", &[0]),
    ("policy_in_peer", &[0, 4]),
    ("policy_in_proto", &[0, 4]),
    ("policy_in_port", &[0, 4]),
    ("policy_eg_isolated", &[0]),
    ("policy_eg_class", &[0]),
    ("policy_eg_peer", &[0, 4]),
    ("policy_eg_proto", &[0, 4]),
    ("policy_eg_port", &[0, 4]),
];

/// `pod_pending`: one pod address per element.
pub fn pending_set(table: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: SET_PENDING.into(),
        key_type: TYPE_IPADDR,
        key_fields: vec![4],
        data: None,
        flags: 0,
    }
}

/// `policy_namespaces`: 32-bit keys (shown by `nft` as marks).
pub fn policy_namespaces_set(table: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: SET_POLICY_NAMESPACES.into(),
        key_type: TYPE_MARK,
        key_fields: vec![4],
        data: None,
        flags: 0,
    }
}

pub fn net_prefix(bridge: &str) -> String {
    format!("kinc:net:{bridge}:")
}

pub fn net_chain(bridge: &str) -> String {
    format!("nat-{bridge}")
}

pub fn table(name: &str) -> Table {
    Table {
        family: Family::Ip,
        name: name.into(),
    }
}

fn base(table: &str, name: &str, hook: Hook, priority: i32) -> Chain {
    Chain {
        family: Family::Ip,
        table: table.into(),
        name: name.into(),
        base: Some(BaseChain {
            ty: ChainType::Nat,
            hook,
            priority,
            policy: Some(Verdict::Accept),
        }),
    }
}

fn regular(table: &str, name: &str) -> Chain {
    Chain {
        family: Family::Ip,
        table: table.into(),
        name: name.into(),
        base: None,
    }
}

/// Chains in creation order (a chain must exist before a rule jumps to it).
pub fn chains(table: &str, bridge: &str) -> Vec<Chain> {
    vec![
        regular(table, CHAIN_HOSTPORTS),
        regular(table, &net_chain(bridge)),
        base(table, CHAIN_PREROUTING, Hook::Prerouting, -100),
        base(table, CHAIN_OUTPUT, Hook::Output, -100),
        base(table, CHAIN_POSTROUTING, Hook::Postrouting, 100),
        Chain {
            family: Family::Ip,
            table: table.into(),
            name: CHAIN_GATE.into(),
            base: Some(BaseChain {
                ty: ChainType::Filter,
                hook: Hook::Forward,
                priority: GATE_PRIORITY,
                policy: Some(Verdict::Accept),
            }),
        },
    ]
}

/// `hostports_ip`: (host address, protocol, host port) -> (pod address, container port).
pub fn map_hostports_ip(table: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: MAP_HOSTPORTS_IP.into(),
        key_type: concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        key_fields: vec![4, 1, 2],
        data: Some((concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), vec![4, 2])),
        flags: 0,
    }
}

/// `hostports_any`: (protocol, host port) -> (pod address, container port), for
/// mappings without hostIP (any local address).
pub fn map_hostports_any(table: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: MAP_HOSTPORTS_ANY.into(),
        key_type: concat_type(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        key_fields: vec![1, 2],
        data: Some((concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), vec![4, 2])),
        flags: 0,
    }
}

const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;

fn load_ip(offset: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset,
        len: 4,
        dreg,
    }
}

fn th_dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    }
}

fn l4proto(dreg: u32) -> Expr {
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg,
    }
}

/// `ip saddr|daddr [!=] net`: load, mask, compare.
fn ip_in(offset: u32, net: Ipv4Network, op: CmpOp) -> Vec<Expr> {
    let mut v = vec![load_ip(offset, reg(0))];
    if net.prefix() < 32 {
        v.push(Expr::Bitwise {
            sreg: reg(0),
            dreg: reg(0),
            mask: net.mask().octets().to_vec(),
            xor: vec![0; 4],
        });
    }
    v.push(Expr::Cmp {
        sreg: reg(0),
        op,
        data: net.network().octets().to_vec(),
    });
    v
}

/// `ct status dnat` (status is a host-order u32 in the register).
fn ct_status_dnat() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: CtKey::Status,
            dir: None,
            dreg: reg(0),
        },
        Expr::Bitwise {
            sreg: reg(0),
            dreg: reg(0),
            mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: reg(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

fn fib_daddr_local() -> Vec<Expr> {
    vec![
        Expr::Fib {
            result: 3, // NFT_FIB_RESULT_ADDRTYPE
            flags: 2,  // NFTA_FIB_F_DADDR
            dreg: reg(0),
        },
        Expr::Cmp {
            sreg: reg(0),
            op: CmpOp::Eq,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

fn lookup(set: &str, sreg: u32, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg,
        invert: false,
    }
}

fn dnat_from_reg0() -> Expr {
    Expr::Nat {
        kind: NatType::Dnat,
        family: NFPROTO_IPV4,
        addr_reg: Some(reg(0)),
        proto_reg: Some(reg(1)),
        flags: 0,
    }
}

fn ct_orig(key: CtKey, dreg: u32) -> Expr {
    Expr::Ct {
        key,
        dir: Some(CtDir::Original),
        dreg,
    }
}

/// FNV-1a, 32 bit: a stable fingerprint of a rule's encoded expressions.
fn fingerprint(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A rule whose comment is `<name> <fingerprint>`: `ensure` compares comments only, so
/// it does not depend on how a kernel version dumps expressions, yet notices any change
/// of content (another subnet, masquerade switched, a newer kinc-nft).
fn rule(table: &str, chain: &str, name: String, exprs: Vec<Expr>) -> Rule {
    let mut w = AttrWriter::new();
    encode_list(&exprs, &mut w);
    let fp = fingerprint(&w.into_bytes());
    Rule {
        family: Family::Ip,
        table: table.into(),
        chain: chain.into(),
        handle: None,
        exprs,
        comment: Some(format!("{name} {fp:08x}")),
    }
}

/// The rules `ensure` keeps in place, per chain, in order.
pub fn rules(table: &str, bridge: &str, subnet: Ipv4Network, masquerade: bool) -> Vec<Rule> {
    let shared = |n: &str| format!("{SHARED_PREFIX}{n}");
    let net = |n: &str| format!("{}{n}", net_prefix(bridge));
    let nchain = net_chain(bridge);
    let jump_hostports = || {
        let mut v = fib_daddr_local();
        v.push(Expr::Verdict(Verdict::Jump(CHAIN_HOSTPORTS.into())));
        v
    };
    let mut out = vec![
        rule(
            table,
            CHAIN_PREROUTING,
            shared("hostports"),
            jump_hostports(),
        ),
        rule(table, CHAIN_OUTPUT, shared("hostports"), jump_hostports()),
        rule(
            table,
            CHAIN_HOSTPORTS,
            shared("dnat-hostip"),
            vec![
                load_ip(IP_DADDR, reg(0)),
                l4proto(reg(1)),
                th_dport(reg(2)),
                lookup(MAP_HOSTPORTS_IP, reg(0), Some(reg(0))),
                dnat_from_reg0(),
            ],
        ),
        rule(
            table,
            CHAIN_HOSTPORTS,
            shared("dnat-any"),
            vec![
                l4proto(reg(0)),
                th_dport(reg(1)),
                lookup(MAP_HOSTPORTS_ANY, reg(0), Some(reg(0))),
                dnat_from_reg0(),
            ],
        ),
    ];
    for (name, offset) in [("gate-saddr", IP_SADDR), ("gate-daddr", IP_DADDR)] {
        out.push(rule(
            table,
            CHAIN_GATE,
            shared(name),
            vec![
                load_ip(offset, reg(0)),
                lookup(SET_PENDING, reg(0), None),
                Expr::Verdict(Verdict::Drop),
            ],
        ));
    }
    let localhost = Ipv4Network::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix");
    let mut lo = ip_in(IP_SADDR, localhost, CmpOp::Eq);
    lo.extend(ct_status_dnat());
    lo.push(Expr::Masq);
    out.push(rule(table, CHAIN_POSTROUTING, shared("masq-localhost"), lo));
    let mut jump = ip_in(IP_SADDR, subnet, CmpOp::Eq);
    jump.push(Expr::Verdict(Verdict::Jump(nchain.clone())));
    out.push(rule(table, CHAIN_POSTROUTING, net("jump"), jump));
    if masquerade {
        let mut m = ip_in(IP_DADDR, subnet, CmpOp::Neq);
        m.push(Expr::Masq);
        out.push(rule(table, &nchain, net("masq"), m));
    }
    let mut h = ct_status_dnat();
    h.extend([
        ct_orig(CtKey::DstIp, reg(0)),
        l4proto(reg(1)),
        ct_orig(CtKey::ProtoDst, reg(2)),
        lookup(MAP_HOSTPORTS_IP, reg(0), None),
        Expr::Masq,
    ]);
    out.push(rule(table, &nchain, net("hairpin-hostip"), h));
    let mut h = ct_status_dnat();
    h.extend([
        l4proto(reg(0)),
        ct_orig(CtKey::ProtoDst, reg(1)),
        lookup(MAP_HOSTPORTS_ANY, reg(0), None),
        Expr::Masq,
    ]);
    out.push(rule(table, &nchain, net("hairpin-any"), h));
    out
}

/// Whether a rule's comment marks it as managed by this network's `ensure`.
pub fn owned(comment: Option<&str>, bridge: &str) -> bool {
    comment.is_some_and(|c| c.starts_with(SHARED_PREFIX) || c.starts_with(&net_prefix(bridge)))
}
