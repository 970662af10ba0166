use std::io;
use std::path::PathBuf;

use crate::controllers::{DELEGATE_DROPIN, DELEGATE_DROPIN_PATH};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parsing {path}: bad {what}")]
    Parse { path: PathBuf, what: String },
    #[error("creating cgroup {path}: {source}")]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("writing {data:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        data: String,
        source: io::Error,
    },
    #[error("moving pid {pid} from cgroup {from} to {to}: {source}")]
    Move {
        pid: u32,
        from: String,
        to: String,
        source: io::Error,
    },
    #[error("invalid {flag} {value:?}: {why}")]
    BadOption {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{what}")]
    Layout { what: String, fix: String },
    #[error(
        "{mount} is the whole host hierarchy (PID 1 is in cgroup {init_cgroup}), not a private \
         cgroup namespace: refusing to move the host's processes"
    )]
    HostHierarchy { mount: PathBuf, init_cgroup: String },
    #[error(
        "cgroup {cgroup} is of type {kind:?}; kubelet's cgroups need domain cgroups (a threaded \
         controller was enabled while processes sat in it)"
    )]
    NotDomain { cgroup: String, kind: String },
    #[error(
        "cgroup {cgroup} has controllers ({controllers}) enabled in its cgroup.subtree_control, so \
         no process can be moved into it; choose another --leaf"
    )]
    LeafNotLeaf { cgroup: String, controllers: String },
    #[error("processes kept appearing in cgroup {cgroup}: still {left} after {rounds} rounds of moving them to {to}")]
    KeepAppearing {
        cgroup: String,
        to: String,
        left: usize,
        rounds: usize,
    },
    #[error("{}", missing_message(.missing, .available, *.nested))]
    MissingControllers {
        missing: Vec<String>,
        available: Vec<String>,
        nested: bool,
    },
    #[error("processes are still in cgroup {cgroup} after setup: {pids:?}")]
    LeftBehind { cgroup: String, pids: Vec<u32> },
}

fn missing_message(missing: &[String], available: &[String], nested: bool) -> String {
    let avail = if available.is_empty() {
        "none".to_string()
    } else {
        available.join(" ")
    };
    if nested {
        format!(
            "the host did not delegate the cgroup v2 controller(s) {} to this container \
             (delegated: {avail})",
            missing.join(" ")
        )
    } else {
        format!(
            "the kernel offers no cgroup v2 controller {} (available: {avail}); it is missing \
             from the kernel or bound to a cgroup v1 hierarchy",
            missing.join(" ")
        )
    }
}

impl Error {
    /// What the user should do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Layout { fix, .. } => Some(fix.clone()),
            Error::HostHierarchy { .. } => Some(
                "run the node container in its own cgroup namespace (podman's default on \
                 cgroup v2: drop `--cgroupns=host`)"
                    .to_string(),
            ),
            Error::MissingControllers { nested: true, .. } => Some(delegate_hint()),
            Error::MissingControllers { nested: false, .. } => Some(
                "boot the host with cgroup v2 only (`systemd.unified_cgroup_hierarchy=1`, \
                 optionally `cgroup_no_v1=all`) on a kernel built with these controllers"
                    .to_string(),
            ),
            Error::Move { source, .. } | Error::Write { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EROFS) | Some(libc::EACCES)
                ) =>
            {
                Some(
                    "/sys/fs/cgroup must be mounted read-write in the node container: podman does \
                     that for a systemd image (`--systemd=always`)"
                        .to_string(),
                )
            }
            _ => None,
        }
    }

    /// The host-side systemd fix, for `--json` readers that want to print or apply it.
    pub fn host_fix(&self) -> Option<HostFix> {
        match self {
            Error::MissingControllers { nested: true, .. } => Some(HostFix::delegate()),
            _ => None,
        }
    }
}

/// A file to write on the host and the commands to run after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFix {
    pub path: String,
    pub content: String,
    pub commands: Vec<String>,
}

impl HostFix {
    pub fn delegate() -> Self {
        Self {
            path: DELEGATE_DROPIN_PATH.to_string(),
            content: DELEGATE_DROPIN.to_string(),
            commands: vec![
                "sudo systemctl daemon-reload".to_string(),
                "sudo systemctl restart user@$(id -u).service".to_string(),
            ],
        }
    }
}

/// The multi-line fix for controllers the user's systemd manager does not delegate.
pub fn delegate_hint() -> String {
    let fix = HostFix::delegate();
    format!(
        "rootless Podman runs the node below your systemd user manager (user@UID.service), \
         which delegates only the controllers listed in its Delegate= setting. On the host, \
         as root, write {path} containing:\n\n{content}\nthen run:\n  {cmds}\n(restarting \
         user@UID.service stops your running containers; logging out and back in works too), \
         then recreate the cluster.",
        path = fix.path,
        content = fix.content,
        cmds = fix.commands.join("\n  "),
    )
}
