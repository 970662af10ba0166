//! kinc, the host side: creates, lists and deletes single-container Kubernetes clusters
//! with Podman. The `kinc` binary is a thin clap layer over [`cluster::Kinc`].

pub mod alloc;
pub mod cluster;
pub mod create;
pub mod doctor;
pub mod excerpt;
pub mod host;
pub mod images;
pub mod kubeconfig;
pub mod livetest;
pub mod node;
pub mod podman;
pub mod progress;
pub mod quadlet;
pub mod routes;
pub mod runner;
pub mod signal;
pub mod state;

pub use cluster::Kinc;
