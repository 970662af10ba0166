//! Carrying out a plan against the live cgroupfs. Every step re-reads the kernel's state
//! instead of trusting the plan, because systemd or `podman exec` may add processes
//! while we work.
//!
//! Invariants: a process is only ever moved from a cgroup into a leaf directly below it
//! (never into a cgroup we might remove, never out of the subtree it was in), and nothing
//! is removed, so a failure at any point leaves every process in a live cgroup.

use std::io;

use serde::Serialize;

use crate::controllers::{self, ControllerSet};
use crate::fs::{Cgroupfs, ProcInfo};
use crate::plan::{movable_pids, read_set, Plan};
use crate::Error;

/// How often the evacuation re-reads `cgroup.procs` before giving up: a new process only
/// appears in a cgroup through a fork by a member or a write by someone else; after its
/// members are gone, forks land in the leaf, so a handful of rounds is plenty.
const MAX_ROUNDS: usize = 50;

/// How often `cgroup.subtree_control` is retried when the kernel reports EBUSY because a
/// process arrived between the evacuation and the write.
const MAX_ENABLE_TRIES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    pub pid: u32,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enabled {
    pub cgroup: String,
    pub controllers: ControllerSet,
}

/// What was changed, filled in as it happens so a failure still reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub created: Vec<String>,
    pub moved: Vec<Moved>,
    pub enabled: Vec<Enabled>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.moved.is_empty() && self.enabled.is_empty()
    }
}

pub fn apply(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    plan: &Plan,
    changes: &mut Changes,
) -> Result<(), Error> {
    for level in &plan.levels {
        let cg = level.cgroup.as_str();
        if !fs.exists(cg) {
            mkdir(fs, cg, changes)?;
        }
        evacuate(fs, procs, cg, &level.leaf, changes)?;
        enable(fs, procs, cg, &level.leaf, &plan.target, changes)?;
    }
    // The real root is exempt from the no-internal-process rule, so processes may still
    // arrive there after its controllers are on: sweep every level once more.
    for level in &plan.levels {
        evacuate(fs, procs, &level.cgroup, &level.leaf, changes)?;
    }
    Ok(())
}

fn mkdir(fs: &dyn Cgroupfs, cg: &str, changes: &mut Changes) -> Result<(), Error> {
    fs.mkdir(cg).map_err(|source| Error::Mkdir {
        path: fs.path(cg, ""),
        source,
    })?;
    changes.created.push(cg.to_string());
    Ok(())
}

/// Moves every user process out of `cg` into `leaf`, one pid per write, until a read of
/// `cgroup.procs` finds none. Processes that exit meanwhile (ESRCH) are skipped.
pub fn evacuate(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    cg: &str,
    leaf: &str,
    changes: &mut Changes,
) -> Result<(), Error> {
    let mut left = 0;
    for _ in 0..MAX_ROUNDS {
        let pids = movable_pids(fs, procs, cg)?;
        if pids.is_empty() {
            return Ok(());
        }
        left = pids.len();
        if !fs.exists(leaf) {
            mkdir(fs, leaf, changes)?;
        }
        for pid in pids {
            match fs.write(leaf, "cgroup.procs", &pid.to_string()) {
                Ok(()) => changes.moved.push(Moved {
                    pid,
                    from: cg.to_string(),
                    to: leaf.to_string(),
                }),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Move {
                        pid,
                        from: cg.to_string(),
                        to: leaf.to_string(),
                        source,
                    })
                }
            }
        }
    }
    Err(Error::KeepAppearing {
        cgroup: cg.to_string(),
        to: leaf.to_string(),
        left,
        rounds: MAX_ROUNDS,
    })
}

/// Enables what `cg` lacks of `target` in one write. On EBUSY (a process slipped in since
/// the evacuation) it evacuates again and retries.
fn enable(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    cg: &str,
    leaf: &str,
    target: &ControllerSet,
    changes: &mut Changes,
) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        let now = read_set(fs, cg, "cgroup.subtree_control")?;
        let add: ControllerSet = target.difference(&now).cloned().collect();
        if add.is_empty() {
            return Ok(());
        }
        let line = controllers::enable_line(&add);
        match fs.write(cg, "cgroup.subtree_control", &line) {
            Ok(()) => {
                changes.enabled.push(Enabled {
                    cgroup: cg.to_string(),
                    controllers: add,
                });
                return Ok(());
            }
            Err(e) if is_busy(&e) && tries + 1 < MAX_ENABLE_TRIES => {
                tries += 1;
                evacuate(fs, procs, cg, leaf, changes)?;
            }
            Err(source) => {
                return Err(Error::Write {
                    path: fs.path(cg, "cgroup.subtree_control"),
                    data: line,
                    source,
                })
            }
        }
    }
}

fn is_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBUSY)
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
