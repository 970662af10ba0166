//! The offline image (containerd, preloaded OCI archives) against a fake node root and a
//! recording runner whose `ctr` keeps a small image store: the kubeadm config names
//! containerd's socket, `wait-cri` asks containerd, `load-images` imports exactly what is
//! missing and pins it, and what goes wrong is in the status file.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use kinc_init::bootstrap::{all_steps, step, IMPORT_WORKERS};
use kinc_init::InitError;
use kinc_types::node::NODE_IMAGE_INFO;
use kinc_types::status::Phase;
use kinc_types::StepState;

const SOCK: &str = "/run/containerd/containerd.sock";
const IMAGES: &str = "/usr/share/kinc/images";

fn ctr(rest: &str) -> String {
    format!("ctr --address {SOCK} --namespace k8s.io {rest}")
}

fn import(file: &str) -> String {
    ctr(&format!(
        "images import --local --snapshotter overlayfs {IMAGES}/{file}"
    ))
}

fn label(name: &str) -> String {
    ctr(&format!(
        "images label {name} io.cri-containerd.pinned=pinned"
    ))
}

fn list() -> String {
    ctr(&format!("images list --quiet {PINNED_FILTER}"))
}

/// Asserts that the import and label calls among `calls` are exactly one import and one
/// label of each of `images` (name, file), each label after its image's import: what
/// `load-images` promises whatever the interleaving of its concurrent imports.
#[track_caller]
fn assert_each_imported_then_pinned(calls: &[String], images: &[(&str, &str)]) {
    let at =
        |line: &str| -> Vec<usize> { (0..calls.len()).filter(|&i| calls[i] == line).collect() };
    for (name, file) in images {
        let (imports, labels) = (at(&import(file)), at(&label(name)));
        assert!(
            imports.len() == 1 && labels.len() == 1 && imports[0] < labels[0],
            "{file}: imports at {imports:?}, labels at {labels:?}: {calls:#?}"
        );
    }
    let ours = calls
        .iter()
        .filter(|l| l.contains(" images import ") || l.contains(" images label "))
        .count();
    assert_eq!(
        ours,
        2 * images.len(),
        "imports or labels of other images: {calls:#?}"
    );
}

/// (name, file) of `n` preloaded images, files in the order load-images sorts them.
fn many_images(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("registry.k8s.io/image-{i}:v1"),
                format!("image-{i}.tar"),
            )
        })
        .collect()
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(n, f)| (n.as_str(), f.as_str())).collect()
}

fn ctr_calls(node: &FakeNode, runner: &kinc_init::runner::RecordingRunner) -> Vec<String> {
    calls(node, runner)
        .into_iter()
        .filter(|l| l.starts_with("ctr"))
        .collect()
}

#[test]
fn first_boot_waits_for_containerd_imports_and_pins_then_runs_kubeadm() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, APISERVER]);
    let runner = node.healthy();
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    for s in all_steps() {
        let want = if s == step::RESTORE_NODE {
            StepState::Skipped
        } else {
            StepState::Done
        };
        assert_eq!(state_of(&status, s), want, "step {s}");
    }
    // containerd asked, then every archive imported and pinned after its import (in
    // whatever interleaving), all before kubeadm.
    let c = calls(&node, &runner);
    assert_eq!(c[..2], [format!("ctr --address {SOCK} version"), list()]);
    assert_each_imported_then_pinned(&c[2..6], &[APISERVER, PAUSE]);
    assert_eq!(c[6], "kubeadm init --config /var/lib/kinc/kubeadm.yaml");
    assert!(c.iter().all(|l| !l.starts_with("crictl")), "{c:#?}");
    assert_eq!(
        message_of(&status, step::LOAD_IMAGES),
        format!(
            "imported and pinned 2 of 2 preloaded images: {}, {}",
            APISERVER.0, PAUSE.0
        )
    );
    assert_eq!(
        node.containerd_images(),
        [(APISERVER.0.to_string(), true), (PAUSE.0.to_string(), true)].into()
    );
}

#[test]
fn kubeadm_config_names_the_containerd_socket() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    let status = boot(&node, &node.healthy(), &IpKnob::new(ip(5))).unwrap();
    let kubeadm = std::fs::read_to_string(node.paths.kubeadm_config()).unwrap();
    assert!(
        kubeadm.contains("criSocket: unix:///run/containerd/containerd.sock")
            && kubeadm.contains("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock")
            && !kubeadm.contains("crio"),
        "{kubeadm}"
    );
    assert_eq!(
        message_of(&status, step::RENDER_KUBEADM_CONFIG),
        "CRI containerd at unix:///run/containerd/containerd.sock"
    );
}

#[test]
fn only_missing_images_are_imported_and_a_second_boot_imports_nothing() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, APISERVER]);
    node.containerd_has(PAUSE.0, true);
    let knob = IpKnob::new(ip(5));
    let runner = node.healthy();
    let status = boot(&node, &runner, &knob).unwrap();
    assert_eq!(
        ctr_calls(&node, &runner),
        [
            format!("ctr --address {SOCK} version"),
            list(),
            import("kube-apiserver.tar"),
            label(APISERVER.0),
        ]
    );
    assert_eq!(
        message_of(&status, step::LOAD_IMAGES),
        format!(
            "imported and pinned 1 of 2 preloaded images: {}",
            APISERVER.0
        )
    );

    let runner = node.healthy();
    let status = boot(&node, &runner, &knob).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(state_of(&status, step::LOAD_IMAGES), StepState::Done);
    assert_eq!(
        ctr_calls(&node, &runner),
        [format!("ctr --address {SOCK} version"), list()]
    );
    assert_eq!(
        message_of(&status, step::LOAD_IMAGES),
        "all 2 preloaded images already in containerd (pinned); nothing imported"
    );
}

/// The four Kubernetes images share one archive (one copy of their common layer): it is
/// imported once and each image that was missing is pinned.
#[test]
fn an_archive_of_several_images_is_imported_once_and_each_missing_one_pinned() {
    const SCHED: (&str, &str) = ("registry.k8s.io/kube-scheduler:v1.33.13", "kubernetes.tar");
    const CM: (&str, &str) = (
        "registry.k8s.io/kube-controller-manager:v1.33.13",
        "kubernetes.tar",
    );
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, SCHED, CM]);
    let runner = node.healthy();
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(status.phase, Phase::Ready);
    let c = ctr_calls(&node, &runner);
    let imports: Vec<&String> = c.iter().filter(|l| l.contains(" import ")).collect();
    assert_eq!(
        imports,
        [&import("kubernetes.tar"), &import(PAUSE.1)],
        "{c:#?}"
    );
    let at = |l: &str| c.iter().position(|x| x == l).unwrap();
    assert!(at(&import("kubernetes.tar")) < at(&label(SCHED.0)));
    assert!(at(&import("kubernetes.tar")) < at(&label(CM.0)));
    assert!(node.containerd_images().values().all(|pinned| *pinned));
    assert_eq!(node.containerd_images().len(), 3);

    // Only one of the two missing: the archive is imported again, only that one pinned.
    let node = FakeNode::containerd(&cfg, &[PAUSE, SCHED, CM]);
    node.containerd_has(PAUSE.0, true);
    node.containerd_has(SCHED.0, true);
    let runner = node.healthy();
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(
        ctr_calls(&node, &runner)[2..],
        [import("kubernetes.tar"), label(CM.0)]
    );
}

#[test]
fn an_image_imported_but_never_pinned_is_imported_and_pinned_again() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, APISERVER]);
    node.containerd_has(PAUSE.0, true);
    node.containerd_has(APISERVER.0, false);
    let runner = node.healthy();
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(
        ctr_calls(&node, &runner)[2..],
        [import("kube-apiserver.tar"), label(APISERVER.0)]
    );
    assert!(node.containerd_images()[APISERVER.0]);
}

#[test]
fn a_failing_import_fails_load_images_with_the_command_and_stderr() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, APISERVER]);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        (c.program == "ctr" && c.args.iter().any(|a| a.ends_with("pause.tar"))).then(|| {
            fail(
                1,
                "ctr: failed to extract layer sha256:1234: operation not permitted",
            )
        })
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap_err();
    assert!(matches!(err, InitError::Run(_)), "{err}");

    let s = saved_status(&node);
    assert_eq!(s.phase, Phase::Failed);
    let failed = s.failed_step().unwrap();
    assert_eq!(failed.name, step::LOAD_IMAGES);
    let msg = failed.message.as_deref().unwrap();
    let root = format!("{}/", node.root().display());
    assert!(
        msg.replace(&root, "/").contains(&import("pause.tar"))
            && msg.contains("exit 1")
            && msg.contains("operation not permitted"),
        "{msg}"
    );
    // The failed archive is not pinned; the other one, imported alongside, was imported
    // and pinned or not started at all, never left half done by load-images.
    let c = ctr_calls(&node, &runner);
    assert!(c.contains(&import("pause.tar")), "{c:#?}");
    assert!(!c.contains(&label(PAUSE.0)), "{c:#?}");
    if c.contains(&import("kube-apiserver.tar")) {
        assert_each_imported_then_pinned(
            &c.into_iter()
                .filter(|l| !l.ends_with("pause.tar"))
                .collect::<Vec<_>>(),
            &[APISERVER],
        );
    }
    assert_eq!(state_of(&s, step::KUBEADM_INIT), StepState::Pending);
    assert!(calls(&node, &runner)
        .iter()
        .all(|l| !l.starts_with("kubeadm")));
}

#[test]
fn missing_images_are_imported_a_few_at_a_time() {
    let cfg = cluster("dev", 6444);
    let images = many_images(9);
    let node = FakeNode::containerd(&cfg, &as_refs(&images));
    // Each import holds until a second one runs (or 5 s pass, when they never overlap),
    // and the most running at once is kept.
    let running = Arc::new(Mutex::new((0usize, 0usize)));
    let overlap = Arc::new(Condvar::new());
    let (r, o) = (running.clone(), overlap.clone());
    let root = node.root().to_path_buf();
    let runner = healthy_runner(root.clone(), move |c| {
        if !c.args.iter().any(|a| a == "import") {
            return None;
        }
        {
            let mut g = r.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
            o.notify_all();
            let (_g, _) = o
                .wait_timeout_while(g, Duration::from_secs(5), |(_, max)| *max < 2)
                .unwrap();
        }
        let out = fake_ctr(&root, &c.args);
        r.lock().unwrap().0 -= 1;
        Some(out)
    });
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    let most = running.lock().unwrap().1;
    assert!(
        (2..=IMPORT_WORKERS).contains(&most),
        "{most} imports at once, want 2 to {IMPORT_WORKERS}"
    );
    assert_each_imported_then_pinned(&calls(&node, &runner), &as_refs(&images));
    assert!(node.containerd_images().values().all(|pinned| *pinned));
    let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        message_of(&status, step::LOAD_IMAGES),
        format!(
            "imported and pinned 9 of 9 preloaded images: {}",
            names.join(", ")
        )
    );
}

#[test]
fn the_error_names_the_first_failing_archive_in_list_order_and_stops_new_imports() {
    let cfg = cluster("dev", 6444);
    let images = many_images(9);
    let node = FakeNode::containerd(&cfg, &as_refs(&images));
    // image-1 fails late, image-2 at once: the error is image-1's all the same. Every
    // other import takes a while, so a failure is recorded before a worker is free.
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        let archive = c.args.iter().find(|a| a.ends_with(".tar"))?;
        if archive.ends_with("image-1.tar") {
            std::thread::sleep(Duration::from_millis(200));
            return Some(fail(1, "ctr: image-1: unexpected EOF"));
        }
        if archive.ends_with("image-2.tar") {
            return Some(fail(1, "ctr: image-2: no space left on device"));
        }
        std::thread::sleep(Duration::from_millis(300));
        None
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    let root = format!("{}/", node.root().display());
    assert!(
        err.replace(&root, "/").contains(&import("image-1.tar")) && err.contains("unexpected EOF"),
        "{err}"
    );
    let s = saved_status(&node);
    assert_eq!(s.failed_step().unwrap().name, step::LOAD_IMAGES);
    let c = ctr_calls(&node, &runner);
    let imports = c.iter().filter(|l| l.contains(" images import ")).count();
    assert!(
        imports <= IMPORT_WORKERS,
        "{imports} imports started after the first failure: {c:#?}"
    );
    assert!(!c.contains(&label(&images[1].0)) && !c.contains(&label(&images[2].0)));
    assert!(calls(&node, &runner)
        .iter()
        .all(|l| !l.starts_with("kubeadm")));
}

#[test]
fn a_failing_label_fails_load_images() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        (c.program == "ctr" && c.args.iter().any(|a| a == "label"))
            .then(|| fail(1, "ctr: image \"registry.k8s.io/pause:3.10\": not found"))
    });
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap_err();
    let s = saved_status(&node);
    let failed = s.failed_step().unwrap();
    assert_eq!(failed.name, step::LOAD_IMAGES);
    assert!(
        failed.message.as_deref().unwrap().contains("not found"),
        "{failed:?}"
    );
}

#[test]
fn an_archive_not_in_images_json_fails_before_anything_is_imported() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    write(&node.images_dir().join("coredns.tar"), "an OCI archive");
    let runner = node.healthy();
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("coredns.tar is not listed in") && err.contains("images.json"),
        "{err}"
    );
    assert_eq!(
        saved_status(&node).failed_step().unwrap().name,
        step::LOAD_IMAGES
    );
    assert_eq!(
        ctr_calls(&node, &runner),
        [format!("ctr --address {SOCK} version")]
    );
}

#[test]
fn a_listed_archive_that_is_missing_fails_with_its_path() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE, APISERVER]);
    std::fs::remove_file(node.images_dir().join("pause.tar")).unwrap();
    let runner = node.healthy();
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{}/pause.tar", node.images_dir().display())),
        "{err}"
    );
    assert!(ctr_calls(&node, &runner)
        .iter()
        .all(|l| !l.contains(" import ")));
}

#[test]
fn containerd_without_an_images_dir_skips_load_images() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[]);
    write(&node.paths.node_image_info(), r#"{"cri": "containerd"}"#);
    let runner = node.healthy();
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(state_of(&status, step::LOAD_IMAGES), StepState::Skipped);
    assert!(message_of(&status, step::LOAD_IMAGES).contains("no imagesDir"));
    assert_eq!(
        ctr_calls(&node, &runner),
        [format!("ctr --address {SOCK} version")]
    );
}

#[test]
fn crio_with_an_images_dir_skips_load_images() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::new(&cfg);
    write(
        &node.paths.node_image_info(),
        r#"{"cri": "crio", "imagesDir": "/usr/share/kinc/images"}"#,
    );
    let runner = node.healthy();
    let status = boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    assert_eq!(state_of(&status, step::LOAD_IMAGES), StepState::Skipped);
    assert!(message_of(&status, step::LOAD_IMAGES).contains("CRI-O"));
    assert!(ctr_calls(&node, &runner).is_empty());
}

#[test]
fn containerd_that_never_answers_times_out_in_wait_cri() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]).without_cri();
    let runner = node.healthy();
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up waiting for containerd") && err.contains("containerd.sock"),
        "{err}"
    );
    let s = saved_status(&node);
    assert_eq!(s.failed_step().unwrap().name, step::WAIT_CRI);
    assert_eq!(state_of(&s, step::LOAD_IMAGES), StepState::Pending);
    assert!(runner.calls().is_empty());
}

#[test]
fn containerd_socket_up_but_ctr_failing_times_out_with_its_stderr() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    let runner = healthy_runner(node.root().to_path_buf(), |c| {
        (c.program == "ctr").then(|| fail(1, "ctr: connection error: not serving yet"))
    });
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up waiting for containerd") && err.contains("not serving yet"),
        "{err}"
    );
    assert!(runner.lines().len() >= 2, "version was not retried");
}

#[test]
fn malformed_node_image_json_fails_prepare_at_load_config() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    write(&node.paths.node_image_info(), r#"{"cri": "docker"}"#);
    let runner = node.healthy();
    let err = boot(&node, &runner, &IpKnob::new(ip(5)))
        .unwrap_err()
        .to_string();
    let path = node.paths.node_image_info().display().to_string();
    assert!(path.ends_with(NODE_IMAGE_INFO));
    assert!(
        err.contains(&format!("parsing node image info {path}"))
            && err.contains("unknown variant `docker`"),
        "{err}"
    );
    let s = saved_status(&node);
    let failed = s.failed_step().unwrap();
    assert_eq!(failed.name, step::LOAD_CONFIG);
    assert!(failed.message.as_deref().unwrap().contains(&path));
    assert!(!node.paths.kubeadm_config().exists());
    assert!(runner.calls().is_empty());
}

#[test]
fn retry_after_a_half_done_init_resets_with_the_containerd_socket() {
    let cfg = cluster("dev", 6444);
    let node = FakeNode::containerd(&cfg, &[PAUSE]);
    fake_kubeadm_init(node.root());
    let runner = node.healthy();
    boot(&node, &runner, &IpKnob::new(ip(5))).unwrap();
    let kubeadm = kubeadm_calls(&node, &runner);
    assert_eq!(
        kubeadm,
        [
            "kubeadm reset --force --cri-socket unix:///run/containerd/containerd.sock",
            "kubeadm init --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase control-plane controller-manager --config /var/lib/kinc/kubeadm.yaml",
            "kubeadm init phase control-plane scheduler --config /var/lib/kinc/kubeadm.yaml",
        ]
    );
}
