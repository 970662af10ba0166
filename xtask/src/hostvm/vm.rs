//! The host side of one VM run: a private run directory (control share, logs, the
//! throw-away overlay), qemu under supervision, the guest's output streamed as it arrives.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::agent::{self, Job, StepResult};
use super::build::{cache_root, Built};
use super::cmd::copy_stripped;
use super::config::CTL_TAG;
use super::qemu::{self, Ended, Qemu, Share, VmSpec};

/// "No status" from the guest (qemu error, panic, the agent never ran): like the lab's 125.
pub const NO_STATUS: i32 = 125;
/// The run was cut off by `--timeout`, like timeout(1).
pub const TIMED_OUT: i32 = 124;
/// A boot whose agent has not started by then is given up (normal: 30-105 s under TCG).
pub const BOOT_WATCHDOG: Duration = Duration::from_secs(420);
/// Boots tried before a run counts as failed.
pub const BOOT_ATTEMPTS: u32 = 3;

pub struct RunOptions {
    pub timeout: Option<Duration>,
    pub memory_mib: u32,
    pub smp: u32,
    pub keep: bool,
    /// Extra files copied into the control share (name there, source).
    pub extra_files: Vec<(String, PathBuf)>,
    /// Host directories mounted at the same path in the guest.
    pub shares: Vec<PathBuf>,
    pub allow_reboot: bool,
    /// Stream the guest's output to ours while it runs.
    pub stream: bool,
    /// Throw the guest's disk writes away (false only when the build provisions the image).
    pub snapshot: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            memory_mib: 4096,
            smp: 2,
            keep: false,
            extra_files: Vec::new(),
            shares: Vec::new(),
            allow_reboot: false,
            stream: true,
            snapshot: true,
        }
    }
}

#[derive(Debug)]
pub struct RunOutcome {
    /// The first failing step's status, [`TIMED_OUT`], [`NO_STATUS`], or 128+signal.
    pub exit_code: i32,
    pub results: Vec<StepResult>,
    /// Seconds from qemu's start until the agent began the job.
    pub boot_seconds: Option<f64>,
    pub total_seconds: f64,
    pub why: Option<String>,
    /// The guest's own failure lines (`check X: FAILED: ...`, the agent's messages), to
    /// repeat under the summary: the first thing to read when a CI run fails.
    pub failure_lines: Vec<String>,
}

/// Lines of the guest's stderr that say what failed.
pub fn failure_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(": FAILED: ") || l.starts_with("hostvm agent: "))
        .map(|l| l.chars().take(2000).collect())
        .collect()
}

/// A per-run directory under the cache; removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("hostvm: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes run directories whose supervisor is gone, killing a qemu they still name.
pub fn reap_stale_runs(runs: &Path) {
    let Ok(rd) = fs::read_dir(runs) else { return };
    for e in rd.flatten() {
        let dir = e.path();
        let owner = fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive {
            continue;
        }
        if qemu::kill_stale(&dir.join("qemu.pid"), &dir) {
            eprintln!("hostvm: killed a leftover qemu of {}", dir.display());
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Copies new bytes of `path` from `*pos` to `out`.
fn forward(path: &Path, pos: &mut u64, out: &mut dyn Write) {
    let Ok(mut f) = fs::File::open(path) else {
        return;
    };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        *pos += buf.len() as u64;
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}

pub fn run_job(built: &Built, job: &Job, opts: &RunOptions) -> Result<RunOutcome> {
    let qemu_bin = "qemu-system-x86_64";
    super::cmd::require_tools(&[(qemu_bin, "qemu-system-x86")])?;
    let runs = cache_root().join("runs");
    fs::create_dir_all(&runs)?;
    reap_stale_runs(&runs);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let run = RunDir {
        path: runs.join(format!("{}-{nanos}", std::process::id())),
        keep: opts.keep,
    };
    let ctl = run.path.join("ctl");
    fs::create_dir_all(&ctl)?;
    fs::write(run.path.join("owner.pid"), std::process::id().to_string())?;
    // The agent is this very binary: the guest runs the same code the host was built from.
    // /proc/self/exe still reads when cargo has replaced the file since we started.
    // (By pid: strip would read its own /proc/self/exe.)
    let me = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    copy_stripped(&me, &ctl.join("agent"))
        .context("copying the agent (/proc/PID/exe) into the control share")?;
    for (name, src) in &opts.extra_files {
        let dest = ctl.join(name);
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d)?;
        }
        copy_stripped(src, &dest)?;
    }
    let mut job = job.clone();
    let mut shares = vec![Share {
        tag: CTL_TAG.to_string(),
        host_path: ctl.clone(),
    }];
    for (i, dir) in opts.shares.iter().enumerate() {
        let dir = fs::canonicalize(dir).with_context(|| format!("--share {}", dir.display()))?;
        let tag = format!("share{i}");
        job.shares.push(agent::GuestShare {
            tag: tag.clone(),
            guest_path: dir.to_string_lossy().into_owned(),
        });
        shares.push(Share {
            tag,
            host_path: dir,
        });
    }
    fs::write(ctl.join(agent::JOB_FILE), serde_json::to_vec_pretty(&job)?)?;
    for f in [agent::STDOUT_FILE, agent::STDERR_FILE] {
        fs::write(ctl.join(f), "")?;
    }
    let spec = VmSpec {
        vmlinux: built.vmlinux(),
        initrd: built.initrd(),
        disk: built.disk(),
        snapshot: opts.snapshot,
        memory_mib: opts.memory_mib,
        smp: opts.smp,
        accel: qemu::detect_accel(),
        console_log: run.path.join("console.log"),
        status_serial: run.path.join("status.serial"),
        pidfile: run.path.join("qemu.pid"),
        shares,
        allow_reboot: opts.allow_reboot,
    };
    qemu::install_signal_handlers();
    let t0 = Instant::now();
    let (out_path, err_path) = (ctl.join(agent::STDOUT_FILE), ctl.join(agent::STDERR_FILE));
    let started = ctl.join(agent::STARTED_FILE);
    let (mut opos, mut epos) = (0u64, 0u64);
    let stream = opts.stream;
    let mut boot_seconds = None;
    let mut attempt = 1;
    let ended = loop {
        let t_boot = Instant::now();
        let mut vm = Qemu::spawn(qemu_bin, &spec, &run.path, &run.path.join("qemu.log"))?;
        let ended = vm.wait(opts.timeout, || {
            if boot_seconds.is_none() && started.exists() {
                boot_seconds = Some(t0.elapsed().as_secs_f64());
            }
            if stream {
                forward(&out_path, &mut opos, &mut std::io::stdout());
                forward(&err_path, &mut epos, &mut std::io::stderr());
            }
            boot_seconds.is_none() && t_boot.elapsed() > BOOT_WATCHDOG
        })?;
        drop(vm);
        // A guest that died or hung before the agent started ran nothing: boot again.
        // (Seen: an early-boot kernel Oops under multi-threaded TCG, 1 boot in ~30.)
        let died_early = boot_seconds.is_none()
            && matches!(ended, Ended::Exited(_) | Ended::Abandoned)
            && agent::parse_exit_line(&fs::read_to_string(&spec.status_serial).unwrap_or_default())
                .is_none();
        if died_early && attempt < BOOT_ATTEMPTS {
            eprintln!(
                "hostvm: the guest never started the agent (attempt {attempt}/{BOOT_ATTEMPTS}, \
                 {:.0} s); booting again. Last console lines:\n{}",
                t_boot.elapsed().as_secs_f64(),
                tail(&spec.console_log, 15)
            );
            let _ = fs::rename(
                &spec.console_log,
                run.path.join(format!("console.{attempt}.log")),
            );
            attempt += 1;
            continue;
        }
        break ended;
    };
    if stream {
        forward(&out_path, &mut opos, &mut std::io::stdout());
        forward(&err_path, &mut epos, &mut std::io::stderr());
    }
    let results: Vec<StepResult> = fs::read(ctl.join(agent::RESULTS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let serial = fs::read_to_string(&spec.status_serial).unwrap_or_default();
    let failure_lines = failure_lines(&fs::read_to_string(&err_path).unwrap_or_default());
    let (exit_code, why) = match ended {
        Ended::TimedOut => (
            TIMED_OUT,
            Some(format!(
                "the VM timed out after {} s; last console lines:\n{}",
                opts.timeout.map_or(0, |t| t.as_secs()),
                tail(&spec.console_log, 25)
            )),
        ),
        Ended::Signalled(s) => (128 + s, Some(format!("interrupted by signal {s}"))),
        Ended::Abandoned => (
            NO_STATUS,
            Some(format!(
                "the agent did not start within {} s of {BOOT_ATTEMPTS} boots; last console lines:\n{}",
                BOOT_WATCHDOG.as_secs(),
                tail(&spec.console_log, 25)
            )),
        ),
        Ended::Exited(st) => match agent::parse_exit_line(&serial) {
            Some(c) => (c, None),
            None => (
                NO_STATUS,
                Some(format!(
                    "the guest reported no exit status (qemu {st}); last console lines:\n{}\nqemu: {}",
                    tail(&spec.console_log, 25),
                    tail(&run.path.join("qemu.log"), 5)
                )),
            ),
        },
    };
    Ok(RunOutcome {
        exit_code,
        results,
        boot_seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        why,
        failure_lines,
    })
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The built image, or an error saying how to build it.
pub fn require_built() -> Result<Built> {
    match super::build::find_built()? {
        Some(b) => Ok(b),
        None => {
            bail!("the host image is not built; run `cargo xtask hostvm build` (as root) first")
        }
    }
}
