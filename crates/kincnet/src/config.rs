//! The network configuration kincnet reads on stdin (a network config or one conflist
//! entry), decoded into typed structs and validated, with defaults applied.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::error::{CniError, CniResult, Code};
use crate::result::{Dns, RawResult, Route};
use crate::version::Version;

/// Default bridge name, also the nftables table name prefix.
pub const DEFAULT_BRIDGE: &str = "kinc0";
/// Where allocations live unless `ipam.dataDir` says otherwise (one dir per network).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/kincnet";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    bridge: Option<String>,
    mtu: Option<u32>,
    is_gateway: Option<bool>,
    ip_masq: Option<bool>,
    hairpin_mode: Option<bool>,
    ipam: Option<RawIpam>,
    dns: Option<Dns>,
    runtime_config: Option<RawRuntimeConfig>,
    prev_result: Option<RawResult>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    kind: Option<String>,
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
    /// host-local's shape, accepted so a reference conflist converts by changing `type`.
    ranges: Option<Vec<Vec<RawRange>>>,
    routes: Option<Vec<RawRoute>>,
    data_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    port_mappings: Option<Vec<RawPortMapping>>,
}

/// containerd (go-cni) sends its mappings with Go's field names (`HostPort`, ...): Go's
/// JSON decoding ignores case, so the reference plugins accept both; so does kincnet (the
/// first real cluster's hostPort pods never got a sandbox without this).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPortMapping {
    #[serde(alias = "HostPort")]
    host_port: u32,
    #[serde(alias = "ContainerPort")]
    container_port: u32,
    #[serde(alias = "Protocol")]
    protocol: Option<String>,
    #[serde(rename = "hostIP", alias = "HostIP")]
    host_ip: Option<String>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// A validated `runtimeConfig.portMappings` entry (IPv4 only).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Proto,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

/// The IPv4 range kincnet allocates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipam {
    pub subnet: Ipv4Network,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
}

/// A validated network config with every default applied.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub bridge: String,
    pub mtu: Option<u32>,
    pub is_gateway: bool,
    pub ip_masq: bool,
    pub hairpin: bool,
    pub ipam: Ipam,
    pub dns: Option<Dns>,
    pub port_mappings: Vec<PortMapping>,
    pub prev_result: Option<RawResult>,
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(Code::InvalidConfig, format!("{field}: {why}"))
}

/// Reads only `cniVersion`, for answering errors in the version the caller used.
pub fn peek_version(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Peek>(bytes).ok()?.cni_version
}

/// Decodes and validates stdin. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> CniResult<NetConf> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: RawConf = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let what = if path == "." || path == "?" || path.is_empty() {
            "network config".to_string()
        } else {
            path
        };
        CniError::new(Code::Decode, format!("decoding {what}: {}", e.into_inner()))
    })?;
    let version_str = raw
        .cni_version
        .ok_or_else(|| invalid("cniVersion", "missing"))?;
    let version = Version::parse(&version_str)?;
    let name = raw.name.ok_or_else(|| invalid("name", "missing"))?;
    validate_name(&name)?;
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    validate_ifname(&bridge).map_err(|why| invalid("bridge", why))?;
    if let Some(mtu) = raw.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(invalid("mtu", format!("{mtu} is outside 68..65535")));
        }
    }
    let ipam = parse_ipam(raw.ipam, &name)?;
    let port_mappings = match raw.runtime_config.and_then(|r| r.port_mappings) {
        Some(list) => parse_port_mappings(list)?,
        None => Vec::new(),
    };
    Ok(NetConf {
        version,
        name,
        bridge,
        mtu: raw.mtu,
        is_gateway: raw.is_gateway.unwrap_or(true),
        ip_masq: raw.ip_masq.unwrap_or(true),
        hairpin: raw.hairpin_mode.unwrap_or(true),
        ipam,
        dns: raw.dns,
        port_mappings,
        prev_result: raw.prev_result,
        valid_attachments: raw.valid_attachments,
    })
}

fn validate_name(name: &str) -> CniResult<()> {
    // The name becomes a directory under dataDir: keep it to the spec's character set.
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ))
    }
}

/// Linux interface name rules (IFNAMSIZ, no '/', ':' or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 bytes long"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

fn parse_v4(field: &str, s: &str) -> CniResult<Ipv4Addr> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| invalid(field, format!("{s:?} is not an IPv4 address")))
}

fn parse_ipam(raw: Option<RawIpam>, name: &str) -> CniResult<Ipam> {
    let raw = raw.ok_or_else(|| invalid("ipam", "missing (kincnet needs ipam.subnet)"))?;
    if let Some(kind) = &raw.kind {
        if !matches!(kind.as_str(), "kincnet" | "host-local" | "") {
            return Err(invalid(
                "ipam.type",
                format!("{kind:?}: kincnet has its own IPAM; use \"kincnet\" or leave it out"),
            ));
        }
    }
    // Either the flat fields or host-local's first IPv4 range.
    let (prefix, range) = match (&raw.subnet, &raw.ranges) {
        (Some(_), _) => (
            "ipam".to_string(),
            RawRange {
                subnet: raw.subnet.clone(),
                range_start: raw.range_start.clone(),
                range_end: raw.range_end.clone(),
                gateway: raw.gateway.clone(),
            },
        ),
        (None, Some(ranges)) => {
            let found = ranges.iter().enumerate().find_map(|(i, set)| {
                set.iter().enumerate().find_map(|(j, r)| {
                    let s = r.subnet.as_deref()?;
                    s.parse::<Ipv4Network>().ok()?;
                    Some((i, j))
                })
            });
            let (i, j) =
                found.ok_or_else(|| invalid("ipam.ranges", "no IPv4 subnet in any range"))?;
            let r = &ranges[i][j];
            (
                format!("ipam.ranges[{i}][{j}]"),
                RawRange {
                    subnet: r.subnet.clone(),
                    range_start: r.range_start.clone(),
                    range_end: r.range_end.clone(),
                    gateway: r.gateway.clone(),
                },
            )
        }
        (None, None) => return Err(invalid("ipam.subnet", "missing")),
    };
    let subnet_s = range.subnet.as_deref().unwrap_or_default();
    let subnet_field = format!("{prefix}.subnet");
    let subnet: Ipv4Network = subnet_s
        .parse()
        .map_err(|_| invalid(&subnet_field, format!("{subnet_s:?} is not an IPv4 CIDR")))?;
    if subnet.prefix() > 30 {
        return Err(invalid(
            &subnet_field,
            format!("{subnet} leaves no room for a gateway and a pod (prefix > 30)"),
        ));
    }
    // Normalise 10.0.0.7/24 to 10.0.0.0/24.
    let subnet = Ipv4Network::new(subnet.network(), subnet.prefix()).expect("prefix checked");
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let in_subnet = |field: &str, ip: Ipv4Addr| -> CniResult<Ipv4Addr> {
        let v = u32::from(ip);
        if v < first || v > last {
            Err(invalid(
                field,
                format!("{ip} is not a host address of {subnet}"),
            ))
        } else {
            Ok(ip)
        }
    };
    let gateway = match &range.gateway {
        Some(g) => in_subnet(
            &format!("{prefix}.gateway"),
            parse_v4(&format!("{prefix}.gateway"), g)?,
        )?,
        None => Ipv4Addr::from(first),
    };
    let range_start = match &range.range_start {
        Some(s) => in_subnet(
            &format!("{prefix}.rangeStart"),
            parse_v4(&format!("{prefix}.rangeStart"), s)?,
        )?,
        None => Ipv4Addr::from(first),
    };
    let range_end = match &range.range_end {
        Some(s) => in_subnet(
            &format!("{prefix}.rangeEnd"),
            parse_v4(&format!("{prefix}.rangeEnd"), s)?,
        )?,
        None => Ipv4Addr::from(last),
    };
    if u32::from(range_start) > u32::from(range_end) {
        return Err(invalid(
            &format!("{prefix}.rangeStart"),
            format!("{range_start} is after rangeEnd {range_end}"),
        ));
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.unwrap_or_default().into_iter().enumerate() {
        let dst: Ipv4Network = match r.dst.parse::<ipnetwork::IpNetwork>() {
            Ok(ipnetwork::IpNetwork::V4(n)) => n,
            // IPv6 routes belong to a v6 range kincnet does not serve.
            Ok(ipnetwork::IpNetwork::V6(_)) => continue,
            Err(_) => {
                return Err(invalid(
                    &format!("ipam.routes[{i}].dst"),
                    format!("{:?} is not a CIDR", r.dst),
                ))
            }
        };
        let gw = match &r.gw {
            Some(g) => Some(parse_v4(&format!("ipam.routes[{i}].gw"), g)?),
            None => None,
        };
        routes.push(Route { dst, gw });
    }
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join(name);
    Ok(Ipam {
        subnet,
        range_start,
        range_end,
        gateway,
        routes,
        data_dir,
    })
}

fn parse_port_mappings(list: Vec<RawPortMapping>) -> CniResult<Vec<PortMapping>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let field = |f: &str| format!("runtimeConfig.portMappings[{i}].{f}");
        let port = |f: &str, v: u32| -> CniResult<u16> {
            match u16::try_from(v) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(invalid(&field(f), format!("{v} is not a port (1-65535)"))),
            }
        };
        let host_port = port("hostPort", m.host_port)?;
        let container_port = port("containerPort", m.container_port)?;
        let protocol = match m
            .protocol
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(p) => {
                return Err(invalid(
                    &field("protocol"),
                    format!("{p:?} is not supported (tcp or udp)"),
                ))
            }
        };
        let host_ip = match m.host_ip.as_deref() {
            None | Some("") | Some("0.0.0.0") => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => Some(ip),
                // Like portmap: a mapping for the other family does not apply to this network.
                Ok(IpAddr::V6(_)) => continue,
                Err(_) => {
                    return Err(invalid(
                        &field("hostIP"),
                        format!("{s:?} is not an IP address"),
                    ))
                }
            },
        };
        out.push(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ipam: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"n1","type":"kincnet","ipam":{ipam}}}"#)
    }

    #[test]
    fn defaults_apply() {
        let c = parse(conf(r#"{"subnet":"10.9.0.0/24"}"#).as_bytes()).unwrap();
        assert_eq!(c.bridge, "kinc0");
        assert!(c.is_gateway && c.ip_masq && c.hairpin);
        assert_eq!(c.ipam.gateway, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.ipam.range_start, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.ipam.range_end, Ipv4Addr::new(10, 9, 0, 254));
        assert_eq!(c.ipam.data_dir, PathBuf::from("/var/lib/cni/kincnet/n1"));
    }

    #[test]
    fn host_local_ranges_accepted() {
        let c = parse(
            conf(r#"{"type":"host-local","ranges":[[{"subnet":"fd00::/64"}],[{"subnet":"10.1.0.0/16","gateway":"10.1.0.254"}]]}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.ipam.subnet.to_string(), "10.1.0.0/16");
        assert_eq!(c.ipam.gateway, Ipv4Addr::new(10, 1, 0, 254));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, Code, &str)] = &[
            (r#"{"cniVersion":"1.0.0""#, Code::Decode, "EOF"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":"x","ipam":{}}"#,
                Code::Decode,
                "mtu",
            ),
            (
                &conf(r#"{"subnet":"10.0.0.0/33"}"#),
                Code::InvalidConfig,
                "ipam.subnet",
            ),
            (
                &conf(r#"{"subnet":"nope"}"#),
                Code::InvalidConfig,
                "ipam.subnet",
            ),
            (
                &conf(r#"{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}"#),
                Code::InvalidConfig,
                "ipam.rangeStart",
            ),
            (
                &conf(r#"{"type":"dhcp","subnet":"10.0.0.0/24"}"#),
                Code::InvalidConfig,
                "ipam.type",
            ),
            (&conf(r#"{}"#), Code::InvalidConfig, "ipam.subnet"),
            (
                r#"{"cniVersion":"9.9.9","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#,
                Code::IncompatibleVersion,
                "9.9.9",
            ),
            (
                r#"{"name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#,
                Code::InvalidConfig,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b","ipam":{"subnet":"10.0.0.0/24"}}"#,
                Code::InvalidConfig,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","bridge":"waytoolongbridgename","ipam":{"subnet":"10.0.0.0/24"}}"#,
                Code::InvalidConfig,
                "bridge",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}}"#,
                Code::InvalidConfig,
                "portMappings[0].hostPort",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"sctp"}]}}"#,
                Code::InvalidConfig,
                "protocol",
            ),
        ];
        for (input, code, needle) in cases {
            let err = parse(input.as_bytes()).expect_err(input);
            assert_eq!(err.code, *code, "{input}: {err:?}");
            assert!(
                err.msg.contains(needle),
                "{input}: {:?} lacks {needle}",
                err.msg
            );
        }
    }

    /// What containerd 1.7 sends (go-cni's field names, an empty HostIP).
    #[test]
    fn containerd_port_mappings_parse() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"kinc","type":"kincnet","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"portMappings":[{"HostPort":18080,"ContainerPort":8080,"Protocol":"tcp","HostIP":""}]}}"#).unwrap();
        assert_eq!(
            c.port_mappings,
            vec![PortMapping {
                host_port: 18080,
                container_port: 8080,
                protocol: Proto::Tcp,
                host_ip: None
            }]
        );
    }

    #[test]
    fn port_mappings_parse() {
        let c = parse(br#"{"cniVersion":"0.4.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"},{"hostPort":53,"containerPort":53,"protocol":"UDP"},{"hostPort":1,"containerPort":1,"hostIP":"::1"}]}}"#).unwrap();
        assert_eq!(
            c.port_mappings,
            vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Proto::Tcp,
                    host_ip: Some(Ipv4Addr::LOCALHOST)
                },
                PortMapping {
                    host_port: 53,
                    container_port: 53,
                    protocol: Proto::Udp,
                    host_ip: None
                },
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
            let _ = peek_version(&bytes);
        }

        #[test]
        fn parser_never_panics_on_near_valid_json(s in r#"\{"cniVersion":"(0\.4\.0|1\.[01]\.0)","name":"[a-z]{1,4}","ipam":\{"subnet":"[0-9./]{0,20}","rangeStart":"[0-9.]{0,16}"\},"mtu":[0-9]{0,6}\}"#) {
            let _ = parse(s.as_bytes());
        }
    }
}
