//! `kinc create cluster`: blocking host checks, allocation under the state lock,
//! labelled volumes and the rendered config, the node (Quadlet or `podman run`), then
//! waiting for the node's bootstrap with a spinner per step. Any failure or Ctrl-C
//! removes what was made, unless `--retain`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use kinc_types::config::CONFIG_FILE;
use kinc_types::status::{Phase, StepState};
use kinc_types::{labels, ClusterConfig, ClusterName};
use serde::Deserialize;

use crate::alloc::{AllocError, Planner};
use crate::cluster::{read_status, ClusterError, Kinc};
use crate::doctor::{self, Finding, HostFacts};
use crate::node::{volume_labels, NodeSpec};
use crate::progress::Progress;
use crate::quadlet;
use crate::routes;
use crate::runner::Runner;

/// How often `wait_ready` reads the node's status file: a file read, no process.
pub const STATUS_POLL: Duration = Duration::from_millis(250);
/// How often `wait_ready` asks podman whether the node still runs.
pub const NODE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Largest `--config` file read; anything bigger is not a cluster options file.
pub const MAX_OPTIONS_FILE: u64 = 1 << 20;

/// The optional `--config FILE` (YAML or JSON): every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterOptionsFile {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<ClusterName>,
    pub kubernetes_version: Option<String>,
    pub api_port: Option<u16>,
    pub pod_subnet: Option<Ipv4Network>,
    pub service_subnet: Option<Ipv4Network>,
    pub dns_domain: Option<String>,
    #[serde(default)]
    pub extra_sans: Vec<String>,
}

impl ClusterOptionsFile {
    pub fn load(path: &Path) -> Result<Self, CreateError> {
        let bad = |msg: String| CreateError::Config {
            path: path.display().to_string(),
            msg,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_OPTIONS_FILE + 1).read_to_string(&mut text))
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_OPTIONS_FILE {
            return Err(bad(format!(
                "larger than {} KiB; a cluster options file is a few lines",
                MAX_OPTIONS_FILE >> 10
            )));
        }
        // The parser's message quotes the offending value: bounded, it may be a secret.
        let f: Self = serde_yaml::from_str(&text).map_err(|e| bad(crate::excerpt::yaml(&e)))?;
        if let Some(v) = &f.api_version {
            if v != kinc_types::config::API_VERSION {
                return Err(bad(format!(
                    "apiVersion is {v:?}; this kinc reads {:?}",
                    kinc_types::config::API_VERSION
                )));
            }
        }
        if let Some(k) = &f.kind {
            if k != kinc_types::config::KIND {
                return Err(bad(format!(
                    "kind is {k:?}; expected {:?}",
                    kinc_types::config::KIND
                )));
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: ClusterName,
    pub image: String,
    pub api_port: Option<u16>,
    pub file: ClusterOptionsFile,
    /// How long to wait for Ready; zero returns once the node container runs.
    pub wait: Duration,
    pub retain: bool,
    /// Blocking doctor checks to downgrade to warnings, by name.
    pub skip_checks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    Quadlet(PathBuf),
    Podman,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub config: ClusterConfig,
    pub mode: RunMode,
    pub ready: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the host is not ready for kinc (fix these, or skip one with --skip-check NAME):\n{}", fmt_findings(.0))]
    Blocked(Vec<Finding>),
    #[error("image {0:?} is not in podman's image store: build it with `cargo xtask image`, or pass --image")]
    ImageMissing(String),
    #[error("cluster {0:?} already exists: `kinc delete cluster --name {0}` first")]
    Exists(String),
    #[error("{kind} {name:?} already exists and was not made by kinc: remove or rename it (kinc never touches it)")]
    Foreign { kind: &'static str, name: String },
    #[error("config {path}: {msg}")]
    Config { path: String, msg: String },
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the node container stopped ({state}); its last output:\n{logs}")]
    NodeExited { state: String, logs: String },
    #[error("bootstrap step {step:?} failed: {message}\nnode output:\n{logs}")]
    StepFailed {
        step: String,
        message: String,
        logs: String,
    },
    #[error("timed out after {} waiting for {step}; node output:\n{logs}", humantime::format_duration(*.waited))]
    Timeout {
        step: String,
        waited: Duration,
        logs: String,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("{error}; cleaning up also failed: {cleanup}")]
    Cleanup {
        error: Box<CreateError>,
        cleanup: ClusterError,
    },
}

fn fmt_findings(v: &[Finding]) -> String {
    v.iter()
        .map(|f| {
            format!(
                "  - {}: {}\n    fix: {}",
                f.check,
                f.summary,
                f.fix.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn io(what: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let path = p.display().to_string();
    move |source| ClusterError::Io { what, path, source }
}

impl<R: Runner> Kinc<R> {
    /// Every `kinc doctor` finding for this host.
    pub fn doctor(&self) -> Vec<Finding> {
        let version = self.podman.version().ok();
        let facts = HostFacts::of(&self.host, version, self.systemd_user_manager());
        doctor::run_checks(&facts)
    }

    /// Runs every doctor check; Err with the blocking ones not skipped.
    pub fn preflight(&self, skip: &[String]) -> Result<Vec<Finding>, CreateError> {
        let all = self.doctor();
        let blocking: Vec<Finding> = doctor::blocking(&all, skip).into_iter().cloned().collect();
        if blocking.is_empty() {
            Ok(all)
        } else {
            Err(CreateError::Blocked(blocking))
        }
    }

    /// Makes the cluster; on error removes what it made unless `opts.retain`.
    pub fn create(
        &self,
        opts: &CreateOptions,
        progress: &Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Created, CreateError> {
        progress.start("checks", "Checking the host");
        match self.preflight(&opts.skip_checks) {
            Ok(findings) => {
                progress.done("checks");
                for f in findings.iter().filter(|f| f.level != doctor::Level::Ok) {
                    progress.note(&format!("   note ({}): {}", f.check, f.summary));
                }
            }
            Err(e) => {
                progress.fail("checks", "blocked");
                return Err(e);
            }
        }
        if !self
            .podman
            .image_exists(&opts.image)
            .map_err(ClusterError::from)?
        {
            return Err(CreateError::ImageMissing(opts.image.clone()));
        }
        let mut made = false;
        let result = self.provision(opts, progress, &mut made).and_then(|c| {
            if opts.wait.is_zero() {
                return Ok(Created { ready: false, ..c });
            }
            self.wait_ready(&c.config, opts.wait, progress, interrupted)?;
            Ok(Created { ready: true, ..c })
        });
        match result {
            Ok(c) => Ok(c),
            Err(e) => {
                progress.fail_all("stopped");
                if made && !opts.retain {
                    progress.start("cleanup", "Removing what was created");
                    match self.delete(&opts.name) {
                        Ok(_) => progress.done("cleanup"),
                        Err(cleanup) => {
                            progress.fail("cleanup", &cleanup.to_string());
                            return Err(CreateError::Cleanup {
                                error: Box::new(e),
                                cleanup,
                            });
                        }
                    }
                } else if made {
                    progress.note(&format!(
                        "kept the cluster's resources (--retain); remove them with `kinc delete cluster --name {}`",
                        opts.name
                    ));
                }
                Err(e)
            }
        }
    }

    /// Allocation, volumes, config and the node container, all under the state lock
    /// so parallel creates see each other's labels.
    fn provision(
        &self,
        opts: &CreateOptions,
        progress: &Progress,
        made: &mut bool,
    ) -> Result<Created, CreateError> {
        let name = &opts.name;
        progress.start("alloc", "Allocating API port and CIDRs");
        let mut state = self.lock_state()?;
        if self.info(name).is_ok() || state.state.clusters.contains_key(name.as_str()) {
            return Err(CreateError::Exists(name.to_string()));
        }
        self.refuse_foreign(name)?;
        let routes = routes::host_routes(&self.routes_path)
            .map_err(|e| ClusterError::Other(e.to_string()))?;
        let taken = state.state.taken();
        let planner = Planner::new(&routes);
        let port = opts.api_port.or(opts.file.api_port);
        let mut alloc = planner.plan(&taken, port, &|p| self.host.port_free(p))?;
        for (field, net) in [
            ("podSubnet", opts.file.pod_subnet),
            ("serviceSubnet", opts.file.service_subnet),
        ] {
            let Some(net) = net else { continue };
            if let Some(r) = routes.iter().find(|r| r.overlaps(net)) {
                return Err(CreateError::Config {
                    path: "--config".into(),
                    msg: format!("{field} {net} overlaps the host route {r}"),
                });
            }
            if let Some((c, _)) = taken.iter().find(|(_, a)| a.overlaps(net)) {
                return Err(CreateError::Config {
                    path: "--config".into(),
                    msg: format!("{field} {net} overlaps cluster {c:?}"),
                });
            }
            if field == "podSubnet" {
                alloc.pod_subnet = net;
            } else {
                alloc.service_subnet = net;
            }
        }
        let mut config = ClusterConfig::new(
            name.clone(),
            alloc.api_port,
            alloc.pod_subnet,
            alloc.service_subnet,
        );
        if let Some(v) = &opts.file.kubernetes_version {
            config.kubernetes_version = v.clone();
        }
        if let Some(d) = &opts.file.dns_domain {
            config.dns_domain = d.clone();
        }
        config.extra_sans = opts.file.extra_sans.clone();
        config.validate().map_err(|msg| CreateError::Config {
            path: "--config".into(),
            msg,
        })?;
        state.state.clusters.insert(name.to_string(), alloc);
        state.save().map_err(ClusterError::from)?;
        progress.done("alloc");
        progress.note(&format!(
            "   API https://127.0.0.1:{}, pods {}, services {}",
            alloc.api_port, alloc.pod_subnet, alloc.service_subnet
        ));

        progress.start("volumes", "Creating volumes and the cluster config");
        *made = true;
        let p = &self.podman;
        p.volume_create(&name.var_volume(), &volume_labels(name, labels::ROLE_VAR))
            .map_err(ClusterError::from)?;
        p.volume_create(
            &name.config_volume(),
            &volume_labels(name, labels::ROLE_CONFIG),
        )
        .map_err(ClusterError::from)?;
        let cfg_dir = p
            .volume_mountpoint(&name.config_volume())
            .map_err(ClusterError::from)?;
        let cfg_path = cfg_dir.join(CONFIG_FILE);
        kinc_types::fsutil::write_atomic(&cfg_path, config.to_json().as_bytes(), Some(0o644))
            .map_err(io("writing", &cfg_path))?;
        progress.done("volumes");

        let info = p.info().map_err(ClusterError::from)?;
        let store = PathBuf::from(&info.store.graph_root);
        let spec = NodeSpec {
            config: config.clone(),
            image: opts.image.clone(),
            host_store: (!info.store.graph_root.is_empty() && store.is_dir()).then_some(store),
            fuse: self.host.has_fuse(),
        };
        let quadlet_dir = match (&self.unit_dir, self.quadlet_capable()) {
            (Some(d), true) => Some(d.clone()),
            _ => None,
        };
        let mode = match quadlet_dir {
            Some(dir) => {
                progress.start("node", "Starting the node (Quadlet units)");
                let units = quadlet::render_cluster(&spec)
                    .map_err(|e| ClusterError::Other(e.to_string()))?;
                quadlet::install(&dir, &units).map_err(io("writing units into", &dir))?;
                let sys = |a: &[&str]| {
                    let mut args = vec!["--user".to_string()];
                    args.extend(a.iter().map(|s| s.to_string()));
                    p.runner()
                        .run("systemctl", &args)
                        .map_err(ClusterError::from)
                };
                sys(&["daemon-reload"])?;
                sys(&["start", &quadlet::node_service(name)])?;
                RunMode::Quadlet(dir)
            }
            None => {
                progress.start("node", "Starting the node (podman run)");
                progress.note("   no systemd user manager with Quadlet here: running the node with plain `podman run` (it will not come back after a reboot)");
                p.run_container(&spec.run_args())
                    .map_err(ClusterError::from)?;
                RunMode::Podman
            }
        };
        progress.done("node");
        drop(state);
        Ok(Created {
            config,
            mode,
            ready: false,
        })
    }

    /// Quadlet needs a user manager and podman 4.4+.
    fn quadlet_capable(&self) -> bool {
        let new_enough = self
            .podman
            .version()
            .ok()
            .and_then(|v| crate::podman::parse_version(&v))
            .is_some_and(|v| v >= (4, 4, 0));
        new_enough && self.systemd_user_manager()
    }

    /// Errors when the names kinc would use are taken by something kinc did not make.
    fn refuse_foreign(&self, name: &ClusterName) -> Result<(), CreateError> {
        let r = self.podman.runner();
        let exists = |args: &[&str]| {
            r.try_run(
                "podman",
                &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .map(|o| o.success())
            .map_err(ClusterError::from)
        };
        if exists(&["container", "exists", &name.container()])? {
            return Err(CreateError::Foreign {
                kind: "container",
                name: name.container(),
            });
        }
        for v in [name.var_volume(), name.config_volume()] {
            if exists(&["volume", "exists", &v])? {
                return Err(CreateError::Foreign {
                    kind: "volume",
                    name: v,
                });
            }
        }
        Ok(())
    }

    /// Polls the node until its status file says Ready and the API port answers.
    ///
    /// Each poll reads the status file from the var volume's mountpoint, resolved once;
    /// podman is asked whether the node still runs only every [`NODE_CHECK_EVERY`] and
    /// once more before a timeout. Every podman call costs CPU that the node's bootstrap
    /// competes for: asking on every poll took half of a 2-CPU host (time-to-ready.md).
    pub fn wait_ready(
        &self,
        config: &ClusterConfig,
        wait: Duration,
        progress: &Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(), CreateError> {
        let name = &config.name;
        let clock = &self.host.clock;
        let t0 = clock.now();
        let logs = || {
            self.podman
                .logs(&name.container(), Some(30))
                .unwrap_or_else(|e| format!("(no logs: {e})"))
        };
        progress.start("boot", "Waiting for the node's bootstrap status");
        let mut waiting_for = "the node's bootstrap status file".to_string();
        let mut seen_status = false;
        // The mountpoint does not change while the volume exists: looked up until found.
        let mut mountpoint: Option<PathBuf> = None;
        let mut node_checked: Option<Duration> = None;
        loop {
            if interrupted() {
                return Err(CreateError::Interrupted);
            }
            let now = clock.now();
            if node_checked.is_none_or(|t| now.saturating_sub(t) >= NODE_CHECK_EVERY) {
                node_checked = Some(now);
                self.node_still_runs(name, &logs)?;
                if mountpoint.is_none() {
                    mountpoint = self.var_mountpoint(name).ok();
                }
            }
            let status = mountpoint
                .as_deref()
                .and_then(|mp| read_status(name, mp).ok());
            if let Some(status) = status {
                if !seen_status {
                    seen_status = true;
                    progress.done("boot");
                }
                for s in &status.steps {
                    let key = format!("step:{}", s.name);
                    match s.state {
                        StepState::Running => {
                            progress.start(&key, &s.name);
                            waiting_for = format!("bootstrap step {:?}", s.name);
                        }
                        StepState::Done => {
                            progress.start(&key, &s.name);
                            progress.done(&key);
                        }
                        StepState::Skipped => {
                            progress.start(&key, &s.name);
                            progress.skipped(&key, s.message.as_deref().unwrap_or("skipped"));
                        }
                        StepState::Failed => {
                            progress.start(&key, &s.name);
                            let msg = s.message.clone().unwrap_or_default();
                            progress.fail(&key, &msg);
                            return Err(CreateError::StepFailed {
                                step: s.name.clone(),
                                message: msg,
                                logs: logs(),
                            });
                        }
                        StepState::Pending => {}
                    }
                }
                if status.phase == Phase::Ready {
                    progress.start("api", "Waiting for the API server");
                    waiting_for = format!("the API server on 127.0.0.1:{}", config.api_port);
                    if self.host.port_answers(config.api_port) {
                        progress.done("api");
                        return Ok(());
                    }
                }
            }
            if clock.now().saturating_sub(t0) >= wait {
                // A node that stopped since the last check is the cause to report.
                self.node_still_runs(name, &logs)?;
                return Err(CreateError::Timeout {
                    step: waiting_for,
                    waited: wait,
                    logs: logs(),
                });
            }
            clock.sleep(STATUS_POLL);
        }
    }

    /// Errs with the node's state and output unless its container is running or
    /// starting (one `podman ps`).
    fn node_still_runs(
        &self,
        name: &ClusterName,
        logs: &dyn Fn() -> String,
    ) -> Result<(), CreateError> {
        let node = self
            .podman
            .containers(&[
                (labels::OWNER, labels::OWNER_VALUE),
                (labels::CLUSTER, name.as_str()),
            ])
            .map_err(ClusterError::from)?
            .into_iter()
            .find(|c| c.labels.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_NODE));
        match node.as_ref().map(|c| c.state.as_str()) {
            Some("running") | Some("created") | Some("initialized") => Ok(()),
            Some(state) => Err(CreateError::NodeExited {
                state: state.to_string(),
                logs: logs(),
            }),
            None => Err(CreateError::NodeExited {
                state: "gone".into(),
                logs: String::new(),
            }),
        }
    }
}

#[cfg(test)]
#[path = "create_tests.rs"]
mod tests;
