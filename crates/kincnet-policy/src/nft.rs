//! Enforcement in kincnet's nf_tables table (family ip), through `kinc_nft::nl`.
//!
//! ```text
//! table ip <table> {
//!   set policy_in_isolated { type ipv4_addr }          # pods some policy isolates for ingress
//!   set policy_eg_isolated { type ipv4_addr }          # ... for egress
//!   set policy_in_allow { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval }
//!   set policy_eg_allow { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval }
//!   chain policy-forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     ip saddr @policy_eg_isolated jump policy-egress
//!     ip daddr @policy_in_isolated jump policy-ingress }
//!   chain policy-egress  { ip saddr . ip daddr . meta l4proto . th dport @policy_eg_allow return
//!                          counter drop }
//!   chain policy-ingress { ip daddr . ip saddr . meta l4proto . th dport @policy_in_allow return
//!                          counter drop }
//! }
//! ```
//! The forward hook runs after prerouting's DNAT, so service traffic is judged by pod
//! addresses; bridged pod-to-pod traffic reaches it through br_netfilter
//! (`net.bridge.bridge-nf-call-iptables=1`, which kincnet's node keeps on). Traffic the
//! node itself sends (kubelet's probes) takes the output path and is never filtered.
//! The checks end in `drop` rather than in a `!=` lookup, so a packet whose ports cannot
//! be read (NFT_BREAK) is dropped, not waved through.

use std::net::Ipv4Addr;

use kinc_nft::nl::consts::*;
use kinc_nft::nl::{
    concat_type, reg, AttrWriter, BaseChain, Chain, ChainType, CmpOp, CtKey, Expr, Family, Hook,
    MetaKey, Msg, PayloadBase, Rule, Set, Socket, Table, Verdict,
};

use crate::compiled::{AllowElem, Compiled, Diff, DirDiff};
use crate::controller::Enforcer;
use crate::model::Direction;

pub const CHAIN_FORWARD: &str = "policy-forward";
pub const CHAIN_INGRESS: &str = "policy-ingress";
pub const CHAIN_EGRESS: &str = "policy-egress";
pub const SET_IN_ISOLATED: &str = "policy_in_isolated";
pub const SET_EG_ISOLATED: &str = "policy_eg_isolated";
pub const SET_IN_ALLOW: &str = "policy_in_allow";
pub const SET_EG_ALLOW: &str = "policy_eg_allow";

/// `NFTA_SET_ELEM_KEY_END`: the end of an interval element of a concatenated set;
/// kinc-nft's `Elem` has no field for it yet, so elements are encoded here.
const NFTA_SET_ELEM_KEY_END: u16 = 10;
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

fn iso_set(table: &str, name: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: name.into(),
        key_type: TYPE_IPADDR,
        key_fields: vec![4],
        data: None,
        flags: 0,
    }
}

fn allow_set(table: &str, name: &str) -> Set {
    Set {
        family: Family::Ip,
        table: table.into(),
        name: name.into(),
        key_type: concat_type(&[
            TYPE_IPADDR,
            TYPE_IPADDR,
            TYPE_INET_PROTOCOL,
            TYPE_INET_SERVICE,
        ]),
        key_fields: vec![4, 4, 1, 2],
        data: None,
        flags: NFT_SET_INTERVAL,
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

/// Key bytes of one allow element end: each field padded to a 4-byte register.
fn allow_key(local: Ipv4Addr, peer: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&local.octets());
    k.extend_from_slice(&peer.octets());
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
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

    fn sets(&self, d: Direction) -> (Set, Set) {
        match d {
            Direction::Ingress => (
                iso_set(&self.table, SET_IN_ISOLATED),
                allow_set(&self.table, SET_IN_ALLOW),
            ),
            Direction::Egress => (
                iso_set(&self.table, SET_EG_ISOLATED),
                allow_set(&self.table, SET_EG_ALLOW),
            ),
        }
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

    /// Table, sets, chains and rules, idempotently: the chains are flushed and refilled
    /// in the same transaction, the sets keep their elements.
    fn objects(&self) -> Vec<Msg> {
        let t = &self.table;
        let mut msgs = vec![Table {
            family: Family::Ip,
            name: t.clone(),
        }
        .add_msg()];
        let sets = [
            iso_set(t, SET_IN_ISOLATED),
            iso_set(t, SET_EG_ISOLATED),
            allow_set(t, SET_IN_ALLOW),
            allow_set(t, SET_EG_ALLOW),
        ];
        for (i, s) in sets.iter().enumerate() {
            msgs.push(s.add_msg(i as u32 + 1));
        }
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
        for (chain, allow, local, peer) in [
            (CHAIN_EGRESS, SET_EG_ALLOW, IP_SADDR, IP_DADDR),
            (CHAIN_INGRESS, SET_IN_ALLOW, IP_DADDR, IP_SADDR),
        ] {
            let check = vec![
                load(PayloadBase::Network, local, 4, reg(0)),
                load(PayloadBase::Network, peer, 4, reg(1)),
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: reg(2),
                },
                load(PayloadBase::Transport, 2, 2, reg(3)),
                lookup(allow, reg(0)),
                Expr::Verdict(Verdict::Return),
            ];
            msgs.push(self.rule(chain, check).add_msg());
            msgs.push(
                self.rule(chain, vec![Expr::Counter, Expr::Verdict(Verdict::Drop)])
                    .add_msg(),
            );
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

    fn elems_msg(&self, set: &Set, add: bool, elems: &[(Vec<u8>, Option<Vec<u8>>)]) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_SET_ELEM_LIST_TABLE, &set.table)
            .str(NFTA_SET_ELEM_LIST_SET, &set.name)
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                for (key, end) in elems {
                    l.nested(NFTA_LIST_ELEM, |x| {
                        x.nested(NFTA_SET_ELEM_KEY, |k| {
                            k.bytes(NFTA_DATA_VALUE, key);
                        });
                        if let Some(end) = end {
                            x.nested(NFTA_SET_ELEM_KEY_END, |k| {
                                k.bytes(NFTA_DATA_VALUE, end);
                            });
                        }
                    });
                }
            });
        let (kind, flags, verb) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK, "add")
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_ACK, "delete")
        };
        Msg::new(
            kind,
            flags,
            Family::Ip,
            w,
            format!(
                "{verb} {} element(s) of set {} {}",
                elems.len(),
                set.table,
                set.name
            ),
        )
    }

    /// `nft flush set`: a DELSETELEM without an element list.
    fn flush_set_msg(&self, set: &Set) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_SET_ELEM_LIST_TABLE, &set.table)
            .str(NFTA_SET_ELEM_LIST_SET, &set.name);
        Msg::new(
            NFT_MSG_DELSETELEM,
            NLM_F_ACK,
            Family::Ip,
            w,
            format!("flush set {} {}", set.table, set.name),
        )
    }

    fn push_elems(
        &self,
        msgs: &mut Vec<Msg>,
        set: &Set,
        add: bool,
        elems: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) {
        for chunk in elems.chunks(CHUNK) {
            msgs.push(self.elems_msg(set, add, chunk));
        }
    }

    fn dir_msgs(&self, msgs: &mut Vec<Msg>, dir: Direction, d: &DirDiff, add: bool) {
        let (iso, allow) = self.sets(dir);
        let allow_elems = |v: &[(Ipv4Addr, AllowElem)]| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            v.iter()
                .map(|(ip, e)| {
                    (
                        allow_key(*ip, e.peer_lo, e.proto_lo, e.port_lo),
                        Some(allow_key(*ip, e.peer_hi, e.proto_hi, e.port_hi)),
                    )
                })
                .collect()
        };
        let iso_elems = |v: &[Ipv4Addr]| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            v.iter().map(|ip| (ip.octets().to_vec(), None)).collect()
        };
        if add {
            self.push_elems(msgs, &allow, true, allow_elems(&d.add));
            self.push_elems(msgs, &iso, true, iso_elems(&d.isolate));
        } else {
            self.push_elems(msgs, &iso, false, iso_elems(&d.unisolate));
            self.push_elems(msgs, &allow, false, allow_elems(&d.remove));
        }
    }

    fn diff_msgs(&self, diff: &Diff) -> Vec<Msg> {
        let mut msgs = Vec::new();
        for add in [false, true] {
            for dir in [Direction::Ingress, Direction::Egress] {
                self.dir_msgs(&mut msgs, dir, diff.dir(dir), add);
            }
        }
        msgs
    }

    /// Creates (or repairs) the policy objects; keeps programmed elements.
    pub fn ensure(&self) -> Result<(), NftError> {
        let mut sock = Socket::open().map_err(|e| self.err(e))?;
        sock.commit(&self.objects(), None).map_err(|e| self.err(e))
    }
}

impl Enforcer for NftEnforcer {
    type Error = NftError;

    fn apply(&mut self, diff: &Diff) -> Result<(), NftError> {
        let msgs = self.diff_msgs(diff);
        let mut sock = Socket::open().map_err(|e| self.err(e))?;
        sock.commit(&msgs, None).map_err(|e| self.err(e))
    }

    fn replace_all(&mut self, model: &Compiled) -> Result<(), NftError> {
        let mut msgs = self.objects();
        for dir in [Direction::Ingress, Direction::Egress] {
            let (iso, allow) = self.sets(dir);
            msgs.push(self.flush_set_msg(&iso));
            msgs.push(self.flush_set_msg(&allow));
        }
        let all = crate::compiled::diff(&Compiled::default(), model);
        msgs.extend(self.diff_msgs(&all));
        let mut sock = Socket::open().map_err(|e| self.err(e))?;
        sock.commit(&msgs, None).map_err(|e| self.err(e))
    }
}
