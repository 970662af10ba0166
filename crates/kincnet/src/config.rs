//! The network configuration kincnet reads on stdin (a network config or one conflist
//! entry), decoded into typed structs and validated, with defaults applied.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{CniError, CniResult, Code};
use crate::result::{Dns, RawResult, Route};
use crate::version::Version;

/// Default bridge name, also the nftables table name prefix.
pub const DEFAULT_BRIDGE: &str = "kinc0";
/// Where allocations live unless `ipam.dataDir` says otherwise (one dir per network).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/kincnet";
/// The largest stdin kincnet reads. A network config is a few kB; GC's attachment list of
/// a full node stays far below this. Anything larger is refused, not held in memory.
pub const MAX_STDIN: usize = 16 << 20;
/// Port mappings one attachment may ask for. Far above any real pod, and small enough
/// that the nf_tables batch, the IPAM record and DEL's per-mapping lookups stay cheap.
pub const MAX_PORT_MAPPINGS: usize = 1024;
/// Routes one attachment may ask for (one netlink request each).
pub const MAX_ROUTES: usize = 1024;

/// A value that must be a JSON object. serde's derived structs also accept a JSON array
/// (fields by position): a runtime never sends one, and accepting it turned a malformed
/// stdin into a working config.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

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
    policy_socket: Option<PathBuf>,
    policy_timeout_ms: Option<u64>,
    ipam: Option<Obj<RawIpam>>,
    dns: Option<Obj<Dns>>,
    runtime_config: Option<Obj<RawRuntimeConfig>>,
    prev_result: Option<Obj<RawResult>>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Obj<Attachment>>>,
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
    ranges: Option<Vec<Vec<Obj<RawRange>>>>,
    routes: Option<Vec<Obj<RawRoute>>>,
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
    port_mappings: Option<Vec<Obj<RawPortMapping>>>,
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
    /// kincnet-policy's socket (`policySocket`, default `kinc_types::policy_gate::SOCKET`).
    pub policy_socket: PathBuf,
    /// How long ADD waits for kincnet-policy (`policyTimeoutMs`, default 10 s).
    pub policy_timeout: std::time::Duration,
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

/// Decodes and validates stdin. Never panics, whatever the bytes. Everything a later
/// kernel call could refuse for a reason found in the config is refused here, with
/// code 6 (not JSON, or a field of the wrong type) or 7 (a value that cannot work).
pub fn parse(bytes: &[u8]) -> CniResult<NetConf> {
    if bytes.len() > MAX_STDIN {
        return Err(CniError::new(
            Code::Decode,
            format!("decoding network config: stdin holds more than {MAX_STDIN} bytes"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: Obj<RawConf> = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let what = if path == "." || path == "?" || path.is_empty() {
            "network config".to_string()
        } else {
            path
        };
        CniError::new(Code::Decode, format!("decoding {what}: {}", e.into_inner()))
    })?;
    // Exactly one object: bytes after it mean the runtime and kincnet disagree on
    // what was sent.
    de.end().map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("decoding network config: {e} (stdin must be exactly one JSON object)"),
        )
    })?;
    let raw = raw.0;
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
    let ipam = parse_ipam(raw.ipam.map(|o| o.0), &name)?;
    let policy_socket = raw
        .policy_socket
        .unwrap_or_else(|| PathBuf::from(kinc_types::policy_gate::SOCKET));
    validate_socket_path(&policy_socket)?;
    let timeout_ms = raw
        .policy_timeout_ms
        .unwrap_or(kinc_types::policy_gate::DEFAULT_TIMEOUT_MS);
    if !(1..=600_000).contains(&timeout_ms) {
        return Err(invalid(
            "policyTimeoutMs",
            format!("{timeout_ms} is outside 1..600000"),
        ));
    }
    let port_mappings = match raw.runtime_config.and_then(|r| r.0.port_mappings) {
        Some(list) => parse_port_mappings(list.into_iter().map(|o| o.0).collect())?,
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
        policy_socket,
        policy_timeout: std::time::Duration::from_millis(timeout_ms),
        ipam,
        dns: raw.dns.map(|o| o.0),
        port_mappings,
        prev_result: raw.prev_result.map(|o| o.0),
        valid_attachments: raw
            .valid_attachments
            .map(|v| v.into_iter().map(|o| o.0).collect()),
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

/// Linux interface name rules: IFNAMSIZ, no '/', ':' or whitespace (`dev_valid_name`),
/// no control character (a NUL ends the name in the kernel, so "kinc0\0x" would name
/// kinc0), and not "all" or "default", which the kernel refuses because they are the
/// names of `net/ipv4/conf`'s own entries.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 bytes long"));
    }
    if matches!(name, "." | ".." | "all" | "default")
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// Address blocks a pod subnet must not overlap: "this network", loopback (127/8 is
/// routed to lo whatever the bridge says), multicast and the reserved block up to the
/// broadcast address (not assignable to an interface as unicast addresses).
const NOT_POD_SUBNETS: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(224, 0, 0, 0), 3),
];

fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
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
                    let s = r.0.subnet.as_deref()?;
                    s.parse::<Ipv4Network>().ok()?;
                    Some((i, j))
                })
            });
            let (i, j) =
                found.ok_or_else(|| invalid("ipam.ranges", "no IPv4 subnet in any range"))?;
            let r = &ranges[i][j].0;
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
    for (net, len) in NOT_POD_SUBNETS {
        let block = Ipv4Network::new(net, len).expect("constant prefix");
        if overlaps(subnet, block) {
            return Err(invalid(
                &subnet_field,
                format!("{subnet} overlaps {block}, which cannot hold pod addresses"),
            ));
        }
    }
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
    let raw_routes = raw.routes.unwrap_or_default();
    if raw_routes.len() > MAX_ROUTES {
        return Err(invalid(
            "ipam.routes",
            format!("{} routes; at most {MAX_ROUTES}", raw_routes.len()),
        ));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw_routes.into_iter().map(|o| o.0).enumerate() {
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
        // The kernel keys a route by its network: 10.1.2.3/16 is 10.1.0.0/16.
        let dst = Ipv4Network::new(dst.network(), dst.prefix()).expect("prefix from a CIDR");
        // The pod's only link is on the subnet: a gateway elsewhere is unreachable
        // (the kernel says ENETUNREACH, after the veth exists).
        let gw = match &r.gw {
            Some(g) => {
                let f = format!("ipam.routes[{i}].gw");
                Some(in_subnet(&f, parse_v4(&f, g)?)?)
            }
            None => None,
        };
        // A second route to the same destination would fail with EEXIST in the pod.
        if let Some(j) = routes.iter().position(|o| o.dst == dst) {
            return Err(invalid(
                &format!("ipam.routes[{i}].dst"),
                format!("{dst} is already routed by ipam.routes[{j}]"),
            ));
        }
        routes.push(Route { dst, gw });
    }
    // IPAM never hands out the gateway or a route's gateway: a range of nothing else
    // could serve no pod, which ADD would find only as "no address available".
    let in_range = |ip: &Ipv4Addr| (range_start..=range_end).contains(ip);
    let reserved: std::collections::BTreeSet<Ipv4Addr> = std::iter::once(gateway)
        .chain(routes.iter().filter_map(|r| r.gw))
        .filter(in_range)
        .collect();
    let size = u64::from(u32::from(range_end) - u32::from(range_start)) + 1;
    if size <= reserved.len() as u64 {
        return Err(invalid(
            &format!("{prefix}.rangeStart"),
            format!(
                "{range_start}-{range_end} holds no address for a pod (the gateway and \
                 route gateways are not handed out)"
            ),
        ));
    }
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    validate_data_dir(&data_dir)?;
    let data_dir = data_dir.join(name);
    Ok(Ipam {
        subnet,
        range_start,
        range_end,
        gateway,
        routes,
        data_dir,
    })
}

/// `dataDir` holds the IPAM store: an absolute path (a plugin's working directory is
/// whatever the runtime's was) without NUL, of a length the kernel takes.
fn validate_data_dir(dir: &std::path::Path) -> CniResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    let why = if !dir.is_absolute() {
        "must be an absolute path"
    } else if bytes.contains(&0) {
        "must not contain a NUL byte"
    } else if bytes.len() > 3072 {
        "is longer than 3072 bytes"
    } else {
        return Ok(());
    };
    Err(invalid(
        "ipam.dataDir",
        format!("{:?} {why}", dir.display()),
    ))
}

/// A Unix socket path: absolute, no NUL, and short enough for `sun_path` (108 bytes).
fn validate_socket_path(p: &std::path::Path) -> CniResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    let why = if !p.is_absolute() {
        "must be an absolute path"
    } else if bytes.contains(&0) {
        "must not contain a NUL byte"
    } else if bytes.len() > 107 {
        "is longer than a Unix socket path can be (107 bytes)"
    } else {
        return Ok(());
    };
    Err(invalid("policySocket", format!("{:?} {why}", p.display())))
}

fn parse_port_mappings(list: Vec<RawPortMapping>) -> CniResult<Vec<PortMapping>> {
    if list.len() > MAX_PORT_MAPPINGS {
        return Err(invalid(
            "runtimeConfig.portMappings",
            format!("{} mappings; at most {MAX_PORT_MAPPINGS}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    // (hostIP, protocol, hostPort) -> index of the entry that maps it.
    let mut seen: BTreeMap<(Option<Ipv4Addr>, Proto, u16), (usize, u16)> = BTreeMap::new();
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
        // One host port leads to one place. The same entry twice (a runtime merging two
        // lists) is kept once: twice in the firewall's batch, it made every DEL fail.
        match seen.get(&(host_ip, protocol, host_port)) {
            Some((_, c)) if *c == container_port => continue,
            Some((j, c)) => {
                return Err(invalid(
                    &field("hostPort"),
                    format!(
                        "{host_port}/{} is already mapped to containerPort {c} by \
                         runtimeConfig.portMappings[{j}]",
                        proto_name(protocol)
                    ),
                ))
            }
            None => {
                seen.insert((host_ip, protocol, host_port), (i, container_port));
            }
        }
        out.push(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        });
    }
    Ok(out)
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
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

    /// Hostile input (issue 17): each of these passed validation, and the kernel, a
    /// later call or nobody found the problem. (input, code, words of the message)
    #[test]
    fn hostile_configs_get_the_spec_codes() {
        let base = r#""cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"}"#;
        let with = |extra: &str| format!("{{{base}{extra}}}");
        let maps = |n: usize| {
            let v: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"hostPort":{},"containerPort":80}}"#, 1 + i))
                .collect();
            with(&format!(
                r#","runtimeConfig":{{"portMappings":[{}]}}"#,
                v.join(",")
            ))
        };
        let cases: Vec<(String, Code, &str)> = vec![
            // Item 5: the kernel ends a name at NUL, so this named the link "kinc0".
            (with(r#","bridge":"kinc0\u0000x""#), Code::InvalidConfig, "bridge"),
            (with(r#","bridge":"br\u0007""#), Code::InvalidConfig, "bridge"),
            (with(r#","bridge":"default""#), Code::InvalidConfig, "bridge"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.1"}}"#.into(),
                Code::InvalidConfig,
                "holds no address",
            ),
            // Item 7: one JSON object and nothing else.
            (format!("{{{base}}}garbage{{{{"), Code::Decode, "exactly one JSON object"),
            (format!("{{{base}}}{{{base}}}"), Code::Decode, "exactly one JSON object"),
            (
                r#"["1.0.0","n","kinc0",1500,true,true,true,{"subnet":"10.0.0.0/24"},null,null,null,null]"#.into(),
                Code::Decode,
                "JSON object",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":["kincnet","10.0.0.0/24"]}"#.into(),
                Code::Decode,
                "ipam",
            ),
            (
                with(r#","runtimeConfig":{"portMappings":[[18080,80]]}"#),
                Code::Decode,
                "portMappings[0]",
            ),
            // Item 8: a route the pod could never use.
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"192.0.2.0/24","gw":"10.9.0.1"}]}}"#.into(),
                Code::InvalidConfig,
                "ipam.routes[0].gw",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"192.0.2.0/24"},{"dst":"192.0.2.9/24"}]}}"#.into(),
                Code::InvalidConfig,
                "ipam.routes[1].dst",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"127.0.0.0/24"}}"#.into(),
                Code::InvalidConfig,
                "ipam.subnet",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"224.0.0.0/24"}}"#.into(),
                Code::InvalidConfig,
                "ipam.subnet",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","dataDir":"relative/dir"}}"#.into(),
                Code::InvalidConfig,
                "ipam.dataDir",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","dataDir":"/x\u0000y"}}"#.into(),
                Code::InvalidConfig,
                "ipam.dataDir",
            ),
            // Item 3: bounded, with a code-7 error instead of an abort.
            (maps(MAX_PORT_MAPPINGS + 1), Code::InvalidConfig, "at most 1024"),
            // Item 2: one host port, two destinations.
            (
                with(r#","runtimeConfig":{"portMappings":[{"hostPort":18080,"containerPort":80},{"hostPort":18080,"containerPort":81}]}"#),
                Code::InvalidConfig,
                "portMappings[1].hostPort",
            ),
        ];
        for (input, code, needle) in &cases {
            let err = parse(input.as_bytes()).expect_err(input);
            assert_eq!(err.code, *code, "{input}: {err:?}");
            assert!(
                err.msg.contains(needle),
                "{input}: {:?} lacks {needle}",
                err.msg
            );
        }
        assert_eq!(
            parse(maps(MAX_PORT_MAPPINGS).as_bytes())
                .unwrap()
                .port_mappings
                .len(),
            MAX_PORT_MAPPINGS
        );
        let big = vec![b' '; MAX_STDIN + 1];
        assert_eq!(parse(&big).unwrap_err().code, Code::Decode);
    }

    /// Item 2: the same mapping twice is kept once.
    #[test]
    fn duplicate_mappings_are_kept_once() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"portMappings":[{"hostPort":18080,"containerPort":80},{"hostPort":18080,"containerPort":80,"protocol":"TCP"},{"hostPort":18080,"containerPort":80,"protocol":"udp"}]}}"#).unwrap();
        assert_eq!(c.port_mappings.len(), 2);
        // Whitespace after the object is fine; the route's host bits are dropped.
        let c = parse(b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"ipam\":{\"subnet\":\"10.0.0.0/24\",\"routes\":[{\"dst\":\"192.0.2.7/24\",\"gw\":\"10.0.0.9\"}]}}\n \t").unwrap();
        assert_eq!(c.ipam.routes[0].dst.to_string(), "192.0.2.0/24");
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
