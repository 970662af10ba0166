//! The pod infra ("pause") container's program.
//!
//! It holds a pod's namespaces open and does nothing else: it sleeps in `sigwait`, reaps
//! every exited child on SIGCHLD (it is PID 1 of pods that share a PID namespace and so
//! adopts their orphans) and exits 0 on SIGINT or SIGTERM, so a pod stop does not have
//! to wait for SIGKILL. Behaviour follows kubernetes' `build/pause/linux/pause.c`.
//!
//! The signals are blocked and taken with `sigwait` instead of handled asynchronously:
//! the reap loop and the exit then run in ordinary code, and a blocked signal is queued
//! even for a namespace's PID 1, which the kernel would otherwise spare from default
//! actions.

use std::ffi::OsStr;
use std::io::Write;

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The `registry.k8s.io/pause` tag this program stands in for.
pub const VERSION: &str = "3.10";

/// Printed to stderr when not PID 1; not an error, as pause is also used outside pods.
pub const NOT_PID1_WARNING: &str = "warning: pause should be the first process";

/// The line `-v` prints.
pub fn version_line() -> String {
    format!("pause version {VERSION} (kinc)")
}

/// Whether the command line asks for the version: like pause.c, `-v` in any position and
/// any case; every other argument is ignored.
pub fn wants_version<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .any(|a| a.as_ref().eq_ignore_ascii_case("-v"))
}

/// The signals pause acts on.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks [`handled_signals`] so that they queue for [`next_event`] instead of taking
/// their default action. Call it before starting any thread: new threads inherit the mask.
pub fn block_signals() -> nix::Result<SigSet> {
    let set = handled_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Reaps every child that has exited, without blocking, and returns how many it reaped.
///
/// SIGCHLD is not queued per child, so one signal may stand for many exits: loop until
/// nothing is left. `__WALL` also collects children whose exit signal is not SIGCHLD.
pub fn reap_children() -> usize {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
    let mut reaped = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(flags)) {
            Ok(WaitStatus::StillAlive) => return reaped,
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => reaped += 1,
            // Stops and ptrace events are not exits; look for more.
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // ECHILD: no children at all.
            Err(_) => return reaped,
        }
    }
}

/// What woke pause up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGINT or SIGTERM: exit 0.
    Shutdown(Signal),
    /// SIGCHLD, after reaping this many children.
    Reaped(usize),
}

/// Sleeps until one of `set` arrives and acts on it.
pub fn next_event(set: &SigSet) -> nix::Result<Event> {
    Ok(match set.wait()? {
        Signal::SIGCHLD => Event::Reaped(reap_children()),
        sig => Event::Shutdown(sig),
    })
}

/// The whole program after argument handling; returns the exit status.
pub fn run() -> i32 {
    // Stderr may be gone (a closed pipe); pause must not die of a failed message.
    let mut err = std::io::stderr();
    let set = match block_signals() {
        Ok(set) => set,
        Err(e) => {
            let _ = writeln!(err, "pause: block signals: {e}");
            return 1;
        }
    };
    if std::process::id() != 1 {
        let _ = writeln!(err, "{NOT_PID1_WARNING}");
    }
    // Children that exited before the mask was set raised no SIGCHLD that will arrive.
    reap_children();
    loop {
        match next_event(&set) {
            Ok(Event::Reaped(_)) => {}
            Ok(Event::Shutdown(sig)) => {
                let _ = writeln!(err, "shutting down, got signal {sig}");
                return 0;
            }
            Err(e) => {
                let _ = writeln!(err, "pause: sigwait: {e}");
                return 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_flag_is_found_anywhere_in_any_case() {
        assert!(wants_version(["-v"]));
        assert!(wants_version(["-V"]));
        assert!(wants_version(["x", "-v"]));
        assert!(!wants_version(["-vv"]));
        assert!(!wants_version(["--version"]));
        assert!(!wants_version(Vec::<String>::new()));
    }

    #[test]
    fn version_line_names_the_tag() {
        assert_eq!(version_line(), "pause version 3.10 (kinc)");
    }

    #[test]
    fn handles_exactly_int_term_chld() {
        let set = handled_signals();
        for sig in Signal::iterator() {
            let want = matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGCHLD);
            assert_eq!(set.contains(sig), want, "{sig}");
        }
    }
}
