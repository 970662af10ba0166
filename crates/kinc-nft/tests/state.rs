//! What the firewall leaves in nf_tables, read back with our decoder and with `nft -j`.
//! Each test uses its own network namespaces; needs root, `ip` and `nft`.

mod common;

use std::net::Ipv4Addr;

use common::*;
use kinc_nft::nl::{Family, Socket};
use kinc_nft::{FirewallError, NetworkFirewall, PortMapping, Proto};
use serde_json::Value;

fn fw(bridge: &str) -> NetworkFirewall {
    NetworkFirewall {
        table: "kincnet".into(),
        bridge: bridge.into(),
        subnet: SUBNET.parse().unwrap(),
        masquerade: true,
    }
}

fn pm(host_port: u16, container_port: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip: None,
        host_port,
        container_port,
        proto,
    }
}

const A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

/// (chain, comment) of every rule in the table, in order.
fn rules(ns: &Netns) -> Vec<(String, String)> {
    ns.run(|| {
        let mut s = Socket::open().unwrap();
        s.list_rules(Family::Ip, "kincnet", None)
            .unwrap()
            .into_iter()
            .map(|r| {
                // Drop the fingerprint: "kinc:net:br0:jump 1a2b3c4d" -> "kinc:net:br0:jump".
                let c = r.comment.unwrap_or_default();
                let name = c.split(' ').next().unwrap_or_default().to_string();
                (r.chain, name)
            })
            .collect()
    })
}

fn genid(ns: &Netns) -> u32 {
    ns.run(|| Socket::open().unwrap().genid().unwrap())
}

fn objects(json: &Value, kind: &str) -> Vec<Value> {
    json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get(kind).cloned())
        .collect()
}

#[test]
#[ignore = "needs root, ip, nft"]
fn ensure_is_idempotent_and_repairs() {
    kinc_testutil::require_root_and!("ip", "nft");
    let node = Netns::new("knft-node");
    let f = fw("br0");
    node.run(move || f.ensure()).unwrap();
    let first = rules(&node);
    // 9 NAT rules and the pod gate's two.
    assert_eq!(first.len(), 11, "{first:?}");

    // Already in place: no change at all (the ruleset generation does not move).
    let g = genid(&node);
    let f = fw("br0");
    node.run(move || f.ensure()).unwrap();
    assert_eq!(genid(&node), g);
    assert_eq!(rules(&node), first);

    // A rule removed behind our back comes back, in its place.
    let json = node.nft_json(&["-a", "list", "chain", "ip", "kincnet", "hostports"]);
    let handle = objects(&json, "rule")
        .iter()
        .find(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with("kinc:shared:dnat-hostip "))
        })
        .map(|r| r["handle"].as_u64().unwrap())
        .unwrap();
    node.exec(
        "nft",
        &[
            "delete",
            "rule",
            "ip",
            "kincnet",
            "hostports",
            "handle",
            &handle.to_string(),
        ],
    );
    assert_ne!(rules(&node), first);
    let f = fw("br0");
    node.run(move || f.ensure()).unwrap();
    assert_eq!(rules(&node), first);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn parallel_ensures_install_one_copy() {
    kinc_testutil::require_root_and!("ip", "nft");
    let node = Netns::new("knft-node");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let path = format!("/run/netns/{}", node.name);
            std::thread::spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                // SAFETY: this thread only; valid netns fd.
                assert_eq!(
                    unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
                    0
                );
                fw("br0").ensure()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(rules(&node).len(), 11);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn nft_sees_the_table_we_meant() {
    kinc_testutil::require_root_and!("ip", "nft");
    let node = Netns::new("knft-node");
    let f = fw("br0");
    node.run(move || {
        f.ensure()?;
        f.add_pod(
            A,
            &[
                pm(8080, 80, Proto::Tcp),
                PortMapping {
                    host_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    host_port: 53,
                    container_port: 5353,
                    proto: Proto::Udp,
                },
            ],
        )
    })
    .unwrap();
    let json = node.nft_json(&["list", "table", "ip", "kincnet"]);
    let mut chains: Vec<(String, Option<String>, Option<i64>)> = objects(&json, "chain")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["hook"].as_str().map(String::from),
                c["prio"].as_i64(),
            )
        })
        .collect();
    chains.sort();
    assert_eq!(
        chains,
        vec![
            ("hostports".into(), None, None),
            ("nat-br0".into(), None, None),
            ("output".into(), Some("output".into()), Some(-100)),
            ("pod-gate".into(), Some("forward".into()), Some(-10)),
            ("postrouting".into(), Some("postrouting".into()), Some(100)),
            ("prerouting".into(), Some("prerouting".into()), Some(-100)),
        ]
    );
    let maps = objects(&json, "map");
    let any = maps.iter().find(|m| m["name"] == "hostports_any").unwrap();
    assert_eq!(
        any["type"],
        serde_json::json!(["inet_proto", "inet_service"])
    );
    assert_eq!(any["map"], "ipv4_addr . inet_service");
    assert_eq!(
        any["elem"],
        serde_json::json!([[{"concat": ["tcp", 8080]}, {"concat": ["10.99.0.2", 80]}]])
    );
    let ip = maps.iter().find(|m| m["name"] == "hostports_ip").unwrap();
    assert_eq!(
        ip["elem"],
        serde_json::json!([[{"concat": ["192.0.2.1", "udp", 53]}, {"concat": ["10.99.0.2", 5353]}]])
    );
    // The rules, as nft prints them.
    let text = node.exec("nft", &["list", "table", "ip", "kincnet"]);
    for want in [
        "fib daddr type local jump hostports",
        "dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip",
        "dnat ip to meta l4proto . th dport map @hostports_any",
        "ip saddr 127.0.0.0/8 ct status dnat masquerade",
        "ip saddr 10.99.0.0/24 jump nat-br0",
        "ip daddr != 10.99.0.0/24 masquerade",
        "ct status dnat meta l4proto . ct original proto-dst @hostports_any masquerade",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
}

#[test]
#[ignore = "needs root, ip, nft"]
fn elements_follow_pods() {
    kinc_testutil::require_root_and!("ip", "nft");
    let node = Netns::new("knft-node");
    let r = node.run(|| -> Result<(), String> {
        let f = fw("br0");
        // Before ensure: nothing to list or remove, and that is not an error.
        assert_eq!(f.pod_mappings(A).map_err(|e| e.to_string())?, vec![]);
        f.remove_pod(A, &[pm(8080, 80, Proto::Tcp)])
            .map_err(|e| e.to_string())?;
        assert_eq!(f.retain_pods(&[]).map_err(|e| e.to_string())?, 0);
        f.ensure().map_err(|e| e.to_string())?;

        let a = vec![pm(8080, 80, Proto::Tcp), pm(8080, 80, Proto::Udp)];
        f.add_pod(A, &a).map_err(|e| e.to_string())?;
        f.add_pod(A, &a).map_err(|e| e.to_string())?; // same again: fine
        assert_eq!(f.pod_mappings(A).map_err(|e| e.to_string())?, a);

        // Another pod cannot take a port that is in use; the error names the owner.
        match f.add_pod(B, &[pm(8080, 90, Proto::Tcp)]) {
            Err(FirewallError::PortInUse { other, .. }) => {
                assert_eq!(other.to_string(), "10.99.0.2:80")
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
        let b = vec![pm(9090, 90, Proto::Tcp)];
        f.add_pod(B, &b).map_err(|e| e.to_string())?;

        // B's DEL naming A's port removes nothing of A's; a repeated DEL is fine.
        f.remove_pod(B, &a).map_err(|e| e.to_string())?;
        assert_eq!(f.pod_mappings(A).map_err(|e| e.to_string())?, a);
        f.remove_pod(A, &a[..1]).map_err(|e| e.to_string())?;
        f.remove_pod(A, &a[..1]).map_err(|e| e.to_string())?;
        assert_eq!(
            f.pod_mappings(A).map_err(|e| e.to_string())?,
            a[1..].to_vec()
        );

        // GC keeps the listed pods only.
        assert_eq!(f.retain_pods(&[B]).map_err(|e| e.to_string())?, 1);
        assert_eq!(f.pod_mappings(A).map_err(|e| e.to_string())?, vec![]);
        assert_eq!(f.pod_mappings(B).map_err(|e| e.to_string())?, b);
        assert_eq!(f.retain_pods(&[]).map_err(|e| e.to_string())?, 1);
        Ok(())
    });
    r.unwrap();
    let json = node.nft_json(&["list", "table", "ip", "kincnet"]);
    assert!(
        objects(&json, "map")
            .iter()
            .all(|m| m.get("elem").is_none()),
        "{json}"
    );
}

#[test]
#[ignore = "needs root, ip, nft"]
fn networks_share_the_table_and_nothing_else_is_touched() {
    kinc_testutil::require_root_and!("ip", "nft");
    let node = Netns::new("knft-node");
    // Someone else's table, and someone else's rule in our table.
    node.exec("nft", &["add", "table", "ip", "other"]);
    node.exec(
        "nft",
        &[
            "add",
            "chain",
            "ip",
            "other",
            "in",
            "{ type filter hook input priority 0; }",
        ],
    );
    node.exec(
        "nft",
        &[
            "add", "rule", "ip", "other", "in", "tcp", "dport", "22", "counter", "accept",
        ],
    );
    let before = node.exec("nft", &["list", "table", "ip", "other"]);

    let mut f1 = fw("br1");
    f1.subnet = "10.98.0.0/24".parse().unwrap();
    let f0 = fw("br0");
    let (a, b) = (f0.clone(), f1.clone());
    node.run(move || -> Result<(), FirewallError> {
        a.ensure()?;
        b.ensure()?;
        a.add_pod(A, &[pm(8080, 80, Proto::Tcp)])?;
        b.add_pod(Ipv4Addr::new(10, 98, 0, 5), &[pm(9090, 90, Proto::Tcp)])?;
        Ok(())
    })
    .unwrap();
    node.exec(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "kincnet",
            "postrouting",
            "meta",
            "mark",
            "0x1",
            "counter",
            "comment",
            "\"policy\"",
        ],
    );
    let both = rules(&node);
    assert!(both.contains(&("postrouting".into(), "kinc:net:br0:jump".into())));
    assert!(both.contains(&("postrouting".into(), "kinc:net:br1:jump".into())));

    // Re-ensuring one network (even with a changed config) leaves the other and the
    // foreign rule alone.
    let mut a = f0.clone();
    a.masquerade = false;
    node.run(move || a.ensure()).unwrap();
    let after = rules(&node);
    assert!(after.contains(&("postrouting".into(), "kinc:net:br1:jump".into())));
    assert!(after.contains(&("postrouting".into(), "policy".into())));
    assert!(after.contains(&("nat-br1".into(), "kinc:net:br1:masq".into())));
    assert!(!after.contains(&("nat-br0".into(), "kinc:net:br0:masq".into())));
    let (a, b) = (f0.clone(), f1.clone());
    let kept = node
        .run(move || -> Result<_, FirewallError> {
            // GC of br0 removes br0's pod only, not br1's.
            assert_eq!(a.retain_pods(&[])?, 1);
            b.ensure()?;
            b.pod_mappings(Ipv4Addr::new(10, 98, 0, 5))
        })
        .unwrap();
    assert_eq!(kept, vec![pm(9090, 90, Proto::Tcp)]);

    // Removing br1's network leaves br0's rules, the shared ones and the foreign one.
    let b = f1.clone();
    node.run(move || b.remove()).unwrap();
    let left = rules(&node);
    assert!(
        left.iter()
            .all(|(c, n)| c != "nat-br1" && !n.starts_with("kinc:net:br1:")),
        "{left:?}"
    );
    assert!(left.contains(&("postrouting".into(), "kinc:net:br0:jump".into())));
    assert!(left.contains(&("postrouting".into(), "policy".into())));
    assert_eq!(
        left.iter()
            .filter(|(_, n)| n.starts_with("kinc:shared:"))
            .count(),
        7
    );
    let chains = node.exec("nft", &["list", "chains", "ip"]);
    assert!(!chains.contains("nat-br1"), "{chains}");
    let b = f1.clone();
    node.run(move || b.remove()).unwrap(); // again: nothing to do
    assert_eq!(node.exec("nft", &["list", "table", "ip", "other"]), before);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn one_thread_switching_namespaces_acts_in_each() {
    kinc_testutil::require_root_and!("ip", "nft");
    let (n1, n2) = (Netns::new("knft-node"), Netns::new("knft-node"));
    let paths = [
        format!("/run/netns/{}", n1.name),
        format!("/run/netns/{}", n2.name),
    ];
    std::thread::spawn(move || {
        for (i, p) in paths.iter().enumerate() {
            let f = std::fs::File::open(p).unwrap();
            // SAFETY: this thread only; valid netns fd.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            let fw = fw("br0");
            fw.ensure().unwrap();
            fw.add_pod(A, &[pm(8000 + i as u16, 80, Proto::Tcp)])
                .unwrap();
        }
    })
    .join()
    .unwrap();
    for (ns, port) in [(&n1, 8000), (&n2, 8001)] {
        let f = fw("br0");
        let got = ns.run(move || f.pod_mappings(A)).unwrap();
        assert_eq!(got, vec![pm(port, 80, Proto::Tcp)], "in {}", ns.name);
    }
}
