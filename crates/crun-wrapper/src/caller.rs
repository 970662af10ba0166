//! What the process that runs crun may grant a container: read once from the kernel,
//! then handed to the pure rules as plain data.

use std::collections::BTreeMap;
use std::fmt;

use caps::{CapSet, Capability};
use oci_spec::runtime::PosixRlimitType;

/// One line of `/proc/self/uid_map` (or a spec's `uidMappings`): ids
/// `inside..inside+count` of the namespace map to `outside..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The ids a user namespace can use, as a list of ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMap(pub Vec<IdRange>);

impl IdMap {
    /// Parses the kernel's `uid_map`/`gid_map` format.
    pub fn parse(text: &str) -> IdMap {
        let ranges = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
                Some(IdRange {
                    inside: f.next()??,
                    outside: f.next()??,
                    count: f.next()??,
                })
            })
            .collect();
        IdMap(ranges)
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0
            .iter()
            .any(|r| id >= r.inside && (id - r.inside) < r.count)
    }

    /// Smallest mapped id `>= id`.
    pub fn first_at_or_above(&self, id: u32) -> Option<u32> {
        self.0
            .iter()
            .filter(|r| r.count > 0)
            .filter_map(|r| {
                let last = r.inside.saturating_add(r.count - 1);
                (last >= id).then(|| id.max(r.inside))
            })
            .min()
    }

    /// Largest mapped id `<= id`.
    pub fn last_at_or_below(&self, id: u32) -> Option<u32> {
        self.0
            .iter()
            .filter(|r| r.count > 0 && r.inside <= id)
            .map(|r| id.min(r.inside.saturating_add(r.count - 1)))
            .max()
    }

    /// The initial user namespace maps every id to itself.
    pub fn is_identity_full(&self) -> bool {
        self.0
            == [IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }]
    }
}

impl fmt::Display for IdMap {
    /// `0-65536` for podman's `0 1001 1` + `1 100000 65536`: adjacent ranges are joined.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut spans: Vec<(u64, u64)> = self
            .0
            .iter()
            .filter(|r| r.count > 0)
            .map(|r| {
                (
                    u64::from(r.inside),
                    u64::from(r.inside) + u64::from(r.count) - 1,
                )
            })
            .collect();
        spans.sort_unstable();
        let mut joined: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in spans {
            match joined.last_mut() {
                Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
                _ => joined.push((lo, hi)),
            }
        }
        if joined.is_empty() {
            return write!(f, "none");
        }
        let text: Vec<String> = joined.iter().map(|(lo, hi)| format!("{lo}-{hi}")).collect();
        write!(f, "{}", text.join(", "))
    }
}

/// The caller of crun, as far as the rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `/proc/self/oom_score_adj`.
    pub oom_score_adj: i32,
    /// Capabilities the caller holds in both its permitted and bounding sets.
    pub grantable_caps: caps::CapsHashSet,
    /// `CAP_SYS_RESOURCE` held in the initial user namespace: only then may crun lower
    /// oom_score_adj or raise a hard rlimit.
    pub sys_resource_in_init_ns: bool,
    /// Hard limit of every rlimit the kernel reported.
    pub rlimit_hard: BTreeMap<RlimitKey, u64>,
    pub uid_map: IdMap,
    pub gid_map: IdMap,
}

/// `PosixRlimitType` is not `Ord`; its index in `RLIMITS` is.
pub type RlimitKey = usize;

/// The rlimits crun can set, with their kernel resource numbers.
pub const RLIMITS: &[(PosixRlimitType, libc::__rlimit_resource_t)] = &[
    (PosixRlimitType::RlimitCpu, libc::RLIMIT_CPU),
    (PosixRlimitType::RlimitFsize, libc::RLIMIT_FSIZE),
    (PosixRlimitType::RlimitData, libc::RLIMIT_DATA),
    (PosixRlimitType::RlimitStack, libc::RLIMIT_STACK),
    (PosixRlimitType::RlimitCore, libc::RLIMIT_CORE),
    (PosixRlimitType::RlimitRss, libc::RLIMIT_RSS),
    (PosixRlimitType::RlimitNproc, libc::RLIMIT_NPROC),
    (PosixRlimitType::RlimitNofile, libc::RLIMIT_NOFILE),
    (PosixRlimitType::RlimitMemlock, libc::RLIMIT_MEMLOCK),
    (PosixRlimitType::RlimitAs, libc::RLIMIT_AS),
    (PosixRlimitType::RlimitLocks, libc::RLIMIT_LOCKS),
    (PosixRlimitType::RlimitSigpending, libc::RLIMIT_SIGPENDING),
    (PosixRlimitType::RlimitMsgqueue, libc::RLIMIT_MSGQUEUE),
    (PosixRlimitType::RlimitNice, libc::RLIMIT_NICE),
    (PosixRlimitType::RlimitRtprio, libc::RLIMIT_RTPRIO),
    (PosixRlimitType::RlimitRttime, libc::RLIMIT_RTTIME),
];

pub fn rlimit_key(t: PosixRlimitType) -> RlimitKey {
    RLIMITS
        .iter()
        .position(|(k, _)| *k == t)
        .expect("RLIMITS lists every PosixRlimitType")
}

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("cannot read {path}: {err}")]
    Read {
        path: &'static str,
        #[source]
        err: std::io::Error,
    },
    #[error("cannot read the {set} capability set: {err}")]
    Caps {
        set: &'static str,
        #[source]
        err: caps::errors::CapsError,
    },
}

impl Caller {
    /// Reads the calling process: crun inherits all of this across `exec`.
    pub fn from_kernel() -> Result<Caller, CallerError> {
        let read = |path: &'static str| {
            std::fs::read_to_string(path).map_err(|err| CallerError::Read { path, err })
        };
        let oom_score_adj = read("/proc/self/oom_score_adj")?
            .trim()
            .parse()
            .unwrap_or(0);
        let uid_map = IdMap::parse(&read("/proc/self/uid_map")?);
        let gid_map = IdMap::parse(&read("/proc/self/gid_map")?);
        let caps_of = |set: CapSet, name: &'static str| {
            caps::read(None, set).map_err(|err| CallerError::Caps { set: name, err })
        };
        let permitted = caps_of(CapSet::Permitted, "permitted")?;
        let bounding = caps_of(CapSet::Bounding, "bounding")?;
        let grantable_caps: caps::CapsHashSet =
            permitted.intersection(&bounding).copied().collect();
        let sys_resource_in_init_ns =
            uid_map.is_identity_full() && grantable_caps.contains(&Capability::CAP_SYS_RESOURCE);
        let mut rlimit_hard = BTreeMap::new();
        for (i, (_, res)) in RLIMITS.iter().enumerate() {
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes only into the struct we pass.
            if unsafe { libc::getrlimit(*res, &mut rl) } == 0 {
                rlimit_hard.insert(i, rl.rlim_max);
            }
        }
        Ok(Caller {
            oom_score_adj,
            grantable_caps,
            sys_resource_in_init_ns,
            rlimit_hard,
            uid_map,
            gid_map,
        })
    }
}

/// Facts about the host's security modules, for the label rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Lsm {
    pub fn from_kernel() -> Lsm {
        Lsm::under(std::path::Path::new("/"))
    }

    /// The same facts read below `root` (tests give a temp dir).
    pub fn under(root: &std::path::Path) -> Lsm {
        // AppArmor counts as on only where its securityfs is visible, as runc's and
        // CRI-O's `apparmor.IsEnabled` decide: in a rootless node container the module is
        // enabled on the host, but no profile can be loaded or seen from there, and crun
        // fails on the spec's profile (`write file /proc/thread-self/attr/apparmor/exec:
        // No such file or directory`, measured in the hostvm e2e suite).
        let apparmor = std::fs::read_to_string(root.join("sys/module/apparmor/parameters/enabled"))
            .map(|s| s.trim() == "Y")
            .unwrap_or(false)
            && root.join("sys/kernel/security/apparmor").exists();
        let selinux = root.join("sys/fs/selinux/enforce").exists();
        Lsm { apparmor, selinux }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_map_queries() {
        let m =
            IdMap::parse("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(m.0.len(), 2);
        assert!(m.contains(0) && m.contains(65536) && !m.contains(65537));
        assert_eq!(m.to_string(), "0-65536");
        assert_eq!(IdMap::parse("5 0 1\n0 9 2").to_string(), "0-1, 5-5");
        assert_eq!(m.first_at_or_above(0), Some(0));
        assert_eq!(m.last_at_or_below(2147483647), Some(65536));
        assert_eq!(m.first_at_or_above(70000), None);
        let full = IdMap::parse("0 0 4294967295");
        assert!(full.is_identity_full() && full.contains(u32::MAX - 1));
        assert!(!m.is_identity_full());
    }

    #[test]
    fn apparmor_is_on_only_where_its_securityfs_is_visible() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(!Lsm::under(r).apparmor, "no module");
        std::fs::create_dir_all(r.join("sys/module/apparmor/parameters")).unwrap();
        std::fs::write(r.join("sys/module/apparmor/parameters/enabled"), "Y\n").unwrap();
        // The rootless node: the host's module says Y, its securityfs is not there.
        assert!(!Lsm::under(r).apparmor, "module on, securityfs hidden");
        std::fs::create_dir_all(r.join("sys/kernel/security/apparmor")).unwrap();
        assert!(Lsm::under(r).apparmor, "module on, securityfs visible");
        std::fs::write(r.join("sys/module/apparmor/parameters/enabled"), "N\n").unwrap();
        assert!(!Lsm::under(r).apparmor, "module off");
        assert!(!Lsm::under(r).selinux);
    }
}
