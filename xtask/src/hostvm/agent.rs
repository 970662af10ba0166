//! The guest side: `xtask hostvm guest-agent CTL_DIR`, started by a unit after
//! multi-user.target. It runs the job's steps (as root or in the test user's systemd
//! session), with output into files on the 9p control share, records each step's status,
//! and powers the VM off (or reboots it when a step asks to, resuming after the reboot).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{TEST_UID, TEST_USER};

pub const JOB_FILE: &str = "job.json";
pub const STDOUT_FILE: &str = "stdout";
pub const STDERR_FILE: &str = "stderr";
pub const RESULTS_FILE: &str = "results.json";
pub const STARTED_FILE: &str = "started";
/// The line the agent writes to the second serial port when everything has run.
pub const EXIT_PREFIX: &str = "KINC-HOSTVM-EXIT=";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub steps: Vec<Step>,
    /// Host directories the agent mounts at `guest_path` (9p tags `share0`, `share1`...).
    #[serde(default)]
    pub shares: Vec<GuestShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestShare {
    pub tag: String,
    pub guest_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub as_user: bool,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Reboot the VM after this step; the agent resumes with the next step.
    #[serde(default)]
    pub reboot_after: bool,
    /// Keep going with later steps when this one fails.
    #[serde(default)]
    pub keep_going: bool,
    /// Kill the step's process group after this many seconds (exit 124).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A step's status when its timeout killed it, like timeout(1).
pub const STEP_TIMED_OUT: i32 = 124;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    pub name: String,
    pub exit_code: i32,
    pub seconds: f64,
    /// Guest uptime when the step started.
    pub uptime: f64,
    /// The kernel's boot id: tells which boot a step ran in.
    #[serde(default)]
    pub boot_id: String,
}

/// Exit code of a finished process, 128+N for a signal, like a shell reports it.
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// The overall status: the first failing step's code, else 0.
pub fn overall(results: &[StepResult]) -> i32 {
    results
        .iter()
        .map(|r| r.exit_code)
        .find(|c| *c != 0)
        .unwrap_or(0)
}

/// Reads `KINC-HOSTVM-EXIT=N` from what the second serial port received.
pub fn parse_exit_line(serial: &str) -> Option<i32> {
    serial
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(EXIT_PREFIX))
        .and_then(|n| n.trim().parse().ok())
}

/// The argv that runs `argv` as the test user inside its systemd session: a transient
/// scope under user@UID.service (a transient service would kill conmon of `podman run -d`
/// when it ends; notes/hostvm.md).
pub fn user_argv(argv: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "runuser",
        "-u",
        TEST_USER,
        "--",
        "systemd-run",
        "--user",
        "--scope",
        "--quiet",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(argv.iter().cloned());
    v
}

pub fn user_env() -> Vec<(String, String)> {
    let home = format!("/home/{TEST_USER}");
    let run = format!("/run/user/{TEST_UID}");
    vec![
        ("HOME".into(), home),
        ("USER".into(), TEST_USER.into()),
        ("LOGNAME".into(), TEST_USER.into()),
        (
            "DBUS_SESSION_BUS_ADDRESS".into(),
            format!("unix:path={run}/bus"),
        ),
        ("XDG_RUNTIME_DIR".into(), run),
    ]
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0)
}

/// Entry point inside the guest.
pub fn guest_main(ctl: &Path) -> Result<()> {
    let job: Job = serde_json::from_slice(&fs::read(ctl.join(JOB_FILE))?)
        .with_context(|| format!("parsing {}", ctl.join(JOB_FILE).display()))?;
    let results_path = ctl.join(RESULTS_FILE);
    let mut results: Vec<StepResult> = match fs::read(&results_path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    fs::write(ctl.join(STARTED_FILE), format!("{:.2}\n", uptime()))?;
    for s in &job.shares {
        fs::create_dir_all(&s.guest_path)?;
        let _ = Command::new("mount")
            .args([
                "-t",
                "9p",
                "-o",
                "trans=virtio,version=9p2000.L,msize=262144",
            ])
            .arg(&s.tag)
            .arg(&s.guest_path)
            .status();
    }
    let append = |name: &str| -> Result<File> {
        Ok(fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctl.join(name))?)
    };
    let mut out = append(STDOUT_FILE)?;
    let err = append(STDERR_FILE)?;
    let multi = job.steps.len() > 1;
    let mut reboot = false;
    for step in job.steps.iter().skip(results.len()) {
        if multi {
            writeln!(out, "=== hostvm step {} ===", step.name)?;
        }
        let t = Instant::now();
        let up = uptime();
        let code = match run_step(step, &out, &err) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(&err, "hostvm agent: step {}: {e:#}", step.name);
                127
            }
        };
        results.push(StepResult {
            name: step.name.clone(),
            exit_code: code,
            seconds: t.elapsed().as_secs_f64(),
            uptime: up,
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .to_string(),
        });
        kinc_types::fsutil::write_atomic(
            &results_path,
            &serde_json::to_vec_pretty(&results)?,
            Some(0o644),
        )?;
        if code != 0 && !step.keep_going {
            break;
        }
        if step.reboot_after && results.len() < job.steps.len() {
            reboot = true;
            break;
        }
    }
    if reboot {
        // A clean reboot: what is being tested is that services come back by themselves.
        // The reboot stops this unit; a SIGTERM before we exit would count as a failure
        // and FailureAction would power off instead. So ignore it and exit 0 promptly.
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        Command::new("systemctl")
            .args(["reboot", "--no-block"])
            .status()?;
        return Ok(());
    }
    let code = overall(&results);
    if let Ok(mut tty) = fs::OpenOptions::new().write(true).open("/dev/ttyS1") {
        let _ = writeln!(tty, "{EXIT_PREFIX}{code}");
        let _ = tty.flush();
    }
    // The disk is thrown away: no need for a clean shutdown.
    Command::new("systemctl")
        .args(["poweroff", "--force", "--no-block"])
        .status()?;
    Ok(())
}

fn run_step(step: &Step, out: &File, err: &File) -> Result<i32> {
    let argv = if step.as_user {
        // Lingering starts the manager at boot, maybe not yet finished: wait for it.
        Command::new("systemctl")
            .args(["start", &format!("user@{TEST_UID}.service")])
            .status()?;
        user_argv(&step.argv)
    } else {
        step.argv.clone()
    };
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    if step.as_user {
        cmd.envs(user_env());
    } else {
        cmd.env("HOME", "/root");
    }
    let default_cwd = if step.as_user {
        PathBuf::from(format!("/home/{TEST_USER}"))
    } else {
        PathBuf::from("/root")
    };
    cmd.current_dir(
        step.cwd
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or(default_cwd),
    );
    // Its own process group, so a timeout kills everything it started in the foreground.
    cmd.process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {prog}"))?;
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(exit_code(st));
        }
        if step
            .timeout_secs
            .is_some_and(|s| t.elapsed().as_secs() >= s)
        {
            // SAFETY: kill(2) of the process group we created for the step.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
            let _ = writeln!(
                &*err,
                "hostvm agent: step {} timed out after {} s: killed",
                step.name,
                t.elapsed().as_secs()
            );
            return Ok(STEP_TIMED_OUT);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_round_trips_and_defaults() {
        let json = r#"{"steps":[{"name":"a","argv":["true"]}]}"#;
        let job: Job = serde_json::from_str(json).unwrap();
        assert!(!job.steps[0].as_user && !job.steps[0].reboot_after);
        assert!(job.shares.is_empty());
        let back: Job = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn exit_line_and_overall_status() {
        assert_eq!(parse_exit_line("noise\nKINC-HOSTVM-EXIT=42\n"), Some(42));
        assert_eq!(
            parse_exit_line("KINC-HOSTVM-EXIT=1\r\nKINC-HOSTVM-EXIT=0\n"),
            Some(0)
        );
        assert_eq!(parse_exit_line("KINC-HOSTVM-EXIT=x\n"), None);
        assert_eq!(parse_exit_line(""), None);
        let r = |c| StepResult {
            name: "s".into(),
            exit_code: c,
            seconds: 0.0,
            uptime: 0.0,
            boot_id: String::new(),
        };
        assert_eq!(overall(&[r(0), r(3), r(4)]), 3);
        assert_eq!(overall(&[r(0), r(0)]), 0);
        assert_eq!(overall(&[]), 0);
    }

    #[test]
    fn user_commands_run_in_a_scope_of_the_user_manager() {
        let argv = user_argv(&["podman".into(), "info".into()]);
        assert_eq!(
            argv,
            [
                "runuser",
                "-u",
                "kinc",
                "--",
                "systemd-run",
                "--user",
                "--scope",
                "--quiet",
                "--",
                "podman",
                "info"
            ]
        );
        let env = user_env();
        assert!(env.contains(&("XDG_RUNTIME_DIR".into(), "/run/user/1000".into())));
        let st = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(exit_code(st), 137);
    }
}
