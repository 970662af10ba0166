//! Real traffic through the firewall, in namespaces this test creates: a node with a
//! bridge (10.99.0.1/24) and an uplink (192.0.2.1/24) to an "outside" namespace, and
//! pods on the bridge. Needs root, `ip` and `nft`.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use kinc_nft::{NetworkFirewall, PortMapping, Proto};

fn fw(masquerade: bool) -> NetworkFirewall {
    NetworkFirewall {
        table: "kincnet".into(),
        bridge: "br0".into(),
        subnet: SUBNET.parse().unwrap(),
        masquerade,
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

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[test]
#[ignore = "needs root, ip, nft"]
fn hostports_work_from_everywhere_and_pods_are_masqueraded() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new(2);
    let (pod0, ip0) = (&t.pods[0].0, t.pods[0].1);
    let pod1 = &t.pods[1].0;
    let maps = vec![
        pm(None, 8080, 80, Proto::Tcp),
        pm(None, 5353, 53, Proto::Udp),
        pm(Some(NODE_IP), 8081, 81, Proto::Tcp),
    ];
    let (f, m) = (fw(true), maps.clone());
    t.node
        .run(move || {
            f.ensure()?;
            f.add_pod(ip0, &m)
        })
        .unwrap();

    let _s80 = tcp_server(pod0, sa(Ipv4Addr::UNSPECIFIED, 80));
    let _s81 = tcp_server(pod0, sa(Ipv4Addr::UNSPECIFIED, 81));
    let _s53 = udp_server(pod0, sa(Ipv4Addr::UNSPECIFIED, 53));
    let _out = tcp_server(&t.outside, sa(Ipv4Addr::UNSPECIFIED, 9000));

    // Pod to outside: source translated to the node's uplink address.
    assert_eq!(
        tcp_probe(pod0, sa(OUTSIDE_IP, 9000)).unwrap(),
        NODE_IP.to_string()
    );
    // From outside: DNAT only, the pod sees the real client.
    assert_eq!(
        tcp_probe(&t.outside, sa(NODE_IP, 8080)).unwrap(),
        OUTSIDE_IP.to_string()
    );
    assert_eq!(
        udp_probe(&t.outside, sa(NODE_IP, 5353)).unwrap(),
        OUTSIDE_IP.to_string()
    );
    // From the node itself: 127.0.0.1 (masqueraded to the bridge address), its uplink
    // address and its bridge address.
    assert_eq!(
        tcp_probe(&t.node, sa(Ipv4Addr::LOCALHOST, 8080)).unwrap(),
        GATEWAY.to_string()
    );
    assert!(tcp_probe(&t.node, sa(NODE_IP, 8080)).is_ok());
    assert!(tcp_probe(&t.node, sa(GATEWAY, 8080)).is_ok());
    assert!(udp_probe(&t.node, sa(Ipv4Addr::LOCALHOST, 5353)).is_ok());
    // From another pod, and from the pod itself (hairpin): masqueraded to the gateway.
    assert_eq!(
        tcp_probe(pod1, sa(NODE_IP, 8080)).unwrap(),
        GATEWAY.to_string()
    );
    assert_eq!(
        tcp_probe(pod0, sa(NODE_IP, 8080)).unwrap(),
        GATEWAY.to_string()
    );
    assert_eq!(
        tcp_probe(pod0, sa(GATEWAY, 8080)).unwrap(),
        GATEWAY.to_string()
    );
    assert_eq!(
        udp_probe(pod0, sa(NODE_IP, 5353)).unwrap(),
        GATEWAY.to_string()
    );
    // Pod to pod directly is neither translated nor masqueraded.
    assert_eq!(
        tcp_probe(pod1, sa(ip0, 80)).unwrap(),
        t.pods[1].1.to_string()
    );
    // hostIP restricts the mapping to that destination address.
    assert_eq!(
        tcp_probe(&t.outside, sa(NODE_IP, 8081)).unwrap(),
        OUTSIDE_IP.to_string()
    );
    assert!(tcp_probe(&t.node, sa(GATEWAY, 8081)).is_err());
    assert!(tcp_probe(pod1, sa(GATEWAY, 8081)).is_err());

    // Removing the pod's mappings closes the ports and leaves no element.
    let (f, m) = (fw(true), maps.clone());
    let left = t.node.run(move || {
        f.remove_pod(ip0, &m)?;
        f.pod_mappings(ip0)
    });
    assert_eq!(left.unwrap(), vec![]);
    assert!(tcp_probe(&t.outside, sa(NODE_IP, 8080)).is_err());
    assert!(tcp_probe(&t.node, sa(Ipv4Addr::LOCALHOST, 8080)).is_err());
    let json = t
        .node
        .nft_json(&["list", "map", "ip", "kincnet", "hostports_any"]);
    assert!(json.to_string().find("\"elem\"").is_none(), "{json}");
    // Masquerade of pod traffic is per network, not per pod: still there.
    assert_eq!(
        tcp_probe(pod0, sa(OUTSIDE_IP, 9000)).unwrap(),
        NODE_IP.to_string()
    );
}

#[test]
#[ignore = "needs root, ip, nft"]
fn ensure_switches_masquerade_off_and_on() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new(1);
    // So that unmasqueraded replies find their way back.
    t.outside
        .ip(&["route", "add", SUBNET, "via", &NODE_IP.to_string()]);
    let pod = &t.pods[0].0;
    let _out = tcp_server(&t.outside, sa(Ipv4Addr::UNSPECIFIED, 9000));

    let f = fw(false);
    t.node.run(move || f.ensure()).unwrap();
    assert_eq!(
        tcp_probe(pod, sa(OUTSIDE_IP, 9000)).unwrap(),
        t.pods[0].1.to_string()
    );

    let f = fw(true);
    t.node.run(move || f.ensure()).unwrap();
    assert_eq!(
        tcp_probe(pod, sa(OUTSIDE_IP, 9000)).unwrap(),
        NODE_IP.to_string()
    );
}
