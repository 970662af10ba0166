//! The plan: read-only, computed from a cgroupfs tree. Which processes must leave which
//! cgroup for which leaf, and which controllers each cgroup from the root down to
//! kubelet's cgroup root must enable. Also what is missing and why.

use serde::Serialize;

use crate::controllers::{self, ControllerSet};
use crate::fs::{child, parse_pids, Cgroupfs, ProcInfo, ProcKind};
use crate::Error;

#[derive(Debug, Clone)]
pub struct Options {
    /// kubelet's `cgroupRoot`, e.g. `/kubelet`.
    pub kubelet_root: String,
    /// Name of the leaf cgroup processes are moved into, below each cgroup that must
    /// enable controllers (`init.scope`, where systemd keeps PID 1).
    pub leaf: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            kubelet_root: kinc_types::node::KUBELET_CGROUP_ROOT.to_string(),
            leaf: "init.scope".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MissingReason {
    /// The parent cgroup outside our namespace did not enable it for us.
    NotDelegated,
    /// The kernel has it but it is not on cgroup v2 (bound to a v1 hierarchy).
    BoundToV1,
    /// The kernel does not have it.
    NotInKernel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    pub controller: String,
    pub reason: MissingReason,
}

/// One cgroup on the path from the root to kubelet's cgroup root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Level {
    pub cgroup: String,
    pub exists: bool,
    /// User processes in it now, to be moved to `leaf`.
    pub pids: Vec<u32>,
    /// Where they go: `<cgroup>/<leaf>`.
    pub leaf: String,
    /// Its `cgroup.subtree_control` now.
    pub enabled: ControllerSet,
    /// What to add to it.
    pub enable: ControllerSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The cgroupfs root is not the host's real root: we are in a cgroup namespace below
    /// a delegated subtree (a container), so what is missing was not delegated.
    pub nested: bool,
    /// The root's `cgroup.controllers`: everything we may enable.
    pub available: ControllerSet,
    /// What every level ends up with in `cgroup.subtree_control`.
    pub target: ControllerSet,
    pub levels: Vec<Level>,
    pub missing_required: Vec<Missing>,
    pub missing_optional: Vec<Missing>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.levels
            .iter()
            .all(|l| l.exists && l.pids.is_empty() && l.enable.is_empty())
    }
}

/// Splits and checks kubelet's cgroup root into the cgroups from `/` down to it.
pub fn levels_of(opts: &Options) -> Result<Vec<String>, Error> {
    let bad = |why| Error::BadOption {
        flag: "--kubelet-cgroup-root",
        value: opts.kubelet_root.clone(),
        why,
    };
    let root = &opts.kubelet_root;
    if !root.starts_with('/') {
        return Err(bad("must be an absolute cgroup path such as /kubelet"));
    }
    let mut levels = vec!["/".to_string()];
    for comp in root.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(bad("must not contain . or .."));
        }
        if comp.starts_with("cgroup.") {
            return Err(bad("a cgroup can't be named cgroup.*"));
        }
        levels.push(child(levels.last().expect("non-empty"), comp));
    }
    let leaf_bad = |why| Error::BadOption {
        flag: "--leaf",
        value: opts.leaf.clone(),
        why,
    };
    let leaf = &opts.leaf;
    if leaf.is_empty() || leaf.contains('/') || leaf == "." || leaf == ".." {
        return Err(leaf_bad("must be a single cgroup name such as init.scope"));
    }
    if leaf.starts_with("cgroup.") {
        return Err(leaf_bad("a cgroup can't be named cgroup.*"));
    }
    if levels.iter().any(|l| l.rsplit('/').next() == Some(leaf)) {
        return Err(leaf_bad(
            "must differ from every part of --kubelet-cgroup-root",
        ));
    }
    Ok(levels)
}

pub(crate) fn read(fs: &dyn Cgroupfs, cgroup: &str, file: &str) -> Result<String, Error> {
    fs.read(cgroup, file).map_err(|source| Error::Read {
        path: fs.path(cgroup, file),
        source,
    })
}

pub(crate) fn read_set(
    fs: &dyn Cgroupfs,
    cgroup: &str,
    file: &str,
) -> Result<ControllerSet, Error> {
    Ok(controllers::parse_list(&read(fs, cgroup, file)?))
}

/// The user processes in `cgroup` (kernel threads and exited ones left out).
pub fn movable_pids(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    cgroup: &str,
) -> Result<Vec<u32>, Error> {
    let text = read(fs, cgroup, "cgroup.procs")?;
    Ok(parse_pids(&text, &fs.path(cgroup, "cgroup.procs"))?
        .into_iter()
        .filter(|&p| procs.kind(p) == ProcKind::User)
        .collect())
}

/// Computes the plan. `kernel` is the kernel's controller list (`/proc/cgroups`) when
/// readable; it only refines why something is missing.
pub fn plan(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    kernel: Option<&ControllerSet>,
    opts: &Options,
) -> Result<Plan, Error> {
    let paths = levels_of(opts)?;
    // The real root has neither cgroup.events nor cgroup.type; a namespace root has both.
    let nested = fs.has_file("/", "cgroup.events");
    let available = read_set(fs, "/", "cgroup.controllers")?;
    let target = available.clone();

    let mut levels = Vec::new();
    for cg in &paths {
        let leaf = child(cg, &opts.leaf);
        if !fs.exists(cg) {
            levels.push(Level {
                cgroup: cg.clone(),
                exists: false,
                pids: vec![],
                leaf,
                enabled: ControllerSet::new(),
                enable: target.clone(),
            });
            continue;
        }
        if cg != "/" && fs.has_file(cg, "cgroup.type") {
            let kind = read(fs, cg, "cgroup.type")?.trim().to_string();
            if kind != "domain" {
                return Err(Error::NotDomain {
                    cgroup: cg.clone(),
                    kind,
                });
            }
        }
        if fs.exists(&leaf) {
            let busy = read_set(fs, &leaf, "cgroup.subtree_control")?;
            if !busy.is_empty() {
                return Err(Error::LeafNotLeaf {
                    cgroup: leaf,
                    controllers: controllers::join(&busy),
                });
            }
        }
        let enabled = read_set(fs, cg, "cgroup.subtree_control")?;
        levels.push(Level {
            cgroup: cg.clone(),
            exists: true,
            pids: movable_pids(fs, procs, cg)?,
            leaf,
            enable: target.difference(&enabled).cloned().collect(),
            enabled,
        });
    }

    let why = |c: &str| {
        if nested {
            MissingReason::NotDelegated
        } else if kernel.is_some_and(|k| k.contains(c)) {
            MissingReason::BoundToV1
        } else {
            MissingReason::NotInKernel
        }
    };
    let missing = |set: ControllerSet| -> Vec<Missing> {
        set.difference(&available)
            .map(|c| Missing {
                controller: c.clone(),
                reason: why(c),
            })
            .collect()
    };
    let missing_required = missing(controllers::required());
    // An optional controller the kernel lacks is not worth a warning.
    let optional: ControllerSet = controllers::optional()
        .into_iter()
        .filter(|c| kernel.is_none_or(|k| k.contains(c)))
        .collect();
    let missing_optional = missing(optional);

    Ok(Plan {
        nested,
        available,
        target,
        levels,
        missing_required,
        missing_optional,
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
