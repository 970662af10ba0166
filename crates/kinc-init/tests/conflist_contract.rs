//! The conflist kinc-init writes must be one that kincnet accepts as it stands: the two
//! crates meet only in this file inside the node, so check the contract here.

use kinc_init::cni::{Conflist, IPAM_DATA_DIR};

#[test]
fn kincnet_accepts_the_conflist_kinc_init_writes() {
    let subnet = "10.64.32.0/20".parse().unwrap();
    let list: serde_json::Value = serde_json::from_str(&Conflist::for_pod_subnet(subnet).to_json())
        .expect("the conflist is JSON");
    // What a runtime (libcni) hands the plugin: the entry plus the list's name and version.
    let mut entry = list["plugins"][0].clone();
    entry["name"] = list["name"].clone();
    entry["cniVersion"] = list["cniVersion"].clone();
    let bytes = serde_json::to_vec(&entry).unwrap();

    let conf = kincnet::config::parse(&bytes)
        .unwrap_or_else(|e| panic!("kincnet rejects kinc-init's conflist: {e:?}"));
    assert_eq!(conf.name, kinc_types::node::KINCNET_NETWORK);
    assert_eq!(conf.bridge, kinc_types::node::KINCNET_BRIDGE);
    assert_eq!(conf.ipam.subnet, subnet);
    assert!(
        conf.ipam.data_dir.starts_with(IPAM_DATA_DIR),
        "{:?}",
        conf.ipam.data_dir
    );
    assert!(conf.is_gateway && conf.ip_masq && conf.hairpin);
}
