//! Shared by the rule tests: the fixtures, a kinc-like caller, and a JSON diff.
#![allow(dead_code)]

use std::collections::BTreeSet;

use crun_wrapper::caller::{rlimit_key, RLIMITS};
use crun_wrapper::{Caller, IdMap};
use oci_spec::runtime::PosixRlimitType;
use serde_json::Value;

pub const PAUSE: &str = include_str!("../fixtures/pause.json");
pub const APP: &str = include_str!("../fixtures/app.json");

pub fn load(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// The 18 capabilities of the kinc node container.
pub const NODE_CAPS: [&str; 18] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_ADMIN",
    "CAP_SYS_RESOURCE",
    "CAP_SETFCAP",
    "CAP_AUDIT_WRITE",
];

/// crun's caller inside a kinc node: uid 0 of a podman-style user namespace
/// (65537 ids), 18 caps, oom_score_adj raised to 200, nofile 20000, nproc 96365.
pub fn kinc_caller() -> Caller {
    let mut rlimit_hard: std::collections::BTreeMap<_, _> =
        (0..RLIMITS.len()).map(|i| (i, u64::MAX)).collect();
    rlimit_hard.insert(rlimit_key(PosixRlimitType::RlimitNofile), 20000);
    rlimit_hard.insert(rlimit_key(PosixRlimitType::RlimitNproc), 96365);
    Caller {
        oom_score_adj: 200,
        grantable_caps: NODE_CAPS.iter().map(|c| c.parse().unwrap()).collect(),
        sys_resource_in_init_ns: false,
        rlimit_hard,
        uid_map: IdMap::parse("0 1001 1\n1 100000 65536\n"),
        gid_map: IdMap::parse("0 1001 1\n1 100000 65536\n"),
    }
}

/// Host root with every capability in the initial namespace: nothing needs reducing.
pub fn privileged_caller() -> Caller {
    Caller {
        oom_score_adj: 0,
        grantable_caps: caps::all(),
        sys_resource_in_init_ns: true,
        rlimit_hard: (0..RLIMITS.len()).map(|i| (i, u64::MAX)).collect(),
        uid_map: IdMap::parse("0 0 4294967295"),
        gid_map: IdMap::parse("0 0 4294967295"),
    }
}

/// JSON pointers of every leaf (or differing container) that is not equal in `a` and `b`.
pub fn diff(a: &Value, b: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(a, b, String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, at: String, out: &mut BTreeSet<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let p = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => walk(u, v, p, out),
                    _ => {
                        out.insert(p);
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                walk(u, v, format!("{at}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => {
            out.insert(at);
        }
    }
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}
