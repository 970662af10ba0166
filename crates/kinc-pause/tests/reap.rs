//! `reap_children` on children a forked process makes itself. It runs in its own test
//! binary and in a forked child: `waitpid(-1)` in the test process could steal other
//! tests' children, and the harness never waits for a grandchild, so only the function
//! under test can reap these.

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};

const EXITED: usize = 5;

/// Runs in the forked child; returns 0 or the number of the failed check. Only
/// async-signal-safe calls (no allocation): the test process has other threads.
fn scenario() -> i32 {
    // A reap that blocks would hang the test: die of SIGALRM instead.
    unsafe { libc::alarm(20) };
    // One child that stays alive (blocked reading a pipe) until we close the write end.
    let Ok((rd, wr)) = pipe() else { return 1 };
    let sleeper = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(wr);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&rd, &mut b);
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(_) => return 2,
    };
    drop(rd);
    let mut exited = [Pid::from_raw(0); EXITED];
    for slot in &mut exited {
        match unsafe { fork() } {
            Ok(ForkResult::Child) => unsafe { libc::_exit(7) },
            Ok(ForkResult::Parent { child }) => *slot = child,
            Err(_) => return 3,
        }
    }
    // Wait, without reaping, until every one of them is a zombie.
    for &pid in &exited {
        if waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).is_err() {
            return 4;
        }
    }
    if kinc_pause::reap_children() != EXITED {
        return 5;
    }
    // Reaped for real: none of them can be waited for any more.
    for &pid in &exited {
        if waitpid(pid, Some(WaitPidFlag::WNOHANG)) != Err(Errno::ECHILD) {
            return 6;
        }
    }
    // The live child was neither reaped nor waited for (WNOHANG).
    if waitpid(sleeper, Some(WaitPidFlag::WNOHANG)) != Ok(WaitStatus::StillAlive) {
        return 7;
    }
    if kinc_pause::reap_children() != 0 {
        return 8;
    }
    drop(wr);
    if waitid(
        Id::Pid(sleeper),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .is_err()
    {
        return 9;
    }
    if kinc_pause::reap_children() != 1 {
        return 10;
    }
    // No children left at all.
    if waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) != Err(Errno::ECHILD) {
        return 11;
    }
    0
}

#[test]
fn reap_children_reaps_every_exited_child_and_counts_them() {
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = scenario();
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let status = waitpid(child, None).expect("wait for the scenario");
    let why = match status {
        WaitStatus::Exited(_, 0) => return,
        WaitStatus::Exited(_, 5) => "first reap did not return the number of exited children",
        WaitStatus::Exited(_, 6) => "an exited child was still waitable after the reap",
        WaitStatus::Exited(_, 7) => "the live child was reaped or waited for",
        WaitStatus::Exited(_, 8) => "a reap with only a live child returned non-zero",
        WaitStatus::Exited(_, 10) => "the late child was not reaped",
        WaitStatus::Exited(_, 11) => "children remained after the last reap",
        WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGALRM, _) => "a reap blocked",
        _ => "setup failed (pipe, fork or waitid)",
    };
    panic!("{why}: {status:?}");
}
