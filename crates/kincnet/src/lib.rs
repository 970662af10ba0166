//! kincnet: a CNI 1.1 bridge plugin with built-in IPAM and an nf_tables firewall.
//!
//! The protocol lives in [`config`], [`result`], [`version`], [`env`](mod@env) and [`error`];
//! the kernel work (links, addresses, routes, entering the pod netns) in [`netlink`]; allocations in [`ipam`]; the
//! commands in [`plugin`].

pub mod config;
pub mod env;
pub mod error;
pub mod firewall;
pub mod gate;
pub mod ipam;
pub mod netlink;
pub mod plugin;
pub mod result;
pub mod version;

#[cfg(test)]
mod hostile_props;

/// `kincnet --help`.
pub const HELP: &str = "\
kincnet: a CNI 1.1 bridge plugin (bridge + veth + built-in IPAM + nftables NAT).

It is run by a container runtime, not by hand: the runtime sets CNI_COMMAND
(ADD, DEL, CHECK, STATUS, GC, VERSION), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and
CNI_ARGS, writes the network config on stdin and reads the result from stdout.

Example conflist entry (e.g. /etc/cni/net.d/10-kinc.conflist):
  {\"cniVersion\": \"1.0.0\", \"name\": \"kinc\", \"plugins\": [{
     \"type\": \"kincnet\", \"bridge\": \"kinc0\", \"mtu\": 1500,
     \"isGateway\": true, \"ipMasq\": true, \"hairpinMode\": true,
     \"capabilities\": {\"portMappings\": true},
     \"ipam\": {\"subnet\": \"10.244.0.0/24\", \"routes\": [{\"dst\": \"0.0.0.0/0\"}],
              \"dataDir\": \"/var/lib/cni/kincnet\"}}]}

Try it by hand in a scratch netns:
  ip netns add p1
  echo '{\"cniVersion\":\"1.0.0\",\"name\":\"t\",\"type\":\"kincnet\",\"ipam\":{\"subnet\":\"10.99.0.0/24\"}}' |
    CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/p1 CNI_IFNAME=eth0 kincnet

Errors are the spec's JSON on stdout ({\"code\":7,\"msg\":\"ipam.subnet: ...\"}) with exit 1.
";
