//! The controller: kube-rs reflector stores, the reconciler, and an enforcer.
//!
//! Watch events go into the stores (`kube::runtime::reflector::store::Writer`) and, once
//! all three kinds have listed completely, into the reconciler; every resulting diff is
//! handed to the [`Enforcer`] as one transaction. Tests feed the same `handle` with
//! in-memory events, so scenario tests and the binary share this code path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodIP};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kinc_types::policy_gate::{Request, Response};
use kube::runtime::reflector::store::{Store, Writer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::compiled::{Compiled, Diff};
use crate::model::ObjKey;
use crate::reconcile::{Change, Reconciler};

/// Programs compiled models into the data path.
pub trait Enforcer {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Applies one diff as one transaction: all of it or none of it.
    fn apply(&mut self, diff: &Diff) -> Result<(), Self::Error>;
    /// Replaces whatever the data path holds by `model`, as one transaction.
    fn replace_all(&mut self, model: &Compiled) -> Result<(), Self::Error>;
}

/// Enforcer that only records (tests of the reconcile, `--dry-run`).
#[derive(Debug, Default)]
pub struct Recording {
    pub model: Compiled,
    pub transactions: usize,
    /// The last diff applied (tests check what went into one transaction).
    pub last: Diff,
}

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
pub struct Infallible;

impl Enforcer for Recording {
    type Error = Infallible;
    fn apply(&mut self, diff: &Diff) -> Result<(), Infallible> {
        diff.apply_to(&mut self.model);
        self.last = diff.clone();
        self.transactions += 1;
        Ok(())
    }
    fn replace_all(&mut self, model: &Compiled) -> Result<(), Infallible> {
        self.model = model.clone();
        self.transactions += 1;
        Ok(())
    }
}

/// A watch event of one of the three kinds.
// Moved once per event, never stored in bulk: boxing the Pod would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    Pod(watcher::Event<Pod>),
    Namespace(watcher::Event<Namespace>),
    Policy(watcher::Event<NetworkPolicy>),
}

/// What `--status` shows (written as JSON to the status file after every change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// False until Pods, Namespaces and NetworkPolicies have all been listed once.
    pub synced: bool,
    pub policies: usize,
    /// Pods with an address that policies apply to.
    pub pods: usize,
    pub isolated_ingress: usize,
    pub isolated_egress: usize,
    pub elements: usize,
    pub events: u64,
    pub full_resyncs: u64,
    pub transactions: u64,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
    /// The CNI gate (kinc_types::policy_gate): the socket kincnet asks, when listening.
    #[serde(default)]
    pub cni_socket: Option<String>,
    /// Namespaces with policies (elements of `policy_namespaces`): kincnet gates ADD of
    /// their pods on this controller; pods of other namespaces never wait for it.
    #[serde(default)]
    pub gated_namespaces: usize,
    /// CNI requests answered, of them refused, and waiting now (for the sync or the pod).
    #[serde(default)]
    pub cni_requests: u64,
    #[serde(default)]
    pub cni_refused: u64,
    #[serde(default)]
    pub cni_waiting: usize,
    #[serde(default)]
    pub cni_last_refusal: Option<String>,
}

impl Status {
    /// What CNI ADD does now, in one line (the decision in docs/kincnet-policy.md).
    pub fn gate(&self) -> String {
        match (&self.cni_socket, self.synced) {
            (None, _) => "no CNI socket: ADD of a pod in a gated namespace fails (code 11) until one listens".into(),
            (Some(_), false) => "not synced: ADD of every Kubernetes pod waits for the sync, then fails (code 11) and is retried".into(),
            (Some(_), true) => format!(
                "ADD of a pod in one of {} namespace(s) with policies returns after its rules are programmed; other pods never wait",
                self.gated_namespaces
            ),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synced:            {}", self.synced)?;
        writeln!(f, "policies:          {}", self.policies)?;
        writeln!(f, "pods:              {}", self.pods)?;
        writeln!(
            f,
            "isolated pods:     {} ingress, {} egress",
            self.isolated_ingress, self.isolated_egress
        )?;
        writeln!(f, "set elements:      {}", self.elements)?;
        writeln!(
            f,
            "events:            {} ({} full resyncs, {} transactions)",
            self.events, self.full_resyncs, self.transactions
        )?;
        writeln!(
            f,
            "last sync:         {}",
            self.last_sync.as_deref().unwrap_or("never")
        )?;
        if let Some(e) = &self.last_error {
            writeln!(f, "last error:        {e}")?;
        }
        writeln!(
            f,
            "cni socket:        {}",
            self.cni_socket.as_deref().unwrap_or("not listening")
        )?;
        writeln!(f, "cni gate:          {}", self.gate())?;
        writeln!(
            f,
            "cni requests:      {} ({} refused, {} waiting)",
            self.cni_requests, self.cni_refused, self.cni_waiting
        )?;
        if let Some(r) = &self.cni_last_refusal {
            writeln!(f, "last refusal:      {r}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning:           {w}")?;
        }
        Ok(())
    }
}

pub struct Controller<E: Enforcer> {
    pods: Writer<Pod>,
    namespaces: Writer<Namespace>,
    policies: Writer<NetworkPolicy>,
    /// Initial list complete, per kind: pods, namespaces, policies.
    listed: [bool; 3],
    /// The data path may differ from the reconciler's model: rewrite it all next time.
    dirty: bool,
    reconciler: Reconciler,
    enforcer: E,
    transactions: u64,
    last_error: Option<String>,
    /// Pod addresses CNI told us about that the API may not show yet.
    overrides: BTreeMap<ObjKey, Override>,
    pub cni: CniStats,
}

/// What CNI said about a pod's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Override {
    /// ADD gave the pod this address; kubelet has not written it to the API yet.
    Announced(Ipv4Addr),
    /// The sandbox with this address is gone (DEL); the API may still show it.
    Released(Ipv4Addr),
}

/// CNI request counters for the status.
#[derive(Debug, Clone, Default)]
pub struct CniStats {
    pub socket: Option<String>,
    pub requests: u64,
    pub refused: u64,
    pub waiting: usize,
    pub last_refusal: Option<String>,
}

/// What to do with a CNI request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniOutcome {
    Answer(Response),
    /// Not yet possible (not synced, pod not in the cache): ask again after the next
    /// event, until the request's deadline; then answer `Refused` with this reason.
    Wait(String),
}

/// The address the API shows for a pod.
fn api_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let s = pod.status.as_ref()?;
    s.pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(s.pod_ip.as_deref())
        .find_map(|a| a.parse().ok())
}

fn set_ip(pod: &mut Pod, ip: Option<Ipv4Addr>) {
    let s = pod.status.get_or_insert_with(Default::default);
    s.pod_ip = ip.map(|i| i.to_string());
    s.pod_ips = ip.map(|i| vec![PodIP { ip: i.to_string() }]);
}

fn key_of(pod: &Pod) -> Option<ObjKey> {
    Some(ObjKey::new(
        pod.metadata.namespace.clone()?,
        pod.metadata.name.clone()?,
    ))
}

impl<E: Enforcer> Controller<E> {
    pub fn new(enforcer: E) -> Self {
        Controller {
            pods: Writer::default(),
            namespaces: Writer::default(),
            policies: Writer::default(),
            listed: [false; 3],
            // After a restart the kernel holds whatever the last run left: rewrite it.
            dirty: true,
            reconciler: Reconciler::new(),
            enforcer,
            transactions: 0,
            last_error: None,
            overrides: BTreeMap::new(),
            cni: CniStats::default(),
        }
    }

    /// The pod as policies must see it: with the address CNI announced, or without the
    /// one CNI released.
    fn overridden(&self, pod: &Pod) -> Pod {
        let mut p = pod.clone();
        match key_of(pod).and_then(|k| self.overrides.get(&k)) {
            Some(Override::Announced(ip)) => set_ip(&mut p, Some(*ip)),
            Some(Override::Released(ip)) if api_ip(pod) == Some(*ip) => set_ip(&mut p, None),
            _ => {}
        }
        p
    }

    /// Drops an override the API has caught up with.
    fn settle(&mut self, pod: &Pod) {
        let Some(k) = key_of(pod) else { return };
        let shown = api_ip(pod);
        match self.overrides.get(&k) {
            Some(Override::Announced(ip)) if shown == Some(*ip) => {}
            Some(Override::Released(ip)) if shown != Some(*ip) => {}
            _ => return,
        }
        self.overrides.remove(&k);
    }

    /// Handles one CNI request (see `kinc_types::policy_gate`).
    pub fn cni_request(&mut self, req: &Request) -> CniOutcome {
        match req {
            Request::Program {
                namespace,
                name,
                ip,
                ..
            } => self.cni_program(namespace, name, *ip),
            Request::Release { ip, .. } => self.cni_release(*ip),
        }
    }

    fn not_synced(&self) -> String {
        let l = |b: bool| if b { "listed" } else { "not listed" };
        format!(
            "not synced with the API server yet (pods {}, namespaces {}, networkpolicies {})",
            l(self.listed[0]),
            l(self.listed[1]),
            l(self.listed[2])
        )
    }

    fn refused(&mut self, reason: String) -> CniOutcome {
        CniOutcome::Answer(Response::Refused { reason })
    }

    fn cni_program(&mut self, ns: &str, name: &str, ip: Ipv4Addr) -> CniOutcome {
        if !self.synced() {
            return CniOutcome::Wait(self.not_synced());
        }
        let key = ObjKey::new(ns, name);
        let store = self.pods.as_reader();
        let Some(pod) = store.get(&ObjectRef::new(name).within(ns)) else {
            return CniOutcome::Wait(format!("pod {key} is not in the watch cache (yet)"));
        };
        // CNI gave this address to this sandbox: a pod the API still shows with it
        // (its sandbox is gone) loses it first. The address is pending in the kernel
        // throughout, so the step between the two transactions shows nothing.
        let others: Vec<ObjKey> = self
            .reconciler
            .cluster()
            .pods()
            .filter(|p| p.ip == Some(ip) && p.key != key)
            .map(|p| p.key.clone())
            .collect();
        for k in others {
            self.overrides.insert(k.clone(), Override::Released(ip));
            if let Some(other) = store.get(&ObjectRef::new(&k.name).within(&k.ns)) {
                let d = self.reconciler.pod(Change::Apply(self.overridden(&other)));
                if let Err(e) = self.program(d) {
                    return self.refused(format!("nf_tables: {e}"));
                }
            }
        }
        self.overrides.insert(key, Override::Announced(ip));
        let mut d = self.reconciler.pod(Change::Apply(self.overridden(&pod)));
        let unpend = Diff {
            unpend: vec![ip],
            ..Diff::default()
        };
        let done = if self.dirty {
            // Rewrite whole first, then let the pod's packets through.
            self.resync()
                .and_then(|_| self.enforcer.apply(&unpend))
                .map(drop)
        } else {
            d.unpend.push(ip);
            self.program(d).map(drop)
        };
        if let Err(e) = done {
            self.dirty = true;
            return self.refused(format!("nf_tables: {e}"));
        }
        let m = self.reconciler.programmed();
        CniOutcome::Answer(Response::Programmed {
            isolated_ingress: m.ingress.contains_key(&ip),
            isolated_egress: m.egress.contains_key(&ip),
        })
    }

    fn cni_release(&mut self, ip: Ipv4Addr) -> CniOutcome {
        if !self.synced() {
            // kincnet then deletes the address's elements itself; the first sync
            // rewrites everything anyway.
            let why = self.not_synced();
            return self.refused(why);
        }
        for o in self.overrides.values_mut() {
            if *o == Override::Announced(ip) {
                *o = Override::Released(ip);
            }
        }
        let holders: Vec<ObjKey> = self
            .reconciler
            .cluster()
            .pods()
            .filter(|p| p.ip == Some(ip))
            .map(|p| p.key.clone())
            .collect();
        let store = self.pods.as_reader();
        for k in holders {
            self.overrides.insert(k.clone(), Override::Released(ip));
            if let Some(p) = store.get(&ObjectRef::new(&k.name).within(&k.ns)) {
                let d = self.reconciler.pod(Change::Apply(self.overridden(&p)));
                if let Err(e) = self.program(d) {
                    return self.refused(format!("nf_tables: {e}"));
                }
            }
        }
        if self.dirty {
            if let Err(e) = self.resync() {
                return self.refused(format!("nf_tables: {e}"));
            }
        }
        CniOutcome::Answer(Response::Released)
    }

    pub fn stores(&self) -> (Store<Pod>, Store<Namespace>, Store<NetworkPolicy>) {
        (
            self.pods.as_reader(),
            self.namespaces.as_reader(),
            self.policies.as_reader(),
        )
    }

    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    pub fn enforcer(&self) -> &E {
        &self.enforcer
    }

    pub fn synced(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// Feeds one watch event. Returns the diff applied, if any.
    pub fn handle(&mut self, ev: Event) -> Result<Option<Diff>, E::Error> {
        // Which kind finished its (re)list, and the incremental change otherwise.
        let (listed, diff) = match ev {
            Event::Pod(e) => {
                self.pods.apply_watcher_event(&e);
                let e = match e {
                    watcher::Event::Apply(p) => {
                        self.settle(&p);
                        watcher::Event::Apply(self.overridden(&p))
                    }
                    watcher::Event::Delete(p) => {
                        if let Some(k) = key_of(&p) {
                            self.overrides.remove(&k);
                        }
                        watcher::Event::Delete(p)
                    }
                    other => other,
                };
                self.step(0, e, |r, c| r.pod(c))
            }
            Event::Namespace(e) => {
                self.namespaces.apply_watcher_event(&e);
                self.step(1, e, |r, c| r.namespace(c))
            }
            Event::Policy(e) => {
                self.policies.apply_watcher_event(&e);
                self.step(2, e, |r, c| r.policy(c))
            }
        };
        if listed {
            return self.resync().map(Some);
        }
        match diff {
            Some(d) if self.synced() => self.program(d).map(Some),
            _ => Ok(None),
        }
    }

    fn step<K: Clone>(
        &mut self,
        kind: usize,
        e: watcher::Event<K>,
        f: impl FnOnce(&mut Reconciler, Change<K>) -> Diff,
    ) -> (bool, Option<Diff>) {
        match e {
            watcher::Event::InitDone => {
                self.listed[kind] = true;
                (self.synced(), None)
            }
            // The store buffers a relist; the resync at InitDone takes it all in.
            watcher::Event::Init | watcher::Event::InitApply(_) => (false, None),
            _ if !self.synced() => (false, None),
            watcher::Event::Apply(o) => (false, Some(f(&mut self.reconciler, Change::Apply(o)))),
            watcher::Event::Delete(o) => (false, Some(f(&mut self.reconciler, Change::Delete(o)))),
        }
    }

    fn program(&mut self, d: Diff) -> Result<Diff, E::Error> {
        if self.dirty {
            return self.resync();
        }
        if d.is_empty() {
            return Ok(d);
        }
        match self.enforcer.apply(&d) {
            Ok(()) => {
                self.transactions += 1;
                self.last_error = None;
                Ok(d)
            }
            Err(e) => {
                self.dirty = true;
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Recomputes everything from the stores. After a failure (or at start) the data path
    /// is rewritten whole; otherwise only the diff is applied.
    pub fn resync(&mut self) -> Result<Diff, E::Error> {
        if !self.synced() {
            return Ok(Diff::default());
        }
        let (nss, pods, pols) = (
            self.namespaces.as_reader().state(),
            self.pods.as_reader().state(),
            self.policies.as_reader().state(),
        );
        // Overrides of pods that are gone go with them.
        let live: std::collections::BTreeSet<ObjKey> =
            pods.iter().filter_map(|p| key_of(p)).collect();
        self.overrides.retain(|k, _| live.contains(k));
        for p in pods.iter() {
            self.settle(p);
        }
        let pods: Vec<Pod> = pods.iter().map(|p| self.overridden(p)).collect();
        let d = self.reconciler.resync(
            nss.iter().map(|a| a.as_ref()),
            pods.iter(),
            pols.iter().map(|a| a.as_ref()),
        );
        let res = if self.dirty {
            self.enforcer.replace_all(self.reconciler.programmed())
        } else if d.is_empty() {
            return Ok(d);
        } else {
            self.enforcer.apply(&d)
        };
        match res {
            Ok(()) => {
                self.transactions += 1;
                self.dirty = false;
                self.last_error = None;
                Ok(d)
            }
            Err(e) => {
                self.dirty = true;
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    pub fn status(&self) -> Status {
        let r = &self.reconciler;
        let m = r.programmed();
        Status {
            synced: self.synced(),
            policies: r.cluster().policies().count(),
            pods: r.cluster().pods().filter(|p| p.ip.is_some()).count(),
            isolated_ingress: m.ingress.len(),
            isolated_egress: m.egress.len(),
            elements: m.element_count(),
            events: r.stats.events,
            full_resyncs: r.stats.full_resyncs,
            transactions: self.transactions,
            last_sync: r
                .last_sync
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            last_error: self.last_error.clone(),
            warnings: r.warnings().iter().map(ToString::to_string).collect(),
            cni_socket: self.cni.socket.clone(),
            gated_namespaces: m.namespaces.len(),
            cni_requests: self.cni.requests,
            cni_refused: self.cni.refused,
            cni_waiting: self.cni.waiting,
            cni_last_refusal: self.cni.last_refusal.clone(),
        }
    }
}
