//! Golden vectors derived by hand from the uapi layout (see attr.rs for the TLV format):
//! every attribute is `len:u16 type:u16` (host order, x86 little endian), nested ones carry
//! `NLA_F_NESTED` (0x8000) in the type, integers inside are big endian, strings end in NUL.

use super::*;

fn enc(e: &Expr) -> Vec<u8> {
    let mut w = AttrWriter::new();
    e.encode(&mut w);
    w.into_bytes()
}

#[test]
fn payload_ip_saddr_golden() {
    let e = Expr::Payload {
        base: PayloadBase::Network,
        offset: 12,
        len: 4,
        dreg: reg(0),
    };
    #[rustfmt::skip]
    let want = vec![
        52, 0, 1, 0x80,                                   // NFTA_LIST_ELEM (nested), 52 bytes
        12, 0, 1, 0, b'p', b'a', b'y', b'l', b'o', b'a', b'd', 0, // NFTA_EXPR_NAME "payload"
        36, 0, 2, 0x80,                                   // NFTA_EXPR_DATA (nested)
        8, 0, 1, 0, 0, 0, 0, 8,                           // NFTA_PAYLOAD_DREG = NFT_REG32_00
        8, 0, 2, 0, 0, 0, 0, 1,                           // NFTA_PAYLOAD_BASE = network header
        8, 0, 3, 0, 0, 0, 0, 12,                          // NFTA_PAYLOAD_OFFSET = 12 (saddr)
        8, 0, 4, 0, 0, 0, 0, 4,                           // NFTA_PAYLOAD_LEN = 4
    ];
    assert_eq!(enc(&e), want);
}

#[test]
fn cmp_eq_golden() {
    let e = Expr::Cmp {
        sreg: reg(1),
        op: CmpOp::Eq,
        data: vec![6],
    };
    #[rustfmt::skip]
    let want = vec![
        44, 0, 1, 0x80,
        8, 0, 1, 0, b'c', b'm', b'p', 0,                  // "cmp"
        32, 0, 2, 0x80,
        8, 0, 1, 0, 0, 0, 0, 9,                           // NFTA_CMP_SREG = NFT_REG32_01
        8, 0, 2, 0, 0, 0, 0, 0,                           // NFTA_CMP_OP = NFT_CMP_EQ
        12, 0, 3, 0x80,                                   // NFTA_CMP_DATA (nested nft_data)
        5, 0, 1, 0, 6, 0, 0, 0,                           // NFTA_DATA_VALUE = [6], padded
    ];
    assert_eq!(enc(&e), want);
}

#[test]
fn jump_verdict_golden() {
    let e = Expr::Verdict(Verdict::Jump("hp".into()));
    #[rustfmt::skip]
    let want = vec![
        56, 0, 1, 0x80,
        14, 0, 1, 0, b'i', b'm', b'm', b'e', b'd', b'i', b'a', b't', b'e', 0, 0, 0,
        36, 0, 2, 0x80,
        8, 0, 1, 0, 0, 0, 0, 0,                           // NFTA_IMMEDIATE_DREG = verdict
        24, 0, 2, 0x80,                                   // NFTA_IMMEDIATE_DATA
        20, 0, 2, 0x80,                                   // NFTA_DATA_VERDICT
        8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd,               // NFTA_VERDICT_CODE = NFT_JUMP (-3)
        7, 0, 2, 0, b'h', b'p', 0, 0,                     // NFTA_VERDICT_CHAIN "hp"
    ];
    assert_eq!(enc(&e), want);
}

#[test]
fn inverted_lookup_golden() {
    let e = Expr::Lookup {
        set: "s".into(),
        sreg: reg(0),
        dreg: None,
        invert: true,
    };
    #[rustfmt::skip]
    let want = vec![
        44, 0, 1, 0x80,
        11, 0, 1, 0, b'l', b'o', b'o', b'k', b'u', b'p', 0, 0,
        28, 0, 2, 0x80,
        6, 0, 1, 0, b's', 0, 0, 0,                        // NFTA_LOOKUP_SET "s"
        8, 0, 2, 0, 0, 0, 0, 8,                           // NFTA_LOOKUP_SREG
        8, 0, 5, 0, 0, 0, 0, 1,                           // NFTA_LOOKUP_FLAGS = NFT_LOOKUP_F_INV
    ];
    assert_eq!(enc(&e), want);
}

#[test]
fn dnat_golden() {
    let e = Expr::Nat {
        kind: NatType::Dnat,
        family: NFPROTO_IPV4,
        addr_reg: Some(reg(0)),
        proto_reg: Some(reg(1)),
        flags: 0,
    };
    #[rustfmt::skip]
    let want = vec![
        48, 0, 1, 0x80,
        8, 0, 1, 0, b'n', b'a', b't', 0,
        36, 0, 2, 0x80,
        8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_NAT_TYPE = NFT_NAT_DNAT
        8, 0, 2, 0, 0, 0, 0, 2,                           // NFTA_NAT_FAMILY = NFPROTO_IPV4
        8, 0, 3, 0, 0, 0, 0, 8,                           // NFTA_NAT_REG_ADDR_MIN
        8, 0, 5, 0, 0, 0, 0, 9,                           // NFTA_NAT_REG_PROTO_MIN
    ];
    assert_eq!(enc(&e), want);
}

#[test]
fn every_modelled_expression_round_trips() {
    let all = vec![
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: reg(2),
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: reg(1),
        },
        Expr::Meta {
            key: MetaKey::OifName,
            dreg: reg(0),
        },
        Expr::Ct {
            key: CtKey::DstIp,
            dir: Some(CtDir::Original),
            dreg: reg(0),
        },
        Expr::Ct {
            key: CtKey::Status,
            dir: None,
            dreg: reg(0),
        },
        Expr::Fib {
            result: 3,
            flags: 2,
            dreg: reg(0),
        },
        Expr::Cmp {
            sreg: reg(0),
            op: CmpOp::Neq,
            data: vec![10, 0, 0, 0],
        },
        Expr::Bitwise {
            sreg: reg(0),
            dreg: reg(0),
            mask: vec![255, 255, 255, 0],
            xor: vec![0; 4],
        },
        Expr::Range {
            sreg: reg(0),
            op: CmpOp::Eq,
            from: vec![0, 80],
            to: vec![0, 90],
        },
        Expr::Lookup {
            set: "m".into(),
            sreg: reg(0),
            dreg: Some(reg(0)),
            invert: false,
        },
        Expr::Immediate {
            dreg: reg(3),
            data: vec![1, 2, 3, 4],
        },
        Expr::Verdict(Verdict::Accept),
        Expr::Verdict(Verdict::Goto("x".into())),
        Expr::Verdict(Verdict::Return),
        Expr::Counter,
        Expr::Nat {
            kind: NatType::Snat,
            family: NFPROTO_IPV4,
            addr_reg: Some(reg(0)),
            proto_reg: None,
            flags: 0,
        },
        Expr::Masq,
    ];
    let mut w = AttrWriter::new();
    encode_list(&all, &mut w);
    let bytes = w.into_bytes();
    assert_eq!(decode_list(Attrs::new(&bytes)), all);
}

#[test]
fn unknown_expression_is_kept_raw() {
    let e = Expr::Other {
        name: "quota".into(),
        data: vec![12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9],
    };
    let bytes = enc(&e);
    let back = decode_list(Attrs::new(&bytes));
    assert_eq!(back, vec![e]);
}

#[test]
fn registers_dumped_under_old_names_decode_to_32bit_ones() {
    // The kernel answers NFT_REG32_00 (8) as NFT_REG_1 (1) and NFT_REG32_04 as NFT_REG_2.
    let mut w = AttrWriter::new();
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: 1,
    }
    .encode(&mut w);
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: 2,
    }
    .encode(&mut w);
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: 9,
    }
    .encode(&mut w);
    let bytes = w.into_bytes();
    let regs: Vec<u32> = decode_list(Attrs::new(&bytes))
        .into_iter()
        .map(|e| match e {
            Expr::Meta { dreg, .. } => dreg,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(regs, vec![reg(0), reg(4), reg(1)]);
}
