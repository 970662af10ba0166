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

/// kubectl inside the node, as the node's admin.
const NODE_KUBECTL: [&str; 3] = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"];

/// What the node says about itself when something failed: the bootstrap status, failed
/// units and the last lines of the units a bootstrap depends on.
pub(crate) fn diagnose(cluster: &str) {
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
        "kincnet-policy",
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
    let kubectl_in_node = |args: &[&str]| {
        let mut v = vec!["podman", "exec", n.as_str()];
        v.extend_from_slice(&NODE_KUBECTL);
        v.extend_from_slice(args);
        let _ = sh(&v);
    };
    kubectl_in_node(&["get", "pods", "--all-namespaces", "-o", "wide"]);
    kubectl_in_node(&[
        "get",
        "events",
        "--all-namespaces",
        "--sort-by=.lastTimestamp",
    ]);
    kubectl_in_node(&[
        "describe",
        "pods",
        "--namespace",
        "kube-system",
        "-l",
        "k8s-app=kube-dns",
    ]);
    kubectl_in_node(&["get", "pvc,pv", "--all-namespaces", "-o", "wide"]);
    kubectl_in_node(&[
        "logs",
        "--namespace",
        "local-path-storage",
        "deployment/local-path-provisioner",
        "--tail",
        "40",
    ]);
    for app in ["kube-dns", "kube-proxy"] {
        kubectl_in_node(&[
            "logs",
            "--namespace",
            "kube-system",
            "-l",
            &format!("k8s-app={app}"),
            "--tail",
            "40",
        ]);
    }
    kubectl_in_node(&["get", "endpointslices", "--all-namespaces", "-o", "wide"]);
    kubectl_in_node(&["get", "services", "--all-namespaces", "-o", "wide"]);
    // The node's network as kube-proxy and kincnet left it: where a Service's packets go.
    let _ = sh(&["podman", "exec", &n, "nft", "list", "tables"]);
    let _ = sh(&[
        "podman",
        "exec",
        &n,
        "nft",
        "list",
        "table",
        "ip",
        "kube-proxy",
    ]);
    let _ = sh(&[
        "podman", "exec", &n, "nft", "list", "table", "ip", "kincnet",
    ]);
    let _ = sh(&["podman", "exec", &n, "ip", "-d", "link", "show"]);
    let _ = sh(&["podman", "exec", &n, "ip", "-4", "addr", "show"]);
    let _ = sh(&["podman", "exec", &n, "ip", "route", "show", "table", "all"]);
    let _ = sh(&[
        "podman",
        "exec",
        &n,
        "tail",
        "-n",
        "30",
        "/var/log/crun-wrapper.log",
    ]);
    // A starved node shows itself in its load and in kubelet killing what it probes.
    let in_node = |args: &[&str]| {
        let mut v = vec!["podman", "exec", n.as_str()];
        v.extend_from_slice(args);
        let _ = sh(&v);
    };
    in_node(&["cat", "/proc/loadavg"]);
    in_node(&["free", "-m"]);
    in_node(&[
        "journalctl",
        "--no-pager",
        "--unit=kubelet",
        "--lines=60",
        "--grep=probe failed|Killing container|OOM|Back-off restarting",
    ]);
    in_node(&["cat", "/run/kincnet-policy/status.json"]);
    control_plane_logs(&n);
}

/// The last lines of every log the control plane's containers wrote, restarted ones
/// included (kubelet keeps one file per restart): why the API server or etcd went away.
fn control_plane_logs(node: &str) {
    let Some(files) = quiet(&[
        "podman",
        "exec",
        node,
        "find",
        "/var/log/pods",
        "-name",
        "*.log",
    ]) else {
        return;
    };
    let wanted = [
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    for f in files.lines().filter(|f| {
        f.contains("/kube-system_") && wanted.iter().any(|w| f.contains(&format!("/{w}/")))
    }) {
        let _ = sh(&["podman", "exec", node, "tail", "-n", "25", f]);
    }
}

/// While `kinc create --wait` runs: every minute the node's load and its pods, so a
/// failed create's log shows when things went wrong, not only how they ended.
struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(cluster: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let n = node(cluster);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t = Instant::now();
            let mut next = Duration::from_secs(60);
            let cpu_now = || {
                quiet(&["ps", "-e", "-o", "pid=,times=,comm="])
                    .map(|ps| cpu_times(&ps))
                    .unwrap_or_default()
            };
            // A baseline, so the first line says what the create used, not the boot.
            let mut cpu = cpu_now();
            while !flag.load(Ordering::Relaxed) {
                if t.elapsed() < next {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                next += Duration::from_secs(60);
                let load = quiet(&["podman", "exec", &n, "cat", "/proc/loadavg"]);
                let mut argv = vec!["podman", "exec", n.as_str()];
                argv.extend_from_slice(&NODE_KUBECTL);
                argv.extend([
                    "--request-timeout=20s",
                    "get",
                    "pods",
                    "--all-namespaces",
                    "--no-headers",
                ]);
                let pods = quiet(&argv);
                let now = cpu_now();
                println!(
                    "  [{:4.0} s] load {}\n  {}\n{}",
                    t.elapsed().as_secs_f64(),
                    load.as_deref().unwrap_or("?"),
                    busiest(&cpu, &now, 8),
                    pods.as_deref()
                        .unwrap_or("  (no answer from the API server)")
                );
                cpu = now;
                // A pod that runs but is not ready (or keeps failing): what it says, and
                // what kube-proxy says (a Service it cannot reach is the usual reason).
                let unready = pods.as_deref().map(unready_pods).unwrap_or_default();
                if !unready.is_empty() {
                    let logs = quiet(&[
                        "podman",
                        "exec",
                        &n,
                        "find",
                        "/var/log/pods",
                        "-name",
                        "*.log",
                    ]);
                    let mut wanted = unready;
                    wanted.push(("kube-system".into(), "kube-proxy-".into()));
                    let files = latest_logs(logs.as_deref().unwrap_or(""), &wanted);
                    if !files.is_empty() {
                        let mut argv = vec!["podman", "exec", n.as_str(), "tail", "-n", "3"];
                        argv.extend(files.iter().map(String::as_str));
                        if let Some(out) = quiet(&argv) {
                            for l in out.lines().filter(|l| !l.trim().is_empty()) {
                                println!("    {}", truncate(l, 300));
                            }
                        }
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

/// (namespace, name) of the pods `kubectl get pods -A --no-headers` shows started but not
/// ready: Running with a container not ready, or Error/CrashLoopBackOff.
fn unready_pods(pods: &str) -> Vec<(String, String)> {
    pods.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ns, name, ready, status) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
            let (up, all) = ready.split_once('/')?;
            let started = matches!(*status, "Running" | "Error" | "CrashLoopBackOff");
            (started && up != all).then(|| (ns.to_string(), name.to_string()))
        })
        .collect()
}

/// From `find /var/log/pods -name '*.log'` (kubelet's `<ns>_<pod>_<uid>/<container>/<restart>.log`),
/// the newest log of each container of the pods whose name starts with a wanted prefix.
fn latest_logs(find: &str, wanted: &[(String, String)]) -> Vec<String> {
    let mut newest: std::collections::BTreeMap<String, (u32, String)> = Default::default();
    for path in find.lines().map(str::trim) {
        let parts: Vec<&str> = path
            .trim_start_matches("/var/log/pods/")
            .split('/')
            .collect();
        let [pod_dir, container, file] = parts[..] else {
            continue;
        };
        let Some(restart) = file
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let hit = wanted
            .iter()
            .any(|(ns, name)| pod_dir.starts_with(&format!("{ns}_{name}")));
        if !hit {
            continue;
        }
        let key = format!("{pod_dir}/{container}");
        if newest.get(&key).is_none_or(|(r, _)| restart > *r) {
            newest.insert(key, (restart, path.to_string()));
        }
    }
    newest.into_values().map(|(_, p)| p).collect()
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// CPU seconds used so far, by process id: (seconds, command name).
type CpuTimes = std::collections::HashMap<u32, (u64, String)>;

/// Parses `ps -e -o pid=,times=,comm=`.
fn cpu_times(ps: &str) -> CpuTimes {
    ps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next()?.parse().ok()?;
            let secs = f.next()?.parse().ok()?;
            let comm = f.collect::<Vec<_>>().join(" ");
            Some((pid, (secs, comm)))
        })
        .collect()
}

/// One line: the CPU seconds all processes used between two samples and the `n` commands
/// that used most, summed over their processes (a process that started in between counts
/// from zero; one that ended in between is not seen). Says where a starved VM's CPU went.
fn busiest(before: &CpuTimes, now: &CpuTimes, n: usize) -> String {
    let mut by_comm: std::collections::BTreeMap<&str, u64> = Default::default();
    for (pid, (secs, comm)) in now {
        let was = before
            .get(pid)
            .filter(|(_, c)| c == comm)
            .map_or(0, |(s, _)| *s);
        *by_comm.entry(comm).or_default() += secs.saturating_sub(was);
    }
    let total: u64 = by_comm.values().sum();
    let mut top: Vec<_> = by_comm.into_iter().filter(|(_, s)| *s > 0).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = top
        .iter()
        .take(n)
        .map(|(c, s)| format!("{c} {s}"))
        .collect();
    format!("cpu s: {total} in all; {}", top.join(", "))
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
///
/// Pods that got "connection refused" from the `kubernetes` Service (CoreDNS never Ready,
/// 2 of 3 boots on 2026-12-07) were the API server's endpoint lease expiring on a starved
/// node; kinc-init now has it write its endpoint without a lease, so a create is not retried.
pub fn create() -> Result<()> {
    let t = Instant::now();
    let watcher = Watcher::start(CLUSTER);
    let r = ok(&[
        &kinc(),
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--wait",
        // This machine's VM (2 emulated CPUs) took 26 min on 2026-12-08 and 5.5 min a week
        // before: its speed varies more than kinc's changes do.
        "40m",
        // A failed bootstrap keeps the node, so the diagnostics can read it.
        "--retain",
    ]);
    drop(watcher);
    println!("  kinc create --wait: {:.1} s", t.elapsed().as_secs_f64());
    with_diagnostics(
        CLUSTER,
        r.and_then(|_| {
            let st = status(CLUSTER)?;
            all_steps_done(&st)?;
            let files = super::e2e_kinc::quadlet_files(CLUSTER);
            ensure!(files.len() >= 3, "Quadlet files of {CLUSTER}: {files:?}");
            // Units active, systemd PID 1, the API bound on 127.0.0.1 only.
            super::e2e_kinc::cluster_is_up(CLUSTER)?;
            let n = node(CLUSTER);
            super::e2e_checks::node_cgroup_namespace(&n)?;
            super::e2e_checks::kubelet_root_has_every_controller(&n)
        }),
    )
}

fn kubeconfig_path() -> String {
    format!("/home/{TEST_USER}/.kube/config")
}

/// kubectl against the exported context.
fn kc(cluster: &str, args: &[&str]) -> Result<String> {
    let v = kc_argv(cluster, args);
    ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
}

/// [`kc`] without echoing, `None` on failure: for polls.
fn kc_quiet(cluster: &str, args: &[&str]) -> Option<String> {
    let v = kc_argv(cluster, args);
    quiet(&v.iter().map(String::as_str).collect::<Vec<_>>())
}

fn kc_argv(cluster: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        kubectl(),
        "--kubeconfig".into(),
        kubeconfig_path(),
        "--context".into(),
        format!("kinc-{cluster}"),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
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

/// Writes `doc` as JSON into the test user's home and `kubectl apply`s it.
fn apply(cluster: &str, name: &str, doc: &serde_json::Value) -> Result<()> {
    let path = format!("/home/{TEST_USER}/{name}.json");
    std::fs::write(&path, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("writing {path}"))?;
    kc(cluster, &["apply", "-f", &path]).map(|_| ())
}

/// Waits until pod `ns/name` is in `phase` and returns the pod.
fn pod_in_phase(cluster: &str, ns: &str, name: &str, phase: &str) -> Result<serde_json::Value> {
    poll(
        &format!("pod {ns}/{name} {phase}"),
        Duration::from_secs(300),
        || {
            let text = kc_quiet(
                cluster,
                &["--namespace", ns, "get", "pod", name, "-o", "json"],
            )?;
            let p: serde_json::Value = serde_json::from_str(&text).ok()?;
            (p["status"]["phase"] == phase).then_some(p)
        },
    )
}

fn busybox() -> String {
    format!(
        "docker.io/library/busybox:{}",
        kinc_types::versions::BUSYBOX
    )
}

/// A pod as uid 1000 runs as uid 1000 (crun-wrapper never changes identity), its memory
/// limit lands in its cgroup below kubelet's root, and crun-wrapper logged what it
/// clamped for real pods.
pub fn identity() -> Result<()> {
    let r = (|| {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "kinc-identity", "namespace": "default"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
                "containers": [{
                    "name": "c", "image": busybox(), "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "id -u; id -g; sleep 3600"],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}
                }]
            }
        });
        apply(CLUSTER, "identity", &pod)?;
        let p = pod_in_phase(CLUSTER, "default", "kinc-identity", "Running")?;
        let logs = poll("the pod's first lines", Duration::from_secs(60), || {
            let l = kc(CLUSTER, &["logs", "kinc-identity"]).ok()?;
            (l.lines().count() >= 2).then_some(l)
        })?;
        let ids: Vec<&str> = logs.lines().collect();
        ensure!(
            ids[0] == "1000" && ids[1] == "3000",
            "id -u / id -g printed {ids:?}"
        );
        let uid = p["metadata"]["uid"].as_str().context("pod uid")?;
        let n = node(CLUSTER);
        let found = ok(&[
            "podman",
            "exec",
            &n,
            "find",
            "/sys/fs/cgroup/kubelet",
            "-maxdepth",
            "4",
            "-type",
            "d",
            "-name",
            &format!("pod{uid}"),
        ])?;
        let dir = found
            .lines()
            .next()
            .context("the pod's cgroup below /kubelet")?;
        let max = ok(&["podman", "exec", &n, "cat", &format!("{dir}/memory.max")])?;
        ensure!(max == "67108864", "{dir}/memory.max is {max}, not 64 MiB");
        let log = ok(&["podman", "exec", &n, "cat", "/var/log/crun-wrapper.log"])?;
        ensure!(
            log.lines().count() > 0,
            "crun-wrapper logged nothing for the real pods"
        );
        kc(CLUSTER, &["delete", "pod", "kinc-identity", "--wait=false"])?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// An image built in the VM (busybox-static, FROM scratch) and `kinc load image`ed runs
/// as a pod with `imagePullPolicy: Never`.
pub fn load_image() -> Result<()> {
    let ctx = format!("/home/{TEST_USER}/load-image");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(format!("{ctx}/rootfs/bin"))?;
    std::fs::copy("/bin/busybox", format!("{ctx}/rootfs/bin/busybox"))
        .context("copying busybox-static")?;
    std::fs::write(
        format!("{ctx}/Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"/bin/busybox\", \"echo\", \"loaded by kinc\"]\n",
    )?;
    let img = "localhost/kinc-e2e/loaded:1";
    super::e2e_checks::podman_build(img, std::path::Path::new(&ctx))?;
    let r = (|| {
        ok(&[&kinc(), "load", "image", img, "--name", CLUSTER])?;
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "kinc-loaded", "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": img, "imagePullPolicy": "Never"}]
            }
        });
        apply(CLUSTER, "loaded", &pod)?;
        pod_in_phase(CLUSTER, "default", "kinc-loaded", "Succeeded")?;
        let logs = kc(CLUSTER, &["logs", "kinc-loaded"])?;
        ensure!(logs.contains("loaded by kinc"), "logs: {logs}");
        kc(CLUSTER, &["delete", "pod", "kinc-loaded"])?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// A create whose bootstrap step fails (a Kubernetes version kubeadm refuses) stops soon
/// after the failure with the step and kubeadm's message, and leaves nothing behind.
pub fn fail_fast() -> Result<()> {
    let cluster = "broken";
    let cfg = format!("/home/{TEST_USER}/broken.yaml");
    std::fs::write(&cfg, "kind: ClusterConfig\nkubernetesVersion: v1.31.0\n")?;
    let t = Instant::now();
    let o = sh(&[
        &kinc(),
        "create",
        "cluster",
        "--name",
        cluster,
        "--config",
        &cfg,
        "--wait",
        "25m",
    ])?;
    let took = t.elapsed();
    println!("  failed create took {:.1} s", took.as_secs_f64());
    ensure!(o.code != 0, "a create kubeadm must refuse succeeded");
    ensure!(
        o.stderr.contains("kubeadm-init") && o.stderr.contains("kubeadm init"),
        "the error does not name the failing step and command: {}",
        o.stderr
    );
    // The node's own steps before kubeadm run at most a few minutes under emulation; a
    // create that waited for --wait to run out would take 25.
    ensure!(
        took < Duration::from_secs(600),
        "the failed create took {} s",
        took.as_secs()
    );
    nothing_left(cluster)
}

const KEEP_NS: &str = "kinc-keep";

/// The Deployment `keep` rolled out within `secs`.
fn keep_rolled_out(secs: u64) -> Result<()> {
    let timeout = format!("--timeout={secs}s");
    let args = [
        "--namespace",
        KEEP_NS,
        "rollout",
        "status",
        "deployment/keep",
        &timeout,
    ];
    kc(CLUSTER, &args).map(|_| ())
}

/// Before the reboot: a PVC on `standard` written by a pod, and a Deployment, both to be
/// found again after it.
pub fn persist_write() -> Result<()> {
    let r = (|| {
        let docs = serde_json::json!({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEEP_NS}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "data", "namespace": KEEP_NS},
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                          "resources": {"requests": {"storage": "16Mi"}}}},
                {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "writer", "namespace": KEEP_NS},
                 "spec": {"restartPolicy": "Never",
                          "containers": [{"name": "c", "image": busybox(), "imagePullPolicy": "Never",
                                          "command": ["sh", "-c", "echo kept-across-reboot > /data/f"],
                                          "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                          "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}},
                {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "keep", "namespace": KEEP_NS},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "keep"}},
                          "template": {"metadata": {"labels": {"app": "keep"}},
                                       "spec": {"containers": [{"name": "c", "image": busybox(),
                                                                "imagePullPolicy": "Never",
                                                                "command": ["sleep", "86400"]}]}}}}
            ]
        });
        apply(CLUSTER, "keep", &docs)?;
        pod_in_phase(CLUSTER, KEEP_NS, "writer", "Succeeded")?;
        keep_rolled_out(300)?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// After the reboot: Quadlet brought the node back, the same cluster is Ready without a
/// new `kubeadm init`, and the PVC's data and the Deployment are still there.
pub fn after_reboot() -> Result<()> {
    let r = (|| {
        // Right after the reboot the status file is still the first boot's, until the
        // node's kinc-prepare starts this boot's.
        let st = poll(
            "the real cluster's second boot Ready",
            Duration::from_secs(1200),
            || {
                let st = status(CLUSTER).ok()?;
                (st.boot >= 2 && (st.phase == Phase::Ready || st.phase == Phase::Failed))
                    .then_some(st)
            },
        )?;
        all_steps_done(&st)?;
        super::e2e_kinc::cluster_is_up(CLUSTER)?;
        ensure!(st.boot >= 2, "boot {} after a reboot", st.boot);
        let init = st
            .step("kubeadm-init")
            .context("no kubeadm-init step in the status")?;
        ensure!(
            init.state == kinc_types::StepState::Skipped,
            "kubeadm-init is {:?} on boot {}: the cluster was initialised again",
            init.state,
            st.boot
        );
        keep_rolled_out(600)?;
        let reader = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "reader", "namespace": KEEP_NS},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": busybox(), "imagePullPolicy": "Never",
                                     "command": ["cat", "/data/f"],
                                     "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}
        });
        apply(CLUSTER, "reader", &reader)?;
        pod_in_phase(CLUSTER, KEEP_NS, "reader", "Succeeded")?;
        let data = kc(CLUSTER, &["--namespace", KEEP_NS, "logs", "reader"])?;
        ensure!(data == "kept-across-reboot", "the PVC holds {data:?}");
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// `kinc delete` of the real cluster leaves no container, volume or unit.
pub fn delete() -> Result<()> {
    ok(&[&kinc(), "delete", "cluster", "--name", CLUSTER])?;
    nothing_left(CLUSTER)
}

/// No container, volume or Quadlet file of `cluster` is left.
fn nothing_left(cluster: &str) -> Result<()> {
    let filter = format!("label=io.kinc.cluster={cluster}");
    let left = ok(&[
        "podman",
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Names}}",
    ])?;
    ensure!(left.is_empty(), "containers left: {left}");
    let vols = ok(&[
        "podman",
        "volume",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])?;
    ensure!(vols.is_empty(), "volumes left: {vols}");
    let units = super::e2e_kinc::quadlet_files(cluster);
    ensure!(units.is_empty(), "Quadlet files left: {units:?}");
    Ok(())
}

/// A busybox pod: `httpd` on 8080 answering "ok" when `serve`, else asleep.
fn np_pod(
    ns: &str,
    name: &str,
    labels: serde_json::Value,
    serve: bool,
    host_port: Option<u16>,
) -> serde_json::Value {
    let cmd = if serve {
        "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"
    } else {
        "exec sleep 86400"
    };
    let mut c = serde_json::json!({
        "name": "c", "image": busybox(), "imagePullPolicy": "Never",
        "command": ["sh", "-c", cmd]
    });
    if let Some(hp) = host_port {
        c["ports"] = serde_json::json!([{"containerPort": 8080, "hostPort": hp}]);
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [c]}
    })
}

fn pod_ip(cluster: &str, ns: &str, name: &str) -> Result<String> {
    let p = pod_in_phase(cluster, ns, name, "Running")?;
    p["status"]["podIP"]
        .as_str()
        .map(str::to_string)
        .context("pod without an IP")
}

/// Whether `ns/from` in `cluster` gets "ok" from `ip:8080` within a few seconds.
fn connects(cluster: &str, ns: &str, from: &str, ip: &str) -> bool {
    kc_quiet(
        cluster,
        &[
            "--namespace",
            ns,
            "exec",
            from,
            "--",
            "wget",
            "-q",
            "-T",
            "3",
            "-O",
            "-",
            &format!("http://{ip}:8080/"),
        ],
    )
    .is_some_and(|out| out.trim() == "ok")
}

/// Polls until every (namespace, from, to IP, expected) holds at once in `cluster`.
fn expect_all(cluster: &str, what: &str, cases: &[(&str, &str, &str, bool)]) -> Result<()> {
    let mut last = Vec::new();
    let r = poll(what, Duration::from_secs(180), || {
        last = cases
            .iter()
            .map(|(ns, from, ip, want)| {
                (
                    format!("{ns}/{from} -> {ip}"),
                    *want,
                    connects(cluster, ns, from, ip),
                )
            })
            .collect();
        last.iter().all(|(_, want, got)| want == got).then_some(())
    });
    if r.is_err() {
        bail!("{what}: (path, expected, got) {last:?}");
    }
    Ok(())
}

/// Pod IPs from the cluster's pod CIDR through kincnet, a hostPort on the node's address,
/// and NetworkPolicy through kincnet-policy on real pods: default-deny, allows by
/// podSelector, namespaceSelector and ipBlock with except, each both ways.
pub fn network() -> Result<()> {
    let r = (|| {
        let nodes: serde_json::Value =
            serde_json::from_str(&kc(CLUSTER, &["get", "nodes", "-o", "json"])?)?;
        let node0 = &nodes["items"][0];
        let cidr = node0["spec"]["podCIDR"]
            .as_str()
            .context("node podCIDR")?
            .to_string();
        let node_ip = node0["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .context("node InternalIP")?
            .to_string();
        let ns = |name: &str, team: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {"team": team}}})
        };
        let none = serde_json::json!({});
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            ns("np-a", "a"), ns("np-b", "b"), ns("np-host", "host"),
            np_pod("np-a", "server", serde_json::json!({"app": "server"}), true, None),
            np_pod("np-a", "web", serde_json::json!({"app": "web"}), true, None),
            np_pod("np-a", "front", serde_json::json!({"role": "frontend"}), false, None),
            np_pod("np-a", "other", none.clone(), false, None),
            np_pod("np-b", "client", none.clone(), false, None),
            np_pod("np-host", "hp", serde_json::json!({"app": "hp"}), true, Some(18080)),
        ]});
        apply(CLUSTER, "np-pods", &list)?;
        let server = pod_ip(CLUSTER, "np-a", "server")?;
        let web = pod_ip(CLUSTER, "np-a", "web")?;
        let front = pod_ip(CLUSTER, "np-a", "front")?;
        let other = pod_ip(CLUSTER, "np-a", "other")?;
        let client = pod_ip(CLUSTER, "np-b", "client")?;
        let hp = pod_ip(CLUSTER, "np-host", "hp")?;
        let subnet = super::e2e_kinc::parse_cidr(&cidr).context("podCIDR")?;
        for ip in [&server, &web, &front, &other, &client, &hp] {
            let host = super::e2e_kinc::parse_cidr(&format!("{ip}/32")).context("pod IP")?;
            ensure!(
                super::e2e_kinc::cidrs_overlap(subnet, host) && subnet.1 <= 32,
                "pod IP {ip} is outside the pod CIDR {cidr}"
            );
        }
        println!("  pod IPs in {cidr}: server {server}, web {web}, front {front}, other {other}, client {client}");
        let got = poll(
            "the hostPort answering on the node's address",
            Duration::from_secs(120),
            || {
                quiet(&[
                    "podman",
                    "exec",
                    &node(CLUSTER),
                    "busybox",
                    "wget",
                    "-q",
                    "-T",
                    "3",
                    "-O",
                    "-",
                    &format!("http://{node_ip}:18080/"),
                ])
                .filter(|o| o.trim() == "ok")
            },
        )?;
        println!("  hostPort 18080 on {node_ip}: {got}");
        expect_all(
            CLUSTER,
            "no policy: everything connects",
            &[
                ("np-a", "front", &server, true),
                ("np-a", "other", &server, true),
                ("np-b", "client", &server, true),
                ("np-a", "front", &web, true),
            ],
        )?;
        let np = |name: &str, selector: serde_json::Value, from: serde_json::Value| {
            serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "np-a"},
                "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": from}})
        };
        let policies = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            np("default-deny", serde_json::json!({}), serde_json::json!([])),
            np("allow-frontend", serde_json::json!({"matchLabels": {"app": "server"}}),
               serde_json::json!([{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}])),
            np("allow-team-b", serde_json::json!({"matchLabels": {"app": "server"}}),
               serde_json::json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}])),
            np("allow-block", serde_json::json!({"matchLabels": {"app": "web"}}),
               serde_json::json!([{"from": [{"ipBlock": {"cidr": cidr, "except": [format!("{front}/32")]}}]}])),
        ]});
        apply(CLUSTER, "np-policies", &policies)?;
        expect_all(
            CLUSTER,
            "policies in force",
            &[
                // podSelector: the frontend in, the unlabelled pod out.
                ("np-a", "front", &server, true),
                ("np-a", "other", &server, false),
                // namespaceSelector: team b in.
                ("np-b", "client", &server, true),
                // ipBlock with except: the pod CIDR in, but not the excepted frontend.
                ("np-b", "client", &web, true),
                ("np-a", "other", &web, true),
                ("np-a", "front", &web, false),
            ],
        )?;
        kc(
            CLUSTER,
            &[
                "delete",
                "namespace",
                "np-a",
                "np-b",
                "np-host",
                "--wait=false",
            ],
        )?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// A pod whose container tries to connect out from its first instruction, 15 times
/// (3 s each, so a first SYN lost on a fresh veth is retried within the try): under an egress policy that selects it, not one attempt gets through
/// (kincnet's ADD returned only once kincnet-policy had programmed the pod); the same pod
/// unselected connects on its first try. kincnet-policy saw both CNI requests, refused none.
pub fn policy_first_packet() -> Result<()> {
    let r = (|| {
        let ns = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            ns("gate-open"), ns("gate-e2e"),
            np_pod("gate-open", "target", serde_json::json!({"app": "target"}), true, None),
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny-egress", "namespace": "gate-e2e"},
             "spec": {"podSelector": {"matchLabels": {"app": "eager"}},
                      "policyTypes": ["Egress"], "egress": []}},
        ]});
        apply(CLUSTER, "gate-setup", &list)?;
        let target = pod_ip(CLUSTER, "gate-open", "target")?;
        // The controller must know the namespace has a policy before the pod's ADD: that
        // is the gate's contract (a policy created after a pod's ADD applies when the
        // controller programs it, like any policy change).
        let node = node(CLUSTER);
        poll(
            "kincnet-policy gating namespace gate-e2e",
            Duration::from_secs(120),
            || {
                let text = quiet(&[
                    "podman",
                    "exec",
                    &node,
                    "kincnet-policy",
                    "--status",
                    "-o",
                    "json",
                ])?;
                let s: serde_json::Value = serde_json::from_str(&text).ok()?;
                (s["synced"] == true && s["gated_namespaces"].as_u64() >= Some(1)).then_some(())
            },
        )?;
        let before = policy_status(&node)?;
        let eager = |name: &str, app: &str| {
            let cmd = format!(
                "for i in $(seq 1 15); do if wget -q -T 3 -O - http://{target}:8080/ >/dev/null; \
                 then echo CONNECTED-$i; else echo BLOCKED-$i; sleep 1; fi; done; echo DONE"
            );
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "gate-e2e", "labels": {"app": app}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": busybox(), "imagePullPolicy": "Never",
                                         "command": ["sh", "-c", cmd]}]}})
        };
        let pods = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            eager("eager", "eager"), eager("control", "control"),
        ]});
        apply(CLUSTER, "gate-pods", &pods)?;
        let log = |name: &str| -> Result<String> {
            pod_in_phase(CLUSTER, "gate-e2e", name, "Succeeded")?;
            kc(CLUSTER, &["--namespace", "gate-e2e", "logs", name])
        };
        let eager_log = log("eager")?;
        let control_log = log("control")?;
        println!(
            "  eager: {}",
            eager_log.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        println!(
            "  control: {}",
            control_log
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        ensure!(
            eager_log.contains("BLOCKED-1")
                && eager_log.contains("DONE")
                && !eager_log.contains("CONNECTED"),
            "the selected pod got out despite its egress policy: {eager_log}"
        );
        ensure!(
            control_log.lines().next() == Some("CONNECTED-1"),
            "the unselected pod did not connect on its first try: {control_log}"
        );
        let after = policy_status(&node)?;
        let requests = after["cni_requests"].as_u64().unwrap_or(0)
            - before["cni_requests"].as_u64().unwrap_or(0);
        let refused = after["cni_refused"].as_u64().unwrap_or(0)
            - before["cni_refused"].as_u64().unwrap_or(0);
        println!("  kincnet-policy: {requests} CNI request(s) during the check, {refused} refused");
        ensure!(requests >= 2 && refused == 0, "kincnet-policy answered {requests} CNI requests, refused {refused} (want >= 2, 0): {after}");
        kc(
            CLUSTER,
            &[
                "delete",
                "namespace",
                "gate-open",
                "gate-e2e",
                "--wait=false",
            ],
        )?;
        Ok(())
    })();
    with_diagnostics(CLUSTER, r)
}

/// kincnet-policy's `--status -o json` in `cluster`'s node.
fn policy_status(node: &str) -> Result<serde_json::Value> {
    let text = ok(&[
        "podman",
        "exec",
        node,
        "kincnet-policy",
        "--status",
        "-o",
        "json",
    ])?;
    serde_json::from_str(&text).context("kincnet-policy --status -o json")
}

/// The cluster created beside the first.
const SECOND: &str = "real2";

/// Two clusters side by side: a second one created while the first runs, both Ready with
/// distinct API ports and CIDRs, pods in each reaching only their own; deleting the second
/// leaves the first Ready and nothing of the second behind.
pub fn two_clusters() -> Result<()> {
    let t = Instant::now();
    let created = ok(&[
        &kinc(),
        "create",
        "cluster",
        "--name",
        SECOND,
        "--wait",
        "30m",
        "--retain",
    ]);
    println!(
        "  kinc create --name {SECOND} --wait (beside {CLUSTER}): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    with_diagnostics(
        SECOND,
        created.and_then(|_| all_steps_done(&status(SECOND)?)),
    )?;
    let r = (|| {
        ok(&[&kinc(), "export", "kubeconfig", "--name", SECOND])?;
        let list: serde_json::Value =
            serde_json::from_str(&ok(&[&kinc(), "get", "clusters", "-o", "json"])?)
                .context("kinc get clusters -o json")?;
        let info = |name: &str| -> Result<(u64, String, String)> {
            let c = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == name)
                .with_context(|| format!("{name} missing from kinc get clusters: {list}"))?;
            let field = |f: &str| {
                c[f].as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{name}: no {f} in {c}"))
            };
            let port = c["apiPort"]
                .as_u64()
                .with_context(|| format!("{name}: no apiPort in {c}"))?;
            Ok((port, field("podSubnet")?, field("serviceSubnet")?))
        };
        let (a, b) = (info(CLUSTER)?, info(SECOND)?);
        println!("  {CLUSTER}: {a:?}; {SECOND}: {b:?}");
        ensure!(a.0 != b.0, "both clusters on API port {}", a.0);
        for (what, x, y) in [("pod", &a.1, &b.1), ("service", &a.2, &b.2)] {
            let (x, y) = (
                super::e2e_kinc::parse_cidr(x).context("CIDR")?,
                super::e2e_kinc::parse_cidr(y).context("CIDR")?,
            );
            ensure!(
                !super::e2e_kinc::cidrs_overlap(x, y),
                "{what} CIDRs overlap: {x:?} {y:?}"
            );
        }
        for c in [CLUSTER, SECOND] {
            node_ready(c)?;
        }
        // A server and a client in each; each client reaches its own server only.
        let pods = |cluster: &str| -> Result<String> {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "two"}},
                np_pod("two", "server", serde_json::json!({"app": "server"}), true, None),
                np_pod("two", "client", serde_json::json!({}), false, None),
            ]});
            apply(cluster, &format!("two-{cluster}"), &list)?;
            pod_ip(cluster, "two", "client")?;
            pod_ip(cluster, "two", "server")
        };
        let (ip_a, ip_b) = (pods(CLUSTER)?, pods(SECOND)?);
        expect_all(
            CLUSTER,
            "a pod reaches its own cluster's pod, not the other's",
            &[
                ("two", "client", &ip_a, true),
                ("two", "client", &ip_b, false),
            ],
        )?;
        expect_all(
            SECOND,
            "the same from the second cluster",
            &[
                ("two", "client", &ip_b, true),
                ("two", "client", &ip_a, false),
            ],
        )?;
        kc(CLUSTER, &["delete", "namespace", "two", "--wait=false"])?;
        Ok(())
    })();
    let r = with_diagnostics(SECOND, r);
    // The second cluster goes whatever happened, so later checks see one cluster.
    let deleted = ok(&[&kinc(), "delete", "cluster", "--name", SECOND]);
    r?;
    deleted?;
    nothing_left(SECOND)?;
    with_diagnostics(
        CLUSTER,
        node_ready(CLUSTER).and_then(|_| {
            let st = status(CLUSTER)?;
            ensure!(
                st.phase == Phase::Ready,
                "{CLUSTER} is {:?} after {SECOND} was deleted",
                st.phase
            );
            Ok(())
        }),
    )
}

/// The cluster's one node reports Ready.
fn node_ready(cluster: &str) -> Result<()> {
    let nodes: serde_json::Value =
        serde_json::from_str(&kc(cluster, &["get", "nodes", "-o", "json"])?)?;
    let ready = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["status"]["conditions"].as_array().into_iter().flatten())
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ensure!(ready, "the node of {cluster} is not Ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_sums_each_command_since_the_last_sample() {
        let before = cpu_times("  10   5 etcd\n  11  40 kube-apiserver\n  12   3 kubelet\n");
        // The API server restarted (new pid), etcd went on, a second shim appeared and
        // pid 12 was reused by another command.
        let now = cpu_times(
            "  10  35 etcd\n  13   20 kube-apiserver\n  12   4 sleep\n  \
             20   2 containerd-shim\n  21   3 containerd-shim\n  22   0 idle\n",
        );
        assert_eq!(
            busiest(&before, &now, 3),
            "cpu s: 59 in all; etcd 30, kube-apiserver 20, containerd-shim 5"
        );
    }

    #[test]
    fn unready_pods_are_the_started_ones_not_ready() {
        let pods = "kube-system coredns-6-a 0/1 Running 0 3m\n\
                    kube-system coredns-6-b 1/1 Running 0 3m\n\
                    kube-system kube-proxy-x 0/1 ContainerCreating 0 1m\n\
                    local-path-storage local-path-5-c 0/1 Error 2 (30s ago) 6m\n\
                    kube-system etcd-n 1/1 Running 0 9m\n";
        assert_eq!(
            unready_pods(pods),
            [
                ("kube-system".to_string(), "coredns-6-a".to_string()),
                (
                    "local-path-storage".to_string(),
                    "local-path-5-c".to_string()
                )
            ]
        );
    }

    #[test]
    fn latest_logs_takes_each_containers_newest_restart() {
        let find = "/var/log/pods/kube-system_coredns-6-a_u1/coredns/0.log\n\
                    /var/log/pods/local-path-storage_local-path-5-c_u2/p/0.log\n\
                    /var/log/pods/local-path-storage_local-path-5-c_u2/p/10.log\n\
                    /var/log/pods/local-path-storage_local-path-5-c_u2/p/9.log\n\
                    /var/log/pods/kube-system_etcd-n_u3/etcd/0.log\n\
                    /var/log/pods/kube-system_kube-proxy-x_u4/kube-proxy/0.log\n";
        let wanted = [
            ("kube-system".to_string(), "coredns-6-a".to_string()),
            (
                "local-path-storage".to_string(),
                "local-path-5-c".to_string(),
            ),
            ("kube-system".to_string(), "kube-proxy-".to_string()),
        ];
        assert_eq!(
            latest_logs(find, &wanted),
            [
                "/var/log/pods/kube-system_coredns-6-a_u1/coredns/0.log",
                "/var/log/pods/kube-system_kube-proxy-x_u4/kube-proxy/0.log",
                "/var/log/pods/local-path-storage_local-path-5-c_u2/p/10.log",
            ]
        );
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("ab", 3), "ab");
    }

    #[test]
    fn cpu_times_skips_lines_it_cannot_read() {
        let t = cpu_times("  1 7 systemd\nPID TIME CMD\n\n  2 x bad\n  3 1 kthreadd worker\n");
        assert_eq!(t.len(), 2);
        assert_eq!(t[&3], (1, "kthreadd worker".to_string()));
    }
}
