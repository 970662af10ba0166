//! Ctrl-C (SIGINT) and SIGTERM during `create`: the handler only raises a flag; the
//! create loop sees it, stops and removes what it made (unless `--retain`).

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_starts_clear() {
        assert!(!interrupted());
    }

    /// Installs the handler in a forked child (the test harness shares this process and
    /// its signals), raises `sig` there and returns how the child ended: 0 when the flag
    /// went up, 1 when the signal was survived with the flag down, 2 when it was already
    /// up; a child killed by the signal shows as `128 + sig`. Between fork and `_exit`
    /// only async-signal-safe calls: the harness has other threads.
    fn child_after(sig: libc::c_int) -> libc::c_int {
        // SAFETY: the child only calls sigaction, raise, an atomic load and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = if interrupted() {
                2
            } else {
                install();
                // SAFETY: raise delivers to this (only) thread before it returns.
                unsafe { libc::raise(sig) };
                if interrupted() {
                    0
                } else {
                    1
                }
            };
            // SAFETY: ends the child without running the harness's exit handlers.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
        if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        }
    }

    #[test]
    fn the_installed_handler_raises_the_flag_on_sigint_and_sigterm() {
        for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            assert_eq!(
                child_after(sig),
                0,
                "after install(), {name} must raise the flag (1: survived with the flag \
                 down, 2: flag up before, 128+n: killed by signal n)"
            );
        }
    }
}
