//! Everything that crosses a process or machine boundary in kinc is defined here, once:
//! cluster names and the resource names derived from them, the labels kinc owns,
//! the cluster config the host renders and the node reads, and the bootstrap status
//! file the node writes and the host reads.

pub mod config;
pub mod excerpt;
pub mod fsutil;
pub mod labels;
pub mod name;
pub mod node;
pub mod policy_gate;
pub mod status;
pub mod versions;

pub use config::ClusterConfig;
pub use name::ClusterName;
pub use status::{BootstrapStatus, StepState, StepStatus};
