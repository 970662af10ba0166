//! `kinc test`: live checks through the Kubernetes API (kube-rs) in a throwaway
//! namespace: API and node Ready, CoreDNS running, a PVC bound on `standard`, a
//! deployment rolling out, then pod-to-pod, service and DNS traffic from client pods.
//! The objects are built by pure functions so they are unit-tested without a cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;

pub const STORAGE_CLASS: &str = "standard";
pub const DEFAULT_TEST_IMAGE: &str = "docker.io/library/busybox:1.37";
const APP: &str = "kinc-test-web";
const PORT: i32 = 8080;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct LiveTestOptions {
    pub image: String,
    pub timeout: Duration,
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveTestError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes client: {0}")]
    Client(String),
}

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn app_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), APP.to_string())])
}

pub fn pvc(ns: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta("kinc-test-pvc", ns),
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(STORAGE_CLASS.into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("16Mi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod that writes to the PVC (a `WaitForFirstConsumer` class binds only then).
pub fn pvc_consumer(ns: &str, image: &str) -> Pod {
    let mut p = client_pod(
        ns,
        "kinc-test-pvc-user",
        image,
        "echo ok > /data/ok && cat /data/ok",
    );
    let spec = p.spec.as_mut().unwrap();
    spec.volumes = Some(vec![Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: "kinc-test-pvc".into(),
            read_only: None,
        }),
        ..Default::default()
    }]);
    spec.containers[0].volume_mounts = Some(vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        ..Default::default()
    }]);
    p
}

pub fn web_deployment(ns: &str, image: &str) -> Deployment {
    Deployment {
        metadata: meta(APP, ns),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(app_labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(app_labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: Some(image.into()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        command: Some(vec![
                            "sh".into(),
                            "-c".into(),
                            format!(
                                "echo kinc > /tmp/index.html && exec httpd -f -p {PORT} -h /tmp"
                            ),
                        ]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn web_service(ns: &str) -> Service {
    Service {
        metadata: meta(APP, ns),
        spec: Some(ServiceSpec {
            selector: Some(app_labels()),
            ports: Some(vec![ServicePort {
                port: PORT,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A run-once pod whose success is the check.
pub fn client_pod(ns: &str, name: &str, image: &str, script: &str) -> Pod {
    Pod {
        metadata: meta(name, ns),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "check".into(),
                image: Some(image.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn fetch_script(target: &str) -> String {
    format!("wget -q -T 5 -O - http://{target}:{PORT}/ | grep -q kinc")
}

/// Builds a client from kubeconfig YAML (the host view from `kinc get kubeconfig`).
pub async fn client(kubeconfig_yaml: &str) -> Result<Client, LiveTestError> {
    let kc = Kubeconfig::from_yaml(kubeconfig_yaml)
        .map_err(|e| LiveTestError::Kubeconfig(e.to_string()))?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| LiveTestError::Kubeconfig(e.to_string()))?;
    Client::try_from(cfg).map_err(|e| LiveTestError::Client(e.to_string()))
}

async fn poll<F, Fut>(timeout: Duration, mut f: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
{
    let t0 = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        match f().await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if t0.elapsed() >= timeout {
            return Err(format!(
                "not within {}: {last}",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pod_succeeded(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<String, String> {
    poll(timeout, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match p.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => Ok(Some("pod succeeded".into())),
            Some("Failed") => Err(format!("pod {name} failed")),
            other => Err(format!("pod {name} is {}", other.unwrap_or("pending"))),
        }
    })
    .await
}

/// Runs every check; each result says what passed or why not.
pub async fn run(client: Client, opts: &LiveTestOptions) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let ns = opts.namespace.as_str();
    let t = opts.timeout;
    macro_rules! check {
        ($name:expr, $body:expr) => {{
            let t0 = Instant::now();
            let r: Result<String, String> = $body.await;
            let ok = r.is_ok();
            out.push(CheckResult {
                check: $name.to_string(),
                ok,
                detail: r.unwrap_or_else(|e| e),
                seconds: t0.elapsed().as_secs_f64(),
            });
            ok
        }};
    }
    let c = client.clone();
    check!("api", async {
        c.apiserver_version()
            .await
            .map(|v| format!("Kubernetes {}", v.git_version))
            .map_err(|e| e.to_string())
    });
    let nodes: Api<Node> = Api::all(client.clone());
    check!(
        "node-ready",
        poll(t, || async {
            let list = nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            if !list.items.is_empty() && ready == list.items.len() {
                Ok(Some(format!("{ready} node(s) Ready")))
            } else {
                Err(format!("{ready} of {} nodes Ready", list.items.len()))
            }
        })
    );
    let sys: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    check!(
        "coredns",
        poll(t, || async {
            let lp = ListParams::default().labels("k8s-app=kube-dns");
            let pods = sys.list(&lp).await.map_err(|e| e.to_string())?;
            let running = pods
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running > 0 {
                Ok(Some(format!("{running} CoreDNS pod(s) running")))
            } else {
                Err(format!("{} CoreDNS pods, none running", pods.items.len()))
            }
        })
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let made_ns = check!("namespace", async {
        let n = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &n)
            .await
            .map(|_| format!("created {ns}"))
            .map_err(|e| e.to_string())
    });
    if made_ns {
        let pp = PostParams::default();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
        check!("pvc-bound", async {
            pvcs.create(&pp, &pvc(ns))
                .await
                .map_err(|e| e.to_string())?;
            pods.create(&pp, &pvc_consumer(ns, &opts.image))
                .await
                .map_err(|e| e.to_string())?;
            poll(t, || async {
                let c = pvcs.get("kinc-test-pvc").await.map_err(|e| e.to_string())?;
                match c.status.and_then(|s| s.phase).as_deref() {
                    Some("Bound") => Ok(Some(format!("bound on {STORAGE_CLASS}"))),
                    other => Err(format!("claim is {}", other.unwrap_or("pending"))),
                }
            })
            .await?;
            pod_succeeded(&pods, "kinc-test-pvc-user", t).await
        });
        let rolled = check!("deployment", async {
            deps.create(&pp, &web_deployment(ns, &opts.image))
                .await
                .map_err(|e| e.to_string())?;
            svcs.create(&pp, &web_service(ns))
                .await
                .map_err(|e| e.to_string())?;
            poll(t, || async {
                let d = deps.get(APP).await.map_err(|e| e.to_string())?;
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let avail = d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                if avail >= want {
                    Ok(Some(format!("{avail}/{want} replicas available")))
                } else {
                    Err(format!("{avail}/{want} replicas available"))
                }
            })
            .await
        });
        if rolled {
            check!("pod-to-pod", async {
                let lp = ListParams::default().labels(&format!("app={APP}"));
                let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
                let ip = list
                    .items
                    .iter()
                    .find_map(|p| p.status.as_ref()?.pod_ip.clone())
                    .ok_or("no web pod has an IP")?;
                pods.create(
                    &pp,
                    &client_pod(ns, "kinc-test-p2p", &opts.image, &fetch_script(&ip)),
                )
                .await
                .map_err(|e| e.to_string())?;
                pod_succeeded(&pods, "kinc-test-p2p", t)
                    .await
                    .map(|_| format!("reached pod {ip}"))
            });
            check!("service", async {
                let s = svcs.get(APP).await.map_err(|e| e.to_string())?;
                let ip = s
                    .spec
                    .and_then(|s| s.cluster_ip)
                    .ok_or("service has no cluster IP")?;
                pods.create(
                    &pp,
                    &client_pod(ns, "kinc-test-svc", &opts.image, &fetch_script(&ip)),
                )
                .await
                .map_err(|e| e.to_string())?;
                pod_succeeded(&pods, "kinc-test-svc", t)
                    .await
                    .map(|_| format!("reached service {ip}"))
            });
            check!("dns", async {
                let host = format!("{APP}.{ns}.svc.cluster.local");
                pods.create(
                    &pp,
                    &client_pod(ns, "kinc-test-dns", &opts.image, &fetch_script(&host)),
                )
                .await
                .map_err(|e| e.to_string())?;
                pod_succeeded(&pods, "kinc-test-dns", t)
                    .await
                    .map(|_| format!("resolved and reached {host}"))
            });
        }
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_asks_for_standard() {
        let c = pvc("ns1");
        let s = c.spec.unwrap();
        assert_eq!(s.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ns1"));
        let p = pvc_consumer("ns1", "img");
        let spec = p.spec.unwrap();
        assert_eq!(
            spec.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "kinc-test-pvc"
        );
    }

    #[test]
    fn service_selects_the_deployment() {
        let d = web_deployment("n", "img");
        let s = web_service("n");
        let sel = s.spec.unwrap().selector.unwrap();
        let tmpl = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(sel, tmpl);
    }

    #[test]
    fn client_pods_run_once_and_check_content() {
        let p = client_pod("n", "c", "img", &fetch_script("10.1.2.3"));
        let spec = p.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let cmd = spec.containers[0].command.clone().unwrap().join(" ");
        assert!(
            cmd.contains("http://10.1.2.3:8080/") && cmd.contains("grep -q kinc"),
            "{cmd}"
        );
    }

    #[test]
    fn bad_kubeconfig_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(client("clusters: [")).is_err());
    }

    /// A TLS client can be built: rustls has its crypto provider (the first real cluster's
    /// `kinc test` panicked here: "Could not automatically determine the process-level
    /// CryptoProvider").
    #[test]
    fn https_client_builds() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/ca.pem");
        let kc = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: {ca}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client(&kc))
            .expect("an HTTPS client for a kubeconfig with a CA");
    }
}
