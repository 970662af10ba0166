//! The result, as JSON (`--json`, read by the bootstrap and the host CLI) or as lines
//! for a person.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::apply::Changes;
use crate::controllers::{self, ControllerSet};
use crate::layout::Layout;
use crate::plan::{Missing, MissingReason, Options, Plan};
use crate::{Error, HostFix};

/// Beyond this many moved pids the human output summarises.
const LIST_MOVES: usize = 8;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    /// Something was created, moved or enabled.
    pub changed: bool,
    pub dry_run: bool,
    pub layout: Layout,
    /// The cgroupfs root is a cgroup namespace root below a delegated subtree (a
    /// container), not the host's real root. `None` when not looked at.
    pub nested: Option<bool>,
    pub kubelet_cgroup_root: String,
    /// The root's `cgroup.controllers`.
    pub available: ControllerSet,
    /// `cgroup.subtree_control` of each cgroup from the root down to kubelet's cgroup
    /// root, read back after applying.
    pub subtree_control: BTreeMap<String, ControllerSet>,
    pub changes: Changes,
    /// With `--dry-run`: what would be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    pub missing_required: Vec<Missing>,
    pub missing_optional: Vec<Missing>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub host_fix: Option<HostFix>,
}

impl Report {
    pub fn new(layout: Layout, opts: &Options, dry_run: bool) -> Self {
        Self {
            ok: true,
            changed: false,
            dry_run,
            layout,
            nested: None,
            kubelet_cgroup_root: opts.kubelet_root.clone(),
            available: ControllerSet::new(),
            subtree_control: BTreeMap::new(),
            changes: Changes::default(),
            plan: None,
            missing_required: vec![],
            missing_optional: vec![],
            warnings: vec![],
            error: None,
            hint: None,
            host_fix: None,
        }
    }

    pub(crate) fn absorb_plan(&mut self, plan: &Plan) {
        self.nested = Some(plan.nested);
        self.available = plan.available.clone();
        self.missing_required = plan.missing_required.clone();
        self.missing_optional = plan.missing_optional.clone();
        for m in &plan.missing_optional {
            let why = match m.reason {
                MissingReason::NotDelegated => "the host did not delegate it to this container",
                MissingReason::BoundToV1 => "it is bound to a cgroup v1 hierarchy",
                MissingReason::NotInKernel => "the kernel does not have it",
            };
            self.warnings.push(format!(
                "optional controller {} is not available ({why}); kubelet runs without it",
                m.controller
            ));
        }
    }

    pub(crate) fn fail(&mut self, e: &Error) {
        self.ok = false;
        self.error = Some(e.to_string());
        self.hint = e.hint();
        self.host_fix = e.host_fix();
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report always serializes")
    }

    /// Lines for stdout (what happened) and stderr (the error and its fix).
    pub fn human(&self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        let mp = self.layout.mount_point.display();
        match self.nested {
            Some(true) => {
                let _ = writeln!(
                    out,
                    "cgroup v2 at {mp}: a cgroup namespace root below a delegated subtree"
                );
            }
            Some(false) => {
                let _ = writeln!(out, "cgroup v2 at {mp}: the host's root cgroup");
            }
            None => {}
        }
        let c = &self.changes;
        for cg in &c.created {
            let _ = writeln!(out, "created cgroup {cg}");
        }
        // Group moves by (from, to) so a busy root does not print hundreds of lines.
        let mut groups: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
        for m in &c.moved {
            groups.entry((&m.from, &m.to)).or_default().push(m.pid);
        }
        for ((from, to), pids) in groups {
            let list = if pids.len() <= LIST_MOVES {
                format!(
                    " ({})",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "moved {} process(es) from {from} to {to}{list}",
                pids.len()
            );
        }
        for e in &c.enabled {
            let _ = writeln!(
                out,
                "enabled {} in {}",
                controllers::join(&e.controllers),
                sc_path(&e.cgroup)
            );
        }
        if let Some(plan) = &self.plan {
            for l in &plan.levels {
                if !l.exists {
                    let _ = writeln!(out, "would create cgroup {}", l.cgroup);
                }
                if !l.pids.is_empty() {
                    let _ = writeln!(
                        out,
                        "would move {} process(es) from {} to {}",
                        l.pids.len(),
                        l.cgroup,
                        l.leaf
                    );
                }
                if !l.enable.is_empty() {
                    let _ = writeln!(
                        out,
                        "would enable {} in {}",
                        controllers::join(&l.enable),
                        sc_path(&l.cgroup)
                    );
                }
            }
        }
        for w in &self.warnings {
            let _ = writeln!(err, "warning: {w}");
        }
        if self.ok {
            let what = if self.dry_run {
                "dry run, nothing changed"
            } else if self.changed {
                "done"
            } else {
                "already set up, nothing changed"
            };
            let _ = writeln!(
                out,
                "ok: {} enabled from / down to {} ({what})",
                controllers::join(&self.available),
                self.kubelet_cgroup_root
            );
        } else {
            if let Some(e) = &self.error {
                let _ = writeln!(err, "error: {e}");
            }
            if let Some(h) = &self.hint {
                let _ = writeln!(err, "hint: {h}");
            }
        }
        (out, err)
    }
}

fn sc_path(cg: &str) -> String {
    if cg == "/" {
        "/cgroup.subtree_control".to_string()
    } else {
        format!("{cg}/cgroup.subtree_control")
    }
}
