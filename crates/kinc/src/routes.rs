//! The host's IPv4 routes, read from `/proc/net/route` (the main table) so the
//! allocator never hands a cluster a subnet the host already routes somewhere.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnetwork::Ipv4Network;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {msg}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
}

pub const PROC_NET_ROUTE: &str = "/proc/net/route";

/// Reads the routed destinations (the default route left out: it covers everything).
pub fn host_routes(path: &Path) -> Result<Vec<Ipv4Network>, RouteError> {
    let text = std::fs::read_to_string(path).map_err(|source| RouteError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_proc_net_route(&text, &path.display().to_string())
}

/// Parses the kernel's table: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`,
/// addresses as hex in host (little-endian) byte order.
pub fn parse_proc_net_route(text: &str, path: &str) -> Result<Vec<Ipv4Network>, RouteError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let err = |msg: String| RouteError::Parse {
            path: path.to_string(),
            line: i + 1,
            msg,
        };
        if f.len() < 8 {
            return Err(err(format!(
                "expected at least 8 fields, found {}",
                f.len()
            )));
        }
        let dest = hex_addr(f[1]).ok_or_else(|| err(format!("bad destination {:?}", f[1])))?;
        let mask = hex_addr(f[7]).ok_or_else(|| err(format!("bad mask {:?}", f[7])))?;
        let prefix = u32::from(mask).count_ones() as u8;
        if prefix == 0 {
            continue;
        }
        let net = Ipv4Network::new(dest, prefix).map_err(|e| err(e.to_string()))?;
        out.push(net);
    }
    Ok(out)
}

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Ipv4Addr::from(v.swap_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
cni0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    #[test]
    fn parses_routes_without_default() {
        let r = parse_proc_net_route(SAMPLE, "x").unwrap();
        assert_eq!(
            r,
            vec![
                "10.0.2.0/24".parse::<Ipv4Network>().unwrap(),
                "10.88.0.0/16".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let e = parse_proc_net_route("h\neth0 zz\n", "/proc/net/route").unwrap_err();
        assert!(e.to_string().starts_with("/proc/net/route line 2"), "{e}");
    }

    #[test]
    fn reads_the_real_table() {
        // Whatever this host routes, the file parses.
        host_routes(Path::new(PROC_NET_ROUTE)).unwrap();
    }
}
