use super::*;

fn fw() -> NetworkFirewall {
    NetworkFirewall {
        table: "kincnet".into(),
        bridge: "kinc0".into(),
        subnet: "10.88.0.0/16".parse().unwrap(),
        masquerade: true,
    }
}

fn pm(host_ip: Option<Ipv4Addr>, host_port: u16, container_port: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip,
        host_port,
        container_port,
        proto,
    }
}

#[test]
fn element_keys_follow_register_layout() {
    let (map, key) = key_and_map(&pm(None, 8080, 80, Proto::Tcp));
    assert_eq!(map, MAP_HOSTPORTS_ANY);
    assert_eq!(key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    let (map, key) = key_and_map(&pm(Some(Ipv4Addr::new(192, 0, 2, 1)), 53, 5353, Proto::Udp));
    assert_eq!(map, MAP_HOSTPORTS_IP);
    assert_eq!(key, [192, 0, 2, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
    assert_eq!(
        target(Ipv4Addr::new(10, 88, 0, 2), 80),
        [10, 88, 0, 2, 0, 80, 0, 0]
    );
}

#[test]
fn elements_parse_back_to_mappings() {
    for m in [
        pm(None, 8080, 80, Proto::Tcp),
        pm(Some(Ipv4Addr::new(192, 0, 2, 1)), 53, 5353, Proto::Udp),
    ] {
        let (map, key) = key_and_map(&m);
        let to = Ipv4Addr::new(10, 88, 0, 9);
        let e = Elem::map(key, target(to, m.container_port));
        let (back, dst) = parse_elem(map, &e).unwrap();
        assert_eq!(back, m);
        assert_eq!(dst, SocketAddrV4::new(to, m.container_port));
    }
}

#[test]
fn maps_key_lengths_match_element_keys() {
    assert_eq!(rules::map_hostports_ip("t").key_len(), 12);
    assert_eq!(rules::map_hostports_any("t").key_len(), 8);
}

#[test]
fn rules_are_all_owned_and_masquerade_is_optional() {
    let f = fw();
    let with = rules::rules(&f.table, &f.bridge, f.subnet, true);
    let without = rules::rules(&f.table, &f.bridge, f.subnet, false);
    assert_eq!(with.len(), without.len() + 1);
    assert!(with
        .iter()
        .all(|r| rules::owned(r.comment.as_deref(), "kinc0")));
    // Another network's rules are not this one's to repair, shared ones are.
    let net: Vec<_> = with
        .iter()
        .filter(|r| {
            !r.comment
                .as_deref()
                .unwrap()
                .starts_with(rules::SHARED_PREFIX)
        })
        .collect();
    assert!(net
        .iter()
        .all(|r| !rules::owned(r.comment.as_deref(), "kinc1")));
    assert!(with.iter().any(|r| r.chain == "nat-kinc0"));
    // Every jump target is a chain that ensure creates.
    let chains: Vec<_> = rules::chains("kincnet", "kinc0")
        .into_iter()
        .map(|c| c.name)
        .collect();
    for r in &with {
        assert!(chains.contains(&r.chain), "{} not created", r.chain);
        for e in &r.exprs {
            if let crate::nl::Expr::Verdict(crate::nl::Verdict::Jump(c)) = e {
                assert!(chains.contains(c), "jump to {c} not created");
            }
        }
    }
}

#[test]
fn masquerade_rule_compares_masked_subnet() {
    let f = fw();
    let r = rules::rules(&f.table, &f.bridge, f.subnet, true);
    let masq = r
        .iter()
        .find(|r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c.starts_with("kinc:net:kinc0:masq "))
        })
        .unwrap();
    assert!(masq.exprs.contains(&crate::nl::Expr::Bitwise {
        sreg: crate::nl::reg(0),
        dreg: crate::nl::reg(0),
        mask: vec![255, 255, 0, 0],
        xor: vec![0; 4],
    }));
    assert!(masq.exprs.contains(&crate::nl::Expr::Cmp {
        sreg: crate::nl::reg(0),
        op: crate::nl::CmpOp::Neq,
        data: vec![10, 88, 0, 0],
    }));
}

#[test]
fn no_mappings_means_no_work_at_all() {
    // Invalid on purpose: returning Ok proves nothing was validated or opened.
    let f = NetworkFirewall {
        table: String::new(),
        ..fw()
    };
    assert!(f.add_pod(Ipv4Addr::new(10, 88, 0, 2), &[]).is_ok());
    assert!(f.remove_pod(Ipv4Addr::new(10, 88, 0, 2), &[]).is_ok());
}

#[test]
fn bad_config_and_mappings_are_named() {
    let f = NetworkFirewall {
        bridge: "a-very-long-bridge-name".into(),
        ..fw()
    };
    let e = f.ensure().unwrap_err().to_string();
    assert!(e.contains("bridge"), "{e}");
    let e = fw()
        .add_pod(Ipv4Addr::new(10, 88, 0, 2), &[pm(None, 0, 80, Proto::Tcp)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("hostPort must not be 0"), "{e}");
}

#[test]
fn port_mapping_serde_uses_cni_names() {
    let m: PortMapping = serde_json::from_str(
        r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}"#,
    )
    .unwrap();
    assert_eq!(m, pm(Some(Ipv4Addr::LOCALHOST), 8080, 80, Proto::Tcp));
    let m: PortMapping =
        serde_json::from_str(r#"{"hostPort":53,"containerPort":53,"protocol":"udp"}"#).unwrap();
    assert_eq!(m.host_ip, None);
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"hostPort":53,"containerPort":53,"protocol":"udp"}"#
    );
}

#[test]
fn fingerprints_follow_content_and_shared_rules_agree_across_networks() {
    let comments = |bridge: &str, subnet: &str, masq: bool| -> Vec<String> {
        rules::rules("kincnet", bridge, subnet.parse().unwrap(), masq)
            .into_iter()
            .map(|r| r.comment.unwrap())
            .collect()
    };
    let a = comments("kinc0", "10.88.0.0/16", true);
    let b = comments("kinc1", "10.89.0.0/16", true);
    let shared = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|c| c.starts_with(rules::SHARED_PREFIX))
            .cloned()
            .collect()
    };
    // Two networks must not fight over the shared rules.
    assert_eq!(shared(&a), shared(&b));
    // hostports x2, dnat-hostip, dnat-any, masq-localhost, and the pod gate's two.
    assert_eq!(shared(&a).len(), 7);
    // Another subnet changes the per-network fingerprints, so ensure repairs them.
    let c = comments("kinc0", "10.77.0.0/16", true);
    let jump = |v: &[String]| {
        v.iter()
            .find(|c| c.starts_with("kinc:net:kinc0:jump "))
            .cloned()
    };
    assert_ne!(jump(&a), jump(&c));
    assert!(jump(&a).unwrap().len() == "kinc:net:kinc0:jump ".len() + 8);
}

/// Hostile input (issue 17, item 3): thousands of mappings used to overflow the u16
/// length of one message's element list, and the encoder's assert aborted the plugin.
#[test]
fn many_mappings_are_split_into_messages_that_fit() {
    let ip = Ipv4Addr::new(10, 88, 0, 2);
    let maps: Vec<PortMapping> = (1..=4000u16)
        .map(|p| pm(None, p, 80, Proto::Tcp))
        .chain((1..=1500u16).map(|p| pm(Some(Ipv4Addr::new(192, 0, 2, 1)), p, 80, Proto::Udp)))
        .collect();
    let msgs = fw().add_msgs(ip, &maps).unwrap();
    assert_eq!(
        msgs.len(),
        4000usize.div_ceil(ELEMS_PER_MSG) + 1500usize.div_ceil(ELEMS_PER_MSG)
    );
    for m in &msgs {
        assert!(
            m.attrs.len() < 60_000,
            "{}: {} bytes",
            m.what,
            m.attrs.len()
        );
    }
    let total: usize = msgs
        .iter()
        .map(|m| m.what.split(' ').nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(total, 5500);
}

/// Hostile input (issue 17, item 2): the same mapping twice is programmed once (twice
/// in one batch, its later delete failed with ENOENT forever); one host port to two
/// container ports is refused instead of letting the kernel keep the last.
#[test]
fn duplicate_mappings_once_and_contradictions_refused() {
    let ip = Ipv4Addr::new(10, 88, 0, 2);
    let m = pm(None, 18080, 80, Proto::Tcp);
    let msgs = fw().add_msgs(ip, &[m.clone(), m.clone()]).unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].what.starts_with("add 1 element"),
        "{}",
        msgs[0].what
    );
    // Same port, other protocol or other hostIP: distinct keys, both kept.
    let msgs = fw()
        .add_msgs(
            ip,
            &[
                m.clone(),
                pm(None, 18080, 80, Proto::Udp),
                pm(Some(Ipv4Addr::LOCALHOST), 18080, 81, Proto::Tcp),
            ],
        )
        .unwrap();
    let n: usize = msgs
        .iter()
        .map(|m| m.what.split(' ').nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(n, 3);
    let e = fw()
        .add_msgs(ip, &[m, pm(None, 18080, 81, Proto::Tcp)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mapped twice"), "{e}");
}
