//! kinc-init: the in-node bootstrap of a kinc cluster.
//!
//! [`bootstrap::Bootstrap`] runs the named steps and records each in the status file
//! (`kinc_types::BootstrapStatus`); [`kubeadm`] and [`cni`] render the configs as typed
//! structs; every external program goes through [`runner::Runner`]; [`policy`] makes
//! the kincnet-policy controller's kubeconfig.

pub mod bootstrap;
pub mod cni;
pub mod fsx;
pub mod kubeadm;
pub mod netinfo;
pub mod paths;
pub mod policy;
pub mod runner;
pub mod state;

pub use bootstrap::{Bootstrap, InitError, Timeouts};
pub use paths::NodePaths;
