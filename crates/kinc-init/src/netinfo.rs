//! The node container's own IPv4 address: the address of the interface that carries
//! the default route (podman's `eth0`, or `tap0` under slirp4netns).

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum NodeIpError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("listing interface addresses: {0}")]
    Ifaddrs(nix::Error),
    #[error("no IPv4 address found on {iface} (interfaces with IPv4: {seen})")]
    NoAddress { iface: String, seen: String },
    #[error(
        "no default route and no non-loopback IPv4 address: the node container has no network"
    )]
    NoNetwork,
}

/// The interface of the IPv4 default route in `/proc/net/route` text, if any.
pub fn default_route_iface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ... Mask: default = destination 0 and mask 0.
        (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// Picks the node IP: the default-route interface's first IPv4 address, else the
/// first non-loopback IPv4 address.
pub fn pick_node_ip(
    default_iface: Option<&str>,
    addrs: &[(String, Ipv4Addr)],
) -> Result<Ipv4Addr, NodeIpError> {
    if let Some(iface) = default_iface {
        return addrs
            .iter()
            .find(|(n, _)| n == iface)
            .map(|(_, a)| *a)
            .ok_or_else(|| NodeIpError::NoAddress {
                iface: iface.to_string(),
                seen: addrs
                    .iter()
                    .map(|(n, a)| format!("{n}={a}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
    }
    addrs
        .iter()
        .find(|(_, a)| !a.is_loopback())
        .map(|(_, a)| *a)
        .ok_or(NodeIpError::NoNetwork)
}

/// Reads the running system's routes and addresses.
pub fn detect_node_ip() -> Result<Ipv4Addr, NodeIpError> {
    let path = "/proc/net/route";
    let table = std::fs::read_to_string(path).map_err(|source| NodeIpError::Read {
        path: path.to_string(),
        source,
    })?;
    let iface = default_route_iface(&table);
    let mut addrs = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(NodeIpError::Ifaddrs)? {
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            addrs.push((ifa.interface_name.clone(), sin.ip()));
        }
    }
    pick_node_ip(iface.as_deref(), &addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t01005E0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t00005E0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn finds_default_iface() {
        assert_eq!(default_route_iface(TABLE).as_deref(), Some("eth0"));
        assert_eq!(default_route_iface("Iface\tDestination\n"), None);
    }

    #[test]
    fn picks_default_iface_address() {
        let addrs = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("kinc0".to_string(), Ipv4Addr::new(10, 244, 0, 1)),
            ("eth0".to_string(), Ipv4Addr::new(10, 88, 0, 7)),
        ];
        assert_eq!(
            pick_node_ip(Some("eth0"), &addrs).unwrap(),
            Ipv4Addr::new(10, 88, 0, 7)
        );
        assert_eq!(
            pick_node_ip(None, &addrs).unwrap(),
            Ipv4Addr::new(10, 244, 0, 1)
        );
        let err = pick_node_ip(Some("tap0"), &addrs).unwrap_err().to_string();
        assert!(
            err.contains("tap0") && err.contains("eth0=10.88.0.7"),
            "{err}"
        );
        assert!(matches!(
            pick_node_ip(None, &addrs[..1]),
            Err(NodeIpError::NoNetwork)
        ));
    }
}
