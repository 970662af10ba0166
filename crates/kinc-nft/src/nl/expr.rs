//! Rule expressions: the typed form, its netlink encoding and its decoding.
//!
//! Each expression travels as `NFTA_LIST_ELEM { NFTA_EXPR_NAME "<name>", NFTA_EXPR_DATA {..} }`
//! inside `NFTA_RULE_EXPRESSIONS`. Registers are the 32-bit ones (`NFT_REG32_00` = 8 ..),
//! as nft uses them: a concatenation puts each field in its own 4-byte register, zero padded.

use super::attr::{Attr, AttrWriter, Attrs};
use super::consts::*;

/// The `n`th 32-bit data register (`NFT_REG32_00 + n`).
pub const fn reg(n: u32) -> u32 {
    NFT_REG32_00 + n
}

/// Where a payload expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    LinkLayer = 0,
    Network = 1,
    Transport = 2,
}

/// `meta` keys (enum nft_meta_keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    Iif = 4,
    Oif = 5,
    IifName = 6,
    OifName = 7,
    L4Proto = 16,
}

/// `ct` keys (enum nft_ct_keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State = 0,
    Status = 2,
    Mark = 3,
    ProtoSrc = 11,
    ProtoDst = 12,
    SrcIp = 19,
    DstIp = 20,
}

/// Conntrack tuple direction (`IP_CT_DIR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    Original = 0,
    Reply = 1,
}

/// `cmp`/`range` operators (enum nft_cmp_ops; range uses EQ/NEQ only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatType {
    Snat = 0,
    Dnat = 1,
}

/// A verdict, as in `immediate` with the verdict register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
            Verdict::Continue => NFT_CONTINUE,
            Verdict::Return => NFT_RETURN,
            Verdict::Jump(_) => NFT_JUMP,
            Verdict::Goto(_) => NFT_GOTO,
        }
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        w.nested(NFTA_DATA_VERDICT, |v| {
            v.be32(NFTA_VERDICT_CODE, self.code() as u32);
            if let Verdict::Jump(c) | Verdict::Goto(c) = self {
                v.str(NFTA_VERDICT_CHAIN, c);
            }
        });
    }

    pub(crate) fn decode(data: Attrs<'_>) -> Option<Verdict> {
        let v = data.find(NFTA_DATA_VERDICT)?.nested();
        let code = v.find(NFTA_VERDICT_CODE)?.be32()? as i32;
        let chain = || v.find(NFTA_VERDICT_CHAIN).map(|a| a.string());
        Some(match code {
            NF_ACCEPT => Verdict::Accept,
            NF_DROP => Verdict::Drop,
            NFT_CONTINUE => Verdict::Continue,
            NFT_RETURN => Verdict::Return,
            NFT_JUMP => Verdict::Jump(chain()?),
            NFT_GOTO => Verdict::Goto(chain()?),
            _ => return None,
        })
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    Ct {
        key: CtKey,
        dir: Option<CtDir>,
        dreg: u32,
    },
    /// `fib` lookup; `result` 3 = address type, `flags` 2 = daddr.
    Fib {
        result: u32,
        flags: u32,
        dreg: u32,
    },
    /// Compare `sreg` with `data`; a mismatch ends the rule (NFT_BREAK).
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `sreg` within [from, to] (or not, for Neq).
    Range {
        sreg: u32,
        op: CmpOp,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Set/map lookup of the key starting at `sreg`; a map writes its data to `dreg`.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    /// Load a constant into a data register.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    Counter,
    /// NAT to the address (and port) held in registers.
    Nat {
        kind: NatType,
        family: u8,
        addr_reg: Option<u32>,
        proto_reg: Option<u32>,
        flags: u32,
    },
    Masq,
    /// Anything this crate does not model, kept as raw attributes (decode only).
    Other {
        name: String,
        data: Vec<u8>,
    },
}

fn value(w: &mut AttrWriter, ty: u16, bytes: &[u8]) {
    w.nested(ty, |d| {
        d.bytes(NFTA_DATA_VALUE, bytes);
    });
}

impl Expr {
    /// The kernel's name for this expression type.
    pub fn name(&self) -> &str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Range { .. } => "range",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Counter => "counter",
            Expr::Nat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Other { name, .. } => name,
        }
    }

    /// Writes the `NFTA_EXPR_DATA` attributes.
    fn encode_data(&self, w: &mut AttrWriter) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.be32(NFTA_PAYLOAD_DREG, *dreg)
                    .be32(NFTA_PAYLOAD_BASE, *base as u32)
                    .be32(NFTA_PAYLOAD_OFFSET, *offset)
                    .be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Meta { key, dreg } => {
                w.be32(NFTA_META_KEY, *key as u32)
                    .be32(NFTA_META_DREG, *dreg);
            }
            Expr::Ct { key, dir, dreg } => {
                w.be32(NFTA_CT_KEY, *key as u32);
                if let Some(d) = dir {
                    w.u8(NFTA_CT_DIRECTION, *d as u8);
                }
                w.be32(NFTA_CT_DREG, *dreg);
            }
            Expr::Fib {
                result,
                flags,
                dreg,
            } => {
                w.be32(NFTA_FIB_DREG, *dreg)
                    .be32(NFTA_FIB_RESULT, *result)
                    .be32(NFTA_FIB_FLAGS, *flags);
            }
            Expr::Cmp { sreg, op, data } => {
                w.be32(NFTA_CMP_SREG, *sreg).be32(NFTA_CMP_OP, *op as u32);
                value(w, NFTA_CMP_DATA, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.be32(NFTA_BITWISE_SREG, *sreg)
                    .be32(NFTA_BITWISE_DREG, *dreg)
                    .be32(NFTA_BITWISE_LEN, mask.len() as u32);
                value(w, NFTA_BITWISE_MASK, mask);
                value(w, NFTA_BITWISE_XOR, xor);
            }
            Expr::Range { sreg, op, from, to } => {
                w.be32(NFTA_RANGE_SREG, *sreg)
                    .be32(NFTA_RANGE_OP, *op as u32);
                value(w, NFTA_RANGE_FROM_DATA, from);
                value(w, NFTA_RANGE_TO_DATA, to);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                w.str(NFTA_LOOKUP_SET, set).be32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    w.be32(NFTA_LOOKUP_DREG, *d);
                }
                if *invert {
                    w.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate { dreg, data } => {
                w.be32(NFTA_IMMEDIATE_DREG, *dreg);
                value(w, NFTA_IMMEDIATE_DATA, data);
            }
            Expr::Verdict(v) => {
                w.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                w.nested(NFTA_IMMEDIATE_DATA, |d| v.encode(d));
            }
            Expr::Counter => {
                w.be64(NFTA_COUNTER_BYTES, 0).be64(NFTA_COUNTER_PACKETS, 0);
            }
            Expr::Nat {
                kind,
                family,
                addr_reg,
                proto_reg,
                flags,
            } => {
                w.be32(NFTA_NAT_TYPE, *kind as u32)
                    .be32(NFTA_NAT_FAMILY, *family as u32);
                if let Some(r) = addr_reg {
                    w.be32(NFTA_NAT_REG_ADDR_MIN, *r);
                }
                if let Some(r) = proto_reg {
                    w.be32(NFTA_NAT_REG_PROTO_MIN, *r);
                }
                if *flags != 0 {
                    w.be32(NFTA_NAT_FLAGS, *flags);
                }
            }
            Expr::Masq => {}
            Expr::Other { data, .. } => w.buf.extend_from_slice(data),
        }
    }

    /// Writes this expression as one `NFTA_LIST_ELEM`.
    pub fn encode(&self, w: &mut AttrWriter) {
        w.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, self.name());
            e.nested(NFTA_EXPR_DATA, |d| self.encode_data(d));
        });
    }

    /// Decodes one `NFTA_LIST_ELEM` of `NFTA_RULE_EXPRESSIONS`. Unknown or partly
    /// understood expressions come back as [`Expr::Other`].
    pub fn decode(elem: Attr<'_>) -> Expr {
        let a = elem.nested();
        let name = a
            .find(NFTA_EXPR_NAME)
            .map(|n| n.string())
            .unwrap_or_default();
        let raw = a.find(NFTA_EXPR_DATA).map(|d| d.data).unwrap_or_default();
        decode_known(&name, Attrs::new(raw)).unwrap_or_else(|| Expr::Other {
            name,
            data: raw.to_vec(),
        })
    }
}

fn data_value(a: &Attrs<'_>, ty: u16) -> Option<Vec<u8>> {
    Some(a.find(ty)?.nested().find(NFTA_DATA_VALUE)?.data.to_vec())
}

/// The kernel dumps a 32-bit register that starts a 16-byte one under the old name
/// (`nft_dump_register`: NFT_REG32_00 -> NFT_REG_1, ..04 -> NFT_REG_2, ..); map it back.
fn norm_reg(r: u32) -> u32 {
    match r {
        1..=4 => NFT_REG32_00 + (r - 1) * 4,
        r => r,
    }
}

fn decode_known(name: &str, a: Attrs<'_>) -> Option<Expr> {
    let u = |ty| a.find(ty).and_then(|x| x.be32());
    let r = |ty| u(ty).map(norm_reg);
    Some(match name {
        "payload" => Expr::Payload {
            base: match u(NFTA_PAYLOAD_BASE)? {
                0 => PayloadBase::LinkLayer,
                1 => PayloadBase::Network,
                2 => PayloadBase::Transport,
                _ => return None,
            },
            offset: u(NFTA_PAYLOAD_OFFSET)?,
            len: u(NFTA_PAYLOAD_LEN)?,
            dreg: r(NFTA_PAYLOAD_DREG)?,
        },
        "meta" => Expr::Meta {
            key: match u(NFTA_META_KEY)? {
                3 => MetaKey::Mark,
                4 => MetaKey::Iif,
                5 => MetaKey::Oif,
                6 => MetaKey::IifName,
                7 => MetaKey::OifName,
                16 => MetaKey::L4Proto,
                _ => return None,
            },
            dreg: r(NFTA_META_DREG)?,
        },
        "ct" => Expr::Ct {
            key: match u(NFTA_CT_KEY)? {
                0 => CtKey::State,
                2 => CtKey::Status,
                3 => CtKey::Mark,
                11 => CtKey::ProtoSrc,
                12 => CtKey::ProtoDst,
                19 => CtKey::SrcIp,
                20 => CtKey::DstIp,
                _ => return None,
            },
            dir: match a.find(NFTA_CT_DIRECTION).map(|d| d.data.first().copied()) {
                None => None,
                Some(Some(0)) => Some(CtDir::Original),
                Some(Some(1)) => Some(CtDir::Reply),
                Some(_) => return None,
            },
            dreg: r(NFTA_CT_DREG)?,
        },
        "fib" => Expr::Fib {
            result: u(NFTA_FIB_RESULT)?,
            flags: u(NFTA_FIB_FLAGS)?,
            dreg: r(NFTA_FIB_DREG)?,
        },
        "cmp" => Expr::Cmp {
            sreg: r(NFTA_CMP_SREG)?,
            op: cmp_op(u(NFTA_CMP_OP)?)?,
            data: data_value(&a, NFTA_CMP_DATA)?,
        },
        "bitwise" => Expr::Bitwise {
            sreg: r(NFTA_BITWISE_SREG)?,
            dreg: r(NFTA_BITWISE_DREG)?,
            mask: data_value(&a, NFTA_BITWISE_MASK)?,
            xor: data_value(&a, NFTA_BITWISE_XOR)?,
        },
        "range" => Expr::Range {
            sreg: r(NFTA_RANGE_SREG)?,
            op: cmp_op(u(NFTA_RANGE_OP)?)?,
            from: data_value(&a, NFTA_RANGE_FROM_DATA)?,
            to: data_value(&a, NFTA_RANGE_TO_DATA)?,
        },
        "lookup" => Expr::Lookup {
            set: a.find(NFTA_LOOKUP_SET)?.string(),
            sreg: r(NFTA_LOOKUP_SREG)?,
            dreg: r(NFTA_LOOKUP_DREG),
            invert: u(NFTA_LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
        },
        "immediate" => {
            let dreg = r(NFTA_IMMEDIATE_DREG)?;
            let data = a.find(NFTA_IMMEDIATE_DATA)?.nested();
            if dreg == NFT_REG_VERDICT {
                Expr::Verdict(Verdict::decode(data)?)
            } else {
                Expr::Immediate {
                    dreg,
                    data: data.find(NFTA_DATA_VALUE)?.data.to_vec(),
                }
            }
        }
        "counter" => Expr::Counter,
        "nat" => Expr::Nat {
            kind: match u(NFTA_NAT_TYPE)? {
                0 => NatType::Snat,
                1 => NatType::Dnat,
                _ => return None,
            },
            family: u(NFTA_NAT_FAMILY)? as u8,
            addr_reg: r(NFTA_NAT_REG_ADDR_MIN),
            proto_reg: r(NFTA_NAT_REG_PROTO_MIN),
            // The kernel reports the flags it derived (MAP_IPS, PROTO_SPECIFIED) too;
            // keep only what a caller could have asked for beyond those.
            flags: u(NFTA_NAT_FLAGS).unwrap_or(0) & !0x3,
        },
        "masq" => Expr::Masq,
        _ => return None,
    })
}

fn cmp_op(v: u32) -> Option<CmpOp> {
    Some(match v {
        0 => CmpOp::Eq,
        1 => CmpOp::Neq,
        2 => CmpOp::Lt,
        3 => CmpOp::Lte,
        4 => CmpOp::Gt,
        5 => CmpOp::Gte,
        _ => return None,
    })
}

/// Encodes a whole expression list as the payload of `NFTA_RULE_EXPRESSIONS`.
pub fn encode_list(exprs: &[Expr], w: &mut AttrWriter) {
    for e in exprs {
        e.encode(w);
    }
}

/// Decodes the payload of `NFTA_RULE_EXPRESSIONS`.
pub fn decode_list(a: Attrs<'_>) -> Vec<Expr> {
    a.filter(|e| e.ty == NFTA_LIST_ELEM)
        .map(Expr::decode)
        .collect()
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
