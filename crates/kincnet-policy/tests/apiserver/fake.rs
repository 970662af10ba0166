//! A small fake of the Kubernetes API server, over plain HTTP/1.1 on a std `TcpListener`:
//! the list and watch endpoints of Pods, Namespaces and NetworkPolicies as the real API
//! serves them (a global resourceVersion counter like etcd's, `?watch=true` as a chunked
//! stream of JSON events, replay from a resourceVersion, `410 Expired` for a compacted
//! one), bearer-token authentication, and authorization from the ClusterRole's rules: a
//! request the role does not allow gets 403 and is recorded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Namespace, Kind::Pod, Kind::NetworkPolicy];

    fn group_resource(self) -> (&'static str, &'static str) {
        match self {
            Kind::Namespace => ("", "namespaces"),
            Kind::Pod => ("", "pods"),
            Kind::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// HTTP status; a watch that ended in an ERROR event records that event's code.
    pub status: u16,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, kind, event type, object) of every change not yet compacted.
    history: Vec<(u64, Kind, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    /// Bumped to end every open watch.
    epoch: u64,
    open_watches: usize,
    requests: Vec<Request>,
}

/// Changes made through [`FakeApi::edit`], all at one moment.
pub struct Editor<'a>(&'a mut State);

impl Editor<'_> {
    /// Creates or replaces an object (ADDED or MODIFIED); the server sets its
    /// resourceVersion and uid, and kind/apiVersion as a watch event carries them.
    pub fn apply(&mut self, kind: Kind, mut obj: Value) {
        let s = &mut *self.0;
        s.rv += 1;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        obj["kind"] = kind.kind().into();
        obj["apiVersion"] = kind.api_version().into();
        obj["metadata"]["resourceVersion"] = s.rv.to_string().into();
        obj["metadata"]["uid"] = format!("uid-{ns}-{name}").into();
        let key = (kind, ns, name);
        let ty = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.history.push((s.rv, kind, ty, obj.clone()));
        s.objects.insert(key, obj);
    }

    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) {
        let s = &mut *self.0;
        let mut obj = s
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind:?} {ns}/{name} to delete"));
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = s.rv.to_string().into();
        s.history.push((s.rv, kind, "DELETED", obj));
    }
}

#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<(Mutex<State>, Condvar)>,
    token: Arc<String>,
    rules: Arc<Vec<PolicyRule>>,
}

impl FakeApi {
    /// Serves on `listener` (threads live until the test process ends).
    pub fn start(listener: TcpListener, token: &str, rules: Vec<PolicyRule>) -> Self {
        let api = FakeApi {
            shared: Arc::new((Mutex::new(State::default()), Condvar::new())),
            token: Arc::new(token.to_string()),
            rules: Arc::new(rules),
        };
        let a = api.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let a = a.clone();
                std::thread::spawn(move || a.serve(conn));
            }
        });
        api
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f`'s changes at once and wakes the watches.
    pub fn edit(&self, f: impl FnOnce(&mut Editor)) {
        let mut s = self.lock();
        f(&mut Editor(&mut s));
        self.shared.1.notify_all();
    }

    /// Ends every open watch (as an API server restart or a load balancer would); the
    /// history stays, so a client resumes from its resourceVersion.
    pub fn drop_watches(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        self.shared.1.notify_all();
    }

    /// Ends every open watch, applies `f`, and compacts the history past it (as etcd
    /// compaction does): a client can only catch up by listing again.
    pub fn drop_watches_and_compact(&self, f: impl FnOnce(&mut Editor)) {
        let mut s = self.lock();
        s.epoch += 1;
        f(&mut Editor(&mut s));
        s.compacted = s.rv;
        s.history.clear();
        self.shared.1.notify_all();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn open_watches(&self) -> usize {
        self.lock().open_watches
    }

    /// How many requests with `verb` on `resource` were answered with `status`.
    pub fn count(&self, verb: &str, resource: &str, status: u16) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource && r.status == status)
            .count()
    }

    fn allowed(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    fn record(&self, r: Request) {
        self.lock().requests.push(r);
    }

    fn serve(&self, conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_string());
                }
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let watch = matches!(q.get("watch"), Some(&"true") | Some(&"1"));
        let (group, resource, named) = parse_path(path);
        let verb = match (method.as_str(), named, watch) {
            ("GET", true, _) => "get",
            ("GET", false, true) => "watch",
            ("GET", false, false) => "list",
            ("POST", ..) => "create",
            ("PUT", ..) => "update",
            ("PATCH", ..) => "patch",
            ("DELETE", ..) => "delete",
            _ => "unknown",
        };
        let mut req = Request {
            path: target.clone(),
            group: group.clone(),
            resource: resource.clone(),
            verb: verb.to_string(),
            status: 200,
        };
        let mut out = conn;
        if auth.as_deref() != Some(&format!("Bearer {}", self.token)) {
            req.status = 401;
            self.record(req);
            return status_response(&mut out, 401, "Unauthorized", "Unauthorized");
        }
        if !self.allowed(&group, &resource, verb) {
            req.status = 403;
            self.record(req);
            let msg = format!("{resource}.{group} is forbidden: User \"system:serviceaccount:kube-system:kincnet-policy\" cannot {verb} resource \"{resource}\"");
            return status_response(&mut out, 403, "Forbidden", &msg);
        }
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.group_resource() == (group.as_str(), resource.as_str()));
        let (Some(kind), false) = (kind, named) else {
            req.status = 404;
            self.record(req);
            return status_response(
                &mut out,
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        if watch {
            let from = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            self.watch(out, req, kind, from);
        } else {
            self.record(req);
            self.list(out, kind);
        }
    }

    fn list(&self, mut out: TcpStream, kind: Kind) {
        let body = {
            let s = self.lock();
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((k, ..), _)| *k == kind)
                .map(|(_, o)| {
                    // List items carry no kind/apiVersion, as the real API sends them.
                    let mut o = o.clone();
                    let m = o.as_object_mut().expect("object");
                    m.remove("kind");
                    m.remove("apiVersion");
                    o
                })
                .collect();
            json!({
                "kind": format!("{}List", kind.kind()),
                "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": s.rv.to_string()},
                "items": items,
            })
            .to_string()
        };
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = out.shutdown(Shutdown::Both);
    }

    fn watch(&self, mut out: TcpStream, mut req: Request, kind: Kind, from: u64) {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut s = self.lock();
        if from < s.compacted {
            req.status = 410;
            s.requests.push(req);
            drop(s);
            let ev = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"),
                "reason": "Expired", "code": 410}});
            let _ = chunk(&mut out, &ev);
            let _ = out.write_all(b"0\r\n\r\n");
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        s.requests.push(req);
        s.open_watches += 1;
        let epoch = s.epoch;
        let mut last = from;
        loop {
            let events: Vec<Value> = s
                .history
                .iter()
                .filter(|(rv, k, ..)| *k == kind && *rv > last)
                .map(|(_, _, ty, o)| json!({"type": ty, "object": o}))
                .collect();
            last = last.max(s.rv);
            if s.epoch != epoch {
                break;
            }
            if !events.is_empty() {
                drop(s);
                if events.iter().any(|e| chunk(&mut out, e).is_err()) {
                    s = self.lock();
                    break;
                }
                s = self.lock();
                continue;
            }
            s = self
                .shared
                .1
                .wait_timeout(s, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.open_watches -= 1;
        drop(s);
        // A clean end of the chunked body, like a watch reaching timeoutSeconds.
        let _ = out.write_all(b"0\r\n\r\n");
        let _ = out.shutdown(Shutdown::Both);
    }
}

/// (group, resource, names one object) of an API path.
fn parse_path(path: &str) -> (String, String, bool) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => &[],
    };
    let group = match segs.as_slice() {
        ["apis", g, ..] => g.to_string(),
        _ => String::new(),
    };
    let rest = match rest {
        // Namespaced paths; "namespaces/<ns>" alone is a get of a Namespace.
        ["namespaces", _ns, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    match rest {
        [res] => (group, res.to_string(), false),
        [res, _name, ..] => (group, res.to_string(), true),
        _ => (group, String::new(), false),
    }
}

fn chunk(out: &mut TcpStream, ev: &Value) -> std::io::Result<()> {
    let mut line = ev.to_string();
    line.push('\n');
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

fn status_response(out: &mut TcpStream, code: u16, reason: &str, msg: &str) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": msg, "reason": reason, "code": code})
    .to_string();
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = out.shutdown(Shutdown::Both);
}
