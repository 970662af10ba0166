//! kinc's record of allocations: `<data dir>/clusters.json`, changed only while holding
//! an exclusive `flock` on `<data dir>/clusters.lock` and written by temp file + rename.
//! The record is reconciled with what Podman actually holds (the labels) every time it
//! is locked, so a crash or a manual `podman rm` never leaks a port or a CIDR block.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alloc::Allocation;

pub const STATE_FILE: &str = "clusters.json";
pub const LOCK_FILE: &str = "clusters.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// `msg` is bounded ([`crate::excerpt`]).
    #[error("parsing {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("cannot find a data directory: set XDG_DATA_HOME or HOME")]
    NoDataDir,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub clusters: BTreeMap<String, Allocation>,
}

impl State {
    pub fn taken(&self) -> Vec<(String, Allocation)> {
        self.clusters.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Makes the record agree with Podman. `held` maps each cluster that still has
    /// kinc-labelled resources to the allocation its node's labels carry (None when
    /// only volumes remain, e.g. after a create killed halfway). Returns what changed.
    pub fn reconcile(&mut self, held: &BTreeMap<String, Option<Allocation>>) -> Vec<String> {
        let mut changes = Vec::new();
        let stale: Vec<String> = self
            .clusters
            .keys()
            .filter(|k| !held.contains_key(*k))
            .cloned()
            .collect();
        for k in stale {
            self.clusters.remove(&k);
            changes.push(format!("released {k} (no resources left in podman)"));
        }
        for (k, a) in held {
            if let Some(a) = a {
                if self.clusters.get(k) != Some(a) {
                    self.clusters.insert(k.clone(), *a);
                    changes.push(format!("recorded {k} from its podman labels"));
                }
            }
        }
        changes
    }
}

/// `$XDG_DATA_HOME/kinc`, else `$HOME/.local/share/kinc`.
pub fn default_data_dir() -> Result<PathBuf, StateError> {
    data_dir_from(&|k| std::env::var_os(k))
}

pub fn data_dir_from(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, StateError> {
    if let Some(d) = env("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("kinc"));
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/kinc")),
        None => Err(StateError::NoDataDir),
    }
}

/// The state file with its lock held; dropping it releases the lock.
pub struct LockedState {
    _lock: File,
    path: PathBuf,
    pub state: State,
}

impl LockedState {
    /// Blocks until the lock is ours, then reads the record (empty when absent).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |what, p: &Path| {
            let path = p.display().to_string();
            move |source| StateError::Io { what, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        lock.lock().map_err(io("locking", &lock_path))?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Parse {
                path: path.display().to_string(),
                msg: crate::excerpt::json(&e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        Ok(Self {
            _lock: lock,
            path,
            state,
        })
    }

    pub fn save(&self) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(&self.state).expect("state always serializes");
        kinc_types::fsutil::write_atomic(&self.path, &json, Some(0o600)).map_err(|source| {
            StateError::Io {
                what: "writing",
                path: self.path.display().to_string(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn alloc(port: u16, i: u8) -> Allocation {
        Allocation {
            api_port: port,
            pod_subnet: format!("10.64.{}.0/24", 2 * i).parse().unwrap(),
            service_subnet: format!("10.64.{}.0/24", 2 * i + 1).parse().unwrap(),
        }
    }

    #[test]
    fn data_dir_prefers_xdg() {
        let env = |k: &str| match k {
            "XDG_DATA_HOME" => Some(OsString::from("/x")),
            "HOME" => Some(OsString::from("/h")),
            _ => None,
        };
        assert_eq!(data_dir_from(&env).unwrap(), PathBuf::from("/x/kinc"));
        let env = |k: &str| (k == "HOME").then(|| OsString::from("/h"));
        assert_eq!(
            data_dir_from(&env).unwrap(),
            PathBuf::from("/h/.local/share/kinc")
        );
        assert!(data_dir_from(&|_| None).is_err());
    }

    #[test]
    fn save_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = LockedState::open(d.path()).unwrap();
            s.state.clusters.insert("a".into(), alloc(6443, 0));
            s.save().unwrap();
        }
        let s = LockedState::open(d.path()).unwrap();
        assert_eq!(s.state.clusters["a"], alloc(6443, 0));
    }

    #[test]
    fn lock_is_exclusive_across_handles() {
        let d = tempfile::tempdir().unwrap();
        let held = LockedState::open(d.path()).unwrap();
        let f = File::options()
            .write(true)
            .open(d.path().join(LOCK_FILE))
            .unwrap();
        assert!(f.try_lock().is_err(), "second lock must wait");
        drop(held);
        assert!(f.try_lock().is_ok());
    }

    #[test]
    fn reconcile_drops_gone_keeps_half_made_and_learns_from_labels() {
        let mut s = State::default();
        s.clusters.insert("gone".into(), alloc(6443, 0));
        s.clusters.insert("half".into(), alloc(6444, 1));
        let mut held = BTreeMap::new();
        held.insert("half".to_string(), None);
        held.insert("podman-only".to_string(), Some(alloc(6445, 2)));
        let changes = s.reconcile(&held);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(!s.clusters.contains_key("gone"));
        assert_eq!(s.clusters["half"], alloc(6444, 1));
        assert_eq!(s.clusters["podman-only"], alloc(6445, 2));
    }

    #[test]
    fn corrupt_file_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), "{").unwrap();
        let e = LockedState::open(d.path()).err().unwrap().to_string();
        assert!(e.contains(STATE_FILE), "{e}");
    }
}
