//! Fixtures shared by the unit tests, the root integration test and the benchmark:
//! a topology of nine pods in three namespaces (upstream's netpol test layout: namespaces
//! x, y, z with pods a, b, c), the scenarios from upstream's NetworkPolicy conformance
//! cases, and the reachability matrix they are judged by.

mod scenarios;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

pub use scenarios::scenarios;

use crate::model::{PROTO_TCP, PROTO_UDP};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves and every probe tries: (IP protocol, port).
pub const PROBE_PORTS: [(u8, u16); 4] = [
    (PROTO_TCP, 80),
    (PROTO_TCP, 81),
    (PROTO_UDP, 53),
    (PROTO_UDP, 81),
];

/// Upstream's container port names: `serve-<port>-<proto>`.
pub fn port_name(proto: u8, port: u16) -> String {
    let p = if proto == PROTO_TCP { "tcp" } else { "udp" };
    format!("serve-{port}-{p}")
}

/// A NetworkPolicy from its JSON form (reads like the YAML in upstream's tests).
pub fn policy(v: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(v).expect("test policy is a valid NetworkPolicy")
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": to_map(labels) }
    }))
    .expect("namespace fixture")
}

fn to_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running pod with `ip` whose one container declares `ports` under upstream's names.
pub fn pod(
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    labels: &[(&str, &str)],
    ports: &[(u8, u16)],
) -> Pod {
    let ports: Vec<_> = ports
        .iter()
        .map(|(proto, port)| {
            serde_json::json!({
                "name": port_name(*proto, *port),
                "containerPort": port,
                "protocol": if *proto == PROTO_TCP { "TCP" } else { "UDP" },
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": { "namespace": ns, "name": name, "labels": to_map(labels) },
        "spec": { "containers": [ { "name": "c", "image": "none", "ports": ports } ] },
        "status": { "phase": "Running", "podIP": ip.to_string(), "podIPs": [ { "ip": ip.to_string() } ] }
    }))
    .expect("pod fixture")
}

#[derive(Debug, Clone)]
pub struct TopoPod {
    pub ns: &'static str,
    pub name: &'static str,
    pub ip: Ipv4Addr,
}

impl TopoPod {
    pub fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// Nine pods `x/a .. z/c` with the addresses the caller hands out.
#[derive(Debug, Clone)]
pub struct Topology {
    pub pods: Vec<TopoPod>,
}

impl Topology {
    /// `ip(i)` gives the address of the i-th pod (x/a, x/b, x/c, y/a, ...).
    pub fn new(ip: impl Fn(usize) -> Ipv4Addr) -> Self {
        let mut pods = Vec::new();
        for ns in NAMESPACES {
            for name in POD_NAMES {
                pods.push(TopoPod {
                    ns,
                    name,
                    ip: ip(pods.len()),
                });
            }
        }
        Topology { pods }
    }

    pub fn get(&self, id: &str) -> &TopoPod {
        self.pods
            .iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no pod {id} in the topology"))
    }

    /// The pod with its base labels (`pod=<name>`) or the `labels` given.
    pub fn pod_object(&self, id: &str, labels: Option<&[(&str, &str)]>) -> Pod {
        let p = self.get(id);
        let base = [("pod", p.name)];
        pod(p.ns, p.name, p.ip, labels.unwrap_or(&base), &PROBE_PORTS)
    }

    /// Namespaces with base labels `ns=<name>`, and every pod.
    pub fn base_objects(&self) -> (Vec<Namespace>, Vec<Pod>) {
        let nss = NAMESPACES
            .iter()
            .map(|n| namespace(n, &[("ns", n)]))
            .collect();
        let pods = self
            .pods
            .iter()
            .map(|p| self.pod_object(&p.id(), None))
            .collect();
        (nss, pods)
    }
}

/// One change a scenario makes to the base state, in order.
// Moved once per event, never stored in bulk: boxing the Pod would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Step {
    ApplyPolicy(NetworkPolicy),
    DeletePolicy {
        ns: &'static str,
        name: &'static str,
    },
    ApplyPod(Pod),
    DeletePod {
        ns: &'static str,
        name: &'static str,
    },
    ApplyNamespace(Namespace),
}

/// One probe of the matrix: a new connection `from -> to` on `proto`/`port`.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub proto: u8,
    pub port: u16,
}

impl Probe<'_> {
    pub fn tcp(&self, port: u16) -> bool {
        self.proto == PROTO_TCP && self.port == port
    }
    pub fn udp(&self, port: u16) -> bool {
        self.proto == PROTO_UDP && self.port == port
    }
    pub fn from_ns(&self, ns: &str) -> bool {
        self.from.split('/').next() == Some(ns)
    }
    pub fn to_ns(&self, ns: &str) -> bool {
        self.to.split('/').next() == Some(ns)
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub steps: fn(&Topology) -> Vec<Step>,
    pub expect: fn(&Probe) -> bool,
}

/// Reachability for every ordered pair of distinct pods and every probe port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub ids: Vec<String>,
    /// `cells[from][to][port index]`.
    pub cells: Vec<Vec<[bool; 4]>>,
}

impl Matrix {
    pub fn build(topo: &Topology, mut f: impl FnMut(&TopoPod, &TopoPod, u8, u16) -> bool) -> Self {
        let ids = topo.pods.iter().map(TopoPod::id).collect();
        let cells = topo
            .pods
            .iter()
            .map(|from| {
                topo.pods
                    .iter()
                    .map(|to| {
                        let mut c = [true; 4];
                        if from.ip != to.ip {
                            for (i, (proto, port)) in PROBE_PORTS.iter().enumerate() {
                                c[i] = f(from, to, *proto, *port);
                            }
                        }
                        c
                    })
                    .collect()
            })
            .collect();
        Matrix { ids, cells }
    }

    pub fn expected(topo: &Topology, s: &Scenario) -> Self {
        Matrix::build(topo, |from, to, proto, port| {
            (s.expect)(&Probe {
                from: &from.id(),
                to: &to.id(),
                proto,
                port,
            })
        })
    }

    /// `from -> to` cells that differ, as text.
    pub fn differences(&self, other: &Matrix) -> Vec<String> {
        let mut out = Vec::new();
        for (i, row) in self.cells.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                for (k, (proto, port)) in PROBE_PORTS.iter().enumerate() {
                    if c[k] != other.cells[i][j][k] {
                        out.push(format!(
                            "{} -> {} {}/{}: {} vs {}",
                            self.ids[i],
                            self.ids[j],
                            if *proto == PROTO_TCP { "tcp" } else { "udp" },
                            port,
                            yes(c[k]),
                            yes(other.cells[i][j][k])
                        ));
                    }
                }
            }
        }
        out
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "allowed"
    } else {
        "denied"
    }
}

impl fmt::Display for Matrix {
    /// Rows are sources, columns destinations; each cell shows the four probe ports in
    /// order tcp/80 tcp/81 udp/53 udp/81 as `.` (allowed) or `X` (denied).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from("from\\to");
        for id in &self.ids {
            write!(s, " {id:>5}").ok();
        }
        writeln!(f, "{s}")?;
        for (i, row) in self.cells.iter().enumerate() {
            let mut line = format!("{:<7}", self.ids[i]);
            for (j, c) in row.iter().enumerate() {
                if i == j {
                    line.push_str("  ----");
                } else {
                    let cell: String = c.iter().map(|a| if *a { '.' } else { 'X' }).collect();
                    write!(line, "  {cell}").ok();
                }
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
