//! The gate between kincnet (the CNI plugin) and kincnet-policy (the NetworkPolicy
//! controller): what makes a pod's policy rules be in the kernel before CNI ADD returns.
//!
//! - kincnet-policy keeps the nf_tables set `policy_namespaces` in kincnet's table: the
//!   [`namespace_key`] of every namespace with at least one NetworkPolicy, plus
//!   [`SYNCED_KEY`] once it has listed the API completely.
//! - kincnet's ADD reads that set. A pod whose namespace is in it (or any pod while the
//!   set exists without [`SYNCED_KEY`]) is put into kincnet's `pod_pending` set (every
//!   forwarded packet from or to it dropped) before its interface is up, and kincnet
//!   sends [`Request::Program`] to [`SOCKET`]. The controller programs the pod's rules
//!   and deletes the pending element in one transaction, then answers
//!   [`Response::Programmed`]. Any other outcome fails ADD.
//! - DEL sends [`Request::Release`] before the address is released, so a reused address
//!   never inherits another pod's verdicts.
//!
//! Wire: one JSON object per line each way, one request per connection.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The controller's Unix socket (its systemd unit's `RuntimeDirectory=kincnet-policy`).
pub const SOCKET: &str = "/run/kincnet-policy/cni.sock";

/// How long kincnet waits for an answer to [`Request::Program`] unless configured.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// How long kincnet waits for an answer to [`Request::Release`] before it removes the
/// address's policy elements itself.
pub const RELEASE_TIMEOUT_MS: u64 = 2_000;

/// Largest request or response line, in bytes.
pub const MAX_MESSAGE: usize = 8 * 1024;

/// The element of `policy_namespaces` that says the controller has synced once.
pub const SYNCED_KEY: u32 = 0;

/// The key of namespace `ns` in `policy_namespaces`: FNV-1a (32 bit), never
/// [`SYNCED_KEY`]. Two namespaces with the same key only make one of them gated when it
/// need not be (the set is a union of keys), never the reverse.
pub fn namespace_key(ns: &str) -> u32 {
    let h = ns.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    if h == SYNCED_KEY {
        1
    } else {
        h
    }
}

/// kincnet to kincnet-policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Program pod `namespace/name`, whose sandbox has `ip` (in `pod_pending` now), then
    /// delete `ip` from `pod_pending` in the same transaction. Answer within `timeout_ms`.
    #[serde(rename_all = "camelCase")]
    Program {
        namespace: String,
        name: String,
        ip: Ipv4Addr,
        container_id: String,
        timeout_ms: u64,
    },
    /// A sandbox released `ip` (DEL, a failed ADD): remove every element that names
    /// `ip` before answering, whichever pod the API still says has it.
    #[serde(rename_all = "camelCase")]
    Release { ip: Ipv4Addr, container_id: String },
}

/// kincnet-policy to kincnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase", deny_unknown_fields)]
pub enum Response {
    /// The pod's rules are in the kernel and its pending element is gone.
    #[serde(rename_all = "camelCase")]
    Programmed {
        isolated_ingress: bool,
        isolated_egress: bool,
    },
    /// Every element naming the address is gone.
    Released,
    /// Not done; `reason` says why (not synced, pod unknown, nf_tables failed).
    Refused { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_keys_are_stable_and_never_the_synced_key() {
        assert_eq!(namespace_key(""), 0x811c_9dc5);
        assert_eq!(namespace_key("default"), namespace_key("default"));
        assert_ne!(namespace_key("default"), namespace_key("kube-system"));
        for i in 0..20_000 {
            assert_ne!(namespace_key(&format!("ns{i}")), SYNCED_KEY);
        }
    }

    #[test]
    fn wire_format() {
        let r = Request::Program {
            namespace: "db".into(),
            name: "pg-0".into(),
            ip: Ipv4Addr::new(10, 244, 0, 7),
            container_id: "c1".into(),
            timeout_ms: 500,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"program","namespace":"db","name":"pg-0","ip":"10.244.0.7","containerId":"c1","timeoutMs":500}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let a = Response::Programmed {
            isolated_ingress: true,
            isolated_egress: false,
        };
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(
            s,
            r#"{"result":"programmed","isolatedIngress":true,"isolatedEgress":false}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), a);
        assert!(serde_json::from_str::<Request>(r#"{"op":"frob"}"#).is_err());
        assert!(serde_json::from_str::<Response>(r#"{"result":"programmed"}"#).is_err());
    }
}
