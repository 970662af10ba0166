//! The built `pause` binary: version flag, shutdown signals, idling and reaping orphans
//! it adopts as a child subreaper (no root needed).

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts pause with stderr captured and waits until its signals are blocked.
fn start(cmd: &mut Command) -> Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pause");
    let pid = child.id() as i32;
    if !wait_until(Duration::from_secs(10), || signals_blocked(pid)) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pause {pid} never blocked SIGINT, SIGTERM and SIGCHLD");
    }
    child
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut s)
        .expect("read pause stderr");
    s
}

/// Sends `sig` to a ready pause and checks it exits 0 at once, saying why.
fn exits_zero_on(sig: Signal) {
    let mut child = start(&mut Command::new(PAUSE));
    let pid = child.id() as i32;
    let sent = Instant::now();
    kill(Pid::from_raw(pid), sig).expect("signal pause");
    let Some(status) = wait_exit(&mut child, Duration::from_secs(5)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pause ignored {sig} for 5 s");
    };
    assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(2), "{sig}: slow exit");
    let err = stderr_of(&mut child);
    assert!(
        err.contains(kinc_pause::NOT_PID1_WARNING),
        "stderr: {err:?}"
    );
    assert!(
        err.contains(&format!("got signal {sig}")),
        "stderr: {err:?}"
    );
}

#[test]
fn version_flag_prints_the_version_and_exits_0() {
    for args in [&["-v"][..], &["-V"], &["--whatever", "-v"]] {
        let out = Command::new(PAUSE)
            .args(args)
            .output()
            .expect("run pause -v");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "pause version 3.10 (kinc)\n",
            "{args:?}"
        );
        assert!(out.stderr.is_empty(), "{args:?}: {:?}", out.stderr);
    }
}

#[test]
fn sigterm_exits_0_promptly() {
    exits_zero_on(Signal::SIGTERM);
}

#[test]
fn sigint_exits_0_promptly() {
    exits_zero_on(Signal::SIGINT);
}

#[test]
fn other_signals_keep_their_default_action() {
    // Only INT, TERM and CHLD are taken over: SIGHUP still kills, as with pause.c.
    let mut child = start(&mut Command::new(PAUSE));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).expect("signal pause");
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("pause survived SIGHUP");
    assert_eq!(status.signal(), Some(libc::SIGHUP));
}

#[test]
fn idles_without_spinning() {
    let mut child = start(&mut Command::new(PAUSE));
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(500));
    let f = stat_fields(pid).expect("pause stat");
    let _ = child.kill();
    let _ = child.wait();
    // A busy loop would be running ("R") and burn ~50 ticks in half a second.
    assert_eq!(f[0], "S", "pause state");
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    assert!(ticks <= 5, "pause used {ticks} clock ticks while idle");
}

const ORPHANS: usize = 4;
/// How long an orphan lives after being adopted: long enough for the test to see it.
const ORPHAN_LIFE: libc::timespec = libc::timespec {
    tv_sec: 2,
    tv_nsec: 0,
};

#[test]
fn reaps_children_and_adopted_orphans_as_subreaper() {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let wr_fd = wr.as_raw_fd();
    let mut cmd = Command::new(PAUSE);
    // Between fork and exec, in the process that becomes pause: make it a subreaper
    // (kept across execve), then give it children that exit at once and whose own
    // children, orphaned, are adopted by it. Only async-signal-safe calls here.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for _ in 0..ORPHANS {
                let middle = libc::fork();
                if middle < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if middle == 0 {
                    // Drop every inherited descriptor but the report pipe: spawn() waits
                    // for EOF on its exec-error pipe, which these processes would hold.
                    for fd in 3..1024 {
                        if fd != wr_fd {
                            libc::close(fd);
                        }
                    }
                    let me = libc::getpid();
                    if libc::fork() == 0 {
                        // The orphan: report its pid once adopted, live a while, exit.
                        while libc::getppid() == me {
                            libc::usleep(1000);
                        }
                        let pid = libc::getpid();
                        libc::write(wr_fd, (&pid as *const i32).cast(), 4);
                        libc::nanosleep(&ORPHAN_LIFE, std::ptr::null_mut());
                    }
                    libc::_exit(0);
                }
                // Let the middle child die before exec: its SIGCHLD is lost (default
                // disposition, not blocked yet), so only pause's first reap collects it.
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    middle as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                );
            }
            Ok(())
        });
    }
    let mut child = start(&mut cmd);
    drop(wr);
    let pause = child.id() as i32;

    let mut orphans = Vec::new();
    let mut rd = std::fs::File::from(rd);
    for _ in 0..ORPHANS {
        let mut b = [0u8; 4];
        rd.read_exact(&mut b).expect("read orphan pid");
        orphans.push(i32::from_ne_bytes(b));
    }
    let ppids: Vec<_> = orphans.iter().map(|&o| status_field(o, "PPid")).collect();
    // The middle children are gone while the orphans still live.
    let no_zombies = || children_of(pause).iter().all(|(_, s)| s != "Z");
    let early = wait_until(Duration::from_millis(1500), no_zombies);
    let live = children_of(pause);
    // Then the orphans exit and nothing of them is left.
    let late = wait_until(Duration::from_secs(10), || children_of(pause).is_empty());
    let left = children_of(pause);
    let _ = child.kill();
    let _ = child.wait();
    let adopted = ppids
        .iter()
        .all(|p| p.as_deref() == Some(pause.to_string().as_str()));
    assert!(
        adopted,
        "orphans {orphans:?} not adopted by pause {pause}: {ppids:?}"
    );
    assert!(early, "exited children not reaped at start: {live:?}");
    assert_eq!(live.len(), ORPHANS, "orphans before they exit: {live:?}");
    assert!(late, "exited orphans not reaped: {left:?}");
}
