//! ADD/DEL/CHECK/GC against the kernel, in network namespaces each test creates.
//! Root and `ip`/`nft` are required (skip off CI, fail on CI).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use common::*;
use serde_json::json;

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[test]
#[ignore = "needs root, ip"]
fn pod_to_pod_across_the_bridge() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let (p1, p2) = (Netns::new("knp"), Netns::new("knp"));
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        assert_eq!(
            t.invoke("VERSION", &json!({"cniVersion": v}), "x", None)
                .json["cniVersion"],
            v
        );
    }
    let r1 = t.add(&t.conf("0.4.0"), &unique("c"), &p1);
    let r2 = t.add(&t.conf("1.1.0"), &unique("c"), &p2);
    // Each result is in the version asked for.
    assert_eq!(r1["cniVersion"], "0.4.0");
    assert_eq!(r1["ips"][0]["version"], "4");
    assert_eq!(r2["cniVersion"], "1.1.0");
    assert!(r2["ips"][0].get("version").is_none());
    let (ip1, ip2) = (result_ip(&r1), result_ip(&r2));
    assert_ne!(ip1, ip2);
    // The kernel matches the result: address, MAC, default route, hairpin on the host end.
    assert!(p1
        .ip(&["-4", "-o", "addr", "show", "eth0"])
        .contains(&format!("{ip1}/24")));
    let mac = r1["interfaces"][2]["mac"].as_str().unwrap();
    assert!(p1.ip(&["link", "show", "eth0"]).contains(mac));
    assert!(p1
        .ip(&["route", "show", "default"])
        .contains("via 10.213.0.1 dev eth0"));
    let host = r1["interfaces"][1]["name"].as_str().unwrap();
    let detail = t.node.ip(&["-d", "link", "show", host]);
    assert!(
        detail.contains("master kinc0") && detail.contains("hairpin on"),
        "{detail}"
    );
    assert!(t
        .node
        .ip(&["-4", "addr", "show", "kinc0"])
        .contains("10.213.0.1/24"));
    let fwd = run_ok(&mut t.node.command("cat", &["/proc/sys/net/ipv4/ip_forward"]));
    assert_eq!(fwd.trim(), "1");

    echo_peer_server(&p2.path(), addr(Ipv4Addr::UNSPECIFIED, 8080));
    // Pod to pod keeps the source address (no NAT on the bridge).
    assert_eq!(
        connect_from(&p1.path(), addr(ip2, 8080)),
        Ok(ip1.to_string())
    );
}

/// Runs one nft command in the node netns.
fn nft(t: &Topo, cmd: &str) {
    run_ok(&mut t.node.command("nft", &[cmd]));
}

#[test]
#[ignore = "needs root, ip, nft"]
fn pod_to_pod_is_routed_by_the_node_so_service_replies_and_forward_rules_work() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let (p1, p2) = (Netns::new("knp"), Netns::new("knp"));
    let r1 = t.add(&t.conf("1.1.0"), &unique("c"), &p1);
    let r2 = t.add(&t.conf("1.1.0"), &unique("c"), &p2);
    // A rootless node cannot count on br_netfilter; where the host has it, kincnet
    // turns it off in the node so no bridged path exists that skips the IP hooks.
    let knob = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let bridged = t.node.run(|| std::fs::read_to_string(knob).ok());
    assert!(
        bridged.as_deref().is_none_or(|v| v.trim() == "0"),
        "{bridged:?}"
    );
    let (ip1, ip2) = (result_ip(&r1), result_ip(&r2));
    let host = r1["interfaces"][1]["name"].as_str().unwrap();
    let detail = t.node.ip(&["-d", "link", "show", host]);
    assert!(detail.contains("isolated on"), "{detail}");
    echo_peer_server(&p2.path(), addr(Ipv4Addr::UNSPECIFIED, 8080));
    assert_eq!(
        connect_from(&p1.path(), addr(ip2, 8080)),
        Ok(ip1.to_string())
    );

    // A Service's DNAT: pod 2's reply must cross the node again to be un-DNATed.
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    nft(&t, "add table ip svc");
    nft(
        &t,
        "add chain ip svc pre { type nat hook prerouting priority -100 ; }",
    );
    nft(
        &t,
        &format!("add rule ip svc pre ip daddr {vip} tcp dport 80 dnat to {ip2}:8080"),
    );
    assert_eq!(connect_from(&p1.path(), addr(vip, 80)), Ok(ip1.to_string()));

    // The forward hook, where NetworkPolicy is enforced, sees pod-to-pod packets.
    nft(&t, "add table ip pol");
    nft(
        &t,
        "add chain ip pol pf { type filter hook forward priority 0 ; }",
    );
    nft(
        &t,
        &format!("add rule ip pol pf ip saddr {ip1} ip daddr {ip2} drop"),
    );
    assert!(connect_from(&p1.path(), addr(ip2, 8080)).is_err());
    assert!(connect_from(&p1.path(), addr(vip, 80)).is_err());
    // Redirects would tell pod 1 to go direct, which isolation forbids.
    let redirects = run_ok(
        &mut t
            .node
            .command("cat", &["/proc/sys/net/ipv4/conf/all/send_redirects"]),
    );
    assert_eq!(redirects.trim(), "0");
    // Proxied ARP is answered at once, not after a random delay.
    let delay = run_ok(
        &mut t
            .node
            .command("cat", &["/proc/sys/net/ipv4/neigh/kinc0/proxy_delay"]),
    );
    assert_eq!(delay.trim(), "0");
}

#[test]
#[ignore = "needs root, ip, nft"]
fn pod_reaches_a_node_local_server_through_a_service_dnat() {
    kinc_testutil::require_root_and!("ip", "nft");
    // The `kubernetes` Service: a ClusterIP DNATed to the API server on the node itself.
    let t = Topo::new();
    let p1 = Netns::new("knp");
    let r1 = t.add(&t.conf("1.1.0"), &unique("c"), &p1);
    echo_peer_server(&t.node.path(), addr(NODE_OUT_IP, 6443));
    let vip = Ipv4Addr::new(10, 96, 0, 1);
    nft(&t, "add table ip svc");
    nft(
        &t,
        "add chain ip svc pre { type nat hook prerouting priority -100 ; }",
    );
    nft(
        &t,
        &format!("add rule ip svc pre ip daddr {vip} tcp dport 443 dnat to {NODE_OUT_IP}:6443"),
    );
    assert_eq!(
        connect_from(&p1.path(), addr(vip, 443)),
        Ok(result_ip(&r1).to_string())
    );
}

#[test]
#[ignore = "needs root, ip, nft"]
fn pod_to_outside_is_masqueraded_to_the_node_address() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let p1 = Netns::new("knp");
    let r1 = t.add(&t.conf("1.0.0"), &unique("c"), &p1);
    echo_peer_server(&t.outside.path(), addr(OUTSIDE_IP, 9090));
    let seen = connect_from(&p1.path(), addr(OUTSIDE_IP, 9090));
    assert_eq!(
        seen,
        Ok(NODE_OUT_IP.to_string()),
        "pod {} reached the outside netns untranslated or not at all",
        result_ip(&r1)
    );
}

fn udp_echo_server(ns: &Netns, port: u16) {
    let s = ns.run(|| UdpSocket::bind(addr(Ipv4Addr::UNSPECIFIED, port)).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

fn udp_roundtrip(ns: &Netns, to: SocketAddrV4) -> bool {
    ns.run(|| {
        let s = UdpSocket::bind(addr(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        (0..3).any(|_| {
            let _ = s.send_to(b"ping", to);
            let mut buf = [0u8; 8];
            matches!(s.recv_from(&mut buf), Ok((4, _)))
        })
    })
}

#[test]
#[ignore = "needs root, ip, nft"]
fn host_port_reachable_from_outside_node_other_pod_and_itself() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let (p1, p2) = (Netns::new("knp"), Netns::new("knp"));
    let maps = json!([
        {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 18053, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 18081, "containerPort": 81, "protocol": "tcp", "hostIP": "127.0.0.1"}
    ]);
    let r1 = t.add(&t.conf_with_ports("1.0.0", maps), &unique("c"), &p1);
    let ip1 = result_ip(&r1);
    t.add(&t.conf("1.0.0"), &unique("c"), &p2);
    echo_peer_server(&p1.path(), addr(Ipv4Addr::UNSPECIFIED, 80));
    echo_peer_server(&p1.path(), addr(Ipv4Addr::UNSPECIFIED, 81));
    udp_echo_server(&p1, 53);

    let cases = [
        (
            "outside -> node address",
            t.outside.path(),
            addr(NODE_OUT_IP, 18080),
        ),
        (
            "node -> 127.0.0.1",
            t.node.path(),
            addr(Ipv4Addr::LOCALHOST, 18080),
        ),
        (
            "node -> node address",
            t.node.path(),
            addr(NODE_OUT_IP, 18080),
        ),
        (
            "other pod -> node address",
            p2.path(),
            addr(NODE_OUT_IP, 18080),
        ),
        (
            "pod itself -> node address (hairpin)",
            p1.path(),
            addr(NODE_OUT_IP, 18080),
        ),
        (
            "node -> 127.0.0.1 (hostIP 127.0.0.1)",
            t.node.path(),
            addr(Ipv4Addr::LOCALHOST, 18081),
        ),
    ];
    let mut failures = Vec::new();
    for (what, from, to) in &cases {
        if let Err(e) = connect_from(from, *to) {
            failures.push(format!("{what}: {e}"));
        }
    }
    // hostIP restricts the mapping to that destination.
    if connect_from(&t.outside.path(), addr(NODE_OUT_IP, 18081)).is_ok() {
        failures.push("hostIP 127.0.0.1 mapping answered on the node's outside address".into());
    }
    if !udp_roundtrip(&t.outside, addr(NODE_OUT_IP, 18053)) {
        failures.push("udp outside -> node address: no answer".into());
    }
    assert!(failures.is_empty(), "pod {ip1}: {failures:#?}");
}

#[test]
#[ignore = "needs root, ip"]
fn check_passes_on_healthy_pod_and_fails_without_its_veth() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let p1 = Netns::new("knp");
    let cid = unique("c");
    let conf = t.conf("1.0.0");
    let r = t.add(&conf, &cid, &p1);
    let ok = t.invoke("CHECK", &with_prev(&conf, &r), &cid, Some(&p1.path()));
    assert_eq!(ok.code, 0, "CHECK on a healthy pod: {}", ok.stdout);
    // Address gone: CHECK names it.
    let ip = format!("{}/24", result_ip(&r));
    p1.ip(&["addr", "del", &ip, "dev", "eth0"]);
    let bad = t.invoke("CHECK", &with_prev(&conf, &r), &cid, Some(&p1.path()));
    assert_ne!(bad.code, 0);
    assert!(
        bad.json["msg"].as_str().unwrap().contains(&ip),
        "{}",
        bad.stdout
    );
    // Veth gone: CHECK names the interface.
    t.node
        .ip(&["link", "del", r["interfaces"][1]["name"].as_str().unwrap()]);
    let bad = t.invoke("CHECK", &with_prev(&conf, &r), &cid, Some(&p1.path()));
    assert_ne!(bad.code, 0);
    assert!(
        bad.json["msg"].as_str().unwrap().contains("eth0"),
        "{}",
        bad.stdout
    );
}

#[test]
#[ignore = "needs root, ip, nft"]
fn check_with_port_mapping_compares_the_firewall() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let p1 = Netns::new("knp");
    let cid = unique("c");
    let conf = t.conf_with_ports("1.0.0", json!([{"hostPort": 18090, "containerPort": 80}]));
    let r = t.add(&conf, &cid, &p1);
    let ok = t.invoke("CHECK", &with_prev(&conf, &r), &cid, Some(&p1.path()));
    assert_eq!(ok.code, 0, "CHECK with a hostPort: {}", ok.stdout);
    let other = t.conf_with_ports("1.0.0", json!([{"hostPort": 18091, "containerPort": 80}]));
    let bad = t.invoke("CHECK", &with_prev(&other, &r), &cid, Some(&p1.path()));
    assert_ne!(bad.code, 0);
    assert!(
        bad.json["msg"].as_str().unwrap().contains("port mappings"),
        "{}",
        bad.stdout
    );
}

/// DEL twice, DEL after the veth is gone, DEL after the netns is gone, DEL of an
/// unknown container: all succeed and leave no veth, no allocation, no nft element.
fn del_is_idempotent(with_ports: bool) {
    let t = Topo::new();
    // Each pod its own host ports (a host port maps to one pod).
    let confs: Vec<_> = (0..3u16)
        .map(|i| {
            if with_ports {
                t.conf_with_ports(
                    "1.0.0",
                    json!([{"hostPort": 18100 + 2 * i, "containerPort": 80},
                           {"hostPort": 18101 + 2 * i, "containerPort": 53, "protocol": "udp"}]),
                )
            } else {
                t.conf("1.0.0")
            }
        })
        .collect();
    let pods: Vec<(Netns, String)> = (0..3).map(|_| (Netns::new("knp"), unique("c"))).collect();
    let results: Vec<_> = pods
        .iter()
        .zip(&confs)
        .map(|((p, c), conf)| t.add(conf, c, p))
        .collect();
    let ips: Vec<String> = results.iter().map(|r| result_ip(r).to_string()).collect();
    if with_ports {
        let rules = t.ruleset();
        for ip in &ips {
            assert!(
                rules.contains(ip.as_str()),
                "no nft state for {ip} after ADD:\n{rules}"
            );
        }
    }
    let del = |i: usize| {
        let (p, c) = &pods[i];
        let o = t.invoke(
            "DEL",
            &with_prev(&confs[i], &results[i]),
            c,
            Some(&p.path()),
        );
        assert_eq!(o.code, 0, "DEL {c}: {}", o.stdout);
    };
    // 0: twice.
    del(0);
    del(0);
    // 1: the veth is already gone.
    t.node.ip(&[
        "link",
        "del",
        results[1]["interfaces"][1]["name"].as_str().unwrap(),
    ]);
    del(1);
    // 2: the netns is already gone (as after a runtime removed it).
    run_ok(std::process::Command::new("ip").args(["netns", "del", &pods[2].0.name]));
    del(2);
    // Unknown container, netns path that never existed.
    let o = t.invoke(
        "DEL",
        &confs[0],
        "never-added",
        Some(std::path::Path::new("/run/netns/none")),
    );
    assert_eq!(o.code, 0, "DEL of an unknown container: {}", o.stdout);

    // Netns deletion tears the veth down asynchronously: give it a moment.
    for _ in 0..50 {
        if t.host_veths().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t.host_veths(), Vec::<String>::new(), "veths left");
    assert_eq!(t.allocated_ips(), Vec::<String>::new(), "allocations left");
    let rules = run_ok(&mut t.node.command("nft", &["list", "ruleset"]));
    for ip in &ips {
        assert!(
            !rules.contains(ip.as_str()),
            "nft state left for {ip}:\n{rules}"
        );
    }
}

#[test]
#[ignore = "needs root, ip, nft"]
fn del_is_idempotent_without_ports() {
    kinc_testutil::require_root_and!("ip", "nft");
    del_is_idempotent(false);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn del_is_idempotent_with_ports() {
    kinc_testutil::require_root_and!("ip", "nft");
    del_is_idempotent(true);
}

#[test]
#[ignore = "needs root, ip"]
fn hundred_parallel_adds_get_distinct_addresses() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let conf = t.conf("1.0.0");
    let pods: Vec<(Netns, String)> = (0..100).map(|_| (Netns::new("knp"), unique("c"))).collect();
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in pods.chunks(13) {
            let (t, conf, results) = (&t, &conf, &results);
            s.spawn(move || {
                for (p, c) in chunk {
                    let r = t.add(conf, c, p);
                    results.lock().unwrap().push((p, result_ip(&r)));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut ips: Vec<Ipv4Addr> = results.iter().map(|(_, ip)| *ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 100, "duplicate addresses handed out");
    for (p, ip) in &results {
        assert!(p
            .ip(&["-4", "-o", "addr", "show", "eth0"])
            .contains(&format!("{ip}/24")));
    }
    assert_eq!(t.allocated_ips().len(), 100);
    assert_eq!(t.host_veths().len(), 100);
}

#[test]
#[ignore = "needs root, ip"]
fn sigkill_mid_add_then_gc_leaks_nothing() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let conf = t.conf("1.1.0");
    let keep = Netns::new("knp");
    let keep_cid = unique("c");
    t.add(&conf, &keep_cid, &keep);
    // Killed deterministically after its veth and allocation exist.
    let victim = Netns::new("knp");
    let mut cmd = plugin_command(&t.node.path(), "ADD", "victim", Some(&victim.path()));
    cmd.env("KINCNET_TEST_STALL_AFTER_VETH", "1");
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
    }
    for _ in 0..200 {
        if t.host_veths().len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        t.host_veths().len(),
        2,
        "the killed ADD should have left its veth"
    );
    assert_eq!(
        t.allocated_ips().len(),
        2,
        "the killed ADD should have left its allocation"
    );
    // Killed at random points: the store is never torn.
    for i in 0..20u64 {
        let ns = Netns::new("knp");
        let mut child = plugin_command(&t.node.path(), "ADD", &format!("rnd{i}"), Some(&ns.path()))
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(conf.to_string().as_bytes())
                .unwrap();
        }
        std::thread::sleep(Duration::from_micros(150 * i));
        let _ = child.kill();
        let _ = child.wait();
        let _ = t.store(); // panics if the file is not whole JSON
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep_cid, "ifname": "eth0"}]);
    let o = t.invoke("GC", &gc, "", None);
    assert_eq!(o.code, 0, "GC: {}", o.stdout);
    assert_eq!(
        t.allocated_ips().len(),
        1,
        "allocations left: {}",
        t.store()
    );
    assert_eq!(t.host_veths().len(), 1, "veths left: {:?}", t.host_veths());
}

#[test]
#[ignore = "needs root, ip"]
fn gc_with_partial_list_frees_the_rest() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let conf = t.conf("1.1.0");
    let pods: Vec<(Netns, String)> = (0..4).map(|_| (Netns::new("knp"), unique("c"))).collect();
    let rs: Vec<_> = pods.iter().map(|(p, c)| t.add(&conf, c, p)).collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": pods[0].1, "ifname": "eth0"},
        {"containerID": pods[1].1, "ifname": "eth0"}
    ]);
    let o = t.invoke("GC", &gc, "", None);
    assert_eq!(o.code, 0, "GC: {}", o.stdout);
    let mut left = t.allocated_ips();
    left.sort();
    let mut want: Vec<String> = rs[..2].iter().map(|r| result_ip(r).to_string()).collect();
    want.sort();
    assert_eq!(left, want);
    let mut veths = t.host_veths();
    veths.sort();
    let mut want_veths: Vec<String> = rs[..2]
        .iter()
        .map(|r| r["interfaces"][1]["name"].as_str().unwrap().to_string())
        .collect();
    want_veths.sort();
    assert_eq!(veths, want_veths);
    // STATUS: fine while addresses are left.
    assert_eq!(t.invoke("STATUS", &conf, "", None).code, 0);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn gc_removes_port_mappings_of_freed_pods() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let conf = t.conf_with_ports("1.1.0", json!([{"hostPort": 18200, "containerPort": 80}]));
    let p = Netns::new("knp");
    let r = t.add(&conf, &unique("c"), &p);
    let ip = result_ip(&r).to_string();
    assert!(t.ruleset().contains(&ip));
    let mut gc = t.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(t.invoke("GC", &gc, "", None).code, 0);
    assert!(!t.ruleset().contains(&ip), "nft state left for {ip}");
    assert!(t.allocated_ips().is_empty());
}

#[test]
#[ignore = "needs root, ip"]
fn status_reports_an_exhausted_range() {
    kinc_testutil::require_root_and!("ip");
    let t = Topo::new();
    let mut conf = t.conf("1.1.0");
    conf["ipam"]["rangeStart"] = json!("10.213.0.2");
    conf["ipam"]["rangeEnd"] = json!("10.213.0.2");
    assert_eq!(t.invoke("STATUS", &conf, "", None).code, 0);
    let p = Netns::new("knp");
    t.add(&conf, &unique("c"), &p);
    let o = t.invoke("STATUS", &conf, "", None);
    assert_eq!(o.json["code"], 50, "{}", o.stdout);
    let p2 = Netns::new("knp");
    let o = t.invoke("ADD", &conf, &unique("c"), Some(&p2.path()));
    assert_ne!(o.code, 0);
    assert!(o.json["msg"]
        .as_str()
        .unwrap()
        .contains("no IP addresses available"));
    // The failed ADD left nothing behind.
    assert_eq!(t.host_veths().len(), 1);
}
