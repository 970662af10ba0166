//! The controller: kube-rs reflector stores, the reconciler, and an enforcer.
//!
//! Watch events go into the stores (`kube::runtime::reflector::store::Writer`) and, once
//! all three kinds have listed completely, into the reconciler; every resulting diff is
//! handed to the [`Enforcer`] as one transaction. Tests feed the same `handle` with
//! in-memory events, so scenario tests and the binary share this code path.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::store::{Store, Writer};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::compiled::{Compiled, Diff};
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
}

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
pub struct Infallible;

impl Enforcer for Recording {
    type Error = Infallible;
    fn apply(&mut self, diff: &Diff) -> Result<(), Infallible> {
        diff.apply_to(&mut self.model);
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
        }
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
        let d = self.reconciler.resync(
            nss.iter().map(|a| a.as_ref()),
            pods.iter().map(|a| a.as_ref()),
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
        }
    }
}
