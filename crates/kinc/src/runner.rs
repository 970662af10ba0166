//! The one place kinc runs other programs: separate arguments (never a shell), stderr
//! captured, and a failure that names the command so it can be pasted and re-run.

use std::cell::RefCell;
use std::fmt;
use std::process::{Command, Stdio};

/// What a finished program left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; -1 when the program was killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            code: 0,
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    pub fn fail(code: i32, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// A program and its arguments, printable as a pasteable command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            f.write_str(" ")?;
            f.write_str(&shell_quote(a))?;
        }
        Ok(())
    }
}

/// Quotes an argument for display only (kinc itself never goes through a shell).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start `{cmd}`: {source}")]
    Spawn {
        cmd: CommandLine,
        source: std::io::Error,
    },
    #[error("command `{cmd}` failed with exit code {code}: {stderr}")]
    Failed {
        cmd: CommandLine,
        code: i32,
        stderr: String,
    },
}

/// Runs a program to completion. The real one is [`SystemRunner`]; unit tests use
/// [`FakeRunner`], which records every call.
pub trait Runner {
    fn output(&self, cmd: &CommandLine) -> Result<CmdOutput, RunError>;

    /// Runs and turns a non-zero exit into [`RunError::Failed`].
    fn run(&self, program: &str, args: &[String]) -> Result<CmdOutput, RunError> {
        let cmd = CommandLine {
            program: program.to_string(),
            args: args.to_vec(),
        };
        let out = self.output(&cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                cmd,
                code: out.code,
                stderr: out.stderr_str(),
            })
        }
    }

    /// Runs and returns the output whatever the exit code.
    fn try_run(&self, program: &str, args: &[String]) -> Result<CmdOutput, RunError> {
        self.output(&CommandLine {
            program: program.to_string(),
            args: args.to_vec(),
        })
    }
}

/// Runs programs with `std::process::Command`, inheriting the environment (so
/// `CONTAINERS_CONF`, `XDG_RUNTIME_DIR` and friends reach podman unchanged).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn output(&self, cmd: &CommandLine) -> Result<CmdOutput, RunError> {
        tracing_debug(cmd);
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        Ok(CmdOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

fn tracing_debug(cmd: &CommandLine) {
    if std::env::var_os("KINC_DEBUG").is_some() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "+ {cmd}");
    }
}

type Responder = Box<dyn Fn(&CommandLine) -> CmdOutput>;

/// A runner for unit tests: records every command and answers from a closure.
pub struct FakeRunner {
    calls: RefCell<Vec<CommandLine>>,
    respond: Responder,
}

impl FakeRunner {
    /// Every command succeeds with empty output.
    pub fn new() -> Self {
        Self::with(|_| CmdOutput::ok(""))
    }

    pub fn with(respond: impl Fn(&CommandLine) -> CmdOutput + 'static) -> Self {
        Self {
            calls: RefCell::new(Vec::new()),
            respond: Box::new(respond),
        }
    }

    pub fn calls(&self) -> Vec<CommandLine> {
        self.calls.borrow().clone()
    }

    /// Calls as `program arg arg ...` strings, for compact assertions.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.to_string()).collect()
    }
}

impl Default for FakeRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner for FakeRunner {
    fn output(&self, cmd: &CommandLine) -> Result<CmdOutput, RunError> {
        self.calls.borrow_mut().push(cmd.clone());
        Ok((self.respond)(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_the_command_and_stderr() {
        let r = SystemRunner;
        let err = r
            .run("sh", &["-c".into(), "echo boom >&2; exit 3".into()])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c 'echo boom >&2; exit 3'"), "{msg}");
        assert!(msg.contains("exit code 3") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = SystemRunner.run("/nonexistent/kinc-prog", &[]).unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err}");
    }

    #[test]
    fn fake_records_calls() {
        let f = FakeRunner::with(|c| {
            if c.args.first().map(String::as_str) == Some("bad") {
                CmdOutput::fail(1, "nope")
            } else {
                CmdOutput::ok("fine")
            }
        });
        assert_eq!(f.run("p", &["a b".into()]).unwrap().stdout_str(), "fine");
        assert!(f.run("p", &["bad".into()]).is_err());
        assert_eq!(f.lines(), vec!["p 'a b'", "p bad"]);
    }
}
