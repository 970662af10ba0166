//! Which cgroup hierarchy the node container sees: pure v2 (what kinc needs), hybrid or
//! v1 (refused, with the host-side fix), and where the mount sits relative to this
//! process's cgroup namespace. Pure functions over the text of `/proc/self/mountinfo`
//! and `/proc/<pid>/cgroup`, so they are tested without a kernel.

use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// `cgroup2` mounted at the cgroup mount point: the only layout kinc runs on.
    Unified,
    /// v1 controller hierarchies plus a v2 tree (usually at `unified/`).
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
    /// No cgroup filesystem at the mount point.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    pub kind: LayoutKind,
    pub mount_point: PathBuf,
    /// The mount's root inside the hierarchy, as the kernel shows it to this process
    /// (mountinfo field 4): `/` when the mount shows this cgroup namespace's root; `/..`
    /// (or deeper) when it was mounted outside the namespace and must be remounted.
    pub mount_root: Option<String>,
}

impl Layout {
    /// Why kinc can't go on with this layout, and what the host must change; `None` when
    /// the layout is usable.
    pub fn problem(&self) -> Option<(String, String)> {
        let mp = self.mount_point.display();
        let enable_v2 = "kinc needs the unified cgroup v2 hierarchy on the host. Boot the host \
            with `systemd.unified_cgroup_hierarchy=1` on the kernel command line (Debian/Ubuntu: \
            add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run `update-grub`, reboot; \
            Fedora/RHEL: `grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1`), \
            then check that `stat -fc %T /sys/fs/cgroup` prints `cgroup2fs`"
            .to_string();
        match self.kind {
            LayoutKind::Unified => match self.mount_root.as_deref() {
                Some("/") | None => None,
                Some(r) => Some((
                    format!(
                        "the cgroup2 mount at {mp} shows {r} of the hierarchy, not this cgroup \
                         namespace's root: it was mounted outside the namespace"
                    ),
                    format!("remount it inside the namespace: `mount -t cgroup2 cgroup2 {mp}`"),
                )),
            },
            LayoutKind::Hybrid => Some((
                format!("{mp} is a hybrid cgroup v1 + v2 layout: the controllers are on cgroup v1"),
                enable_v2,
            )),
            LayoutKind::Legacy => Some((format!("{mp} is cgroup v1 (legacy) only"), enable_v2)),
            LayoutKind::Missing => Some((
                format!("no cgroup filesystem is mounted at {mp}"),
                "run the node container with podman's defaults for a systemd image \
                 (cgroup v2 host, `--cgroupns=private`), which mount cgroup2 read-write"
                    .to_string(),
            )),
        }
    }
}

/// One mountinfo line, only the fields used here.
struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            Some(MountEntry {
                root: unescape(pre.get(3)?),
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classifies the cgroup layout at `mount_point` from the text of `/proc/self/mountinfo`.
/// The last mount at a path wins (it hides the earlier ones).
pub fn classify(mountinfo: &str, mount_point: &Path) -> Layout {
    let mounts = parse_mountinfo(mountinfo);
    let at = mounts.iter().rev().find(|m| m.mount_point == mount_point);
    let below = |fstype: &str| {
        mounts
            .iter()
            .any(|m| m.fstype == fstype && m.mount_point.starts_with(mount_point))
    };
    let (kind, mount_root) = match at {
        Some(m) if m.fstype == "cgroup2" => (LayoutKind::Unified, Some(m.root.clone())),
        _ if below("cgroup") && below("cgroup2") => (LayoutKind::Hybrid, None),
        _ if below("cgroup") => (LayoutKind::Legacy, None),
        _ => (LayoutKind::Missing, None),
    };
    Layout {
        kind,
        mount_point: mount_point.to_path_buf(),
        mount_root,
    }
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the `0::PATH` line), relative to the
/// reader's cgroup namespace; `None` on a v1-only system.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN_V2: &str = "\
1271 1270 0:64 / / rw,relatime - overlay overlay rw,lowerdir=/a
1276 1271 0:68 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1277 1276 0:29 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn pure_v2_at_namespace_root() {
        let l = classify(PODMAN_V2, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.kind, LayoutKind::Unified);
        assert_eq!(l.mount_root.as_deref(), Some("/"));
        assert!(l.problem().is_none());
    }

    #[test]
    fn hybrid_and_legacy_are_refused_with_the_enable_v2_fix() {
        let l = classify(HYBRID, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.kind, LayoutKind::Hybrid);
        let (what, fix) = l.problem().unwrap();
        assert!(what.contains("hybrid"), "{what}");
        assert!(fix.contains("systemd.unified_cgroup_hierarchy=1"), "{fix}");
        let legacy: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let l = classify(&legacy, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.kind, LayoutKind::Legacy);
        assert!(l.problem().unwrap().1.contains("cgroup2fs"));
    }

    #[test]
    fn mount_from_outside_the_namespace_needs_a_remount() {
        let text = PODMAN_V2.replace("0:29 / /sys/fs/cgroup", "0:29 /.. /sys/fs/cgroup");
        let l = classify(&text, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.mount_root.as_deref(), Some("/.."));
        let (what, fix) = l.problem().unwrap();
        assert!(what.contains("/.."), "{what}");
        assert!(fix.contains("mount -t cgroup2"), "{fix}");
    }

    #[test]
    fn missing_mount_and_last_mount_wins() {
        let l = classify("", Path::new("/sys/fs/cgroup"));
        assert_eq!(l.kind, LayoutKind::Missing);
        let over = format!("{PODMAN_V2}1300 1277 0:70 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n");
        assert_eq!(
            classify(&over, Path::new("/sys/fs/cgroup")).kind,
            LayoutKind::Missing
        );
    }

    #[test]
    fn escaped_mount_points() {
        let text = "5 1 0:29 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            classify(text, Path::new("/mnt/my cg")).kind,
            LayoutKind::Unified
        );
    }

    #[test]
    fn proc_cgroup_v2_line() {
        assert_eq!(
            parse_proc_cgroup("0::/init.scope\n").as_deref(),
            Some("/init.scope")
        );
        assert_eq!(
            parse_proc_cgroup("12:pids:/\n1:name=systemd:/\n0::/..\n").as_deref(),
            Some("/..")
        );
        assert_eq!(parse_proc_cgroup("1:name=systemd:/\n"), None);
    }
}
