//! Issue 17: a bounded property harness for the rewrite on hostile input. Specs are
//! generated as text (numbers no `Value` holds exactly, escapes, odd whitespace, wrong
//! types in every field a rule reads, keys in any order), then mutated into arbitrary
//! bytes. For every input:
//! - `rewrite_bytes` returns (no panic; a stack overflow would kill the test binary);
//! - a rewrite happens only with a reported change, and reads back as the rules' result;
//! - every byte outside the paths the rules own is unchanged, checked with serde_json's
//!   own spans (`RawValue`), independently of the wrapper's `patch` module;
//! - the binary, given such a spec, always reaches crun and leaves the file exactly as
//!   `rewrite_bytes` says.
//!
//! Bounded: `PROPTEST_CASES` (default below) sets the number of cases of each property.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::NODE_CAPS;
use crun_wrapper::caller::RLIMITS;
use crun_wrapper::{Caller, IdMap, Lsm};
use proptest::prelude::*;
use proptest::sample::select;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_crun-wrapper");
const RECORD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crun-record");

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---- generators: JSON text, token by token ----

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "200",
    "1000",
    "-1000",
    "-999",
    "1001",
    "2147483647",
    "-2147483648",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1.0e2",
    "1E3",
    "-0",
    "0.5",
    "1e-7",
    "0.1000000000000000055511151231257827",
];
const STRINGS: &[&str] = &[
    r#""""#,
    r#""x""#,
    r#""\u00e9\/\"\\""#,
    r#""\ud83d\ude00""#,
    r#""é""#,
    r#""CAP_CHOWN""#,
    r#""0 2147483647""#,
];
const KEYS: &[&str] = &["a", "b", "x-kinc", "\\u0041", "with space", "é"];
const CAPS: &[&str] = &[
    r#""CAP_CHOWN""#,
    r#""CAP_MKNOD""#,
    r#""CAP_SYS_ADMIN""#,
    r#""CAP_SYS_RESOURCE""#,
    r#""CAP_NET_RAW""#,
    r#""CAP_BPF""#,
    r#""cap_kill""#,
    r#""SYS_TIME""#,
    r#""CAP_NOT_A_CAP""#,
    r#""CAP_\u0043HOWN""#,
    "1",
    "null",
    "{}",
];
const RLIMIT_TYPES: &[&str] = &[
    r#""RLIMIT_NOFILE""#,
    r#""RLIMIT_NPROC""#,
    r#""RLIMIT_CORE""#,
    r#""RLIMIT_MEMLOCK""#,
    r#""RLIMIT_FOO""#,
    "7",
];
const PING: &[&str] = &[
    r#""0 2147483647""#,
    r#""1 0""#,
    r#""5 70000""#,
    r#""0 4294967295""#,
    r#""  3   9 ""#,
    r#""x""#,
    r#""1 2 3""#,
    "17",
];
const LABELS: &[&str] = &[
    r#""crio-default""#,
    r#""""#,
    "0",
    "null",
    r#""\u0073ystem_u""#,
];
const WS: &[&str] = &["", " ", "\n  ", "\t", "\r\n", "\n\n    "];

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        select(NUMBERS).prop_map(str::to_string),
        (-1000i32..=1000).prop_map(|n| n.to_string()),
        prop_oneof![Just(u64::MAX), 0u64..5_000_000].prop_map(|n| n.to_string()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        number(),
        select(STRINGS).prop_map(str::to_string),
        select(&["true", "false", "null"][..]).prop_map(str::to_string),
    ]
}

/// `{ "k": v, ... }` with this object's whitespace; keys are distinct as decoded.
fn object(members: Vec<(String, String)>, ws: &str) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
        .collect();
    format!("{{{}{ws}}}", body.join(","))
}

fn array(items: Vec<String>, ws: &str) -> String {
    let body: Vec<String> = items.iter().map(|v| format!("{ws}{v}")).collect();
    format!("[{}{ws}]", body.join(","))
}

fn foreign() -> BoxedStrategy<String> {
    scalar()
        .prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..4), select(WS))
                    .prop_map(|(v, ws)| array(v, ws)),
                (
                    prop::collection::vec((select(KEYS), inner), 0..4),
                    select(WS)
                )
                    .prop_map(|(m, ws)| object(distinct(m), ws)),
            ]
        })
        .boxed()
}

fn distinct(m: Vec<(&str, String)>) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    m.into_iter()
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// An optional member: `None` leaves the key out.
fn member(
    key: &'static str,
    v: impl Strategy<Value = String>,
) -> impl Strategy<Value = Option<(String, String)>> {
    prop::option::weighted(0.8, v).prop_map(move |v| v.map(|v| (key.to_string(), v)))
}

fn members(
    parts: Vec<Option<(String, String)>>,
    extra: Vec<(&str, String)>,
) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = parts.into_iter().flatten().collect();
    m.extend(distinct(extra));
    m
}

fn capabilities() -> BoxedStrategy<String> {
    let set = (prop::collection::vec(select(CAPS), 0..8), select(WS))
        .prop_map(|(v, ws)| array(v.into_iter().map(str::to_string).collect(), ws));
    let sets = (
        member("bounding", set.clone()),
        member("effective", set.clone()),
        member("inheritable", set.clone()),
        member("permitted", set.clone()),
        member("ambient", set),
        prop::collection::vec((select(&["x-kinc", "b"][..]), foreign()), 0..2),
        select(WS),
    )
        .prop_map(|(a, b, c, d, e, x, ws)| object(members(vec![a, b, c, d, e], x), ws));
    prop_oneof![9 => sets, 1 => foreign()].boxed()
}

fn rlimits() -> BoxedStrategy<String> {
    let entry = (
        member("type", select(RLIMIT_TYPES).prop_map(str::to_string)),
        member("hard", number()),
        member("soft", number()),
        prop::collection::vec((select(&["x-kinc"][..]), foreign()), 0..2),
        select(WS),
    )
        .prop_map(|(t, h, s, x, ws)| object(members(vec![t, h, s], x), ws));
    let list = (
        prop::collection::vec(prop_oneof![9 => entry, 1 => foreign()], 0..5),
        select(WS),
    )
        .prop_map(|(v, ws)| array(v, ws));
    prop_oneof![9 => list, 1 => foreign()].boxed()
}

fn user() -> BoxedStrategy<String> {
    let ids = (prop::collection::vec(number(), 0..3), select(WS)).prop_map(|(v, ws)| array(v, ws));
    (
        member("uid", number()),
        member("gid", number()),
        member("additionalGids", ids),
        member("umask", number()),
        select(WS),
    )
        .prop_map(|(a, b, c, d, ws)| object(members(vec![a, b, c, d], vec![]), ws))
        .boxed()
}

fn process() -> BoxedStrategy<String> {
    (
        (
            member("user", user()),
            member("oomScoreAdj", number()),
            member("capabilities", capabilities()),
            member("rlimits", rlimits()),
            member("apparmorProfile", select(LABELS).prop_map(str::to_string)),
            member("selinuxLabel", select(LABELS).prop_map(str::to_string)),
        ),
        prop::collection::vec((select(KEYS), foreign()), 0..3),
        select(WS),
    )
        .prop_flat_map(|((a, b, c, d, e, f), x, ws)| {
            (
                Just(members(vec![a, b, c, d, e, f], x)).prop_shuffle(),
                Just(ws),
            )
        })
        .prop_map(|(m, ws)| object(m, ws))
        .boxed()
}

fn linux() -> BoxedStrategy<String> {
    let ns = select(
        &[
            r#"[{"type":"network","path":"/x"}]"#,
            r#"[{"type":"user"},{"type":"pid"}]"#,
            r#"[{"type":"user","x":18446744073709551616}]"#,
            "[]",
            "{}",
        ][..],
    )
    .prop_map(str::to_string);
    let map = select(
        &[
            r#"[{"containerID":0,"hostID":1000,"size":65536}]"#,
            r#"[{"containerID":0,"hostID":1000,"size":1.0e2}]"#,
            "[]",
        ][..],
    )
    .prop_map(str::to_string);
    let sysctl = (
        member(
            "net.ipv4.ping_group_range",
            select(PING).prop_map(str::to_string),
        ),
        member("kernel.shm_rmid_forced", Just(r#""1""#.to_string())),
        select(WS),
    )
        .prop_map(|(p, k, ws)| object(members(vec![p, k], vec![]), ws));
    (
        member("namespaces", ns),
        member("uidMappings", map.clone()),
        member("gidMappings", map),
        member("sysctl", sysctl),
        member("mountLabel", select(LABELS).prop_map(str::to_string)),
        prop::collection::vec((select(KEYS), foreign()), 0..3),
        select(WS),
    )
        .prop_flat_map(|(a, b, c, d, e, x, ws)| {
            (
                Just(members(vec![a, b, c, d, e], x)).prop_shuffle(),
                Just(ws),
            )
        })
        .prop_map(|(m, ws)| object(m, ws))
        .boxed()
}

fn spec() -> BoxedStrategy<String> {
    (
        member("process", prop_oneof![9 => process(), 1 => foreign()]),
        member("linux", prop_oneof![9 => linux(), 1 => foreign()]),
        member("ociVersion", Just(r#""1.0.2""#.to_string())),
        prop::collection::vec((select(KEYS), foreign()), 0..3),
        select(WS),
        select(WS),
    )
        .prop_flat_map(|(p, l, o, x, ws, edge)| {
            (
                Just(members(vec![p, l, o], x)).prop_shuffle(),
                Just(ws),
                Just(edge),
            )
        })
        .prop_map(|(m, ws, edge)| format!("{edge}{}{edge}", object(m, ws)))
        .boxed()
}

/// One edit of a spec's bytes, at a position scaled to its length.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(f64, u8),
    Insert(f64, Vec<u8>),
    Repeat(f64, f64),
}

/// Bytes that break JSON structure where a random byte seldom does.
const INSERTS: &[&[u8]] = &[b"\"", b",", b"{", b"]", b"\\", b"\"a\":1,", b"\xff"];

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        at.clone().prop_map(Mutation::Truncate),
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (
            at.clone(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..4),
                select(INSERTS).prop_map(<[u8]>::to_vec),
            ]
        )
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (at.clone(), at).prop_map(|(a, b)| Mutation::Repeat(a, b)),
    ]
}

fn mutate(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let pos = |f: f64, b: &[u8]| ((b.len() as f64) * f) as usize;
    match m {
        Mutation::Truncate(f) => b.truncate(pos(*f, &b)),
        Mutation::Flip(f, x) => {
            let p = pos(*f, &b);
            if let Some(c) = b.get_mut(p) {
                *c ^= x | 1;
            }
        }
        Mutation::Insert(f, bytes) => {
            let p = pos(*f, &b);
            b.splice(p..p, bytes.iter().copied());
        }
        Mutation::Repeat(f, g) => {
            let (mut s, mut e) = (pos(*f, &b), pos(*g, &b));
            if s > e {
                std::mem::swap(&mut s, &mut e);
            }
            let piece = b[s..e].to_vec();
            b.splice(e..e, piece);
        }
    }
    b
}

prop_compose! {
    fn caller()(
        oom in -1000i32..=1000,
        held in proptest::sample::subsequence(NODE_CAPS.to_vec(), 0..=NODE_CAPS.len()),
        hard in proptest::collection::vec(prop_oneof![Just(u64::MAX), 0u64..5_000_000], RLIMITS.len()),
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

// ---- the check: serde_json's own spans, path by path ----

/// An object's members in file order, each value as its exact text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry::<String, &'de RawValue>()? {
                    out.push(e);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Paths whose value a rule may change or remove.
fn owned(p: &[&str]) -> bool {
    matches!(
        p,
        [
            "process",
            "oomScoreAdj" | "apparmorProfile" | "selinuxLabel"
        ] | [
            "process",
            "capabilities",
            "bounding" | "effective" | "inheritable" | "permitted" | "ambient"
        ] | ["process", "rlimits", _, "hard" | "soft"]
            | ["linux", "mountLabel"]
            | ["linux", "sysctl", "net.ipv4.ping_group_range"]
    )
}

/// Containers that hold owned paths: compared member by member.
fn mixed(p: &[&str]) -> bool {
    matches!(
        p,
        [] | ["process"]
            | ["process", "capabilities" | "rlimits"]
            | ["process", "rlimits", _]
            | ["linux"]
            | ["linux", "sysctl"]
    )
}

/// `Err(path)` for the first place where `a` and `b` differ outside the owned paths.
fn same_outside_owned(path: &mut Vec<String>, a: &str, b: &str) -> Result<(), String> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if owned(&p) {
        return Ok(());
    }
    let here = || format!("/{}", path.join("/"));
    if !mixed(&p) || a.as_bytes().first() != b.as_bytes().first() {
        return if a == b {
            Ok(())
        } else {
            Err(format!("{}: {a:?} became {b:?}", here()))
        };
    }
    match a.as_bytes().first() {
        Some(b'{') => {
            let kept = |text| -> Vec<(String, &RawValue)> {
                let m: Members = serde_json::from_str(text).unwrap();
                m.0.into_iter()
                    .filter(|(k, _)| {
                        let mut q = p.clone();
                        q.push(k);
                        !owned(&q)
                    })
                    .collect()
            };
            let (x, y) = (kept(a), kept(b));
            let keys =
                |v: &[(String, &RawValue)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            if keys(&x) != keys(&y) {
                return Err(format!(
                    "{}: keys {:?} became {:?}",
                    here(),
                    keys(&x),
                    keys(&y)
                ));
            }
            for ((k, u), (_, v)) in x.iter().zip(&y) {
                path.push(k.clone());
                same_outside_owned(path, u.get(), v.get())?;
                path.pop();
            }
            Ok(())
        }
        Some(b'[') => {
            let x: Vec<&RawValue> = serde_json::from_str(a).unwrap();
            let y: Vec<&RawValue> = serde_json::from_str(b).unwrap();
            if x.len() != y.len() {
                return Err(format!("{}: {} items became {}", here(), x.len(), y.len()));
            }
            for (i, (u, v)) in x.iter().zip(&y).enumerate() {
                path.push(i.to_string());
                same_outside_owned(path, u.get(), v.get())?;
                path.pop();
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{}: {a:?} became {b:?}", here())),
    }
}

/// Everything the harness asserts about one input.
fn check(input: &[u8], c: &Caller, lsm: Lsm) -> Result<(), TestCaseError> {
    let result = crun_wrapper::rewrite::rewrite_bytes(input, c, lsm);
    let Ok((report, out)) = result else {
        return Ok(());
    };
    let Some(out) = out else {
        prop_assert!(report.changes.is_empty(), "{report:?}");
        return Ok(());
    };
    prop_assert!(!report.changes.is_empty());
    let mut expected: Value = serde_json::from_slice(input).unwrap();
    crun_wrapper::rules::apply(&mut expected, c, lsm);
    let got: Value = serde_json::from_slice(&out)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
    prop_assert_eq!(&got, &expected);
    let (a, b) = (
        std::str::from_utf8(input).unwrap(),
        std::str::from_utf8(&out).unwrap(),
    );
    // The bytes around the top-level object, then everything inside it.
    let edges = |s: &str| (s.len() - s.trim_start().len(), s.len() - s.trim_end().len());
    prop_assert_eq!(edges(a), edges(b));
    same_outside_owned(&mut Vec::new(), a.trim(), b.trim()).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn generated_specs_change_only_owned_paths(
        s in spec(), c in caller(), apparmor in any::<bool>(), selinux in any::<bool>(),
    ) {
        let lsm = Lsm { apparmor, selinux };
        // The generator makes valid JSON with distinct keys: the wrapper must accept it.
        prop_assert!(crun_wrapper::rewrite::parse_spec(s.as_bytes()).is_ok(), "{}", s);
        check(s.as_bytes(), &c, lsm)?;
    }

    #[test]
    fn mutated_specs_never_panic_and_change_only_owned_paths(
        s in spec(), ms in prop::collection::vec(mutation(), 1..4), c in caller(),
    ) {
        let bytes = ms.iter().fold(s.into_bytes(), mutate);
        check(&bytes, &c, Lsm { apparmor: false, selinux: false })?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), c in caller()) {
        check(&bytes, &c, Lsm { apparmor: false, selinux: false })?;
    }

    #[test]
    fn deep_nesting_never_crashes(depth in 100usize..5000, open in select(&["[", "{\"a\":"][..])) {
        let close = if open == "[" { "]" } else { "}" };
        let s = format!("{{\"process\":{{\"oomScoreAdj\":-1000,\"x\":{}1{}}}}}", open.repeat(depth), close.repeat(depth));
        let c = common::kinc_caller();
        check(s.as_bytes(), &c, Lsm { apparmor: false, selinux: false })?;
    }
}

proptest! {
    // Each case starts the binary: fewer of them.
    #![proptest_config(cases(48))]

    /// The binary with the caller and LSMs of this test process: crun is always reached
    /// with the argv unchanged, and the spec ends up exactly as `rewrite_bytes` says.
    #[test]
    fn binary_always_reaches_crun(s in spec(), m in prop::option::of(mutation())) {
        let bytes = match &m {
            Some(m) => mutate(s.into_bytes(), m),
            None => s.into_bytes(),
        };
        let d = tempfile::tempdir().unwrap();
        let spec = d.path().join("config.json");
        std::fs::write(&spec, &bytes).unwrap();
        let cfg = d.path().join("w.toml");
        std::fs::write(&cfg, "").unwrap();
        let o = wrapper(d.path(), &cfg);
        prop_assert_eq!(o.status.code(), Some(0), "{:?}", o);
        prop_assert_eq!(std::fs::read_to_string(d.path().join("crun-ran")).unwrap(), "create\nid\n");
        let c = Caller::from_kernel().unwrap();
        let want = match crun_wrapper::rewrite::rewrite_bytes(&bytes, &c, Lsm::from_kernel()) {
            Ok((_, Some(out))) => out,
            _ => bytes,
        };
        prop_assert!(std::fs::read(&spec).unwrap() == want);
    }
}

fn wrapper(dir: &Path, cfg: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["create", "id"])
        .current_dir(dir)
        .env("KINC_CRUN_WRAPPER_CONFIG", cfg)
        .env("KINC_CRUN", RECORD)
        .env("KCW_TEST_RECORD", dir.join("crun-ran"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
