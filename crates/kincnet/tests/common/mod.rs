//! Test topology: a "node" netns (the plugin runs there and makes the bridge), pod
//! netns, and an "outside" netns joined to the node by a veth. Traffic stays between
//! them. The plugin binary is run the way a runtime runs it: env + stdin.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_kincnet");
pub const NODE_OUT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 213, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 213, 2);

pub use kinc_testutil::netns::{in_netns, unique, Netns};

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP server in a netns that answers every connection with the peer's address.
pub fn echo_peer_server(ns: &Path, addr: SocketAddrV4) {
    let l = in_netns(ns, || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
}

/// Connects from a netns and returns what the server said (the source it saw).
pub fn connect_from(ns: &Path, to: SocketAddrV4) -> Result<String, String> {
    in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(2))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf)
            .map_err(|e| format!("read from {to}: {e}"))?;
        Ok(buf)
    })
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub json: Value,
}

/// The node (where the plugin runs and the bridge lives), an outside netns joined
/// to it by a veth, and the plugin's config.
pub struct Topo {
    pub node: Netns,
    pub outside: Netns,
    pub bridge: String,
    pub data: tempfile::TempDir,
    pub subnet: String,
}

impl Topo {
    pub fn new() -> Topo {
        let node = Netns::new("knn");
        let outside = Netns::new("kno");
        let a = unique("kv");
        node.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        node.ip(&["addr", "add", &format!("{NODE_OUT_IP}/24"), "dev", &a]);
        node.ip(&["link", "set", &a, "up"]);
        node.ip(&["link", "set", "lo", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["link", "set", "lo", "up"]);
        Topo {
            node,
            outside,
            bridge: "kinc0".into(),
            data: tempfile::tempdir().unwrap(),
            subnet: "10.213.0.0/24".into(),
        }
    }

    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "kntest", "type": "kincnet",
            "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": { "subnet": self.subnet, "dataDir": self.data.path() }
        })
    }

    pub fn conf_with_ports(&self, version: &str, maps: Value) -> Value {
        let mut c = self.conf(version);
        c["runtimeConfig"] = json!({ "portMappings": maps });
        c
    }

    /// Runs the plugin in the node netns, like a runtime: env + stdin.
    pub fn invoke(&self, command: &str, conf: &Value, cid: &str, netns: Option<&Path>) -> Out {
        let cmd = plugin_command(&self.node.path(), command, cid, netns);
        run_plugin(cmd, conf.to_string().as_bytes())
    }

    pub fn add(&self, conf: &Value, cid: &str, pod: &Netns) -> Value {
        let o = self.invoke("ADD", conf, cid, Some(&pod.path()));
        assert_eq!(o.code, 0, "ADD {cid}: {}", o.stdout);
        o.json
    }

    /// Host-side kincnet veths in the node.
    pub fn host_veths(&self) -> Vec<String> {
        self.node
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("kn") && n.len() == 14)
            .collect()
    }

    pub fn store(&self) -> Value {
        let p = self.data.path().join("kntest/allocations.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).expect("store parses"),
            Err(_) => json!({}),
        }
    }

    pub fn allocated_ips(&self) -> Vec<String> {
        self.store()["allocations"]
            .as_object()
            .map(|m| {
                m.values()
                    .map(|r| r["ip"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node's nftables ruleset as text.
    pub fn ruleset(&self) -> String {
        run_ok(&mut self.node.command("nft", &["list", "ruleset"]))
    }
}

/// Spawns the plugin, writes `stdin`, waits.
pub fn run_plugin(mut cmd: Command, stdin: &[u8]) -> Out {
    let mut child = cmd.spawn().expect("spawn kincnet");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Out {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
    }
}

/// A plugin invocation (env, stdio pipes) that runs in the `node` netns.
pub fn plugin_command(node: &Path, command: &str, cid: &str, netns: Option<&Path>) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = netns {
        c.env("CNI_NETNS", n);
    }
    let ns = File::open(node).expect("node netns");
    // SAFETY: setns is async-signal-safe; the fd stays open in the closure.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// The pod's address from an ADD result.
pub fn result_ip(r: &Value) -> Ipv4Addr {
    r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Config for CHECK/DEL: the ADD result as prevResult, as libcni sends it.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
