//! kincnet: a CNI 1.1 bridge plugin with built-in IPAM and an nf_tables firewall.
//!
//! The protocol lives in [`config`], [`result`], [`version`], [`env`] and [`error`];
//! the kernel work in [`netlink`] and [`netns`]; allocations in [`ipam`]; the
//! commands in [`plugin`].

pub mod config;
pub mod error;
pub mod result;
pub mod version;
