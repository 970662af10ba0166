//! Helpers shared by the pause integration tests: /proc readers and polling.

#![allow(dead_code)]

use std::time::{Duration, Instant};

pub const PAUSE: &str = env!("CARGO_BIN_EXE_pause");

/// Polls `f` every 10 ms until it is true or `timeout` passed; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `Key:` line of /proc/<pid>/status, without the key.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Whether pause is ready to act on SIGINT, SIGTERM and SIGCHLD (before that a SIGTERM
/// would simply kill it): they are blocked, or it sleeps in `rt_sigtimedwait`, which
/// takes the waited-for signals out of the blocked mask while it waits.
pub fn signals_blocked(pid: i32) -> bool {
    let want: u64 = [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD]
        .iter()
        .map(|s| 1u64 << (s - 1))
        .sum();
    let blocked = status_field(pid, "SigBlk")
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .is_some_and(|m| m & want == want);
    let in_sigwait = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<libc::c_long>().ok())
        == Some(libc::SYS_rt_sigtimedwait);
    blocked || in_sigwait
}

/// The fields of /proc/<pid>/stat after the command name: state is [0], ppid [1],
/// utime [11], stime [12].
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The processes whose parent is `ppid`, with their state letter (`Z` for a zombie).
pub fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
                out.push((pid, f[0].clone()));
            }
        }
    }
    out
}

/// Waits for `child` to exit for at most `timeout`.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait pause");
        status.is_some()
    });
    status
}
