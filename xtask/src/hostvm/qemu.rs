//! The qemu command line (pure) and a supervisor that never leaves a qemu behind: qemu runs
//! in its own process group with a parent-death signal, and the group is killed on
//! timeout, on SIGINT/SIGTERM/SIGHUP and when the supervisor is dropped.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub host_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    /// Throw-away overlay: qemu writes guest changes to a temp qcow2 in `TMPDIR`.
    pub snapshot: bool,
    pub memory_mib: u32,
    pub smp: u32,
    pub accel: Accel,
    pub console_log: PathBuf,
    /// Second UART, backed by a file: the agent writes the exit status there.
    pub status_serial: PathBuf,
    pub pidfile: PathBuf,
    pub shares: Vec<Share>,
    /// Without it a guest reboot ends qemu (`-no-reboot`), which is what one-shot runs want.
    pub allow_reboot: bool,
}

impl VmSpec {
    pub fn cmdline(&self) -> String {
        // panic=-1: a guest panic reboots at once, which `-no-reboot` turns into an exit.
        "root=/dev/vda rw console=ttyS0 panic=-1 quiet loglevel=3 \
         systemd.show_status=false rd.udev.log_level=3"
            .to_string()
    }

    pub fn argv(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-M");
        push("q35");
        match self.accel {
            Accel::Kvm => {
                push("-accel");
                push("kvm");
                push("-cpu");
                push("host");
            }
            Accel::Tcg => {
                push("-accel");
                push("tcg,thread=multi");
                push("-cpu");
                push("max");
            }
        }
        for s in [
            "-smp".to_string(),
            self.smp.to_string(),
            "-m".to_string(),
            format!("{}M", self.memory_mib),
            "-nodefaults".to_string(),
            "-no-user-config".to_string(),
            "-display".to_string(),
            "none".to_string(),
            "-nic".to_string(),
            "none".to_string(),
        ] {
            a.push(s.into());
        }
        if !self.allow_reboot {
            a.push("-no-reboot".into());
        }
        let path_arg =
            |flag: &str, p: &Path| -> [OsString; 2] { [flag.into(), p.as_os_str().to_owned()] };
        a.extend(path_arg("-kernel", &self.vmlinux));
        a.extend(path_arg("-initrd", &self.initrd));
        a.push("-append".into());
        a.push(self.cmdline().into());
        a.push("-drive".into());
        a.push(drive_arg(&self.disk, self.snapshot));
        for s in &self.shares {
            a.push("-virtfs".into());
            let mut v = OsString::from("local,path=");
            v.push(escape_commas(&s.host_path));
            v.push(format!(",mount_tag={},security_model=none", s.tag));
            a.push(v);
        }
        let mut serial = |p: &Path| {
            a.push("-serial".into());
            let mut v = OsString::from("file:");
            v.push(p.as_os_str());
            a.push(v);
        };
        serial(&self.console_log);
        serial(&self.status_serial);
        a.extend(path_arg("-pidfile", &self.pidfile));
        a
    }
}

fn drive_arg(disk: &Path, snapshot: bool) -> OsString {
    let mut v = OsString::from("file=");
    v.push(escape_commas(disk));
    v.push(",format=raw,if=virtio,cache=unsafe");
    if snapshot {
        v.push(",snapshot=on");
    }
    v
}

/// qemu's option parser splits on commas; a literal comma is written twice.
fn escape_commas(p: &Path) -> OsString {
    OsString::from(p.to_string_lossy().replace(',', ",,"))
}

/// KVM only where it really works: the CPU has vmx/svm and /dev/kvm is usable. Here
/// /dev/kvm exists but is PVM, which aborts on normal guests (notes/cgroup-v2-vm.md).
pub fn choose_accel(cpuinfo: &str, kvm_usable: bool, force_tcg: bool) -> Accel {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw && kvm_usable && !force_tcg {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

pub fn detect_accel() -> Accel {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let force_tcg = std::env::var("KINC_HOSTVM_ACCEL").is_ok_and(|v| v == "tcg");
    choose_accel(&cpuinfo, kvm, force_tcg)
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP so the supervisor can kill qemu before exiting.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn pending_signal() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    TimedOut,
    Signalled(i32),
    /// The caller's watchdog gave up on it.
    Abandoned,
}

/// A running qemu. Dropping it kills qemu's whole process group and reaps it.
pub struct Qemu {
    child: Option<Child>,
    pub started: Instant,
}

impl Qemu {
    pub fn spawn(qemu_bin: &str, spec: &VmSpec, tmpdir: &Path, log: &Path) -> Result<Self> {
        let mut cmd = Command::new(qemu_bin);
        cmd.args(spec.argv()).env("TMPDIR", tmpdir);
        Self::spawn_command(cmd, log)
    }

    /// Starts `cmd` as the leader of a new process group, output into `log`.
    pub fn spawn_command(mut cmd: Command, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let what = super::cmd::describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill qemu if we die
        // without running any cleanup (SIGKILL, a crash).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self {
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// Waits for qemu to exit, calling `tick` every 100 ms (to stream output), until
    /// `timeout`, a caught signal, or `tick` returning true (a watchdog), in which case
    /// qemu is killed.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        mut tick: impl FnMut() -> bool,
    ) -> Result<Ended> {
        loop {
            if tick() {
                self.kill();
                return Ok(Ended::Abandoned);
            }
            let child = self.child.as_mut().expect("not yet reaped");
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(Ended::Exited(st));
            }
            if let Some(sig) = pending_signal() {
                self.kill();
                return Ok(Ended::Signalled(sig));
            }
            if timeout.is_some_and(|t| self.started.elapsed() >= t) {
                self.kill();
                return Ok(Ended::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: plain kill(2) on the group we created for qemu.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the qemu named by a leftover pidfile, but only if its command line points into
/// `run_dir` (the pid may have been reused by something else).
pub fn kill_stale(pidfile: &Path, run_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = run_dir.to_string_lossy();
    if cmdline_mentions(&cmdline, &needle) {
        // SAFETY: kill(2) of a process verified to be our qemu.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        return true;
    }
    false
}

pub fn cmdline_mentions(cmdline: &[u8], needle: &str) -> bool {
    cmdline
        .split(|b| *b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            vmlinux: "/c/vmlinux".into(),
            initrd: "/c/initrd.img".into(),
            disk: "/c/base,1.raw".into(),
            snapshot: true,
            memory_mib: 4096,
            smp: 2,
            accel: Accel::Tcg,
            console_log: "/r/console.log".into(),
            status_serial: "/r/status.serial".into(),
            pidfile: "/r/qemu.pid".into(),
            shares: vec![Share {
                tag: "kinc-hostvm".into(),
                host_path: "/r/ctl".into(),
            }],
            allow_reboot: false,
        }
    }

    fn joined(s: &VmSpec) -> Vec<String> {
        s.argv()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn argv_has_no_nic_overlay_shares_and_two_serials() {
        let a = joined(&spec());
        assert_eq!(after(&a, "-nic"), ["none"]);
        assert_eq!(after(&a, "-accel"), ["tcg,thread=multi"]);
        assert_eq!(after(&a, "-m"), ["4096M"]);
        assert_eq!(
            after(&a, "-drive"),
            ["file=/c/base,,1.raw,format=raw,if=virtio,cache=unsafe,snapshot=on"]
        );
        assert_eq!(
            after(&a, "-virtfs"),
            ["local,path=/r/ctl,mount_tag=kinc-hostvm,security_model=none"]
        );
        assert_eq!(
            after(&a, "-serial"),
            ["file:/r/console.log", "file:/r/status.serial"]
        );
        assert_eq!(after(&a, "-kernel"), ["/c/vmlinux"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        let append = after(&a, "-append")[0];
        assert!(append.contains("root=/dev/vda") && append.contains("console=ttyS0"));
        let mut s = spec();
        s.allow_reboot = true;
        s.snapshot = false;
        s.accel = Accel::Kvm;
        let a = joined(&s);
        assert!(!a.contains(&"-no-reboot".to_string()));
        assert!(!after(&a, "-drive")[0].contains("snapshot"));
        assert_eq!(after(&a, "-cpu"), ["host"]);
    }

    #[test]
    fn accel_needs_hardware_virtualisation() {
        let vmx = "processor: 0\nflags\t\t: fpu vme vmx sse\n";
        let none = "flags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(choose_accel(vmx, true, false), Accel::Kvm);
        assert_eq!(choose_accel(vmx, false, false), Accel::Tcg);
        assert_eq!(choose_accel(vmx, true, true), Accel::Tcg);
        assert_eq!(choose_accel(none, true, false), Accel::Tcg);
    }

    fn dead(pid: &str) -> bool {
        // Gone, or a zombie waiting for whoever adopted it.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = crate::hostvm::testdir::TestDir::new("qemu-kill");
        let pidfile = dir.path().join("grandchild.pid");
        // A leader with a background child, like qemu with its helper threads/processes.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("sleep 300 & echo $! > \"$1\"; wait")
            .arg("sh")
            .arg(&pidfile);
        let mut q = Qemu::spawn_command(cmd, &dir.path().join("log")).unwrap();
        let t = Instant::now();
        while !pidfile.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let mut ticks = 0;
        let ended = q
            .wait(Some(Duration::from_millis(500)), || {
                ticks += 1;
                false
            })
            .unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert!(ticks >= 1);
        let t = Instant::now();
        while !dead(&grandchild) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            dead(&grandchild),
            "the group's other process {grandchild} survived"
        );
    }

    #[test]
    fn exit_status_is_reported() {
        let dir = crate::hostvm::testdir::TestDir::new("qemu-exit");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut q = Qemu::spawn_command(cmd, &dir.path().join("log")).unwrap();
        match q.wait(Some(Duration::from_secs(30)), || false).unwrap() {
            Ended::Exited(st) => assert_eq!(st.code(), Some(3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_pid_check_matches_arguments() {
        let cmdline = b"qemu-system-x86_64\0-pidfile\0/t/hostvm/runs/42-1/qemu.pid\0";
        assert!(cmdline_mentions(cmdline, "/t/hostvm/runs/42-1"));
        assert!(!cmdline_mentions(cmdline, "/t/hostvm/runs/43-1"));
    }
}
