//! The decoders take whatever the kernel (or a broken peer) sends without panicking,
//! and what we encode decodes back to itself.

use kinc_nft::nl::*;
use proptest::prelude::*;

fn expr() -> impl Strategy<Value = Expr> {
    let reg = (0u32..16).prop_map(reg);
    let bytes = proptest::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        (reg.clone(), 0u32..64, 1u32..16).prop_map(|(dreg, offset, len)| Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len,
            dreg
        }),
        (reg.clone(), bytes.clone()).prop_map(|(sreg, data)| Expr::Cmp {
            sreg,
            op: CmpOp::Neq,
            data
        }),
        (reg.clone(), bytes.clone()).prop_map(|(sreg, mask)| Expr::Bitwise {
            sreg,
            dreg: sreg,
            xor: vec![0; mask.len()],
            mask
        }),
        (reg.clone(), "[a-z_]{1,20}", any::<bool>()).prop_map(|(sreg, set, invert)| {
            Expr::Lookup {
                set,
                sreg,
                dreg: None,
                invert,
            }
        }),
        "[a-z-]{1,30}".prop_map(|c| Expr::Verdict(Verdict::Jump(c))),
        Just(Expr::Masq),
        Just(Expr::Counter),
    ]
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Attrs::new(&bytes).count();
        let _ = decode_list(Attrs::new(&bytes));
        let _ = decode_elems(Attrs::new(&bytes));
        let _ = Rule::decode(Family::Ip, Attrs::new(&bytes));
        let _ = decode_chain(Attrs::new(&bytes), "t");
    }

    #[test]
    fn rules_round_trip(exprs in proptest::collection::vec(expr(), 0..12), comment in "[ -~]{0,60}") {
        let r = Rule {
            family: Family::Ip,
            table: "t".into(),
            chain: "c".into(),
            handle: None,
            exprs,
            comment: Some(comment),
        };
        let m = r.add_msg();
        prop_assert_eq!(Rule::decode(Family::Ip, Attrs::new(&m.attrs)), r);
    }
}
