//! `create` against the fake podman of [`crate::cluster::tests`] on a fake host
//! ([`crate::host::fake`]): the same verdict whoever runs the tests, on whatever machine.

use kinc_types::status::BootstrapStatus;

use super::*;
use std::cell::RefCell;

use crate::cluster::tests::{harness, Harness, Model};
use crate::cluster::var_path;
use crate::host::fake::{put, FakeClock};
use crate::host::Clock;

fn opts(name: &str) -> CreateOptions {
    CreateOptions {
        name: ClusterName::new(name).unwrap(),
        image: "localhost/kinc/node:test".into(),
        api_port: None,
        file: ClusterOptionsFile::default(),
        wait: Duration::ZERO,
        retain: false,
        skip_checks: Vec::new(),
    }
}

fn never() -> bool {
    false
}

fn create(h: &Harness, o: &CreateOptions) -> Result<Created, CreateError> {
    h.kinc.create(o, &Progress::quiet(), &never)
}

#[test]
fn create_makes_labelled_volumes_config_and_node() {
    let h = harness();
    let c = create(&h, &opts("dev")).unwrap();
    assert_eq!(
        c.mode,
        RunMode::Podman,
        "no systemd user manager in the fake"
    );
    assert!(!c.ready);
    let m = h.model.borrow();
    let (vl, _) = &m.volumes["kinc-dev-var-data"];
    assert_eq!(vl[labels::OWNER], labels::OWNER_VALUE);
    assert_eq!(vl[labels::ROLE], labels::ROLE_VAR);
    let (_, cfg_mp) = &m.volumes["kinc-dev-config"];
    let cfg = ClusterConfig::load(&cfg_mp.join(CONFIG_FILE)).unwrap();
    assert_eq!(cfg, c.config);
    let (nl, state) = &m.containers["kinc-dev-control-plane"];
    assert_eq!(state, "running");
    assert_eq!(nl[labels::API_PORT], cfg.api_port.to_string());
    assert_eq!(nl[labels::POD_SUBNET], cfg.pod_subnet.to_string());
    drop(m);
    let run = h
        .kinc
        .podman
        .runner()
        .lines()
        .into_iter()
        .find(|l| l.starts_with("podman run"))
        .unwrap();
    assert!(
        run.contains(&format!("--publish 127.0.0.1:{}:6443/tcp", cfg.api_port)),
        "{run}"
    );
    assert!(run.ends_with(" localhost/kinc/node:test"), "{run}");
    assert!(!h
        .kinc
        .podman
        .runner()
        .lines()
        .iter()
        .any(|l| l.contains(" exec ")));
    let s = crate::state::LockedState::open(&h.kinc.data_dir).unwrap();
    assert_eq!(s.state.clusters["dev"].api_port, cfg.api_port);
}

#[test]
fn two_clusters_get_distinct_ports_and_disjoint_cidrs() {
    let h = harness();
    let a = create(&h, &opts("a")).unwrap().config;
    let b = create(&h, &opts("b")).unwrap().config;
    assert_ne!(a.api_port, b.api_port);
    for x in [a.pod_subnet, a.service_subnet] {
        for y in [b.pod_subnet, b.service_subnet] {
            assert!(!x.overlaps(y), "{x} {y}");
        }
    }
}

#[test]
fn existing_or_foreign_names_are_refused_untouched() {
    let h = harness();
    create(&h, &opts("dev")).unwrap();
    assert!(matches!(
        create(&h, &opts("dev")),
        Err(CreateError::Exists(_))
    ));
    h.model.borrow_mut().containers.insert(
        "kinc-own-control-plane".into(),
        (Default::default(), "running".into()),
    );
    let e = create(&h, &opts("own")).unwrap_err();
    assert!(
        matches!(
            e,
            CreateError::Foreign {
                kind: "container",
                ..
            }
        ),
        "{e}"
    );
    assert!(h
        .model
        .borrow()
        .containers
        .contains_key("kinc-own-control-plane"));
    assert!(!h.model.borrow().volumes.contains_key("kinc-own-var-data"));
}

#[test]
fn missing_image_fails_before_anything_exists() {
    let h = harness();
    let mut o = opts("dev");
    o.image = "quay.io/nope:1".into();
    assert!(matches!(create(&h, &o), Err(CreateError::ImageMissing(_))));
    assert!(h.model.borrow().volumes.is_empty());
}

#[test]
fn failed_run_cleans_up_unless_retained() {
    let h = harness();
    h.model.borrow_mut().fail_run = true;
    let e = create(&h, &opts("dev")).unwrap_err().to_string();
    assert!(
        e.contains("podman run") && e.contains("cannot listen"),
        "{e}"
    );
    assert!(h.model.borrow().volumes.is_empty());
    let s = crate::state::LockedState::open(&h.kinc.data_dir).unwrap();
    assert!(s.state.clusters.is_empty(), "allocation released");
    drop(s);
    let mut o = opts("dev");
    o.retain = true;
    create(&h, &o).unwrap_err();
    assert_eq!(h.model.borrow().volumes.len(), 2, "--retain keeps them");
}

#[test]
fn config_file_subnets_are_checked_and_used() {
    let h = harness();
    let first = create(&h, &opts("a")).unwrap().config;
    let mut o = opts("b");
    o.file.pod_subnet = Some(first.pod_subnet);
    let e = create(&h, &o).unwrap_err().to_string();
    assert!(e.contains("overlaps cluster \"a\""), "{e}");
    o.file.pod_subnet = Some("172.30.0.0/16".parse().unwrap());
    o.file.kubernetes_version = Some("v1.33.9".into());
    let c = create(&h, &o).unwrap().config;
    assert_eq!(c.pod_subnet.to_string(), "172.30.0.0/16");
    assert_eq!(c.kubernetes_version, "v1.33.9");
}

#[test]
fn options_file_is_strict() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.yaml");
    std::fs::write(&p, "kind: ClusterConfig\napiPort: 7443\nname: dev\n").unwrap();
    let f = ClusterOptionsFile::load(&p).unwrap();
    assert_eq!(f.api_port, Some(7443));
    assert_eq!(f.name.unwrap().as_str(), "dev");
    std::fs::write(&p, "apiPortt: 1\n").unwrap();
    let e = ClusterOptionsFile::load(&p).unwrap_err().to_string();
    assert!(e.contains("c.yaml") && e.contains("apiPortt"), "{e}");
    std::fs::write(&p, "kind: Cluster\n").unwrap();
    assert!(ClusterOptionsFile::load(&p).is_err());
}

/// A created cluster, and the host path of its status file.
fn running(h: &Harness) -> (ClusterConfig, PathBuf) {
    let c = create(h, &opts("w")).unwrap().config;
    let mp = h.model.borrow().volumes["kinc-w-var-data"].1.clone();
    (c, var_path(&mp, kinc_types::status::STATUS_PATH))
}

fn wait(
    h: &Harness,
    c: &ClusterConfig,
    d: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(), CreateError> {
    h.kinc.wait_ready(c, d, &Progress::quiet(), stop)
}

#[test]
fn wait_ready_needs_ready_status_and_api() {
    let h = harness();
    let (c, status) = running(&h);
    let e = wait(&h, &c, Duration::from_millis(10), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::Timeout { step, .. } if step.contains("status file")),
        "{e}"
    );
    let mut s = BootstrapStatus::new("w", &["crio", "kubeadm-init"]);
    s.finish("crio").unwrap();
    s.start("kubeadm-init").unwrap();
    s.save(&status).unwrap();
    let e = wait(&h, &c, Duration::from_millis(10), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::Timeout { step, .. } if step.contains("kubeadm-init")),
        "{e}"
    );
    s.finish("kubeadm-init").unwrap();
    s.save(&status).unwrap();
    let e = wait(&h, &c, Duration::from_millis(10), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::Timeout { step, .. } if step.contains(&format!("API server on 127.0.0.1:{}", c.api_port))),
        "Ready but the API does not answer: {e}"
    );
    h.model.borrow_mut().answering_ports.insert(c.api_port);
    wait(&h, &c, Duration::from_secs(5), &never).unwrap();
}

#[test]
fn wait_ready_reports_failed_step_exit_and_interrupt() {
    let h = harness();
    let (c, status) = running(&h);
    h.model.borrow_mut().logs = "kubeadm: error execution phase\n".into();
    let mut s = BootstrapStatus::new("w", &["kubeadm-init"]);
    s.fail("kubeadm-init", "exit status 1").unwrap();
    s.save(&status).unwrap();
    let e = wait(&h, &c, Duration::from_secs(5), &never)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kubeadm-init")
            && e.contains("exit status 1")
            && e.contains("error execution phase"),
        "{e}"
    );
    assert!(matches!(
        wait(&h, &c, Duration::from_secs(5), &|| true),
        Err(CreateError::Interrupted)
    ));
    h.model
        .borrow_mut()
        .containers
        .get_mut("kinc-w-control-plane")
        .unwrap()
        .1 = "exited".into();
    assert!(matches!(
        wait(&h, &c, Duration::from_secs(5), &never),
        Err(CreateError::NodeExited { .. })
    ));
}

/// How many `podman ps` and `podman volume inspect` the runner saw so far.
fn podman_polls(h: &Harness) -> (usize, usize) {
    let lines = h.kinc.podman.runner().lines();
    let n = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
    (n("podman ps "), n("podman volume inspect "))
}

/// A fake clock on `h`'s host that runs `at` once, the first time it reaches `when`.
fn clock_at(h: &mut Harness, when: Duration, at: impl FnOnce() + 'static) -> FakeClock {
    let mut at = Some(at);
    let clock = FakeClock::with(move |now| {
        if now >= when {
            if let Some(f) = at.take() {
                f()
            }
        }
    });
    h.kinc.host.clock = Box::new(clock.clone());
    clock
}

/// The node container of cluster "w" stops.
fn exit_node(model: &RefCell<Model>) {
    model
        .borrow_mut()
        .containers
        .get_mut("kinc-w-control-plane")
        .unwrap()
        .1 = "exited".into();
}

#[test]
fn wait_ready_reads_the_status_every_poll_and_asks_podman_every_few_seconds() {
    let mut h = harness();
    let (c, status) = running(&h);
    let before = podman_polls(&h);
    // The node publishes its status half-way through the wait.
    let mut s = BootstrapStatus::new("w", &["wait-cri", "kubeadm-init"]);
    s.finish("wait-cri").unwrap();
    s.start("kubeadm-init").unwrap();
    let clock = clock_at(&mut h, Duration::from_secs(30), move || {
        s.save(&status).unwrap()
    });
    let wait_for = Duration::from_secs(60);
    let e = wait(&h, &c, wait_for, &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::Timeout { step, .. } if step.contains("kubeadm-init")),
        "the status written after the mountpoint was resolved is read: {e}"
    );
    let polls = (wait_for.as_millis() / STATUS_POLL.as_millis()) as u32;
    assert_eq!(clock.sleeps(), polls, "one sleep per poll");
    let after = podman_polls(&h);
    let (ps, inspect) = (after.0 - before.0, after.1 - before.1);
    // One check every 5 s, one at the deadline and one before reporting the timeout.
    let checks = (wait_for.as_secs() / NODE_CHECK_EVERY.as_secs()) as usize;
    assert!(
        (checks..=checks + 2).contains(&ps),
        "{ps} podman ps in {polls} polls"
    );
    assert_eq!(inspect, 1, "the mountpoint is resolved once");
}

#[test]
fn wait_ready_sees_a_failed_step_at_the_next_poll() {
    let mut h = harness();
    let (c, status) = running(&h);
    h.model.borrow_mut().logs = "kubeadm: error execution phase\n".into();
    let mut s = BootstrapStatus::new("w", &["kubeadm-init"]);
    s.fail("kubeadm-init", "exit status 1").unwrap();
    // Between two podman checks: only reading the file every poll sees it this soon.
    let failed_at = Duration::from_millis(31_100);
    let clock = clock_at(&mut h, failed_at, move || s.save(&status).unwrap());
    let e = wait(&h, &c, Duration::from_secs(60), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::StepFailed { step, logs, .. }
            if step == "kubeadm-init" && logs.contains("error execution phase")),
        "{e}"
    );
    assert!(clock.now() <= failed_at + STATUS_POLL, "{:?}", clock.now());
}

#[test]
fn wait_ready_detects_a_node_that_exits_while_it_waits() {
    let mut h = harness();
    let (c, status) = running(&h);
    let mut s = BootstrapStatus::new("w", &["kubeadm-init"]);
    s.start("kubeadm-init").unwrap();
    s.save(&status).unwrap();
    h.model.borrow_mut().logs = "systemd: Freezing execution.\n".into();
    let model = h.model.clone();
    let exited_at = Duration::from_secs(20);
    let clock = clock_at(&mut h, exited_at, move || exit_node(&model));
    let e = wait(&h, &c, Duration::from_secs(60), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::NodeExited { state, logs }
            if state == "exited" && logs.contains("Freezing execution")),
        "{e}"
    );
    assert!(
        clock.now() <= exited_at + NODE_CHECK_EVERY + STATUS_POLL,
        "seen within one check period: {:?}",
        clock.now()
    );

    // Stopped after the last regular check, before the deadline: the exit is reported,
    // not a timeout.
    let mut h = harness();
    let (c, _) = running(&h);
    let model = h.model.clone();
    clock_at(&mut h, Duration::from_secs(57), move || exit_node(&model));
    let e = wait(&h, &c, Duration::from_millis(58_500), &never).unwrap_err();
    assert!(matches!(&e, CreateError::NodeExited { .. }), "{e}");
    // And a node that is gone altogether.
    let h = harness();
    let (c, _) = running(&h);
    h.model.borrow_mut().containers.clear();
    let e = wait(&h, &c, Duration::from_secs(5), &never).unwrap_err();
    assert!(
        matches!(&e, CreateError::NodeExited { state, .. } if state == "gone"),
        "{e}"
    );
}

#[test]
fn wait_ready_looks_up_the_mountpoint_until_the_volume_is_there() {
    let mut h = harness();
    let (c, status) = running(&h);
    let mut s = BootstrapStatus::new("w", &["kubeadm-init"]);
    s.finish("kubeadm-init").unwrap();
    s.save(&status).unwrap();
    h.model.borrow_mut().answering_ports.insert(c.api_port);
    // podman does not list the volume at first.
    let vol = h
        .model
        .borrow_mut()
        .volumes
        .remove("kinc-w-var-data")
        .unwrap();
    let model = h.model.clone();
    let before = podman_polls(&h);
    let clock = clock_at(&mut h, Duration::from_secs(12), move || {
        model
            .borrow_mut()
            .volumes
            .insert("kinc-w-var-data".into(), vol);
    });
    wait(&h, &c, Duration::from_secs(60), &never).unwrap();
    // Asked at 0, 5, 10 s (not there) and 15 s (there), never more often.
    assert_eq!(clock.now(), Duration::from_secs(15));
    assert_eq!(podman_polls(&h).1 - before.1, 4);
}

/// Names of the blocking findings of a refused create.
fn blocked_by(e: &CreateError) -> Vec<&'static str> {
    match e {
        CreateError::Blocked(v) => v.iter().map(|f| f.check).collect(),
        other => panic!("not blocked: {other}"),
    }
}

#[test]
fn a_host_that_is_not_ready_blocks_before_anything_is_made() {
    let host = |h: &Harness| h.kinc.host.root.clone();
    // systemd's default delegation (cpu memory pids) on a cgroup v2 host.
    let h = harness();
    put(
        &host(&h),
        "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers",
        "cpu memory pids",
    );
    let e = create(&h, &opts("dev")).unwrap_err();
    assert_eq!(blocked_by(&e), ["cgroup-delegation"], "{e}");
    assert!(e.to_string().contains("not delegated: cpuset io"), "{e}");
    // cgroup v1 or hybrid: no unified hierarchy, no user@ delegation to read.
    let h = harness();
    std::fs::remove_dir_all(host(&h).join("sys/fs/cgroup")).unwrap();
    let e = create(&h, &opts("dev")).unwrap_err();
    assert_eq!(blocked_by(&e), ["cgroup-v2"], "{e}");
    // No subordinate ids for the user.
    let h = harness();
    put(&host(&h), "/etc/subuid", "bob:100000:65536\n");
    let e = create(&h, &opts("dev")).unwrap_err();
    assert_eq!(blocked_by(&e), ["subuid"], "{e}");
    // Blocked: nothing was allocated, created or run.
    assert!(h.model.borrow().volumes.is_empty());
    assert!(h.model.borrow().containers.is_empty());
    let s = crate::state::LockedState::open(&h.kinc.data_dir).unwrap();
    assert!(s.state.clusters.is_empty());
    drop(s);
    assert!(!h
        .kinc
        .podman
        .runner()
        .lines()
        .iter()
        .any(|l| l.starts_with("podman volume create") || l.starts_with("podman run")));
    // --skip-check NAME downgrades exactly that check.
    let mut o = opts("dev");
    o.skip_checks = vec!["subgid".into()];
    assert_eq!(blocked_by(&create(&h, &o).unwrap_err()), ["subuid"]);
    o.skip_checks = vec!["subuid".into()];
    create(&h, &o).unwrap();
}

#[test]
fn root_runs_the_node_with_podman_run_without_asking_systemd() {
    let mut h = harness();
    h.kinc.host.uid = 0;
    h.kinc.host.user = "root".into();
    put(
        &h.kinc.host.root,
        "/proc/sys/kernel/keys/root_maxkeys",
        "1000000\n",
    );
    let c = create(&h, &opts("dev")).unwrap();
    assert_eq!(c.mode, RunMode::Podman);
    let lines = h.kinc.podman.runner().lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("systemctl")),
        "{lines:?}"
    );
    // A rootless user asks its manager (the fake has none).
    let h = harness();
    create(&h, &opts("dev")).unwrap();
    let lines = h.kinc.podman.runner().lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "systemctl --user is-system-running"),
        "{lines:?}"
    );
}

#[test]
fn busy_host_ports_are_skipped_or_refused() {
    let h = harness();
    h.model.borrow_mut().busy_ports.extend([6443, 6444, 7000]);
    assert_eq!(create(&h, &opts("a")).unwrap().config.api_port, 6445);
    let mut o = opts("b");
    o.api_port = Some(7000);
    let e = create(&h, &o).unwrap_err();
    assert!(
        matches!(e, CreateError::Alloc(AllocError::PortInUse { port: 7000 })),
        "{e}"
    );
    o.api_port = Some(7001);
    assert_eq!(create(&h, &o).unwrap().config.api_port, 7001);
}

#[test]
fn dev_fuse_is_passed_only_when_the_host_has_it() {
    let run_line = |h: &Harness| {
        h.kinc
            .podman
            .runner()
            .lines()
            .into_iter()
            .find(|l| l.starts_with("podman run"))
            .unwrap()
    };
    let h = harness();
    create(&h, &opts("dev")).unwrap();
    assert!(
        run_line(&h).contains("--device /dev/fuse"),
        "{}",
        run_line(&h)
    );
    let h = harness();
    std::fs::remove_file(h.kinc.host.root.join("dev/fuse")).unwrap();
    create(&h, &opts("dev")).unwrap();
    assert!(!run_line(&h).contains("/dev/fuse"), "{}", run_line(&h));
}
