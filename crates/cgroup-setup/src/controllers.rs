//! Controller names and sets: parsing `cgroup.controllers`, `cgroup.subtree_control` and
//! `/proc/cgroups`, and the sets kubelet and CRI-O need.

use std::collections::BTreeSet;

/// A set of cgroup v2 controller names, kept sorted so output and writes are stable.
pub type ControllerSet = BTreeSet<String>;

/// What kubelet and CRI-O cannot work without: resource limits (cpu, memory, io, pids)
/// and CPU pinning (cpuset, used by the CPU manager and by CRI-O's cgroup setup).
pub const REQUIRED: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// Used by kubelet when the kernel has them (hugepage limits, misc resources), not fatal
/// when missing: systemd hosts do not always delegate them.
pub const OPTIONAL: [&str; 2] = ["hugetlb", "misc"];

/// The host-side drop-in that delegates the required controllers to a user's systemd
/// manager, and therefore to the rootless containers it starts.
pub const DELEGATE_DROPIN_PATH: &str = "/etc/systemd/system/user@.service.d/delegate.conf";
pub const DELEGATE_DROPIN: &str = "[Service]\nDelegate=cpu cpuset io memory pids\n";

/// Parses a space-separated controller list (`cgroup.controllers`, `cgroup.subtree_control`).
pub fn parse_list(text: &str) -> ControllerSet {
    text.split_whitespace().map(str::to_string).collect()
}

/// Controllers the kernel has and enabled, from `/proc/cgroups`, under their cgroup v2
/// names (v1's `blkio` is v2's `io`). Which hierarchy they are bound to does not matter here:
/// the answer is used to tell "the kernel lacks it" from "nobody delegated it".
pub fn parse_proc_cgroups(text: &str) -> ControllerSet {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // subsys_name hierarchy num_cgroups enabled
            if f.len() >= 4 && f[3] == "1" {
                Some(if f[0] == "blkio" { "io" } else { f[0] }.to_string())
            } else {
                None
            }
        })
        .collect()
}

/// `a b c` for messages and `cgroup.subtree_control`-style output.
pub fn join(set: &ControllerSet) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

/// The single write that enables `set` in a `cgroup.subtree_control`: `+a +b +c`.
/// One write, because the kernel applies it all-or-nothing; enabling one controller at a
/// time could leave a half-enabled cgroup, or turn it into a thread root (see the notes).
pub fn enable_line(set: &ControllerSet) -> String {
    set.iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn required() -> ControllerSet {
    REQUIRED.iter().map(|s| s.to_string()).collect()
}

pub fn optional() -> ControllerSet {
    OPTIONAL.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_builds_one_write() {
        let s = parse_list("cpuset cpu io memory hugetlb pids rdma misc\n");
        assert_eq!(
            join(&s),
            "cpu cpuset hugetlb io memory misc pids rdma",
            "sorted"
        );
        assert_eq!(
            enable_line(&parse_list("memory cpu")),
            "+cpu +memory",
            "one line"
        );
        assert!(parse_list("\n").is_empty());
    }

    #[test]
    fn proc_cgroups_maps_blkio_and_skips_disabled() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                    cpuset\t0\t1\t1\ncpu\t0\t1\t1\nblkio\t0\t1\t1\nmemory\t0\t1\t0\nmisc\t0\t1\t1\n";
        assert_eq!(join(&parse_proc_cgroups(text)), "cpu cpuset io misc");
    }
}
