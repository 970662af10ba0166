//! The netlink layer against the kernel: transactions are atomic and name the failing
//! message, the generation guard works, and every modelled expression is accepted by
//! the kernel and decodes back to what was sent. Needs root and `ip`.

mod common;

use common::Netns;
use kinc_nft::nl::*;

const T: &str = "knltest";

fn table() -> Table {
    Table {
        family: Family::Inet,
        name: T.into(),
    }
}

fn chain(name: &str, base: Option<BaseChain>) -> Chain {
    Chain {
        family: Family::Inet,
        table: T.into(),
        name: name.into(),
        base,
    }
}

fn filter_input() -> BaseChain {
    BaseChain {
        ty: ChainType::Filter,
        hook: Hook::Input,
        priority: 0,
        policy: Some(Verdict::Accept),
    }
}

fn rule(chain: &str, exprs: Vec<Expr>) -> Rule {
    Rule {
        family: Family::Inet,
        table: T.into(),
        chain: chain.into(),
        handle: None,
        exprs,
        comment: None,
    }
}

#[test]
#[ignore = "needs root, ip"]
fn failed_transaction_names_the_message_and_applies_nothing() {
    kinc_testutil::require_root_and!("ip");
    let ns = Netns::new("knft-nl");
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        let msgs = vec![
            table().add_msg(),
            chain("c", None).add_msg(),
            rule("c", vec![Expr::Verdict(Verdict::Jump("missing".into()))]).add_msg(),
        ];
        let e = s.commit(&msgs, None).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        assert!(e.to_string().starts_with("add rule knltest c"), "{e}");
        // Nothing of the batch was applied, not even the table.
        assert!(!s.table_exists(Family::Inet, T).unwrap());
        // The same socket still works afterwards.
        s.commit(&msgs[..2], None).unwrap();
        assert!(s.table_exists(Family::Inet, T).unwrap());
    });
}

#[test]
#[ignore = "needs root, ip"]
fn stale_generation_is_refused_as_transient() {
    kinc_testutil::require_root_and!("ip");
    let ns = Netns::new("knft-nl");
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        let g = s.genid().unwrap();
        s.commit(&[table().add_msg()], Some(g)).unwrap();
        // The ruleset moved on since `g` was read.
        let e = s
            .commit(&[chain("c", None).add_msg()], Some(g))
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ERESTART), "{e}");
        assert!(e.is_transient());
        let g2 = s.genid().unwrap();
        assert_ne!(g, g2);
        s.commit(&[chain("c", None).add_msg()], Some(g2)).unwrap();
    });
}

#[test]
#[ignore = "needs root, ip"]
fn every_expression_round_trips_through_the_kernel() {
    kinc_testutil::require_root_and!("ip");
    let ns = Netns::new("knft-nl");
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        let set = Set {
            family: Family::Inet,
            table: T.into(),
            name: "ports".into(),
            key_type: 13, // inet_service
            key_fields: vec![2],
            data: None,
            flags: 0,
        };
        let mut ifname = b"eth0".to_vec();
        ifname.resize(16, 0);
        let r0 = reg(0);
        let rules = vec![
            // iifname "eth0" ip saddr 10.0.0.0/8 th dport != @ports counter accept
            vec![
                Expr::Meta {
                    key: MetaKey::IifName,
                    dreg: r0,
                },
                Expr::Cmp {
                    sreg: r0,
                    op: CmpOp::Eq,
                    data: ifname,
                },
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: r0,
                },
                Expr::Cmp {
                    sreg: r0,
                    op: CmpOp::Eq,
                    data: vec![6],
                },
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    dreg: reg(1),
                },
                Expr::Lookup {
                    set: "ports".into(),
                    sreg: reg(1),
                    dreg: None,
                    invert: true,
                },
                Expr::Counter,
                Expr::Verdict(Verdict::Accept),
            ],
            // ct state established,related ; th dport 1000-2000 ; mark set 7 ; goto c2
            vec![
                Expr::Ct {
                    key: CtKey::State,
                    dir: None,
                    dreg: r0,
                },
                Expr::Bitwise {
                    sreg: r0,
                    dreg: r0,
                    mask: 6u32.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp {
                    sreg: r0,
                    op: CmpOp::Neq,
                    data: vec![0; 4],
                },
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    dreg: r0,
                },
                Expr::Range {
                    sreg: r0,
                    op: CmpOp::Eq,
                    from: vec![3, 232],
                    to: vec![7, 208],
                },
                Expr::Immediate {
                    dreg: r0,
                    data: 7u32.to_ne_bytes().to_vec(),
                },
                Expr::Verdict(Verdict::Goto("c2".into())),
            ],
            vec![Expr::Verdict(Verdict::Drop)],
        ];
        let mut msgs = vec![
            table().add_msg(),
            set.add_msg(1),
            chain("c2", None).add_msg(),
            chain("in", Some(filter_input())).add_msg(),
            set.add_elems_msg(&[Elem::key(vec![0, 22])]),
        ];
        msgs.extend(rules.iter().map(|e| rule("in", e.clone()).add_msg()));
        s.commit(&msgs, None).unwrap();
        let got: Vec<Vec<Expr>> = s
            .list_rules(Family::Inet, T, Some("in"))
            .unwrap()
            .into_iter()
            .map(|r| r.exprs)
            .collect();
        assert_eq!(got, rules);
        assert_eq!(s.list_elems(&set).unwrap(), vec![Elem::key(vec![0, 22])]);
        let mut chains = s.list_chains(Family::Inet, T).unwrap();
        chains.sort();
        assert_eq!(
            chains,
            vec![("c2".to_string(), false), ("in".to_string(), true)]
        );
        assert_eq!(
            s.list_sets(Family::Inet, T).unwrap(),
            vec!["ports".to_string()]
        );
        // Insert at the head and before a handle; flush the set; delete it once unused.
        let handles: Vec<u64> = s
            .list_rules(Family::Inet, T, Some("in"))
            .unwrap()
            .iter()
            .map(|r| r.handle.unwrap())
            .collect();
        let count = |s: &mut Socket| -> Vec<Vec<Expr>> {
            s.list_rules(Family::Inet, T, Some("in"))
                .unwrap()
                .into_iter()
                .map(|r| r.exprs)
                .collect()
        };
        s.commit(
            &[
                rule("in", vec![Expr::Counter]).insert_msg(None),
                rule("in", vec![Expr::Counter, Expr::Counter]).insert_msg(Some(handles[2])),
            ],
            None,
        )
        .unwrap();
        let after = count(&mut s);
        assert_eq!(after.len(), 5);
        assert_eq!(after[0], vec![Expr::Counter]);
        assert_eq!(after[3], vec![Expr::Counter, Expr::Counter]);
        assert_eq!(after[4], rules[2]);
        s.commit(&[set.flush_msg()], None).unwrap();
        assert_eq!(s.list_elems(&set).unwrap(), vec![]);
        let e = s.commit(&[set.del_msg()], None).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
        // Whole-table delete in one message.
        s.commit(&[table().del_msg()], None).unwrap();
        assert!(!s.table_exists(Family::Inet, T).unwrap());
    });
}

#[test]
#[ignore = "needs root, ip"]
fn verdict_maps_and_interval_sets_work_in_the_kernel() {
    kinc_testutil::require_root_and!("ip");
    let ns = Netns::new("knft-nl");
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        // map vm { type ipv4_addr : verdict }
        let vm = Set {
            family: Family::Inet,
            table: T.into(),
            name: "vm".into(),
            key_type: consts::TYPE_IPADDR,
            key_fields: vec![4],
            data: Some((consts::NFT_DATA_VERDICT, vec![])),
            flags: 0,
        };
        // set cidrs { type ipv4_addr; flags interval } (rbtree: start + end elements)
        let cidrs = Set {
            family: Family::Inet,
            table: T.into(),
            name: "cidrs".into(),
            key_type: consts::TYPE_IPADDR,
            key_fields: vec![4],
            data: None,
            flags: consts::NFT_SET_INTERVAL,
        };
        // set pairs { type ipv4_addr . ipv4_addr; flags interval } (pipapo: key + key_end)
        let pairs = Set {
            family: Family::Inet,
            table: T.into(),
            name: "pairs".into(),
            key_type: concat_type(&[consts::TYPE_IPADDR, consts::TYPE_IPADDR]),
            key_fields: vec![4, 4],
            data: None,
            flags: consts::NFT_SET_INTERVAL,
        };
        let vm_elems = vec![
            Elem::vmap(vec![10, 0, 0, 1], Verdict::Jump("c2".into())),
            Elem::vmap(vec![10, 0, 0, 2], Verdict::Drop),
        ];
        let cidr_elems = vec![
            Elem::key(vec![10, 1, 0, 0]),
            Elem::interval_end(vec![10, 1, 1, 0]),
        ];
        let pair_elems = vec![Elem::range(
            vec![10, 0, 0, 0, 10, 2, 0, 0],
            vec![10, 0, 0, 255, 10, 2, 255, 255],
        )];
        let r0 = reg(0);
        let msgs = vec![
            table().add_msg(),
            vm.add_msg(1),
            cidrs.add_msg(2),
            pairs.add_msg(3),
            chain("c2", None).add_msg(),
            chain("in", Some(filter_input())).add_msg(),
            vm.add_elems_msg(&vm_elems),
            cidrs.add_elems_msg(&cidr_elems),
            pairs.add_elems_msg(&pair_elems),
            // ip saddr vmap @vm
            rule(
                "in",
                vec![
                    Expr::Payload {
                        base: PayloadBase::Network,
                        offset: 12,
                        len: 4,
                        dreg: r0,
                    },
                    Expr::Lookup {
                        set: "vm".into(),
                        sreg: r0,
                        dreg: Some(0),
                        invert: false,
                    },
                ],
            )
            .add_msg(),
            // ip saddr . ip daddr @pairs accept
            rule(
                "in",
                vec![
                    Expr::Payload {
                        base: PayloadBase::Network,
                        offset: 12,
                        len: 4,
                        dreg: r0,
                    },
                    Expr::Payload {
                        base: PayloadBase::Network,
                        offset: 16,
                        len: 4,
                        dreg: reg(1),
                    },
                    Expr::Lookup {
                        set: "pairs".into(),
                        sreg: r0,
                        dreg: None,
                        invert: false,
                    },
                    Expr::Verdict(Verdict::Accept),
                ],
            )
            .add_msg(),
        ];
        s.commit(&msgs, None).unwrap();
        let mut got = s.list_elems(&vm).unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got, vm_elems);
        let mut got = s.list_elems(&cidrs).unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got, cidr_elems);
        assert_eq!(s.list_elems(&pairs).unwrap(), pair_elems);
        // A chain that a vmap element jumps to cannot go: EBUSY, nothing applied.
        let e = s.commit(&[chain("c2", None).del_msg()], None).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
        s.commit(&[vm.del_elems_msg(&[Elem::key(vec![10, 0, 0, 2])])], None)
            .unwrap();
        assert_eq!(s.list_elems(&vm).unwrap(), vm_elems[..1].to_vec());
    });
}

#[test]
#[ignore = "needs root, ip"]
fn one_transaction_of_200k_elements_fits_the_socket() {
    kinc_testutil::require_root_and!("ip");
    let ns = Netns::new("knft-nl");
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        // set big { type ipv4_addr . ipv4_addr } (hash)
        let big = Set {
            family: Family::Inet,
            table: T.into(),
            name: "big".into(),
            key_type: concat_type(&[consts::TYPE_IPADDR, consts::TYPE_IPADDR]),
            key_fields: vec![4, 4],
            data: None,
            flags: 0,
        };
        let elems: Vec<Elem> = (0u32..200_000)
            .map(|i| {
                let mut k = 0x0a00_0000u32.wrapping_add(i).to_be_bytes().to_vec();
                k.extend_from_slice(&[10, 1, 0, 1]);
                Elem::key(k)
            })
            .collect();
        let mut msgs = vec![table().add_msg(), big.add_msg(1)];
        msgs.extend(elems.chunks(1000).map(|c| big.add_elems_msg(c)));
        // Some 7 MB in one sendto: more than the 4 MB asked for at open.
        s.commit(&msgs, None).unwrap();
        assert!(s.sndbuf() > 7 << 20, "send buffer {}", s.sndbuf());
        assert_eq!(s.list_elems(&big).unwrap().len(), elems.len());
    });
}
