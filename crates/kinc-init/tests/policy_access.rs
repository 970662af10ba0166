//! The write-policy-kubeconfig step against a fake node root and a recording runner: the
//! kincnet-policy controller's kubeconfig holds the ServiceAccount token and the admin
//! kubeconfig's cluster, is private, survives restarts unchanged, and waits for the token.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use kinc_init::bootstrap::step;
use kinc_init::policy::{self, PolicyAccessError};
use kinc_init::runner::{Output, RecordingRunner};
use kinc_init::{Bootstrap, InitError};
use kinc_types::status::Phase;
use kinc_types::{BootstrapStatus, StepState};
use kube_client::config::Kubeconfig;
use secrecy::ExposeSecret;

fn boot(node: &FakeNode, runner: &RecordingRunner) -> Result<BootstrapStatus, InitError> {
    Bootstrap::new(node.paths.clone(), runner)
        .with_timeouts(fast())
        .with_node_ip(|| Ok(ip(5)))
        .run_all()
}

fn note(s: &BootstrapStatus) -> String {
    s.step(step::WRITE_POLICY_KUBECONFIG)
        .unwrap()
        .message
        .clone()
        .unwrap_or_default()
}

#[test]
fn first_boot_writes_a_private_kubeconfig_with_the_token_and_the_admin_cluster() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let runner = node.healthy();
    let s = boot(&node, &runner).unwrap();
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(
        s.step(step::WRITE_POLICY_KUBECONFIG).unwrap().state,
        StepState::Done
    );
    assert!(note(&s).starts_with("wrote /etc/kinc/kincnet-policy.kubeconfig"));

    let path = node.paths.policy_kubeconfig();
    assert_eq!(path, node.root().join("etc/kinc/kincnet-policy.kubeconfig"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Read back with the types kincnet-policy reads it with.
    let kc = Kubeconfig::read_from(&path).unwrap();
    let admin = Kubeconfig::from_yaml(ADMIN_CONF).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some(policy::KUBECONFIG_NAME));
    let (c, a) = (
        kc.clusters[0].cluster.as_ref().unwrap(),
        admin.clusters[0].cluster.as_ref().unwrap(),
    );
    assert_eq!(c.server, a.server);
    assert_eq!(c.certificate_authority_data, a.certificate_authority_data);
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(user.token.as_ref().unwrap().expose_secret(), SA_TOKEN);
    assert!(user.client_certificate_data.is_none() && user.client_key_data.is_none());
    // No temp file left beside it (config/ is the mounted cluster config).
    let mut names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["config", "kincnet-policy.kubeconfig"]);
}

#[test]
fn a_restart_leaves_it_unchanged_and_a_recreated_container_gets_it_back() {
    let node = FakeNode::new(&cluster("dev", 6444));
    boot(&node, &node.healthy()).unwrap();
    let path = node.paths.policy_kubeconfig();
    let first = std::fs::read(&path).unwrap();

    let s = boot(&node, &node.healthy()).unwrap();
    assert_eq!(s.boot, 2);
    assert_eq!(note(&s), "/etc/kinc/kincnet-policy.kubeconfig unchanged");

    // A recreated container has a fresh /etc: the file comes back, the same.
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir_all(node.paths.etc_kubernetes()).unwrap();
    let s = boot(&node, &node.healthy()).unwrap();
    assert_eq!(s.phase, Phase::Ready);
    assert!(note(&s).starts_with("wrote"), "{}", note(&s));
    assert_eq!(std::fs::read(&path).unwrap(), first);
}

#[test]
fn waits_until_kube_controller_manager_issued_the_token() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let asked = Arc::new(AtomicUsize::new(0));
    let n = asked.clone();
    // NotFound first (manifests just applied), then a Secret without data, then the token.
    let runner = healthy_runner(node.root().to_path_buf(), move |c| {
        if !is_get_token_secret(c) {
            return None;
        }
        Some(match n.fetch_add(1, Ordering::SeqCst) {
            0 => fail(
                1,
                "Error from server (NotFound): secrets \"kincnet-policy-token\" not found",
            ),
            1 | 2 => Output {
                code: Some(0),
                stdout: token_secret_json(None),
                ..Output::default()
            },
            _ => Output {
                code: Some(0),
                stdout: token_secret_json(Some("late-token")),
                ..Output::default()
            },
        })
    });
    let s = boot(&node, &runner).unwrap();
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(asked.load(Ordering::SeqCst), 4);
    let kc = Kubeconfig::read_from(node.paths.policy_kubeconfig()).unwrap();
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(user.token.as_ref().unwrap().expose_secret(), "late-token");
}

#[test]
fn a_token_that_never_comes_fails_the_step_and_writes_nothing() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        is_get_token_secret(c).then(|| Output {
            code: Some(0),
            stdout: token_secret_json(None),
            ..Output::default()
        })
    });
    let err = boot(&node, &runner).unwrap_err();
    assert!(
        matches!(&err, InitError::Timeout { what, .. } if what.contains("kincnet-policy")),
        "{err}"
    );
    let s = BootstrapStatus::load(&node.paths.status()).unwrap();
    assert_eq!(s.phase, Phase::Failed);
    let failed = s.failed_step().unwrap();
    assert_eq!(failed.name, step::WRITE_POLICY_KUBECONFIG);
    let msg = failed.message.as_deref().unwrap();
    assert!(msg.contains("has no data.token yet"), "{msg}");
    assert_eq!(
        s.step(step::WAIT_NODE_READY).unwrap().state,
        StepState::Pending
    );
    assert!(!node.paths.policy_kubeconfig().exists());
}

#[test]
fn a_broken_admin_kubeconfig_is_named_in_the_status() {
    let node = FakeNode::new(&cluster("dev", 6444));
    let root = node.root().to_path_buf();
    let runner = healthy_runner(root.clone(), move |c| {
        // kubeadm init "succeeds" but leaves an admin.conf without a current context.
        if c.program == "kubeadm" {
            fake_kubeadm_init(&root);
            write(
                &root.join("etc/kubernetes/admin.conf"),
                "apiVersion: v1\nkind: Config\n",
            );
            return Some(ok());
        }
        None
    });
    let err = boot(&node, &runner).unwrap_err();
    assert!(
        matches!(
            err,
            InitError::PolicyAccess(PolicyAccessError::AdminContent { .. })
        ),
        "{err}"
    );
    let s = BootstrapStatus::load(&node.paths.status()).unwrap();
    let msg = s.failed_step().unwrap().message.clone().unwrap();
    assert!(
        msg.contains("etc/kubernetes/admin.conf: no current-context"),
        "{msg}"
    );
}

/// The image's units name the file this step writes (they are plain systemd text, so
/// this is where the path is held to the constant).
#[test]
fn the_image_units_start_the_controller_with_this_kubeconfig() {
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../image/files/etc/systemd/system");
    let read = |f: &str| std::fs::read_to_string(units.join(f)).unwrap();
    let path_unit = read("kincnet-policy.path");
    assert!(
        path_unit
            .lines()
            .any(|l| l == format!("PathExists={}", policy::POLICY_KUBECONFIG)),
        "{path_unit}"
    );
    let service = read("kincnet-policy.service");
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/kincnet-policy");
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .map(|i| args[i + 1])
            .unwrap_or_else(|| panic!("{flag} missing in {exec}"))
    };
    assert_eq!(after("--kubeconfig"), policy::POLICY_KUBECONFIG);
    // kincnet's own table, where the policy chains must go.
    assert_eq!(after("--table"), kincnet::firewall::TABLE);
    // kincnet-policy's default table is the shared constant, and that is kincnet's.
    assert_eq!(kinc_types::node::KINCNET_TABLE, kincnet::firewall::TABLE);
}
