//! What the root and the rootless tests both prove, against real podman.

use std::path::Path;
use std::time::Duration;

use kinc_types::{labels, ClusterConfig};

use super::*;

const WAIT: &str = "60s";

fn create_args<'a>(name: &'a str, image: &'a str, wait: &'a str) -> Vec<&'a str> {
    vec![
        "create", "cluster", "--name", name, "--image", image, "--wait", wait,
    ]
}

/// create → list → node reachable on 127.0.0.1 only → labels, volumes, config →
/// status from the volume → delete (twice) → nothing left.
pub fn create_list_delete(r: &Runner, name: &str, image: &str) {
    let _g = ClusterGuard {
        runner: r,
        names: vec![name.into()],
    };
    r.kinc_ok(&create_args(name, image, WAIT));
    let listed = r.kinc_ok(&["get", "clusters"]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
    let c = r.cluster(name).expect("listed in json");
    assert_eq!(c["state"], "running");
    let port = c["apiPort"].as_u64().unwrap() as u16;
    assert_eq!(c["server"], format!("https://127.0.0.1:{port}"));

    // Published on loopback only: podman's binding and the host's listening sockets.
    let node = format!("kinc-{name}-control-plane");
    let b = r.podman_ok(&[
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}",
        &node,
    ]);
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(b["6443/tcp"][0]["HostIp"], "127.0.0.1", "{b}");
    assert_eq!(b["6443/tcp"][0]["HostPort"], port.to_string(), "{b}");
    listens_on_loopback_only(port).unwrap();
    assert!(
        http_get(port).contains("ok"),
        "the node answers on its API port"
    );

    // Volumes exist, carry kinc's labels, and the config volume holds the config.
    for (vol, role) in [
        (format!("kinc-{name}-var-data"), labels::ROLE_VAR),
        (format!("kinc-{name}-config"), labels::ROLE_CONFIG),
    ] {
        let l = r.labels_of_volume(&vol);
        assert_eq!(l[labels::OWNER], labels::OWNER_VALUE, "{vol}: {l}");
        assert_eq!(l[labels::CLUSTER], name, "{vol}: {l}");
        assert_eq!(l[labels::ROLE], role, "{vol}: {l}");
    }
    let cfg_json = r.podman_ok(&["exec", &node, "cat", "/etc/kinc/config/cluster.json"]);
    let cfg = ClusterConfig::from_json(cfg_json.as_bytes(), "in node").unwrap();
    assert_eq!(cfg.name.as_str(), name);
    assert_eq!(cfg.api_port, port);
    assert_eq!(cfg.pod_subnet.to_string(), c["podSubnet"].as_str().unwrap());
    let ro = r.podman(&["exec", &node, "touch", "/etc/kinc/config/x"]);
    assert!(!ro.status.success(), "config volume is mounted read-only");
    let status = r.kinc_ok(&["status", "--name", name, "-o", "json"]);
    assert!(status.contains("\"phase\":\"ready\""), "{status}");

    // The admin kubeconfig, read from the var volume, as the host sees it.
    let ctx = format!("kinc-{name}");
    let kc = r.kinc_ok(&["get", "kubeconfig", "--name", name]);
    assert!(
        kc.contains(&format!("server: https://127.0.0.1:{port}")),
        "{kc}"
    );
    assert!(kc.contains(&format!("current-context: {ctx}")), "{kc}");
    let path = r.kubeconfig_path();
    let other = "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://other:443\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\nusers:\n- name: other\n  user:\n    token: t\ncurrent-context: other\n";
    r.write_as_user(&path, other, 0o644);
    r.kinc_ok(&["export", "kubeconfig", "--name", name]);
    let merged =
        kinc::kubeconfig::Kubeconfig::parse(&std::fs::read_to_string(&path).unwrap(), "merged")
            .unwrap();
    assert_eq!(merged.current_context, ctx);
    let names: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["other", ctx.as_str()]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = r.kinc(&["delete", "cluster", "--name", name]);
    assert!(out.status.success());
    assert_eq!(r.leftovers(name), Vec::<String>::new());
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(!after.contains(&ctx) && after.contains("other"), "{after}");
    assert!(r.cluster(name).is_none());
    let again = r.kinc(&["delete", "cluster", "--name", name]);
    assert!(again.status.success(), "delete is idempotent");
}

/// `n` creates at once: all succeed with distinct ports and pairwise disjoint CIDRs.
pub fn parallel_creates(r: &Runner, prefix: &str, image: &str, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let _g = ClusterGuard {
        runner: r,
        names: names.clone(),
    };
    let children: Vec<_> = names
        .iter()
        .map(|nm| r.spawn_kinc(&create_args(nm, image, WAIT)))
        .collect();
    for (nm, ch) in names.iter().zip(children) {
        let o = ch.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "create {nm}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let all = r.clusters();
    let mine: Vec<_> = all
        .iter()
        .filter(|c| names.iter().any(|n| c["name"] == n.as_str()))
        .collect();
    assert_eq!(mine.len(), n);
    let mut ports: Vec<u64> = mine
        .iter()
        .map(|c| c["apiPort"].as_u64().unwrap())
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), n, "distinct ports: {ports:?}");
    let nets: Vec<_> = mine.iter().flat_map(|c| subnets(c)).collect();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            assert!(!a.overlaps(*b), "{a} overlaps {b}");
        }
    }
    for c in &mine {
        let port = c["apiPort"].as_u64().unwrap() as u16;
        assert!(http_get(port).contains("ok"));
    }
    let dels: Vec<_> = names
        .iter()
        .map(|nm| r.spawn_kinc(&["delete", "cluster", "--name", nm]))
        .collect();
    for d in dels {
        assert!(d.wait_with_output().unwrap().status.success());
    }
    for nm in &names {
        assert_eq!(r.leftovers(nm), Vec::<String>::new());
    }
}

/// Resources with kinc's names but without kinc's owner label survive delete and
/// make create refuse.
pub fn foreign_untouched(r: &Runner, name: &str, image: &str) {
    let node = format!("kinc-{name}-control-plane");
    let var = format!("kinc-{name}-var-data");
    let cfg = format!("kinc-{name}-config");
    r.podman_ok(&["create", "--name", &node, image]);
    r.podman_ok(&["volume", "create", &var]);
    // Labelled with the cluster but not with the owner: still not kinc's.
    r.podman_ok(&[
        "volume",
        "create",
        "--label",
        &format!("{}={name}", labels::CLUSTER),
        &cfg,
    ]);
    let cleanup = || {
        let _ = r.podman(&["rm", "--force", "--ignore", &node]);
        let _ = r.podman(&["volume", "rm", "--force", &var, &cfg]);
    };
    let check = || {
        let mut left = r.leftovers(name);
        left.sort();
        let mut want = vec![cfg.clone(), node.clone(), var.clone()];
        want.sort();
        assert_eq!(left, want);
    };
    let del = r.kinc(&["delete", "cluster", "--name", name]);
    let create = r.kinc(&create_args(name, image, "10s"));
    let left = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(del.status.success());
        check();
        assert!(!create.status.success());
        let err = String::from_utf8_lossy(&create.stderr);
        assert!(err.contains("not made by kinc"), "{err}");
        check();
        assert!(r.cluster(name).is_none());
    }));
    cleanup();
    if let Err(p) = left {
        std::panic::resume_unwind(p);
    }
}

fn start_slow(r: &Runner, name: &str, image: &str) -> std::process::Child {
    let ch = r.spawn_kinc(&create_args(name, image, "120s"));
    let node = format!("kinc-{name}-control-plane");
    wait_until(
        "the node container to run",
        Duration::from_secs(180),
        || r.state_of(&node) == "running",
    );
    ch
}

/// A create killed with SIGKILL while waiting leaves labelled resources (and, for a
/// Quadlet cluster, units); the next `delete` removes all of it.
pub fn killed_create_cleaned_by_delete(r: &Runner, name: &str, image: &str, unit_dir: &Path) {
    assert!(name.contains("slow"));
    let _g = ClusterGuard {
        runner: r,
        names: vec![name.into()],
    };
    let mut ch = start_slow(r, name, image);
    ch.kill().unwrap();
    ch.wait().unwrap();
    // Units as a Quadlet create would have left them.
    let spec = kinc::node::NodeSpec {
        config: ClusterConfig::new(
            kinc_types::ClusterName::new(name).unwrap(),
            6443,
            "10.64.0.0/20".parse().unwrap(),
            "10.64.16.0/20".parse().unwrap(),
        ),
        image: image.into(),
        host_store: None,
        fuse: false,
    };
    let units =
        kinc::quadlet::install(unit_dir, &kinc::quadlet::render_cluster(&spec).unwrap()).unwrap();
    if let Some((uid, gid)) = r.user {
        for p in units.iter().map(|u| u.as_path()).chain([unit_dir]) {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    let mut left = r.leftovers(name);
    left.sort();
    assert_eq!(
        left.len(),
        3,
        "half-made cluster holds its resources: {left:?}"
    );
    assert!(r.cluster(name).is_some(), "listed while it holds resources");
    r.kinc_ok(&["delete", "cluster", "--name", name]);
    assert_eq!(r.leftovers(name), Vec::<String>::new());
    for u in units {
        assert!(!u.exists(), "{} removed", u.display());
    }
    assert!(r.cluster(name).is_none());
}

/// Ctrl-C (SIGINT) during the wait: kinc removes what it created and exits non-zero.
pub fn interrupted_create_cleans_up(r: &Runner, name: &str, image: &str) {
    let _g = ClusterGuard {
        runner: r,
        names: vec![name.into()],
    };
    let ch = start_slow(r, name, image);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(ch.id() as i32, libc::SIGINT) };
    let o = ch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(r.leftovers(name), Vec::<String>::new(), "{err}");
    assert!(r.cluster(name).is_none());
}
