//! The real `kincnet-policy` binary against an API server over HTTP.
//!
//! No kube-apiserver can be had here, so `apiserver/fake.rs` serves the list and watch
//! endpoints the controller uses the way the real one does (resourceVersions, chunked
//! `?watch=true` event streams, replay, 410 Expired after compaction), checks the bearer
//! token, and authorizes every request against the ClusterRole in
//! `manifests/cluster/kincnet-policy.yaml`. The controller gets the kubeconfig kinc-init's
//! own code writes, runs in a network namespace made for the test with a table of its
//! own, and is checked through `--status -o json` and the kernel's set elements: the
//! initial list, watch events, a watch resumed from its resourceVersion, and a relist
//! after the server compacted its history.

#[path = "apiserver/fake.rs"]
mod fake;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake::{FakeApi, Kind};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kinc_testutil::netns::Netns;
use kincnet_policy::nft::{set_name, Role, SET_EG_ISOLATED, SET_IN_ISOLATED};
use kincnet_policy::runner::{api_access, API_VERBS};
use kincnet_policy::Direction;
use kincnet_policy::Status;
use serde_json::{json, Value};

const MANIFEST: &str = include_str!("../../../manifests/cluster/kincnet-policy.yaml");

fn manifest(kind: &str) -> Value {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(MANIFEST)
        .map(|d| serde::Deserialize::deserialize(d).expect("manifest YAML"))
        .collect();
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifest");
    found[0].clone()
}

fn typed<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    serde_json::from_value(manifest(kind)).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn role_rules() -> Vec<PolicyRule> {
    typed::<ClusterRole>("ClusterRole")
        .rules
        .unwrap_or_default()
}

#[test]
fn rbac_manifest_grants_exactly_what_the_controller_uses() {
    // Every (group, resource, verb) the role grants, against what the controller asks.
    let mut granted = BTreeSet::new();
    for r in role_rules() {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "{r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    granted.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = api_access()
        .into_iter()
        .flat_map(|(g, r)| API_VERBS.map(|v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert_eq!(granted, used);
    assert_eq!(
        used.iter()
            .map(|(g, r, _)| format!("{g}/{r}"))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "/namespaces".to_string(),
            "/pods".into(),
            "networking.k8s.io/networkpolicies".into()
        ])
    );

    // The binding gives that role to the ServiceAccount whose token kinc-init reads.
    use kinc_init::policy::{NAMESPACE, SERVICE_ACCOUNT, TOKEN_SECRET};
    let role: ClusterRole = typed("ClusterRole");
    let sa: ServiceAccount = typed("ServiceAccount");
    assert_eq!(
        (
            sa.metadata.name.as_deref(),
            sa.metadata.namespace.as_deref()
        ),
        (Some(SERVICE_ACCOUNT), Some(NAMESPACE))
    );
    let b: ClusterRoleBinding = typed("ClusterRoleBinding");
    assert_eq!(
        (b.role_ref.kind.as_str(), Some(b.role_ref.name.as_str())),
        ("ClusterRole", role.metadata.name.as_deref())
    );
    let subjects = b.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", SERVICE_ACCOUNT, Some(NAMESPACE))
    );
    let secret: Secret = typed("Secret");
    assert_eq!(secret.metadata.name.as_deref(), Some(TOKEN_SECRET));
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    assert_eq!(
        secret
            .metadata
            .annotations
            .unwrap_or_default()
            .get("kubernetes.io/service-account.name")
            .map(String::as_str),
        Some(SERVICE_ACCOUNT)
    );
}

// ---------------------------------------------------------------------------------------
// The controller against the fake API server (root: a network namespace, nf_tables).

/// A CA certificate for the kubeconfig. Only its public part: the connection is plain
/// HTTP, but kube-rs parses the CA of the cluster it is given.
const TEST_CA: &str = include_str!("test-ca.pem");

/// A listener on 127.0.0.1 inside `ns`, bound from a thread that entered it (a socket
/// stays in the namespace it was made in).
fn listen(ns: &Netns) -> TcpListener {
    ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind in netns"))
}

/// The controller process, killed on drop (also when an assertion fails).
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: this build's, or `KINCNET_POLICY_TEST_BIN` (e.g. the static
/// one `cargo xtask image` puts in the node image).
fn bin() -> String {
    std::env::var("KINCNET_POLICY_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kincnet-policy").to_string())
}

fn status(file: &Path) -> Option<Status> {
    let out = Command::new(bin())
        .args(["--status", "-o", "json", "--status-file"])
        .arg(file)
        .output()
        .expect("kincnet-policy --status");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
}

/// The elements of one of the controller's sets, as `nft -j` prints them.
fn elements(ns: &str, table: &str, set: &str) -> Vec<Value> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "set", "ip", table, set,
        ])
        .output()
        .expect("nft");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["set"]["elem"].as_array().cloned())
        .unwrap_or_default()
}

fn addresses(ns: &str, table: &str, set: &str) -> BTreeSet<String> {
    elements(ns, table, set)
        .iter()
        .map(|e| e.as_str().expect("ipv4_addr element").to_string())
        .collect()
}

fn ips(last: &[u8]) -> BTreeSet<String> {
    last.iter().map(|l| format!("10.99.0.{l}")).collect()
}

fn namespace(name: &str, team: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "team": team}}})
}

fn pod(ns: &str, name: &str, app: &str, ip_last: u8) -> Value {
    let ip = format!("10.99.0.{ip_last}");
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// Starts the controller in `ns` with the kubeconfig kinc-init's write-policy-kubeconfig
/// step would write for an admin.conf whose server is `addr`; returns it and its status file.
fn spawn_controller(
    ns: &Netns,
    table: &str,
    dir: &Path,
    addr: std::net::SocketAddr,
    token: &str,
) -> (Controller, PathBuf) {
    let ca = serde_json::to_value(k8s_openapi::ByteString(TEST_CA.as_bytes().to_vec())).unwrap();
    let admin = kube::config::Kubeconfig::from_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: http://{addr}\n    certificate-authority-data: {}\ncontexts:\n- name: admin\n  context: {{cluster: kubernetes, user: admin}}\ncurrent-context: admin\nusers:\n- name: admin\n  user: {{token: not-for-the-controller}}\n",
        ca.as_str().unwrap()
    ))
    .unwrap();
    let kc =
        kinc_init::policy::controller_kubeconfig(&admin, Path::new("admin.conf"), token).unwrap();
    let kc_path = dir.join("kincnet-policy.kubeconfig");
    std::fs::write(&kc_path, kinc_init::policy::to_yaml(&kc)).unwrap();
    std::fs::set_permissions(&kc_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let status_file = dir.join("status.json");
    let log = dir.join("controller.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, &bin(), "--kubeconfig"])
        .arg(&kc_path)
        .args(["--table", table, "--resync", "1h", "--status-file"])
        .arg(&status_file)
        .arg("--cni-socket")
        .arg(dir.join("cni.sock"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawning kincnet-policy");
    (Controller { child, log }, status_file)
}

#[test]
#[ignore = "needs root, ip, nft"]
fn a_wrong_token_is_refused_and_nothing_is_programmed() {
    kinc_testutil::require_root_and!("ip", "nft");
    let pid = std::process::id();
    let table = format!("kpolapt{pid}");
    let ns = Netns::named(format!("kpolapt{pid}"));
    let listener = listen(&ns);
    let addr = listener.local_addr().unwrap();
    let api = FakeApi::start(listener, "the-right-token", role_rules());
    api.edit(|e| {
        e.apply(Kind::Namespace, namespace("kpa", "a"));
        e.apply(Kind::Pod, pod("kpa", "web", "web", 2));
        e.apply(
            Kind::NetworkPolicy,
            policy("kpa", "deny", json!({"podSelector": {}})),
        );
    });
    let dir = tempfile::tempdir().unwrap();
    let (ctl, status_file) = spawn_controller(&ns, &table, dir.path(), addr, "a-stale-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["pods", "namespaces", "networkpolicies"]
        .iter()
        .any(|r| api.count("list", r, 401) < 2)
    {
        assert!(
            Instant::now() < deadline,
            "no retried 401s: {:#?}\n{}",
            api.requests(),
            ctl.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still running, never synced, nothing isolated; no request got past authentication.
    let s = status(&status_file).expect("status file");
    assert!(!s.synced && s.isolated_ingress == 0, "{s:#?}");
    assert!(addresses(&ns.name, &table, SET_IN_ISOLATED).is_empty());
    assert!(api.requests().iter().all(|r| r.status == 401));
    drop(ctl);
}

#[test]
#[ignore = "needs root, ip, nft"]
fn controller_lists_watches_and_relists_against_an_http_api_server() {
    kinc_testutil::require_root_and!("ip", "nft");
    let pid = std::process::id();
    let table = format!("kpolapi{pid}");
    let ns = Netns::named(format!("kpolapi{pid}"));
    let token = format!("kpolapi-token-{pid}");
    let listener = listen(&ns);
    let addr = listener.local_addr().unwrap();
    let api = FakeApi::start(listener, &token, role_rules());

    // Cluster: namespaces kpa and kpb; web and client in kpa, other in kpb; one policy:
    // kpa's web pods accept TCP 80 from kpa's client pods only.
    api.edit(|e| {
        e.apply(Kind::Namespace, namespace("kpa", "a"));
        e.apply(Kind::Namespace, namespace("kpb", "b"));
        e.apply(Kind::Pod, pod("kpa", "web", "web", 2));
        e.apply(Kind::Pod, pod("kpa", "client", "client", 3));
        e.apply(Kind::Pod, pod("kpb", "other", "web", 4));
        e.apply(
            Kind::NetworkPolicy,
            policy(
                "kpa",
                "web-from-client",
                json!({"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                 "ports": [{"protocol": "TCP", "port": "http"}]}]}),
            ),
        );
    });

    let dir = tempfile::tempdir().unwrap();
    let (ctl, status_file) = spawn_controller(&ns, &table, dir.path(), addr, &token);

    let converge = |what: &str, check: &dyn Fn(&Status) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status(&status_file);
            if s.as_ref().is_some_and(check) {
                return s.unwrap();
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not reached; status {s:#?}\nrequests {:#?}\nlog:\n{}",
                    api.requests(),
                    ctl.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let in_isolated = || addresses(&ns.name, &table, SET_IN_ISOLATED);
    let eg_isolated = || addresses(&ns.name, &table, SET_EG_ISOLATED);
    let lists = |res: &str| api.count("list", res, 200);
    let resources = ["pods", "namespaces", "networkpolicies"];

    // (a) After the initial list: kpa/web isolated for ingress, kpa/client allowed in.
    let s = converge("initial sync", &|s| s.synced && s.isolated_ingress == 1);
    assert_eq!((s.policies, s.pods, s.isolated_egress), (1, 3, 0), "{s:#?}");
    assert!(s.warnings.is_empty(), "{s:#?}");
    assert_eq!(in_isolated(), ips(&[2]));
    assert_eq!(eg_isolated(), ips(&[]));
    // Exact allows land in one of the three hash sets, by how many ports they cover.
    let allow: Vec<Value> = [Role::Peer, Role::Proto, Role::Port]
        .into_iter()
        .flat_map(|r| elements(&ns.name, &table, &set_name(Direction::Ingress, r)))
        .collect();
    assert!(
        !allow.is_empty() && allow.iter().all(|e| e.to_string().contains("10.99.0.3")),
        "{allow:#?}"
    );
    for r in resources {
        assert_eq!(lists(r), 1, "{r}: {:#?}", api.requests());
    }

    // (b) Watch events, each applied without a relist.
    api.edit(|e| {
        e.apply(
            Kind::NetworkPolicy,
            policy(
                "kpb",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
        )
    });
    converge("policy added", &|s| {
        s.policies == 2 && s.isolated_ingress == 2 && s.isolated_egress == 1
    });
    assert_eq!(in_isolated(), ips(&[2, 4]));
    assert_eq!(eg_isolated(), ips(&[4]));

    api.edit(|e| e.apply(Kind::Pod, pod("kpa", "client", "web", 3)));
    converge("pod relabelled", &|s| s.isolated_ingress == 3);
    assert_eq!(in_isolated(), ips(&[2, 3, 4]));

    api.edit(|e| e.delete(Kind::NetworkPolicy, "kpb", "deny-all"));
    converge("policy deleted", &|s| {
        s.policies == 1 && s.isolated_ingress == 2 && s.isolated_egress == 0
    });
    assert_eq!(in_isolated(), ips(&[2, 3]));
    assert_eq!(eg_isolated(), ips(&[]));
    for r in resources {
        assert_eq!(lists(r), 1, "{r} relisted on a watch event");
    }

    // (c1) The server ends every watch; the history is kept, so the controller watches
    // again from its resourceVersion and gets what changed meanwhile, without a relist.
    let watches = api.count("watch", "pods", 200);
    api.drop_watches();
    api.edit(|e| e.apply(Kind::Pod, pod("kpa", "client", "client", 3)));
    converge("event after a dropped watch", &|s| s.isolated_ingress == 1);
    assert_eq!(in_isolated(), ips(&[2]));
    assert!(api.count("watch", "pods", 200) > watches);
    for r in resources {
        assert_eq!(lists(r), 1, "{r}: resumed watch should not relist");
    }

    // (c2) The server ends every watch and compacts its history past a change made
    // meanwhile (web deleted, web2 created): the watch from the old resourceVersion gets
    // 410 Expired, and only a relist can show the deletion.
    api.drop_watches_and_compact(|e| {
        e.delete(Kind::Pod, "kpa", "web");
        e.apply(Kind::Pod, pod("kpa", "web2", "web", 5));
    });
    // Each watcher relists after its own (jittered) backoff; wait for all three and for
    // their watches to be open again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while resources.iter().any(|r| lists(r) < 2) || api.open_watches() < 3 {
        assert!(
            Instant::now() < deadline,
            "no relist: {:#?}\n{}",
            api.requests(),
            ctl.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in resources {
        assert_eq!(api.count("watch", r, 410), 1, "{r}: {:#?}", api.requests());
        assert_eq!(lists(r), 2, "{r}: {:#?}", api.requests());
    }
    let s = converge("relist after 410 Expired", &|s| {
        s.pods == 3 && s.isolated_ingress == 1 && s.full_resyncs >= 2
    });
    assert_eq!(in_isolated(), ips(&[5]), "{s:#?}");
    api.edit(|e| e.apply(Kind::Pod, pod("kpa", "web3", "web", 6)));
    converge("event after the relist", &|s| s.isolated_ingress == 2);
    assert_eq!(in_isolated(), ips(&[5, 6]));

    // It authenticated every time and never asked for more than the role grants.
    let reqs = api.requests();
    let bad: Vec<_> = reqs
        .iter()
        .filter(|r| !matches!(r.status, 200 | 410))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for r in &reqs {
        assert!(API_VERBS.contains(&r.verb.as_str()), "{r:?}");
        assert!(
            api_access().contains(&(r.group.as_str(), r.resource.as_str())),
            "{r:?}"
        );
        // Cluster-wide collections only: /api/v1/pods, never a namespaced path.
        assert!(!r.path.contains("/namespaces/"), "{r:?}");
    }
    drop(ctl);
}
