//! Test pods: network namespaces on a real bridge, made with `ip`, removed on drop
//! (also on panic), with in-process TCP/UDP servers and probes.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kincnet_policy::model::PROTO_TCP;

pub use kinc_testutil::run;

pub use kinc_testutil::netns::{enter, Netns};

/// TCP and UDP servers in one namespace: TCP accepts and closes, UDP echoes.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Netns, ports: &[(u8, u16)]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &(proto, port) in ports {
            let (file, stop) = (ns.file(), stop.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            threads.push(std::thread::spawn(move || {
                enter(&file);
                let addr = SocketAddr::from(([0, 0, 0, 0], port));
                if proto == PROTO_TCP {
                    let l = TcpListener::bind(addr).expect("bind tcp");
                    l.set_nonblocking(true).unwrap();
                    tx.send(()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                } else {
                    let s = UdpSocket::bind(addr).expect("bind udp");
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(&buf[..n], from);
                        }
                    }
                }
            }));
            rx.recv().expect("server started");
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether a new connection from inside `from` reaches `to:port`.
pub fn probe(from: &File, to: Ipv4Addr, proto: u8, port: u16, timeout: Duration) -> bool {
    enter(from);
    let addr = SocketAddr::V4(SocketAddrV4::new(to, port));
    if proto == PROTO_TCP {
        TcpStream::connect_timeout(&addr, timeout).is_ok()
    } else {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind probe");
        s.set_read_timeout(Some(timeout)).unwrap();
        if s.send_to(b"probe", addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        // Retry once: the first datagram may be spent on ARP resolution.
        for _ in 0..2 {
            if let Ok(n) = s.recv(&mut buf) {
                return &buf[..n] == b"probe";
            }
            let _ = s.send_to(b"probe", addr);
        }
        false
    }
}

/// Reads a sysctl inside the calling thread's namespace.
pub fn sysctl_read(path: &str) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    s.trim().to_string()
}
