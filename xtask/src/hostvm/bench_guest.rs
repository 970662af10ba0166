//! The guest side of `bench-ready` that both sides share (a timed command with the API
//! server polled while it runs, then the wait for node Ready and CoreDNS Ready), and
//! kinc's side: `kinc create cluster --wait` as the test user.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kinc_types::{BootstrapStatus, ClusterName};

use super::bench_ready::{
    all_ready_at, kinc_spans, now_unix, MachineInfo, ObjectList, Side, SideResult, API_PORT,
    CLUSTER,
};
use super::config::TEST_USER;
use super::e2e::guest_bin;
use super::e2e_checks::{ok, quiet, sh};

/// What a timed command did; times in seconds from the start.
#[derive(Debug)]
pub struct Timed {
    pub exit_code: i32,
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// Each stdout line with the time it arrived (kubeadm's phases come from these).
    pub stdout: Vec<(f64, String)>,
    pub stderr: String,
    pub api_answering: Option<f64>,
}

/// Waits for child `pid`: its exit code (128+N for a signal) and the CPU seconds it and
/// every process it waited for used. wait4 rather than `Child::wait`: std does not give
/// the rusage.
fn wait4(pid: libc::pid_t) -> std::io::Result<(i32, f64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; both pointers are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((code, tv(ru.ru_utime) + tv(ru.ru_stime)))
}

/// Whether the API server on 127.0.0.1:`port` answers `GET /readyz` with 200.
/// (/readyz is readable without credentials: system:public-info-viewer.)
pub fn readyz(port: u16) -> bool {
    let url = format!("https://127.0.0.1:{port}/readyz");
    Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.stdout == b"200")
}

/// Runs `argv`, echoing its output with the time each line arrived, and polls the API
/// server on `api_port` every second until it answers. Killed after `limit`.
pub fn run_timed(argv: &[String], t0: Instant, api_port: u16, limit: Duration) -> Result<Timed> {
    let (prog, args) = argv.split_first().context("empty command")?;
    println!("$ {}", argv.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    let pid = child.id() as libc::pid_t;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
            let t = t0.elapsed().as_secs_f64();
            println!("  [{t:6.1}] {l}");
            lines.push((t, l));
        }
        lines
    });
    let err_t = std::thread::spawn(move || {
        let mut text = String::new();
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            println!("  [{:6.1}] ! {l}", t0.elapsed().as_secs_f64());
            text.push_str(&l);
            text.push('\n');
        }
        text
    });
    // The exit is timed by its own thread: a poll in progress does not delay it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = wait4(pid).map(|(code, cpu)| (code, cpu, t0.elapsed().as_secs_f64()));
        let _ = tx.send(r);
    });
    let mut api = None;
    let mut killed = false;
    let mut tick = Instant::now();
    let (exit_code, cpu_seconds, seconds) = loop {
        if api.is_none() && readyz(api_port) {
            let t = t0.elapsed().as_secs_f64();
            println!("  [{t:6.1}] bench: the API server answers /readyz");
            api = Some(t);
        }
        tick += Duration::from_secs(1);
        match rx.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            Ok(r) => break r.context("waiting for the timed command")?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("lost the waiter of {prog}"),
        }
        if !killed && t0.elapsed() > limit {
            println!(
                "bench: {prog} still running after {} s: killed",
                limit.as_secs()
            );
            // SAFETY: kill(2) of our own child, not reaped yet (the waiter has not returned).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed = true;
        }
    };
    // Reaped by wait4 above; the Child only held the pipes.
    drop(child);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    println!("  [{seconds:6.1}] bench: {prog} exited {exit_code} ({cpu_seconds:.1} s CPU)");
    Ok(Timed {
        exit_code,
        seconds,
        cpu_seconds,
        stdout,
        stderr,
        api_answering: api,
    })
}

/// When the node and every CoreDNS pod became Ready, in seconds from the start.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub node: f64,
    pub coredns: f64,
    pub coredns_pods: usize,
    /// When this poll saw both.
    pub observed: f64,
}

fn get_list(kubectl: &[String], args: &[&str]) -> Option<ObjectList> {
    let mut v: Vec<&str> = kubectl.iter().map(String::as_str).collect();
    v.extend_from_slice(args);
    serde_json::from_str(&quiet(&v)?).ok()
}

/// Polls with `kubectl` (the argv up to the verb) every 2 s until the node is Ready and
/// every CoreDNS pod is Ready; the times are the conditions' lastTransitionTime.
pub fn wait_ready(kubectl: &[String], t0: Instant, t0_unix: f64, limit: Duration) -> Result<Ready> {
    let start = Instant::now();
    loop {
        let nodes = get_list(kubectl, &["get", "nodes", "--output", "json"]);
        let dns = get_list(
            kubectl,
            &[
                "--namespace",
                "kube-system",
                "get",
                "pods",
                "--selector",
                "k8s-app=kube-dns",
                "--output",
                "json",
            ],
        );
        let node_at = nodes.as_ref().and_then(all_ready_at);
        let dns_at = dns.as_ref().and_then(all_ready_at);
        if let (Some(n), Some(d), Some(dns)) = (node_at, dns_at, &dns) {
            let observed = t0.elapsed().as_secs_f64();
            println!(
                "  [{observed:6.1}] bench: node Ready at {:.1} s, all {} CoreDNS pods Ready at {:.1} s",
                n - t0_unix,
                dns.items.len(),
                d - t0_unix
            );
            return Ok(Ready {
                node: n - t0_unix,
                coredns: d - t0_unix,
                coredns_pods: dns.items.len(),
                observed,
            });
        }
        if start.elapsed() > limit {
            let last = format!(
                "node {}, CoreDNS pods not Ready: {}",
                match (&nodes, node_at) {
                    (None, _) => "not listed",
                    (Some(_), Some(_)) => "Ready",
                    (Some(_), None) => "not Ready",
                },
                dns.as_ref().map_or("not listed".to_string(), |l| {
                    let names: Vec<&str> = l
                        .items
                        .iter()
                        .filter(|o| super::bench_ready::ready_since(o).is_none())
                        .map(|o| o.metadata.name.as_str())
                        .collect();
                    format!("{names:?} of {}", l.items.len())
                })
            );
            bail!(
                "timed out after {} s waiting for node Ready and every CoreDNS pod Ready; last seen: {last}",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Before a clock starts: write back what the untimed preparation left dirty (an image
/// load or import of a gigabyte) and let the machine go quiet, so no side pays for it.
pub fn settle() {
    let _ = sh(&["sync"]);
    std::thread::sleep(Duration::from_secs(10));
}

/// The last lines of a command's stderr, for an error message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Fills in what every side reports from a timed command.
pub fn record(r: &mut SideResult, t: &Timed) {
    r.exit_code = Some(t.exit_code);
    r.command_seconds = Some(t.seconds);
    r.command_cpu_seconds = Some(t.cpu_seconds);
    r.api_answering = t.api_answering;
}

pub fn record_ready(r: &mut SideResult, ready: &Ready) {
    r.node_ready = Some(ready.node);
    r.coredns_ready = Some(ready.coredns);
    r.coredns_pods = ready.coredns_pods;
    r.ready_observed = Some(ready.observed);
}

fn kinc() -> String {
    guest_bin("kinc")
}

/// kinc's side, as the test user: time `kinc create cluster --wait`, read the status file,
/// wait for every CoreDNS pod, then `kinc delete` (the plain kubeadm side runs next).
pub fn kinc_side(out: &Path) -> Result<()> {
    let mut r = SideResult::new(Side::Kinc);
    let res = measure_kinc(&mut r);
    if let Err(e) = &res {
        r.error = Some(format!("{e:#}"));
        super::e2e_real::diagnose(CLUSTER);
    }
    let t = Instant::now();
    match sh(&[&kinc(), "delete", "cluster", "--name", CLUSTER]) {
        Ok(o) if o.code == 0 => r.notes.push(format!(
            "`kinc delete cluster` afterwards took {:.0} s (not timed)",
            t.elapsed().as_secs_f64()
        )),
        Ok(o) => r.notes.push(format!(
            "`kinc delete cluster` afterwards exited {}: {}",
            o.code,
            tail(&o.stderr, 3)
        )),
        Err(e) => r
            .notes
            .push(format!("`kinc delete cluster` did not run: {e:#}")),
    }
    r.save(out)?;
    res
}

fn status() -> Result<BootstrapStatus> {
    let text = ok(&[&kinc(), "status", "--name", CLUSTER, "--output", "json"])?;
    BootstrapStatus::from_json(text.as_bytes(), "kinc status -o json")
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn measure_kinc(r: &mut SideResult) -> Result<()> {
    let image = kinc_types::node::DEFAULT_NODE_IMAGE;
    ensure!(
        quiet(&["podman", "image", "exists", image]).is_some(),
        "{image} is not in the test user's podman: the real-image step did not load it"
    );
    let port = API_PORT.to_string();
    r.command = [
        kinc().as_str(),
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--api-port",
        &port,
        "--wait",
        "25m",
        // A failed bootstrap keeps the node for the diagnostics (no effect on success).
        "--retain",
    ]
    .map(String::from)
    .to_vec();
    settle();
    r.guest = Some(MachineInfo::here());
    let t0 = Instant::now();
    r.started_unix = now_unix();
    let timed = run_timed(&r.command, t0, API_PORT, Duration::from_secs(1800))?;
    record(r, &timed);
    // The status file whatever happened: the steps up to a failure are worth having.
    match status() {
        Ok(st) => {
            r.spans = kinc_spans(&st, r.started_unix);
            r.kubeadm_init = r.spans.iter().find(|s| s.name == "kubeadm-init").cloned();
            if let Some(m) = st.step("detect-node-ip").and_then(|s| s.message.clone()) {
                r.notes.push(format!("detect-node-ip: {m}"));
            }
        }
        Err(e) => r.notes.push(format!("no bootstrap status: {e:#}")),
    }
    ensure!(
        timed.exit_code == 0,
        "exited {}: {}",
        timed.exit_code,
        tail(&timed.stderr, 5)
    );
    let kubeconfig = format!("/home/{TEST_USER}/bench.kubeconfig");
    ok(&[
        &kinc(),
        "export",
        "kubeconfig",
        "--name",
        CLUSTER,
        "--kubeconfig",
        &kubeconfig,
    ])?;
    let context = ClusterName::new(CLUSTER)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context();
    let kubectl = [
        guest_bin("kubectl"),
        "--kubeconfig".into(),
        kubeconfig,
        "--context".into(),
        context,
    ];
    let ready = wait_ready(&kubectl, t0, r.started_unix, Duration::from_secs(900))?;
    record_ready(r, &ready);
    Ok(())
}
