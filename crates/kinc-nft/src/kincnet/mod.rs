//! kincnet's firewall: masquerade of the pod subnet and hostPort DNAT, in a table
//! kincnet owns. Per-network rules are installed once by [`NetworkFirewall::ensure`];
//! a pod's port mappings are map elements, so a pod costs no rule and a pod without
//! mappings costs no netlink traffic at all. Everything acts in the calling thread's
//! network namespace (the socket is opened per call).
//!
//! The host must have `net.ipv4.ip_forward=1`, and `net.ipv4.conf.all.route_localnet=1`
//! for `127.0.0.1:hostPort`; kincnet sets both, this module touches no sysctl.

mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::nl::{self, Elem, Family, Msg, Rule, Set, Socket};

pub use rules::{
    pending_set, policy_namespaces_set, CHAIN_GATE, CHAIN_HOSTPORTS, CHAIN_OUTPUT,
    CHAIN_POSTROUTING, CHAIN_PREROUTING, GATE_PRIORITY, MAP_HOSTPORTS_ANY, MAP_HOSTPORTS_IP,
    POLICY_ADDR_SETS, SET_PENDING, SET_POLICY_NAMESPACES,
};

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IANA protocol number (what `meta l4proto` yields).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One hostPort mapping (field names as in CNI's `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Restricts the mapping to this local destination address; `None` = any local one.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(rename = "protocol")]
    pub proto: Proto,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:")?,
            None => f.write_str("*:")?,
        }
        write!(
            f,
            "{}/{} -> :{}",
            self.host_port, self.proto, self.container_port
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("invalid firewall config: {field} {value:?}: {why}")]
    Config {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid port mapping {mapping}: {why}")]
    InvalidMapping {
        mapping: PortMapping,
        why: &'static str,
    },
    #[error("host port {mapping} is already mapped to {other}")]
    PortInUse {
        mapping: PortMapping,
        other: SocketAddrV4,
    },
    #[error("nf_tables table {table}: {source}")]
    Netlink {
        table: String,
        #[source]
        source: nl::Error,
    },
}

/// For `nl::with_socket`, which may fail before any table is involved (opening the
/// socket); the callers below fill in the table where they know it.
impl From<nl::Error> for FirewallError {
    fn from(source: nl::Error) -> Self {
        FirewallError::Netlink {
            table: String::new(),
            source,
        }
    }
}

impl FirewallError {
    /// Worth retrying (CNI error code 11): the kernel was busy or the ruleset kept
    /// changing under us.
    pub fn is_transient(&self) -> bool {
        matches!(self, FirewallError::Netlink { source, .. } if source.is_transient())
    }
}

/// The firewall of one kincnet network (one bridge and its subnet) inside `table`.
/// Several networks may share a table: maps and hostPort rules are shared, masquerade
/// rules are per bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFirewall {
    /// nf_tables table (family ip) that kincnet owns.
    pub table: String,
    /// The network's bridge; names its rules and chain.
    pub bridge: String,
    /// The pod subnet.
    pub subnet: Ipv4Network,
    /// Masquerade pod traffic that leaves the subnet (CNI `ipMasq`).
    pub masquerade: bool,
}

/// How many times a generation-guarded change is retried when the ruleset moved.
const RETRIES: usize = 5;

/// Elements per NEWSETELEM/DELSETELEM message. A message's element list is one netlink
/// attribute, whose length is a u16: at about 1,800 elements it overflowed (and the
/// encoder aborted the process). 512 elements of these maps take about 20 kB.
const ELEMS_PER_MSG: usize = 512;

/// One message per chunk of `elems`, for `add` or delete.
fn elem_msgs(set: &Set, elems: &[Elem], add: bool) -> Vec<Msg> {
    elems
        .chunks(ELEMS_PER_MSG)
        .map(|c| {
            if add {
                set.add_elems_msg(c)
            } else {
                set.del_elems_msg(c)
            }
        })
        .collect()
}

fn key_and_map(m: &PortMapping) -> (&'static str, Vec<u8>) {
    let mut key = Vec::with_capacity(12);
    if let Some(ip) = m.host_ip {
        key.extend_from_slice(&ip.octets());
    }
    // Each field of a concatenation takes a zero-padded 4-byte register.
    key.extend_from_slice(&[m.proto.number(), 0, 0, 0]);
    key.extend_from_slice(&m.host_port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    let map = if m.host_ip.is_some() {
        MAP_HOSTPORTS_IP
    } else {
        MAP_HOSTPORTS_ANY
    };
    (map, key)
}

fn target(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut d = ip.octets().to_vec();
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d
}

fn parse_target(d: &[u8]) -> Option<SocketAddrV4> {
    let ip = Ipv4Addr::new(*d.first()?, *d.get(1)?, *d.get(2)?, *d.get(3)?);
    let port = u16::from_be_bytes([*d.get(4)?, *d.get(5)?]);
    Some(SocketAddrV4::new(ip, port))
}

/// The mapping an element of `map` encodes, and its target.
fn parse_elem(map: &str, e: &Elem) -> Option<(PortMapping, SocketAddrV4)> {
    let k = &e.key;
    let (host_ip, rest) = if map == MAP_HOSTPORTS_IP {
        let ip: [u8; 4] = k.get(..4)?.try_into().ok()?;
        (Some(Ipv4Addr::from(ip)), k.get(4..)?)
    } else {
        (None, &k[..])
    };
    let proto = Proto::from_number(*rest.first()?)?;
    let host_port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    let to = parse_target(e.data.as_deref()?)?;
    Some((
        PortMapping {
            host_ip,
            host_port,
            container_port: to.port(),
            proto,
        },
        to,
    ))
}

impl NetworkFirewall {
    fn err(&self, source: nl::Error) -> FirewallError {
        FirewallError::Netlink {
            table: self.table.clone(),
            source,
        }
    }

    /// Names the table in an error that was raised without it (see `From<nl::Error>`).
    fn named(&self, e: FirewallError) -> FirewallError {
        match e {
            FirewallError::Netlink { table, source } if table.is_empty() => self.err(source),
            e => e,
        }
    }

    fn validate(&self) -> Result<(), FirewallError> {
        let bad = |field, value: &str, why| {
            Err(FirewallError::Config {
                field,
                value: value.to_string(),
                why,
            })
        };
        if self.table.is_empty() || self.table.len() > 200 {
            return bad("table", &self.table, "must be 1 to 200 bytes");
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return bad(
                "bridge",
                &self.bridge,
                "must be an interface name (1 to 15 bytes)",
            );
        }
        if self.table.contains('\0') || self.bridge.contains('\0') {
            return bad("table/bridge", &self.bridge, "must not contain NUL");
        }
        Ok(())
    }

    fn map(&self, name: &str) -> Set {
        if name == MAP_HOSTPORTS_IP {
            rules::map_hostports_ip(&self.table)
        } else {
            rules::map_hostports_any(&self.table)
        }
    }

    /// Creates (or repairs) the table, chains, maps and this network's rules, in one
    /// transaction. When everything is in place it only reads (two netlink requests).
    pub fn ensure(&self) -> Result<(), FirewallError> {
        self.validate()?;
        nl::with_socket(|sock| {
            let mut last = None;
            for _ in 0..RETRIES {
                match self.ensure_once(sock) {
                    // Someone changed the ruleset between our read and our write (maybe a
                    // parallel ensure); read again.
                    Err(e) if e.errno() == Some(libc::ERESTART) => last = Some(e),
                    r => return r,
                }
            }
            Err(last.expect("loop ran"))
        })
        .map_err(|e| self.err(e))
    }

    fn ensure_once(&self, sock: &mut Socket) -> Result<(), nl::Error> {
        let genid = sock.genid()?;
        let existing = match sock.list_rules(Family::Ip, &self.table, None) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        let wanted = rules::rules(&self.table, &self.bridge, self.subnet, self.masquerade);
        let mut by_chain: BTreeMap<&str, (Vec<&Rule>, Vec<&Rule>)> = BTreeMap::new();
        for r in &wanted {
            by_chain.entry(&r.chain).or_default().1.push(r);
        }
        for r in &existing {
            if rules::owned(r.comment.as_deref(), &self.bridge) {
                if let Some(e) = by_chain.get_mut(r.chain.as_str()) {
                    e.0.push(r);
                }
            }
        }
        let same = |a: &&Rule, b: &&Rule| a.comment == b.comment;
        let stale: Vec<_> = by_chain
            .values()
            .filter(|(have, want)| {
                have.len() != want.len() || !have.iter().zip(want.iter()).all(|(a, b)| same(a, b))
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut msgs: Vec<Msg> = vec![rules::table(&self.table).add_msg()];
        msgs.extend(
            rules::chains(&self.table, &self.bridge)
                .iter()
                .map(|c| c.add_msg()),
        );
        // Maps are only created when missing: re-adding one the kernel holds with other
        // flags (made by an older version, or by hand) would fail the whole transaction.
        let sets = match sock.list_sets(Family::Ip, &self.table) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        for (id, map) in [
            rules::map_hostports_ip(&self.table),
            rules::map_hostports_any(&self.table),
            rules::pending_set(&self.table),
        ]
        .iter()
        .enumerate()
        {
            if !sets.contains(&map.name) {
                msgs.push(map.add_msg(id as u32 + 1));
            }
        }
        for (have, want) in stale {
            msgs.extend(have.iter().map(|r| r.del_msg()));
            msgs.extend(want.iter().map(|r| r.add_msg()));
        }
        sock.commit(&msgs, Some(genid))
    }

    /// Removes this network's rules and chain (not the shared ones, not the maps, not
    /// other networks'), in one transaction. Missing ones are fine.
    pub fn remove(&self) -> Result<(), FirewallError> {
        self.validate()?;
        nl::with_socket(|sock| {
            let mut last = None;
            for _ in 0..RETRIES {
                let genid = sock.genid()?;
                let existing = match sock.list_rules(Family::Ip, &self.table, None) {
                    Ok(r) => r,
                    Err(e) if e.is_not_found() => return Ok(()),
                    Err(e) => return Err(e),
                };
                let prefix = rules::net_prefix(&self.bridge);
                let nchain = rules::net_chain(&self.bridge);
                let mut msgs: Vec<Msg> = existing
                    .iter()
                    .filter(|r| r.chain != nchain)
                    .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix)))
                    .map(|r| r.del_msg())
                    .collect();
                let chains = sock.list_chains(Family::Ip, &self.table)?;
                if chains.iter().any(|(c, _)| *c == nchain) {
                    let chain = rules::chains(&self.table, &self.bridge)
                        .into_iter()
                        .find(|c| c.name == nchain)
                        .expect("ensure's chains include the network chain");
                    msgs.push(chain.flush_msg());
                    msgs.push(chain.del_msg());
                }
                match sock.commit(&msgs, Some(genid)) {
                    Err(e) if e.errno() == Some(libc::ERESTART) => last = Some(e),
                    r => return r,
                }
            }
            Err(last.expect("loop ran"))
        })
        .map_err(|e| self.err(e))
    }

    /// Puts `ip` into `pod_pending`: from now on the node forwards nothing from or to it
    /// until [`NetworkFirewall::unpend_pod`] (or kincnet-policy) deletes it.
    pub fn pend_pod(&self, ip: Ipv4Addr) -> Result<(), FirewallError> {
        self.validate()?;
        let set = rules::pending_set(&self.table);
        let msgs = [set.add_elems_msg(&[Elem::key(ip.octets().to_vec())])];
        nl::with_socket(|sock| sock.commit(&msgs, None)).map_err(|e| self.err(e))
    }

    /// Deletes `ip` from `pod_pending`; fine when it is not there (the element is added
    /// and deleted in one transaction, so there is no ENOENT to tell apart).
    pub fn unpend_pod(&self, ip: Ipv4Addr) -> Result<(), FirewallError> {
        self.validate()?;
        let msgs = unpend_msgs(&self.table, ip);
        nl::with_socket(|sock| match sock.commit(&msgs, None) {
            // No table or set: nothing is pending.
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        })
        .map_err(|e| self.err(e))
    }

    /// Whether `ip` is in `pod_pending` (false when the set does not exist).
    pub fn is_pending(&self, ip: Ipv4Addr) -> Result<bool, FirewallError> {
        self.validate()?;
        let set = rules::pending_set(&self.table);
        nl::with_socket(|sock| match sock.get_elem(&set, &ip.octets()) {
            Ok(found) => Ok(found.is_some()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        })
        .map_err(|e| self.err(e))
    }

    /// Deletes every element of kincnet-policy's address-keyed sets
    /// ([`POLICY_ADDR_SETS`]) that names `ip`, and `ip` from `pod_pending`, in one
    /// transaction. Returns how many policy elements went.
    pub fn purge_policy(&self, ip: Ipv4Addr) -> Result<usize, FirewallError> {
        self.validate()?;
        let want = ip.octets();
        nl::with_socket(|sock| {
            let mut last = None;
            for _ in 0..RETRIES {
                // Only what is there: a delete costs every later socket release an RCU
                // grace period.
                let pending = sock.get_elem(&rules::pending_set(&self.table), &want)?;
                let mut msgs = match pending {
                    Some(_) => unpend_msgs(&self.table, ip),
                    None => Vec::new(),
                };
                let mut n = 0;
                for (name, offsets) in POLICY_ADDR_SETS {
                    let mut set = rules::pending_set(&self.table);
                    set.name = name.to_string();
                    let elems = match sock.list_elems(&set) {
                        Ok(e) => e,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e),
                    };
                    let hit: Vec<Elem> = elems
                        .into_iter()
                        .filter(|e| offsets.iter().any(|o| e.key.get(*o..*o + 4) == Some(&want)))
                        .map(|e| Elem::key(e.key))
                        .collect();
                    n += hit.len();
                    msgs.extend(elem_msgs(&set, &hit, false));
                }
                if msgs.is_empty() {
                    return Ok(0);
                }
                match sock.commit(&msgs, None) {
                    // Deleted by the controller between our read and our delete.
                    Err(e) if e.errno() == Some(libc::ENOENT) && n > 0 => last = Some(e),
                    Err(e) if e.is_not_found() => return Ok(0),
                    r => return r.map(|()| n),
                }
            }
            Err(last.expect("loop ran"))
        })
        .map_err(|e| self.err(e))
    }

    /// The keys in kincnet-policy's `policy_namespaces` (one netlink dump), or `None`
    /// when the set does not exist (no controller has run in this network namespace).
    pub fn policy_namespaces(&self) -> Result<Option<BTreeSet<u32>>, FirewallError> {
        self.validate()?;
        let set = rules::policy_namespaces_set(&self.table);
        nl::with_socket(|sock| match sock.list_elems(&set) {
            Ok(elems) => Ok(Some(
                elems
                    .iter()
                    .filter_map(|e| e.key.get(..4)?.try_into().ok())
                    .map(u32::from_ne_bytes)
                    .collect(),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(|e| self.err(e))
    }

    fn check_mapping(m: &PortMapping) -> Result<(), FirewallError> {
        let why = if m.host_port == 0 {
            "hostPort must not be 0"
        } else if m.container_port == 0 {
            "containerPort must not be 0"
        } else if m.host_ip.is_some_and(|ip| ip.is_unspecified()) {
            "hostIP 0.0.0.0 means any address: leave it out"
        } else {
            return Ok(());
        };
        Err(FirewallError::InvalidMapping {
            mapping: m.clone(),
            why,
        })
    }

    /// Programs the pod's port mappings (map elements only, one transaction). Without
    /// mappings this returns at once. A host port already mapped to another target is
    /// [`FirewallError::PortInUse`]; the same mapping again is fine, also twice in
    /// `mappings` (it is programmed once). Two mappings of one host port to different
    /// container ports are [`FirewallError::InvalidMapping`].
    pub fn add_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FirewallError> {
        if mappings.is_empty() {
            return Ok(());
        }
        self.validate()?;
        let msgs = self.add_msgs(ip, mappings)?;
        nl::with_socket(|sock| self.add_elems(sock, ip, mappings, &msgs)).map_err(|e| self.named(e))
    }

    /// The messages `add_pod` commits: one element per distinct key, in chunks.
    fn add_msgs(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<Vec<Msg>, FirewallError> {
        mappings.iter().try_for_each(Self::check_mapping)?;
        // Key -> container port: a key twice in one batch is either redundant or a
        // contradiction the kernel would settle silently (last one wins).
        let mut seen: BTreeMap<(&str, Vec<u8>), u16> = BTreeMap::new();
        let mut per_map: BTreeMap<&str, Vec<Elem>> = BTreeMap::new();
        for m in mappings {
            let (map, key) = key_and_map(m);
            match seen.get(&(map, key.clone())) {
                Some(port) if *port == m.container_port => continue,
                Some(_) => {
                    return Err(FirewallError::InvalidMapping {
                        mapping: m.clone(),
                        why: "its host port is mapped twice, to different container ports",
                    })
                }
                None => {
                    seen.insert((map, key.clone()), m.container_port);
                }
            }
            per_map
                .entry(map)
                .or_default()
                .push(Elem::map(key, target(ip, m.container_port)));
        }
        Ok(per_map
            .iter()
            .flat_map(|(map, elems)| elem_msgs(&self.map(map), elems, true))
            .collect())
    }

    fn add_elems(
        &self,
        sock: &mut Socket,
        ip: Ipv4Addr,
        mappings: &[PortMapping],
        msgs: &[Msg],
    ) -> Result<(), FirewallError> {
        match sock.commit(msgs, None) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.errno(), Some(libc::EBUSY | libc::EEXIST)) => {
                // An element with this key and another target exists: say which.
                for m in mappings {
                    let (map, key) = key_and_map(m);
                    if let Ok(Some(found)) = sock.get_elem(&self.map(map), &key) {
                        let other = found.data.as_deref().and_then(parse_target);
                        if let Some(other) = other {
                            if other != SocketAddrV4::new(ip, m.container_port) {
                                return Err(FirewallError::PortInUse {
                                    mapping: m.clone(),
                                    other,
                                });
                            }
                        }
                    }
                }
                Err(self.err(e))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Removes the pod's mappings: only elements that still point at `ip` and the
    /// mapping's container port; missing ones are skipped. No traffic without mappings.
    pub fn remove_pod(&self, ip: Ipv4Addr, mappings: &[PortMapping]) -> Result<(), FirewallError> {
        if mappings.is_empty() {
            return Ok(());
        }
        self.validate()?;
        nl::with_socket(|sock| self.remove_elems(sock, ip, mappings)).map_err(|e| self.named(e))
    }

    fn remove_elems(
        &self,
        sock: &mut Socket,
        ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<(), FirewallError> {
        // Each key once: the same mapping twice (an old record may hold duplicates)
        // deleted twice in one batch fails the whole batch with ENOENT, forever.
        // A key listed with two container ports matches one of them at most (an element
        // has one target), so the container port is part of what makes an entry unique.
        let mut seen = BTreeSet::new();
        let keys: Vec<(u16, &'static str, Vec<u8>)> = mappings
            .iter()
            .filter_map(|m| {
                let (map, key) = key_and_map(m);
                seen.insert((map, key.clone(), m.container_port))
                    .then_some((m.container_port, map, key))
            })
            .collect();
        let mut last = None;
        for _ in 0..RETRIES {
            let mut per_map: BTreeMap<&str, Vec<Elem>> = BTreeMap::new();
            for (port, map, key) in &keys {
                let (port, map, key) = (*port, *map, key.clone());
                let found = match sock.get_elem(&self.map(map), &key) {
                    Ok(f) => f,
                    // No table or map: nothing to remove.
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(self.err(e)),
                };
                let ours = found
                    .as_ref()
                    .and_then(|f| f.data.as_deref())
                    .and_then(parse_target)
                    == Some(SocketAddrV4::new(ip, port));
                if ours {
                    per_map.entry(map).or_default().push(Elem::key(key));
                }
            }
            let msgs: Vec<Msg> = per_map
                .iter()
                .flat_map(|(map, elems)| elem_msgs(&self.map(map), elems, false))
                .collect();
            match sock.commit(&msgs, None) {
                // Removed concurrently between our read and our delete: read again.
                Err(e) if e.is_not_found() => last = Some(e),
                r => return r.map_err(|e| self.err(e)),
            }
        }
        Err(self.err(last.expect("loop ran")))
    }

    fn all_mappings(
        &self,
        sock: &mut Socket,
    ) -> Result<Vec<(&'static str, Elem, PortMapping, SocketAddrV4)>, FirewallError> {
        let mut out = Vec::new();
        for map in [MAP_HOSTPORTS_IP, MAP_HOSTPORTS_ANY] {
            let elems = match sock.list_elems(&self.map(map)) {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(self.err(e)),
            };
            for e in elems {
                if let Some((m, to)) = parse_elem(map, &e) {
                    out.push((map, e, m, to));
                }
            }
        }
        Ok(out)
    }

    /// The mappings currently programmed that target `ip` (for CNI CHECK).
    pub fn pod_mappings(&self, ip: Ipv4Addr) -> Result<Vec<PortMapping>, FirewallError> {
        self.validate()?;
        let mut v: Vec<PortMapping> = nl::with_socket(|sock| self.all_mappings(sock))
            .map_err(|e| self.named(e))?
            .into_iter()
            .filter(|(_, _, _, to)| *to.ip() == ip)
            .map(|(_, _, m, _)| m)
            .collect();
        v.sort_by_key(|m| (m.host_ip, m.host_port, m.proto, m.container_port));
        Ok(v)
    }

    /// Removes every mapping that targets an address of this network's subnet not in
    /// `keep` (CNI GC), in one transaction. Returns how many were removed.
    pub fn retain_pods(&self, keep: &[Ipv4Addr]) -> Result<usize, FirewallError> {
        self.validate()?;
        nl::with_socket(|sock| self.retain_elems(sock, keep)).map_err(|e| self.named(e))
    }

    fn retain_elems(&self, sock: &mut Socket, keep: &[Ipv4Addr]) -> Result<usize, FirewallError> {
        let mut last = None;
        for _ in 0..RETRIES {
            let mut per_map: BTreeMap<&str, Vec<Elem>> = BTreeMap::new();
            for (map, e, _, to) in self.all_mappings(sock)? {
                // Other networks may share the table: their pods are not ours to collect.
                if self.subnet.contains(*to.ip()) && !keep.contains(to.ip()) {
                    per_map.entry(map).or_default().push(Elem::key(e.key));
                }
            }
            let n = per_map.values().map(Vec::len).sum();
            let mut msgs: Vec<Msg> = per_map
                .iter()
                .flat_map(|(map, elems)| elem_msgs(&self.map(map), elems, false))
                .collect();
            // Pending addresses of attachments that are gone (an ADD killed midway).
            let pending = rules::pending_set(&self.table);
            let stale: Vec<Elem> = match sock.list_elems(&pending) {
                Ok(e) => e,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(self.err(e)),
            }
            .into_iter()
            .filter(|e| {
                let ip = e.key.get(..4).and_then(|k| <[u8; 4]>::try_from(k).ok());
                ip.map(Ipv4Addr::from)
                    .is_some_and(|ip| self.subnet.contains(ip) && !keep.contains(&ip))
            })
            .map(|e| Elem::key(e.key))
            .collect();
            msgs.extend(elem_msgs(&pending, &stale, false));
            match sock.commit(&msgs, None) {
                Err(e) if e.is_not_found() => last = Some(e),
                r => return r.map(|()| n).map_err(|e| self.err(e)),
            }
        }
        Err(self.err(last.expect("loop ran")))
    }
}

/// The messages that delete `ip` from `pod_pending` whether or not it is there: an add
/// (no error for an element that exists) then a delete, in one transaction. kincnet-policy
/// puts them into the transaction that programs the pod's rules.
pub fn unpend_msgs(table: &str, ip: Ipv4Addr) -> Vec<Msg> {
    let set = rules::pending_set(table);
    let e = [Elem::key(ip.octets().to_vec())];
    vec![set.add_elems_msg(&e), set.del_elems_msg(&e)]
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
