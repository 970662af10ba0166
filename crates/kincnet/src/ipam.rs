//! Built-in IPAM: one JSON file per network under `dataDir`, read and rewritten under an
//! exclusive flock, replaced by rename so a killed plugin never leaves half a file.
//!
//! Allocation is round robin from the last address handed out (like host-local), so a
//! released address comes back only after the rest of the range was used once. Each
//! record also holds the pod's port mappings: DEL and GC can remove firewall state
//! without the netns or the veth.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::{Ipam, PortMapping};
use crate::error::{CniError, CniResult, Code};

const STORE: &str = "allocations.json";
const STORE_TMP: &str = "allocations.json.tmp";
const LOCK: &str = "lock";

/// One attachment's allocation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct Data {
    /// The address handed out last: the next search starts after it.
    last: Option<Ipv4Addr>,
    /// Keyed by `containerID/ifname` (neither may contain '/').
    allocations: BTreeMap<String, Record>,
}

pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// The store, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
    data: Data,
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::new(Code::Io, format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// Creates the directory if needed and waits for the lock.
    pub fn open(dir: &Path) -> CniResult<Store> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating IPAM dir", dir, e))?;
        let lock_path = dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("opening", &lock_path, e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("locking", &lock_path, e))?;
        let path = dir.join(STORE);
        let data = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err("decoding IPAM store", &path, e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => Data::default(),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            data,
        })
    }

    fn save(&self) -> CniResult<()> {
        // No fsync: what must hold is that a killed plugin leaves the old or the new
        // file, which rename gives; the kernel state the records describe (veths,
        // netns, nft elements) does not outlive a crash of the machine either.
        let tmp = self.dir.join(STORE_TMP);
        let path = self.dir.join(STORE);
        let bytes = serde_json::to_vec(&self.data).expect("store serializes");
        let mut f = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        f.write_all(&bytes)
            .map_err(|e| io_err("writing", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io_err("renaming over", &path, e))
    }

    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Record> {
        self.data.allocations.get(&key(container_id, ifname))
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.data.allocations.values()
    }

    /// Addresses of the range still free.
    pub fn free_count(&self, ipam: &Ipam) -> u64 {
        let total = u64::from(u32::from(ipam.range_end) - u32::from(ipam.range_start)) + 1;
        let in_range = |ip: &Ipv4Addr| (ipam.range_start..=ipam.range_end).contains(ip);
        let reserved = reserved(ipam);
        let used = self
            .data
            .allocations
            .values()
            .filter(|r| in_range(&r.ip) && !reserved.contains(&r.ip))
            .count() as u64;
        let reserved_in = reserved.iter().filter(|ip| in_range(ip)).count() as u64;
        total.saturating_sub(reserved_in + used)
    }

    /// Allocates (and saves) an address for a new attachment. An attachment that already
    /// has one is refused (code 4): the runtime must DEL it first, and answering with the
    /// old address would let a second ADD, maybe into another netns, take over (and on
    /// failure tear down) the first one's interface.
    pub fn allocate(
        &mut self,
        ipam: &Ipam,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
        port_mappings: &[PortMapping],
    ) -> CniResult<Ipv4Addr> {
        let k = key(container_id, ifname);
        if let Some(rec) = self.data.allocations.get(&k) {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!(
                    "CNI_CONTAINERID {container_id} CNI_IFNAME {ifname}: already attached \
                     with address {} (store {}); DEL it before adding it again",
                    rec.ip,
                    self.dir.display()
                ),
            ));
        }
        let used: HashSet<Ipv4Addr> = self.data.allocations.values().map(|r| r.ip).collect();
        let reserved = reserved(ipam);
        let ip = match requested {
            Some(ip) => {
                if !ipam.subnet.contains(ip)
                    || reserved.contains(&ip)
                    || ip == ipam.subnet.network()
                    || ip == ipam.subnet.broadcast()
                {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!(
                            "CNI_ARGS IP={ip}: not a free host address of {} (the gateway \
                             and route gateways are reserved)",
                            ipam.subnet
                        ),
                    ));
                }
                if used.contains(&ip) {
                    return Err(CniError::generic(format!(
                        "CNI_ARGS IP={ip}: already allocated in network dir {}",
                        self.dir.display()
                    )));
                }
                ip
            }
            None => next_free(ipam, self.data.last, &used, &reserved).ok_or_else(|| {
                CniError::generic(format!(
                    "no IP addresses available in range {}-{} (store {})",
                    ipam.range_start,
                    ipam.range_end,
                    self.dir.display()
                ))
            })?,
        };
        if requested.is_none() {
            self.data.last = Some(ip);
        }
        self.data.allocations.insert(
            k,
            Record {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
                ip,
                port_mappings: port_mappings.to_vec(),
            },
        );
        self.save()?;
        Ok(ip)
    }

    /// Removes (and saves) the attachment's record, returning it if there was one.
    pub fn release(&mut self, container_id: &str, ifname: &str) -> CniResult<Option<Record>> {
        let rec = self.data.allocations.remove(&key(container_id, ifname));
        if rec.is_some() {
            self.save()?;
        }
        Ok(rec)
    }

    /// Removes every record whose key is not in `keep`; returns the removed ones.
    pub fn retain(&mut self, keep: &HashSet<String>) -> CniResult<Vec<Record>> {
        let gone: Vec<String> = self
            .data
            .allocations
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        let removed: Vec<Record> = gone
            .iter()
            .filter_map(|k| self.data.allocations.remove(k))
            .collect();
        if !removed.is_empty() {
            self.save()?;
        }
        Ok(removed)
    }

    /// Checks the directory takes writes (for STATUS) without touching the store.
    pub fn probe_writable(&self) -> CniResult<()> {
        let p = self.dir.join(STORE_TMP);
        File::create(&p).map_err(|e| io_err("writing", &p, e))?;
        let _ = fs::remove_file(&p);
        Ok(())
    }
}

/// Addresses never handed to a pod: the gateway, and the gateways of `ipam.routes` (a
/// route through a pod's own address is refused by the kernel, and through another pod
/// would send traffic where the config did not mean it to go).
fn reserved(ipam: &Ipam) -> HashSet<Ipv4Addr> {
    std::iter::once(ipam.gateway)
        .chain(ipam.routes.iter().filter_map(|r| r.gw))
        .collect()
}

/// The first free address after `last`, wrapping once around the range.
fn next_free(
    ipam: &Ipam,
    last: Option<Ipv4Addr>,
    used: &HashSet<Ipv4Addr>,
    reserved: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let start = u32::from(ipam.range_start);
    let end = u32::from(ipam.range_end);
    let size = u64::from(end - start) + 1;
    let after = match last.map(u32::from) {
        Some(l) if (start..=end).contains(&l) => l,
        _ => end,
    };
    (1..=size).find_map(|i| {
        let v = start + ((u64::from(after - start) + i) % size) as u32;
        let ip = Ipv4Addr::from(v);
        (!reserved.contains(&ip) && !used.contains(&ip)).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, start: &str, end: &str) -> Ipam {
        Ipam {
            subnet: "10.7.0.0/24".parse().unwrap(),
            range_start: start.parse().unwrap(),
            range_end: end.parse().unwrap(),
            gateway: "10.7.0.1".parse().unwrap(),
            routes: vec![],
            data_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn round_robin_reuses_only_after_a_cycle() {
        let d = tempfile::tempdir().unwrap();
        let ip = ipam(d.path(), "10.7.0.1", "10.7.0.4");
        let mut s = Store::open(d.path()).unwrap();
        let a = s.allocate(&ip, "a", "eth0", None, &[]).unwrap();
        let b = s.allocate(&ip, "b", "eth0", None, &[]).unwrap();
        assert_eq!(
            (a, b),
            ("10.7.0.2".parse().unwrap(), "10.7.0.3".parse().unwrap())
        );
        s.release("a", "eth0").unwrap();
        // .2 is free again but .4 comes first; then the search wraps to .2.
        assert_eq!(
            s.allocate(&ip, "c", "eth0", None, &[]).unwrap(),
            "10.7.0.4".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            s.allocate(&ip, "d", "eth0", None, &[]).unwrap(),
            "10.7.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(s.free_count(&ip), 0);
        let e = s.allocate(&ip, "e", "eth0", None, &[]).unwrap_err();
        assert!(e.msg.contains("no IP addresses available"));
        // Same attachment again: refused, and its record is untouched.
        let e = s.allocate(&ip, "c", "eth0", None, &[]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv, "{e:?}");
        assert!(e.msg.contains("already attached"), "{}", e.msg);
        assert_eq!(
            s.get("c", "eth0").map(|r| r.ip),
            Some("10.7.0.4".parse().unwrap())
        );
    }

    #[test]
    fn route_gateways_are_never_handed_out() {
        let d = tempfile::tempdir().unwrap();
        let mut ip = ipam(d.path(), "10.7.0.2", "10.7.0.4");
        ip.routes = vec![crate::result::Route {
            dst: "192.0.2.0/24".parse().unwrap(),
            gw: Some("10.7.0.3".parse().unwrap()),
        }];
        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(s.free_count(&ip), 2);
        let got: Vec<Ipv4Addr> = ["a", "b"]
            .iter()
            .map(|c| s.allocate(&ip, c, "eth0", None, &[]).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "10.7.0.2".parse::<Ipv4Addr>().unwrap(),
                "10.7.0.4".parse().unwrap()
            ]
        );
        let e = s
            .allocate(&ip, "c", "eth0", Some("10.7.0.3".parse().unwrap()), &[])
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
    }

    #[test]
    fn survives_reopen_and_retain() {
        let d = tempfile::tempdir().unwrap();
        let ip = ipam(d.path(), "10.7.0.10", "10.7.0.20");
        {
            let mut s = Store::open(d.path()).unwrap();
            for c in ["a", "b", "c"] {
                s.allocate(&ip, c, "eth0", None, &[]).unwrap();
            }
        }
        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(s.records().count(), 3);
        let keep: HashSet<String> = [key("b", "eth0")].into();
        let gone = s.retain(&keep).unwrap();
        assert_eq!(gone.len(), 2);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(
            s.records()
                .map(|r| r.container_id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        // The cycle goes on from the last one handed out (.12), not from the start.
        drop(s);
        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(
            s.allocate(&ip, "d", "eth0", None, &[]).unwrap(),
            "10.7.0.13".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn corrupt_store_is_an_io_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STORE), b"{garbage").unwrap();
        let e = Store::open(d.path()).err().unwrap();
        assert_eq!(e.code, Code::Io);
        assert!(e.msg.contains("allocations.json"));
    }
}
