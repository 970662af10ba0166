//! pause as PID 1 of a new PID namespace, as in a pod that shares its PID namespace:
//! orphans made inside the namespace are adopted by it and reaped, and SIGTERM from
//! outside still ends it with status 0 (the kernel would ignore a SIGTERM that a
//! namespace's init neither handles nor blocks). Its own test binary: it waits for its
//! forked children by pid and no other test may race it.

mod common;

use std::ffi::CString;
use std::io::Read;
use std::time::Duration;

use common::*;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

const ORPHANS: usize = 3;
/// How long an orphan lives once adopted: long enough for the test to see it.
const ORPHAN_LIFE: libc::timespec = libc::timespec {
    tv_sec: 2,
    tv_nsec: 0,
};

/// The forked launcher: makes a PID namespace with pause as its PID 1, reports pause's
/// pid, leaves orphans in the namespace and ends with pause's exit status. Only
/// async-signal-safe calls: the test process has other threads.
fn launcher(argv: &[*const libc::c_char; 2], report: &std::os::fd::OwnedFd) -> i32 {
    if unshare(CloneFlags::CLONE_NEWPID).is_err() {
        return 90;
    }
    // The first child is PID 1 of the new namespace.
    let pause = match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe {
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(91)
        },
        Ok(ForkResult::Parent { child }) => child,
        Err(_) => return 92,
    };
    let _ = nix::unistd::write(report, &pause.as_raw().to_ne_bytes());
    // A process inside the namespace whose children outlive it: they are orphaned and,
    // having no subreaper, adopted by the namespace's PID 1.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe {
            for _ in 0..ORPHANS {
                if libc::fork() == 0 {
                    while libc::getppid() != 1 {
                        libc::usleep(1000);
                    }
                    libc::nanosleep(&ORPHAN_LIFE, std::ptr::null_mut());
                    libc::_exit(0);
                }
            }
            libc::_exit(0)
        },
        Ok(ForkResult::Parent { child }) => {
            let _ = waitpid(child, None);
        }
        Err(_) => return 93,
    }
    match waitpid(pause, None) {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, sig, _)) => 100 + sig as i32,
        _ => 94,
    }
}

#[test]
#[ignore = "needs root: a new PID namespace"]
fn pid1_reaps_adopted_orphans_and_exits_0_on_sigterm() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (it is #[ignore]d for that reason)"
    );
    let path = CString::new(PAUSE).unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    let launcher_pid = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            let code = launcher(&argv, &wr);
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(wr);
    let mut b = [0u8; 4];
    let got = std::fs::File::from(rd).read_exact(&mut b);
    let pause = i32::from_ne_bytes(b);
    let stop = |sig| {
        if got.is_ok() {
            let _ = kill(Pid::from_raw(pause), sig);
        }
    };

    let ready = got.is_ok() && wait_until(Duration::from_secs(10), || signals_blocked(pause));
    let nspid = status_field(pause, "NSpid");
    // Every orphan adopted at once, then every one reaped after it exits.
    let adopted = ready
        && wait_until(Duration::from_secs(10), || {
            children_of(pause).len() == ORPHANS
        });
    let seen = children_of(pause);
    let reaped = adopted && wait_until(Duration::from_secs(10), || children_of(pause).is_empty());
    let left = children_of(pause);
    stop(Signal::SIGTERM);
    let mut status = None;
    wait_until(Duration::from_secs(5), || {
        status = waitpid(launcher_pid, Some(WaitPidFlag::WNOHANG)).ok();
        status.is_some_and(|s| s != WaitStatus::StillAlive)
    });
    if status == Some(WaitStatus::StillAlive) {
        stop(Signal::SIGKILL);
        status = waitpid(launcher_pid, None).ok();
    }

    assert!(got.is_ok(), "launcher reported no pid: {status:?}");
    assert!(ready, "pause {pause} never blocked its signals: {status:?}");
    assert_eq!(
        nspid,
        Some(format!("{pause}\t1")),
        "pause is not PID 1 of a new namespace"
    );
    assert!(adopted, "orphans not adopted by pause: {seen:?}");
    assert!(reaped, "exited orphans left as zombies: {left:?}");
    assert_eq!(
        status,
        Some(WaitStatus::Exited(launcher_pid, 0)),
        "pause as PID 1 did not exit 0 on SIGTERM (100+n: killed by signal n)"
    );
}
