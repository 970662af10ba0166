//! `pinns`: the helper CRI-O runs to create a pod sandbox's namespaces.
//!
//! It unshares the requested namespaces (or takes its own for `=host`), writes the
//! pod's sysctls inside them and bind-mounts each `/proc/<pid>/ns/<ns>` onto
//! `<dir>/<ns>ns/<file>`, so the namespaces outlive it until CRI-O unmounts them. It
//! takes the command line of CRI-O's C `pinns` (cri-o/cri-o `pinns/src/pinns.c`); see
//! the crate README for the version matched and where it is stricter.

pub mod cli;
pub mod idmap;
pub mod ns;
pub mod pin;
pub mod sysctl;

/// Everything pinns can fail with; messages name the argument, namespace or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asks for something pinns cannot do.
    #[error("{0}")]
    Usage(String),
    #[error("sysctl {text:?}: {reason}")]
    Sysctl { text: String, reason: String },
    #[error("{context}: {errno}")]
    Sys {
        context: String,
        errno: nix::errno::Errno,
    },
    #[error("{context}: {err}")]
    Io {
        context: String,
        err: std::io::Error,
    },
    /// A failure reported by, or about, the helper process.
    #[error("{0}")]
    Helper(String),
    #[error("{error}; cleanup failed too: {}", failures.join("; "))]
    Cleanup {
        error: Box<Error>,
        failures: Vec<String>,
    },
}

impl Error {
    /// 2 for a command line that cannot work, 1 for a failure while pinning.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Sysctl { .. } => 2,
            _ => 1,
        }
    }
}
