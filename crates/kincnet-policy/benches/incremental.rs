//! Time to apply one change with 1,000 pods and 200 policies programmed: incremental
//! reconcile (this crate) side by side with the naive peer, a full recompile + diff.
//! As root it also applies each diff to nf_tables in a scratch network namespace (one
//! transaction) and reports the kernel time too.
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

/// Splits an add-only diff: allow elements first, isolation last.
fn pieces(d: &Diff, n: usize) -> Vec<Diff> {
    let mut out = Vec::new();
    for c in d.ingress.add.chunks(n) {
        let mut x = Diff::default();
        x.ingress.add = c.to_vec();
        out.push(x);
    }
    for c in d.egress.add.chunks(n) {
        let mut x = Diff::default();
        x.egress.add = c.to_vec();
        out.push(x);
    }
    let mut last = Diff::default();
    last.ingress.isolate = d.ingress.isolate.clone();
    last.egress.isolate = d.egress.isolate.clone();
    out.push(last);
    out
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

fn main() {
    let (nss, pods, pols) = cluster();
    let mut r = Reconciler::new();
    let t = Instant::now();
    let initial = r.resync(nss.iter(), pods.iter(), pols.iter());
    let full_compile = t.elapsed();
    let m = r.programmed();
    println!(
        "cluster: {} pods, {} namespaces, {} policies -> {} isolated ingress, {} isolated egress, {} allow elements",
        PODS, NAMESPACES, POLICIES, m.ingress.len(), m.egress.len(), m.element_count()
    );
    println!("initial full compile: {:.1} ms", ms(full_compile));

    let ns_guard = scratch_netns();
    let mut nft = ns_guard.as_ref().map(|_| NftEnforcer::new("kincbench"));
    if let Some(n) = nft.as_mut() {
        // Setup only: kinc-nft's socket cannot send a batch this large in one sendto
        // (EMSGSIZE, it does not raise SO_SNDBUF yet), so the initial load goes in pieces.
        let t = Instant::now();
        n.ensure().expect("policy objects");
        for d in pieces(&initial, 400) {
            n.apply(&d).expect("initial nf_tables load");
        }
        println!(
            "initial nf_tables load ({} element ops, in pieces of 400): {:.1} ms",
            initial.len(),
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
        "{:<20} {:>14} {:>14} {:>16} {:>10} {:>12}",
        "change", "incr. ms med", "incr. ms p95", "full+diff ms med", "speedup", "kernel ms med"
    );
    for (name, f) in &cases {
        let (mut inc, mut full, mut kern) = (Stat(vec![]), Stat(vec![]), Stat(vec![]));
        let mut elems = 0;
        for i in 0..ROUNDS {
            for undo in [false, true] {
                let t = Instant::now();
                let d = f(&mut r, i, undo);
                inc.0.push(ms(t.elapsed()));
                elems = elems.max(d.len());
                if let Some(n) = nft.as_mut() {
                    let t = Instant::now();
                    n.apply(&d).unwrap_or_else(|e| panic!("{name}: {e}"));
                    kern.0.push(ms(t.elapsed()));
                }
                // The peer: recompile everything from the same objects and diff
                // (a few rounds only: it is slow, which is the point).
                if i >= PEER_ROUNDS {
                    continue;
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
        let kmed = if kern.0.is_empty() {
            f64::NAN
        } else {
            kern.median()
        };
        let (im, fm) = (inc.median(), full.median());
        println!(
            "{:<20} {:>14.3} {:>14.3} {:>16.1} {:>9.0}x {:>12.3}   (up to {} element ops)",
            name,
            im,
            inc.p95(),
            fm,
            fm / im,
            kmed,
            elems
        );
    }
    drop(ns_guard);
}
