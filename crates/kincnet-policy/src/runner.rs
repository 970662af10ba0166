//! The controller's loop against a real API server: three kube-rs watchers feed
//! [`Controller::handle`]; a timer triggers the full resync; the status file is
//! rewritten after every change.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use kinc_types::policy_gate::{Request, Response, MAX_MESSAGE};
use tokio::sync::{mpsc, oneshot};

use crate::controller::{CniOutcome, Controller, Enforcer, Event, Status};

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
    /// The CNI gate's socket (`kinc_types::policy_gate::SOCKET`); `None`: not served.
    pub cni_socket: Option<PathBuf>,
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
    #[error("CNI socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One CNI request on its way to the loop: the request, when it must be answered by,
/// and where the answer goes.
type CniCall = (Request, Instant, oneshot::Sender<Response>);

/// The longest a request may wait for the sync or its pod, whatever it asks for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// When the answer to `req` is due: a little before kincnet gives up, so it reads the
/// reason rather than a timeout.
fn deadline(req: &Request, now: Instant) -> Instant {
    let ms = match req {
        Request::Program { timeout_ms, .. } => *timeout_ms,
        Request::Release { .. } => kinc_types::policy_gate::RELEASE_TIMEOUT_MS,
    };
    let budget = Duration::from_millis(ms.saturating_sub(ms.min(200).max(ms / 10)));
    now + budget.min(MAX_WAIT)
}

/// Listens on `path` (mode 0600, a stale socket file replaced) and hands every request
/// to the loop through `tx`, one thread per connection (CNI calls are few and short).
pub fn serve_cni(path: &Path, tx: mpsc::Sender<CniCall>) -> Result<(), RunError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| RunError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::thread::Builder::new()
        .name("cni-socket".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("cni-request".into())
                    .spawn(move || serve_one(conn, tx));
            }
        })
        .map_err(err)?;
    Ok(())
}

fn serve_one(conn: UnixStream, tx: mpsc::Sender<CniCall>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = Vec::new();
    let read = BufReader::new((&conn).take(MAX_MESSAGE as u64 + 1)).read_until(b'\n', &mut line);
    let answer = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<Request>(&line).map_err(|e| e.to_string()))
    {
        Err(e) => Response::Refused {
            reason: format!("undecodable request: {e}"),
        },
        Ok(req) => {
            let (otx, orx) = oneshot::channel();
            let due = deadline(&req, Instant::now());
            if tx.blocking_send((req, due, otx)).is_err() {
                return;
            }
            match orx.blocking_recv() {
                Ok(a) => a,
                Err(_) => return,
            }
        }
    };
    let mut out = serde_json::to_vec(&answer).expect("response serializes");
    out.push(b'\n');
    let _ = (&conn).write_all(&out);
}

/// Requests that wait for the sync or for their pod, retried after every event.
#[derive(Default)]
struct Waiting(Vec<(Request, Instant, oneshot::Sender<Response>, String)>);

fn answer<E: Enforcer>(ctl: &mut Controller<E>, reply: oneshot::Sender<Response>, a: Response) {
    ctl.cni.requests += 1;
    if let Response::Refused { reason } = &a {
        ctl.cni.refused += 1;
        ctl.cni.last_refusal = Some(reason.clone());
        tracing::warn!("CNI request refused: {reason}");
    }
    let _ = reply.send(a);
}

impl Waiting {
    /// Asks again for every waiting request; answers those done or overdue.
    fn retry<E: Enforcer>(&mut self, ctl: &mut Controller<E>) {
        let now = Instant::now();
        for (req, due, reply, _) in std::mem::take(&mut self.0) {
            match ctl.cni_request(&req) {
                CniOutcome::Answer(a) => answer(ctl, reply, a),
                CniOutcome::Wait(reason) if now >= due => {
                    answer(ctl, reply, Response::Refused { reason })
                }
                CniOutcome::Wait(reason) => self.0.push((req, due, reply, reason)),
            }
        }
        ctl.cni.waiting = self.0.len();
    }
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
    let (tx, mut rx) = mpsc::channel::<CniCall>(256);
    if let Some(path) = &opts.cni_socket {
        serve_cni(path, tx)?;
        ctl.cni.socket = Some(path.display().to_string());
    } else {
        drop(tx);
    }
    let mut waiting = Waiting::default();
    // After a CNI request the status is written a little later, off the request's
    // path: a status write (two fsyncs) must not delay the next ADD.
    let mut status_due: Option<tokio::time::Instant> = None;
    write_status(&opts.status_file, &ctl.status())?;
    loop {
        let (outcome, timer) = tokio::select! {
            ev = events.next() => match ev {
                None => return Err(RunError::StreamsEnded),
                Some(Err(e)) => {
                    tracing::warn!("watch: {e}");
                    continue;
                }
                Some(Ok(ev)) => {
                    let r = ctl.handle(ev).map(|d| d.map(|d| d.len()));
                    // The sync or a pod a request waits for may have come in.
                    if !waiting.0.is_empty() {
                        waiting.retry(ctl);
                    }
                    (r, false)
                }
            },
            Some((req, due, reply)) = rx.recv() => {
                match ctl.cni_request(&req) {
                    CniOutcome::Answer(a) => answer(ctl, reply, a),
                    CniOutcome::Wait(reason) => {
                        waiting.0.push((req, due, reply, reason));
                        ctl.cni.waiting = waiting.0.len();
                    }
                }
                status_due.get_or_insert_with(|| {
                    tokio::time::Instant::now() + Duration::from_millis(200)
                });
                continue;
            }
            _ = tokio::time::sleep_until(status_due.unwrap_or_else(tokio::time::Instant::now)),
                if status_due.is_some() => {
                status_due = None;
                (Ok(None), true)
            }
            // Overdue requests are answered even when no event comes.
            _ = tokio::time::sleep(Duration::from_millis(50)), if !waiting.0.is_empty() => {
                waiting.retry(ctl);
                status_due.get_or_insert_with(|| {
                    tokio::time::Instant::now() + Duration::from_millis(200)
                });
                continue;
            }
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
