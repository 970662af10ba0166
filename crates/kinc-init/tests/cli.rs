//! The `kinc-init` binary's `render` subcommand: the CRI comes from `--cri`, else from the
//! image's node-image.json under `--root`, else CRI-O.

mod common;

use std::process::Command;

use common::*;

fn render(root: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let cfg = root.join("cluster.json");
    write(&cfg, &cluster("dev", 6444).to_json());
    Command::new(env!("CARGO_BIN_EXE_kinc-init"))
        .arg("--root")
        .arg(root)
        .arg("render")
        .arg("--config")
        .arg(&cfg)
        .args(["--node-ip", "10.88.0.2"])
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const CRIO: &str = "criSocket: unix:///var/run/crio/crio.sock";
const CONTAINERD: &str = "criSocket: unix:///run/containerd/containerd.sock";

#[test]
fn render_takes_the_cri_from_the_image_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    // No node-image.json: the Fedora image.
    assert!(stdout(&render(dir.path(), &[])).contains(CRIO));
    assert!(stdout(&render(dir.path(), &["--cri", "containerd"])).contains(CONTAINERD));

    let info = dir.path().join("usr/share/kinc/node-image.json");
    write(
        &info,
        r#"{"cri": "containerd", "imagesDir": "/usr/share/kinc/images"}"#,
    );
    assert!(stdout(&render(dir.path(), &[])).contains(CONTAINERD));
    assert!(stdout(&render(dir.path(), &["--cri", "crio"])).contains(CRIO));
}

#[test]
fn render_with_a_malformed_node_image_json_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("usr/share/kinc/node-image.json");
    write(&info, "{");
    let o = render(dir.path(), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("parsing node image info {}", info.display())),
        "{err}"
    );
    // An explicit --cri does not need the file.
    assert!(stdout(&render(dir.path(), &["--cri", "crio"])).contains(CRIO));
}
