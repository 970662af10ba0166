//! Issue 17 item 11: `kincnet-policy --status` whose reader left (`| head -1`) ends
//! quietly with 0; a stdout that fails otherwise (`/dev/full`) is an error naming it.
//! No root needed.

use std::fs::File;
use std::process::{Command, Output, Stdio};

use kincnet_policy::controller::Status;

const BIN: &str = env!("CARGO_BIN_EXE_kincnet-policy");

fn status(stdout: Stdio, output: &str) -> Output {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("status.json");
    let s = Status {
        synced: true,
        warnings: (0..2000).map(|i| format!("warning {i}")).collect(),
        ..Status::default()
    };
    kincnet_policy::runner::write_status(&file, &s).unwrap();
    Command::new(BIN)
        .args(["--status", "-o", output, "--status-file"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn status_to_a_closed_pipe_exits_quietly() {
    for output in ["text", "json"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = status(writer.into(), output);
        assert_eq!(o.status.code(), Some(0), "{output}: {o:?}");
        assert!(o.stderr.is_empty(), "{output}: {o:?}");
    }
}

#[test]
fn status_to_a_full_disk_is_an_error_naming_stdout() {
    let full = File::options().write(true).open("/dev/full").unwrap();
    let o = status(full.into(), "json");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("writing the status to stdout") && !err.contains("panicked"),
        "{err}"
    );
}
