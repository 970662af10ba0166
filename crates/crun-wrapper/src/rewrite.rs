//! Loading config.json, applying the rules and writing the result back atomically.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::caller::{Caller, Lsm};
use crate::patch::Layout;
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
    /// Not a spec the wrapper can edit safely (not JSON, not an object, a key twice in
    /// one object, not a regular file, too large): left as it is for crun to report.
    Malformed(String),
    /// The rules ran; `written` says whether the file was replaced.
    Checked { report: Report, written: bool },
}

/// A spec as the rules see it, and where each of its values lies in the file.
pub struct Spec<'a> {
    pub value: Value,
    layout: Layout<'a>,
}

/// Parses a spec; `Err` carries why it is not one (not JSON, not an object, or a key
/// twice in one object, which readers resolve differently).
pub fn parse_spec(bytes: &[u8]) -> Result<Spec<'_>, String> {
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return Err("the top level is not a JSON object".into()),
        Err(e) => return Err(e.to_string()),
    };
    let layout = Layout::parse(bytes)?;
    Ok(Spec { value, layout })
}

/// Applies the rules to the bytes of a spec: the new bytes when something changed.
/// Only the values a rule changed are rewritten; every other byte is kept.
pub fn rewrite_bytes(
    bytes: &[u8],
    caller: &Caller,
    lsm: Lsm,
) -> Result<(Report, Option<Vec<u8>>), String> {
    let spec = parse_spec(bytes)?;
    let mut fixed = spec.value.clone();
    let report = rules::apply(&mut fixed, caller, lsm);
    if report.changes.is_empty() {
        return Ok((report, None));
    }
    let out = spec.layout.patch(bytes, &spec.value, &fixed)?;
    // Cheap insurance that crun can load it (tests/hostile.rs checks it means `fixed`).
    if serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_err() {
        return Err("internal error: the patched spec is not JSON".into());
    }
    Ok((report, Some(out)))
}

/// Largest spec the wrapper reads (CRI-O's are tens of KiB); a bigger one goes to crun
/// unchanged rather than into memory whole.
pub const MAX_SPEC_BYTES: u64 = 64 << 20;

/// The bytes of the spec at `path`, or why it is not one to rewrite: only a regular file
/// up to [`MAX_SPEC_BYTES`] is read (a FIFO would block, `/dev/zero` never ends).
pub fn read_spec(path: &Path) -> Result<Result<Vec<u8>, String>, RewriteError> {
    let read_err = |err| RewriteError::Read {
        path: path.to_path_buf(),
        err,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    if !file.metadata().map_err(read_err)?.is_file() {
        return Ok(Err("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Ok(Err(format!("larger than {} MiB", MAX_SPEC_BYTES >> 20)));
    }
    Ok(Ok(bytes))
}

/// Checks the spec at `path` and replaces it (temp file in the same directory, fsync,
/// rename; mode kept) only when a rule changed something.
pub fn rewrite_file(path: &Path, caller: &Caller, lsm: Lsm) -> Result<Outcome, RewriteError> {
    let bytes = match read_spec(path)? {
        Ok(b) => b,
        Err(why) => return Ok(Outcome::Malformed(why)),
    };
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
