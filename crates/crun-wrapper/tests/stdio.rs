//! Issue 17 item 11: the wrapper reaches crun whatever its stdio is. Each stdout/stderr
//! is in turn a pipe whose reader is gone (EPIPE), `/dev/full` (ENOSPC) or closed, while
//! the wrapper has a line to log; crun (a stand-in that records its argv) must still run.
//! `explain`, a CLI, stops quietly when its reader leaves. No root needed.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_crun-wrapper");
const RECORD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crun-record");

#[derive(Debug, Clone, Copy)]
enum Sink {
    BrokenPipe,
    Full,
    Closed,
}

fn stdio(sink: Sink) -> Stdio {
    match sink {
        Sink::BrokenPipe => {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            writer.into()
        }
        Sink::Full => File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into(),
        // Replaced by a close in the child, below.
        Sink::Closed => Stdio::inherit(),
    }
}

/// Runs the wrapper with fd `fd` (1 or 2, or both for 3) sent to `sink`; the other
/// stream is captured.
fn run(cwd: &Path, config: &Path, args: &[&str], fd: i32, sink: Sink) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(cwd)
        .env("KINC_CRUN_WRAPPER_CONFIG", config)
        .env("KINC_CRUN", RECORD)
        .env("KCW_TEST_RECORD", cwd.join("crun-ran"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if fd & 1 != 0 {
        c.stdout(stdio(sink));
    }
    if fd & 2 != 0 {
        c.stderr(stdio(sink));
    }
    if let Sink::Closed = sink {
        // SAFETY: close is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                for f in [1, 2] {
                    if fd & f != 0 {
                        libc::close(f);
                    }
                }
                Ok(())
            });
        }
    }
    c.output().unwrap()
}

#[test]
fn crun_is_reached_whatever_stdout_and_stderr_are() {
    for log_file in [None, Some("/nonexistent/dir/crun-wrapper.log")] {
        for sink in [Sink::BrokenPipe, Sink::Full, Sink::Closed] {
            for fd in [1, 2, 3] {
                let d = tempfile::tempdir().unwrap();
                let cfg = d.path().join("w.toml");
                let settings = match log_file {
                    // An unwritable log file falls back to stderr.
                    Some(p) => format!("log_file = \"{p}\"\n"),
                    None => String::new(),
                };
                std::fs::write(&cfg, settings).unwrap();
                // Not JSON: the wrapper logs a line and passes it on.
                std::fs::write(d.path().join("config.json"), "{not json").unwrap();
                let o = run(d.path(), &cfg, &["create", "id"], fd, sink);
                let what = format!("{sink:?} on fd mask {fd}, log_file {log_file:?}: {o:?}");
                assert_eq!(o.status.code(), Some(0), "{what}");
                let argv = std::fs::read_to_string(d.path().join("crun-ran"))
                    .unwrap_or_else(|e| panic!("crun was not reached ({e}): {what}"));
                assert_eq!(argv, "create\nid\n", "{what}");
                assert!(
                    !String::from_utf8_lossy(&o.stderr).contains("panicked"),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn help_reaches_crun_with_a_broken_stdout() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("w.toml");
    std::fs::write(&cfg, "").unwrap();
    let o = run(d.path(), &cfg, &["--help"], 1, Sink::BrokenPipe);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("crun-ran")).unwrap(),
        "--help\n"
    );
    assert!(o.stderr.is_empty(), "{o:?}");
}

#[test]
fn explain_stops_quietly_when_its_reader_leaves() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), r#"{"process":{}}"#).unwrap();
    let cfg = d.path().join("w.toml");
    let dir = d.path().to_str().unwrap();
    for args in [&["explain", dir][..], &["explain", "--json", dir]] {
        let o = run(d.path(), &cfg, args, 1, Sink::BrokenPipe);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(o.stderr.is_empty(), "{o:?}");
        let o = run(d.path(), &cfg, args, 1, Sink::Full);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("writing to stdout") && !err.contains("panicked"),
            "{err}"
        );
    }
}
