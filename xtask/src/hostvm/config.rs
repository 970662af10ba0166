//! What the test host is made of: package lists, the files written into its root filesystem,
//! and the cache key derived from all of it. Everything here is pure, so it is unit-tested.

use std::fmt::Write as _;

/// Bump when the build steps change in a way the inputs below do not show.
pub const RECIPE_VERSION: u32 = 2;

pub const SUITE: &str = "trixie";
pub const HOSTNAME: &str = "kinc-hostvm";
/// The unprivileged user the end-to-end suite runs as.
pub const TEST_USER: &str = "kinc";
pub const TEST_UID: u32 = 1000;
pub const SUBID_START: u32 = 100_000;
pub const SUBID_COUNT: u32 = 65_536;
/// A fixed machine-id: no first-boot logic, the same journal directory on every overlay.
pub const MACHINE_ID: &str = "6b696e63686f7374766d000000000001";
/// 9p tag and guest mount point of the per-run control directory (job, agent, output).
pub const CTL_TAG: &str = "kinc-hostvm";
pub const CTL_MOUNT: &str = "/mnt/kinc-hostvm";
/// Where the node stand-in's rootfs tarball lives in the guest.
pub const NODE_TARBALL: &str = "/opt/kinc-hostvm/node-rootfs.tar.zst";
pub const AGENT_UNIT: &str = "kinc-hostvm-agent.service";
/// Size of the sparse disk image (only what the rootfs uses is allocated).
pub const DISK_SIZE: &str = "8G";

/// Packages of the host VM (debootstrap `--include`), as measured in notes/hostvm.md.
pub const HOST_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "dbus-user-session",
    "libpam-systemd",
    "systemd-container",
    "podman",
    "crun",
    "conmon",
    "catatonit",
    "netavark",
    "aardvark-dns",
    "passt",
    "slirp4netns",
    "uidmap",
    "fuse-overlayfs",
    "iproute2",
    "nftables",
    "iptables",
    "procps",
    "kmod",
    "e2fsprogs",
    "busybox-static",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "curl",
    "openssl",
];

/// Packages of the node image stand-in: a Debian systemd image, plus what the fake
/// bootstrap's HTTPS listener needs.
pub const NODE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "openssl",
];

/// Timers and units that only cost time on a throw-away test host.
pub const MASKED_UNITS: &[&str] = &[
    "systemd-firstboot.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
    // No one logs in: the console is only a log, and agetty's terminal probing clutters it.
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
];

/// Modules the trimmed initramfs carries: just enough to mount the virtio root disk.
pub const INITRAMFS_MODULES: &[&str] = &["virtio_blk", "ext4", "crc32c_generic"];

/// A file written into a root filesystem: path relative to its root, content, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFile {
    pub path: &'static str,
    pub content: String,
    pub mode: u32,
}

fn file(path: &'static str, content: String) -> RootFile {
    RootFile {
        path,
        content,
        mode: 0o644,
    }
}

/// The files the host VM's configuration consists of (written after debootstrap).
pub fn host_files() -> Vec<RootFile> {
    vec![
        file("etc/hostname", format!("{HOSTNAME}\n")),
        file(
            "etc/hosts",
            format!("127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost\n"),
        ),
        file("etc/fstab", fstab()),
        file("etc/machine-id", format!("{MACHINE_ID}\n")),
        file(
            "etc/subuid",
            format!("{TEST_USER}:{SUBID_START}:{SUBID_COUNT}\n"),
        ),
        file(
            "etc/subgid",
            format!("{TEST_USER}:{SUBID_START}:{SUBID_COUNT}\n"),
        ),
        file(
            "etc/initramfs-tools/conf.d/kinc-hostvm.conf",
            "MODULES=list\nFSTYPE=ext4\n".to_string(),
        ),
        file("etc/initramfs-tools/modules", initramfs_modules()),
        file("etc/systemd/system/kinc-hostvm-agent.service", agent_unit()),
        // Quiet console: the command's output goes elsewhere, the console is for debugging.
        file(
            "etc/systemd/system.conf.d/kinc-hostvm.conf",
            "[Manager]\nShowStatus=no\nDefaultTimeoutStopSec=15s\n".to_string(),
        ),
        file(
            "etc/systemd/journald.conf.d/kinc-hostvm.conf",
            "[Journal]\nStorage=volatile\nForwardToConsole=no\n".to_string(),
        ),
    ]
}

pub fn fstab() -> String {
    format!(
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n\
         {CTL_TAG} {CTL_MOUNT} 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n"
    )
}

pub fn initramfs_modules() -> String {
    let mut s = String::from("# kinc-hostvm: only what mounting /dev/vda needs\n");
    for m in INITRAMFS_MODULES {
        let _ = writeln!(s, "{m}");
    }
    s
}

/// The unit that runs the host's job after boot; the agent powers the VM off (or reboots
/// it) itself. It only starts when a job is there, so a VM booted without one stays up.
/// FailureAction covers an agent that crashes before it could power off.
pub fn agent_unit() -> String {
    format!(
        "[Unit]\n\
         Description=kinc hostvm: run the job from the host, then power off\n\
         After=multi-user.target\n\
         RequiresMountsFor={CTL_MOUNT}\n\
         ConditionPathExists={CTL_MOUNT}/job.json\n\
         FailureAction=poweroff-force\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={CTL_MOUNT}/agent hostvm guest-agent {CTL_MOUNT}\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Symlinks (relative to the root, target) that enable or mask units.
pub fn host_symlinks() -> Vec<(String, String)> {
    let mut v = vec![
        (
            "etc/systemd/system/default.target".to_string(),
            "/usr/lib/systemd/system/multi-user.target".to_string(),
        ),
        (
            format!("etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}"),
            format!("/etc/systemd/system/{AGENT_UNIT}"),
        ),
        // Quadlet units wait for network-online.target; with no NIC nothing pulls it in
        // and every start would wait 90 s (notes/hostvm.md).
        (
            "etc/systemd/system/multi-user.target.wants/network-online.target".to_string(),
            "/usr/lib/systemd/system/network-online.target".to_string(),
        ),
    ];
    for u in MASKED_UNITS {
        v.push((format!("etc/systemd/system/{u}"), "/dev/null".to_string()));
    }
    v
}

/// The drop-in kinc doctor asks for: delegate cpuset and io too.
pub const DELEGATE_DROPIN_PATH: &str = "/etc/systemd/system/user@.service.d/delegate.conf";
pub const DELEGATE_DROPIN: &str = "[Service]\nDelegate=cpu cpuset io memory pids\n";

/// Files of the node image stand-in, relative to its root.
pub fn node_files() -> Vec<RootFile> {
    vec![
        file("etc/hostname", "kinc-node\n".to_string()),
        // Empty: systemd in a container makes one up at boot.
        file("etc/machine-id", String::new()),
        file(
            "etc/systemd/system/kinc-fake-bootstrap.service",
            crate::hostvm::node::fake_bootstrap_unit(),
        ),
        file(
            "etc/systemd/system/kinc-fake-apiserver.service",
            crate::hostvm::node::fake_apiserver_unit(),
        ),
    ]
}

pub fn node_symlinks() -> Vec<(String, String)> {
    let mut v = vec![
        (
            "etc/systemd/system/multi-user.target.wants/kinc-fake-bootstrap.service".to_string(),
            "/etc/systemd/system/kinc-fake-bootstrap.service".to_string(),
        ),
        (
            "etc/systemd/system/multi-user.target.wants/kinc-fake-apiserver.service".to_string(),
            "/etc/systemd/system/kinc-fake-apiserver.service".to_string(),
        ),
    ];
    for u in [
        "systemd-firstboot.service",
        "getty@tty1.service",
        "console-getty.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
    ] {
        v.push((format!("etc/systemd/system/{u}"), "/dev/null".to_string()));
    }
    v
}

/// Everything the built image depends on, in one canonical text; its hash is the cache key.
pub fn key_material(mirror: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "recipe {RECIPE_VERSION}\nsuite {SUITE}\nmirror {mirror}");
    for (label, pkgs) in [("host", HOST_PACKAGES), ("node", NODE_PACKAGES)] {
        let _ = writeln!(s, "{label}-packages {}", pkgs.join(","));
    }
    let _ = writeln!(s, "user {TEST_USER} {TEST_UID} {SUBID_START} {SUBID_COUNT}");
    let _ = writeln!(s, "disk {DISK_SIZE}");
    for (label, files, links) in [
        ("host", host_files(), host_symlinks()),
        ("node", node_files(), node_symlinks()),
    ] {
        for f in files {
            let _ = writeln!(s, "{label}-file {} {:o}\n{}", f.path, f.mode, f.content);
        }
        for (l, t) in links {
            let _ = writeln!(s, "{label}-link {l} -> {t}");
        }
    }
    s
}

/// FNV-1a, 64 bit: stable across Rust releases (std's hasher is not), and collisions
/// between two recipes are not a security concern here.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn cache_key(mirror: &str) -> String {
    format!("{SUITE}-{:016x}", fnv1a64(key_material(mirror).as_bytes()))
}

/// The first `deb` URI of the Debian archive apt uses on this machine, from a deb822
/// `.sources` file or a one-line `sources.list`. Security and updates suites are skipped.
pub fn mirror_from_sources(text: &str) -> Option<String> {
    let is_archive = |uri: &str| !uri.contains("security");
    // deb822: stanzas separated by blank lines, with `Types:` and `URIs:` fields.
    for stanza in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        for line in stanza.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("Types:") {
                types = v.trim();
            } else if let Some(v) = line.strip_prefix("URIs:") {
                uris = v.trim();
            }
        }
        if types.split_whitespace().any(|t| t == "deb") {
            if let Some(u) = uris.split_whitespace().find(|u| is_archive(u)) {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
    }
    // One-line format: `deb [options] URI suite components`.
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest = words.skip_while(|w| w.starts_with('['));
        // `[a=b c=d]` may span several words.
        if let Some(uri) = rest.find(|w| w.contains("://")) {
            if is_archive(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// systemd's unit file syntax (systemd.syntax(7)) read into a typed model, so tests
/// assert what systemd will see instead of grepping the rendered text.
#[cfg(test)]
pub(crate) mod unit_syntax {
    use std::collections::BTreeMap;

    /// Key -> its values in order (a key given twice has two; an empty one resets).
    pub type Section = BTreeMap<String, Vec<String>>;
    /// Section name -> its keys.
    pub type UnitFile = BTreeMap<String, Section>;

    /// Parses `text`; Err names the first line systemd would reject or ignore.
    pub fn parse(text: &str) -> Result<UnitFile, String> {
        let mut unit = UnitFile::new();
        let mut section: Option<String> = None;
        let mut lines = text.lines().enumerate();
        while let Some((n, raw)) = lines.next() {
            let mut line = raw.trim().to_string();
            // A trailing backslash continues the line; systemd joins with a space (runs of
            // blanks are one here: no rendered unit depends on their count).
            while let Some(head) = line.strip_suffix('\\') {
                let Some((_, next)) = lines.next() else {
                    return Err(format!("line {}: continues past the end", n + 1));
                };
                line = format!("{} {}", head.trim_end(), next.trim());
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if name.is_empty() || name.contains(['[', ']']) {
                    return Err(format!("line {}: bad section header {line:?}", n + 1));
                }
                unit.entry(name.to_string()).or_default();
                section = Some(name.to_string());
                continue;
            }
            let Some(name) = &section else {
                return Err(format!("line {}: {line:?} before any section", n + 1));
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: {line:?} is not KEY=VALUE", n + 1));
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("line {}: bad key {key:?}", n + 1));
            }
            let values = unit
                .get_mut(name)
                .expect("the section was entered")
                .entry(key.to_string())
                .or_default();
            match value.trim() {
                "" => values.clear(),
                v => values.push(v.to_string()),
            }
        }
        Ok(unit)
    }

    /// The expected model, written out: `[(section, [(key, value), ...]), ...]`.
    pub fn expect(sections: &[(&str, &[(&str, &str)])]) -> UnitFile {
        let mut unit = UnitFile::new();
        for (name, keys) in sections {
            let s = unit.entry(name.to_string()).or_default();
            for (k, v) in *keys {
                s.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
        unit
    }

    #[test]
    fn parses_as_systemd_does() {
        let u = parse(
            "# comment\n; also\n[Unit]\nDescription = a b \nAfter=x.target\nAfter=y.target\n\n\
             [Service]\nExecStart=/bin/a \\\n    --flag\nEnvironment=A=1\nExecStartPre=/x\nExecStartPre=\n",
        )
        .unwrap();
        let mut want = expect(&[
            (
                "Unit",
                &[
                    ("Description", "a b"),
                    ("After", "x.target"),
                    ("After", "y.target"),
                ],
            ),
            (
                "Service",
                &[("ExecStart", "/bin/a --flag"), ("Environment", "A=1")],
            ),
        ]);
        // The empty assignment reset the list.
        want.get_mut("Service")
            .unwrap()
            .insert("ExecStartPre".into(), vec![]);
        assert_eq!(u, want);
        for bad in [
            "Description=x\n",
            "[Unit]\nDescription\n",
            "[Unit]\n=x\n",
            "[Unit]\nBad Key=x\n",
            "[Unit\nA=b\n",
            "[Unit]\nA=b \\\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_skips_security() {
        let text = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian/\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(text).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let sec_first = "Types: deb\nURIs: http://x/debian-security\n\nTypes: deb-src\nURIs: http://src/debian\n\nTypes: deb\nURIs: http://m/debian\n";
        assert_eq!(
            mirror_from_sources(sec_first).as_deref(),
            Some("http://m/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_format() {
        let text = "# x\ndeb-src http://src/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources(text).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(mirror_from_sources("deb-src http://a/ x y\n"), None);
    }

    #[test]
    fn cache_key_is_stable_and_tracks_inputs() {
        assert_eq!(cache_key("http://a/debian"), cache_key("http://a/debian"));
        assert_ne!(cache_key("http://a/debian"), cache_key("http://b/debian"));
        assert!(cache_key("m").starts_with("trixie-"));
        // Known FNV-1a 64 vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let m = key_material("m");
        assert!(m.contains("podman") && m.contains(&agent_unit()));
    }

    #[test]
    fn rendered_files() {
        let f = fstab();
        assert!(f.starts_with("/dev/vda / ext4 "));
        assert!(f.contains(&format!("{CTL_TAG} {CTL_MOUNT} 9p trans=virtio")));
        let files = host_files();
        let sub = files.iter().find(|f| f.path == "etc/subuid").unwrap();
        assert_eq!(sub.content, "kinc:100000:65536\n");
        let mid = files.iter().find(|f| f.path == "etc/machine-id").unwrap();
        assert_eq!(mid.content.trim().len(), 32);
        assert!(mid.content.trim().chars().all(|c| c.is_ascii_hexdigit()));
        assert!(initramfs_modules().lines().any(|l| l == "virtio_blk"));
        let links = host_symlinks();
        assert!(links
            .iter()
            .any(|(l, t)| l.ends_with("fstrim.timer") && t == "/dev/null"));
        // No file is listed twice (a later one would silently win).
        let mut paths: Vec<_> = files.iter().map(|f| f.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), files.len());
    }

    /// The agent unit as systemd reads it. The keys that matter: it waits for the 9p
    /// control mount (RequiresMountsFor; without it the agent can start before its job
    /// is visible), runs only when a job is there, and powers the VM off if the agent dies
    /// before it could (FailureAction; without it a crashed agent hangs the run until
    /// the host's timeout).
    #[test]
    fn agent_unit_as_systemd_reads_it() {
        let u = unit_syntax::parse(&agent_unit()).unwrap();
        assert_eq!(
            u,
            unit_syntax::expect(&[
                (
                    "Unit",
                    &[
                        (
                            "Description",
                            "kinc hostvm: run the job from the host, then power off"
                        ),
                        ("After", "multi-user.target"),
                        ("RequiresMountsFor", "/mnt/kinc-hostvm"),
                        ("ConditionPathExists", "/mnt/kinc-hostvm/job.json"),
                        ("FailureAction", "poweroff-force"),
                    ]
                ),
                (
                    "Service",
                    &[
                        ("Type", "oneshot"),
                        (
                            "ExecStart",
                            "/mnt/kinc-hostvm/agent hostvm guest-agent /mnt/kinc-hostvm"
                        ),
                        ("StandardOutput", "journal+console"),
                        ("StandardError", "journal+console"),
                    ]
                ),
                ("Install", &[("WantedBy", "multi-user.target")]),
            ])
        );
        // The mount it waits for is the one fstab makes.
        assert!(fstab().lines().any(
            |l| l.split_whitespace().nth(1) == Some(u["Unit"]["RequiresMountsFor"][0].as_str())
        ));
        // Enabled where the default target pulls it in.
        let enabled = format!("etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}");
        assert!(host_symlinks()
            .iter()
            .any(|(l, t)| *l == enabled && t.ends_with(AGENT_UNIT)));
    }

    #[test]
    fn drop_ins_as_systemd_reads_them() {
        let files = host_files();
        let file = |p: &str| {
            let f = files.iter().find(|f| f.path == p).unwrap();
            unit_syntax::parse(&f.content).unwrap()
        };
        assert_eq!(
            file("etc/systemd/system.conf.d/kinc-hostvm.conf"),
            unit_syntax::expect(&[(
                "Manager",
                &[("ShowStatus", "no"), ("DefaultTimeoutStopSec", "15s")]
            )])
        );
        assert_eq!(
            file("etc/systemd/journald.conf.d/kinc-hostvm.conf"),
            unit_syntax::expect(&[(
                "Journal",
                &[("Storage", "volatile"), ("ForwardToConsole", "no")]
            )])
        );
        assert_eq!(
            unit_syntax::parse(DELEGATE_DROPIN).unwrap(),
            unit_syntax::expect(&[("Service", &[("Delegate", "cpu cpuset io memory pids")])])
        );
        // Every file under etc/systemd is a well-formed unit or drop-in.
        for f in files.iter().filter(|f| f.path.starts_with("etc/systemd/")) {
            unit_syntax::parse(&f.content).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        }
    }

    /// systemd's own reading of the guest units, in a staged root with the host's stock
    /// units and stand-ins for the programs they run.
    #[test]
    #[ignore = "needs systemd-analyze and systemd's units in /usr/lib/systemd/system"]
    fn guest_units_pass_systemd_analyze_verify() {
        use std::os::unix::fs::PermissionsExt;
        use std::path::Path;
        use std::process::Command;

        use crate::hostvm::node;

        kinc_testutil::require_tools(&["systemd-analyze"]);
        let stock = ["/usr/lib/systemd/system", "/lib/systemd/system"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("sysinit.target").exists());
        kinc_testutil::require(
            stock.is_some(),
            "systemd's units in /usr/lib/systemd/system",
        );
        let dir = crate::hostvm::testdir::TestDir::new("units");
        let root = dir.path();
        kinc_types::fsutil::copy_tree(stock.unwrap(), &root.join("usr/lib/systemd/system"))
            .unwrap();
        let put = |rel: &str, text: &str, mode: u32| {
            let p = root.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        for exe in [
            format!("{CTL_MOUNT}/agent"),
            node::NODE_XTASK.to_string(),
            "/usr/bin/mkdir".into(),
            "/usr/bin/openssl".into(),
        ] {
            put(&exe, "#!/bin/sh\n", 0o755);
        }
        let verify = |units: &[std::path::PathBuf]| {
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .arg("--man=no")
                .args(units)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success() && stderr.trim().is_empty(), stderr)
        };
        let units = [
            put(
                &format!("etc/systemd/system/{AGENT_UNIT}"),
                &agent_unit(),
                0o644,
            ),
            put(
                "etc/systemd/system/kinc-fake-bootstrap.service",
                &node::fake_bootstrap_unit(),
                0o644,
            ),
            put(
                "etc/systemd/system/kinc-fake-apiserver.service",
                &node::fake_apiserver_unit(),
                0o644,
            ),
        ];
        let (ok, stderr) = verify(&units);
        assert!(ok, "{stderr}");
        // It does read them: a value it cannot parse is reported.
        put(
            &format!("etc/systemd/system/{AGENT_UNIT}"),
            &agent_unit().replace("poweroff-force", "poweroff-forc"),
            0o644,
        );
        let (ok, stderr) = verify(&units[..1]);
        assert!(!ok && stderr.contains("FailureAction"), "{stderr}");
    }
}
