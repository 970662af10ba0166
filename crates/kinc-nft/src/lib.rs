//! nf_tables for kinc, over netlink, without exec'ing `nft` and without libnftnl.
//!
//! - [`nl`]: the typed netlink layer (tables, chains, sets/maps, elements, rules and their
//!   expressions), applied as single transactions. A NetworkPolicy controller can build on
//!   it in the same table.
//! - [`kincnet`] (re-exported here): the pod network's firewall: subnet masquerade and
//!   hostPort DNAT kept as map elements.

pub mod kincnet;
pub mod nl;

pub use kincnet::{FirewallError, NetworkFirewall, PortMapping, Proto};
