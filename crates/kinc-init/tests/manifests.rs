//! Every manifest in `manifests/` deserializes into its k8s-openapi type with no field
//! left over (a misspelt or misplaced field would be silently dropped by the API server's
//! client-side apply), and the cluster set has the default StorageClass `standard`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{apps, batch, core, rbac, storage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Typed round trip: what the type kept, as JSON.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(t).unwrap())
}

fn round_trip(doc: &Value) -> Result<Value, String> {
    let kind = doc["kind"].as_str().ok_or("no kind")?;
    match kind {
        "Namespace" => typed::<core::v1::Namespace>(doc),
        "ServiceAccount" => typed::<core::v1::ServiceAccount>(doc),
        "Secret" => typed::<core::v1::Secret>(doc),
        "ConfigMap" => typed::<core::v1::ConfigMap>(doc),
        "Service" => typed::<core::v1::Service>(doc),
        "PersistentVolumeClaim" => typed::<core::v1::PersistentVolumeClaim>(doc),
        "Pod" => typed::<core::v1::Pod>(doc),
        "Deployment" => typed::<apps::v1::Deployment>(doc),
        "DaemonSet" => typed::<apps::v1::DaemonSet>(doc),
        "Job" => typed::<batch::v1::Job>(doc),
        "Role" => typed::<rbac::v1::Role>(doc),
        "ClusterRole" => typed::<rbac::v1::ClusterRole>(doc),
        "RoleBinding" => typed::<rbac::v1::RoleBinding>(doc),
        "ClusterRoleBinding" => typed::<rbac::v1::ClusterRoleBinding>(doc),
        "StorageClass" => typed::<storage::v1::StorageClass>(doc),
        other => Err(format!("kind {other} has no entry in this test: add it")),
    }
}

/// Paths present in `orig` that the typed value lost or changed.
fn lost(orig: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (orig, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{at}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(format!("{at} (value changed)")),
    }
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_manifest_is_a_known_type_with_no_unknown_fields() {
    let files = yaml_files(&repo().join("manifests"));
    assert!(files.len() >= 2, "no manifests found");
    let mut problems = Vec::new();
    let mut count = 0;
    for f in &files {
        for (i, doc) in docs(f).iter().enumerate() {
            count += 1;
            let name = format!("{} doc {i} ({})", f.display(), doc["kind"]);
            match round_trip(doc) {
                Ok(kept) => {
                    let mut l = Vec::new();
                    lost(doc, &kept, "", &mut l);
                    if !l.is_empty() {
                        problems.push(format!("{name}: unknown or changed fields {l:?}"));
                    }
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(count >= 10, "only {count} documents");
}

#[test]
fn the_unknown_field_check_catches_a_typo() {
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "labells": {"a": "b"}}, "data": {"k": "v"}
    });
    let kept = round_trip(&doc).unwrap();
    let mut l = Vec::new();
    lost(&doc, &kept, "", &mut l);
    assert_eq!(l, [".metadata.labells"]);
}

#[test]
fn cluster_manifests_make_standard_the_default_storage_class() {
    let docs = docs(&repo().join("manifests/cluster/local-path-storage.yaml"));
    let sc: storage::v1::StorageClass = docs
        .iter()
        .find(|d| d["kind"] == "StorageClass")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .expect("a StorageClass");
    assert_eq!(sc.metadata.name.as_deref(), Some("standard"));
    let ann = sc.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get("storageclass.kubernetes.io/is-default-class")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(sc.provisioner, "rancher.io/local-path");
}

/// local-path-provisioner runs its helper pods under the account it is told; left to its
/// default ("local-path-provisioner-service-account") every PVC stayed Pending.
#[test]
fn local_path_helper_pods_run_under_an_account_that_exists() {
    let docs = docs(&repo().join("manifests/cluster/local-path-storage.yaml"));
    let accounts: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect();
    let dep: apps::v1::Deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .expect("the provisioner's Deployment");
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let sa = pod
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    assert!(accounts.contains(&sa), "{sa} not in {accounts:?}");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let var = env
        .iter()
        .find(|e| e.name == "SERVICE_ACCOUNT_NAME")
        .expect("SERVICE_ACCOUNT_NAME is set");
    let from = var
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(from, Some("spec.serviceAccountName"));
}

#[test]
fn baked_cluster_config_is_valid() {
    let p = repo().join("image/files/usr/share/kinc/config/cluster.json");
    let cfg = kinc_types::ClusterConfig::load(&p).unwrap();
    assert_eq!(cfg.name.as_str(), "default");
    assert_eq!(
        cfg.kubernetes_version,
        kinc_types::config::DEFAULT_KUBERNETES_VERSION
    );
}
