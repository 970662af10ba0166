//! `kinc doctor`: host checks, each finding with the exact command or drop-in that
//! fixes it. Checks read files under a root directory (`/` for real, a temp tree in
//! tests) plus a few facts gathered once ([`HostFacts`], from the [`Host`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::host::Host;

/// Controllers a node needs delegated to the user's manager.
pub const NEEDED_CONTROLLERS: &[&str] = &["cpu", "memory", "pids", "cpuset", "io"];
pub const MIN_SUBIDS: u64 = 65536;
pub const MIN_NOFILE: u64 = 64000;
pub const MIN_INOTIFY_INSTANCES: u64 = 512;
pub const MIN_INOTIFY_WATCHES: u64 = 524288;
pub const MIN_MAXKEYS: u64 = 1000;
pub const NFT_MODULES: &[&str] = &["nf_tables", "nft_chain_nat", "nf_nat"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    /// `create` refuses to start while one of these stands (unless skipped by name).
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(check: &'static str, summary: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        summary: summary.into(),
        fix: None,
    }
}

fn bad(
    check: &'static str,
    level: Level,
    summary: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        level,
        summary: summary.into(),
        fix: Some(fix.into()),
    }
}

/// What the checks read that is not a file under the root.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub root: PathBuf,
    pub uid: u32,
    pub user: String,
    /// `podman version` client version; None when podman is missing.
    pub podman_version: Option<String>,
    pub nofile_hard: u64,
    /// Whether `systemctl --user` reaches a running manager.
    pub systemd_user: bool,
    /// Whether 127.0.0.1:6443 can be bound.
    pub first_port_free: bool,
}

impl HostFacts {
    /// The facts of `host`, with what podman and systemd answered.
    pub fn of(host: &Host, podman_version: Option<String>, systemd_user: bool) -> HostFacts {
        HostFacts {
            root: host.root.clone(),
            uid: host.uid,
            user: host.user.clone(),
            podman_version,
            nofile_hard: host.nofile_hard,
            systemd_user,
            first_port_free: host.port_free(crate::alloc::FIRST_API_PORT),
        }
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(p.trim_start_matches('/'))).ok()
    }
    fn exists(&self, p: &str) -> bool {
        self.root.join(p.trim_start_matches('/')).exists()
    }
    fn num(&self, p: &str) -> Option<u64> {
        self.read(p)?.trim().parse().ok()
    }
    fn rootless(&self) -> bool {
        self.uid != 0
    }
}

/// Every check, in the order `kinc doctor` prints them.
pub fn run_checks(f: &HostFacts) -> Vec<Finding> {
    vec![
        podman(f),
        rootless(f),
        cgroup_v2(f),
        delegation(f),
        linger(f),
        subids(f, "/etc/subuid", "subuid", "--add-subuids"),
        subids(f, "/etc/subgid", "subgid", "--add-subgids"),
        nofile(f),
        inotify(f),
        keyring(f),
        pids_limit(f),
        ip_forward(f),
        nft_modules(f),
        systemd_user(f),
        free_port(f),
    ]
}

/// Names of failed checks that are not in `skip`.
pub fn blocking<'a>(findings: &'a [Finding], skip: &[String]) -> Vec<&'a Finding> {
    findings
        .iter()
        .filter(|x| x.level == Level::Fail && !skip.iter().any(|s| s == x.check))
        .collect()
}

fn podman(f: &HostFacts) -> Finding {
    const C: &str = "podman";
    let install = "sudo apt-get install podman   # or: sudo dnf install podman";
    match f.podman_version.as_deref().map(|v| (v, crate::podman::parse_version(v))) {
        None => bad(C, Level::Fail, "podman is not installed or does not run", install),
        Some((v, Some(ver))) if ver < (4, 0, 0) => bad(
            C,
            Level::Fail,
            format!("podman {v} is too old; kinc needs 4.0 or newer"),
            install,
        ),
        Some((v, Some(ver))) if ver < (4, 4, 0) => bad(
            C,
            Level::Warn,
            format!("podman {v} has no Quadlet (4.4+); clusters run with plain `podman run` and do not come back after a reboot"),
            "upgrade podman to 4.4 or newer (Debian 13, Fedora 38+, Ubuntu 24.04)",
        ),
        Some((v, _)) => ok(C, format!("podman {v}")),
    }
}

fn rootless(f: &HostFacts) -> Finding {
    if f.rootless() {
        ok("rootless", format!("running as {} (uid {})", f.user, f.uid))
    } else {
        bad(
            "rootless",
            Level::Warn,
            "running as root: clusters use rootful podman",
            "run kinc as an unprivileged user (kinc is built for rootless podman)",
        )
    }
}

fn cgroup_v2(f: &HostFacts) -> Finding {
    if f.exists("/sys/fs/cgroup/cgroup.controllers") {
        ok("cgroup-v2", "cgroup v2 (unified hierarchy)")
    } else {
        bad(
            "cgroup-v2",
            Level::Fail,
            "the host does not run the unified cgroup v2 hierarchy (v1 or hybrid); the node needs v2",
            "add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX in /etc/default/grub, run `sudo update-grub`, reboot",
        )
    }
}

fn delegation(f: &HostFacts) -> Finding {
    const C: &str = "cgroup-delegation";
    let uid = f.uid;
    let path = if f.rootless() {
        format!("/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers")
    } else {
        "/sys/fs/cgroup/cgroup.controllers".to_string()
    };
    let fix = format!(
        "sudo mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl daemon-reload && sudo systemctl restart user@{uid}.service"
    );
    let Some(have) = f.read(&path) else {
        return bad(
            C,
            Level::Warn,
            format!("{path} does not exist (no cgroup v2 or no user@{uid}.service)"),
            fix,
        );
    };
    let have: Vec<&str> = have.split_whitespace().collect();
    let missing: Vec<&str> = NEEDED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.contains(c))
        .collect();
    if missing.is_empty() {
        ok(C, format!("delegated: {}", have.join(" ")))
    } else {
        // A failure, not a warning: cgroup-setup in the node refuses to start without all
        // five, so a create would only fail later, further from the cause.
        bad(
            C,
            Level::Fail,
            format!("controllers not delegated: {}", missing.join(" ")),
            fix,
        )
    }
}

fn linger(f: &HostFacts) -> Finding {
    if !f.rootless() || f.exists(&format!("/var/lib/systemd/linger/{}", f.user)) {
        ok("linger", "the user's manager outlives logins")
    } else {
        bad(
            "linger",
            Level::Warn,
            format!(
                "lingering is off for {}: clusters stop at logout and do not start at boot",
                f.user
            ),
            format!("sudo loginctl enable-linger {}", f.user),
        )
    }
}

fn subids(f: &HostFacts, file: &str, check: &'static str, flag: &str) -> Finding {
    if !f.rootless() {
        return ok(check, "root needs no subordinate ids");
    }
    let total: u64 = f
        .read(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.trim().split(':').collect();
            (p.len() == 3 && (p[0] == f.user || p[0] == f.uid.to_string()))
                .then(|| p[2].parse::<u64>().ok())
                .flatten()
        })
        .sum();
    if total >= MIN_SUBIDS {
        ok(check, format!("{total} ids in {file}"))
    } else {
        bad(
            check,
            Level::Fail,
            format!(
                "{} has {total} subordinate ids in {file}; at least {MIN_SUBIDS} needed",
                f.user
            ),
            format!(
                "sudo usermod {flag} 100000-165535 {}   (pick a range no other user has)",
                f.user
            ),
        )
    }
}

fn nofile(f: &HostFacts) -> Finding {
    if f.nofile_hard >= MIN_NOFILE {
        ok("nofile", format!("hard nofile {}", f.nofile_hard))
    } else {
        bad(
            "nofile",
            Level::Warn,
            format!("hard nofile limit is {}; at least {MIN_NOFILE} needed", f.nofile_hard),
            format!(
                "echo '{} hard nofile 1048576' | sudo tee /etc/security/limits.d/90-kinc.conf, and for the user manager: printf '[Manager]\\nDefaultLimitNOFILE=1048576\\n' | sudo tee /etc/systemd/user.conf.d/90-kinc.conf; log in again",
                f.user
            ),
        )
    }
}

fn inotify(f: &HostFacts) -> Finding {
    let i = f
        .num("/proc/sys/fs/inotify/max_user_instances")
        .unwrap_or(0);
    let w = f.num("/proc/sys/fs/inotify/max_user_watches").unwrap_or(0);
    if i >= MIN_INOTIFY_INSTANCES && w >= MIN_INOTIFY_WATCHES {
        ok(
            "inotify",
            format!("max_user_instances {i}, max_user_watches {w}"),
        )
    } else {
        bad(
            "inotify",
            Level::Warn,
            format!("inotify limits too low: max_user_instances {i} (want {MIN_INOTIFY_INSTANCES}), max_user_watches {w} (want {MIN_INOTIFY_WATCHES})"),
            format!("printf 'fs.inotify.max_user_instances = {MIN_INOTIFY_INSTANCES}\\nfs.inotify.max_user_watches = {MIN_INOTIFY_WATCHES}\\n' | sudo tee /etc/sysctl.d/90-kinc.conf && sudo sysctl --system"),
        )
    }
}

/// `/proc/key-users`: `<uid>: <usage> <nkeys>/<nikeys> <qnkeys>/<maxkeys> <qnbytes>/<maxbytes>`.
fn keyring(f: &HostFacts) -> Finding {
    const C: &str = "keyring";
    let sysctl = if f.rootless() {
        "maxkeys"
    } else {
        "root_maxkeys"
    };
    let max = f
        .num(&format!("/proc/sys/kernel/keys/{sysctl}"))
        .unwrap_or(0);
    let used = f
        .read("/proc/key-users")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (uid, rest) = l.trim().split_once(':')?;
            if uid.trim() != f.uid.to_string() {
                return None;
            }
            let q = rest.split_whitespace().nth(2)?;
            q.split_once('/')?.0.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let fix = format!("printf 'kernel.keys.{sysctl} = 20000\\nkernel.keys.maxbytes = 400000\\n' | sudo tee /etc/sysctl.d/90-kinc-keys.conf && sudo sysctl --system");
    if max < MIN_MAXKEYS {
        bad(C, Level::Warn, format!("kernel.keys.{sysctl} is {max}: every container takes a session keyring; want {MIN_MAXKEYS}+"), fix)
    } else if used * 10 > max * 8 {
        bad(
            C,
            Level::Warn,
            format!("{used} of {max} keys already used by uid {}", f.uid),
            fix,
        )
    } else {
        ok(C, format!("{used} of {max} keys used"))
    }
}

fn pids_limit(f: &HostFacts) -> Finding {
    const C: &str = "pids-limit";
    let uid = f.uid;
    let paths = [
        format!("/sys/fs/cgroup/user.slice/user-{uid}.slice/pids.max"),
        format!("/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/pids.max"),
    ];
    for p in &paths {
        if let Some(v) = f.read(p) {
            let v = v.trim();
            if v != "max" && v.parse::<u64>().map(|n| n < 100_000).unwrap_or(false) {
                return bad(
                    C,
                    Level::Warn,
                    format!("{p} is {v}: every process of every pod counts against it"),
                    format!("sudo systemctl set-property user-{uid}.slice TasksMax=infinity"),
                );
            }
        }
    }
    ok(
        C,
        "kinc runs the node with --pids-limit=-1 and the user's slice has no low pids.max",
    )
}

fn ip_forward(f: &HostFacts) -> Finding {
    match f.num("/proc/sys/net/ipv4/ip_forward") {
        Some(1) => ok("ip-forward", "net.ipv4.ip_forward = 1"),
        _ => bad(
            "ip-forward",
            Level::Warn,
            "net.ipv4.ip_forward is off",
            "echo 'net.ipv4.ip_forward = 1' | sudo tee /etc/sysctl.d/90-kinc-forward.conf && sudo sysctl --system",
        ),
    }
}

fn nft_modules(f: &HostFacts) -> Finding {
    let missing: Vec<&str> = NFT_MODULES
        .iter()
        .copied()
        .filter(|m| !f.exists(&format!("/sys/module/{m}")))
        .collect();
    if missing.is_empty() {
        ok("nf-tables", "nf_tables modules loaded")
    } else {
        bad(
            "nf-tables",
            Level::Warn,
            format!("kernel modules not loaded: {}", missing.join(" ")),
            format!(
                "sudo modprobe -a {m} && printf '%s\\n' {m} | sudo tee /etc/modules-load.d/kinc.conf",
                m = missing.join(" ")
            ),
        )
    }
}

fn systemd_user(f: &HostFacts) -> Finding {
    if f.systemd_user {
        ok(
            "systemd-user",
            "a systemd user manager runs: clusters run as Quadlet units",
        )
    } else {
        bad(
            "systemd-user",
            Level::Warn,
            "no systemd user manager: kinc falls back to plain `podman run` (no restart after reboot)",
            format!("sudo loginctl enable-linger {} and log in through a systemd session (XDG_RUNTIME_DIR=/run/user/{})", f.user, f.uid),
        )
    }
}

fn free_port(f: &HostFacts) -> Finding {
    if f.first_port_free {
        ok("ports", "127.0.0.1:6443 is free")
    } else {
        bad(
            "ports",
            Level::Warn,
            "127.0.0.1:6443 is in use: the next cluster takes the next free port",
            "nothing to do, or pass --api-port PORT; `ss -ltnp 'sport = :6443'` shows who holds it",
        )
    }
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
