//! Properties over random specs and callers: capabilities only shrink, oomScoreAdj is
//! exactly what the caller can grant (the spec's value, or the caller's own when it may
//! not go lower), process.user and every field no rule touches stay the same JSON value.

mod common;

use common::*;
use crun_wrapper::caller::RLIMITS;
use crun_wrapper::{Caller, IdMap, Lsm};
use proptest::prelude::*;
use serde_json::{json, Value};

const CAP_POOL: [&str; 10] = [
    "CAP_CHOWN",
    "CAP_MKNOD",
    "CAP_SYS_ADMIN",
    "CAP_SYS_RESOURCE",
    "CAP_NET_RAW",
    "CAP_BPF",
    "cap_kill",
    "SYS_TIME",
    "CAP_NOT_A_CAP",
    "CAP_CHECKPOINT_RESTORE",
];
const RLIMIT_POOL: [&str; 5] = [
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_CORE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_FOO",
];

fn cap_list() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(CAP_POOL.to_vec(), 0..=CAP_POOL.len())
}

fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![Just(u64::MAX), 0u64..5_000_000, Just(1u64 << 53 | 1)]
}

prop_compose! {
    fn spec()(
        oom in proptest::option::of(-1000i32..=1000),
        sets in proptest::collection::vec(cap_list(), 5),
        rl in proptest::collection::vec((proptest::sample::select(RLIMIT_POOL.to_vec()), limit(), limit()), 0..5),
        ping in proptest::option::of((0u32..100_000, 0u32..=u32::MAX / 2)),
        own_userns in any::<bool>(),
        uid in 0u32..100_000,
        extra in any::<i64>(),
    ) -> Value {
        let mut s = load(APP);
        let p = s["process"].as_object_mut().unwrap();
        match oom {
            Some(o) => { p.insert("oomScoreAdj".into(), json!(o)); }
            None => { p.remove("oomScoreAdj"); }
        }
        p.insert("capabilities".into(), json!({
            "bounding": sets[0], "effective": sets[1], "inheritable": sets[2],
            "permitted": sets[3], "ambient": sets[4],
        }));
        p.insert("rlimits".into(), Value::Array(rl.iter().map(|(t, h, so)| json!({"type": t, "hard": h, "soft": so})).collect()));
        p["user"]["uid"] = json!(uid);
        if let Some((lo, hi)) = ping {
            s["linux"]["sysctl"] = json!({"net.ipv4.ping_group_range": format!("{lo} {hi}"), "kernel.shm_rmid_forced": "1"});
        }
        if own_userns {
            s["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        }
        s["x-random"] = json!(extra);
        s
    }
}

prop_compose! {
    fn caller()(
        oom in -1000i32..=1000,
        held in proptest::sample::subsequence(NODE_CAPS.to_vec(), 0..=NODE_CAPS.len()),
        hard in proptest::collection::vec(limit(), RLIMITS.len()),
        privileged in any::<bool>(),
        map_size in 1u32..200_000,
    ) -> Caller {
        Caller {
            oom_score_adj: oom,
            grantable_caps: held.iter().map(|c| c.parse().unwrap()).collect(),
            sys_resource_in_init_ns: privileged,
            rlimit_hard: hard.into_iter().enumerate().collect(),
            uid_map: IdMap::parse(&format!("0 1000 {map_size}")),
            gid_map: IdMap::parse(&format!("0 1000 {map_size}")),
        }
    }
}

/// Keeps `a`'s order: every element of `sub` appears in `full`, in the same order.
fn is_subsequence(sub: &[String], full: &[String]) -> bool {
    let mut it = full.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

/// The spec with every field a rule may touch removed.
fn untouched(mut v: Value) -> Value {
    let p = v["process"].as_object_mut().unwrap();
    for k in [
        "oomScoreAdj",
        "capabilities",
        "rlimits",
        "apparmorProfile",
        "selinuxLabel",
    ] {
        p.remove(k);
    }
    let l = v["linux"].as_object_mut().unwrap();
    l.remove("mountLabel");
    if let Some(s) = l.get_mut("sysctl").and_then(Value::as_object_mut) {
        s.remove("net.ipv4.ping_group_range");
    }
    v
}

/// The oomScoreAdj a caller can start `spec`'s process with when it asks for `want`: any
/// value when it may lower its own (CAP_SYS_RESOURCE in the initial user namespace, and
/// the container does not get its own user namespace), else no less than its own value.
fn grantable_oom(spec: &Value, c: &Caller, want: i64) -> i64 {
    let own_userns = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "user"));
    if c.sys_resource_in_init_ns && !own_userns {
        want
    } else {
        want.max(i64::from(c.oom_score_adj))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Right at the caller's value, where an off-by-one hides: random specs seldom land there.
    #[test]
    fn oom_near_the_callers_value_is_exactly_what_it_can_grant(input in spec(), c in caller(), delta in -2i64..=2) {
        let mut input = input;
        let want = (i64::from(c.oom_score_adj) + delta).clamp(-1000, 1000);
        input["process"]["oomScoreAdj"] = json!(want);
        let mut out = input.clone();
        let report = crun_wrapper::rules::apply(&mut out, &c, Lsm { apparmor: false, selinux: false });
        let grant = grantable_oom(&input, &c, want);
        prop_assert_eq!(out["process"]["oomScoreAdj"].as_i64(), Some(grant));
        let change = report.changes.iter().find(|ch| ch.field == "process.oomScoreAdj");
        if grant == want {
            prop_assert!(change.is_none(), "{:?}", change);
        } else {
            let change = change.expect("a raised oomScoreAdj is reported");
            prop_assert_eq!(&change.from, &want.to_string());
            prop_assert_eq!(&change.to, &grant.to_string());
        }
    }

    #[test]
    fn rules_only_reduce(input in spec(), c in caller(), apparmor in any::<bool>(), selinux in any::<bool>()) {
        let mut out = input.clone();
        let report = crun_wrapper::rules::apply(&mut out, &c, Lsm { apparmor, selinux });

        for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
            let a = strings(&input["process"]["capabilities"][set]);
            let b = strings(&out["process"]["capabilities"][set]);
            prop_assert!(is_subsequence(&b, &a), "{set}: {b:?} not within {a:?}");
        }
        if let Some(i) = input["process"]["oomScoreAdj"].as_i64() {
            let o = out["process"]["oomScoreAdj"].as_i64();
            prop_assert_eq!(o, Some(grantable_oom(&input, &c, i)), "oom {}", i);
        } else {
            prop_assert!(out["process"].get("oomScoreAdj").is_none());
        }
        let (ri, ro) = (input["process"]["rlimits"].as_array().unwrap(), out["process"]["rlimits"].as_array().unwrap());
        prop_assert_eq!(ri.len(), ro.len());
        for (a, b) in ri.iter().zip(ro) {
            prop_assert_eq!(&a["type"], &b["type"]);
            for k in ["hard", "soft"] {
                prop_assert!(b[k].as_u64().unwrap() <= a[k].as_u64().unwrap());
            }
        }
        prop_assert_eq!(&input["process"]["user"], &out["process"]["user"]);
        prop_assert_eq!(untouched(input.clone()), untouched(out.clone()));
        // Nothing changed <=> no change reported.
        prop_assert_eq!(report.changes.is_empty(), input == out);
    }
}
