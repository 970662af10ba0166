//! ensure / add_pod / remove_pod latency of kinc-nft against the same work done by
//! exec'ing `nft` (the peer), side by side in one run, in a network namespace the
//! benchmark creates. Needs root, `ip` and `nft`; prints a table of medians, p95 and
//! ratios (kinc-nft / nft).
//!
//! `cargo bench -p kinc-nft --bench firewall` (KINC_NFT_BENCH_N overrides the rounds).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use kinc_nft::nl::{close_cached_sockets, Family, Socket, Table};
use kinc_nft::{NetworkFirewall, PortMapping, Proto};

const TABLE: &str = "kincbench";

fn nft(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut cmd = Command::new("nft");
    cmd.args(args);
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    cmd.stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn nft");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "nft {args:?} failed");
}

/// The table ensure() builds, as an nft script (what a shell-out design would load).
/// nft 1.0.6 prints but cannot parse `ct original proto-dst` inside a concatenation, so
/// the two hairpin rules are stand-ins of similar size.
fn script() -> String {
    format!(
        r#"table ip {TABLE} {{
  map hostports_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
  map hostports_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
  chain hostports {{
    dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip
    dnat ip to meta l4proto . th dport map @hostports_any
  }}
  chain nat-br0 {{
    ip daddr != 10.99.0.0/24 masquerade
    ct status dnat ct original ip daddr 192.0.2.1 meta l4proto tcp masquerade
    ct status dnat meta l4proto udp masquerade
  }}
  chain prerouting {{ type nat hook prerouting priority dstnat; fib daddr type local jump hostports; }}
  chain output {{ type nat hook output priority -100; fib daddr type local jump hostports; }}
  chain postrouting {{ type nat hook postrouting priority srcnat;
    ip saddr 127.0.0.0/8 ct status dnat masquerade
    ip saddr 10.99.0.0/24 jump nat-br0
  }}
}}
"#
    )
}

fn drop_table() {
    let mut s = Socket::open().unwrap();
    let t = Table {
        family: Family::Ip,
        name: TABLE.into(),
    };
    if s.table_exists(Family::Ip, TABLE).unwrap() {
        s.commit(&[t.del_msg()], None).unwrap();
    }
}

#[derive(Clone)]
struct Stats {
    median: Duration,
    p95: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        p95: v[(v.len() * 95 / 100).min(v.len() - 1)],
    }
}

fn time(n: usize, mut before: impl FnMut(), mut f: impl FnMut()) -> Stats {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        before();
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    stats(v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || Command::new("nft").arg("-v").output().is_err() {
        eprintln!("SKIP firewall bench: needs root and nft");
        return;
    }
    let n: usize = std::env::var("KINC_NFT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let ns = format!("knftbench{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let path = format!("/run/netns/{ns}");
    let rows = std::thread::spawn(move || {
        let f = File::open(path).unwrap();
        // SAFETY: this thread only; a valid netns fd. Children of this thread (nft)
        // inherit the namespace.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        run(n)
    })
    .join();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let rows = rows.expect("benchmark thread panicked");
    println!("kinc-nft vs nft(8) exec, N={n} rounds each, in a fresh netns (ms)");
    println!(
        "{:<42} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "operation", "ours med", "ours p95", "nft med", "nft p95", "ratio"
    );
    for (name, ours, peer) in rows {
        println!(
            "{:<42} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.3}x",
            name,
            ms(ours.median),
            ms(ours.p95),
            ms(peer.median),
            ms(peer.p95),
            ms(ours.median) / ms(peer.median)
        );
    }
}

fn run(n: usize) -> Vec<(&'static str, Stats, Stats)> {
    let fw = NetworkFirewall {
        table: TABLE.into(),
        bridge: "br0".into(),
        subnet: "10.99.0.0/24".parse().unwrap(),
        masquerade: true,
    };
    let ip = Ipv4Addr::new(10, 99, 0, 2);
    let one = [PortMapping {
        host_ip: None,
        host_port: 8080,
        container_port: 80,
        proto: Proto::Tcp,
    }];
    let script = script();
    let mut rows = Vec::new();

    let ours = time(n, drop_table, || fw.ensure().unwrap());
    let peer = time(n, drop_table, || nft(&["-f", "-"], Some(&script)));
    rows.push(("ensure, table absent (nft -f)", ours, peer));

    fw.ensure().unwrap();
    let ours = time(n, || {}, || fw.ensure().unwrap());
    let peer = time(
        n,
        || {},
        || nft(&["-j", "list", "table", "ip", TABLE], None),
    );
    rows.push(("ensure, in place (nft -j list)", ours, peer));

    let elem = "{ tcp . 8080 : 10.99.0.2 . 80 }";
    let key = "{ tcp . 8080 }";
    let add = ["add", "element", "ip", TABLE, "hostports_any", elem];
    let del = ["delete", "element", "ip", TABLE, "hostports_any", key];
    let flush = ["flush", "map", "ip", TABLE, "hostports_any"];
    let peer_add = time(n, || nft(&flush, None), || nft(&add, None));
    let peer_rm = time(n, || nft(&add, None), || nft(&del, None));
    nft(&flush, None);

    // This thread keeps its socket between calls (as a long-lived caller would)...
    let ours = time(
        n,
        || fw.remove_pod(ip, &one).unwrap(),
        || fw.add_pod(ip, &one).unwrap(),
    );
    rows.push(("add_pod, 1 hostPort (add element)", ours, peer_add.clone()));
    let ours = time(
        n,
        || fw.add_pod(ip, &one).unwrap(),
        || fw.remove_pod(ip, &one).unwrap(),
    );
    rows.push((
        "remove_pod, 1 hostPort (delete element)",
        ours,
        peer_rm.clone(),
    ));
    // ...and as a one-shot process (a CNI plugin) that also closes it right away: the
    // close waits for the kernel's deferred destroy work, one RCU grace period after a
    // delete (nft pays the same at its exit).
    let ours = time(
        n,
        || {
            fw.remove_pod(ip, &one).unwrap();
            close_cached_sockets();
        },
        || {
            fw.add_pod(ip, &one).unwrap();
            close_cached_sockets();
        },
    );
    rows.push(("add_pod + close socket", ours, peer_add));
    let ours = time(
        n,
        || {
            fw.add_pod(ip, &one).unwrap();
            close_cached_sockets();
        },
        || {
            fw.remove_pod(ip, &one).unwrap();
            close_cached_sockets();
        },
    );
    rows.push(("remove_pod + close socket", ours, peer_rm));

    let none: [PortMapping; 0] = [];
    let ours = time(n, || {}, || fw.add_pod(ip, &none).unwrap());
    let peer = time(
        n,
        || {},
        || {
            Command::new("true").status().unwrap();
        },
    );
    rows.push(("add_pod, no hostPort (exec true)", ours, peer));

    // Cost per pod must not grow with the pods already mapped: 2000 other mappings.
    for i in 0..2000u32 {
        let other = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 98, 0, 0)) + i);
        let m = [PortMapping {
            host_ip: None,
            host_port: 20000 + i as u16,
            container_port: 80,
            proto: Proto::Tcp,
        }];
        fw.add_pod(other, &m).unwrap();
    }
    let ours = time(
        n,
        || fw.remove_pod(ip, &one).unwrap(),
        || fw.add_pod(ip, &one).unwrap(),
    );
    let peer_add = time(n, || nft(&del, None), || nft(&add, None));
    rows.push(("add_pod with 2000 mapped pods", ours, peer_add));
    let ours = time(
        n,
        || fw.add_pod(ip, &one).unwrap(),
        || fw.remove_pod(ip, &one).unwrap(),
    );
    let peer_rm = time(n, || nft(&add, None), || nft(&del, None));
    rows.push(("remove_pod with 2000 mapped pods", ours, peer_rm));
    drop_table();
    rows
}
