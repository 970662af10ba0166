//! Compiler and reconcile tests over the conformance scenarios and element tables.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use serde_json::json;

use crate::controller::{Controller, Event, Recording};
use crate::model::{PROTO_TCP, PROTO_UDP};
use crate::testkit::{self, policy, Matrix, Step, Topology};
use crate::{AllowElem, Compiled, Direction, Shape};

fn topo() -> Topology {
    Topology::new(|i| Ipv4Addr::new(10, 244, 0, 10 + i as u8))
}

/// A controller fed the topology's base objects as an initial list.
fn controller(t: &Topology) -> Controller<Recording> {
    let mut c = Controller::new(Recording::default());
    let (nss, pods) = t.base_objects();
    c.handle(Event::Namespace(watcher::Event::Init)).unwrap();
    for ns in nss {
        c.handle(Event::Namespace(watcher::Event::InitApply(ns)))
            .unwrap();
    }
    c.handle(Event::Pod(watcher::Event::Init)).unwrap();
    for p in pods {
        c.handle(Event::Pod(watcher::Event::InitApply(p))).unwrap();
    }
    c.handle(Event::Namespace(watcher::Event::InitDone))
        .unwrap();
    c.handle(Event::Pod(watcher::Event::InitDone)).unwrap();
    c.handle(Event::Policy(watcher::Event::Init)).unwrap();
    c.handle(Event::Policy(watcher::Event::InitDone)).unwrap();
    assert!(c.synced());
    c
}

fn step_event(s: Step, t: &Topology) -> Event {
    match s {
        Step::ApplyPolicy(p) => Event::Policy(watcher::Event::Apply(p)),
        Step::DeletePolicy { ns, name } => Event::Policy(watcher::Event::Delete(policy(json!({
            "metadata": { "namespace": ns, "name": name }
        })))),
        Step::ApplyPod(p) => Event::Pod(watcher::Event::Apply(p)),
        Step::DeletePod { ns, name } => Event::Pod(watcher::Event::Delete(
            t.pod_object(&format!("{ns}/{name}"), None),
        )),
        Step::ApplyNamespace(n) => Event::Namespace(watcher::Event::Apply(n)),
    }
}

fn matrix_of(t: &Topology, m: &Compiled) -> Matrix {
    Matrix::build(t, |from, to, proto, port| {
        m.allows(from.ip, to.ip, proto, port)
    })
}

/// What a full compile of the stores gives: incremental updates must converge to it.
fn full_compile(c: &Controller<Recording>) -> Compiled {
    let (pods, nss, pols) = c.stores();
    let mut r = crate::Reconciler::new();
    let (a, b, p) = (nss.state(), pods.state(), pols.state());
    r.resync(
        a.iter().map(|x| x.as_ref()),
        b.iter().map(|x| x.as_ref()),
        p.iter().map(|x| x.as_ref()),
    );
    r.programmed().clone()
}

#[test]
fn every_conformance_scenario_gives_the_expected_matrix() {
    let t = topo();
    let mut failures = Vec::new();
    let scenarios = testkit::scenarios();
    assert!(scenarios.len() >= 15);
    for s in &scenarios {
        let mut c = controller(&t);
        for step in (s.steps)(&t) {
            c.handle(step_event(step, &t)).unwrap();
        }
        let model = &c.enforcer().model;
        assert_eq!(
            model,
            c.reconciler().programmed(),
            "{}: enforcer model",
            s.name
        );
        assert_eq!(model, &full_compile(&c), "{}: incremental != full", s.name);
        let want = Matrix::expected(&t, s);
        let got = matrix_of(&t, model);
        if want != got {
            failures.push(format!(
                "scenario {:?}\nexpected:\n{want}got:\n{got}{}",
                s.name,
                want.differences(&got).join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn undoing_a_scenario_returns_to_no_elements() {
    let t = topo();
    for s in testkit::scenarios() {
        let mut c = controller(&t);
        let steps = (s.steps)(&t);
        for step in steps.clone() {
            c.handle(step_event(step, &t)).unwrap();
        }
        for step in steps {
            match step {
                Step::ApplyPolicy(p) => {
                    c.handle(Event::Policy(watcher::Event::Delete(p))).unwrap();
                }
                Step::ApplyPod(p) => {
                    let id = format!(
                        "{}/{}",
                        p.metadata.namespace.unwrap(),
                        p.metadata.name.unwrap()
                    );
                    c.handle(Event::Pod(watcher::Event::Apply(t.pod_object(&id, None))))
                        .unwrap();
                }
                Step::ApplyNamespace(n) => {
                    let name = n.metadata.name.unwrap();
                    c.handle(Event::Namespace(watcher::Event::Apply(testkit::namespace(
                        &name,
                        &[("ns", &name)],
                    ))))
                    .unwrap();
                }
                _ => {}
            }
        }
        assert_eq!(c.enforcer().model, Compiled::default(), "{}", s.name);
    }
}

fn ip(t: &Topology, id: &str) -> Ipv4Addr {
    t.get(id).ip
}

fn elem(lo: Ipv4Addr, hi: Ipv4Addr, proto: (u8, u8), port: (u16, u16)) -> AllowElem {
    AllowElem {
        peer_lo: lo,
        peer_hi: hi,
        proto_lo: proto.0,
        proto_hi: proto.1,
        port_lo: port.0,
        port_hi: port.1,
    }
}

fn np(name: &str, spec: serde_json::Value) -> NetworkPolicy {
    policy(json!({ "metadata": { "namespace": "x", "name": name }, "spec": spec }))
}

fn apply(c: &mut Controller<Recording>, p: NetworkPolicy) -> crate::Diff {
    c.handle(Event::Policy(watcher::Event::Apply(p)))
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn element_table() {
    let t = topo();
    let xa = ip(&t, "x/a");
    let xb = ip(&t, "x/b");
    let all_v4 = (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(255, 255, 255, 255));
    let cases: Vec<(&str, serde_json::Value, BTreeSet<AllowElem>)> = vec![
        (
            "deny all ingress",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } } }),
            BTreeSet::new(),
        ),
        (
            "allow all ingress",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } }, "ingress": [{}] }),
            [elem(all_v4.0, all_v4.1, (0, 255), (0, 65535))].into(),
        ),
        (
            "y/b on tcp/80 (default protocol)",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "ns": "y" } },
                                             "podSelector": { "matchLabels": { "pod": "b" } } }],
                                  "ports": [{ "port": 80 }] }] }),
            [elem(ip(&t, "y/b"), ip(&t, "y/b"), (6, 6), (80, 80))].into(),
        ),
        (
            "namespace y: one exact element per pod, adjacent or not",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "ns": "y" } } }],
                                  "ports": [{ "port": 81, "protocol": "UDP" }] }] }),
            ["y/a", "y/b", "y/c"]
                .iter()
                .map(|p| elem(ip(&t, p), ip(&t, p), (17, 17), (81, 81)))
                .collect(),
        ),
        (
            "pod peer: no ports is every protocol, a protocol alone every port",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }] },
                                { "from": [{ "podSelector": { "matchLabels": { "pod": "c" } } }],
                                  "ports": [{ "protocol": "UDP" }, { "port": 53, "protocol": "UDP" }] }] }),
            [
                elem(ip(&t, "x/b"), ip(&t, "x/b"), (0, 255), (0, 65535)),
                elem(ip(&t, "x/c"), ip(&t, "x/c"), (17, 17), (0, 65535)),
            ]
            .into(),
        ),
        (
            "pod peer: a short endPort range becomes exact ports, a long one a range",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }],
                                  "ports": [{ "port": 80, "endPort": 82 }, { "port": 1000, "endPort": 2000 }] }] }),
            [
                elem(ip(&t, "x/b"), ip(&t, "x/b"), (6, 6), (80, 80)),
                elem(ip(&t, "x/b"), ip(&t, "x/b"), (6, 6), (81, 81)),
                elem(ip(&t, "x/b"), ip(&t, "x/b"), (6, 6), (82, 82)),
                elem(ip(&t, "x/b"), ip(&t, "x/b"), (6, 6), (1000, 2000)),
            ]
            .into(),
        ),
        (
            "ipBlock with except splits the block",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.244.0.0/24", "except": ["10.244.0.16/30"] } }],
                                  "ports": [{ "port": 80, "endPort": 90 }] }] }),
            [
                elem(
                    Ipv4Addr::new(10, 244, 0, 0),
                    Ipv4Addr::new(10, 244, 0, 15),
                    (6, 6),
                    (80, 90),
                ),
                elem(
                    Ipv4Addr::new(10, 244, 0, 20),
                    Ipv4Addr::new(10, 244, 0, 255),
                    (6, 6),
                    (80, 90),
                ),
            ]
            .into(),
        ),
        (
            "named port resolved against the selected pod",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "ports": [{ "port": "serve-53-udp", "protocol": "UDP" }] }] }),
            [elem(all_v4.0, all_v4.1, (17, 17), (53, 53))].into(),
        ),
        (
            "named port with the wrong protocol resolves to nothing",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "ports": [{ "port": "serve-53-udp" }] }] }),
            BTreeSet::new(),
        ),
        (
            "overlapping rules are written disjoint",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [
                        { "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }], "ports": [{ "port": 80 }] },
                        { "from": [{ "ipBlock": { "cidr": "10.244.0.0/28" } }] } ] }),
            // x/b (10.244.0.11) is also inside the /28: exact and range sets may overlap.
            [
                elem(xb, xb, (6, 6), (80, 80)),
                elem(
                    Ipv4Addr::new(10, 244, 0, 0),
                    Ipv4Addr::new(10, 244, 0, 15),
                    (0, 255),
                    (0, 65535),
                ),
            ]
            .into(),
        ),
    ];
    for (name, spec, want) in cases {
        let mut c = controller(&t);
        apply(&mut c, np("p", spec));
        let m = &c.enforcer().model;
        assert_eq!(
            m.elements(Direction::Ingress, xa),
            Some(want.clone()),
            "case {name}"
        );
        // Each element sits in the set its shape names: ranges only in the class.
        let pd = &m.ingress[&xa];
        assert!(
            pd.exact.iter().all(|e| e.shape() != Shape::Range),
            "case {name}"
        );
        let ranges = pd
            .class
            .map(|c| m.in_classes.ranges[&c].clone())
            .unwrap_or_default();
        assert!(
            ranges.iter().all(|e| e.shape() == Shape::Range),
            "case {name}"
        );
        assert_eq!(pd.exact.len() + ranges.len(), want.len(), "case {name}");
        assert!(m.egress.is_empty(), "case {name}: no egress isolation");
        assert_eq!(m.ingress.len(), 1, "case {name}: only x/a isolated");
    }
}

#[test]
fn label_change_and_deletions_are_element_updates() {
    let t = topo();
    let mut c = controller(&t);
    let xa = ip(&t, "x/a");
    let d = apply(
        &mut c,
        np(
            "from-b",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }],
                                  "ports": [{ "port": 80 }] }] }),
        ),
    );
    assert_eq!(d.ingress.isolate, vec![xa]);
    let xb = ip(&t, "x/b");
    let e_b = elem(xb, xb, (PROTO_TCP, PROTO_TCP), (80, 80));
    assert_eq!(d.ingress.add, vec![(xa, e_b)]);

    // x/c takes label pod=b: one exact element more, nothing else.
    let xc = ip(&t, "x/c");
    let d = c
        .handle(Event::Pod(watcher::Event::Apply(
            t.pod_object("x/c", Some(&[("pod", "b")])),
        )))
        .unwrap()
        .unwrap();
    let e_c = elem(xc, xc, (PROTO_TCP, PROTO_TCP), (80, 80));
    assert!(d.ingress.remove.is_empty());
    assert_eq!(d.ingress.add, vec![(xa, e_c)]);
    assert_eq!(d.len(), 1);
    assert!(d.ingress.isolate.is_empty() && d.egress.is_empty());

    // A status-only update of a pod is no change at all.
    let mut same = t.pod_object("x/c", Some(&[("pod", "b")]));
    same.status.as_mut().unwrap().message = Some("restarted".into());
    let d = c
        .handle(Event::Pod(watcher::Event::Apply(same)))
        .unwrap()
        .unwrap();
    assert!(d.is_empty());

    // Deleting x/b leaves x/c only.
    let d = c
        .handle(Event::Pod(watcher::Event::Delete(
            t.pod_object("x/b", None),
        )))
        .unwrap()
        .unwrap();
    assert_eq!(d.ingress.remove, vec![(xa, e_b)]);
    assert_eq!(d.len(), 1);

    // Deleting the selected pod removes its isolation and elements.
    let d = c
        .handle(Event::Pod(watcher::Event::Delete(
            t.pod_object("x/a", None),
        )))
        .unwrap()
        .unwrap();
    assert_eq!(d.ingress.unisolate, vec![xa]);
    assert_eq!(d.ingress.remove.len(), 1);
    // No pod elements left; the policy's namespace stays gated (the policy is there).
    let m = &c.enforcer().model;
    assert_eq!(
        m.namespaces,
        [kinc_types::policy_gate::namespace_key("x")].into()
    );
    assert_eq!(
        *m,
        Compiled {
            namespaces: m.namespaces.clone(),
            ..Compiled::default()
        }
    );
}

#[test]
fn policy_types_defaults() {
    let t = topo();
    let cases = [
        (
            "no types, no egress: ingress only",
            json!({ "podSelector": {} }),
            (true, false),
        ),
        (
            "no types, egress rules: both",
            json!({ "podSelector": {}, "egress": [{ "ports": [{ "port": 53, "protocol": "UDP" }] }] }),
            (true, true),
        ),
        (
            "no types, empty egress list: ingress only",
            json!({ "podSelector": {}, "egress": [] }),
            (true, false),
        ),
        (
            "Egress only, ingress rules ignored",
            json!({ "podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}] }),
            (false, true),
        ),
    ];
    for (name, spec, (want_in, want_eg)) in cases {
        let mut c = controller(&t);
        apply(&mut c, np("p", spec));
        let m = &c.enforcer().model;
        assert_eq!(m.ingress.len(), if want_in { 3 } else { 0 }, "{name}");
        assert_eq!(m.egress.len(), if want_eg { 3 } else { 0 }, "{name}");
    }
}

#[test]
fn inexpressible_entries_are_warned_with_the_policy_name_and_stay_closed() {
    let t = topo();
    let mut c = controller(&t);
    apply(
        &mut c,
        np(
            "odd",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "ports": [{ "port": 80, "protocol": "ICMPX" }, { "port": "nope" }] }] }),
        ),
    );
    let w = c.status().warnings;
    assert!(
        w.iter()
            .any(|w| w.contains("networkpolicy x/odd") && w.contains("ICMPX")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("networkpolicy x/odd") && w.contains("\"nope\"")),
        "{w:?}"
    );
    let m = &c.enforcer().model;
    assert_eq!(
        m.elements(Direction::Ingress, ip(&t, "x/a")),
        Some(BTreeSet::new())
    );
    assert!(!m.allows(ip(&t, "x/b"), ip(&t, "x/a"), PROTO_TCP, 80));
    assert!(!m.allows(ip(&t, "x/b"), ip(&t, "x/a"), PROTO_UDP, 81));
}

/// Each malformed peer or port entry, beside a well-formed one, in both directions: the
/// malformed one allows nothing and the rest still applies. Were it skipped instead, its
/// rule would allow more (a block without its except, every port, every peer).
#[test]
fn malformed_peers_and_ports_fail_closed_in_both_directions() {
    let t = topo();
    let (xa, xb, yc) = (ip(&t, "x/a"), ip(&t, "x/b"), ip(&t, "y/c"));
    let pod_b = json!({ "podSelector": { "matchLabels": { "pod": "b" } } });
    let block = |except: serde_json::Value| json!({ "ipBlock": { "cidr": "10.244.0.0/24", "except": except } });
    let peer_cases = [
        (
            "except",
            block(json!(["10.244.0.11/32", "10.244.0.300/32"])),
        ),
        ("except", block(json!(["not-a-cidr"]))),
        ("except", block(json!(["10.244.0.11"]))),
        ("cidr", json!({ "ipBlock": { "cidr": "10.244.0.0/33" } })),
        ("cidr", json!({ "ipBlock": { "cidr": "10.244.0.0" } })),
        (
            "mixed peer",
            json!({ "ipBlock": { "cidr": "10.244.0.0/24" }, "podSelector": {} }),
        ),
        ("empty peer", json!({})),
        (
            "selector",
            json!({ "podSelector": { "matchExpressions": [{ "key": "pod", "operator": "Bogus" }] } }),
        ),
    ];
    for dir in [Direction::Ingress, Direction::Egress] {
        let key = if dir == Direction::Ingress {
            "from"
        } else {
            "to"
        };
        let rules = if dir == Direction::Ingress {
            "ingress"
        } else {
            "egress"
        };
        // Allows x/a <-> x/b on tcp/80 and nothing else, whatever the malformed peer said.
        for (what, bad) in &peer_cases {
            let mut c = controller(&t);
            apply(
                &mut c,
                np(
                    "bad-peer",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                      "policyTypes": ["Ingress", "Egress"],
                                      rules: [{ key: [bad, pod_b], "ports": [{ "port": 80 }] }] }),
                ),
            );
            let m = &c.enforcer().model;
            assert_eq!(
                m.elements(dir, xa),
                Some([elem(xb, xb, (6, 6), (80, 80))].into()),
                "{dir:?} {what}: {bad}"
            );
            let (from, to) = if dir == Direction::Ingress {
                (yc, xa)
            } else {
                (xa, yc)
            };
            assert!(!m.allows(from, to, PROTO_TCP, 80), "{dir:?} {what}: {bad}");
        }
        // Allows tcp/80 from/to everyone, whatever the malformed port said.
        for bad in [
            json!({ "port": 0 }),
            json!({ "port": 65536 }),
            json!({ "port": 90, "endPort": 80 }),
            json!({ "endPort": 90 }),
            json!({ "port": "http", "endPort": 90 }),
            json!({ "port": 81, "protocol": "ICMP" }),
        ] {
            let mut c = controller(&t);
            apply(
                &mut c,
                np(
                    "bad-port",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                      "policyTypes": ["Ingress", "Egress"],
                                      rules: [{ "ports": [bad, { "port": 80 }] }] }),
                ),
            );
            let all_v4 = (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(255, 255, 255, 255));
            assert_eq!(
                c.enforcer().model.elements(dir, xa),
                Some([elem(all_v4.0, all_v4.1, (6, 6), (80, 80))].into()),
                "{dir:?} port {bad}"
            );
            assert!(!c.status().warnings.is_empty(), "{dir:?} port {bad}");
        }
    }
}

#[test]
fn pods_without_address_or_on_host_network_take_no_part() {
    let t = topo();
    let mut c = controller(&t);
    apply(&mut c, np("deny", json!({ "podSelector": {} })));
    let mut host = t.pod_object("x/a", None);
    host.spec.as_mut().unwrap().host_network = Some(true);
    c.handle(Event::Pod(watcher::Event::Apply(host))).unwrap();
    assert!(!c.enforcer().model.ingress.contains_key(&ip(&t, "x/a")));
    let mut pending = t.pod_object("x/b", None);
    pending.status = None;
    c.handle(Event::Pod(watcher::Event::Apply(pending)))
        .unwrap();
    assert_eq!(c.enforcer().model.ingress.len(), 1, "only x/c is left");
}

#[test]
fn events_before_every_kind_is_listed_program_nothing() {
    let t = topo();
    let mut c = Controller::new(Recording::default());
    c.handle(Event::Pod(watcher::Event::InitDone)).unwrap();
    c.handle(Event::Pod(watcher::Event::Apply(t.pod_object("x/a", None))))
        .unwrap();
    c.handle(Event::Policy(watcher::Event::InitDone)).unwrap();
    c.handle(Event::Policy(watcher::Event::Apply(np(
        "deny",
        json!({ "podSelector": {} }),
    ))))
    .unwrap();
    assert_eq!(c.enforcer().transactions, 0);
    assert!(!c.synced());
    c.handle(Event::Namespace(watcher::Event::InitDone))
        .unwrap();
    assert!(c.synced());
    assert_eq!(c.enforcer().transactions, 1, "one transaction at sync");
    assert_eq!(c.enforcer().model.ingress.len(), 1);
    assert_eq!(c.status().policies, 1);
    assert!(c.status().last_sync.is_some());
}

#[test]
fn pods_with_the_same_ranges_share_one_class() {
    let t = topo();
    let mut c = controller(&t);
    let x: Vec<Ipv4Addr> = ["x/a", "x/b", "x/c"].iter().map(|p| ip(&t, p)).collect();
    // Every pod of x: one block with a hole, i.e. two range elements, in one class.
    let d = apply(
        &mut c,
        np(
            "block",
            json!({ "podSelector": {},
                    "ingress": [{ "from": [{ "ipBlock": { "cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"] } }] }] }),
        ),
    );
    let m = &c.enforcer().model;
    assert_eq!(m.in_classes.ranges.len(), 1);
    let shared = *m.in_classes.ranges.keys().next().unwrap();
    assert_eq!(d.ingress.class_new, vec![shared]);
    assert_eq!(d.ingress.range_add.len(), 2, "the ranges once, not per pod");
    assert_eq!(
        d.ingress.bind,
        x.iter().map(|ip| (*ip, shared)).collect::<Vec<_>>()
    );
    assert_eq!(m.element_count(), 2);

    // x/a gets a range more: its own class; x/b and x/c keep theirs.
    let d = apply(
        &mut c,
        np(
            "more",
            json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                    "ingress": [{ "from": [{ "ipBlock": { "cidr": "172.16.0.0/12" } }] }] }),
        ),
    );
    let m = &c.enforcer().model;
    assert_eq!(m.in_classes.ranges.len(), 2);
    let own = m.ingress[&x[0]].class.unwrap();
    assert_ne!(own, shared);
    assert_eq!(d.ingress.class_new, vec![own]);
    assert_eq!(d.ingress.range_add.len(), 3);
    assert_eq!(d.ingress.unbind, vec![(x[0], shared)]);
    assert_eq!(d.ingress.bind, vec![(x[0], own)]);
    assert!(d.ingress.class_gone.is_empty() && d.ingress.range_remove.is_empty());

    // Undone: x/a rejoins, and its class goes with its elements.
    let d = c
        .handle(Event::Policy(watcher::Event::Delete(np("more", json!({})))))
        .unwrap()
        .unwrap();
    assert_eq!(d.ingress.class_gone, vec![own]);
    assert_eq!(d.ingress.range_remove.len(), 3);
    assert_eq!(d.ingress.bind, vec![(x[0], shared)]);
    assert_eq!(c.enforcer().model.in_classes.ranges.len(), 1);
    assert_eq!(c.enforcer().model, full_compile(&c));

    // The last pod leaving a class drops it.
    let d = c
        .handle(Event::Policy(watcher::Event::Delete(np(
            "block",
            json!({}),
        ))))
        .unwrap()
        .unwrap();
    assert_eq!(d.ingress.class_gone, vec![shared]);
    assert_eq!(c.enforcer().model, Compiled::default());
}

// ---------------------------------------------------------------------------------------
// The CNI gate (issue 18): requests from kincnet's ADD and DEL.

use crate::controller::CniOutcome;
use kinc_types::policy_gate::{namespace_key, Request, Response};

/// A pod the API knows (kubelet has it) before its sandbox has an address.
fn unaddressed(ns: &str, name: &str, labels: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Pod {
    let mut p = testkit::pod(ns, name, Ipv4Addr::UNSPECIFIED, labels, &[]);
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    p
}

fn program_req(ns: &str, name: &str, ip: Ipv4Addr) -> Request {
    Request::Program {
        namespace: ns.into(),
        name: name.into(),
        ip,
        container_id: "c1".into(),
        timeout_ms: 1000,
    }
}

fn pod_event(p: k8s_openapi::api::core::v1::Pod) -> Event {
    Event::Pod(watcher::Event::Apply(p))
}

#[test]
fn policy_namespaces_follow_the_policies() {
    let t = topo();
    let mut c = controller(&t);
    let d = apply(&mut c, np("deny", json!({ "podSelector": {} })));
    assert_eq!(d.ns_add, vec![namespace_key("x")]);
    let d = apply(&mut c, np("deny2", json!({ "podSelector": {} })));
    assert!(d.ns_add.is_empty() && d.ns_remove.is_empty());
    c.handle(Event::Policy(watcher::Event::Delete(np("deny", json!({})))))
        .unwrap();
    assert_eq!(c.status().gated_namespaces, 1);
    let d = c
        .handle(Event::Policy(watcher::Event::Delete(np(
            "deny2",
            json!({}),
        ))))
        .unwrap()
        .unwrap();
    assert_eq!(d.ns_remove, vec![namespace_key("x")]);
    assert!(c.enforcer().model.namespaces.is_empty());
    assert_eq!(full_compile(&c), c.enforcer().model);
}

#[test]
fn cni_program_waits_for_the_sync_and_the_pod() {
    let t = topo();
    let ip = Ipv4Addr::new(10, 244, 0, 200);
    let mut c = Controller::new(Recording::default());
    match c.cni_request(&program_req("x", "db", ip)) {
        CniOutcome::Wait(r) => assert!(r.contains("not synced"), "{r}"),
        o => panic!("{o:?}"),
    }
    let mut c = controller(&t);
    match c.cni_request(&program_req("x", "db", ip)) {
        CniOutcome::Wait(r) => assert!(r.contains("x/db is not in the watch cache"), "{r}"),
        o => panic!("{o:?}"),
    }
    // Release before a sync is refused: kincnet then purges the address itself.
    let mut fresh = Controller::new(Recording::default());
    assert!(matches!(
        fresh.cni_request(&Request::Release {
            ip,
            container_id: "c".into()
        }),
        CniOutcome::Answer(Response::Refused { .. })
    ));
}

#[test]
fn cni_program_puts_the_rules_and_the_unpend_in_one_transaction() {
    let t = topo();
    let ip = Ipv4Addr::new(10, 244, 0, 200);
    let mut c = controller(&t);
    apply(
        &mut c,
        np(
            "db",
            json!({ "podSelector": { "matchLabels": { "role": "db" } },
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "a" } } }] }] }),
        ),
    );
    c.handle(pod_event(unaddressed("x", "db", &[("role", "db")])))
        .unwrap();
    let before = c.enforcer().transactions;
    let out = c.cni_request(&program_req("x", "db", ip));
    assert_eq!(
        out,
        CniOutcome::Answer(Response::Programmed {
            isolated_ingress: true,
            isolated_egress: true
        })
    );
    assert_eq!(c.enforcer().transactions, before + 1, "one transaction");
    let last = &c.enforcer().last;
    assert_eq!(last.unpend, vec![ip]);
    assert_eq!(last.ingress.isolate, vec![ip]);
    assert_eq!(last.egress.isolate, vec![ip]);
    assert_eq!(last.ingress.add.len(), 1, "x/a may connect: {last:?}");
    let m = c.enforcer().model.clone();

    // kubelet's status updates before it writes the address change nothing...
    c.handle(pod_event(unaddressed("x", "db", &[("role", "db")])))
        .unwrap();
    assert_eq!(
        c.enforcer().model,
        m,
        "an address-less update must not open the pod"
    );
    // ... nor does the address when it arrives, nor a relist.
    c.handle(pod_event(testkit::pod(
        "x",
        "db",
        ip,
        &[("role", "db")],
        &[],
    )))
    .unwrap();
    assert_eq!(c.enforcer().model, m);
    c.resync().unwrap();
    assert_eq!(c.enforcer().model, m);

    // A non-selected pod of the namespace: programmed (nothing to isolate), unpended.
    let ip2 = Ipv4Addr::new(10, 244, 0, 201);
    c.handle(pod_event(unaddressed("x", "web", &[("role", "web")])))
        .unwrap();
    assert_eq!(
        c.cni_request(&program_req("x", "web", ip2)),
        CniOutcome::Answer(Response::Programmed {
            isolated_ingress: false,
            isolated_egress: false
        })
    );
    assert_eq!(c.enforcer().last.unpend, vec![ip2]);
}

#[test]
fn cni_release_removes_the_address_and_a_reused_address_has_one_owner() {
    let t = topo();
    let mut c = controller(&t);
    apply(
        &mut c,
        np(
            "db",
            json!({ "podSelector": { "matchLabels": { "role": "db" } }, "policyTypes": ["Ingress"] }),
        ),
    );
    // x/a holds its address; its sandbox goes (DEL): the API still shows the address.
    let a = ip(&t, "x/a");
    c.handle(pod_event(t.pod_object("x/a", Some(&[("role", "db")]))))
        .unwrap();
    assert!(c.enforcer().model.ingress.contains_key(&a));
    assert_eq!(
        c.cni_request(&Request::Release {
            ip: a,
            container_id: "c".into()
        }),
        CniOutcome::Answer(Response::Released)
    );
    assert!(!c.enforcer().model.ingress.contains_key(&a));
    // The stale address in a later update does not bring the verdicts back.
    c.handle(pod_event(t.pod_object("x/a", Some(&[("role", "db")]))))
        .unwrap();
    assert!(!c.enforcer().model.ingress.contains_key(&a));

    // Another pod, unselected, gets the same address: it is its own, open.
    c.handle(pod_event(unaddressed("x", "new", &[("role", "web")])))
        .unwrap();
    assert_eq!(
        c.cni_request(&program_req("x", "new", a)),
        CniOutcome::Answer(Response::Programmed {
            isolated_ingress: false,
            isolated_egress: false
        })
    );
    assert!(!c.enforcer().model.ingress.contains_key(&a));
    let owner = c
        .reconciler()
        .cluster()
        .owner_of(a)
        .map(|p| p.key.to_string());
    assert_eq!(owner.as_deref(), Some("x/new"));
}
