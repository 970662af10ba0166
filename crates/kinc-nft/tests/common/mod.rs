//! Test topology: network namespaces created with `ip`, removed on drop (also on panic).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use kinc_testutil::run;

pub fn ip(args: &[&str]) {
    run("ip", args);
}

pub use kinc_testutil::netns::Netns;

/// `nft -j <args>` inside a namespace, parsed.
pub trait NftJson {
    fn nft_json(&self, args: &[&str]) -> serde_json::Value;
}

impl NftJson for Netns {
    fn nft_json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = vec!["-j"];
        v.extend_from_slice(args);
        serde_json::from_str(&self.exec("nft", &v)).expect("nft -j output is JSON")
    }
}

/// node (bridge br0 10.99.0.1/24, uplink 192.0.2.1/24), outside (192.0.2.2), pods on br0.
pub struct Topo {
    pub node: Netns,
    pub outside: Netns,
    pub pods: Vec<(Netns, Ipv4Addr)>,
}

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const SUBNET: &str = "10.99.0.0/24";

impl Topo {
    pub fn new(npods: usize) -> Topo {
        let node = Netns::new("knft-node");
        node.sysctl("net.ipv4.ip_forward", "1");
        node.sysctl("net.ipv4.conf.all.route_localnet", "1");
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        node.ip(&["addr", "add", "10.99.0.1/24", "dev", "br0"]);
        node.ip(&["link", "set", "br0", "up"]);
        let outside = Netns::new("knft-out");
        node.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        node.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        node.ip(&["link", "set", "up0", "up"]);
        outside.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        let mut pods = Vec::new();
        for i in 0..npods {
            let pod = Netns::new("knft-pod");
            let addr = Ipv4Addr::new(10, 99, 0, 2 + i as u8);
            let host = format!("vp{i}");
            node.ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            node.ip(&["link", "set", &host, "master", "br0", "up"]);
            node.ip(&[
                "link",
                "set",
                &host,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            pod.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "default", "via", "10.99.0.1"]);
            pods.push((pod, addr));
        }
        Topo {
            node,
            outside,
            pods,
        }
    }
}

/// A TCP server in `ns` on `port` that answers each connection with the peer address it
/// sees, until dropped. Returns once it listens.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn tcp_server(ns: &Netns, addr: SocketAddrV4) -> Server {
    let l = ns.run(move || TcpListener::bind(addr).expect("bind"));
    l.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, peer)) => {
                    let _ = c.write_all(peer.ip().to_string().as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server { stop }
}

pub fn udp_server(ns: &Netns, addr: SocketAddrV4) -> Server {
    let s = ns.run(move || UdpSocket::bind(addr).expect("bind udp"));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !s2.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        }
    });
    Server { stop }
}

/// Connects from `ns` to `to`; returns the address the server saw us as, or the error.
pub fn tcp_probe(ns: &Netns, to: SocketAddrV4) -> Result<String, String> {
    ns.run(move || {
        let mut c = TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(2))
            .map_err(|e| format!("connect {to}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s)
            .map_err(|e| format!("read from {to}: {e}"))?;
        Ok(s)
    })
}

/// Sends a datagram from `ns` to `to`, waits for the answer (the peer address seen).
pub fn udp_probe(ns: &Netns, to: SocketAddrV4) -> Result<String, String> {
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            s.send_to(b"hi", to)
                .map_err(|e| format!("send {to}: {e}"))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(format!("no udp answer from {to}"))
    })
}
