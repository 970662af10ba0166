//! Loading config.json, applying the rules and writing the result back atomically.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::caller::{Caller, Lsm};
use crate::rules::{self, Report};

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("cannot read {path}: {err}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("cannot write {path}: {err}")]
    Write {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

/// What happened to one spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not JSON, or not a JSON object: left as it is for crun to report.
    Malformed(String),
    /// The rules ran; `written` says whether the file was replaced.
    Checked { report: Report, written: bool },
}

/// Parses a spec; `Err` carries why it is not one.
pub fn parse_spec(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("the top level is not a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies the rules to the bytes of a spec: the new bytes when something changed.
pub fn rewrite_bytes(
    bytes: &[u8],
    caller: &Caller,
    lsm: Lsm,
) -> Result<(Report, Option<Vec<u8>>), String> {
    let mut spec = parse_spec(bytes)?;
    let report = rules::apply(&mut spec, caller, lsm);
    if report.changes.is_empty() {
        return Ok((report, None));
    }
    // Keep the writer's layout choice; either way the values are what matter.
    let out = if bytes.contains(&b'\n') {
        serde_json::to_vec_pretty(&spec)
    } else {
        serde_json::to_vec(&spec)
    }
    .expect("a serde_json::Value always serializes");
    Ok((report, Some(out)))
}

/// Checks the spec at `path` and replaces it (temp file in the same directory, fsync,
/// rename; mode kept) only when a rule changed something.
pub fn rewrite_file(path: &Path, caller: &Caller, lsm: Lsm) -> Result<Outcome, RewriteError> {
    let bytes = std::fs::read(path).map_err(|err| RewriteError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let (report, new) = match rewrite_bytes(&bytes, caller, lsm) {
        Ok(r) => r,
        Err(why) => return Ok(Outcome::Malformed(why)),
    };
    let written = match new {
        Some(data) => {
            kinc_types::fsutil::write_atomic(path, &data, None).map_err(|err| {
                RewriteError::Write {
                    path: path.to_path_buf(),
                    err,
                }
            })?;
            true
        }
        None => false,
    };
    Ok(Outcome::Checked { report, written })
}
