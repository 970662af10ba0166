//! Guest-side checks of the kinc CLI and the binaries the node carries. They run only when
//! the crate is in the workspace (the host side plans them); the CLI's shape is the one
//! its error messages teach: `kinc create cluster --name N`, `kinc status --name N`,
//! `kinc delete cluster --name N`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kinc_types::{labels, ClusterName};

use super::config::TEST_USER;
use super::e2e::guest_bin;
use super::e2e_checks::{exec, ok, poll, quiet, sh, STANDIN_IMAGE};

const PARALLEL: &[&str] = &["par1", "par2", "par3"];
const INTERRUPTED: &str = "halfway";
const KILLED: &str = "cut";

fn kinc() -> String {
    guest_bin("kinc")
}

fn container_of(cluster: &str) -> Result<String> {
    Ok(ClusterName::new(cluster)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .container())
}

fn label(container: &str, key: &str) -> Result<String> {
    ok(&[
        "podman",
        "inspect",
        "-f",
        &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
        container,
    ])
}

pub(super) fn quadlet_files(cluster: &str) -> Vec<String> {
    let dir = format!("/home/{TEST_USER}/.config/containers/systemd");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(cluster))
                .collect()
        })
        .unwrap_or_default()
}

/// The systemd unit Quadlet generates for a file: `x.container` -> `x.service`,
/// `x.volume` -> `x-volume.service`.
pub fn unit_for(file: &str) -> Option<String> {
    if let Some(stem) = file.strip_suffix(".container") {
        Some(format!("{stem}.service"))
    } else {
        file.strip_suffix(".volume")
            .map(|stem| format!("{stem}-volume.service"))
    }
}

fn running(container: &str) -> bool {
    quiet(&["podman", "inspect", "-f", "{{.State.Running}}", container]).as_deref() == Some("true")
}

/// The node is up, its units are active, its API port is bound on 127.0.0.1 only.
pub(super) fn cluster_is_up(cluster: &str) -> Result<()> {
    let node = container_of(cluster)?;
    poll("node container running", Duration::from_secs(180), || {
        running(&node).then_some(())
    })?;
    let files = quadlet_files(cluster);
    ensure!(
        files.iter().any(|f| f.ends_with(".container")),
        "no Quadlet .container file for {cluster} in ~/.config/containers/systemd: {files:?}"
    );
    for unit in files.iter().filter_map(|f| unit_for(f)) {
        let state = quiet(&["systemctl", "--user", "is-active", &unit]).unwrap_or_default();
        ensure!(state == "active", "{unit} is {state:?}, not active");
    }
    ensure!(
        exec(&node, &["cat", "/proc/1/comm"])? == "systemd",
        "PID 1 of {node} is not systemd"
    );
    let port = label(&node, labels::API_PORT)?;
    let listen = ok(&["ss", "-Hltn"])?;
    ensure!(
        listen.contains(&format!("127.0.0.1:{port} ")),
        "API port {port} is not bound on 127.0.0.1"
    );
    ensure!(
        !listen.contains(&format!("0.0.0.0:{port} ")) && !listen.contains(&format!("*:{port} ")),
        "API port {port} is bound beyond 127.0.0.1"
    );
    let status = ok(&[&kinc(), "status", "--name", cluster])?;
    ensure!(
        status.contains("kubeadm-init"),
        "`kinc status` does not show the bootstrap steps"
    );
    Ok(())
}

/// `kinc delete` leaves no unit, container or volume of the cluster.
fn assert_gone(cluster: &str) -> Result<()> {
    let node = container_of(cluster)?;
    ensure!(
        quiet(&["podman", "container", "exists", &node]).is_none(),
        "container {node} still exists"
    );
    let vols = ok(&[
        "podman",
        "volume",
        "ls",
        "-q",
        "--filter",
        &labels::filter(labels::CLUSTER, cluster),
    ])?;
    ensure!(vols.is_empty(), "volumes of {cluster} left: {vols}");
    let files = quadlet_files(cluster);
    ensure!(
        files.is_empty(),
        "Quadlet files of {cluster} left: {files:?}"
    );
    Ok(())
}

fn spawn_create(name: &str) -> Result<Child> {
    Command::new(kinc())
        .args([
            "create",
            "cluster",
            "--name",
            name,
            "--image",
            STANDIN_IMAGE,
        ])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting kinc create {name}"))
}

/// `a.b.c.d/n` as (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = s.trim().split_once('/')?;
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, len))
}

pub fn cidrs_overlap(a: (u32, u32), b: (u32, u32)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

/// Three creates at once: distinct API ports, pairwise disjoint pod and service ranges.
pub fn parallel() -> Result<()> {
    let children: Vec<(String, Result<Child>)> = PARALLEL
        .iter()
        .map(|n| (n.to_string(), spawn_create(n)))
        .collect();
    let mut failures = Vec::new();
    for (n, c) in children {
        let st = c?.wait()?;
        if !st.success() {
            failures.push(format!("{n}: {st}"));
        }
    }
    let result = (|| -> Result<()> {
        ensure!(failures.is_empty(), "parallel creates failed: {failures:?}");
        let mut ports = BTreeSet::new();
        let mut ranges = Vec::new();
        for n in PARALLEL {
            let node = container_of(n)?;
            ports.insert(label(&node, labels::API_PORT)?);
            for key in [labels::POD_SUBNET, labels::SERVICE_SUBNET] {
                let v = label(&node, key)?;
                ranges.push((
                    format!("{n} {key}={v}"),
                    parse_cidr(&v).context("bad CIDR")?,
                ));
            }
        }
        ensure!(
            ports.len() == PARALLEL.len(),
            "API ports collide: {ports:?}"
        );
        for (i, (na, a)) in ranges.iter().enumerate() {
            for (nb, b) in &ranges[i + 1..] {
                ensure!(!cidrs_overlap(*a, *b), "{na} overlaps {nb}");
            }
        }
        Ok(())
    })();
    // The deletes run at once too (each takes a minute under emulation).
    let deletes: Vec<(&str, std::io::Result<Child>)> = PARALLEL
        .iter()
        .map(|n| {
            println!("$ {} delete cluster --name {n} &", kinc());
            let c = Command::new(kinc())
                .args(["delete", "cluster", "--name", n])
                .stdin(Stdio::null())
                .spawn();
            (*n, c)
        })
        .collect();
    let mut delete_failures = Vec::new();
    for (n, c) in deletes {
        match c.and_then(|mut c| c.wait()) {
            Ok(st) if st.success() => {}
            Ok(st) => delete_failures.push(format!("{n}: {st}")),
            Err(e) => delete_failures.push(format!("{n}: {e}")),
        }
    }
    result?;
    ensure!(
        delete_failures.is_empty(),
        "parallel deletes failed: {delete_failures:?}"
    );
    for n in PARALLEL {
        assert_gone(n)?;
    }
    Ok(())
}

/// A create interrupted (SIGINT) once its node container exists leaves nothing after
/// `delete`.
pub fn interrupted() -> Result<()> {
    cut_create(INTERRUPTED, libc::SIGINT)
}

/// A create killed (SIGKILL: no clean-up of its own) once its node container exists:
/// what it left is there, and the next `delete` removes all of it, units included.
pub fn killed() -> Result<()> {
    cut_create(KILLED, libc::SIGKILL)
}

fn cut_create(cluster: &str, signal: libc::c_int) -> Result<()> {
    let node = container_of(cluster)?;
    let mut child = spawn_create(cluster)?;
    let seen = poll("node container created", Duration::from_secs(180), || {
        if quiet(&["podman", "container", "exists", &node]).is_some() {
            return Some(true);
        }
        matches!(child.try_wait(), Ok(Some(_))).then_some(false)
    })?;
    // SAFETY: kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
    let st = child.wait()?;
    println!("  create cut by signal {signal} (container seen: {seen}): {st}");
    if signal == libc::SIGKILL {
        ensure!(seen, "the create ended before its container existed");
        ensure!(
            quiet(&["podman", "container", "exists", &node]).is_some(),
            "container {node} went with the killed create: nothing for delete to prove"
        );
        let files = quadlet_files(cluster);
        println!("  left behind: container {node}, Quadlet files {files:?}");
        ensure!(
            !files.is_empty(),
            "a killed create left no Quadlet file: nothing for delete to prove"
        );
    }
    let del = sh(&[&kinc(), "delete", "cluster", "--name", cluster])?;
    ensure!(
        del.code == 0,
        "kinc delete exited {}: {}",
        del.code,
        del.stderr
    );
    if signal == libc::SIGKILL {
        let said = format!("{}{}", del.stdout, del.stderr);
        ensure!(
            said.contains(&node),
            "delete did not report removing {node} after a killed create: {said}"
        );
    }
    assert_gone(cluster)?;
    let listed = ok(&[&kinc(), "get", "clusters"])?;
    ensure!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(cluster)),
        "`kinc get clusters` still lists {cluster}: {listed}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_overlap() {
        let a = parse_cidr("10.244.0.0/24").unwrap();
        let b = parse_cidr("10.244.1.0/24").unwrap();
        let c = parse_cidr("10.244.0.0/16").unwrap();
        assert!(!cidrs_overlap(a, b));
        assert!(cidrs_overlap(a, c) && cidrs_overlap(c, b));
        assert_eq!(parse_cidr("10.244.0.7/24"), Some((0x0af4_0000, 24)));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("nope"), None);
    }

    #[test]
    fn quadlet_unit_names() {
        assert_eq!(
            unit_for("kinc-e2e.container").as_deref(),
            Some("kinc-e2e.service")
        );
        assert_eq!(
            unit_for("kinc-e2e-var.volume").as_deref(),
            Some("kinc-e2e-var-volume.service")
        );
        assert_eq!(unit_for("x.network"), None);
    }
}
