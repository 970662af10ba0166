//! The NetworkPolicy gate of ADD and DEL (issue 18) against a fake controller socket: the
//! kernel drops a gated pod's traffic until its pending element goes, ADD returns only
//! on a `programmed` answer, a refusal is code 11 and leaves nothing, a pod of a namespace
//! without policies never touches the socket, and DEL removes the address's policy
//! elements itself when nobody confirms. (The real controller: kincnet-policy's
//! tests/cni_gate.rs.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use kinc_types::policy_gate::{namespace_key, Request, SYNCED_KEY};
use serde_json::{json, Value};

fn nft(t: &Topo, args: &[&str]) {
    run_ok(&mut t.node.command("nft", args));
}

fn pending(t: &Topo) -> String {
    run_ok(
        &mut t
            .node
            .command("nft", &["list", "set", "ip", "kincnet", "pod_pending"]),
    )
}

/// kincnet-policy's namespace set, as a synced controller leaves it, with `prod` gated.
fn controller_state(t: &Topo) {
    nft(
        t,
        &[
            "add",
            "set",
            "ip",
            "kincnet",
            "policy_namespaces",
            "{ type mark; }",
        ],
    );
    let elems = format!("{{ {SYNCED_KEY}, {} }}", namespace_key("prod"));
    nft(
        t,
        &[
            "add",
            "element",
            "ip",
            "kincnet",
            "policy_namespaces",
            &elems,
        ],
    );
}

fn add_with_pod(t: &Topo, conf: &Value, cid: &str, pod: &Netns, ns: &str) -> Out {
    let mut cmd = plugin_command(&t.node.path(), "ADD", cid, Some(&pod.path()));
    cmd.env(
        "CNI_ARGS",
        format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={cid}"),
    );
    run_plugin(cmd, conf.to_string().as_bytes())
}

#[test]
#[ignore = "needs root, ip, nft"]
fn gated_add_waits_for_the_controller_and_the_kernel_drops_until_then() {
    kinc_testutil::require_root_and!("ip", "nft");
    let t = Topo::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cni.sock");
    let mut conf = t.conf("1.0.0");
    conf["policySocket"] = json!(sock);
    conf["policyTimeoutMs"] = json!(8000);

    // A peer pod, added before any controller: not gated.
    let peer = Netns::new("kgpeer");
    let r = t.add(&conf, "peer", &peer);
    let peer_ip = result_ip(&r);
    echo_peer_server(&peer.path(), SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80));
    controller_state(&t);

    // The fake controller: while ADD waits, the pod's address is pending and dropped
    // both ways; it answers `programmed` (without deleting the pending element).
    let listener = UnixListener::bind(&sock).unwrap();
    let (tx, rx) = mpsc::channel();
    let db = Netns::new("kgdb");
    echo_peer_server(&db.path(), SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80));
    let (db_path, peer_path) = (db.path(), peer.path());
    let fake = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let req: Request = serde_json::from_str(&line).unwrap();
        let Request::Program {
            namespace,
            name,
            ip,
            ..
        } = &req
        else {
            panic!("{req:?}")
        };
        assert_eq!((namespace.as_str(), name.as_str()), ("prod", "db"));
        let into = connect_from(&peer_path, SocketAddrV4::new(*ip, 80));
        let out_of = connect_from(&db_path, SocketAddrV4::new(peer_ip, 80));
        tx.send((into.is_ok(), out_of.is_ok())).unwrap();
        (&s).write_all(
            b"{\"result\":\"programmed\",\"isolatedIngress\":true,\"isolatedEgress\":true}\n",
        )
        .unwrap();
        listener
    });
    let out = add_with_pod(&t, &conf, "db", &db, "prod");
    assert_eq!(out.code, 0, "{}", out.stdout);
    let db_ip = result_ip(&out.json);
    assert_eq!(rx.recv().unwrap(), (false, false), "reached while pending");
    // Still pending (our fake did not program it): still dropped.
    assert!(pending(&t).contains(&db_ip.to_string()));
    assert!(connect_from(&peer.path(), SocketAddrV4::new(db_ip, 80)).is_err());
    // The element gone (what the controller does with the rules): through at once.
    nft(
        &t,
        &[
            "delete",
            "element",
            "ip",
            "kincnet",
            "pod_pending",
            &format!("{{ {db_ip} }}"),
        ],
    );
    assert!(connect_from(&peer.path(), SocketAddrV4::new(db_ip, 80)).is_ok());
    assert!(connect_from(&db.path(), SocketAddrV4::new(peer_ip, 80)).is_ok());
    let listener = fake.join().unwrap();

    // A refusal: code 11 with the controller's reason, and nothing left behind.
    let veths = t.host_veths().len();
    let fake = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(b"{\"result\":\"refused\",\"reason\":\"pod prod/late is not in the watch cache (yet)\"}\n")
            .unwrap();
        // ADD's undo releases the address (the controller may have programmed it late).
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let req: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(req, Request::Release { .. }), "{req:?}");
        (&s).write_all(b"{\"result\":\"released\"}\n").unwrap();
        listener
    });
    let late = Netns::new("kglate");
    let out = add_with_pod(&t, &conf, "late", &late, "prod");
    assert_eq!(out.json["code"], 11, "{}", out.stdout);
    let msg = out.json["msg"].as_str().unwrap();
    assert!(
        msg.contains("prod/late") && msg.contains("watch cache"),
        "{msg}"
    );
    assert_eq!(t.host_veths().len(), veths);
    assert_eq!(t.allocated_ips().len(), 2);
    assert!(!pending(&t).contains("elements"), "{}", pending(&t));
    let listener = fake.join().unwrap();

    // A namespace without policies: the socket is never asked.
    listener.set_nonblocking(true).unwrap();
    let web = Netns::new("kgweb");
    let out = add_with_pod(&t, &conf, "web", &web, "other");
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        listener.accept().is_err(),
        "ADD of an ungated pod asked the controller"
    );
    assert!(connect_from(&web.path(), SocketAddrV4::new(peer_ip, 80)).is_ok());
    drop(listener);

    // DEL with no controller answering: kincnet removes the address's policy elements
    // itself before it releases the address.
    nft(
        &t,
        &[
            "add",
            "set",
            "ip",
            "kincnet",
            "policy_in_isolated",
            "{ type ipv4_addr; }",
        ],
    );
    nft(
        &t,
        &[
            "add",
            "set",
            "ip",
            "kincnet",
            "policy_in_peer",
            "{ type ipv4_addr . ipv4_addr; }",
        ],
    );
    let elems = |a: Ipv4Addr, b: Ipv4Addr| format!("{{ {a} . {b} }}");
    nft(
        &t,
        &[
            "add",
            "element",
            "ip",
            "kincnet",
            "policy_in_isolated",
            &format!("{{ {db_ip}, {peer_ip} }}"),
        ],
    );
    nft(
        &t,
        &[
            "add",
            "element",
            "ip",
            "kincnet",
            "policy_in_peer",
            &elems(peer_ip, db_ip),
        ],
    );
    nft(
        &t,
        &[
            "add",
            "element",
            "ip",
            "kincnet",
            "policy_in_peer",
            &elems(db_ip, peer_ip),
        ],
    );
    nft(
        &t,
        &[
            "add",
            "element",
            "ip",
            "kincnet",
            "policy_in_peer",
            &elems(peer_ip, peer_ip),
        ],
    );
    let o = t.invoke("DEL", &conf, "db", Some(&db.path()));
    assert_eq!(o.code, 0, "{}", o.stdout);
    let iso = run_ok(&mut t.node.command(
        "nft",
        &["list", "set", "ip", "kincnet", "policy_in_isolated"],
    ));
    let peers = run_ok(
        &mut t
            .node
            .command("nft", &["list", "set", "ip", "kincnet", "policy_in_peer"]),
    );
    assert!(
        !iso.contains(&db_ip.to_string()) && iso.contains(&peer_ip.to_string()),
        "{iso}"
    );
    assert!(!peers.contains(&db_ip.to_string()), "{peers}");
    assert!(peers.contains(&format!("{peer_ip} . {peer_ip}")), "{peers}");
    let _ = Duration::ZERO;
}
