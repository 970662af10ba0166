//! Time to apply one change with 1,000 pods and 200 policies programmed: incremental
//! reconcile (this crate) side by side with the naive peer, a full recompile + diff.
//! As root it also applies each diff to nf_tables in a scratch network namespace (one
//! transaction each) and reports the kernel time, side by side with the previous
//! layout (every element, exact or not, in one interval set per direction).
//!
//! `cargo bench -p kincnet-policy --bench incremental`

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kincnet_policy::nft::NftEnforcer;
use kincnet_policy::testkit::{namespace, pod, policy};
use kincnet_policy::{Change, Diff, Enforcer, Reconciler};
use serde_json::json;

const PODS: usize = 1000;
const NAMESPACES: usize = 20;
const POLICIES: usize = 200;
const APPS: usize = 10;
const ROUNDS: usize = 30;
const PEER_ROUNDS: usize = 2;

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 2) as u8)
}

fn pod_obj(i: usize, app: usize) -> Pod {
    let ns = format!("ns{}", i % NAMESPACES);
    let app = format!("app{app}");
    pod(
        &ns,
        &format!("p{i}"),
        ip(i),
        &[("app", &app)],
        &[(6, 80), (6, 443), (17, 53)],
    )
}

fn policy_obj(k: usize) -> NetworkPolicy {
    let ns = format!("ns{}", k % NAMESPACES);
    let (sel, from) = (format!("app{}", k % APPS), format!("app{}", (k + 1) % APPS));
    let team = format!("t{}", k % 4);
    policy(json!({
        "metadata": { "namespace": ns, "name": format!("pol{k}") },
        "spec": {
            "podSelector": { "matchLabels": { "app": sel } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                { "from": [{ "podSelector": { "matchLabels": { "app": from } } }],
                  "ports": [{ "port": 80 }, { "port": 443 }] },
                { "from": [{ "namespaceSelector": { "matchLabels": { "team": team } },
                             "podSelector": { "matchLabels": { "app": sel } } }],
                  "ports": [{ "port": "serve-53-udp", "protocol": "UDP" }] },
                { "from": [{ "ipBlock": { "cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"] } }] }
            ],
            "egress": [
                { "ports": [{ "port": 53, "protocol": "UDP" }] },
                { "to": [{ "podSelector": { "matchLabels": { "app": from } } }],
                  "ports": [{ "port": 8000, "endPort": 8100 }] }
            ]
        }
    }))
}

/// A policy that opens something new: a /24 to the pods of one namespace.
fn new_policy(i: usize) -> NetworkPolicy {
    let n = i % NAMESPACES;
    policy(json!({
        "metadata": { "namespace": format!("ns{n}"), "name": format!("extra{i}") },
        "spec": {
            "podSelector": {},
            "ingress": [{ "from": [{ "ipBlock": { "cidr": format!("172.16.{i}.0/24") } }],
                          "ports": [{ "port": 9000 + i as i32 }] }]
        }
    }))
}

fn cluster() -> (Vec<Namespace>, Vec<Pod>, Vec<NetworkPolicy>) {
    let nss = (0..NAMESPACES)
        .map(|n| {
            let (name, team) = (format!("ns{n}"), format!("t{}", n % 4));
            namespace(&name, &[("team", &team)])
        })
        .collect();
    let pods = (0..PODS).map(|i| pod_obj(i, i % APPS)).collect();
    let pols = (0..POLICIES).map(policy_obj).collect();
    (nss, pods, pols)
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A scratch netns the main thread enters, so nf_tables changes stay inside it.
fn scratch_netns() -> Option<Netns> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = format!("kpolbench{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let ns = Netns(name);
    let f = std::fs::File::open(format!("/run/netns/{}", ns.0)).ok()?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns of this thread with a valid netns fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    Some(ns)
}

/// The previous layout, as the kernel-side peer: one concatenated interval set per
/// direction, `local . peer . proto . port`, holding every element of every pod.
mod single_set {
    use std::net::Ipv4Addr;

    use kinc_nft::nl::consts::*;
    use kinc_nft::nl::{concat_type, with_socket, Elem, Family, Msg, Set, Socket, Table};
    use kincnet_policy::{AllowElem, Compiled, Diff, Direction};

    pub const TABLE: &str = "kincbench_single";

    fn set(dir: Direction) -> Set {
        Set {
            family: Family::Ip,
            table: TABLE.into(),
            name: format!("{dir:?}").to_lowercase(),
            key_type: concat_type(&[
                TYPE_IPADDR,
                TYPE_IPADDR,
                TYPE_INET_PROTOCOL,
                TYPE_INET_SERVICE,
            ]),
            key_fields: vec![4, 4, 1, 2],
            data: None,
            flags: NFT_SET_INTERVAL,
        }
    }

    fn key(l: Ipv4Addr, p: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
        let mut k = l.octets().to_vec();
        k.extend_from_slice(&p.octets());
        k.extend_from_slice(&[proto, 0, 0, 0]);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }

    fn elem(l: Ipv4Addr, e: &AllowElem) -> Elem {
        Elem::range(
            key(l, e.peer_lo, e.proto_lo, e.port_lo),
            key(l, e.peer_hi, e.proto_hi, e.port_hi),
        )
    }

    /// Every pod's elements of `m` (exact and class ranges) per direction.
    fn all(m: &Compiled, dir: Direction) -> Vec<Elem> {
        let (pods, _) = m.dir(dir);
        pods.keys()
            .flat_map(|ip| {
                let els = m.elements(dir, *ip).unwrap_or_default();
                els.into_iter().map(move |e| elem(*ip, &e))
            })
            .collect()
    }

    pub fn load(m: &Compiled) -> Result<(), kinc_nft::nl::Error> {
        let mut msgs = vec![Table {
            family: Family::Ip,
            name: TABLE.into(),
        }
        .add_msg()];
        for (i, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            msgs.push(set(dir).add_msg(i as u32 + 1));
            for c in all(m, dir).chunks(512) {
                msgs.push(set(dir).add_elems_msg(c));
            }
        }
        with_socket(|s: &mut Socket| s.commit(&msgs, None))
    }

    /// The same change as `d`, in this layout: the touched pods' elements, old and new.
    pub fn apply(old: &Compiled, new: &Compiled, d: &Diff) -> Result<(), kinc_nft::nl::Error> {
        let mut msgs: Vec<Msg> = Vec::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            let dd = d.dir(dir);
            let mut ips: Vec<Ipv4Addr> = dd
                .isolate
                .iter()
                .chain(&dd.unisolate)
                .copied()
                .chain(dd.add.iter().chain(&dd.remove).map(|(ip, _)| *ip))
                .chain(dd.bind.iter().chain(&dd.unbind).map(|(ip, _)| *ip))
                .collect();
            // A class change touches every pod bound to that class.
            let classes: Vec<u32> = dd
                .range_add
                .iter()
                .chain(&dd.range_remove)
                .map(|(c, _)| *c)
                .collect();
            for m in [old, new] {
                let (pods, _) = m.dir(dir);
                ips.extend(
                    pods.iter()
                        .filter(|(_, p)| p.class.is_some_and(|c| classes.contains(&c)))
                        .map(|(ip, _)| *ip),
                );
            }
            ips.sort();
            ips.dedup();
            let (mut del, mut add) = (Vec::new(), Vec::new());
            for ip in ips {
                let o = old.elements(dir, ip).unwrap_or_default();
                let n = new.elements(dir, ip).unwrap_or_default();
                del.extend(o.difference(&n).map(|e| elem(ip, e)));
                add.extend(n.difference(&o).map(|e| elem(ip, e)));
            }
            if !del.is_empty() {
                msgs.push(set(dir).del_elems_msg(&del));
            }
            if !add.is_empty() {
                msgs.push(set(dir).add_elems_msg(&add));
            }
        }
        with_socket(|s: &mut Socket| s.commit(&msgs, None))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Stat(Vec<f64>);
impl Stat {
    fn median(&mut self) -> f64 {
        self.0.sort_by(f64::total_cmp);
        self.0[self.0.len() / 2]
    }
    fn p95(&mut self) -> f64 {
        self.0.sort_by(f64::total_cmp);
        self.0[(self.0.len() * 95 / 100).min(self.0.len() - 1)]
    }
}

fn ops(d: &Diff) -> String {
    let (mut exact, mut class, mut range) = (0, 0, 0);
    for dd in [&d.ingress, &d.egress] {
        exact += dd.add.len() + dd.remove.len() + dd.isolate.len() + dd.unisolate.len();
        class += dd.bind.len() + dd.unbind.len();
        range += dd.range_add.len() + dd.range_remove.len();
    }
    format!("{exact}/{class}/{range}")
}

fn main() {
    let (nss, pods, pols) = cluster();
    let mut r = Reconciler::new();
    let t = Instant::now();
    let _initial = r.resync(nss.iter(), pods.iter(), pols.iter());
    let full_compile = t.elapsed();
    let m = r.programmed();
    let ranges = m.in_classes.element_count() + m.eg_classes.element_count();
    println!(
        "cluster: {} pods, {} namespaces, {} policies -> {} isolated ingress, {} isolated egress, \
         {} allow elements ({} exact, {} range elements in {} classes)",
        PODS,
        NAMESPACES,
        POLICIES,
        m.ingress.len(),
        m.egress.len(),
        m.element_count(),
        m.element_count() - ranges,
        ranges,
        m.in_classes.ranges.len() + m.eg_classes.ranges.len(),
    );
    println!("initial full compile: {:.1} ms", ms(full_compile));

    let ns_guard = scratch_netns();
    let mut nft = ns_guard.as_ref().map(|_| NftEnforcer::new("kincbench"));
    if let Some(n) = nft.as_mut() {
        let t = Instant::now();
        n.replace_all(r.programmed())
            .expect("initial nf_tables load");
        println!(
            "initial nf_tables load, one transaction: {:.1} ms",
            ms(t.elapsed())
        );
        let t = Instant::now();
        single_set::load(r.programmed()).expect("initial load of the single-set peer");
        println!(
            "initial load of the single-set peer, one transaction: {:.1} ms",
            ms(t.elapsed())
        );
    } else {
        println!("(not root: kernel apply times skipped)");
    }
    let extra = PODS + 5;
    type Case = Box<dyn Fn(&mut Reconciler, usize, bool) -> Diff>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "pod added",
            Box::new(move |r, i, undo| {
                // Lands in a namespace whose policies select it and name it as a peer.
                let n = extra + i;
                let p = pod_obj(n, (n % NAMESPACES) % APPS);
                if undo {
                    r.pod(Change::Delete(p))
                } else {
                    r.pod(Change::Apply(p))
                }
            }),
        ),
        (
            "pod label changed",
            Box::new(|r, i, undo| {
                let n = i * 7 % PODS;
                let app = if undo { n % APPS } else { (n + 3) % APPS };
                r.pod(Change::Apply(pod_obj(n, app)))
            }),
        ),
        (
            "policy added",
            Box::new(|r, i, undo| {
                let p = new_policy(i);
                if undo {
                    r.policy(Change::Delete(p))
                } else {
                    r.policy(Change::Apply(p))
                }
            }),
        ),
    ];
    println!();
    println!(
        "{:<18} {:>12} {:>17} {:>9} {:>7} {:>17} {:>11} {:>7}",
        "change",
        "ops e/c/r",
        "compute med/p95",
        "full+diff",
        "ratio",
        "kernel med/p95",
        "single-set",
        "ratio"
    );
    for (name, f) in &cases {
        let (mut inc, mut full, mut kern, mut single) =
            (Stat(vec![]), Stat(vec![]), Stat(vec![]), Stat(vec![]));
        let mut biggest = Diff::default();
        for i in 0..ROUNDS {
            for undo in [false, true] {
                let before = (i < PEER_ROUNDS && nft.is_some()).then(|| r.programmed().clone());
                let t = Instant::now();
                let d = f(&mut r, i, undo);
                inc.0.push(ms(t.elapsed()));
                if d.len() > biggest.len() {
                    biggest = d.clone();
                }
                if let Some(n) = nft.as_mut() {
                    let t = Instant::now();
                    n.apply(&d).unwrap_or_else(|e| panic!("{name}: {e}"));
                    kern.0.push(ms(t.elapsed()));
                }
                // The peers (a few rounds only: they are slow, which is the point).
                if i >= PEER_ROUNDS {
                    continue;
                }
                if let Some(old) = before {
                    let t = Instant::now();
                    single_set::apply(&old, r.programmed(), &d)
                        .unwrap_or_else(|e| panic!("{name}, single set: {e}"));
                    single.0.push(ms(t.elapsed()));
                }
                let (c, p) = (r.cluster().clone(), r.programmed().clone());
                let t = Instant::now();
                let (model, _) = c.compile();
                let d2 = kincnet_policy::diff(&p, &model);
                full.0.push(ms(t.elapsed()));
                assert!(
                    d2.is_empty(),
                    "{name}: incremental and full compile disagree"
                );
            }
        }
        let (im, fm) = (inc.median(), full.median());
        let (km, kp, sm) = if kern.0.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            (kern.median(), kern.p95(), single.median())
        };
        println!(
            "{:<18} {:>12} {:>8.3}/{:<8.3} {:>9.1} {:>6.0}x {:>8.3}/{:<8.3} {:>11.1} {:>6.0}x",
            name,
            ops(&biggest),
            im,
            inc.p95(),
            fm,
            fm / im,
            km,
            kp,
            sm,
            sm / km,
        );
    }
    println!(
        "\nops e/c/r: exact-set, class-map and range-set element operations (largest diff); \
         ratio: peer median / ours"
    );
    drop(ns_guard);
}
