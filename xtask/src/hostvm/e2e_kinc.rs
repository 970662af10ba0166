//! Guest-side checks of the kinc CLI and the binaries the node carries. They run only when
//! the crate is in the workspace (the host side plans them); the CLI's shape is the one
//! its error messages teach: `kinc create cluster --name N`, `kinc status --name N`,
//! `kinc delete cluster --name N`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kinc_types::{labels, ClusterName};

use super::config::TEST_USER;
use super::e2e::guest_bin;
use super::e2e_checks::{exec, ok, poll, quiet, sh, STANDIN_IMAGE};

pub const CLUSTER: &str = "e2e";
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
fn cluster_is_up(cluster: &str) -> Result<()> {
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
        status.contains("cgroup-setup"),
        "`kinc status` does not show the bootstrap steps"
    );
    Ok(())
}

pub fn create() -> Result<()> {
    ok(&[
        &kinc(),
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--image",
        STANDIN_IMAGE,
    ])?;
    cluster_is_up(CLUSTER)?;
    let node = container_of(CLUSTER)?;
    super::e2e_checks::node_cgroup_namespace(&node)?;
    let port: u16 = label(&node, labels::API_PORT)?
        .parse()
        .context("the API port label")?;
    super::e2e_checks::https_answers(port)
}

/// cgroup-setup ran in the node kinc made (privileged, `--cgroupns=private`, Quadlet).
pub fn node_cgroup_setup() -> Result<()> {
    super::e2e_checks::cgroup_setup_done(&container_of(CLUSTER)?)
}

pub fn after_reboot() -> Result<()> {
    ok(&["cat", "/proc/sys/kernel/random/boot_id"])?;
    cluster_is_up(CLUSTER)
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

pub fn delete() -> Result<()> {
    ok(&[&kinc(), "delete", "cluster", "--name", CLUSTER])?;
    assert_gone(CLUSTER)
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

/// Runs `xtask hostvm node-check NAME` in the cluster's node, as its (user-namespaced)
/// root, with its output in the log.
///
/// Exit 125 is podman's own failure, not the check's (the check exits 0 or 1). When
/// podman fails that way before the check has said anything, the exec is tried once
/// more; either way podman's own `Error:` lines go into the failure message, so the
/// summary under a CI run says what went wrong.
pub fn in_node(name: &str) -> Result<()> {
    let node = container_of(CLUSTER)?;
    let argv = [
        "podman",
        "exec",
        &node,
        super::node::NODE_XTASK,
        "hostvm",
        "node-check",
        name,
    ];
    let mut first_error = None;
    for attempt in 1..=2 {
        println!("$ {}", argv.join(" "));
        let ran = run_teed(&argv)?;
        let verdict = node_check_verdict(name, &ran.stdout, &ran.stderr);
        match next_step(ran.code, verdict, attempt) {
            Next::Passed => {
                if ran.code == 125 {
                    println!(
                        "  the check passed; podman exec then exited 125{}",
                        podman_errors(&ran.stderr)
                    );
                }
                if let Some(e) = &first_error {
                    println!("  passed on attempt {attempt}; attempt 1: {e}");
                }
                return Ok(());
            }
            Next::Retry => {
                let e = format!("podman exec exit 125{}", podman_errors(&ran.stderr));
                println!("  {e}: the check never ran; trying once more");
                first_error = Some(e);
            }
            Next::Failed => bail!(
                "node-check {name} in {node}: exit {}, the check said {}{}",
                ran.code,
                match verdict {
                    Some(true) => "ok",
                    Some(false) => "FAILED (its reason is above)",
                    None => "nothing",
                },
                podman_errors(&ran.stderr)
            ),
        }
    }
    unreachable!("the second attempt returns or fails")
}

#[derive(Debug, PartialEq)]
enum Next {
    Passed,
    Retry,
    Failed,
}

/// What follows one `podman exec` of an in-node check, from its exit code and what the
/// check said of itself.
fn next_step(code: i32, verdict: Option<bool>, attempt: u32) -> Next {
    match (code, verdict) {
        // The check proved what it proves; podman failing to hand back the status
        // afterwards is podman's bookkeeping, kept in the log.
        (0 | 125, Some(true)) => Next::Passed,
        // Podman failed before the check said anything: nothing ran, so running it
        // again proves the same thing.
        (125, None) if attempt == 1 => Next::Retry,
        _ => Next::Failed,
    }
}

/// What the in-node check said of itself: `Some(true)` for its ok line, `Some(false)` for
/// its FAILED line, `None` when it said neither (it never ran, or was killed).
pub fn node_check_verdict(name: &str, stdout: &str, stderr: &str) -> Option<bool> {
    let (failed, ok) = (
        format!("node-check {name}: FAILED"),
        format!("node-check {name}: ok"),
    );
    if stderr.lines().any(|l| l.starts_with(&failed)) {
        Some(false)
    } else if stdout.lines().any(|l| l.starts_with(&ok)) {
        Some(true)
    } else {
        None
    }
}

/// Podman's own error lines, as `: Error: ...; Error: ...` (empty when none).
fn podman_errors(stderr: &str) -> String {
    let errs: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Error:") || l.starts_with("time=") && l.contains("error"))
        .collect();
    if errs.is_empty() {
        String::new()
    } else {
        format!(": {}", errs.join("; "))
    }
}

struct Teed {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `argv` with its output both streamed into the log (as it comes) and kept.
fn run_teed(argv: &[&str]) -> Result<Teed> {
    use std::io::{BufRead, BufReader, Write};
    fn tee<R: std::io::Read + Send + 'static>(
        r: R,
        to_stderr: bool,
    ) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut kept = String::new();
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if to_stderr {
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
                kept.push_str(&line);
                kept.push('\n');
            }
            kept
        })
    }
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    let out = tee(child.stdout.take().context("stdout pipe")?, false);
    let err = tee(child.stderr.take().context("stderr pipe")?, true);
    let st = child.wait()?;
    Ok(Teed {
        code: super::agent::exit_code(st),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// kincnet answers the CNI VERSION command inside the running node (its user namespace).
pub fn kincnet_version() -> Result<()> {
    let node = container_of(CLUSTER)?;
    let out = exec(
        &node,
        &["env", "CNI_COMMAND=VERSION", "/usr/local/bin/kincnet"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("kincnet VERSION output")?;
    ensure!(
        v.get("supportedVersions").is_some_and(|s| s.is_array()),
        "no supportedVersions in {out}"
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
    fn node_check_verdict_and_podman_errors() {
        let ok = "  pod a 10.64.0.2\nnode-check kincnet: ok (6.7 s)\n";
        assert_eq!(node_check_verdict("kincnet", ok, ""), Some(true));
        let failed = "node-check kincnet: FAILED: kincnet ADD failed\n";
        assert_eq!(node_check_verdict("kincnet", ok, failed), Some(false));
        assert_eq!(node_check_verdict("crun-wrapper", ok, ""), None);
        assert_eq!(node_check_verdict("kincnet", "", ""), None);
        let err = "noise\nError: crun: executable file not found\n\
                   time=\"x\" level=error msg=\"exec error\"\n";
        assert_eq!(
            podman_errors(err),
            ": Error: crun: executable file not found; time=\"x\" level=error msg=\"exec error\""
        );
        assert_eq!(podman_errors("all fine\n"), "");
    }

    #[test]
    fn in_node_retries_only_podman_failing_before_the_check() {
        assert_eq!(next_step(0, Some(true), 1), Next::Passed);
        assert_eq!(next_step(125, Some(true), 1), Next::Passed);
        assert_eq!(next_step(125, None, 1), Next::Retry);
        assert_eq!(next_step(125, None, 2), Next::Failed);
        // The check's own failure is never retried, whatever podman then did.
        assert_eq!(next_step(1, Some(false), 1), Next::Failed);
        assert_eq!(next_step(125, Some(false), 1), Next::Failed);
        // Killed or silent: a failure, not a retry.
        assert_eq!(next_step(137, None, 1), Next::Failed);
        assert_eq!(next_step(0, None, 1), Next::Failed);
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
