//! kincnet against the reference chain bridge + host-local + portmap (from
//! /usr/lib/cni), side by side, invoked the way libcni does it (each plugin exec'd
//! in the node netns, ADD in list order with prevResult, DEL in reverse order with
//! the cached result). Needs root. Run: `cargo bench -p kincnet`.
//! Pods per sequential round: KINCNET_BENCH_PODS (default 60).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KINCNET: &str = env!("CARGO_BIN_EXE_kincnet");
const REF_DIR: &str = "/usr/lib/cni";

struct Netns(String);
impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("knbench{}{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One exec: wall time, peak RSS (kB, wait4 rusage: the plugin and its waited
/// children), stdout, exit status.
struct Run {
    wall: Duration,
    rss_kb: i64,
    stdout: String,
    ok: bool,
}

fn exec(bin: &str, node: &File, env: &[(&str, String)], stdin: &[u8]) -> Run {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let fd = node.as_raw_fd();
    // SAFETY: setns is async-signal-safe; `node` outlives the spawn.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = c.spawn().expect("spawn plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4 for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child; std's Child is not waited on afterwards.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    assert_eq!(rc, pid, "wait4");
    std::mem::forget(child);
    Run {
        wall,
        rss_kb: ru.ru_maxrss,
        stdout,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kincnet,
    Reference,
}

struct Net {
    which: Impl,
    _node: Netns,
    node_f: File,
    data: tempfile::TempDir,
    bridge: &'static str,
    subnet: &'static str,
}

impl Net {
    fn new(which: Impl, tag: &str) -> Net {
        let node = Netns::new(tag);
        let node_f = File::open(node.path()).unwrap();
        Net {
            which,
            _node: node,
            node_f,
            data: tempfile::tempdir().unwrap(),
            bridge: if which == Impl::Kincnet {
                "kinc0"
            } else {
                "cb0"
            },
            subnet: if which == Impl::Kincnet {
                "10.244.0.0/24"
            } else {
                "10.245.0.0/24"
            },
        }
    }

    fn env(cmd: &str, cid: &str, netns: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", REF_DIR.into()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"),
            ),
        ]
    }

    fn ports(host_port: Option<u16>) -> Value {
        match host_port {
            Some(p) => {
                json!({"portMappings": [{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]})
            }
            None => json!({}),
        }
    }

    /// ADD (all plugins of the chain); returns (wall, peak RSS, result).
    fn add(&self, cid: &str, netns: &Path, host_port: Option<u16>) -> (Duration, i64, Value) {
        let env = Self::env("ADD", cid, netns);
        match self.which {
            Impl::Kincnet => {
                let conf = json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "kincnet",
                    "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": {"subnet": self.subnet, "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.data.path()},
                    "runtimeConfig": Self::ports(host_port)});
                let r = exec(KINCNET, &self.node_f, &env, conf.to_string().as_bytes());
                assert!(r.ok, "kincnet ADD: {}", r.stdout);
                (r.wall, r.rss_kb, serde_json::from_str(&r.stdout).unwrap())
            }
            Impl::Reference => {
                let t = Instant::now();
                let bridge = self.bridge_conf(None);
                let b = exec(
                    &format!("{REF_DIR}/bridge"),
                    &self.node_f,
                    &env,
                    bridge.to_string().as_bytes(),
                );
                assert!(b.ok, "bridge ADD: {}", b.stdout);
                let res: Value = serde_json::from_str(&b.stdout).unwrap();
                let pm = self.portmap_conf(host_port, &res);
                let p = exec(
                    &format!("{REF_DIR}/portmap"),
                    &self.node_f,
                    &env,
                    pm.to_string().as_bytes(),
                );
                assert!(p.ok, "portmap ADD: {}", p.stdout);
                (
                    t.elapsed(),
                    b.rss_kb.max(p.rss_kb),
                    serde_json::from_str(&p.stdout).unwrap(),
                )
            }
        }
    }

    fn del(
        &self,
        cid: &str,
        netns: &Path,
        host_port: Option<u16>,
        prev: &Value,
    ) -> (Duration, i64) {
        let env = Self::env("DEL", cid, netns);
        match self.which {
            Impl::Kincnet => {
                let conf = json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "kincnet",
                    "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": {"subnet": self.subnet, "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.data.path()},
                    "runtimeConfig": Self::ports(host_port), "prevResult": prev});
                let r = exec(KINCNET, &self.node_f, &env, conf.to_string().as_bytes());
                assert!(r.ok, "kincnet DEL: {}", r.stdout);
                (r.wall, r.rss_kb)
            }
            Impl::Reference => {
                let t = Instant::now();
                let pm = self.portmap_conf(host_port, prev);
                let p = exec(
                    &format!("{REF_DIR}/portmap"),
                    &self.node_f,
                    &env,
                    pm.to_string().as_bytes(),
                );
                assert!(p.ok, "portmap DEL: {}", p.stdout);
                let b = exec(
                    &format!("{REF_DIR}/bridge"),
                    &self.node_f,
                    &env,
                    self.bridge_conf(Some(prev)).to_string().as_bytes(),
                );
                assert!(b.ok, "bridge DEL: {}", b.stdout);
                (t.elapsed(), b.rss_kb.max(p.rss_kb))
            }
        }
    }

    fn bridge_conf(&self, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge",
            "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.data.path()}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn portmap_conf(&self, host_port: Option<u16>, prev: &Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "portmap",
            "capabilities": {"portMappings": true}, "snat": true,
            "runtimeConfig": Self::ports(host_port), "prevResult": prev})
    }
}

#[derive(Default)]
struct Stats {
    add: Vec<f64>,
    del: Vec<f64>,
    add_del: Vec<f64>,
    rss: i64,
    par_add_wall: f64,
    par_del_wall: f64,
}

fn pct(v: &[f64], p: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[(s.len() * p / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(which: Impl, with_port: bool, n: usize, tag: &str) -> Stats {
    let net = Net::new(which, tag);
    let mut st = Stats::default();
    let pods: Vec<Netns> = (0..n.max(100))
        .map(|i| Netns::new(&format!("{tag}p{i}")))
        .collect();
    // Sequential ADD then DEL of n pods.
    let mut results = Vec::new();
    for (i, p) in pods.iter().take(n).enumerate() {
        let hp = with_port.then_some(20000 + i as u16);
        let (w, rss, r) = net.add(&format!("{tag}c{i}"), &p.path(), hp);
        st.add.push(ms(w));
        st.rss = st.rss.max(rss);
        results.push(r);
    }
    for (i, p) in pods.iter().take(n).enumerate() {
        let hp = with_port.then_some(20000 + i as u16);
        let (w, rss) = net.del(&format!("{tag}c{i}"), &p.path(), hp, &results[i]);
        st.del.push(ms(w));
        st.add_del.push(st.add[i] + ms(w));
        st.rss = st.rss.max(rss);
    }
    // 100 pods, 8 at a time: ADD wall, then DEL wall.
    let results = std::sync::Mutex::new(vec![Value::Null; 100]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 100 {
                    break;
                }
                let hp = with_port.then_some(21000 + i as u16);
                let (_, _, r) = net.add(&format!("{tag}q{i}"), &pods[i].path(), hp);
                results.lock().unwrap()[i] = r;
            });
        }
    });
    st.par_add_wall = ms(t.elapsed());
    let results = results.into_inner().unwrap();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 100 {
                    break;
                }
                let hp = with_port.then_some(21000 + i as u16);
                net.del(&format!("{tag}q{i}"), &pods[i].path(), hp, &results[i]);
            });
        }
    });
    st.par_del_wall = ms(t.elapsed());
    st
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new(REF_DIR).join("bridge").exists() {
        eprintln!("SKIP kincnet bench: needs root and containernetworking-plugins in {REF_DIR}");
        return;
    }
    let n: usize = std::env::var("KINCNET_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    println!("kincnet vs bridge+host-local+portmap ({REF_DIR}), {n} pods sequential, 100 pods 8-parallel");
    for with_port in [false, true] {
        let tag = if with_port { "h" } else { "n" };
        let k = measure(Impl::Kincnet, with_port, n, &format!("k{tag}"));
        let r = measure(Impl::Reference, with_port, n, &format!("r{tag}"));
        println!(
            "\n{} | kincnet | reference | ratio",
            if with_port {
                "with one hostPort per pod"
            } else {
                "pods without hostPort"
            }
        );
        println!("---|---|---|---");
        let row = |name: &str, a: f64, b: f64, unit: &str| {
            println!("{name} | {a:.2} {unit} | {b:.2} {unit} | {:.3}", a / b);
        };
        row("ADD median", pct(&k.add, 50), pct(&r.add, 50), "ms");
        row("ADD p95", pct(&k.add, 95), pct(&r.add, 95), "ms");
        row("DEL median", pct(&k.del, 50), pct(&r.del, 50), "ms");
        row("DEL p95", pct(&k.del, 95), pct(&r.del, 95), "ms");
        row(
            "ADD+DEL median",
            pct(&k.add_del, 50),
            pct(&r.add_del, 50),
            "ms",
        );
        row(
            "100 pods 8-parallel ADD wall",
            k.par_add_wall,
            r.par_add_wall,
            "ms",
        );
        row(
            "100 pods 8-parallel DEL wall",
            k.par_del_wall,
            r.par_del_wall,
            "ms",
        );
        row("peak RSS per invocation", k.rss as f64, r.rss as f64, "kB");
    }
}
