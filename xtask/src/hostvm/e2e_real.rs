//! Guest-side checks of a real cluster: the offline node image (`cargo xtask image
//! --offline`), loaded into the test user's podman, booted by `kinc create` with a real
//! kubeadm, kubelet, containerd, etcd and API server. Nothing can be pulled in the VM: its
//! only network is the one rootless Podman makes.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kinc_types::status::Phase;
use kinc_types::BootstrapStatus;

use super::config::{CTL_MOUNT, TEST_USER};
use super::e2e::guest_bin;
use super::e2e_checks::{ok, poll, quiet, sh};

/// The first real cluster.
pub const CLUSTER: &str = "real";
/// Where the host puts the node archive in the control share.
pub const ARCHIVE: &str = "real/node.oci.tar";

fn kinc() -> String {
    guest_bin("kinc")
}

fn kubectl() -> String {
    guest_bin("kubectl")
}

fn node(cluster: &str) -> String {
    format!("kinc-{cluster}-control-plane")
}

/// What the node says about itself when something failed: the bootstrap status, failed
/// units and the last lines of the units a bootstrap depends on.
fn diagnose(cluster: &str) {
    let n = node(cluster);
    println!("--- diagnostics for {cluster} ---");
    let _ = sh(&[&kinc(), "status", "--name", cluster]);
    let _ = sh(&["podman", "ps", "-a"]);
    let _ = sh(&["podman", "exec", &n, "systemctl", "--failed", "--no-legend"]);
    for unit in [
        "kinc-init",
        "containerd",
        "kubelet",
        "kinc-prepare",
        "kinc-cgroup-setup",
    ] {
        let _ = sh(&[
            "podman",
            "exec",
            &n,
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-n",
            "60",
            "-u",
            unit,
        ]);
    }
    let _ = sh(&[
        "podman",
        "exec",
        &n,
        "ctr",
        "--namespace",
        "k8s.io",
        "containers",
        "list",
    ]);
}

fn with_diagnostics(cluster: &str, r: Result<()>) -> Result<()> {
    if r.is_err() {
        diagnose(cluster);
    }
    r
}

/// `podman load` of the offline archive the host built.
pub fn image() -> Result<()> {
    let archive = format!("{CTL_MOUNT}/{ARCHIVE}");
    ensure!(
        std::path::Path::new(&archive).is_file(),
        "{archive} is missing: the host did not build the offline node image"
    );
    let t = Instant::now();
    ok(&["podman", "load", "--quiet", "--input", &archive])?;
    println!("  podman load: {:.1} s", t.elapsed().as_secs_f64());
    let tag = kinc_types::node::DEFAULT_NODE_IMAGE;
    let cri = ok(&[
        "podman",
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.kinc.cri\"}} {{.Config.StopSignal}} {{json .Config.Entrypoint}}",
        tag,
    ])?;
    ensure!(
        cri.starts_with("containerd ") && cri.contains("/sbin/init"),
        "{tag} is not the offline image: {cri}"
    );
    Ok(())
}

fn status(cluster: &str) -> Result<BootstrapStatus> {
    let text = ok(&[&kinc(), "status", "--name", cluster, "--output", "json"])?;
    BootstrapStatus::from_json(text.as_bytes(), "kinc status -o json")
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every step of the status done or skipped, phase Ready, with each step's time printed.
fn all_steps_done(st: &BootstrapStatus) -> Result<()> {
    for s in &st.steps {
        println!(
            "  step {:<28} {:?} {}",
            s.name,
            s.state,
            s.message.as_deref().unwrap_or("")
        );
    }
    let open: Vec<_> = st
        .steps
        .iter()
        .filter(|s| {
            !matches!(
                s.state,
                kinc_types::StepState::Done | kinc_types::StepState::Skipped
            )
        })
        .map(|s| format!("{} ({:?})", s.name, s.state))
        .collect();
    ensure!(open.is_empty(), "bootstrap steps not done: {open:?}");
    ensure!(
        st.phase == Phase::Ready,
        "phase is {:?}, not Ready",
        st.phase
    );
    Ok(())
}

/// `kinc create cluster --wait`: the real bootstrap to Ready.
pub fn create() -> Result<()> {
    let t = Instant::now();
    let r = ok(&[
        &kinc(),
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--wait",
        "25m",
    ]);
    println!("  kinc create --wait: {:.1} s", t.elapsed().as_secs_f64());
    with_diagnostics(
        CLUSTER,
        r.and_then(|_| {
            let st = status(CLUSTER)?;
            all_steps_done(&st)?;
            for unit in [format!("kinc-{CLUSTER}-control-plane.service")] {
                let state = quiet(&["systemctl", "--user", "is-active", &unit]).unwrap_or_default();
                ensure!(state == "active", "{unit} is {state:?}, not active");
            }
            Ok(())
        }),
    )
}

fn kubeconfig_path() -> String {
    format!("/home/{TEST_USER}/.kube/config")
}

/// kubectl against the exported context.
fn kc(cluster: &str, args: &[&str]) -> Result<String> {
    let ctx = format!("kinc-{cluster}");
    let kcfg = kubeconfig_path();
    let mut v = vec![kubectl()];
    v.extend(["--kubeconfig".into(), kcfg, "--context".into(), ctx]);
    v.extend(args.iter().map(|s| s.to_string()));
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    ok(&v)
}

/// `kinc export kubeconfig`, then kubectl: the node Ready, every kube-system pod Running.
pub fn use_cluster() -> Result<()> {
    ok(&[&kinc(), "export", "kubeconfig", "--name", CLUSTER])?;
    let r = (|| {
        let nodes: serde_json::Value =
            serde_json::from_str(&kc(CLUSTER, &["get", "nodes", "-o", "json"])?)?;
        let items = nodes["items"].as_array().context("no items")?;
        ensure!(items.len() == 1, "{} nodes", items.len());
        let ready = items[0]["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ensure!(ready, "the node is not Ready");
        poll(
            "every kube-system pod Running",
            Duration::from_secs(300),
            || {
                let text = kc(
                    CLUSTER,
                    &["get", "pods", "--namespace", "kube-system", "-o", "json"],
                )
                .ok()?;
                let pods: serde_json::Value = serde_json::from_str(&text).ok()?;
                let items = pods["items"].as_array()?;
                let bad: Vec<String> = items
                    .iter()
                    .filter(|p| p["status"]["phase"] != "Running")
                    .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
                    .collect();
                if !bad.is_empty() {
                    println!("  not running yet: {bad:?}");
                }
                (!items.is_empty() && bad.is_empty()).then_some(())
            },
        )?;
        kc(CLUSTER, &["get", "pods", "--all-namespaces", "-o", "wide"])?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// `kinc test`: every live check on the real cluster.
pub fn live_test() -> Result<()> {
    let o = sh(&[&kinc(), "test", "--name", CLUSTER, "--output", "json"])?;
    if o.code != 0 {
        diagnose(CLUSTER);
        bail!("kinc test exited {}: {}", o.code, o.stderr.trim());
    }
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).context("kinc test -o json is not JSON")?;
    println!("  kinc test: {v}");
    Ok(())
}
