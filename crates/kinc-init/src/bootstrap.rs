//! The bootstrap as named steps, each recorded in the status file the host reads.
//!
//! Two oneshot units run it: `kinc-init prepare` before the CRI (CRI-O or containerd, as
//! the image's `node-image.json` says) and kubelet start (config, node IP, kubeadm config,
//! CNI conflist), and `kinc-init bootstrap` after the CRI is up (preloaded images imported,
//! kubeadm init or, on a `/var` that was initialised before, bring the same cluster back).
//! The status file is saved after every change of a step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kinc_types::fsutil::write_atomic;
use kinc_types::node::{self, Cri, ImageList, NodeFileError, NodeImageInfo};
use kinc_types::status::StatusError;
use kinc_types::{BootstrapStatus, ClusterConfig, StepState};

use crate::cni::Conflist;
use crate::fsx;
use crate::kubeadm::{self, KubeadmConfig};
use crate::netinfo::{detect_node_ip, NodeIpError};
use crate::paths::NodePaths;
use crate::policy::{self, PolicyAccessError};
use crate::runner::{Cmd, RunError, Runner};
use crate::state::{choose_config, ChooseConfigError, NodeState, StateError};

/// Step names, in order. The host CLI shows them as they are.
pub mod step {
    pub const LOAD_CONFIG: &str = "load-config";
    pub const DETECT_NODE_IP: &str = "detect-node-ip";
    pub const RENDER_KUBEADM_CONFIG: &str = "render-kubeadm-config";
    pub const WRITE_CNI_CONFIG: &str = "write-cni-config";
    pub const WAIT_CRI: &str = "wait-cri";
    pub const LOAD_IMAGES: &str = "load-images";
    pub const RESTORE_NODE: &str = "restore-node";
    pub const KUBEADM_INIT: &str = "kubeadm-init";
    pub const APPLY_MANIFESTS: &str = "apply-manifests";
    pub const SAVE_KUBECONFIG: &str = "save-kubeconfig";
    pub const WRITE_POLICY_KUBECONFIG: &str = "write-policy-kubeconfig";
    pub const WAIT_NODE_READY: &str = "wait-node-ready";
    pub const WAIT_COREDNS: &str = "wait-coredns";
}

/// How often a late kubeadm phase is tried after `kubeadm init` failed in it.
pub const PHASE_ATTEMPTS: u32 = 5;

/// Steps of `kinc-init prepare`.
pub const PREPARE_STEPS: [&str; 4] = [
    step::LOAD_CONFIG,
    step::DETECT_NODE_IP,
    step::RENDER_KUBEADM_CONFIG,
    step::WRITE_CNI_CONFIG,
];
/// Steps of `kinc-init bootstrap`.
pub const BOOTSTRAP_STEPS: [&str; 9] = [
    step::WAIT_CRI,
    step::LOAD_IMAGES,
    step::RESTORE_NODE,
    step::KUBEADM_INIT,
    step::APPLY_MANIFESTS,
    step::SAVE_KUBECONFIG,
    step::WRITE_POLICY_KUBECONFIG,
    step::WAIT_NODE_READY,
    step::WAIT_COREDNS,
];

pub fn all_steps() -> Vec<&'static str> {
    PREPARE_STEPS
        .iter()
        .chain(&BOOTSTRAP_STEPS)
        .copied()
        .collect()
}

/// The node's address when podman gives it none kubeadm accepts (rootless podman's
/// pasta on a host with no routable address hands out a link-local one): RFC 7600's IPv4
/// dummy address, on a dummy link. Only the node's own network namespace sees it; pods
/// reach it through their gateway, clients on the host through the published API port.
pub const DUMMY_NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
pub const DUMMY_LINK: &str = "kinc-node";

/// kubeadm refuses loopback and link-local addresses as the API server's address.
pub fn usable_node_ip(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified())
}

/// containerd's CRI plugin never garbage-collects an image with this label (kubelet's
/// image GC sees it as pinned): a preloaded image could not be pulled back.
pub const CRI_PINNED_LABEL: &str = "io.cri-containerd.pinned";
pub const CRI_PINNED_VALUE: &str = "pinned";

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// The CRI's socket answering.
    pub cri: Duration,
    /// The API server answering after a restart (apply-manifests).
    pub api: Duration,
    pub node_ready: Duration,
    pub coredns: Duration,
    /// Pause between attempts.
    pub poll: Duration,
    /// `--timeout` of one `kubectl wait`.
    pub kubectl_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            cri: Duration::from_secs(120),
            api: Duration::from_secs(180),
            // Generous: a starved host (a laptop under load, a VM under TCG) gets there,
            // slowly (600 s ran out for CoreDNS that was starting on 2 emulated CPUs); how
            // long a user waits is `kinc create --wait`'s to say, and a timeout here says
            // what the pods were doing.
            node_ready: Duration::from_secs(1800),
            coredns: Duration::from_secs(1800),
            poll: Duration::from_secs(2),
            kubectl_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ChooseConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    NodeImage(#[from] NodeFileError),
    #[error("{file} is not listed in {list}: the node image is inconsistent; rebuild it")]
    UnlistedImage { file: PathBuf, list: PathBuf },
    #[error("finding the node IP: {0}")]
    NodeIp(#[from] NodeIpError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    PolicyAccess(#[from] PolicyAccessError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gave up waiting for {what} after {secs} s; last error: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("this /var belongs to cluster {var_cluster:?}, but the config names {config_cluster:?}: use the matching volume")]
    WrongCluster {
        var_cluster: String,
        config_cluster: String,
    },
    #[error("{0}: run `kinc-init prepare` first (kinc-prepare.service)")]
    NotPrepared(String),
    #[error("the cluster on this /var was initialised, but {etc} is gone and {backup} holds no copy: recreate the cluster")]
    LostKubernetesConfig { etc: PathBuf, backup: PathBuf },
}

/// How many archives `load-images` imports at once. One import after the other left the
/// node's CPUs idle while ctr and containerd waited on each other and on the disk (86 s
/// for 9 archives on a 2-CPU VM); a few at a time overlap that without a crowd of
/// processes on a small host.
pub const IMPORT_WORKERS: usize = 3;

/// Runs each (import, label) pair, the label only after its import succeeded, up to
/// [`IMPORT_WORKERS`] pairs at once. After a failure no new pair starts (those running
/// finish); the error returned is that of the first failing pair in `jobs`' order, so
/// it names the same archive whatever the interleaving.
fn import_all(runner: &dyn Runner, jobs: &[(Cmd, Vec<Cmd>)]) -> Result<(), InitError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(usize, RunError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..IMPORT_WORKERS.min(jobs.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((import, labels)) = jobs.get(i) else {
                        break;
                    };
                    let done = runner
                        .run_ok(import)
                        .and_then(|_| labels.iter().try_for_each(|l| runner.run_ok(l).map(drop)));
                    if let Err(e) = done {
                        failed.store(true, Ordering::SeqCst);
                        errors.lock().expect("errors lock").push((i, e));
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().expect("errors lock");
    match errors.into_iter().min_by_key(|(i, _)| *i) {
        Some((_, e)) => Err(e.into()),
        None => Ok(()),
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io { what, path, source }
}

/// Keeps the status and saves it after every change.
struct Tracker {
    status: BootstrapStatus,
    path: PathBuf,
}

impl Tracker {
    fn save(&self) -> Result<(), InitError> {
        Ok(self.status.save(&self.path)?)
    }

    fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<T, InitError>,
    ) -> Result<T, InitError> {
        self.status.start(name)?;
        self.save()?;
        eprintln!("kinc-init: {name}: started");
        match f() {
            Ok(v) => {
                self.status.finish(name)?;
                self.save()?;
                eprintln!("kinc-init: {name}: done");
                Ok(v)
            }
            Err(e) => {
                self.status.fail(name, &e.to_string())?;
                // The step's error matters more than a failure to record it.
                let _ = self.save();
                eprintln!("kinc-init: {name}: failed: {e}");
                Err(e)
            }
        }
    }

    fn skip(&mut self, name: &str, why: &str) -> Result<(), InitError> {
        self.status.skip(name, why)?;
        eprintln!("kinc-init: {name}: skipped: {why}");
        self.save()
    }

    /// Adds a note to a finished step (what it changed).
    fn note(&mut self, name: &str, msg: String) -> Result<(), InitError> {
        if let Some(s) = self.status.steps.iter_mut().find(|s| s.name == name) {
            eprintln!("kinc-init: {name}: {msg}");
            s.message = Some(msg);
        }
        self.save()
    }

    /// Records an error that happened outside any step on the first step not yet run.
    fn fail_next(&mut self, err: &InitError) {
        let next = self
            .status
            .steps
            .iter()
            .find(|s| s.state == StepState::Pending)
            .map(|s| s.name.clone());
        if let Some(name) = next {
            let _ = self.status.fail(&name, &err.to_string());
            let _ = self.save();
        }
    }
}

type NodeIpSource<'a> = Box<dyn Fn() -> Result<Ipv4Addr, NodeIpError> + 'a>;

pub struct Bootstrap<'a> {
    paths: NodePaths,
    runner: &'a dyn Runner,
    timeouts: Timeouts,
    node_ip: NodeIpSource<'a>,
}

impl<'a> Bootstrap<'a> {
    pub fn new(paths: NodePaths, runner: &'a dyn Runner) -> Self {
        Self {
            paths,
            runner,
            timeouts: Timeouts::default(),
            node_ip: Box::new(detect_node_ip),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Replaces the node IP detection (tests).
    pub fn with_node_ip(mut self, f: impl Fn() -> Result<Ipv4Addr, NodeIpError> + 'a) -> Self {
        self.node_ip = Box::new(f);
        self
    }

    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// Before CRI-O and kubelet: pick the config, find the node IP, write kubeadm's
    /// config and kincnet's conflist. Starts a fresh status for this boot.
    pub fn prepare(&self) -> Result<BootstrapStatus, InitError> {
        let mut t = Tracker {
            status: BootstrapStatus::new("", &all_steps()),
            path: self.paths.status(),
        };
        t.status.boot = 0;
        t.save()?;

        let (cfg, mut state, image) = t.run(step::LOAD_CONFIG, || {
            let (cfg, from) = choose_config(&self.paths)?;
            eprintln!("kinc-init: cluster config from {}", from.display());
            let image = NodeImageInfo::load(&self.paths.node_image_info())?;
            let state = NodeState::load(&self.paths.node_state())?;
            if let Some(c) = &state.cluster {
                if c != cfg.name.as_str() {
                    return Err(InitError::WrongCluster {
                        var_cluster: c.clone(),
                        config_cluster: cfg.name.to_string(),
                    });
                }
            }
            Ok((cfg, state, image))
        })?;
        t.status.cluster = cfg.name.to_string();
        t.status.boot = state.boots + 1;
        t.save()?;

        let mut why_dummy = None;
        let ip = t.run(step::DETECT_NODE_IP, || {
            let ip = match (self.node_ip)() {
                Ok(ip) if usable_node_ip(ip) => ip,
                found => {
                    why_dummy = Some(match found {
                        Ok(ip) => format!("{ip} is link-local, which kubeadm refuses"),
                        Err(e) => e.to_string(),
                    });
                    self.ensure_dummy_node_ip()?
                }
            };
            state.cluster = Some(cfg.name.to_string());
            state.boots += 1;
            state.current_ip = Some(ip);
            state.save(&self.paths.node_state())?;
            Ok(ip)
        })?;
        let note = match why_dummy {
            Some(why) => format!("node IP {ip} on link {DUMMY_LINK} ({why})"),
            None => format!("node IP {ip}"),
        };
        t.note(step::DETECT_NODE_IP, note)?;

        t.run(step::RENDER_KUBEADM_CONFIG, || {
            let yaml = KubeadmConfig::new(&cfg, ip, image.cri).to_yaml();
            let dir = self.paths.kubeadm_patches();
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            for (file, json) in kubeadm::probe_patches() {
                write_file(&dir.join(file), json.as_bytes(), 0o644)?;
            }
            write_file(&self.paths.kubeadm_config(), yaml.as_bytes(), 0o600)
        })?;
        t.note(
            step::RENDER_KUBEADM_CONFIG,
            format!("CRI {} at {}", image.cri, image.cri.endpoint()),
        )?;
        t.run(step::WRITE_CNI_CONFIG, || {
            let json = Conflist::for_pod_subnet(cfg.pod_subnet).to_json();
            write_file(&self.paths.conflist(), json.as_bytes(), 0o644)
        })?;
        Ok(t.status)
    }

    /// After the CRI is up: import the preloaded images, initialise the cluster once, or
    /// bring it back; then wait until the node and CoreDNS are ready.
    pub fn bootstrap(&self) -> Result<BootstrapStatus, InitError> {
        let status_path = self.paths.status();
        let status = BootstrapStatus::load(&status_path)
            .map_err(|e| InitError::NotPrepared(e.to_string()))?;
        if let Some(s) = PREPARE_STEPS
            .iter()
            .find(|n| status.step(n).map(|s| s.state) != Some(StepState::Done))
        {
            return Err(InitError::NotPrepared(format!(
                "step {s:?} of this boot is not done in {}",
                status_path.display()
            )));
        }
        let mut t = Tracker {
            status,
            path: status_path,
        };
        let loaded = (|| -> Result<_, InitError> {
            let (cfg, _) = choose_config(&self.paths)?;
            let image = NodeImageInfo::load(&self.paths.node_image_info())?;
            let state = NodeState::load(&self.paths.node_state())?;
            let ip = state
                .current_ip
                .ok_or_else(|| InitError::NotPrepared("no node IP recorded".into()))?;
            Ok((cfg, image, state, ip))
        })();
        let (cfg, image, mut state, ip) = match loaded {
            Ok(v) => v,
            Err(e) => {
                t.fail_next(&e);
                return Err(e);
            }
        };

        let cri = image.cri;
        t.run(step::WAIT_CRI, || self.wait_cri(cri))?;
        match (cri, &image.images_dir) {
            (Cri::Containerd, Some(dir)) => {
                let note = t.run(step::LOAD_IMAGES, || self.load_images(dir))?;
                t.note(step::LOAD_IMAGES, note)?;
            }
            (Cri::Containerd, None) => t.skip(
                step::LOAD_IMAGES,
                &format!(
                    "{} names no imagesDir: nothing to preload",
                    node::NODE_IMAGE_INFO
                ),
            )?,
            (Cri::Crio, _) => t.skip(
                step::LOAD_IMAGES,
                "the image's CRI is CRI-O, which pulls its images (and reads the host's store): nothing to preload",
            )?,
        }
        if state.initialized {
            let notes = t.run(step::RESTORE_NODE, || self.restore_node(&mut state, ip))?;
            if !notes.is_empty() {
                t.note(step::RESTORE_NODE, notes.join("; "))?;
            }
            t.skip(
                step::KUBEADM_INIT,
                &format!(
                    "the cluster on this /var is initialised already (boot {}); not running kubeadm init again",
                    state.boots
                ),
            )?;
        } else {
            t.skip(
                step::RESTORE_NODE,
                "first boot of this /var: nothing to restore",
            )?;
            t.run(step::KUBEADM_INIT, || {
                self.kubeadm_init(&mut state, ip, cri)
            })?;
        }
        let node = cfg.name.container();
        t.run(step::APPLY_MANIFESTS, || self.apply_manifests())?;
        t.run(step::SAVE_KUBECONFIG, || self.save_kubeconfig())?;
        let note = t.run(step::WRITE_POLICY_KUBECONFIG, || {
            self.write_policy_kubeconfig()
        })?;
        t.note(step::WRITE_POLICY_KUBECONFIG, note)?;
        t.run(step::WAIT_NODE_READY, || self.wait_node_ready(&node))?;
        t.run(step::WAIT_COREDNS, || self.wait_coredns())?;
        Ok(t.status)
    }

    /// `prepare` then `bootstrap`, for running by hand.
    pub fn run_all(&self) -> Result<BootstrapStatus, InitError> {
        self.prepare()?;
        self.bootstrap()
    }

    /// Puts [`DUMMY_NODE_IP`] on a dummy link (made once; every call is idempotent) and
    /// returns it.
    fn ensure_dummy_node_ip(&self) -> Result<Ipv4Addr, InitError> {
        let exists = self
            .runner
            .run(&Cmd::new("ip", ["link", "show", "dev", DUMMY_LINK]))?
            .success();
        if !exists {
            self.runner.run_ok(&Cmd::new(
                "ip",
                ["link", "add", DUMMY_LINK, "type", "dummy"],
            ))?;
        }
        let addr = format!("{DUMMY_NODE_IP}/32");
        self.runner.run_ok(&Cmd::new(
            "ip",
            ["address", "replace", addr.as_str(), "dev", DUMMY_LINK],
        ))?;
        self.runner
            .run_ok(&Cmd::new("ip", ["link", "set", "dev", DUMMY_LINK, "up"]))?;
        Ok(DUMMY_NODE_IP)
    }

    fn kubectl<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec![
            "--kubeconfig".to_string(),
            self.paths.admin_conf().display().to_string(),
        ];
        all.extend(args.into_iter().map(Into::into));
        Cmd::new("kubectl", all)
    }

    /// One of kubeadm init's late phases, tried [`PHASE_ATTEMPTS`] times: each attempt
    /// is a few API calls that a starved API server may answer too late.
    fn kubeadm_phase_retried(&self, phase: &[&str]) -> Result<(), InitError> {
        let cmd = self.kubeadm_phase(phase);
        let mut attempt = 1;
        loop {
            match self.runner.run_ok(&cmd) {
                Ok(_) => return Ok(()),
                Err(e) if attempt < PHASE_ATTEMPTS => {
                    eprintln!("kinc-init: attempt {attempt} of `{cmd}` failed: {e}");
                    attempt += 1;
                    std::thread::sleep(self.timeouts.poll);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn kubeadm_phase(&self, phase: &[&str]) -> Cmd {
        let mut args = vec!["init", "phase"];
        args.extend_from_slice(phase);
        let cfg = self.paths.kubeadm_config().display().to_string();
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(["--config".to_string(), cfg]);
        Cmd::new("kubeadm", args)
    }

    /// The CRI's socket as crictl and kubeadm's flags take it (below the root).
    fn cri_endpoint(&self, cri: Cri) -> String {
        format!("unix://{}", self.paths.cri_socket(cri).display())
    }

    /// `ctr` talking to containerd's socket, in the namespace the CRI uses.
    fn ctr<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec![
            "--address".to_string(),
            self.paths.cri_socket(Cri::Containerd).display().to_string(),
            "--namespace".to_string(),
            node::CONTAINERD_K8S_NAMESPACE.to_string(),
        ];
        all.extend(args.into_iter().map(Into::into));
        Cmd::new("ctr", all)
    }

    /// Retries `f` every `poll` until it succeeds or `limit` has passed.
    fn retry<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut() -> Result<T, InitError>,
    ) -> Result<T, InitError> {
        let deadline = Instant::now() + limit;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => {
                    return Err(InitError::Timeout {
                        what: what.to_string(),
                        secs: limit.as_secs(),
                        last: e.to_string(),
                    })
                }
                Err(_) => std::thread::sleep(self.timeouts.poll),
            }
        }
    }

    /// The CRI's socket accepts a connection and the runtime answers: `crictl info` for
    /// CRI-O, `ctr version` for containerd (the offline image has no crictl).
    fn wait_cri(&self, cri: Cri) -> Result<(), InitError> {
        let sock = self.paths.cri_socket(cri);
        let probe = match cri {
            Cri::Crio => Cmd::new(
                "crictl",
                ["--runtime-endpoint", &self.cri_endpoint(cri), "info"],
            ),
            Cri::Containerd => {
                Cmd::new("ctr", ["--address", &sock.display().to_string(), "version"])
            }
        };
        self.retry(cri.name(), self.timeouts.cri, || {
            UnixStream::connect(&sock).map_err(io_err("connecting to the CRI socket", &sock))?;
            self.runner.run_ok(&probe)?;
            Ok(())
        })
    }

    /// Imports the image's OCI archives that containerd does not hold yet (pinned) into
    /// the CRI's namespace, a few at a time, and pins each against kubelet's image GC
    /// once imported. Returns the note.
    fn load_images(&self, images_dir: &str) -> Result<String, InitError> {
        let dir = self.paths.at(images_dir);
        let list_path = dir.join(node::IMAGE_LIST_FILE);
        let mut list = ImageList::load(&list_path)?.0;
        list.sort_by(|a, b| a.file.cmp(&b.file));
        // Every archive in the dir is listed, and every listed one is there.
        let listed: BTreeSet<&str> = list.iter().map(|i| i.file.as_str()).collect();
        let entries = std::fs::read_dir(&dir).map_err(io_err("reading directory", &dir))?;
        let mut on_disk = Vec::new();
        for e in entries {
            let e = e.map_err(io_err("reading directory", &dir))?;
            on_disk.push(e.file_name().to_string_lossy().into_owned());
        }
        on_disk.sort();
        if let Some(f) = on_disk
            .iter()
            .find(|f| f.ends_with(".tar") && !listed.contains(f.as_str()))
        {
            return Err(InitError::UnlistedImage {
                file: dir.join(f),
                list: list_path,
            });
        }
        for img in &list {
            let p = dir.join(&img.file);
            std::fs::metadata(&p).map_err(io_err("reading preloaded image", &p))?;
        }

        // Only images that are there and pinned count as present: one imported on a boot
        // that died before pinning it is imported (a no-op for its content) and pinned now.
        let pinned_filter = format!("labels.\"{CRI_PINNED_LABEL}\"=={CRI_PINNED_VALUE}");
        let out = self
            .runner
            .run_ok(&self.ctr(["images", "list", "--quiet", &pinned_filter]))?;
        let present: BTreeSet<&str> = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let missing: Vec<_> = list
            .iter()
            .filter(|i| !present.contains(i.name.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(format!(
                "all {} preloaded images already in containerd (pinned); nothing imported",
                list.len()
            ));
        }
        // `--local` (ctr 1.7's default, said explicitly): the client imports and unpacks;
        // the names are the archive's `io.containerd.image.name` annotations (an archive
        // may hold several images that share layers: it is imported once). No
        // `--all-platforms`: only this node's platform is imported and unpacked.
        let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for img in &missing {
            by_file.entry(&img.file).or_default().push(&img.name);
        }
        let jobs: Vec<(Cmd, Vec<Cmd>)> = by_file
            .into_iter()
            .map(|(file, names)| {
                let archive = dir.join(file).display().to_string();
                let import = self.ctr([
                    "images",
                    "import",
                    "--local",
                    "--snapshotter",
                    node::CONTAINERD_SNAPSHOTTER,
                    &archive,
                ]);
                let labels = names
                    .into_iter()
                    .map(|name| {
                        self.ctr([
                            "images".to_string(),
                            "label".to_string(),
                            name.to_string(),
                            format!("{CRI_PINNED_LABEL}={CRI_PINNED_VALUE}"),
                        ])
                    })
                    .collect();
                (import, labels)
            })
            .collect();
        import_all(self.runner, &jobs)?;
        let names: Vec<&str> = missing.iter().map(|i| i.name.as_str()).collect();
        Ok(format!(
            "imported and pinned {} of {} preloaded images: {}",
            missing.len(),
            list.len(),
            names.join(", ")
        ))
    }

    fn kubeadm_init(&self, state: &mut NodeState, ip: Ipv4Addr, cri: Cri) -> Result<(), InitError> {
        // A first boot that died half-way through kubeadm init leaves certificates,
        // manifests and etcd data behind; init refuses to run over them.
        if self.paths.init_leftovers().iter().any(|p| p.exists()) {
            eprintln!("kinc-init: resetting what an unfinished kubeadm init left behind");
            self.runner.run_ok(&Cmd::new(
                "kubeadm",
                ["reset", "--force", "--cri-socket", &self.cri_endpoint(cri)],
            ))?;
        }
        let cfg = self.paths.kubeadm_config().display().to_string();
        if let Err(e) = self
            .runner
            .run_ok(&Cmd::new("kubeadm", ["init", "--config", &cfg]))
        {
            let rest = match &e {
                RunError::Failed { stderr, stdout, .. } => {
                    kubeadm::phases_to_resume(&format!("{stderr}\n{stdout}"))
                }
                RunError::Spawn { .. } => None,
            };
            let Some(rest) = rest else {
                return Err(e.into());
            };
            eprintln!(
                "kinc-init: {e}; the control plane is starting, so running the remaining phases again"
            );
            for phase in rest {
                self.kubeadm_phase_retried(phase)?;
            }
        }
        // Writing their manifests is all it takes: kubelet starts them.
        for phase in kubeadm::CONTROLLER_PHASES {
            self.runner.run_ok(&self.kubeadm_phase(phase))?;
        }
        state.initialized = true;
        state.cluster_ip = Some(ip);
        state.save(&self.paths.node_state())?;
        Ok(())
    }

    /// A restart with `/var` kept: put `/etc/kubernetes` back if the container was
    /// recreated, and redo what names the node IP if it changed.
    fn restore_node(&self, state: &mut NodeState, ip: Ipv4Addr) -> Result<Vec<String>, InitError> {
        let mut notes = Vec::new();
        let etc = self.paths.etc_kubernetes();
        let backup = self.paths.etc_kubernetes_backup();
        if !self.paths.admin_conf().exists() {
            if !backup.join("admin.conf").exists() {
                return Err(InitError::LostKubernetesConfig { etc, backup });
            }
            fsx::copy_tree(&backup, &etc)
                .map_err(io_err("restoring /etc/kubernetes into", &etc))?;
            notes.push(format!(
                "restored {} from {}",
                etc.display(),
                backup.display()
            ));
        }
        if state.cluster_ip != Some(ip) {
            let old = state
                .cluster_ip
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into());
            // The API server certificate lists the node IP: kubeadm only writes a new
            // one when none exists.
            for p in self.paths.apiserver_cert() {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &p)(e)),
                }
            }
            for phase in [
                &["certs", "apiserver"][..],
                &["control-plane", "apiserver"],
                &["etcd", "local"],
                // Rewrites kubelet's --node-ip and restarts kubelet.
                &["kubelet-start"],
            ] {
                self.runner.run_ok(&self.kubeadm_phase(phase))?;
            }
            state.cluster_ip = Some(ip);
            state.save(&self.paths.node_state())?;
            notes.push(format!(
                "node IP changed from {old} to {ip}: new API server certificate, API server and etcd manifests, kubelet flags"
            ));
        }
        Ok(notes)
    }

    fn apply_manifests(&self) -> Result<(), InitError> {
        let dir = self.paths.cluster_manifests().display().to_string();
        let cmd = self.kubectl(["apply", "-f", &dir]);
        self.retry(
            "the API server (applying manifests)",
            self.timeouts.api,
            || Ok(self.runner.run_ok(&cmd).map(|_| ())?),
        )
    }

    fn save_kubeconfig(&self) -> Result<(), InitError> {
        let src = self.paths.admin_conf();
        let dst = self.paths.exported_admin_conf();
        let bytes = std::fs::read(&src).map_err(io_err("reading", &src))?;
        write_file(&dst, &bytes, 0o600)?;
        let backup = self.paths.etc_kubernetes_backup();
        fsx::replace_tree(&self.paths.etc_kubernetes(), &backup)
            .map_err(io_err("copying /etc/kubernetes to", &backup))
    }

    /// The kincnet-policy controller's kubeconfig: the token of the ServiceAccount that
    /// `apply-manifests` created (waiting for kube-controller-manager to issue it) and the
    /// admin kubeconfig's cluster. Runs on every boot, so a recreated container (a fresh
    /// /etc) gets it back; an unchanged file is not rewritten.
    fn write_policy_kubeconfig(&self) -> Result<String, InitError> {
        let cmd = self.kubectl([
            "--namespace",
            policy::NAMESPACE,
            "get",
            "secret",
            policy::TOKEN_SECRET,
            "--output",
            "json",
        ]);
        let token = self.retry(
            "the kincnet-policy ServiceAccount token",
            self.timeouts.api,
            || {
                let out = self.runner.run_ok(&cmd)?;
                Ok(policy::token_from_secret_json(&out.stdout)?)
            },
        )?;
        let admin_path = self.paths.admin_conf();
        let admin = policy::read_admin(&admin_path)?;
        let kc = policy::controller_kubeconfig(&admin, &admin_path, &token)?;
        let yaml = policy::to_yaml(&kc);
        let path = self.paths.policy_kubeconfig();
        if std::fs::read(&path).is_ok_and(|old| old == yaml.as_bytes()) {
            return Ok(format!("{} unchanged", policy::POLICY_KUBECONFIG));
        }
        write_file(&path, yaml.as_bytes(), 0o600)?;
        Ok(format!(
            "wrote {} (ServiceAccount {}/{})",
            policy::POLICY_KUBECONFIG,
            policy::NAMESPACE,
            policy::SERVICE_ACCOUNT
        ))
    }

    fn wait_node_ready(&self, node: &str) -> Result<(), InitError> {
        let cmd = self.kubectl([
            "wait".to_string(),
            "--for=condition=Ready".to_string(),
            format!("node/{node}"),
            format!("--timeout={}s", self.timeouts.kubectl_wait.as_secs()),
        ]);
        self.retry(
            &format!("node {node} to be Ready"),
            self.timeouts.node_ready,
            || Ok(self.runner.run_ok(&cmd).map(|_| ())?),
        )
    }

    fn wait_coredns(&self) -> Result<(), InitError> {
        let cmd = self.kubectl([
            "--namespace".to_string(),
            "kube-system".to_string(),
            "wait".to_string(),
            "--for=condition=Available".to_string(),
            "deployment/coredns".to_string(),
            format!("--timeout={}s", self.timeouts.kubectl_wait.as_secs()),
        ]);
        self.retry("CoreDNS to be Available", self.timeouts.coredns, || {
            Ok(self.runner.run_ok(&cmd).map(|_| ())?)
        })
        .map_err(|e| self.with_pod_states(e, "k8s-app=kube-dns"))
    }

    /// Adds what the pods matching `selector` in kube-system are doing to a timeout, so the
    /// status says why (a sandbox that cannot be created, a crash loop) and not only that.
    fn with_pod_states(&self, e: InitError, selector: &str) -> InitError {
        let InitError::Timeout { what, secs, last } = e else {
            return e;
        };
        let cmd = self.kubectl([
            "--namespace",
            "kube-system",
            "get",
            "pods",
            "--selector",
            selector,
            "--output",
            "json",
        ]);
        let pods = match self.runner.run_ok(&cmd) {
            Ok(out) => pod_states(&out.stdout),
            Err(err) => format!("(listing the pods failed: {err})"),
        };
        InitError::Timeout {
            what,
            secs,
            last: format!("{last}; pods {selector}: {pods}"),
        }
    }
}

/// One line per pod of a `kubectl get pods -o json` list: its phase and, for each
/// container not ready, why (waiting reason and message, or the last termination).
pub fn pod_states(json: &str) -> String {
    use k8s_openapi::api::core::v1::Pod;
    // kubectl prints `kind: List`, not `PodList`: only the items are read.
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Pod>,
    }
    let list: Items = match serde_json::from_str(json) {
        Ok(l) => l,
        Err(e) => return format!("(unreadable pod list: {e})"),
    };
    if list.items.is_empty() {
        return "none".to_string();
    }
    list.items
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let st = p.status.clone().unwrap_or_default();
            let mut why = Vec::new();
            for c in st.container_statuses.unwrap_or_default() {
                if c.ready {
                    continue;
                }
                let state = c.state.unwrap_or_default();
                if let Some(w) = state.waiting {
                    why.push(format!(
                        "{} waiting: {} {}",
                        c.name,
                        w.reason.unwrap_or_default(),
                        w.message.unwrap_or_default()
                    ));
                } else if let Some(t) = c.last_state.and_then(|l| l.terminated) {
                    why.push(format!(
                        "{} last exit {} {}",
                        c.name,
                        t.exit_code,
                        t.reason.unwrap_or_default()
                    ));
                } else {
                    why.push(format!("{} not ready", c.name));
                }
            }
            for cond in st.conditions.unwrap_or_default() {
                if cond.status == "False" && cond.message.is_some() {
                    why.push(format!(
                        "{}: {}",
                        cond.type_,
                        cond.message.unwrap_or_default()
                    ));
                }
            }
            format!(
                "{name} {}{}",
                st.phase.unwrap_or_default(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `bytes` atomically with `mode`, creating the directory.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InitError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
    }
    write_atomic(path, bytes, Some(mode)).map_err(io_err("writing", path))
}

/// The kubeadm config for `cfg` at `ip` with `cri`, as `kinc-init render` prints it.
pub fn render_kubeadm(cfg: &ClusterConfig, ip: Ipv4Addr, cri: Cri) -> String {
    KubeadmConfig::new(cfg, ip, cri).to_yaml()
}
