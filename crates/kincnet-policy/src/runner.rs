//! The controller's loop against a real API server: three kube-rs watchers feed
//! [`Controller::handle`]; a timer triggers the full resync; the status file is
//! rewritten after every change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::controller::{Controller, Enforcer, Event, Status};

/// What the controller asks of the API server: each watched kind as (API group,
/// resource), and the verbs a kube-rs watcher uses on it (it lists, then watches; it never
/// GETs a single object). The ServiceAccount's ClusterRole
/// (`manifests/cluster/kincnet-policy.yaml`) grants exactly this; a test compares them.
pub fn api_access() -> Vec<(&'static str, &'static str)> {
    fn of<K: k8s_openapi::Resource>() -> (&'static str, &'static str) {
        (K::GROUP, K::URL_PATH_SEGMENT)
    }
    // The same three types `run` builds its watchers from.
    vec![of::<Pod>(), of::<Namespace>(), of::<NetworkPolicy>()]
}

/// The verbs of [`api_access`].
pub const API_VERBS: [&str; 2] = ["list", "watch"];

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where `--status` reads from (JSON, rewritten atomically).
    pub status_file: PathBuf,
    /// Interval of the full resync (recompute everything, diff, apply).
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("writing status file {path}: {source}")]
    Status {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("all watch streams ended")]
    StreamsEnded,
}

pub fn write_status(path: &Path, s: &Status) -> Result<(), RunError> {
    let err = |source| RunError::Status {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let json = serde_json::to_vec_pretty(s).expect("status serializes");
    kinc_types::fsutil::write_atomic(path, &json, Some(0o644)).map_err(err)
}

pub fn read_status(path: &Path) -> Result<Status, String> {
    let data = std::fs::read(path).map_err(|e| {
        format!(
            "reading {}: {e} (is the kincnet-policy service running?)",
            path.display()
        )
    })?;
    serde_json::from_slice(&data).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Runs until the watch streams end (they retry with backoff, so in practice: forever).
/// Enforcement errors are logged and kept in the status; the next event or resync
/// rewrites the data path whole.
pub async fn run<E: Enforcer>(
    client: Client,
    ctl: &mut Controller<E>,
    opts: &RunOptions,
) -> Result<(), RunError> {
    let cfg = watcher::Config::default();
    let pods = watcher(Api::<Pod>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(|r| r.map(Event::Pod))
        .boxed();
    let nss = watcher(Api::<Namespace>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(|r| r.map(Event::Namespace))
        .boxed();
    let pols = watcher(Api::<NetworkPolicy>::all(client), cfg)
        .default_backoff()
        .map(|r| r.map(Event::Policy))
        .boxed();
    let mut events = stream::select_all([pods, nss, pols]);
    let mut tick = tokio::time::interval(opts.resync);
    tick.tick().await;
    write_status(&opts.status_file, &ctl.status())?;
    loop {
        let (outcome, timer) = tokio::select! {
            ev = events.next() => match ev {
                None => return Err(RunError::StreamsEnded),
                Some(Err(e)) => {
                    tracing::warn!("watch: {e}");
                    continue;
                }
                Some(Ok(ev)) => (ctl.handle(ev).map(|d| d.map(|d| d.len())), false),
            },
            _ = tick.tick() => (ctl.resync().map(|d| Some(d.len())), true),
        };
        match outcome {
            Ok(Some(n)) if n > 0 => tracing::info!(elements = n, "applied"),
            // Nothing changed: the status only needs the resync's timestamp.
            Ok(_) if !timer => continue,
            Ok(_) => {}
            Err(e) => tracing::error!("enforcing: {e}"),
        }
        write_status(&opts.status_file, &ctl.status())?;
    }
}
