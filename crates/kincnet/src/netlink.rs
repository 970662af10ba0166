//! A small synchronous rtnetlink client: one NETLINK_ROUTE socket, one request at a
//! time, every request acknowledged. Messages are typed by `netlink-packet-route`.
//!
//! Synchronous on purpose: a CNI call does a handful of requests in order, so an async
//! runtime would add start-up time and memory and buy nothing. A socket belongs to the
//! network namespace it was opened in, whichever thread uses it later: that is how the
//! pod side is configured from the main thread (see [`Netlink::open_in`]).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnetwork::Ipv4Network;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour_table::{
    NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// A failed netlink request: what was asked and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NlError {
    pub op: String,
    #[source]
    pub source: io::Error,
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
    pub fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

pub type NlResult<T> = Result<T, NlError>;

/// A main-table IPv4 route: destination, gateway, output interface.
pub type RouteEntry = (Ipv4Network, Option<Ipv4Addr>, Option<u32>);

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// A link as kincnet needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub controller: Option<u32>,
    pub up: bool,
    pub mtu: Option<u32>,
    /// `IFLA_INFO_KIND` ("bridge", "veth", ...); `None` for a link without one (lo, a NIC).
    pub kind: Option<String>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn to_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: [0; 6],
        controller: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => l.mac.copy_from_slice(a),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::Mtu(m) => l.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero = let the kernel pick the port.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Ask for extended acks so the kernel's reason comes back when it gives one.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                &one as *const _ as *const libc::c_void,
                4,
            )
        };
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket in the network namespace `ns`, opened on a short-lived thread that
    /// joins `ns` and then ends, so no thread of this process stays in another netns.
    pub fn open_in(ns: &File) -> io::Result<Netlink> {
        let raw = ns.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only; the thread ends right after.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        // SAFETY: out is a valid buffer of out.len() bytes; the socket is connected to the kernel.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Sends one request and collects its answers until the ack (or DONE for dumps).
    fn request(
        &mut self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        let seq = match self.send(msg, flags) {
            Ok(s) => s,
            Err(source) => return Err(NlError { op: op(), source }),
        };
        let mut answers = Vec::new();
        loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError {
                    op: op(),
                    source: e,
                });
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > n {
                    break;
                }
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len]);
                off += (len + 3) & !3;
                let m = match parsed {
                    Ok(m) => m,
                    // An attribute this crate version cannot decode: skip that message.
                    Err(_) => continue,
                };
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(code) => Err(NlError {
                                op: op(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            || format!("get link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        ) {
            Ok(answers) => Ok(answers.iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let m = LinkMessage::default();
        let answers = self.request(
            || "dump links".to_string(),
            RouteNetlinkMessage::GetLink(m),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge, up, with a fixed MAC (so it does not follow its ports').
    /// `Ok(false)` when another caller created it first.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> NlResult<bool> {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            || format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn set_up(&mut self, index: u32) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(
            || format!("set link {index} up"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
        .map(drop)
    }

    /// Creates a veth pair in one request: `host` here, enslaved to `controller`; its
    /// peer `peer` created directly inside the netns `peer_ns`. Both ends stay down.
    #[allow(clippy::too_many_arguments)]
    pub fn create_veth(
        &mut self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &File,
        mtu: Option<u32>,
        controller: u32,
    ) -> NlResult<()> {
        // Not up yet: veth_open fails with ENOTCONN until both ends are registered.
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::Address(host_mac.to_vec()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
            p.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::Controller(controller));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            || format!("create veth {host} with peer {peer}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Brings a bridge port up, isolated if asked, with hairpin mode on if asked (so a pod can
    /// reach itself through a DNAT), in one request. Isolated ports exchange no frames
    /// with each other, only with the bridge itself: pod-to-pod traffic is routed by
    /// the node (see `ensure_bridge`), so policy and Service NAT see every packet.
    pub fn set_port_up(&mut self, index: u32, isolated: bool, hairpin: bool) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        let mut port = vec![InfoBridgePort::Isolated(isolated)];
        if hairpin {
            port.push(InfoBridgePort::HairpinMode(true));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(port)),
        ]));
        // RTM_NEWLINK on an existing link is the path that applies port (slave) data.
        self.request(
            || format!("set bridge port {index} up (isolated {isolated}, hairpin {hairpin})"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
        .map(drop)
    }

    /// Makes the link answer proxied ARP requests at once instead of after a random
    /// delay of up to 0.8 s. Through netlink, because a netns owned by a user namespace
    /// (a rootless node) has no `net/ipv4/neigh` sysctls.
    pub fn set_arp_proxy_delay_zero(&mut self, index: u32) -> NlResult<()> {
        let mut m = NeighbourTableMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes = vec![
            NeighbourTableAttribute::Name("arp_cache".into()),
            NeighbourTableAttribute::Parms(vec![
                NeighbourTableParameter::Ifindex(index),
                NeighbourTableParameter::ProxyDelay(0),
            ]),
        ];
        self.request(
            || format!("set the ARP proxy delay of link {index} to 0"),
            RouteNetlinkMessage::SetNeighbourTable(m),
            0,
        )
        .map(drop)
    }

    /// Deletes a link by name; `Ok(false)` if there was none.
    pub fn del_link_by_name(&mut self, name: &str) -> NlResult<bool> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            || format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds an IPv4 address; an identical existing one is fine.
    pub fn add_addr(&mut self, index: u32, net: Ipv4Network) -> NlResult<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = net.prefix();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(net.ip().into()));
        m.attributes
            .push(AddressAttribute::Address(net.ip().into()));
        m.attributes
            .push(AddressAttribute::Broadcast(net.broadcast()));
        match self.request(
            || format!("add address {net} to link {index}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses on a link.
    pub fn addrs_v4(&mut self, index: u32) -> NlResult<Vec<Ipv4Network>> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        let answers = self.request(
            || "dump addresses".to_string(),
            RouteNetlinkMessage::GetAddress(m),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => {
                            Ipv4Network::new(*ip, a.header.prefix_len).ok()
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route in the main table; an existing identical one is fine.
    pub fn add_route(&mut self, dst: Ipv4Network, gw: Option<Ipv4Addr>, oif: u32) -> NlResult<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = dst.prefix();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if dst.prefix() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    dst.network(),
                )));
        }
        if let Some(gw) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        match self.request(
            || format!("add route {dst} via {gw:?} dev {oif}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// IPv4 routes of the main table: (dst, gw, oif).
    pub fn routes_v4(&mut self) -> NlResult<Vec<RouteEntry>> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        let answers = self.request(
            || "dump routes".to_string(),
            RouteNetlinkMessage::GetRoute(m),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewRoute(r) = a else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut oif = None;
            for at in &r.attributes {
                match at {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    _ => {}
                }
            }
            if let Ok(n) = Ipv4Network::new(dst, r.header.destination_prefix_length) {
                out.push((n, gw, oif));
            }
        }
        Ok(out)
    }
}
