//! kinc-init's rendered kubeadm configs (its golden files: several clusters, names, CIDRs,
//! ports, both CRIs) against the real kubeadm built from the pinned module: it must accept
//! each one, and name only images the offline node preloads.

use std::path::PathBuf;
use std::process::Command;

use super::*;

fn goldens() -> Vec<PathBuf> {
    let dir = hb::workspace_root().join("crates/kinc-init/tests/golden");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "golden configs in {}: {v:?}", dir.display());
    v
}

fn kubeadm(args: &[&str]) -> (bool, String) {
    let bin = built_go_binary("kubeadm").expect("building kubeadm from image/go/kubernetes");
    let o = Command::new(&bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
#[ignore = "needs Go and the module proxy, or the image cache: builds the real kubeadm"]
fn real_kubeadm_accepts_every_rendered_config() {
    for g in goldens() {
        let f = g.display().to_string();
        let (ok, text) = kubeadm(&["config", "validate", "--config", &f]);
        assert!(ok, "kubeadm config validate --config {f}:\n{text}");
    }
    // The parser is really looking: a config it must refuse.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yaml");
    let text = fs::read_to_string(&goldens()[0])
        .unwrap()
        .replace("podSubnet:", "podSubnetz:");
    fs::write(&bad, text).unwrap();
    let (ok, out) = kubeadm(&["config", "validate", "--config", &bad.display().to_string()]);
    assert!(!ok && out.contains("podSubnetz"), "{out}");
}

#[test]
#[ignore = "needs Go and the module proxy, or the image cache: builds the real kubeadm"]
fn real_kubeadm_names_only_preloaded_images() {
    let preloaded = preloaded_names();
    for g in goldens() {
        let f = g.display().to_string();
        let (ok, text) = kubeadm(&["config", "images", "list", "--config", &f]);
        assert!(ok, "kubeadm config images list --config {f}:\n{text}");
        let names: Vec<&str> = text.lines().filter(|l| l.contains('/')).collect();
        assert_eq!(names.len(), 7, "{f}: {text}");
        for n in names {
            assert!(
                preloaded.contains(&n.to_string()),
                "{f}: kubeadm wants {n}, not preloaded"
            );
        }
    }
}

#[test]
#[ignore = "needs Go and the module proxy, or the image cache: builds the real kubeadm"]
fn real_kubeadm_reports_the_pinned_version() {
    let (ok, text) = kubeadm(&["version", "-o", "short"]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), v::KUBERNETES);
}
