//! Malformed configs and environments: each gives the spec's error JSON on stdout,
//! a non-zero exit, the expected code and a message naming the bad field.
//! Every case fails before any kernel work, so no root is needed.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kincnet");

fn run(env: &[(&str, &str)], stdin: &str) -> (i32, Value, String) {
    let mut c = Command::new(BIN);
    c.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&s).unwrap_or(Value::Null),
        s,
    )
}

/// (what, env, stdin, expected code, words the message must contain)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u64, &'a str);

fn good(dir: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "kerr", "type": "kincnet",
           "ipam": {"subnet": "10.77.0.0/24", "dataDir": dir}})
}

#[test]
fn malformed_input_gets_the_spec_error_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let add: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/run/netns/kincnet-test-does-not-exist"),
        ("CNI_PATH", "/x"),
    ];
    let with = |over: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = add
            .iter()
            .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        v.extend(over.iter().filter(|(_, val)| !val.is_empty()).copied());
        v
    };
    let g = good(dir);
    let patch = |f: &dyn Fn(&mut Value)| {
        let mut c = g.clone();
        f(&mut c);
        c.to_string()
    };
    let gc_conf = patch(&|c| c["cniVersion"] = json!("1.1.0"));
    let status_conf = {
        let mut c = g.clone();
        c["cniVersion"] = json!("1.1.0");
        c["ipam"]["dataDir"] = json!(file.join("sub"));
        c.to_string()
    };
    let cases: Vec<Case> = vec![
        (
            "truncated JSON",
            with(&[]),
            r#"{"cniVersion":"1.0.0","na"#.into(),
            6,
            "network config",
        ),
        (
            "wrong type",
            with(&[]),
            patch(&|c| c["mtu"] = json!("big")),
            6,
            "mtu",
        ),
        (
            "wrong type nested",
            with(&[]),
            patch(&|c| c["ipam"]["routes"] = json!("x")),
            6,
            "ipam.routes",
        ),
        (
            "cniVersion unsupported",
            with(&[]),
            patch(&|c| c["cniVersion"] = json!("99.0.0")),
            1,
            "99.0.0",
        ),
        (
            "cniVersion missing",
            with(&[]),
            patch(&|c| {
                c.as_object_mut().unwrap().remove("cniVersion");
            }),
            7,
            "cniVersion",
        ),
        (
            "name missing",
            with(&[]),
            patch(&|c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            7,
            "name",
        ),
        (
            "ipam missing",
            with(&[]),
            patch(&|c| {
                c.as_object_mut().unwrap().remove("ipam");
            }),
            7,
            "ipam",
        ),
        (
            "subnet /33",
            with(&[]),
            patch(&|c| c["ipam"]["subnet"] = json!("10.0.0.0/33")),
            7,
            "ipam.subnet",
        ),
        (
            "subnet garbage",
            with(&[]),
            patch(&|c| c["ipam"]["subnet"] = json!("not-a-subnet")),
            7,
            "ipam.subnet",
        ),
        (
            "gateway outside subnet",
            with(&[]),
            patch(&|c| c["ipam"]["gateway"] = json!("10.78.0.1")),
            7,
            "ipam.gateway",
        ),
        (
            "rangeEnd before rangeStart",
            with(&[]),
            patch(&|c| {
                c["ipam"]["rangeStart"] = json!("10.77.0.9");
                c["ipam"]["rangeEnd"] = json!("10.77.0.5");
            }),
            7,
            "rangeStart",
        ),
        (
            "foreign ipam type",
            with(&[]),
            patch(&|c| c["ipam"]["type"] = json!("dhcp")),
            7,
            "ipam.type",
        ),
        (
            "mtu too small",
            with(&[]),
            patch(&|c| c["mtu"] = json!(10)),
            7,
            "mtu",
        ),
        (
            "bridge name too long",
            with(&[]),
            patch(&|c| c["bridge"] = json!("a-very-long-bridge")),
            7,
            "bridge",
        ),
        (
            "sctp mapping",
            with(&[]),
            patch(
                &|c| c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}),
            ),
            7,
            "portMappings[0].protocol",
        ),
        (
            "hostPort 0",
            with(&[]),
            patch(&|c| {
                c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]})
            }),
            7,
            "portMappings[0].hostPort",
        ),
        // Hostile input (issue 17): each of these reached the netns (or the kernel)
        // before; now stdin and environment are refused first, with their codes.
        (
            "config then garbage",
            with(&[]),
            format!("{g}garbage{{{{"),
            6,
            "exactly one JSON object",
        ),
        (
            "config as a JSON array",
            with(&[]),
            json!(["1.0.0", "kerr", "kinc0", 1500, true, true, true,
                   {"subnet": "10.77.0.0/24", "dataDir": dir}, null, null, null, null])
            .to_string(),
            6,
            "JSON object",
        ),
        (
            "NUL in bridge",
            with(&[]),
            patch(&|c| c["bridge"] = json!("kinc0\u{0}x")),
            7,
            "bridge",
        ),
        (
            "route gateway outside the subnet",
            with(&[]),
            patch(&|c| c["ipam"]["routes"] = json!([{"dst": "192.0.2.0/24", "gw": "10.78.0.1"}])),
            7,
            "ipam.routes[0].gw",
        ),
        (
            "too many port mappings",
            with(&[]),
            patch(&|c| {
                let maps: Vec<Value> = (1..=2000)
                    .map(|p| json!({"hostPort": p, "containerPort": 80}))
                    .collect();
                c["runtimeConfig"] = json!({ "portMappings": maps });
            }),
            7,
            "runtimeConfig.portMappings",
        ),
        (
            "one host port to two container ports",
            with(&[]),
            patch(&|c| {
                c["runtimeConfig"] = json!({"portMappings": [
                    {"hostPort": 18080, "containerPort": 80},
                    {"hostPort": 18080, "containerPort": 81}]})
            }),
            7,
            "portMappings[1].hostPort",
        ),
        (
            "CNI_IFNAME the kernel refuses",
            with(&[("CNI_IFNAME", "default")]),
            g.to_string(),
            4,
            "CNI_IFNAME",
        ),
        (
            "CNI_COMMAND missing",
            with(&[("CNI_COMMAND", "")]),
            g.to_string(),
            4,
            "CNI_COMMAND",
        ),
        (
            "CNI_COMMAND unknown",
            with(&[("CNI_COMMAND", "FROB")]),
            g.to_string(),
            4,
            "FROB",
        ),
        (
            "CNI_NETNS missing",
            with(&[("CNI_NETNS", "")]),
            g.to_string(),
            4,
            "CNI_NETNS",
        ),
        (
            "CNI_NETNS path missing",
            with(&[]),
            g.to_string(),
            4,
            "CNI_NETNS",
        ),
        (
            "CNI_CONTAINERID missing",
            with(&[("CNI_CONTAINERID", "")]),
            g.to_string(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "CNI_CONTAINERID bad",
            with(&[("CNI_CONTAINERID", "../etc")]),
            g.to_string(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "CNI_IFNAME too long",
            with(&[("CNI_IFNAME", "eth0123456789012")]),
            g.to_string(),
            4,
            "CNI_IFNAME",
        ),
        (
            "CNI_ARGS bad IP",
            with(&[("CNI_ARGS", "IP=nope")]),
            g.to_string(),
            4,
            "CNI_ARGS",
        ),
        (
            "CHECK on 0.3.1",
            with(&[("CNI_COMMAND", "CHECK")]),
            patch(&|c| c["cniVersion"] = json!("0.3.1")),
            1,
            "CHECK",
        ),
        (
            "CHECK without prevResult",
            with(&[("CNI_COMMAND", "CHECK")]),
            g.to_string(),
            7,
            "prevResult",
        ),
        (
            "GC without valid-attachments",
            vec![("CNI_COMMAND", "GC")],
            gc_conf,
            7,
            "cni.dev/valid-attachments",
        ),
        (
            "STATUS with an unusable dataDir",
            vec![("CNI_COMMAND", "STATUS")],
            status_conf,
            50,
            "a-file",
        ),
    ];
    let mut failures = Vec::new();
    for (what, env, stdin, code, needle) in &cases {
        let (rc, j, raw) = run(env, stdin);
        let msg = j["msg"].as_str().unwrap_or("");
        if rc == 0 || j["code"] != json!(code) || !msg.contains(needle) || j["cniVersion"].is_null()
        {
            failures.push(format!(
                "{what}: rc {rc}, want code {code} and {needle:?}, got {raw}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn version_needs_nothing_but_the_command() {
    let (rc, j, _) = run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(rc, 0);
    assert_eq!(j["cniVersion"], "1.1.0");
    let (rc, j, _) = run(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
        ],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(rc, 0);
    assert_eq!(j["cniVersion"], "1.0.0");
    assert_eq!(
        j["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn help_teaches_usage() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("CNI_COMMAND") && s.contains("conflist"));
}

#[test]
fn version_flag_names_the_plugin() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("kincnet "), "{s}");
}
