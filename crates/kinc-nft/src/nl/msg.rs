//! nf_tables objects (table, chain, set/map, element, rule) and their messages.
//!
//! A message is `struct nlmsghdr` (len u32, type u16, flags u16, seq u32, pid u32; host
//! order) + `struct nfgenmsg` (family u8, version u8, res_id be16) + attributes. The type
//! is `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*`.

use super::attr::{AttrWriter, Attrs};
use super::consts::*;
use super::expr::{self, Expr, Verdict};

/// Address family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet = 1,
    Ip = 2,
    Ip6 = 10,
}

/// One request, not yet numbered. `what` names it in errors ("add rule kinc/postrouting").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub kind: u16,
    pub flags: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
    pub what: String,
}

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;

impl Msg {
    /// A message of nf_tables type `kind` (`NFT_MSG_*`).
    pub fn new(kind: u16, flags: u16, family: Family, w: AttrWriter, what: String) -> Self {
        Msg {
            kind: (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags: NLM_F_REQUEST | flags,
            family: family as u8,
            attrs: w.into_bytes(),
            what,
        }
    }

    /// Appends the wire form with sequence number `seq` to `out`.
    pub fn encode(&self, seq: u32, res_id: u16, out: &mut Vec<u8>) {
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + self.attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills in ours
        out.push(self.family);
        out.push(NFNETLINK_V0);
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(&self.attrs);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
}

/// The hook points of the ip/ip6/inet families (enum nf_inet_hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// What makes a chain a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub ty: ChainType,
    pub hook: Hook,
    /// e.g. -100 (dstnat), 100 (srcnat), 0 (filter).
    pub priority: i32,
    /// Default verdict; `None` leaves the kernel's default (accept).
    pub policy: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub base: Option<BaseChain>,
}

/// A named set or map. Keys and data are raw bytes in register layout: each field of a
/// concatenation takes a multiple of 4 bytes, zero padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// nft datatype id of the key (see [`concat_type`]); only `nft list` reads it.
    pub key_type: u32,
    /// Length in bytes of each key field (before padding), e.g. `[4, 1, 2]`.
    pub key_fields: Vec<u32>,
    /// For a map: datatype id and field lengths of the data; `NFT_DATA_VERDICT` for a vmap.
    pub data: Option<(u32, Vec<u32>)>,
    /// `NFT_SET_*` flags besides `NFT_SET_MAP`, which `data` implies.
    pub flags: u32,
}

/// The datatype id nft gives a concatenation of `types` (`TYPE_BITS` = 6 per member).
pub fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// Bytes a concatenation of fields of these lengths takes in registers.
pub fn concat_len(fields: &[u32]) -> u32 {
    fields.iter().map(|l| (l + 3) & !3).sum()
}

/// A set element (key, and for a map its data).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Elem {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// Set by the kernel; needed to delete one rule.
    pub handle: Option<u64>,
    pub exprs: Vec<Expr>,
    /// Stored as nft's rule comment (udata type 0), so `nft list` shows it.
    pub comment: Option<String>,
}

/// nft's udata TLV (`u8 type, u8 len, value`); type 0 is the rule comment, NUL-terminated.
fn encode_comment(c: &str) -> Vec<u8> {
    let len = (c.len() + 1).min(255);
    let mut v = vec![0u8, len as u8];
    v.extend_from_slice(&c.as_bytes()[..len - 1]);
    v.push(0);
    v
}

fn decode_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], u[1] as usize);
        let val = u.get(2..2 + len)?;
        if ty == 0 {
            let end = val.iter().position(|&b| b == 0).unwrap_or(val.len());
            return Some(String::from_utf8_lossy(&val[..end]).into_owned());
        }
        u = &u[2 + len..];
    }
    None
}

impl Table {
    pub fn add_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_TABLE_NAME, &self.name).be32(NFTA_TABLE_FLAGS, 0);
        Msg::new(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE | NLM_F_ACK,
            self.family,
            w,
            format!("add table {}", self.name),
        )
    }

    pub fn del_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_TABLE_NAME, &self.name);
        Msg::new(
            NFT_MSG_DELTABLE,
            NLM_F_ACK,
            self.family,
            w,
            format!("delete table {}", self.name),
        )
    }
}

impl Chain {
    pub fn add_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_CHAIN_TABLE, &self.table)
            .str(NFTA_CHAIN_NAME, &self.name);
        if let Some(b) = &self.base {
            w.nested(NFTA_CHAIN_HOOK, |h| {
                h.be32(NFTA_HOOK_HOOKNUM, b.hook as u32)
                    .be32(NFTA_HOOK_PRIORITY, b.priority as u32);
            });
            if let Some(p) = &b.policy {
                let code = match p {
                    Verdict::Accept => NF_ACCEPT,
                    _ => NF_DROP,
                };
                w.be32(NFTA_CHAIN_POLICY, code as u32);
            }
            w.str(NFTA_CHAIN_TYPE, b.ty.as_str());
        }
        Msg::new(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE | NLM_F_ACK,
            self.family,
            w,
            format!("add chain {} {}", self.table, self.name),
        )
    }

    /// Deletes every rule of the chain (`nft flush chain`).
    pub fn flush_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_RULE_TABLE, &self.table)
            .str(NFTA_RULE_CHAIN, &self.name);
        Msg::new(
            NFT_MSG_DELRULE,
            NLM_F_ACK,
            self.family,
            w,
            format!("flush chain {} {}", self.table, self.name),
        )
    }

    pub fn del_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_CHAIN_TABLE, &self.table)
            .str(NFTA_CHAIN_NAME, &self.name);
        Msg::new(
            NFT_MSG_DELCHAIN,
            NLM_F_ACK,
            self.family,
            w,
            format!("delete chain {} {}", self.table, self.name),
        )
    }
}

impl Set {
    pub fn key_len(&self) -> u32 {
        concat_len(&self.key_fields)
    }

    /// `id` numbers the set within one batch (`NFTA_SET_ID`).
    pub fn add_msg(&self, id: u32) -> Msg {
        let mut w = AttrWriter::new();
        let mut flags = self.flags;
        if self.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if self.key_fields.len() > 1 {
            // The kernel insists on this flag when NFTA_SET_DESC_CONCAT has > 1 field.
            flags |= NFT_SET_CONCAT;
        }
        w.str(NFTA_SET_TABLE, &self.table)
            .str(NFTA_SET_NAME, &self.name)
            .be32(NFTA_SET_FLAGS, flags)
            .be32(NFTA_SET_KEY_TYPE, self.key_type)
            .be32(NFTA_SET_KEY_LEN, self.key_len());
        if let Some((ty, fields)) = &self.data {
            let len = if *ty == NFT_DATA_VERDICT {
                0
            } else {
                concat_len(fields)
            };
            w.be32(NFTA_SET_DATA_TYPE, *ty).be32(NFTA_SET_DATA_LEN, len);
        }
        w.be32(NFTA_SET_ID, id);
        if self.key_fields.len() > 1 {
            // Field lengths let the kernel (and nft) split the concatenation.
            w.nested(NFTA_SET_DESC, |d| {
                d.nested(NFTA_SET_DESC_CONCAT, |c| {
                    for l in &self.key_fields {
                        c.nested(NFTA_LIST_ELEM, |f| {
                            f.be32(NFTA_SET_FIELD_LEN, *l);
                        });
                    }
                });
            });
        }
        Msg::new(
            NFT_MSG_NEWSET,
            NLM_F_CREATE | NLM_F_ACK,
            self.family,
            w,
            format!("add set {} {}", self.table, self.name),
        )
    }

    fn elems_msg(&self, kind: u16, flags: u16, elems: &[Elem], verb: &str) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_SET_ELEM_LIST_TABLE, &self.table)
            .str(NFTA_SET_ELEM_LIST_SET, &self.name)
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                for e in elems {
                    l.nested(NFTA_LIST_ELEM, |x| encode_elem(x, e));
                }
            });
        Msg::new(
            kind,
            flags,
            self.family,
            w,
            format!(
                "{verb} {} element(s) of set {} {}",
                elems.len(),
                self.table,
                self.name
            ),
        )
    }

    /// Adds elements; an identical existing element is fine, one with other data is EBUSY.
    pub fn add_elems_msg(&self, elems: &[Elem]) -> Msg {
        self.elems_msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK, elems, "add")
    }

    /// Deletes elements (by key); a missing one fails the batch with ENOENT.
    pub fn del_elems_msg(&self, elems: &[Elem]) -> Msg {
        self.elems_msg(NFT_MSG_DELSETELEM, NLM_F_ACK, elems, "delete")
    }

    /// Non-dump GET of the elements with these keys (one reply each).
    pub fn get_elems_msg(&self, elems: &[Elem]) -> Msg {
        self.elems_msg(NFT_MSG_GETSETELEM, 0, elems, "get")
    }

    pub fn dump_elems_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_SET_ELEM_LIST_TABLE, &self.table)
            .str(NFTA_SET_ELEM_LIST_SET, &self.name);
        Msg::new(
            NFT_MSG_GETSETELEM,
            NLM_F_DUMP,
            self.family,
            w,
            format!("list set {} {}", self.table, self.name),
        )
    }
}

fn encode_elem(w: &mut AttrWriter, e: &Elem) {
    w.nested(NFTA_SET_ELEM_KEY, |k| {
        k.bytes(NFTA_DATA_VALUE, &e.key);
    });
    if let Some(d) = &e.data {
        w.nested(NFTA_SET_ELEM_DATA, |k| {
            k.bytes(NFTA_DATA_VALUE, d);
        });
    }
}

/// Decodes the elements of one `NFT_MSG_NEWSETELEM` reply (after the nfgenmsg header).
pub fn decode_elems(attrs: Attrs<'_>) -> Vec<Elem> {
    let Some(list) = attrs.find(NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Vec::new();
    };
    list.nested()
        .filter(|a| a.ty == NFTA_LIST_ELEM)
        .filter_map(|a| {
            let e = a.nested();
            let key = e.find(NFTA_SET_ELEM_KEY)?.nested().find(NFTA_DATA_VALUE)?;
            let data = e
                .find(NFTA_SET_ELEM_DATA)
                .and_then(|d| d.nested().find(NFTA_DATA_VALUE))
                .map(|d| d.data.to_vec());
            Some(Elem {
                key: key.data.to_vec(),
                data,
            })
        })
        .collect()
}

impl Rule {
    /// Appends the rule at the end of its chain.
    pub fn add_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_RULE_TABLE, &self.table)
            .str(NFTA_RULE_CHAIN, &self.chain)
            .nested(NFTA_RULE_EXPRESSIONS, |l| expr::encode_list(&self.exprs, l));
        if let Some(c) = &self.comment {
            w.bytes(NFTA_RULE_USERDATA, &encode_comment(c));
        }
        Msg::new(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            self.family,
            w,
            format!(
                "add rule {} {} ({})",
                self.table,
                self.chain,
                self.comment.as_deref().unwrap_or("no comment")
            ),
        )
    }

    /// Deletes this rule by handle (which must be set).
    pub fn del_msg(&self) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_RULE_TABLE, &self.table)
            .str(NFTA_RULE_CHAIN, &self.chain)
            .be64(NFTA_RULE_HANDLE, self.handle.unwrap_or(0));
        Msg::new(
            NFT_MSG_DELRULE,
            NLM_F_ACK,
            self.family,
            w,
            format!(
                "delete rule {} {} handle {}",
                self.table,
                self.chain,
                self.handle.unwrap_or(0)
            ),
        )
    }

    /// Dump request for the rules of `table` (all its chains, or just `chain`).
    pub fn dump_msg(family: Family, table: &str, chain: Option<&str>) -> Msg {
        let mut w = AttrWriter::new();
        w.str(NFTA_RULE_TABLE, table);
        if let Some(c) = chain {
            w.str(NFTA_RULE_CHAIN, c);
        }
        Msg::new(
            NFT_MSG_GETRULE,
            NLM_F_DUMP,
            family,
            w,
            format!("list rules of table {table}"),
        )
    }

    /// Decodes one `NFT_MSG_NEWRULE` reply.
    pub fn decode(family: Family, attrs: Attrs<'_>) -> Rule {
        Rule {
            family,
            table: attrs
                .find(NFTA_RULE_TABLE)
                .map(|a| a.string())
                .unwrap_or_default(),
            chain: attrs
                .find(NFTA_RULE_CHAIN)
                .map(|a| a.string())
                .unwrap_or_default(),
            handle: attrs.find(NFTA_RULE_HANDLE).and_then(|a| a.be64()),
            exprs: attrs
                .find(NFTA_RULE_EXPRESSIONS)
                .map(|a| expr::decode_list(a.nested()))
                .unwrap_or_default(),
            comment: attrs
                .find(NFTA_RULE_USERDATA)
                .and_then(|a| decode_comment(a.data)),
        }
    }
}

/// Dump request for the chains of `table`.
pub fn dump_chains_msg(family: Family, table: &str) -> Msg {
    let mut w = AttrWriter::new();
    w.str(NFTA_CHAIN_TABLE, table);
    Msg::new(
        NFT_MSG_GETCHAIN,
        NLM_F_DUMP,
        family,
        w,
        format!("list chains of table {table}"),
    )
}

/// Name (and whether it is a base chain) from one `NFT_MSG_NEWCHAIN` reply, if it
/// belongs to `table` (a chain dump's table filter is not honoured by every kernel).
pub fn decode_chain(attrs: Attrs<'_>, table: &str) -> Option<(String, bool)> {
    if attrs.find(NFTA_CHAIN_TABLE)?.string() != table {
        return None;
    }
    let name = attrs.find(NFTA_CHAIN_NAME)?.string();
    Some((name, attrs.find(NFTA_CHAIN_HOOK).is_some()))
}

/// Request for the ruleset generation id (`nft_base_seq`), to guard a batch with.
pub fn getgen_msg() -> Msg {
    Msg::new(
        NFT_MSG_GETGEN,
        0,
        Family::Ip,
        AttrWriter::new(),
        "get ruleset generation".into(),
    )
}

/// Non-dump GET of one table (ENOENT when absent).
pub fn get_table_msg(family: Family, name: &str) -> Msg {
    let mut w = AttrWriter::new();
    w.str(NFTA_TABLE_NAME, name);
    Msg::new(NFT_MSG_GETTABLE, 0, family, w, format!("get table {name}"))
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
