use std::io;

/// An nf_tables netlink failure, naming the request that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nf_tables netlink socket: {op}: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request: `what` names it ("add rule kinc postrouting (..)").
    #[error("{what}: {}{}", io::Error::from_raw_os_error(*errno), ext.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        what: String,
        errno: i32,
        /// The kernel's extended ack message, when it sent one.
        ext: Option<String>,
    },
    #[error("malformed netlink reply to {what}: {why}")]
    Malformed { what: String, why: &'static str },
}

impl Error {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Socket { source, .. } => source.raw_os_error(),
            Error::Malformed { .. } => None,
        }
    }

    /// Worth retrying later: the kernel was busy, out of buffer space, or the ruleset
    /// changed under a generation-guarded batch (ERESTART).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EBUSY | libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::ERESTART)
        )
    }

    /// ENOENT: the table, chain, set or element does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}
