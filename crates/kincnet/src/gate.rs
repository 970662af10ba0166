//! NetworkPolicy in force before a pod's first packet (issue 18): the plugin's side of
//! the protocol in `kinc_types::policy_gate`.
//!
//! ADD reads kincnet-policy's `policy_namespaces` set (one netlink dump). A pod is gated
//! when the controller has run in this network namespace (the set exists) and either
//! has never synced (no `SYNCED_KEY`) or lists the pod's namespace. A gated pod's
//! address goes into `pod_pending` before its interface is up, and ADD returns only
//! after the controller answered that the pod's rules are in the kernel (it deletes the
//! pending element in that same transaction). Every other outcome is a CNI error (code
//! 11, "try again later") and ADD undoes itself: a gated pod never runs unpoliced. A pod
//! in a namespace without policies costs the dump and nothing else: no socket, so it
//! never waits for or depends on the controller.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kinc_types::policy_gate::{namespace_key, Request, Response, MAX_MESSAGE, SYNCED_KEY};

use crate::env::PodRef;
use crate::error::{CniError, Code};

/// Why ADD waits for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not a pod policies can select, or no controller runs here: no wait.
    Open,
    /// The controller has started but never listed the API: it cannot know yet.
    NotSynced,
    /// The pod's namespace has at least one NetworkPolicy.
    Namespace,
}

/// The decision, from the pod (CNI_ARGS) and the controller's namespace keys.
pub fn decide(pod: Option<&PodRef>, namespaces: Option<&BTreeSet<u32>>) -> Gate {
    let (Some(pod), Some(keys)) = (pod, namespaces) else {
        return Gate::Open;
    };
    if !keys.contains(&SYNCED_KEY) {
        Gate::NotSynced
    } else if keys.contains(&namespace_key(&pod.namespace)) {
        Gate::Namespace
    } else {
        Gate::Open
    }
}

/// One request, one answer, over the controller's socket, all within `timeout`.
pub fn ask(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} ms", timeout.as_millis()))
    };
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let mut line = serde_json::to_vec(req).expect("request serializes");
    line.push(b'\n');
    s.set_write_timeout(Some(left()?))
        .and_then(|()| s.write_all(&line))
        .map_err(|e| format!("writing to {}: {e}", socket.display()))?;
    let mut r = BufReader::new(s.take(MAX_MESSAGE as u64 + 1));
    let mut answer = Vec::new();
    loop {
        r.get_ref()
            .get_ref()
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match r.read_until(b'\n', &mut answer) {
            Ok(0) => break,
            Ok(_) if answer.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {} ms", timeout.as_millis()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from {}: {e}", socket.display())),
        }
    }
    if answer.is_empty() {
        return Err(format!(
            "{} closed the connection without an answer",
            socket.display()
        ));
    }
    serde_json::from_slice(&answer).map_err(|e| format!("undecodable answer: {e}"))
}

/// Asks the controller to program `pod` at `ip`; `Ok` only for `Programmed`.
pub fn program(
    socket: &Path,
    timeout: Duration,
    gate: Gate,
    pod: &PodRef,
    ip: Ipv4Addr,
    container_id: &str,
) -> Result<(), CniError> {
    let req = Request::Program {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        ip,
        container_id: container_id.to_string(),
        timeout_ms: timeout.as_millis() as u64,
    };
    let why = match ask(socket, &req, timeout) {
        Ok(Response::Programmed { .. }) => return Ok(()),
        Ok(Response::Refused { reason }) => format!("kincnet-policy refused: {reason}"),
        Ok(other) => format!("kincnet-policy answered {other:?} to a program request"),
        Err(e) => format!("kincnet-policy: {e}"),
    };
    let because = match gate {
        Gate::NotSynced => "kincnet-policy has not synced with the API server yet",
        _ => "its namespace has NetworkPolicies",
    };
    Err(CniError::new(
        Code::TryAgainLater,
        format!(
            "pod {}/{} ({ip}): {because}, and its rules are not confirmed in the kernel: {why}; \
             the pod is not started unpoliced (see `kincnet-policy --status`; the runtime retries)",
            pod.namespace, pod.name
        ),
    ))
}

/// Tells the controller `ip` is released; `true` when it confirmed.
pub fn release(socket: &Path, ip: Ipv4Addr, container_id: &str, timeout: Duration) -> bool {
    let req = Request::Release {
        ip,
        container_id: container_id.to_string(),
    };
    matches!(ask(socket, &req, timeout), Ok(Response::Released))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn pod(ns: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: "p".into(),
        }
    }

    #[test]
    fn decision() {
        let synced_db: BTreeSet<u32> = [SYNCED_KEY, namespace_key("db")].into();
        let unsynced: BTreeSet<u32> = [namespace_key("db")].into();
        assert_eq!(decide(None, Some(&synced_db)), Gate::Open);
        assert_eq!(decide(Some(&pod("db")), None), Gate::Open);
        assert_eq!(decide(Some(&pod("db")), Some(&synced_db)), Gate::Namespace);
        assert_eq!(decide(Some(&pod("web")), Some(&synced_db)), Gate::Open);
        assert_eq!(decide(Some(&pod("web")), Some(&unsynced)), Gate::NotSynced);
        assert_eq!(
            decide(Some(&pod("web")), Some(&BTreeSet::new())),
            Gate::NotSynced
        );
    }

    /// A one-shot server that reads a line and answers `answer` after `delay`.
    fn serve(answer: &'static str, delay: Duration) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let _: Request = serde_json::from_str(&line).unwrap();
            std::thread::sleep(delay);
            let _ = (&s).write_all(answer.as_bytes());
        });
        (dir, path)
    }

    #[test]
    fn program_needs_a_programmed_answer_in_time() {
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let t = Duration::from_millis(500);
        let (_d, p) = serve(
            "{\"result\":\"programmed\",\"isolatedIngress\":true,\"isolatedEgress\":false}\n",
            Duration::ZERO,
        );
        program(&p, t, Gate::Namespace, &pod("db"), ip, "c").unwrap();

        let (_d, p) = serve(
            "{\"result\":\"refused\",\"reason\":\"not synced\"}\n",
            Duration::ZERO,
        );
        let e = program(&p, t, Gate::NotSynced, &pod("db"), ip, "c").unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater);
        assert!(
            e.msg.contains("not synced") && e.msg.contains("db/p"),
            "{}",
            e.msg
        );

        let (_d, p) = serve("{\"result\":\"released\"}\n", Duration::from_millis(900));
        let e = program(&p, t, Gate::Namespace, &pod("db"), ip, "c").unwrap_err();
        assert!(e.msg.contains("no answer within 500 ms"), "{}", e.msg);

        let dir = tempfile::tempdir().unwrap();
        let e = program(
            &dir.path().join("none"),
            t,
            Gate::Namespace,
            &pod("db"),
            ip,
            "c",
        )
        .unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater);
        assert!(
            e.msg.contains("connecting to") && e.msg.contains("NetworkPolicies"),
            "{}",
            e.msg
        );
    }
}
