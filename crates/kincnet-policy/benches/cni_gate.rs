//! CNI ADD latency with the NetworkPolicy gate (issue 18), side by side in one run:
//!
//! - `today`: a node where no kincnet-policy has run (the gate reads one netlink dump,
//!   finds no `policy_namespaces` set, and does nothing else: ADD as before the gate);
//! - `no policies in ns`: the controller runs and has synced; the pod's namespace has no
//!   policy (one dump, no socket);
//! - `ns with policies, unselected`: the pod's namespace has a policy that does not
//!   select it (pending element, socket round trip, controller transaction);
//! - `selected (role=db)`: the policy isolates the pod both ways (the same, plus its
//!   isolation elements).
//!
//! The real `kincnet-policy` binary runs against the fake API server of the tests;
//! kincnet's ADD runs in-process, exactly as its binary runs it. Configurations are
//! interleaved pod by pod so they share the machine's load. Root; `KINCNET_GATE_BENCH_PODS`
//! (default 40) pods per configuration. `cargo bench -p kincnet-policy --bench cni_gate`.

#[path = "../tests/gate_lab/mod.rs"]
mod gate_lab;

use std::time::{Duration, Instant};

use gate_lab::{pending_pod, Kind, Lab};
use kinc_testutil::netns::Netns;

fn header() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let commit = commit().unwrap_or_else(|| "unknown".into());
    println!(
        "date {}  commit {}  kernel {}  cpus {}  load {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        commit,
        read("/proc/sys/kernel/osrelease").trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// HEAD's commit, read from the repository's files (no git process).
fn commit() -> Option<String> {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let git = loop {
        let g = dir.join(".git");
        if g.exists() {
            break g;
        }
        dir = dir.parent()?.to_path_buf();
    };
    // A worktree's .git is a file naming its git directory.
    let gitdir = if git.is_file() {
        let s = std::fs::read_to_string(&git).ok()?;
        dir.join(s.strip_prefix("gitdir:")?.trim())
    } else {
        git
    };
    let head = std::fs::read_to_string(gitdir.join("HEAD")).ok()?;
    let Some(r) = head.trim().strip_prefix("ref: ") else {
        return Some(head.trim().chars().take(12).collect());
    };
    let common = std::fs::read_to_string(gitdir.join("commondir"))
        .ok()
        .map(|c| gitdir.join(c.trim()))
        .unwrap_or_else(|| gitdir.clone());
    let id = std::fs::read_to_string(gitdir.join(r))
        .or_else(|_| std::fs::read_to_string(common.join(r)))
        .ok()
        .or_else(|| {
            let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
            packed
                .lines()
                .find(|l| l.ends_with(r))
                .map(|l| l.split(' ').next().unwrap_or("").to_string())
        })?;
    Some(id.trim().chars().take(12).collect())
}

/// The kincnet binary beside this build's kincnet-policy (`cargo build --release -p
/// kincnet`), or `KINCNET_BIN`.
fn kincnet_bin() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("KINCNET_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_BIN_EXE_kincnet-policy")).with_file_name("kincnet")
        });
    p.exists().then_some(p)
}

/// Runs the binary in the node as a runtime does (env, stdin, wait for its exit).
fn run_bin(
    bin: &std::path::Path,
    lab: &Lab,
    command: &str,
    conf: &serde_json::Value,
    cid: &str,
    netns: &std::path::Path,
    (ns, name): (&str, &str),
) -> Duration {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(bin);
    c.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .env("CNI_NETNS", netns)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let node = std::fs::File::open(lab.node.path()).unwrap();
    // SAFETY: setns is async-signal-safe; the fd stays open in the closure.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(node.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = c.spawn().expect("spawn kincnet");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{command} {cid}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p95 = v[((v.len() * 95).div_ceil(100)).saturating_sub(1)];
    (ms(v[v.len() / 2]), ms(p95))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !kinc_testutil::is_root() {
        println!("cni_gate: needs root (network namespaces, nf_tables); nothing measured");
        return;
    }
    let pods: usize = std::env::var("KINCNET_GATE_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let plain = Lab::new("bp");
    let gated = Lab::new("bg");
    let ctl = gated.controller(&gated.token);
    gated.wait_for(&ctl, "sync", |s| s.synced && s.gated_namespaces == 1);
    let configs: [(&str, &Lab, &str, &str); 4] = [
        ("today (no controller in the node)", &plain, "other", "web"),
        ("controller, no policies in ns", &gated, "other", "web"),
        ("ns with policies, unselected", &gated, "prod", "web"),
        ("selected (role=db)", &gated, "prod", "db"),
    ];
    for (_, lab, ns, role) in &configs {
        lab.api.edit(|e| {
            for i in 0..pods {
                e.apply(Kind::Pod, pending_pod(ns, &format!("{role}-{i}"), role));
            }
        });
    }
    let mut add: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    let mut del: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    for i in 0..pods {
        for (c, (what, lab, ns, role)) in configs.iter().enumerate() {
            let conf = lab.conf(10_000);
            let name = format!("{role}-{i}");
            let pod = Netns::new("kgb");
            let (out, t) = lab.cni_timed("ADD", &conf, &name, Some(&pod.path()), Some((ns, &name)));
            add[c].push(t);
            assert_eq!(out.code, 0, "{what}: ADD {name}: {}", out.stdout);
            let (out, t) = lab.cni_timed("DEL", &conf, &name, Some(&pod.path()), Some((ns, &name)));
            del[c].push(t);
            assert_eq!(out.code, 0, "{what}: DEL {name}: {}", out.stdout);
        }
    }
    // The binary, as a runtime runs it (its exit included): today's path and the
    // selected pod's.
    let mut bin_rows = Vec::new();
    if let Some(bin) = kincnet_bin() {
        let cases: [(&str, &Lab, &str, &str); 3] = [
            ("binary: today (no controller)", &plain, "other", "web"),
            (
                "binary: controller, no policies in ns",
                &gated,
                "other",
                "web",
            ),
            ("binary: selected (role=db)", &gated, "prod", "db"),
        ];
        for (_, lab, ns, role) in &cases {
            lab.api.edit(|e| {
                for i in 0..pods {
                    e.apply(Kind::Pod, pending_pod(ns, &format!("b{role}-{i}"), role));
                }
            });
        }
        let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); cases.len()];
        for i in 0..pods {
            for (c, (_, lab, ns, role)) in cases.iter().enumerate() {
                let conf = lab.conf(10_000);
                let name = format!("b{role}-{i}");
                let pod = Netns::new("kgb");
                let a = run_bin(&bin, lab, "ADD", &conf, &name, &pod.path(), (ns, &name));
                let d = run_bin(&bin, lab, "DEL", &conf, &name, &pod.path(), (ns, &name));
                times[c].0.push(a);
                times[c].1.push(d);
            }
        }
        for (c, (what, ..)) in cases.iter().enumerate() {
            bin_rows.push((what.to_string(), times[c].clone()));
        }
    }
    let s = gated.status().expect("status");
    assert_eq!(s.cni_refused, 0, "{s:#?}");
    header();
    println!(
        "{pods} pods per configuration, interleaved; ADD and DEL in-process in the node netns, timed to their answer"
    );
    println!();
    println!("| configuration | ADD median / p95 (ms) | vs today | DEL median / p95 (ms) |");
    println!("|---|---|---|---|");
    let (base, _) = stats(add[0].clone());
    for (c, (what, ..)) in configs.iter().enumerate() {
        let (am, ap) = stats(add[c].clone());
        let (dm, dp) = stats(del[c].clone());
        println!(
            "| {what} | {am:.2} / {ap:.2} | {:.2}x | {dm:.2} / {dp:.2} |",
            am / base
        );
    }
    if bin_rows.is_empty() {
        println!("(no kincnet binary beside kincnet-policy: `cargo build --release -p kincnet` for the binary rows)");
    } else {
        let (bbase, _) = stats(bin_rows[0].1 .0.clone());
        for (what, (a, d)) in bin_rows {
            let (am, ap) = stats(a);
            let (dm, dp) = stats(d);
            println!(
                "| {what} | {am:.2} / {ap:.2} | {:.2}x | {dm:.2} / {dp:.2} |",
                am / bbase
            );
        }
    }
    drop(ctl);
}
