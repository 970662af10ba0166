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

#[test]
#[ignore = "needs Go and the module proxy, or the image cache: builds the real kubeadm"]
fn real_kubeadm_applies_kinc_inits_probe_patches() {
    let d = tempfile::tempdir().unwrap();
    let patches = d.path().join("patches");
    fs::create_dir(&patches).unwrap();
    for (file, json) in kinc_init::kubeadm::probe_patches() {
        fs::write(patches.join(file), json).unwrap();
    }
    let cfg = d.path().join("kubeadm.yaml");
    let text = fs::read_to_string(&goldens()[0]).unwrap().replace(
        kinc_init::paths::KUBEADM_PATCHES,
        &patches.display().to_string(),
    );
    fs::write(&cfg, text).unwrap();
    let cfg = cfg.display().to_string();
    let out_dir = d.path().join("manifests");
    fs::create_dir(&out_dir).unwrap();
    let bin = built_go_binary("kubeadm").expect("building kubeadm from image/go/kubernetes");
    for pod in kinc_init::kubeadm::STATIC_PODS {
        let phase: &[&str] = if pod == "etcd" {
            &["etcd", "local"]
        } else {
            &["control-plane", pod.strip_prefix("kube-").unwrap()]
        };
        let mut args = vec!["init", "phase"];
        args.extend_from_slice(phase);
        args.extend(["--config", &cfg, "--dry-run"]);
        // A dry run writes the manifests it would write here.
        let o = Command::new(&bin)
            .args(&args)
            .env("KUBEADM_INIT_DRYRUN_DIR", &out_dir)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "kubeadm {}:\n{out}", args.join(" "));
        assert!(
            out.contains(&format!(
                "Applied patch of type \"application/strategic-merge-patch+json\" to target \"{pod}\""
            )),
            "{pod}:\n{out}"
        );
        // The manifest: the probe's patience changed, kubeadm's handler and period kept.
        let manifest = fs::read_to_string(out_dir.join(format!("{pod}.yaml"))).unwrap();
        let pod_obj: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&manifest).unwrap();
        let c = &pod_obj.spec.unwrap().containers[0];
        let live = c.liveness_probe.as_ref().expect("a liveness probe");
        assert_eq!(live.failure_threshold, Some(24), "{pod}");
        assert_eq!(live.timeout_seconds, Some(30), "{pod}");
        assert!(live.http_get.is_some(), "{pod}");
        assert_eq!(live.period_seconds, Some(10), "{pod}");
        // The startup probe is kubeadm's, untouched.
        assert_eq!(
            c.startup_probe.as_ref().unwrap().timeout_seconds,
            Some(15),
            "{pod}"
        );
    }
}
