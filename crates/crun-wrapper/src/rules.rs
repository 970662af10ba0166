//! The rewrite rules. Each is a small function over the spec JSON and the caller's limits;
//! it patches only the keys it is about, in place, and says what it changed and why.
//!
//! Values are read with oci-spec's types where those types cannot lose anything (one
//! rlimit entry, the user, a namespace, an id mapping, one capability name). The document
//! itself stays a `serde_json::Value`: oci-spec's `Spec` drops fields it does not know and
//! refuses capability names it does not know, and such a spec must pass through intact.

use oci_spec::runtime::{
    Capability as OciCap, LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, PosixRlimit, User,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::caller::{rlimit_key, Caller, IdMap, IdRange, Lsm};

/// One field a rule changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Dotted path in config.json, e.g. `process.rlimits[RLIMIT_NOFILE].hard`.
    pub field: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

/// Something crun will refuse that has no safe reduction: the spec is left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub changes: Vec<Change>,
    pub notes: Vec<Note>,
}

/// What the spec says about user namespaces, which decides whose limits apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserNs {
    /// The container gets its own user namespace (new or joined): crun holds every
    /// capability there, but the kernel's init-namespace checks still apply.
    pub own: bool,
    /// `linux.uidMappings`/`gidMappings` as ids inside the container's namespace.
    pub uid_map: Option<IdMap>,
    pub gid_map: Option<IdMap>,
}

impl UserNs {
    pub fn of(spec: &Value) -> UserNs {
        let own = spec
            .pointer("/linux/namespaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(typed::<LinuxNamespace>)
            .any(|ns| ns.typ() == LinuxNamespaceType::User);
        let map = |key: &str| -> Option<IdMap> {
            let list: Vec<LinuxIdMapping> = typed(spec.pointer(key)?)?;
            Some(IdMap(
                list.iter()
                    .map(|m| IdRange {
                        inside: m.container_id(),
                        outside: m.host_id(),
                        count: m.size(),
                    })
                    .collect(),
            ))
        };
        UserNs {
            own,
            uid_map: map("/linux/uidMappings"),
            gid_map: map("/linux/gidMappings"),
        }
    }

    /// The map that decides which ids the container's processes can use, if known.
    fn ids<'a>(&'a self, caller_map: &'a IdMap, spec_map: &'a Option<IdMap>) -> Option<&'a IdMap> {
        if self.own {
            spec_map.as_ref()
        } else {
            Some(caller_map)
        }
    }
}

fn typed<T: DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// Applies every rule to `spec` in place.
pub fn apply(spec: &mut Value, caller: &Caller, lsm: Lsm) -> Report {
    let ns = UserNs::of(spec);
    // Lowering oom_score_adj and raising a hard rlimit need CAP_SYS_RESOURCE in the
    // initial user namespace, held by the process that writes them (in the container).
    let privileged = caller.sys_resource_in_init_ns && !ns.own;
    let mut r = Report::default();
    r.changes.extend(oom_score_adj(spec, caller, privileged));
    r.changes.extend(capabilities(spec, caller, &ns));
    r.changes.extend(rlimits(spec, caller, privileged));
    r.changes.extend(ping_group_range(spec, caller, &ns));
    r.changes.extend(lsm_labels(spec, lsm));
    r.notes.extend(unmapped_ids(spec, caller, &ns));
    r
}

/// `process.oomScoreAdj` below the caller's value is raised to it (never removed: a
/// BestEffort pod keeps its 1000, a Burstable one its value when allowed).
pub fn oom_score_adj(spec: &mut Value, caller: &Caller, privileged: bool) -> Option<Change> {
    if privileged {
        return None;
    }
    let slot = spec.pointer_mut("/process/oomScoreAdj")?;
    let want = typed::<i32>(slot)?;
    if want >= caller.oom_score_adj {
        return None;
    }
    *slot = Value::from(caller.oom_score_adj);
    Some(Change {
        field: "process.oomScoreAdj".into(),
        from: want.to_string(),
        to: caller.oom_score_adj.to_string(),
        why: format!(
            "below the caller's oom_score_adj {}; lowering it needs CAP_SYS_RESOURCE in the initial user namespace",
            caller.oom_score_adj
        ),
    })
}

const CAP_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// Each capability set loses the capabilities the caller cannot pass on (not in its
/// permitted and bounding sets). Names oci-spec does not know are kept: crun judges them.
pub fn capabilities(spec: &mut Value, caller: &Caller, ns: &UserNs) -> Vec<Change> {
    if ns.own {
        // crun holds the full set inside the container's own user namespace.
        return Vec::new();
    }
    let Some(sets) = spec
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for set in CAP_SETS {
        let Some(list) = sets.get_mut(set).and_then(Value::as_array_mut) else {
            continue;
        };
        let mut dropped = Vec::new();
        list.retain(|v| match grantable(v, &caller.grantable_caps) {
            Some(false) => {
                dropped.push(v.as_str().unwrap_or_default().to_string());
                false
            }
            _ => true,
        });
        if !dropped.is_empty() {
            out.push(Change {
                field: format!("process.capabilities.{set}"),
                from: format!("{} caps", list.len() + dropped.len()),
                to: format!("{} caps", list.len()),
                why: format!(
                    "dropped {}: not in the caller's permitted and bounding sets",
                    dropped.join(" ")
                ),
            });
        }
    }
    out
}

/// `Some(held)` for a capability name oci-spec and the caps crate both know.
fn grantable(v: &Value, held: &caps::CapsHashSet) -> Option<bool> {
    let cap: OciCap = typed(v)?;
    let cap: caps::Capability = format!("CAP_{cap}").parse().ok()?;
    Some(held.contains(&cap))
}

/// Each rlimit's hard (and soft) value is clamped to the caller's hard limit.
/// A soft above its own hard but within the caller's is left for crun to refuse.
pub fn rlimits(spec: &mut Value, caller: &Caller, privileged: bool) -> Vec<Change> {
    if privileged {
        return Vec::new();
    }
    let Some(list) = spec
        .pointer_mut("/process/rlimits")
        .and_then(Value::as_array_mut)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in list.iter_mut() {
        let Some(rl) = typed::<PosixRlimit>(entry) else {
            continue;
        };
        let Some(&max) = caller.rlimit_hard.get(&rlimit_key(rl.typ())) else {
            continue;
        };
        let obj = entry.as_object_mut().expect("a typed rlimit is an object");
        let name = serde_json::to_value(rl.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for (key, have) in [("hard", rl.hard()), ("soft", rl.soft())] {
            if have > max {
                obj.insert(key.to_string(), Value::from(max));
                out.push(Change {
                    field: format!("process.rlimits[{name}].{key}"),
                    from: have.to_string(),
                    to: max.to_string(),
                    why: format!("above the caller's hard limit {max}; raising it needs CAP_SYS_RESOURCE in the initial user namespace"),
                });
            }
        }
    }
    out
}

/// `net.ipv4.ping_group_range` is narrowed to gids mapped in the namespace that writes
/// it: the kernel refuses a range whose ends are unmapped.
pub fn ping_group_range(spec: &mut Value, caller: &Caller, ns: &UserNs) -> Option<Change> {
    const KEY: &str = "net.ipv4.ping_group_range";
    let map = ns.ids(&caller.gid_map, &ns.gid_map)?.clone();
    let slot = spec
        .pointer_mut("/linux/sysctl")?
        .as_object_mut()?
        .get_mut(KEY)?;
    let text = slot.as_str()?.to_string();
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(lo)), Some(Ok(hi)), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    // "1 0" (lo > hi) is the kernel's "nobody may ping": nothing to map.
    if lo > hi || (map.contains(lo) && map.contains(hi)) {
        return None;
    }
    let (new_lo, new_hi) = (map.first_at_or_above(lo)?, map.last_at_or_below(hi)?);
    if new_lo > new_hi {
        return None;
    }
    let to = format!("{new_lo} {new_hi}");
    *slot = Value::from(to.clone());
    Some(Change {
        field: format!("linux.sysctl.{KEY}"),
        from: text,
        to,
        why: format!("the kernel accepts only mapped gids here (mapped: {map})"),
    })
}

/// Security labels for a module the kernel does not run cannot be applied: crun fails on
/// them, and removing them takes no protection away.
pub fn lsm_labels(spec: &mut Value, lsm: Lsm) -> Vec<Change> {
    let mut out = Vec::new();
    let mut clear = |parent: &str, key: &str, module: &str| {
        let Some(obj) = spec.pointer_mut(parent).and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(old) = take_nonempty_string(obj, key) {
            out.push(Change {
                field: format!("{}.{key}", parent.trim_start_matches('/').replace('/', ".")),
                from: old,
                to: "(removed)".into(),
                why: format!("{module} is not enabled, or not usable from here"),
            });
        }
    };
    if !lsm.apparmor {
        clear("/process", "apparmorProfile", "AppArmor");
    }
    if !lsm.selinux {
        clear("/process", "selinuxLabel", "SELinux");
        clear("/linux", "mountLabel", "SELinux");
    }
    out
}

fn take_nonempty_string(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    let s = obj.get(key)?.as_str()?;
    if s.is_empty() {
        return None;
    }
    let s = s.to_string();
    obj.shift_remove(key);
    Some(s)
}

/// `process.user` is never changed. Ids the namespace cannot represent are reported
/// (crun then fails with `cannot setresgid`/`setgroups: Invalid argument`).
pub fn unmapped_ids(spec: &Value, caller: &Caller, ns: &UserNs) -> Vec<Note> {
    let Some(user) = spec.pointer("/process/user").and_then(typed::<User>) else {
        return Vec::new();
    };
    let whose = if ns.own {
        "the container's uid/gidMappings"
    } else {
        "the caller's user namespace"
    };
    let mut out = Vec::new();
    let mut check = |field: String, kind: &str, id: u32, map: Option<&IdMap>| {
        if let Some(map) = map {
            if !map.contains(id) {
                out.push(Note {
                    field,
                    message: format!(
                        "{kind} {id} is not mapped in {whose} (mapped {kind}s: {map}); process.user is never changed, so crun will refuse it"
                    ),
                });
            }
        }
    };
    let uids = ns.ids(&caller.uid_map, &ns.uid_map);
    let gids = ns.ids(&caller.gid_map, &ns.gid_map);
    check("process.user.uid".into(), "uid", user.uid(), uids);
    check("process.user.gid".into(), "gid", user.gid(), gids);
    for (i, g) in user.additional_gids().iter().flatten().enumerate() {
        check(format!("process.user.additionalGids[{i}]"), "gid", *g, gids);
    }
    out
}
