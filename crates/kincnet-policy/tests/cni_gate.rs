//! NetworkPolicy in force before a pod's first packet (issue 18), end to end: the real
//! `kincnet-policy` binary against the fake API server, kincnet's ADD and DEL (its
//! library, called exactly as the binary calls it) in the node's network namespace, and
//! pods in namespaces of their own.
//!
//! The policy denies ingress and egress to `role=db` pods in namespace `prod`. Each
//! round adds a `role=db` pod and an unselected pod of the same namespace at once; the
//! moment each ADD returns, connections start into the pod and out of it. The db pod
//! must never connect; the other pod must connect on its first try. Without the gate the
//! controller would learn the db pod's address only from the API (which, here, never
//! shows it), and the db pod would be open.

#[allow(unused_imports)]
mod common;
mod gate_lab;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Netns, Servers};
use gate_lab::{arm, pending_pod, result_ip, Kind, Lab};
use kincnet_policy::model::PROTO_TCP;
use kincnet_policy::nft::{SET_EG_ISOLATED, SET_IN_ISOLATED};
use serde_json::Value;

/// Long enough for one SYN retransmit (1 s): the first packets on a veth that has just
/// come up can be dropped until the kernel's linkwatch activates its queue (seen here
/// under load, with or without policy), so a shorter wait could miss a connection that
/// would have got through.
const DENIED_WAIT: Duration = Duration::from_millis(1500);
const ALLOWED_WAIT: Duration = Duration::from_secs(3);

/// A server pod in `other` (no policies there): the peer of every probe.
fn server_pod(lab: &Lab, conf: &Value) -> (Netns, Servers, Ipv4Addr) {
    let ns = Netns::new("kgsrv");
    let servers = Servers::start(&ns, &[(PROTO_TCP, 80)]);
    lab.api
        .edit(|e| e.apply(Kind::Pod, pending_pod("other", "srv", "srv")));
    let out = lab.cni("ADD", conf, "srv", Some(&ns.path()), Some(("other", "srv")));
    assert_eq!(out.code, 0, "ADD srv: {}", out.stdout);
    let ip = result_ip(&out);
    (ns, servers, ip)
}

#[test]
#[ignore = "needs root, ip, nft"]
fn a_selected_pod_is_never_reachable_unpoliced_and_an_unselected_one_at_once() {
    kinc_testutil::require_root_and!("ip", "nft");
    let reps: usize = std::env::var("KINCNET_GATE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = Lab::new("a");
    let ctl = lab.controller(&lab.token);
    lab.wait_for(&ctl, "sync", |s| s.synced && s.gated_namespaces == 1);
    let conf = lab.conf(10_000);
    let (srv, _servers, srv_ip) = server_pod(&lab, &conf);

    for i in 0..reps {
        let (db_name, web_name) = (format!("db-{i}"), format!("web-{i}"));
        let db = Netns::new("kgdb");
        let web = Netns::new("kgweb");
        let _db_srv = Servers::start(&db, &[(PROTO_TCP, 80)]);
        let _web_srv = Servers::start(&web, &[(PROTO_TCP, 80)]);
        lab.api.edit(|e| {
            e.apply(Kind::Pod, pending_pod("prod", &db_name, "db"));
            e.apply(Kind::Pod, pending_pod("prod", &web_name, "web"));
        });
        let into_db = arm(&srv, 80, DENIED_WAIT);
        let out_of_db = arm(&db, 80, DENIED_WAIT);
        let into_web = arm(&srv, 80, ALLOWED_WAIT);
        let out_of_web = arm(&web, 80, ALLOWED_WAIT);
        let (db_out, web_out) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let out = lab.cni(
                    "ADD",
                    &conf,
                    &db_name,
                    Some(&db.path()),
                    Some(("prod", &db_name)),
                );
                if out.code == 0 {
                    into_db.fire(result_ip(&out));
                    out_of_db.fire(srv_ip);
                }
                out
            });
            let b = s.spawn(|| {
                let out = lab.cni(
                    "ADD",
                    &conf,
                    &web_name,
                    Some(&web.path()),
                    Some(("prod", &web_name)),
                );
                if out.code == 0 {
                    into_web.fire(result_ip(&out));
                    out_of_web.fire(srv_ip);
                }
                out
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(
            db_out.code,
            0,
            "round {i}: ADD db: {}\n{}",
            db_out.stdout,
            ctl.log()
        );
        assert_eq!(web_out.code, 0, "round {i}: ADD web: {}", web_out.stdout);
        let (db_ip, web_ip) = (result_ip(&db_out), result_ip(&web_out));
        assert!(
            !into_db.connected(),
            "round {i}: connected into the db pod {db_ip}"
        );
        assert!(
            !out_of_db.connected(),
            "round {i}: the db pod {db_ip} connected out"
        );
        assert!(
            into_web.connected(),
            "round {i}: no first connection into {web_ip}"
        );
        assert!(
            out_of_web.connected(),
            "round {i}: no first connection out of {web_ip}"
        );
        // Isolated both ways, nothing pending.
        assert!(lab.set(SET_IN_ISOLATED).contains(&db_ip.to_string()));
        assert!(lab.set(SET_EG_ISOLATED).contains(&db_ip.to_string()));
        assert!(lab.set("pod_pending").is_empty());

        // DEL takes the db pod's verdicts out before its address can be reused.
        for (name, ns) in [(&db_name, &db), (&web_name, &web)] {
            let out = lab.cni("DEL", &conf, name, Some(&ns.path()), Some(("prod", name)));
            assert_eq!(out.code, 0, "DEL {name}: {}", out.stdout);
        }
        assert!(
            !lab.set(SET_IN_ISOLATED).contains(&db_ip.to_string()),
            "round {i}"
        );
        assert!(
            !lab.set(SET_EG_ISOLATED).contains(&db_ip.to_string()),
            "round {i}"
        );
        lab.api.edit(|e| {
            e.delete(Kind::Pod, "prod", &db_name);
            e.delete(Kind::Pod, "prod", &web_name);
        });
    }
    // Two programs and two releases a round, none refused; the server pod (a namespace
    // without policies) never asked. The status is written shortly after requests.
    let s = lab.wait_for(&ctl, "request counts", |s| {
        s.cni_requests >= 4 * reps as u64
    });
    assert_eq!(
        (s.cni_requests, s.cni_refused),
        (4 * reps as u64, 0),
        "{s:#?}"
    );
    drop(ctl);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn controller_not_synced_or_down_fails_add_clearly_and_leaves_nothing() {
    kinc_testutil::require_root_and!("ip", "nft");
    let lab = Lab::new("b");
    let conf = lab.conf(1_500);

    // No controller has run in this node: nothing is gated (kincnet cannot tell a
    // controller that is coming from none at all).
    let free = Netns::new("kgfree");
    let out = lab.cni(
        "ADD",
        &conf,
        "free0",
        Some(&free.path()),
        Some(("prod", "free0")),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        lab.cni("DEL", &conf, "free0", None, Some(("prod", "free0")))
            .code,
        0
    );

    // A controller that never syncs (its token is refused): every Kubernetes pod waits,
    // then ADD fails with code 11 naming the cause, and leaves nothing behind.
    let ctl = lab.controller("a-stale-token");
    lab.wait_for(&ctl, "socket", |s| s.cni_socket.is_some() && !s.synced);
    let p = Netns::new("kgp");
    lab.api
        .edit(|e| e.apply(Kind::Pod, pending_pod("other", "early", "web")));
    let out = lab.cni(
        "ADD",
        &conf,
        "early",
        Some(&p.path()),
        Some(("other", "early")),
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    let err: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(err["code"], 11, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("other/early") && msg.contains("not synced") && msg.contains("kincnet-policy"),
        "{msg}"
    );
    assert_eq!((lab.host_veths(), lab.allocations()), (0, 0));
    assert!(lab.set("pod_pending").is_empty());
    let s = lab.wait_for(&ctl, "refusal in status", |s| s.cni_refused >= 1);
    assert!(s
        .cni_last_refusal
        .as_deref()
        .unwrap()
        .contains("not synced"));
    assert!(s.gate().contains("not synced"));
    // A runtime without Kubernetes pod names (podman) is not gated.
    let out = lab.cni("ADD", &conf, "podman0", Some(&free.path()), None);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(lab.cni("DEL", &conf, "podman0", None, None).code, 0);
    ctl.kill();

    // Synced: a db pod is programmed; then the controller goes away.
    let ctl = lab.controller(&lab.token);
    lab.wait_for(&ctl, "sync", |s| s.synced && s.gated_namespaces == 1);
    let (srv, _servers, srv_ip) = server_pod(&lab, &conf);
    let db = Netns::new("kgdb");
    lab.api
        .edit(|e| e.apply(Kind::Pod, pending_pod("prod", "db", "db")));
    let out = lab.cni("ADD", &conf, "db", Some(&db.path()), Some(("prod", "db")));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, ctl.log());
    let db_ip = result_ip(&out);
    assert!(lab.set(SET_IN_ISOLATED).contains(&db_ip.to_string()));
    ctl.kill();

    // Down: a pod of a namespace with policies is refused with the cause...
    let p2 = Netns::new("kgp");
    let out = lab.cni(
        "ADD",
        &conf,
        "late",
        Some(&p2.path()),
        Some(("prod", "late")),
    );
    let err: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(err["code"], 11, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("prod/late")
            && msg.contains("NetworkPolicies")
            && msg.contains("connecting to"),
        "{msg}"
    );
    assert_eq!(lab.host_veths(), 2, "srv and db only");
    // ... while one of a namespace without policies starts and connects at once.
    let p3 = Netns::new("kgp");
    let _s3 = Servers::start(&p3, &[(PROTO_TCP, 80)]);
    let into = arm(&srv, 80, ALLOWED_WAIT);
    let out = lab.cni(
        "ADD",
        &conf,
        "web",
        Some(&p3.path()),
        Some(("other", "web")),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    into.fire(result_ip(&out));
    assert!(into.connected());
    let _ = srv_ip;

    // DEL with the controller down still takes the db pod's verdicts out.
    let out = lab.cni("DEL", &conf, "db", Some(&db.path()), Some(("prod", "db")));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(!lab.set(SET_IN_ISOLATED).contains(&db_ip.to_string()));
    assert!(!lab.set(SET_EG_ISOLATED).contains(&db_ip.to_string()));
    assert!(lab.set("pod_pending").is_empty());
}
