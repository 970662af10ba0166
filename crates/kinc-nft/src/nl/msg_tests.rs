//! Golden vectors for whole messages, derived from the uapi structs (see msg.rs).

use super::*;

#[test]
fn add_table_message_golden() {
    let t = Table {
        family: Family::Ip,
        name: "k".into(),
    };
    let mut out = Vec::new();
    t.add_msg().encode(7, 0, &mut out);
    #[rustfmt::skip]
    let want = vec![
        36, 0, 0, 0,           // nlmsg_len = 16 + 4 + 8 + 8
        0, 10,                 // nlmsg_type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE (LE u16 0x0a00)
        0x05, 0x04,            // flags = REQUEST | ACK | CREATE (0x405)
        7, 0, 0, 0,            // seq
        0, 0, 0, 0,            // pid
        2, 0, 0, 0,            // nfgenmsg: NFPROTO_IPV4, NFNETLINK_V0, res_id 0
        6, 0, 1, 0, b'k', 0, 0, 0, // NFTA_TABLE_NAME "k"
        8, 0, 2, 0, 0, 0, 0, 0,    // NFTA_TABLE_FLAGS = 0
    ];
    assert_eq!(out, want);
}

#[test]
fn add_base_chain_message_golden() {
    let c = Chain {
        family: Family::Ip,
        table: "k".into(),
        name: "pre".into(),
        base: Some(BaseChain {
            ty: ChainType::Nat,
            hook: Hook::Prerouting,
            priority: -100,
            policy: Some(Verdict::Accept),
        }),
    };
    let m = c.add_msg();
    assert_eq!(m.kind, 0x0a03);
    #[rustfmt::skip]
    let want = vec![
        6, 0, 1, 0, b'k', 0, 0, 0,                 // NFTA_CHAIN_TABLE
        8, 0, 3, 0, b'p', b'r', b'e', 0,           // NFTA_CHAIN_NAME
        20, 0, 4, 0x80,                            // NFTA_CHAIN_HOOK
        8, 0, 1, 0, 0, 0, 0, 0,                    //   HOOKNUM = NF_INET_PRE_ROUTING
        8, 0, 2, 0, 0xff, 0xff, 0xff, 0x9c,        //   PRIORITY = -100
        8, 0, 5, 0, 0, 0, 0, 1,                    // NFTA_CHAIN_POLICY = NF_ACCEPT
        8, 0, 7, 0, b'n', b'a', b't', 0,           // NFTA_CHAIN_TYPE "nat"
    ];
    assert_eq!(m.attrs, want);
}

#[test]
fn concatenated_map_message_golden() {
    // nft: map m { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
    let s = Set {
        family: Family::Ip,
        table: "k".into(),
        name: "m".into(),
        key_type: concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        key_fields: vec![4, 1, 2],
        data: Some((concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), vec![4, 2])),
        flags: 0,
    };
    assert_eq!(s.key_type, 29453); // ((7 << 6 | 12) << 6) | 13
    assert_eq!(s.key_len(), 12);
    #[rustfmt::skip]
    let want = vec![
        6, 0, 1, 0, b'k', 0, 0, 0,                 // NFTA_SET_TABLE
        6, 0, 2, 0, b'm', 0, 0, 0,                 // NFTA_SET_NAME
        8, 0, 3, 0, 0, 0, 0, 0x88,                 // NFTA_SET_FLAGS = NFT_SET_MAP | NFT_SET_CONCAT
        8, 0, 4, 0, 0, 0, 0x73, 0x0d,              // NFTA_SET_KEY_TYPE = 29453
        8, 0, 5, 0, 0, 0, 0, 12,                   // NFTA_SET_KEY_LEN = 4 + 4 + 4
        8, 0, 6, 0, 0, 0, 0x01, 0xcd,              // NFTA_SET_DATA_TYPE = 461
        8, 0, 7, 0, 0, 0, 0, 8,                    // NFTA_SET_DATA_LEN = 4 + 4
        8, 0, 10, 0, 0, 0, 0, 1,                   // NFTA_SET_ID
        44, 0, 9, 0x80,                            // NFTA_SET_DESC
        40, 0, 2, 0x80,                            //   NFTA_SET_DESC_CONCAT
        12, 0, 1, 0x80, 8, 0, 1, 0, 0, 0, 0, 4,    //     field len 4
        12, 0, 1, 0x80, 8, 0, 1, 0, 0, 0, 0, 1,    //     field len 1
        12, 0, 1, 0x80, 8, 0, 1, 0, 0, 0, 0, 2,    //     field len 2
    ];
    assert_eq!(s.add_msg(1).attrs, want);
}

#[test]
fn elements_round_trip_through_the_reply_decoder() {
    let s = Set {
        family: Family::Ip,
        table: "k".into(),
        name: "m".into(),
        key_type: 0,
        key_fields: vec![1, 2],
        data: Some((0, vec![4, 2])),
        flags: 0,
    };
    let elems = vec![
        Elem {
            key: vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
            data: Some(vec![10, 0, 0, 2, 0, 80, 0, 0]),
        },
        Elem {
            key: vec![17, 0, 0, 0, 0, 53, 0, 0],
            data: None,
        },
    ];
    // A NEWSETELEM reply carries the same attributes as the request.
    let m = s.add_elems_msg(&elems);
    assert_eq!(decode_elems(Attrs::new(&m.attrs)), elems);
}

#[test]
fn rule_comment_is_nft_udata_and_round_trips() {
    let r = Rule {
        family: Family::Ip,
        table: "k".into(),
        chain: "c".into(),
        handle: None,
        exprs: vec![Expr::Masq],
        comment: Some("kinc:x".into()),
    };
    let m = r.add_msg();
    assert_eq!(
        m.flags,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK
    );
    let back = Rule::decode(Family::Ip, Attrs::new(&m.attrs));
    assert_eq!(back, r);
    let ud = Attrs::new(&m.attrs).find(NFTA_RULE_USERDATA).unwrap();
    assert_eq!(ud.data, b"\x00\x07kinc:x\x00");
}
