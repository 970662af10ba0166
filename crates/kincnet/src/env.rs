//! The CNI_* environment, read through a lookup function so tests can inject it.

use std::path::PathBuf;

use crate::config::validate_ifname;
use crate::error::{CniError, CniResult, Code};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// The environment of one invocation, checked for what its command needs.
#[derive(Clone, Debug)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `IP=` from CNI_ARGS (podman's `--ip`): a requested address.
    pub requested_ip: Option<std::net::Ipv4Addr>,
    /// `K8S_POD_NAMESPACE=` and `K8S_POD_NAME=` from CNI_ARGS (kubelet's runtime sets
    /// both): the pod NetworkPolicy may select. `None` for other runtimes (podman).
    pub pod: Option<PodRef>,
}

/// A Kubernetes pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// The parts of CNI_ARGS kincnet reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    ip: Option<std::net::Ipv4Addr>,
    pod: Option<PodRef>,
}

fn env_err(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidEnv, msg)
}

/// Reads just the command (VERSION needs nothing else).
pub fn command(get: &dyn Fn(&str) -> Option<String>) -> CniResult<Command> {
    let c = get("CNI_COMMAND")
        .ok_or_else(|| env_err("required env variables [CNI_COMMAND] missing"))?;
    Ok(match c.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "STATUS" => Command::Status,
        "GC" => Command::Gc,
        "VERSION" => Command::Version,
        other => return Err(env_err(format!("CNI_COMMAND: unknown command {other:?}"))),
    })
}

impl CniEnv {
    pub fn read(get: &dyn Fn(&str) -> Option<String>) -> CniResult<CniEnv> {
        let command = command(get)?;
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut missing = Vec::new();
        if needs_container {
            for k in ["CNI_CONTAINERID", "CNI_IFNAME"] {
                if non_empty(k).is_none() {
                    missing.push(k);
                }
            }
            // DEL may come after the runtime removed the netns; ADD and CHECK need it.
            if command != Command::Del && non_empty("CNI_NETNS").is_none() {
                missing.push("CNI_NETNS");
            }
        }
        if !missing.is_empty() {
            return Err(env_err(format!(
                "required env variables [{}] missing",
                missing.join(" ")
            )));
        }
        let container_id = non_empty("CNI_CONTAINERID").unwrap_or_default();
        let ifname = non_empty("CNI_IFNAME").unwrap_or_default();
        if needs_container {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname).map_err(|why| env_err(format!("CNI_IFNAME: {why}")))?;
        }
        let netns = non_empty("CNI_NETNS");
        if let Some(n) = &netns {
            // Only a library caller can pass one (environment strings end at NUL), and
            // the kernel would read a shorter path than the one reported.
            if n.contains('\0') {
                return Err(env_err(format!("CNI_NETNS: {n:?} contains a NUL byte")));
            }
        }
        let args = match get("CNI_ARGS") {
            Some(args) => parse_args(&args)?,
            None => Args::default(),
        };
        Ok(CniEnv {
            command,
            container_id,
            netns: netns.map(PathBuf::from),
            ifname,
            requested_ip: args.ip,
            pod: args.pod,
        })
    }
}

/// The spec's container ID rule: alphanumerics plus `_.-`, starting alphanumeric.
fn validate_container_id(id: &str) -> CniResult<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(env_err(format!(
            "CNI_CONTAINERID: {id:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}

/// CNI_ARGS is `K=V;K=V`. `IP`, `K8S_POD_NAMESPACE` and `K8S_POD_NAME` mean something
/// to kincnet; the rest (K8S_POD_UID, IgnoreUnknown, ...) is accepted and ignored. The
/// pod is known only when both its namespace and its name are given.
fn parse_args(args: &str) -> CniResult<Args> {
    let mut out = Args::default();
    let (mut ns, mut name) = (None, None);
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| env_err(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        match k {
            "IP" => {
                out.ip =
                    Some(v.parse().map_err(|_| {
                        env_err(format!("CNI_ARGS: IP={v:?} is not an IPv4 address"))
                    })?)
            }
            "K8S_POD_NAMESPACE" => ns = Some(object_name(k, v, 63)?),
            "K8S_POD_NAME" => name = Some(object_name(k, v, 253)?),
            _ => {}
        }
    }
    if let (Some(namespace), Some(name)) = (ns, name) {
        out.pod = Some(PodRef { namespace, name });
    }
    Ok(out)
}

/// A namespace (DNS label) or pod name (DNS subdomain) as the API server admits them.
fn object_name(key: &str, v: &str, max: usize) -> CniResult<String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_string())
    } else {
        Err(env_err(format!(
            "CNI_ARGS: {key}={v:?} is not a Kubernetes object name (lowercase alphanumerics, '-' and '.', at most {max} bytes)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> CniResult<CniEnv> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::read(&|k: &str| m.get(k).cloned())
    }

    #[test]
    fn add_needs_netns() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("CNI_NETNS"));
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let base = [("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/x")];
        for (k, v, needle) in [
            ("CNI_CONTAINERID", "-bad", "CNI_CONTAINERID"),
            ("CNI_IFNAME", "a/b", "CNI_IFNAME"),
            ("CNI_IFNAME", "sixteen-chars-xx", "CNI_IFNAME"),
            // Hostile input (issue 17, item 8): names the kernel refuses (EINVAL, after
            // the bridge was set up) or ends early.
            ("CNI_IFNAME", "default", "CNI_IFNAME"),
            ("CNI_IFNAME", "all", "CNI_IFNAME"),
            ("CNI_IFNAME", "eth\u{1}", "CNI_IFNAME"),
            ("CNI_IFNAME", "eth0\0x", "CNI_IFNAME"),
            ("CNI_NETNS", "/run/netns/a\0b", "CNI_NETNS"),
        ] {
            let mut p: Vec<(&str, &str)> = base.iter().copied().filter(|(b, _)| *b != k).collect();
            p.push((k, v));
            for (d, dv) in [("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")] {
                if k != d {
                    p.push((d, dv));
                }
            }
            let e = env(&p).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnv);
            assert!(e.msg.contains(needle), "{}", e.msg);
        }
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(e.msg.contains("FROB"));
    }

    #[test]
    fn args_ip() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=a;IP=10.0.0.9"),
        ])
        .unwrap();
        assert_eq!(e.requested_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(e.pod, None, "a name without a namespace is no pod");
    }

    #[test]
    fn args_pod() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ];
        let with = |args: &str| {
            let mut p = base.to_vec();
            p.push(("CNI_ARGS", args));
            env(&p)
        };
        let e =
            with("IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=pg-0;K8S_POD_UID=u").unwrap();
        assert_eq!(
            e.pod,
            Some(PodRef {
                namespace: "db".into(),
                name: "pg-0".into()
            })
        );
        for bad in [
            "K8S_POD_NAMESPACE=Db;K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=;K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=a;K8S_POD_NAME=a/b",
            "K8S_POD_NAMESPACE=a;K8S_POD_NAME=-a",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnv, "{bad}");
            assert!(e.msg.contains("K8S_POD_NAM"), "{bad}: {}", e.msg);
        }
        let long = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME=a", "a".repeat(64));
        assert_eq!(with(&long).unwrap_err().code, Code::InvalidEnv);
    }
}
