//! Boots Debian's kernel under QEMU with a busybox initramfs to get a real, pure cgroup v2
//! hierarchy (the CI host's own cgroups are hybrid). Measured facts behind every choice
//! here: `shared/notes/cgroup-v2-vm.md`. One boot takes a few seconds under TCG.

pub mod initramfs;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use initramfs::Initramfs;

pub const BEGIN: &str = "===VM-CMD-BEGIN===";
pub const END: &str = "===VM-CMD-END===";

/// Whole-run limit, and the limit for reaching `/init` (a rare TCG boot hang is retried).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const BOOT_WATCHDOG: Duration = Duration::from_secs(90);
const BOOT_TRIES: usize = 3;

/// PID 1 of the guest: mounts, runs `/vm/cmd` between markers, reports its status on the
/// second serial port, powers off. `nsdelegate,memory_recursiveprot` are systemd's
/// options on a cgroup v2 host.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
stty -F /dev/console -onlcr
echo ===VM-CMD-BEGIN===
/bin/sh /vm/cmd </dev/null
rc=$?
echo ===VM-CMD-END===
echo "$rc" > /dev/ttyS1
stty -F /dev/console -onlcr
sync
poweroff -f
"#;

/// The newest `/boot/vmlinuz-*`, by version order.
pub fn find_kernel() -> Option<PathBuf> {
    let mut ks: Vec<PathBuf> = fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort_by_key(|p| version_key(&p.to_string_lossy()));
    ks.pop()
}

fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The uncompressed ELF vmlinux inside a bzImage, booted through PVH: under TCG this skips
/// seconds of in-guest decompression. Extracted once, cached in the target dir keyed by
/// the bzImage's name, size and mtime; written under a unique name and renamed, so
/// parallel test processes never see half a file.
pub fn vmlinux(kernel: &Path) -> PathBuf {
    let meta = fs::metadata(kernel).expect("stat kernel");
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = kernel.file_name().unwrap().to_string_lossy();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cgroup-setup-vm");
    fs::create_dir_all(&dir).unwrap();
    let cached = dir.join(format!("{name}-{}-{mtime}.vmlinux", meta.len()));
    if cached.exists() {
        return cached;
    }
    let image = fs::read(kernel).expect("read kernel");
    // xz, zstd, gzip magics: try the first few hits of each; the ELF magic decides.
    let magics: [(&[u8], &str); 3] = [
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x1f\x8b\x08", "gzip"),
    ];
    for (magic, tool) in magics {
        let hits = image
            .windows(magic.len())
            .enumerate()
            .filter(|(_, w)| *w == magic)
            .map(|(i, _)| i)
            .take(5);
        for off in hits {
            if let Some(elf) = decompress(tool, &image[off..]) {
                let tmp = dir.join(format!(".vmlinux.{}", std::process::id()));
                fs::write(&tmp, elf).unwrap();
                fs::rename(&tmp, &cached).unwrap();
                return cached;
            }
        }
    }
    panic!("no compressed ELF payload found in {}", kernel.display());
}

/// Runs `tool -dc` on `data`; trailing garbage makes it complain, which is fine as long
/// as what came out is an ELF file.
fn decompress(tool: &str, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut out = Vec::new();
    child.stdout.take()?.read_to_end(&mut out).ok()?;
    let _ = child.wait();
    let _ = feeder.join();
    (out.len() > 1 << 20 && out.starts_with(b"\x7fELF")).then_some(out)
}

/// Kills QEMU on every exit path, panics included.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct GuestRun {
    /// The exit status of `/vm/cmd`, `None` when the guest never reported one.
    pub status: Option<i32>,
    pub console: String,
    pub elapsed: Duration,
}

impl GuestRun {
    /// The console lines `/vm/cmd` printed (between the markers).
    pub fn output(&self) -> Vec<&str> {
        self.console
            .lines()
            .skip_while(|l| !l.contains(BEGIN))
            .skip(1)
            .take_while(|l| !l.contains(END))
            .collect()
    }
}

/// KVM only where it really works (a `vmx`/`svm` CPU and a usable /dev/kvm); the CI VM's
/// /dev/kvm is PVM, which can't run Debian's kernel.
fn accel_args() -> [&'static str; 4] {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo.split_whitespace().any(|w| w == "vmx" || w == "svm");
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if hw && kvm {
        ["-accel", "kvm", "-cpu", "host"]
    } else {
        ["-accel", "tcg", "-cpu", "max"]
    }
}

/// Boots the kernel with `rd` (plus `/init`) and `cmd` as `/vm/cmd`; returns when the
/// guest powers off. Retries a boot that never reaches `/init`.
pub fn boot(kernel: &Path, rd: Initramfs, cmd: &str) -> GuestRun {
    boot_with_timeout(kernel, rd, cmd, RUN_TIMEOUT)
}

/// `boot` with another whole-run limit (benchmarks run longer than tests).
pub fn boot_with_timeout(kernel: &Path, mut rd: Initramfs, cmd: &str, limit: Duration) -> GuestRun {
    rd.add_bytes("/init", INIT, 0o755);
    rd.add_bytes("/vm/cmd", cmd, 0o755);
    let dir = tempfile::Builder::new()
        .prefix("cgroup-setup-vm-")
        .tempdir()
        .unwrap();
    let initrd = dir.path().join("initramfs.cpio");
    fs::write(&initrd, rd.to_cpio()).unwrap();
    let vmlinux = vmlinux(kernel);
    let mut last = String::new();
    for attempt in 1..=BOOT_TRIES {
        match boot_once(&vmlinux, &initrd, dir.path(), limit) {
            Ok(run) => return run,
            Err(why) => {
                eprintln!("boot attempt {attempt}: {why}");
                last = why;
            }
        }
    }
    panic!("the guest never reached /init in {BOOT_TRIES} boots: {last}");
}

fn boot_once(
    vmlinux: &Path,
    initrd: &Path,
    dir: &Path,
    limit: Duration,
) -> Result<GuestRun, String> {
    let console = dir.join("console.log");
    let status = dir.join("status");
    let qemu_log = dir.join("qemu.log");
    for f in [&console, &status] {
        let _ = fs::remove_file(f);
    }
    let start = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "q35", "-m", "512M", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-monitor", "none", "-no-reboot", "-nic", "none"])
        .args(accel_args())
        .arg("-kernel")
        .arg(vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 rdinit=/init cgroup_no_v1=all quiet loglevel=3",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!("file,id=vmstatus,path={}", status.display()))
        .args(["-device", "isa-serial,chardev=vmstatus,index=1"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&qemu_log).unwrap())
        .stderr(fs::File::create(dir.join("qemu.err")).unwrap());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL QEMU if this
    // test process dies before it does, so no QEMU outlives a killed test run.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut guard = QemuGuard(
        cmd.spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e}"))?,
    );
    let mut booted = false;
    loop {
        if let Some(st) = guard.0.try_wait().map_err(|e| e.to_string())? {
            let console = fs::read_to_string(&console).unwrap_or_default();
            if !console.contains(BEGIN) {
                let err = fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
                return Err(format!(
                    "qemu exited ({st}) before /init ran: {err}\n{console}"
                ));
            }
            let status = fs::read_to_string(&status)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Ok(GuestRun {
                status,
                console,
                elapsed: start.elapsed(),
            });
        }
        let elapsed = start.elapsed();
        if !booted {
            booted = fs::read_to_string(&console).is_ok_and(|c| c.contains(BEGIN));
            if !booted && elapsed > BOOT_WATCHDOG {
                return Err(format!("no {BEGIN} after {elapsed:?}"));
            }
        }
        if elapsed > limit {
            let console = fs::read_to_string(&console).unwrap_or_default();
            panic!("guest still running after {limit:?}; console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
