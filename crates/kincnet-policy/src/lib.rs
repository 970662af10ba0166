//! NetworkPolicy enforcement for kinc: `networking.k8s.io/v1` NetworkPolicies compiled
//! into nf_tables set elements in kincnet's table.
//!
//! - [`model`]: Pods, Namespaces and NetworkPolicies parsed into what enforcement needs.
//! - [`compile`]: the pure compiler, per pod and direction, into canonical allow boxes.
//! - [`compiled`]: the compiled model (nf_tables elements) and the diff between two.
//! - [`reconcile`]: event in, element diff out, touching only the affected pods.
//! - [`controller`]: reflector stores + reconciler + an [`controller::Enforcer`].
//! - [`runner`]: the loop over kube-rs watchers, the resync timer and the status file.
//! - [`nft`]: the enforcer: sets, chains and element transactions in kincnet's table.
//! - [`testkit`]: topology, upstream conformance scenarios and reachability matrices.

pub mod boxes;
pub mod compile;
pub mod compiled;
pub mod controller;
pub mod model;
pub mod nft;
pub mod reconcile;
pub mod runner;
pub mod selector;
pub mod testkit;

pub use compile::{Cluster, Warning};
pub use compiled::{
    diff, AllowElem, Classes, Compiled, Diff, DirDiff, DirRules, PodDir, PodRules, Shape,
};
pub use controller::{Controller, Enforcer, Event, Recording, Status};
pub use model::{Direction, ObjKey, PodInfo, PolicyInfo};
pub use reconcile::{Change, Reconciler};

#[cfg(test)]
mod tests;
