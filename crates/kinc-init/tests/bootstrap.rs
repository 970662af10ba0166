//! The bootstrap state machine against a fake node root and a recording runner:
//! step order, the status file, the restart path, failures.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use kinc_init::bootstrap::{all_steps, step};
use kinc_init::runner::RecordingRunner;
use kinc_init::state::NodeState;
use kinc_init::{Bootstrap, InitError};
use kinc_types::status::Phase;
use kinc_types::StepState;

#[test]
fn first_boot_runs_every_step_in_order() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = node.healthy();
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();

    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(status.boot, 1);
    assert_eq!(status.cluster, "dev");
    for s in all_steps() {
        let want = if s == step::RESTORE_NODE || s == step::LOAD_IMAGES {
            StepState::Skipped
        } else {
            StepState::Done
        };
        assert_eq!(state_of(&status, s), want, "step {s}");
    }
    // No node-image.json: the Fedora image, CRI-O, nothing to preload.
    assert!(message_of(&status, step::LOAD_IMAGES).contains("CRI-O"));
    assert_eq!(
        message_of(&status, step::RENDER_KUBEADM_CONFIG),
        "CRI CRI-O at unix:///var/run/crio/crio.sock"
    );
    assert_eq!(saved_status(&node), status);
    let a = "--kubeconfig /etc/kubernetes/admin.conf";
    assert_eq!(
        calls(&node, &runner),
        vec![
            "crictl --runtime-endpoint unix:///var/run/crio/crio.sock info".to_string(),
            "kubeadm init --config /var/lib/kinc/kubeadm.yaml".to_string(),
            // The controllers only once the API server is through kubeadm init.
            "kubeadm init phase control-plane controller-manager --config /var/lib/kinc/kubeadm.yaml".to_string(),
            "kubeadm init phase control-plane scheduler --config /var/lib/kinc/kubeadm.yaml".to_string(),
            format!("kubectl {a} apply -f /usr/share/kinc/manifests/cluster"),
            format!("kubectl {a} --namespace kube-system get secret kincnet-policy-token --output json"),
            format!("kubectl {a} wait --for=condition=Ready node/kinc-dev-control-plane --timeout=1s"),
            format!("kubectl {a} --namespace kube-system wait --for=condition=Available deployment/coredns --timeout=1s"),
        ]
    );
    // The rendered files name this node and this cluster's CIDRs.
    let kubeadm = std::fs::read_to_string(node.paths.kubeadm_config()).unwrap();
    assert!(kubeadm.contains("advertiseAddress: 10.88.0.5"), "{kubeadm}");
    assert!(
        kubeadm.contains("criSocket: unix:///var/run/crio/crio.sock")
            && kubeadm.contains("containerRuntimeEndpoint: unix:///var/run/crio/crio.sock"),
        "{kubeadm}"
    );
    assert!(kubeadm.contains("podSubnet: 10.244.44.0/24"), "{kubeadm}");
    // Registered untainted: the one node runs workloads with no `kubectl taint`.
    assert!(kubeadm.contains("  taints: []\n"), "{kubeadm}");
    // kubeadm's patches for the control plane's liveness probes, where the config says.
    assert!(
        kubeadm.contains("directory: /var/lib/kinc/kubeadm-patches"),
        "{kubeadm}"
    );
    for (file, json) in kinc_init::kubeadm::probe_patches() {
        let p = node.paths.kubeadm_patches().join(&file);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), json, "{file}");
    }
    let conflist = std::fs::read_to_string(node.paths.conflist()).unwrap();
    assert!(
        conflist.contains("\"subnet\": \"10.244.44.0/24\""),
        "{conflist}"
    );
    // The exported kubeconfig is private, and /etc/kubernetes has a copy on /var.
    let exported = node.paths.exported_admin_conf();
    assert_eq!(
        std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(node
        .paths
        .etc_kubernetes_backup()
        .join("pki/ca.crt")
        .exists());
    let st = NodeState::load(&node.paths.node_state()).unwrap();
    assert!(st.initialized);
    assert_eq!(st.cluster_ip, Some(ip(5)));
}

#[test]
fn restart_with_var_kept_never_runs_kubeadm_init() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let knob = IpKnob::new(ip(5));
    boot(&node, &node.healthy(), &knob).unwrap();

    let runner = node.healthy();
    let status = boot(&node, &runner, &knob).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(status.boot, 2);
    assert_eq!(state_of(&status, step::KUBEADM_INIT), StepState::Skipped);
    assert!(status
        .step(step::KUBEADM_INIT)
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .contains("not running kubeadm init again"));
    assert_eq!(state_of(&status, step::RESTORE_NODE), StepState::Done);
    let c = calls(&node, &runner);
    assert!(c.iter().all(|l| !l.starts_with("kubeadm")), "{c:#?}");
    assert!(
        c.iter().any(|l| l.contains("wait --for=condition=Ready")),
        "{c:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(node.paths.apiserver_cert()[0].clone()).unwrap(),
        "old-cert"
    );
}

#[test]
fn restart_with_a_new_ip_regenerates_what_names_the_ip() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let knob = IpKnob::new(ip(5));
    boot(&node, &node.healthy(), &knob).unwrap();

    knob.set(ip(9));
    let runner = node.healthy();
    let status = boot(&node, &runner, &knob).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    let kubeadm = kubeadm_calls(&node, &runner);
    let cfgarg = "--config /var/lib/kinc/kubeadm.yaml";
    assert_eq!(
        kubeadm,
        vec![
            format!("kubeadm init phase certs apiserver {cfgarg}"),
            format!("kubeadm init phase control-plane apiserver {cfgarg}"),
            format!("kubeadm init phase etcd local {cfgarg}"),
            format!("kubeadm init phase kubelet-start {cfgarg}"),
        ]
    );
    // The old certificate was removed so kubeadm writes one naming the new IP.
    assert_eq!(
        std::fs::read_to_string(&node.paths.apiserver_cert()[0]).unwrap(),
        "new-cert"
    );
    assert!(!node.paths.apiserver_cert()[1].exists());
    let note = status
        .step(step::RESTORE_NODE)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(note.contains("from 10.88.0.5 to 10.88.0.9"), "{note}");
    assert!(std::fs::read_to_string(node.paths.kubeadm_config())
        .unwrap()
        .contains("advertiseAddress: 10.88.0.9"));
    assert_eq!(
        NodeState::load(&node.paths.node_state())
            .unwrap()
            .cluster_ip,
        Some(ip(9))
    );

    // Next boot at the same new IP: nothing to regenerate.
    let runner = node.healthy();
    boot(&node, &runner, &knob).unwrap();
    assert!(calls(&node, &runner)
        .iter()
        .all(|l| !l.starts_with("kubeadm")));
}

#[test]
fn recreated_container_gets_etc_kubernetes_back_from_var() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let knob = IpKnob::new(ip(5));
    boot(&node, &node.healthy(), &knob).unwrap();
    std::fs::remove_dir_all(node.paths.etc_kubernetes()).unwrap();

    let runner = node.healthy();
    let status = boot(&node, &runner, &knob).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    assert!(node.paths.admin_conf().exists());
    assert!(status
        .step(step::RESTORE_NODE)
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .contains("restored"));
    assert!(calls(&node, &runner)
        .iter()
        .all(|l| !l.starts_with("kubeadm")));
}

#[test]
fn initialised_var_without_any_kubernetes_config_fails_clearly() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let knob = IpKnob::new(ip(5));
    boot(&node, &node.healthy(), &knob).unwrap();
    std::fs::remove_dir_all(node.paths.etc_kubernetes()).unwrap();
    std::fs::remove_dir_all(node.paths.etc_kubernetes_backup()).unwrap();
    let err = boot(&node, &node.healthy(), &knob).unwrap_err();
    assert!(
        matches!(err, InitError::LostKubernetesConfig { .. }),
        "{err}"
    );
    let s = saved_status(&node);
    assert_eq!(state_of(&s, step::RESTORE_NODE), StepState::Failed);
    assert_eq!(state_of(&s, step::KUBEADM_INIT), StepState::Pending);
}

#[test]
fn failed_kubeadm_init_is_in_the_status_file_and_stops_the_bootstrap() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        (c.program == "kubeadm").then(|| {
            fail(
                1,
                "[ERROR] unable to start the control plane\ntimed out waiting for the condition",
            )
        })
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap_err();
    assert!(err.to_string().contains("kubeadm init --config"), "{err}");

    let s = saved_status(&node);
    assert_eq!(s.phase, Phase::Failed);
    let failed = s.failed_step().unwrap();
    assert_eq!(failed.name, step::KUBEADM_INIT);
    let msg = failed.message.as_deref().unwrap();
    assert!(
        msg.contains("exit 1") && msg.contains("timed out waiting for the condition"),
        "{msg}"
    );
    assert!(failed.started_at.is_some() && failed.finished_at.is_some());
    assert_eq!(state_of(&s, step::WAIT_CRI), StepState::Done);
    for later in [step::APPLY_MANIFESTS, step::WAIT_NODE_READY] {
        assert_eq!(state_of(&s, later), StepState::Pending, "{later}");
    }
    assert!(
        !NodeState::load(&node.paths.node_state())
            .unwrap()
            .initialized
    );
    assert!(calls(&node, &runner)
        .iter()
        .all(|l| !l.starts_with("kubectl")));
}

/// What kubeadm init printed on a starved node: the control plane was up, and the CoreDNS
/// addon's one request ran out of kubeadm's 10 s.
const LATE_FAILURE: &str = "[WARNING SystemVerification]: missing optional cgroups: hugetlb\n\
    error execution phase addon/coredns: unable to create a new DNS service: Post \
    \"https://192.0.0.8:6443/api/v1/namespaces/kube-system/services?timeout=10s\": net/http: \
    request canceled (Client.Timeout exceeded while awaiting headers)\n\
    To see the stack trace of this error execute with --v=5 or higher";

fn init_failing_late(root: std::path::PathBuf, addon_failures: usize) -> RecordingRunner {
    let addon_calls = std::sync::atomic::AtomicUsize::new(0);
    let r = root.clone();
    healthy_runner(root, move |c| {
        if c.program != "kubeadm" {
            return None;
        }
        if c.args[..2] == ["init", "--config"] {
            fake_kubeadm_init(&r);
            return Some(fail(1, LATE_FAILURE));
        }
        if c.args[..3] == ["init", "phase", "addon"] {
            let n = addon_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return (n < addon_failures).then(|| fail(1, "Client.Timeout exceeded"));
        }
        None
    })
}

#[test]
fn kubeadm_init_failing_after_the_control_plane_is_up_goes_on_from_that_phase() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = init_failing_late(node.root().to_path_buf(), 1);
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    let kubeadm = kubeadm_calls(&node, &runner);
    let addon = "kubeadm init phase addon all --config /var/lib/kinc/kubeadm.yaml";
    // The failed phase again (its first retry fails too, the second passes), and not
    // the phases before it, which had passed; then the controllers.
    assert_eq!(
        kubeadm,
        [
            "kubeadm init --config /var/lib/kinc/kubeadm.yaml",
            addon,
            addon,
            "kubeadm init phase control-plane controller-manager --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase control-plane scheduler --config /var/lib/kinc/kubeadm.yaml",
        ],
        "{kubeadm:#?}"
    );
    let s = saved_status(&node);
    assert_eq!(s.phase, Phase::Ready);
    assert!(
        NodeState::load(&node.paths.node_state())
            .unwrap()
            .initialized
    );
}

#[test]
fn a_late_phase_that_keeps_failing_fails_kubeadm_init() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = init_failing_late(node.root().to_path_buf(), usize::MAX);
    let err = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap_err();
    assert!(err.to_string().contains("init phase addon all"), "{err}");
    let tries = calls(&node, &runner)
        .iter()
        .filter(|l| l.contains("init phase addon"))
        .count();
    assert_eq!(tries, kinc_init::bootstrap::PHASE_ATTEMPTS as usize);
    assert_eq!(
        saved_status(&node).failed_step().unwrap().name,
        step::KUBEADM_INIT
    );
    assert!(
        !NodeState::load(&node.paths.node_state())
            .unwrap()
            .initialized
    );
}

#[test]
fn retry_after_a_half_done_init_resets_first() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    fake_kubeadm_init(node.root()); // leftovers, but the state says not initialised
    let runner = node.healthy();
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    let c = calls(&node, &runner);
    assert_eq!(
        c[1],
        "kubeadm reset --force --cri-socket unix:///var/run/crio/crio.sock"
    );
    assert_eq!(c[2], "kubeadm init --config /var/lib/kinc/kubeadm.yaml");
}

#[test]
fn crio_that_never_answers_times_out_in_wait_cri() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg).without_cri();
    let runner = node.healthy();
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up waiting for CRI-O") && err.contains("crio.sock"),
        "{err}"
    );
    assert_eq!(
        saved_status(&node).failed_step().unwrap().name,
        step::WAIT_CRI
    );
    assert!(runner.calls().is_empty());
}

#[test]
fn api_errors_while_applying_are_retried_then_fail() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        c.args
            .iter()
            .any(|a| a == "apply")
            .then(|| fail(1, "The connection to the server 127.0.0.1:6443 was refused"))
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("applying manifests") && err.contains("was refused"),
        "{err}"
    );
    let applies = runner
        .lines()
        .iter()
        .filter(|l| l.contains(" apply "))
        .count();
    assert!(applies >= 2, "apply was not retried ({applies})");
    assert_eq!(
        saved_status(&node).failed_step().unwrap().name,
        step::APPLY_MANIFESTS
    );
}

#[test]
fn a_var_of_another_cluster_is_refused() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let knob = IpKnob::new(ip(5));
    boot(&node, &node.healthy(), &knob).unwrap();
    write(
        &node.paths.mounted_config(),
        &cluster("prod", 6445).to_json(),
    );
    let err = boot(&node, &node.healthy(), &knob).unwrap_err();
    assert!(matches!(err, InitError::WrongCluster { .. }), "{err}");
    assert_eq!(
        saved_status(&node).failed_step().unwrap().name,
        step::LOAD_CONFIG
    );
}

#[test]
fn bootstrap_without_prepare_is_refused() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let runner = RecordingRunner::ok();
    let err = Bootstrap::new(node.paths.clone(), &runner)
        .bootstrap()
        .unwrap_err();
    assert!(err.to_string().contains("kinc-init prepare"), "{err}");
}

/// Rootless podman's pasta on a host without a routable address gives the node a
/// link-local address, which kubeadm refuses ("cannot use 169.254.2.1 as the bind
/// address"): the node gets RFC 7600's dummy address on a dummy link instead.
#[test]
fn link_local_node_ip_is_replaced_by_the_dummy_address() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        // The dummy link does not exist yet.
        (c.program == "ip"
            && c.args.first().map(String::as_str) == Some("link")
            && c.args.get(1).map(String::as_str) == Some("show"))
        .then(|| fail(1, "Device \"kinc-node\" does not exist."))
    });
    let knob = IpKnob::new(std::net::Ipv4Addr::new(169, 254, 2, 1));
    let status = boot(&node, &runner, &knob).unwrap();
    let ip_calls: Vec<String> = calls(&node, &runner)
        .into_iter()
        .filter(|l| l.starts_with("ip "))
        .collect();
    assert_eq!(
        ip_calls,
        vec![
            "ip link show dev kinc-node",
            "ip link add kinc-node type dummy",
            "ip address replace 192.0.0.8/32 dev kinc-node",
            "ip link set dev kinc-node up",
        ]
    );
    let yaml = std::fs::read_to_string(node.paths.kubeadm_config()).unwrap();
    assert!(yaml.contains("advertiseAddress: 192.0.0.8"), "{yaml}");
    assert!(
        yaml.contains("value: 192.0.0.8"),
        "kubelet's node-ip: {yaml}"
    );
    let note = message_of(&status, step::DETECT_NODE_IP);
    assert!(
        note.contains("192.0.0.8") && note.contains("169.254.2.1 is link-local"),
        "{note}"
    );
}

/// A routable address is used as it is, and no link is made.
#[test]
fn routable_node_ip_needs_no_dummy_link() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = node.healthy();
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert!(calls(&node, &runner).iter().all(|l| !l.starts_with("ip ")));
    assert!(kinc_init::bootstrap::usable_node_ip(ip(5)));
    assert!(!kinc_init::bootstrap::usable_node_ip(
        "169.254.0.1".parse().unwrap()
    ));
    assert!(!kinc_init::bootstrap::usable_node_ip(
        "127.0.0.1".parse().unwrap()
    ));
}

const COREDNS_PODS: &str = r#"{"apiVersion":"v1","kind":"List","metadata":{},"items":[
 {"metadata":{"name":"coredns-a"},"status":{"phase":"Pending",
   "conditions":[{"type":"Ready","status":"False","message":"containers with unready status: [coredns]"}],
   "containerStatuses":[{"name":"coredns","ready":false,"restartCount":0,"image":"x","imageID":"",
     "state":{"waiting":{"reason":"ContainerCreating","message":"failed to create pod sandbox"}}}]}},
 {"metadata":{"name":"coredns-b"},"status":{"phase":"Running",
   "containerStatuses":[{"name":"coredns","ready":false,"restartCount":3,"image":"x","imageID":"",
     "state":{"running":{}},"lastState":{"terminated":{"exitCode":1,"reason":"Error"}}}]}}]}"#;

/// A CoreDNS that never becomes Available fails its step with what its pods are doing.
#[test]
fn coredns_timeout_says_what_the_pods_are_doing() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        let line = c.args.join(" ");
        if c.program != "kubectl" {
            return None;
        }
        if line.contains("deployment/coredns") {
            return Some(fail(1, "error: timed out waiting for the condition"));
        }
        if line.contains("get pods --selector k8s-app=kube-dns") {
            return Some(kinc_init::runner::Output {
                code: Some(0),
                stdout: COREDNS_PODS.to_string(),
                ..Default::default()
            });
        }
        None
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "coredns-a Pending (coredns waiting: ContainerCreating failed to create pod sandbox"
        ) && err.contains("coredns-b Running (coredns last exit 1 Error)"),
        "{err}"
    );
    let msg = message_of(&saved_status(&node), step::WAIT_COREDNS);
    assert!(msg.contains("ContainerCreating"), "{msg}");
}

#[test]
fn pod_states_of_an_empty_or_bad_list() {
    use kinc_init::bootstrap::pod_states;
    assert_eq!(
        pod_states(r#"{"apiVersion":"v1","kind":"List","items":[]}"#),
        "none"
    );
    assert!(pod_states("nonsense").starts_with("(unreadable pod list"));
}
