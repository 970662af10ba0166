//! The property harness for kincnet's input (issue 17): any stdin, any CNI_* environment.
//!
//! - Validation never panics. A refusal carries an input code (1, 4, 6, 7), a message,
//!   and `run` prints it as the spec's error JSON with exit code 1. `run` is called here
//!   only for refused input and VERSION, which return before any kernel or file work:
//!   that is what makes calling it in-process safe, and what the root harness
//!   (tests/hostile.rs) checks from outside, with the node's state compared.
//! - What validation accepts is safe to hand to the kernel: interface names it takes,
//!   routes through the pod's own link, a bounded number of distinct port mappings, a
//!   range with an address to give, an absolute data directory.
//!
//! Seeded (reproducible in CI) unless PROPTEST_RNG_SEED is set; PROPTEST_CASES changes
//! the number of cases (default 1500, one to three seconds).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{json, Value};

use crate::config::{validate_ifname, NetConf, MAX_PORT_MAPPINGS};
use crate::env::{self, CniEnv, Command};
use crate::error::Code;
use crate::plugin;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let mut c = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x6b69_6e63_6e65_7432);
    }
    c
}

fn base() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "kprop", "type": "kincnet", "bridge": "kinc0",
        "isGateway": true, "ipMasq": true, "hairpinMode": true,
        "ipam": {"subnet": "10.88.0.0/24", "dataDir": "/nonexistent/kincnet-props",
                 "routes": [{"dst": "0.0.0.0/0"}]},
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80}]}
    })
}

/// Strings that mean something to some field, and their near misses.
const WORDS: &[&str] = &[
    "",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0",
    "9.9.9",
    "kinc0",
    "eth0",
    "default",
    "all",
    "lo",
    ".",
    "..",
    "a/b",
    "a:b",
    "a b",
    "kinc0\u{0}x",
    "\u{7f}",
    "é",
    "sixteen-chars-xx",
    "10.88.0.0/24",
    "10.88.0.7/24",
    "10.88.0.1",
    "10.88.0.2",
    "10.88.0.0",
    "10.88.0.255",
    "10.89.0.1",
    "0.0.0.0/0",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "10.88.0.0/31",
    "fd00::/64",
    "::1",
    "0.0.0.0",
    "127.0.0.1",
    "tcp",
    "udp",
    "UDP",
    "sctp",
    "kincnet",
    "host-local",
    "dhcp",
    "relative",
    "/abs/dir",
    "x",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[a-z0-9./:-]{0,20}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![Just(0u32), Just(68), Just(65535), Just(65536), 0u32..70000]
            .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(
                    &[
                        "subnet",
                        "dst",
                        "gw",
                        "hostPort",
                        "containerPort",
                        "protocol",
                        "hostIP",
                        "containerID",
                        "ifname",
                        "ips",
                        "address",
                        "x"
                    ][..]
                ),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// The fields of a config, as paths.
const PATHS: &[&[&str]] = &[
    &["cniVersion"],
    &["name"],
    &["bridge"],
    &["mtu"],
    &["isGateway"],
    &["ipMasq"],
    &["ipam"],
    &["ipam", "type"],
    &["ipam", "subnet"],
    &["ipam", "rangeStart"],
    &["ipam", "rangeEnd"],
    &["ipam", "gateway"],
    &["ipam", "routes"],
    &["ipam", "ranges"],
    &["ipam", "dataDir"],
    &["runtimeConfig"],
    &["runtimeConfig", "portMappings"],
    &["prevResult"],
    &["dns"],
    &["cni.dev/valid-attachments"],
];

fn set_path(root: &mut Value, path: &[&str], v: Value) {
    let mut cur = root;
    for k in &path[..path.len() - 1] {
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[path[path.len() - 1]] = v;
}

/// Port mappings and routes of plausible shape, where the interesting bugs were.
fn lists() -> impl Strategy<Value = (usize, Value)> {
    let mapping = (
        prop_oneof![
            Just(json!(18080)),
            Just(json!(18081)),
            Just(json!(0)),
            Just(json!(70000))
        ],
        prop_oneof![Just(json!(80)), Just(json!(81)), Just(json!(0))],
        prop_oneof![
            Just(Value::Null),
            Just(json!("tcp")),
            Just(json!("udp")),
            Just(json!("x"))
        ],
        prop_oneof![
            Just(Value::Null),
            Just(json!("")),
            Just(json!("127.0.0.1")),
            Just(json!("::1"))
        ],
    )
        .prop_map(
            |(h, c, p, ip)| json!({"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ip}),
        );
    let route = (
        proptest::sample::select(
            &[
                "0.0.0.0/0",
                "192.0.2.0/24",
                "192.0.2.9/24",
                "10.88.0.0/24",
                "::/0",
                "x",
            ][..],
        ),
        prop_oneof![
            Just(None),
            proptest::sample::select(
                &["10.88.0.1", "10.88.0.9", "10.88.0.0", "10.89.0.1", "x"][..]
            )
            .prop_map(Some)
        ],
    )
        .prop_map(|(dst, gw)| match gw {
            Some(g) => json!({"dst": dst, "gw": g}),
            None => json!({"dst": dst}),
        });
    prop_oneof![
        8 => proptest::collection::vec(mapping, 0..5).prop_map(|v| (16, Value::Array(v))),
        8 => proptest::collection::vec(route, 0..5).prop_map(|v| (12, Value::Array(v))),
        // Over the bound, by one.
        1 => Just((
            16,
            Value::Array(
                (0..=MAX_PORT_MAPPINGS)
                    .map(|i| json!({"hostPort": 1 + i, "containerPort": 80}))
                    .collect()
            )
        )),
    ]
}

fn stdin() -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        (0..PATHS.len(), json_value()),
        (0..PATHS.len(), word().prop_map(Value::String)),
        lists(),
    ];
    let mutated = proptest::collection::vec(mutation, 0..4).prop_map(|ms| {
        let mut c = base();
        for (i, v) in ms {
            set_path(&mut c, PATHS[i], v);
        }
        c
    });
    prop_oneof![
        6 => mutated.clone().prop_map(|c| c.to_string().into_bytes()),
        1 => (mutated.clone(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(c, tail)| {
            let mut b = c.to_string().into_bytes();
            b.extend(tail);
            b
        }),
        1 => (mutated.clone(), any::<prop::sample::Index>()).prop_map(|(c, i)| {
            let mut b = c.to_string().into_bytes();
            b.truncate(i.index(b.len() + 1));
            b
        }),
        1 => mutated.prop_map(|c| json!([c]).to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

const VARS: [&str; 5] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_IFNAME",
    "CNI_NETNS",
    "CNI_ARGS",
];

fn environment() -> impl Strategy<Value = BTreeMap<&'static str, String>> {
    let command = prop_oneof![
        4 => proptest::sample::select(&["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"][..]).prop_map(str::to_string),
        1 => word(),
    ];
    let value = |valid: &'static [&'static str]| {
        prop_oneof![
            3 => proptest::sample::select(valid).prop_map(str::to_string),
            1 => word(),
        ]
    };
    (
        proptest::option::weighted(0.97, command),
        proptest::option::weighted(0.95, value(&["c1", "abc-1.x_y"])),
        proptest::option::weighted(0.95, value(&["eth0", "net1"])),
        proptest::option::weighted(0.95, value(&["/run/netns/x", "/proc/self/ns/net"])),
        proptest::option::of(value(&[
            "IgnoreUnknown=1",
            "IP=10.88.0.9",
            "IP=10.89.0.1",
            "IP=x",
            "K8S_POD_NAME=a",
        ])),
    )
        .prop_map(|vals| {
            let vals = [vals.0, vals.1, vals.2, vals.3, vals.4];
            VARS.iter()
                .zip(vals)
                .filter_map(|(k, v)| Some((*k, v?)))
                .collect()
        })
}

fn is_input_code(c: Code) -> bool {
    matches!(
        c,
        Code::IncompatibleVersion | Code::InvalidEnv | Code::Decode | Code::InvalidConfig
    )
}

/// What the kernel needs of a config validation let through.
fn assert_kernel_safe(conf: &NetConf, cenv: &CniEnv) {
    validate_ifname(&conf.bridge).unwrap();
    if matches!(cenv.command, Command::Add | Command::Del | Command::Check) {
        validate_ifname(&cenv.ifname).unwrap();
        assert!(!cenv.container_id.is_empty());
    }
    assert!(conf.mtu.is_none_or(|m| (68..=65535).contains(&m)));
    let ipam = &conf.ipam;
    let s = ipam.subnet;
    assert!(s.prefix() <= 30 && s.network() == s.ip(), "{s}");
    for (net, len) in [([0, 0, 0, 0], 8), ([127, 0, 0, 0], 8), ([224, 0, 0, 0], 3)] {
        let block = Ipv4Network::new(Ipv4Addr::from(net), len).unwrap();
        assert!(
            !block.contains(s.network()) && !s.contains(block.network()),
            "{s}"
        );
    }
    let host = |ip: Ipv4Addr| s.contains(ip) && ip != s.network() && ip != s.broadcast();
    assert!(host(ipam.gateway) && host(ipam.range_start) && host(ipam.range_end));
    assert!(ipam.range_start <= ipam.range_end);
    let reserved: BTreeSet<Ipv4Addr> = std::iter::once(ipam.gateway)
        .chain(ipam.routes.iter().filter_map(|r| r.gw))
        .collect();
    let free = (u32::from(ipam.range_start)..=u32::from(ipam.range_end))
        .take(reserved.len() + 1)
        .any(|v| !reserved.contains(&Ipv4Addr::from(v)));
    assert!(
        free,
        "no address to give in {}-{}",
        ipam.range_start, ipam.range_end
    );
    let mut dsts = BTreeSet::new();
    for r in &ipam.routes {
        assert!(dsts.insert(r.dst), "route {} twice", r.dst);
        assert!(r.gw.is_none_or(host), "route gw {:?} off the subnet", r.gw);
    }
    assert!(ipam.data_dir.is_absolute());
    assert!(conf.port_mappings.len() <= MAX_PORT_MAPPINGS);
    let keys: BTreeSet<_> = conf
        .port_mappings
        .iter()
        .map(|m| (m.host_ip, m.protocol, m.host_port))
        .collect();
    assert_eq!(
        keys.len(),
        conf.port_mappings.len(),
        "a host port mapped twice"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_input_is_refused_with_an_input_code_or_is_kernel_safe(
        env in environment(),
        stdin in stdin(),
    ) {
        let get = |k: &str| env.get(k).cloned();
        let command = env::command(&get);
        match plugin::validate(&get, &stdin) {
            Ok((conf, cenv)) => assert_kernel_safe(&conf, &cenv),
            Err(e) => {
                prop_assert!(is_input_code(e.code), "{e:?}");
                prop_assert!(!e.msg.is_empty());
                // Refused before any kernel work, so `run` is safe to call here; it
                // must print the same refusal (or VERSION's answer).
                let out = plugin::run(&get, &stdin);
                let j: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
                if command == Ok(Command::Version) {
                    prop_assert_eq!(out.code, 0);
                    prop_assert!(j["supportedVersions"].is_array());
                } else {
                    prop_assert_eq!(out.code, 1);
                    prop_assert!(j["cniVersion"].is_string());
                    prop_assert!(j["msg"].as_str().is_some_and(|m| !m.is_empty()));
                    if command.is_ok() {
                        prop_assert_eq!(&j["code"], &json!(e.code as u32));
                    } else {
                        prop_assert_eq!(&j["code"], &json!(Code::InvalidEnv as u32));
                    }
                }
            }
        }
    }
}
