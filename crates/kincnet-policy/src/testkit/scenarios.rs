//! Scenarios after upstream's NetworkPolicy conformance cases
//! (test/e2e/network/netpol in kubernetes/kubernetes), on the x/y/z a/b/c topology.

use serde_json::{json, Value};

use super::{namespace, policy, Probe, Scenario, Step};

fn np(ns: &str, name: &str, spec: Value) -> Step {
    Step::ApplyPolicy(policy(json!({
        "metadata": { "namespace": ns, "name": name },
        "spec": spec
    })))
}

fn only_xa(p: &Probe) -> bool {
    p.to == "x/a"
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "no policy: everything open",
            steps: |_| vec![],
            expect: |_| true,
        },
        Scenario {
            name: "default deny ingress in x",
            steps: |_| vec![np("x", "deny-in", json!({ "podSelector": {} }))],
            expect: |p| !p.to_ns("x"),
        },
        Scenario {
            name: "default deny egress in x",
            steps: |_| {
                vec![np(
                    "x",
                    "deny-eg",
                    json!({ "podSelector": {}, "policyTypes": ["Egress"] }),
                )]
            },
            expect: |p| !p.from_ns("x"),
        },
        Scenario {
            name: "default deny all in x, then allow all ingress with an empty rule",
            steps: |_| {
                vec![
                    np(
                        "x",
                        "deny-all",
                        json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
                    ),
                    np(
                        "x",
                        "allow-all-in",
                        json!({ "podSelector": {}, "ingress": [{}] }),
                    ),
                ]
            },
            expect: |p| !p.from_ns("x"),
        },
        Scenario {
            name: "allow x/a from its own namespace only",
            steps: |_| {
                vec![np(
                    "x",
                    "same-ns",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [{ "podSelector": {} }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from_ns("x"),
        },
        Scenario {
            name: "allow x/a from namespace y",
            steps: |_| {
                vec![np(
                    "x",
                    "from-y",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "ns": "y" } } }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from_ns("y"),
        },
        Scenario {
            name: "allow x/a from pod b in namespace y (both selectors in one peer)",
            steps: |_| {
                vec![np(
                    "x",
                    "from-y-b",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [{
                                "namespaceSelector": { "matchLabels": { "ns": "y" } },
                                "podSelector": { "matchLabels": { "pod": "b" } } }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from == "y/b",
        },
        Scenario {
            name: "allow x/a from namespace y OR pod x/b (two peers)",
            steps: |_| {
                vec![np(
                    "x",
                    "from-y-or-b",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [
                                { "namespaceSelector": { "matchLabels": { "ns": "y" } } },
                                { "podSelector": { "matchLabels": { "pod": "b" } } } ] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from_ns("y") || p.from == "x/b",
        },
        Scenario {
            name: "matchExpressions: x/a from namespaces NotIn [x, y] and pods In [a, c]",
            steps: |_| {
                vec![np(
                    "x",
                    "expr",
                    json!({ "podSelector": { "matchExpressions": [ { "key": "pod", "operator": "In", "values": ["a"] } ] },
                            "ingress": [{ "from": [{
                                "namespaceSelector": { "matchExpressions": [ { "key": "ns", "operator": "NotIn", "values": ["x", "y"] } ] },
                                "podSelector": { "matchExpressions": [ { "key": "pod", "operator": "In", "values": ["a", "c"] } ] } }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from == "z/a" || p.from == "z/c",
        },
        Scenario {
            name: "ipBlock with except: x/a from the pod subnet except z/b",
            steps: |t| {
                let zb = t.get("z/b").ip;
                let first = t.pods[0].ip.octets();
                vec![np(
                    "x",
                    "block",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [{ "ipBlock": {
                                "cidr": format!("{}.{}.0.0/16", first[0], first[1]),
                                "except": [format!("{zb}/32")] } }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.from != "z/b",
        },
        Scenario {
            name: "named port: x/a only on serve-81-tcp",
            steps: |_| {
                vec![np(
                    "x",
                    "named",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "ports": [{ "port": "serve-81-tcp", "protocol": "TCP" }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.tcp(81),
        },
        Scenario {
            name: "numeric port with protocol: x/a only on udp/81",
            steps: |_| {
                vec![np(
                    "x",
                    "udp81",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "ports": [{ "port": 81, "protocol": "UDP" }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || p.udp(81),
        },
        Scenario {
            name: "endPort: x/a on tcp 81-90 from namespace z",
            steps: |_| {
                vec![np(
                    "x",
                    "range",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "ns": "z" } } }],
                                          "ports": [{ "port": 81, "endPort": 90, "protocol": "TCP" }] }] }),
                )]
            },
            expect: |p| !only_xa(p) || (p.tcp(81) && p.from_ns("z")),
        },
        Scenario {
            name: "egress to DNS only from namespace x",
            steps: |_| {
                vec![np(
                    "x",
                    "dns-only",
                    json!({ "podSelector": {}, "policyTypes": ["Egress"],
                            "egress": [{ "ports": [{ "port": 53, "protocol": "UDP" }, { "port": 53, "protocol": "TCP" }] }] }),
                )]
            },
            expect: |p| !p.from_ns("x") || p.udp(53),
        },
        Scenario {
            name: "egress from x/a to namespace y on named port serve-80-tcp",
            steps: |_| {
                vec![np(
                    "x",
                    "eg-named",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } }, "policyTypes": ["Egress"],
                            "egress": [{ "to": [{ "namespaceSelector": { "matchLabels": { "ns": "y" } } }],
                                         "ports": [{ "port": "serve-80-tcp" }] }] }),
                )]
            },
            expect: |p| p.from != "x/a" || (p.to_ns("y") && p.tcp(80)),
        },
        Scenario {
            name: "union of two policies on x/a (x/b on tcp/80, namespace y on udp/81)",
            steps: |_| {
                vec![
                    np(
                        "x",
                        "from-b-80",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }],
                                              "ports": [{ "port": 80 }] }] }),
                    ),
                    np(
                        "x",
                        "from-y-81",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "ns": "y" } } }],
                                              "ports": [{ "port": 81, "protocol": "UDP" }] }] }),
                    ),
                ]
            },
            expect: |p| {
                !only_xa(p) || (p.from == "x/b" && p.tcp(80)) || (p.from_ns("y") && p.udp(81))
            },
        },
        Scenario {
            name: "egress deny on y/a wins over ingress allow on x/a",
            steps: |_| {
                vec![
                    np(
                        "y",
                        "deny-eg-a",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } }, "policyTypes": ["Egress"] }),
                    ),
                    np(
                        "x",
                        "from-all",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                "ingress": [{ "from": [{ "namespaceSelector": {} }] }] }),
                    ),
                ]
            },
            expect: |p| p.from != "y/a",
        },
        Scenario {
            name: "policy deleted: default deny ingress in x, then removed",
            steps: |_| {
                vec![
                    np("x", "deny-in", json!({ "podSelector": {} })),
                    Step::DeletePolicy {
                        ns: "x",
                        name: "deny-in",
                    },
                ]
            },
            expect: |_| true,
        },
        Scenario {
            name: "pod relabelled: x/c becomes pod=b and is allowed into x/a",
            steps: |t| {
                vec![
                    np(
                        "x",
                        "from-b",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "pod": "b" } } }] }] }),
                    ),
                    Step::ApplyPod(t.pod_object("x/c", Some(&[("pod", "b")]))),
                ]
            },
            expect: |p| !only_xa(p) || p.from == "x/b" || p.from == "x/c",
        },
        Scenario {
            name: "selected pod relabelled out: x/a loses pod=a and becomes open",
            steps: |t| {
                vec![
                    np(
                        "x",
                        "deny-a",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } } }),
                    ),
                    Step::ApplyPod(t.pod_object("x/a", Some(&[("pod", "other")]))),
                ]
            },
            expect: |_| true,
        },
        Scenario {
            name: "namespace relabelled: z gets team=blue and is allowed into x/a",
            steps: |_| {
                vec![
                    np(
                        "x",
                        "from-blue",
                        json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                                "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "team": "blue" } } }] }] }),
                    ),
                    Step::ApplyNamespace(namespace("z", &[("ns", "z"), ("team", "blue")])),
                ]
            },
            expect: |p| !only_xa(p) || p.from_ns("z"),
        },
        Scenario {
            name: "unknown protocol and undeclared named port isolate but allow nothing",
            steps: |_| {
                vec![np(
                    "x",
                    "odd",
                    json!({ "podSelector": { "matchLabels": { "pod": "a" } },
                            "ingress": [{ "ports": [{ "port": 80, "protocol": "ICMPX" },
                                                    { "port": "no-such-port" }] }] }),
                )]
            },
            expect: |p| !only_xa(p),
        },
    ]
}
