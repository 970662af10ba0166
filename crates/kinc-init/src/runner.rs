//! External programs (kubeadm, kubectl, crictl, systemctl) run through one small trait,
//! so the bootstrap can be tested with a recording stand-in. Arguments are always
//! separate strings: nothing is ever passed through a shell.

use std::fmt;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One program invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// Pasteable form for messages and logs (arguments with spaces are quoted).
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            if a.is_empty() || a.contains(char::is_whitespace) {
                write!(f, " {a:?}")?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({}): {}", exit_text(*code), last_lines(stderr, stdout))]
    Failed {
        cmd: String,
        code: Option<i32>,
        stderr: String,
        stdout: String,
    },
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".to_string(),
    }
}

/// The tail of what the program said, enough to see why without flooding the status file.
fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim().lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        "no output".to_string()
    } else {
        tail.join(" | ")
    }
}

/// `Sync`: `load-images` runs several imports at once from scoped threads.
pub trait Runner: Sync {
    /// Runs `cmd` to completion, capturing its output. Only failing to start is an error.
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    /// Runs `cmd` and turns a non-zero exit into an error naming the command.
    fn run_ok(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                cmd: cmd.to_string(),
                code: out.code,
                stderr: out.stderr,
                stdout: out.stdout,
            })
        }
    }
}

/// Runs real programs found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunError::Spawn {
                cmd: cmd.to_string(),
                source,
            })?;
        let result = Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // The journal keeps what the tools said; the status file only keeps the tail.
        if !result.stderr.trim().is_empty() {
            eprintln!("{}: {}", cmd.program, result.stderr.trim_end());
        }
        Ok(result)
    }
}

/// A stand-in for tests: records every command and answers from a rule function.
pub struct RecordingRunner {
    calls: Mutex<Vec<Cmd>>,
    #[allow(clippy::type_complexity)]
    answer: Box<dyn Fn(&Cmd) -> Output + Send + Sync>,
}

impl RecordingRunner {
    /// Every command succeeds with empty output.
    pub fn ok() -> Self {
        Self::with(|_| Output {
            code: Some(0),
            ..Output::default()
        })
    }

    pub fn with(answer: impl Fn(&Cmd) -> Output + Send + Sync + 'static) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    pub fn calls(&self) -> Vec<Cmd> {
        self.calls.lock().expect("runner lock").clone()
    }

    /// The calls as pasteable command lines.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(Cmd::to_string).collect()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.calls.lock().expect("runner lock").push(cmd.clone());
        Ok((self.answer)(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_pasteable() {
        let c = Cmd::new("kubectl", ["taint", "node/a b", ""]);
        assert_eq!(c.to_string(), r#"kubectl taint "node/a b" """#);
    }

    #[test]
    fn failure_names_command_and_tail() {
        let err = SystemRunner
            .run_ok(&Cmd::new(
                "sh",
                ["-c", "echo one >&2; echo two >&2; exit 3"],
            ))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`sh -c"), "{msg}");
        assert!(msg.contains("exit 3"), "{msg}");
        assert!(msg.contains("one | two"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = SystemRunner
            .run(&Cmd::new("kinc-no-such-program", ["x"]))
            .unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err}");
    }
}
