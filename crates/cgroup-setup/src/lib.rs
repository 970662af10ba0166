//! `cgroup-setup`: makes the node container's cgroup v2 tree usable by CRI-O and kubelet.
//!
//! A container starts in its own cgroup namespace, with its processes (systemd, or
//! whatever runs first) in the namespace's root cgroup. Under cgroup v2's "no internal
//! processes" rule a non-root cgroup that holds processes cannot enable domain controllers
//! for its children (EBUSY), so kubelet could not limit pods. This crate:
//!
//! 1. detects the layout ([`layout`]): pure v2 or refuse with the host-side fix;
//! 2. plans ([`plan`]), from the cgroupfs tree alone: which processes go to which leaf,
//!    which controllers each cgroup from the root down to kubelet's cgroup root must enable;
//! 3. applies it ([`apply`]): one pid per write, ESRCH ignored, repeated until the cgroup
//!    is empty, then all controllers in one write per cgroup;
//! 4. verifies the result from the kernel's state and reports ([`report`]).

pub mod apply;
pub mod controllers;
mod error;
pub mod fs;
pub mod layout;
pub mod plan;
pub mod report;

use std::collections::BTreeMap;

pub use error::{delegate_hint, Error, HostFix};
pub use report::Report;

use apply::Changes;
use controllers::ControllerSet;
use fs::{Cgroupfs, ProcInfo};
use layout::{Layout, LayoutKind};
use plan::{movable_pids, read_set, Options, Plan};

/// Everything the helper looks at, gathered by `main` from the real system or built
/// by tests.
pub struct System<'a> {
    pub fs: &'a dyn Cgroupfs,
    pub procs: &'a dyn ProcInfo,
    pub layout: Layout,
    /// PID 1's cgroup as this process sees it (`/proc/1/cgroup`).
    pub init_cgroup: Option<String>,
    /// The kernel's controllers (`/proc/cgroups`), when readable.
    pub kernel: Option<ControllerSet>,
}

/// Runs the whole job on this machine: cgroup2 at `mount`, procfs at `/proc`. This is
/// what the binary does; `kinc-init` may call it directly.
pub fn run_host(mount: &std::path::Path, opts: &Options, dry_run: bool) -> Report {
    let fs = fs::HostCgroupfs::new(mount);
    let procs = fs::HostProcfs::new("/proc");
    // An unreadable mountinfo reads as "no cgroup mount", which is reported precisely.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let sys = System {
        fs: &fs,
        procs: &procs,
        layout: layout::classify(&mountinfo, mount),
        init_cgroup: std::fs::read_to_string("/proc/1/cgroup")
            .ok()
            .and_then(|t| layout::parse_proc_cgroup(&t)),
        kernel: std::fs::read_to_string("/proc/cgroups")
            .ok()
            .map(|t| controllers::parse_proc_cgroups(&t)),
    };
    run(&sys, opts, dry_run)
}

/// Runs the whole job and reports; never panics on kernel errors.
pub fn run(sys: &System, opts: &Options, dry_run: bool) -> Report {
    let mut report = Report::new(sys.layout.clone(), opts, dry_run);
    let mut changes = Changes::default();
    let result = run_inner(sys, opts, dry_run, &mut report, &mut changes);
    report.changes = changes;
    report.changed = !report.changes.is_empty();
    if let Err(e) = result {
        report.fail(&e);
    }
    report
}

fn run_inner(
    sys: &System,
    opts: &Options,
    dry_run: bool,
    report: &mut Report,
    changes: &mut Changes,
) -> Result<(), Error> {
    plan::levels_of(opts)?;
    if let Some((what, fix)) = sys.layout.problem() {
        return Err(Error::Layout { what, fix });
    }
    debug_assert_eq!(sys.layout.kind, LayoutKind::Unified);
    let fs = sys.fs;
    let nested = fs.has_file("/", "cgroup.events");
    if !nested {
        // At the host's real root, only a machine of our own (a VM, a systemd host whose
        // PID 1 sits in init.scope) is ours to rearrange.
        let init = sys.init_cgroup.clone().unwrap_or_default();
        let ours = [
            "/".to_string(),
            "/init.scope".to_string(),
            fs::child("/", &opts.leaf),
        ];
        if !ours.contains(&init) {
            return Err(Error::HostHierarchy {
                mount: sys.layout.mount_point.clone(),
                init_cgroup: init,
            });
        }
    }
    let plan = plan::plan(fs, sys.procs, sys.kernel.as_ref(), opts)?;
    report.absorb_plan(&plan);
    if !plan.missing_required.is_empty() {
        // Refuse before touching anything: a node without these can't run pods.
        return Err(Error::MissingControllers {
            missing: plan
                .missing_required
                .iter()
                .map(|m| m.controller.clone())
                .collect(),
            available: plan.available.iter().cloned().collect(),
            nested: plan.nested,
        });
    }
    if dry_run {
        report.plan = Some(plan);
        return Ok(());
    }
    apply::apply(fs, sys.procs, &plan, changes)?;
    report.subtree_control = verify(fs, sys.procs, &plan)?;
    Ok(())
}

/// Reads the result back from the kernel: every level enables the whole target set and
/// holds no user process.
pub fn verify(
    fs: &dyn Cgroupfs,
    procs: &dyn ProcInfo,
    plan: &Plan,
) -> Result<BTreeMap<String, ControllerSet>, Error> {
    let mut out = BTreeMap::new();
    for level in &plan.levels {
        let cg = &level.cgroup;
        let on = read_set(fs, cg, "cgroup.subtree_control")?;
        let missing: Vec<String> = plan.target.difference(&on).cloned().collect();
        if !missing.is_empty() {
            // apply() wrote them; the kernel dropping them means the parent withdrew them.
            return Err(Error::MissingControllers {
                missing,
                available: on.iter().cloned().collect(),
                nested: plan.nested,
            });
        }
        let pids = movable_pids(fs, procs, cg)?;
        if !pids.is_empty() {
            return Err(Error::LeftBehind {
                cgroup: cg.clone(),
                pids,
            });
        }
        out.insert(cg.clone(), on);
    }
    Ok(out)
}

#[cfg(test)]
mod testkit;

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
