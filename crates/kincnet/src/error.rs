//! CNI error results: the spec's codes, and the JSON a runtime reads from stdout.

use serde::Serialize;

/// Error codes from the CNI 1.1 spec (codes 1-99 are reserved by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    /// Not a spec code: anything kernel-facing that failed for another reason.
    Generic = 999,
}

/// One failed CNI operation: `msg` names the field, file or call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn generic(msg: impl Into<String>) -> Self {
        Self::new(Code::Generic, msg)
    }

    /// The spec's error object, labelled with the version the caller asked for.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: self.details.as_deref(),
        })
        .expect("error JSON always serializes")
    }
}

pub type CniResult<T> = Result<T, CniError>;
