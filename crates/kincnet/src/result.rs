//! CNI results: what ADD prints, and the `prevResult` CHECK and DEL receive.
//! One wire struct covers 0.3.x-1.1.0; `render` emits the shape of the version asked for.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::version::Version;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A validated IPv4 route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct IpConfig {
    /// Only in results before 1.0.0 ("4" or "6").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RouteWire {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// A result as it travels on the wire (also `prevResult`, which may come from any version).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RawResult {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteWire>,
    #[serde(default)]
    pub dns: Dns,
}

/// What ADD set up, before it is rendered for a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddOutcome {
    pub bridge: (String, String),
    pub host_veth: (String, String),
    pub container: (String, String),
    pub sandbox: String,
    pub address: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
    pub mtu: Option<u32>,
}

impl AddOutcome {
    pub fn render(&self, v: Version) -> RawResult {
        let iface = |(name, mac): &(String, String), sandbox: Option<&str>| Interface {
            name: name.clone(),
            mac: mac.clone(),
            // Interface MTU is a 1.1.0 field.
            mtu: if v >= Version::V110 { self.mtu } else { None },
            sandbox: sandbox.map(str::to_string),
        };
        RawResult {
            cni_version: Some(v.as_str().to_string()),
            interfaces: vec![
                iface(&self.bridge, None),
                iface(&self.host_veth, None),
                iface(&self.container, Some(&self.sandbox)),
            ],
            ips: vec![IpConfig {
                version: v.ip_has_version_field().then(|| "4".to_string()),
                address: self.address.to_string(),
                gateway: Some(self.gateway.to_string()),
                interface: Some(2),
            }],
            routes: self
                .routes
                .iter()
                .map(|r| RouteWire {
                    dst: r.dst.to_string(),
                    gw: r.gw.map(|g| g.to_string()),
                })
                .collect(),
            dns: self.dns.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> AddOutcome {
        AddOutcome {
            bridge: ("kinc0".into(), "02:00:00:00:00:01".into()),
            host_veth: ("kn1234".into(), "02:00:00:00:00:02".into()),
            container: ("eth0".into(), "02:00:00:00:00:03".into()),
            sandbox: "/run/netns/x".into(),
            address: "10.9.0.2/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some(Ipv4Addr::new(10, 9, 0, 1)),
            }],
            dns: None,
            mtu: Some(1400),
        }
    }

    #[test]
    fn renders_per_version() {
        let o = outcome();
        let v04 = serde_json::to_value(o.render(Version::V040)).unwrap();
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][2].get("mtu").is_none());
        let v10 = serde_json::to_value(o.render(Version::V100)).unwrap();
        assert!(v10["ips"][0].get("version").is_none());
        assert_eq!(v10["cniVersion"], "1.0.0");
        assert_eq!(v10["ips"][0]["address"], "10.9.0.2/24");
        assert_eq!(v10["ips"][0]["interface"], 2);
        assert_eq!(v10["interfaces"][2]["sandbox"], "/run/netns/x");
        assert_eq!(v10["routes"][0]["dst"], "0.0.0.0/0");
        let v11 = serde_json::to_value(o.render(Version::V110)).unwrap();
        assert_eq!(v11["interfaces"][2]["mtu"], 1400);
    }

    #[test]
    fn prev_result_round_trips() {
        let r = outcome().render(Version::V040);
        let back: RawResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
