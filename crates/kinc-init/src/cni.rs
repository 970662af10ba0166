//! kincnet's conflist for the node's pod network (one bridge, the whole pod subnet).

use ipnetwork::Ipv4Network;
use kinc_types::node;
use serde::{Deserialize, Serialize};

pub const CNI_VERSION: &str = "1.0.0";
/// Where kincnet keeps its address allocations: on the `/var` volume, so a restarted
/// node does not hand out an address a surviving pod still holds.
pub const IPAM_DATA_DIR: &str = "/var/lib/cni/kincnet";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conflist {
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<KincnetPlugin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KincnetPlugin {
    #[serde(rename = "type")]
    pub kind: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub ip_masq: bool,
    pub hairpin_mode: bool,
    pub ipam: Ipam,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    pub subnet: Ipv4Network,
    pub routes: Vec<Route>,
    pub data_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub dst: Ipv4Network,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    pub port_mappings: bool,
}

impl Conflist {
    pub fn for_pod_subnet(pod_subnet: Ipv4Network) -> Self {
        Self {
            cni_version: CNI_VERSION.into(),
            name: node::KINCNET_NETWORK.into(),
            plugins: vec![KincnetPlugin {
                kind: "kincnet".into(),
                bridge: node::KINCNET_BRIDGE.into(),
                is_gateway: true,
                ip_masq: true,
                hairpin_mode: true,
                ipam: Ipam {
                    subnet: pod_subnet,
                    routes: vec![Route {
                        dst: Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 0)
                            .expect("0.0.0.0/0 is valid"),
                    }],
                    data_dir: IPAM_DATA_DIR.into(),
                },
                capabilities: Capabilities {
                    port_mappings: true,
                },
            }],
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("conflist always serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_carries_the_pod_subnet() {
        let subnet: Ipv4Network = "10.244.45.0/24".parse().unwrap();
        let text = Conflist::for_pod_subnet(subnet).to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &v["plugins"][0];
        assert_eq!(v["name"], "kinc");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(p["type"], "kincnet");
        assert_eq!(p["bridge"], "kinc0");
        assert_eq!(p["isGateway"], true);
        assert_eq!(p["ipMasq"], true);
        assert_eq!(p["hairpinMode"], true);
        assert_eq!(p["ipam"]["subnet"], "10.244.45.0/24");
        assert_eq!(p["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(p["ipam"]["dataDir"], IPAM_DATA_DIR);
        assert_eq!(p["capabilities"]["portMappings"], true);
        let back: Conflist = serde_json::from_str(&text).unwrap();
        assert_eq!(back.plugins[0].ipam.subnet, subnet);
    }
}
