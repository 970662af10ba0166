//! The bootstrap status file: written by `kinc-init` in the node after every step,
//! read by `kinc status` and `kinc create` on the host.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fsutil::write_atomic;

/// Where `kinc-init` keeps the status, on the `/var` volume so it survives restarts.
pub const STATUS_PATH: &str = "/var/lib/kinc/status.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub name: String,
    pub state: StepState,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why the step failed, or why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Steps are still running.
    Bootstrapping,
    /// Every step is done or skipped.
    Ready,
    /// A step failed; later steps did not run.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapStatus {
    pub cluster: String,
    pub phase: Phase,
    /// How many times the node has booted with this `/var` (1 on first boot).
    #[serde(default)]
    pub boot: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub steps: Vec<StepStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no step named {0:?} in the bootstrap status")]
    UnknownStep(String),
    #[error("reading bootstrap status {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing bootstrap status {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("writing bootstrap status {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl BootstrapStatus {
    pub fn new<S: AsRef<str>>(cluster: &str, steps: &[S]) -> Self {
        Self {
            cluster: cluster.to_string(),
            phase: Phase::Bootstrapping,
            boot: 1,
            updated_at: now(),
            steps: steps
                .iter()
                .map(|s| StepStatus {
                    name: s.as_ref().to_string(),
                    state: StepState::Pending,
                    started_at: None,
                    finished_at: None,
                    message: None,
                })
                .collect(),
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn step_mut(&mut self, name: &str) -> Result<&mut StepStatus, StatusError> {
        self.updated_at = now();
        self.steps
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StatusError::UnknownStep(name.to_string()))
    }

    pub fn start(&mut self, name: &str) -> Result<(), StatusError> {
        let s = self.step_mut(name)?;
        s.state = StepState::Running;
        s.started_at = Some(now());
        s.finished_at = None;
        s.message = None;
        self.phase = Phase::Bootstrapping;
        Ok(())
    }

    pub fn finish(&mut self, name: &str) -> Result<(), StatusError> {
        self.end(name, StepState::Done, None)
    }

    pub fn skip(&mut self, name: &str, why: &str) -> Result<(), StatusError> {
        self.end(name, StepState::Skipped, Some(why.to_string()))
    }

    pub fn fail(&mut self, name: &str, error: &str) -> Result<(), StatusError> {
        self.end(name, StepState::Failed, Some(error.to_string()))
    }

    fn end(
        &mut self,
        name: &str,
        state: StepState,
        msg: Option<String>,
    ) -> Result<(), StatusError> {
        let s = self.step_mut(name)?;
        let t = now();
        s.started_at.get_or_insert(t);
        s.finished_at = Some(t);
        s.state = state;
        s.message = msg;
        self.phase = self.derive_phase();
        Ok(())
    }

    fn derive_phase(&self) -> Phase {
        if self.steps.iter().any(|s| s.state == StepState::Failed) {
            Phase::Failed
        } else if self
            .steps
            .iter()
            .all(|s| matches!(s.state, StepState::Done | StepState::Skipped))
        {
            Phase::Ready
        } else {
            Phase::Bootstrapping
        }
    }

    /// The step that is running now, or failed, if any.
    pub fn current(&self) -> Option<&StepStatus> {
        self.steps
            .iter()
            .find(|s| matches!(s.state, StepState::Running | StepState::Failed))
    }

    pub fn failed_step(&self) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.state == StepState::Failed)
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, StatusError> {
        serde_json::from_slice(bytes).map_err(|source| StatusError::Parse {
            path: path.to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self, StatusError> {
        let bytes = std::fs::read(path).map_err(|source| StatusError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&bytes, &path.display().to_string())
    }

    /// Writes the status atomically (readers never see a torn file), creating the directory.
    pub fn save(&self, path: &Path) -> Result<(), StatusError> {
        let err = |source| StatusError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let json = serde_json::to_vec_pretty(self).expect("status always serializes");
        write_atomic(path, &json, Some(0o644)).map_err(err)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_phase() {
        let mut s = BootstrapStatus::new("dev", &["a", "b"]);
        assert_eq!(s.phase, Phase::Bootstrapping);
        s.start("a").unwrap();
        assert_eq!(s.current().unwrap().name, "a");
        s.finish("a").unwrap();
        s.skip("b", "already initialised").unwrap();
        assert!(s.is_ready());
        assert!(s.start("nope").is_err());
    }

    #[test]
    fn failure_is_recorded_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kinc/status.json");
        let mut s = BootstrapStatus::new("dev", &["init", "wait"]);
        s.start("init").unwrap();
        s.fail("init", "kubeadm init exited 1").unwrap();
        s.save(&p).unwrap();
        let back = BootstrapStatus::load(&p).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.phase, Phase::Failed);
        let f = back.failed_step().unwrap();
        assert_eq!(f.message.as_deref(), Some("kubeadm init exited 1"));
        assert!(f.started_at.is_some() && f.finished_at.is_some());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"state\": \"failed\""), "{text}");
    }
}
