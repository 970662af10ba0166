//! Issue 17, items 10 and 11, on the `kinc` binary. A hostile `--config` never gets its
//! content echoed beyond a short excerpt; a stdout whose reader left ends the command
//! quietly with 0. `podman` is a stand-in script (tests/fixtures/bin) that lists one
//! cluster; no root, no real podman.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kinc");
const FAKE_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bin");
const SECRET: &str = "SECRET=hunter2";

fn kinc(home: &Path, args: &[&str], stdout: Stdio, stderr: Stdio) -> Output {
    let path = format!("{FAKE_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    Command::new(BIN)
        .args(args)
        .env("PATH", path)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("KINC_CLUSTER_NAME")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .unwrap()
}

fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// Item 10: each file is refused with what was expected, the line and column, at most a
/// short excerpt, and never the secret that sits past it.
#[test]
fn config_errors_show_a_bounded_excerpt_and_never_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let pad = "A".repeat(900_000);
    let cases: &[(&str, String, &[&str])] = &[
        (
            "big scalar",
            format!("kind: ClusterConfig\napiPort: \"{pad}{SECRET}\"\n"),
            &[
                "line 2, column 10",
                "apiPort: invalid type: string \"AAAA",
                "expected u16",
            ],
        ),
        (
            "unquoted big scalar",
            format!("podSubnet: {pad}{SECRET}\n"),
            // A type's own parser (ipnetwork, the name check) gives no location.
            &["invalid address"],
        ),
        (
            "big key",
            // An explicit key: YAML limits implicit ones to 1024 characters.
            format!("? {pad}{SECRET}\n: 1\n"),
            &[
                "line 1, column 3",
                "unknown field `AAAA",
                "expected one of `apiVersion`",
            ],
        ),
        (
            "big name",
            format!("name: {pad}{SECRET}\n"),
            &["cluster name \"AAAA", "the limit is"],
        ),
        (
            "a .env file",
            format!("DB_USER=admin\nDB_PASSWORD={pad}{SECRET}\n"),
            &[
                "invalid type: string \"DB_USER=admin DB_PASSWORD=AAAA",
                "expected struct ClusterOptionsFile",
            ],
        ),
        (
            "10 MB",
            format!("apiPort: \"{}{SECRET}\"\n", "A".repeat(10 << 20)),
            &["larger than 1024 KiB"],
        ),
    ];
    for (what, text, want) in cases {
        let file = d.path().join("cluster.yaml");
        std::fs::write(&file, text).unwrap();
        let o = kinc(
            d.path(),
            &["create", "cluster", "--config", file.to_str().unwrap()],
            Stdio::piped(),
            Stdio::piped(),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.len() < 600,
            "{what}: {} bytes of stderr: {err}",
            err.len()
        );
        assert!(
            !err.contains(SECRET) && !err.contains("hunter2"),
            "{what}: {err}"
        );
        assert!(err.contains(file.to_str().unwrap()), "{what}: {err}");
        for w in *want {
            assert!(err.contains(w), "{what}: no {w:?} in {err}");
        }
    }
}

/// Item 11: `kinc get clusters [-o json] | true`, and the same with stderr closed too.
#[test]
fn a_reader_that_left_ends_the_command_quietly() {
    let d = tempfile::tempdir().unwrap();
    for args in [&["get", "clusters"][..], &["get", "clusters", "-o", "json"]] {
        let o = kinc(d.path(), args, closed_pipe(), Stdio::piped());
        assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
        assert!(o.stderr.is_empty(), "{args:?}: {o:?}");
        let o = kinc(d.path(), args, closed_pipe(), closed_pipe());
        assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
    }
    // The stand-in really lists a cluster: the pipe above was written to.
    let o = kinc(
        d.path(),
        &["get", "clusters"],
        Stdio::piped(),
        Stdio::piped(),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "dev\n", "{o:?}");
}

#[test]
fn a_stdout_that_fails_otherwise_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let o = kinc(d.path(), &["get", "clusters"], full.into(), Stdio::piped());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("ERROR: writing to stdout: ") && !err.contains("panicked"),
        "{err}"
    );
}
