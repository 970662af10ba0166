//! Provider logic against a small in-memory podman (a [`FakeRunner`] answering from a
//! model), so arguments, label filters and cleanup are checked without podman.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::*;
use crate::runner::{CmdOutput, CommandLine, FakeRunner};

#[derive(Default)]
pub struct Model {
    /// name -> (labels, mountpoint)
    pub volumes: BTreeMap<String, (BTreeMap<String, String>, PathBuf)>,
    /// name -> (labels, state)
    pub containers: BTreeMap<String, (BTreeMap<String, String>, String)>,
    pub vol_root: PathBuf,
    pub fail_run: bool,
    pub logs: String,
    /// (container, unit file): the container exists only while its Quadlet unit file
    /// does, as when removing and stopping the unit removes the container.
    pub quadlet_node: Option<(String, PathBuf)>,
    /// The node's node image info file; None: no such file (a CRI-O node).
    pub node_image_info: Option<String>,
    /// The host directory behind the node's `/var`, where importers find archives.
    pub node_var: Option<PathBuf>,
    /// Mount destinations of every container (`container inspect`).
    pub mounts: Vec<String>,
    /// Images `crictl inspecti` finds in the node.
    pub crictl_images: Vec<String>,
    /// stderr of every `ctr` in the node; None: ctr succeeds.
    pub ctr_fails: Option<String>,
    /// (importer, content of the archive it was given) for each ctr or skopeo run.
    pub imported: Vec<(String, String)>,
    /// 127.0.0.1 ports something else on the host listens on.
    pub busy_ports: BTreeSet<u16>,
    /// 127.0.0.1 ports where a node's API server accepts connections.
    pub answering_ports: BTreeSet<u16>,
}

fn labels_of(args: &[String]) -> BTreeMap<String, String> {
    args.windows(2)
        .filter(|w| w[0] == "--label")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|f| {
        let kv = f.trim_start_matches("label=");
        let (k, v) = kv.split_once('=').unwrap();
        labels.get(k).map(String::as_str) == Some(v)
    })
}

fn filters(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "--filter")
        .map(|w| w[1].clone())
        .collect()
}

impl Model {
    fn answer(&mut self, c: &CommandLine) -> CmdOutput {
        let a: Vec<&str> = c.args.iter().map(String::as_str).collect();
        if c.program != "podman" {
            return CmdOutput::fail(1, "Failed to connect to bus: No medium found");
        }
        match a.as_slice() {
            ["version", ..] => CmdOutput::ok("4.3.1\n"),
            ["info", ..] => CmdOutput::ok(format!(
                r#"{{"store":{{"graphRoot":"{}"}},"host":{{"security":{{"rootless":false}}}}}}"#,
                self.vol_root.display()
            )),
            ["image", "exists", img] => {
                if img.starts_with("localhost/") {
                    CmdOutput::ok("")
                } else {
                    CmdOutput::fail(1, "")
                }
            }
            ["container", "exists", n] => {
                if self.containers.contains_key(*n) {
                    CmdOutput::ok("")
                } else {
                    CmdOutput::fail(1, "")
                }
            }
            ["volume", "exists", n] => {
                if self.volumes.contains_key(*n) {
                    CmdOutput::ok("")
                } else {
                    CmdOutput::fail(1, "")
                }
            }
            ["volume", "create", ..] => {
                let name = c.args.last().unwrap().clone();
                if self.volumes.contains_key(&name) {
                    return CmdOutput::fail(125, "volume already exists");
                }
                let mp = self.vol_root.join(&name).join("_data");
                std::fs::create_dir_all(&mp).unwrap();
                self.volumes.insert(name.clone(), (labels_of(&c.args), mp));
                CmdOutput::ok(name)
            }
            ["volume", "inspect", "--format", "json", n] => match self.volumes.get(*n) {
                Some((l, mp)) => CmdOutput::ok(
                    serde_json::json!([{"Name": n, "Mountpoint": mp, "Labels": l}]).to_string(),
                ),
                None => CmdOutput::fail(125, "no such volume"),
            },
            ["volume", "ls", ..] => {
                let f = filters(&c.args);
                let v: Vec<_> = self
                    .volumes
                    .iter()
                    .filter(|(_, (l, _))| matches(&f, l))
                    .map(|(n, (l, mp))| serde_json::json!({"Name": n, "Mountpoint": mp, "Labels": l}))
                    .collect();
                CmdOutput::ok(serde_json::to_string(&v).unwrap())
            }
            ["volume", "rm", "--force", names @ ..] => {
                for n in names {
                    self.volumes.remove(*n);
                }
                CmdOutput::ok("")
            }
            ["ps", ..] => {
                let f = filters(&c.args);
                if let Some((n, unit)) = &self.quadlet_node {
                    if !unit.exists() {
                        self.containers.remove(n);
                    }
                }
                let v: Vec<_> = self
                    .containers
                    .iter()
                    .filter(|(_, (l, _))| matches(&f, l))
                    .map(|(n, (l, s))| {
                        serde_json::json!({"Id": format!("id-{n}"), "Names": [n], "State": s, "Labels": l, "Image": "img"})
                    })
                    .collect();
                CmdOutput::ok(serde_json::to_string(&v).unwrap())
            }
            ["rm", "--force", "--ignore", "--time", "2", ids @ ..] => {
                for id in ids {
                    let n = id.trim_start_matches("id-");
                    self.containers.remove(n);
                }
                CmdOutput::ok("")
            }
            ["run", ..] => {
                if self.fail_run {
                    return CmdOutput::fail(126, "Error: cannot listen on the TCP port");
                }
                let name = c.args[c.args.iter().position(|x| x == "--name").unwrap() + 1].clone();
                self.containers
                    .insert(name.clone(), (labels_of(&c.args), "running".into()));
                CmdOutput::ok(format!("id-{name}\n"))
            }
            ["logs", ..] => CmdOutput::ok(self.logs.clone()),
            ["container", "inspect", "--format", "json", _] => {
                let m: Vec<_> = self
                    .mounts
                    .iter()
                    .map(|d| serde_json::json!({"Destination": d}))
                    .collect();
                CmdOutput::ok(serde_json::json!([{ "Mounts": m }]).to_string())
            }
            // The archive holds its format and image, so an importer's read shows both.
            ["save", "--format", format, "-o", path, img] => {
                match std::fs::write(path, format!("{format} {img}")) {
                    Ok(()) => CmdOutput::ok(""),
                    Err(e) => CmdOutput::fail(125, format!("Error: writing {path}: {e}")),
                }
            }
            ["exec", _, "cat", path] => match &self.node_image_info {
                Some(text) if *path == kinc_types::node::NODE_IMAGE_INFO => {
                    CmdOutput::ok(text.clone())
                }
                _ => CmdOutput::fail(1, format!("cat: {path}: No such file or directory")),
            },
            ["exec", _, "crictl", "inspecti", img] => {
                if self.crictl_images.iter().any(|i| i == img) {
                    CmdOutput::ok("{}")
                } else {
                    CmdOutput::fail(1, "no such image")
                }
            }
            ["exec", _, importer @ ("ctr" | "skopeo"), args @ ..] => {
                // The archive is the argument naming a file under the node's /var.
                let content = args
                    .iter()
                    .find_map(|a| a.split_once("/var/"))
                    .and_then(|(_, rest)| {
                        std::fs::read_to_string(self.node_var.as_ref()?.join(rest)).ok()
                    })
                    .unwrap_or_else(|| "no archive".into());
                self.imported.push((importer.to_string(), content));
                match (&self.ctr_fails, *importer) {
                    (Some(stderr), "ctr") => CmdOutput::fail(1, stderr.clone()),
                    _ => CmdOutput::ok(""),
                }
            }
            _ => CmdOutput::fail(125, format!("fake podman: unexpected {c}")),
        }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub model: Rc<RefCell<Model>>,
    pub kinc: Kinc<FakeRunner>,
}

pub fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let model = Rc::new(RefCell::new(Model {
        vol_root: dir.path().join("volumes"),
        ..Default::default()
    }));
    let m = model.clone();
    let runner = FakeRunner::with(move |c| m.borrow_mut().answer(c));
    let routes = dir.path().join("route");
    std::fs::write(
        &routes,
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
    )
    .unwrap();
    // A healthy rootless host whose ports are the model's.
    let mut host = crate::host::fake::healthy(&dir.path().join("host"));
    let m = model.clone();
    host.port_free = Box::new(move |p| !m.borrow().busy_ports.contains(&p));
    let m = model.clone();
    host.port_answers = Box::new(move |p| m.borrow().answering_ports.contains(&p));
    let kinc = Kinc {
        podman: Podman::new(runner),
        data_dir: dir.path().join("data"),
        unit_dir: Some(dir.path().join("units")),
        routes_path: routes,
        kubeconfig_path: Some(dir.path().join("kube/config")),
        host,
    };
    Harness { dir, model, kinc }
}

fn owned(name: &str, role: &str) -> BTreeMap<String, String> {
    crate::node::volume_labels(&ClusterName::new(name).unwrap(), role)
        .into_iter()
        .collect()
}

fn n(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

#[test]
fn delete_touches_only_labelled_resources() {
    let h = harness();
    {
        let mut m = h.model.borrow_mut();
        let mut node = owned("a", labels::ROLE_NODE);
        node.insert(labels::API_PORT.into(), "6443".into());
        m.containers
            .insert("kinc-a-control-plane".into(), (node, "running".into()));
        m.volumes.insert(
            "kinc-a-var-data".into(),
            (owned("a", labels::ROLE_VAR), "/x".into()),
        );
        // Same names as cluster b's, but nobody labelled them: kinc must not touch them.
        m.containers.insert(
            "kinc-b-control-plane".into(),
            (BTreeMap::new(), "running".into()),
        );
        m.volumes
            .insert("kinc-b-var-data".into(), (BTreeMap::new(), "/y".into()));
        // Labelled for another cluster.
        m.volumes.insert(
            "kinc-c-config".into(),
            (owned("c", labels::ROLE_CONFIG), "/z".into()),
        );
    }
    let r = h.kinc.delete(&n("a")).unwrap();
    assert_eq!(r.containers, vec!["kinc-a-control-plane"]);
    assert_eq!(r.volumes, vec!["kinc-a-var-data"]);
    let r = h.kinc.delete(&n("b")).unwrap();
    assert!(r.is_empty(), "{r:?}");
    let m = h.model.borrow();
    assert!(m.containers.contains_key("kinc-b-control-plane"));
    assert!(m.volumes.contains_key("kinc-b-var-data"));
    assert!(m.volumes.contains_key("kinc-c-config"));
    // Every listing asked podman for the owner label.
    for call in h.kinc.podman.runner().lines() {
        if call.starts_with("podman ps") || call.starts_with("podman volume ls") {
            assert!(call.contains("--filter label=io.kinc.owner=kinc"), "{call}");
        }
    }
}

#[test]
fn delete_is_idempotent_and_removes_units_and_kubeconfig_entries() {
    let h = harness();
    let spec = crate::node::tests::spec();
    let units = h.kinc.unit_dir.clone().unwrap();
    crate::quadlet::install(&units, &crate::quadlet::render_cluster(&spec).unwrap()).unwrap();
    std::fs::write(units.join("unrelated.container"), "[Container]\n").unwrap();
    let kc = h.kinc.kubeconfig_path.clone().unwrap();
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    std::fs::write(
        &kc,
        "clusters:\n- name: kinc-dev\n  cluster: {server: 'https://127.0.0.1:6444'}\n- name: other\n  cluster: {server: 'https://o'}\ncurrent-context: other\n",
    )
    .unwrap();
    // The node container goes with its unit (Quadlet): the report still names it.
    let node_unit = units.join("kinc-dev-control-plane.container");
    assert!(node_unit.exists());
    h.model.borrow_mut().containers.insert(
        "kinc-dev-control-plane".into(),
        (owned("dev", labels::ROLE_NODE), "running".into()),
    );
    h.model.borrow_mut().quadlet_node = Some(("kinc-dev-control-plane".into(), node_unit));
    let r = h.kinc.delete(&n("dev")).unwrap();
    assert_eq!(r.containers, vec!["kinc-dev-control-plane"]);
    assert!(h.model.borrow().containers.is_empty());
    assert_eq!(r.units.len(), 3);
    assert_eq!(r.kubeconfig.as_deref(), Some(kc.as_path()));
    assert!(units.join("unrelated.container").exists());
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        !text.contains("kinc-dev") && text.contains("other"),
        "{text}"
    );
    let again = h.kinc.delete(&n("dev")).unwrap();
    assert!(again.is_empty() && again.kubeconfig.is_none(), "{again:?}");
}

#[test]
fn clusters_merge_containers_and_volumes() {
    let h = harness();
    {
        let mut m = h.model.borrow_mut();
        let mut node = owned("a", labels::ROLE_NODE);
        node.insert(labels::API_PORT.into(), "6444".into());
        node.insert(labels::POD_SUBNET.into(), "10.64.0.0/20".into());
        node.insert(labels::SERVICE_SUBNET.into(), "10.64.16.0/20".into());
        m.containers
            .insert("kinc-a-control-plane".into(), (node, "running".into()));
        m.volumes.insert(
            "kinc-a-var-data".into(),
            (owned("a", labels::ROLE_VAR), "/x".into()),
        );
        m.volumes.insert(
            "kinc-half-config".into(),
            (owned("half", labels::ROLE_CONFIG), "/y".into()),
        );
    }
    let list = h.kinc.clusters().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "a");
    assert_eq!(list[0].api_port, Some(6444));
    assert_eq!(list[0].server.as_deref(), Some("https://127.0.0.1:6444"));
    assert_eq!(list[1].name, "half");
    assert_eq!(list[1].state, "missing");
    let held = h.kinc.held().unwrap();
    assert!(held["a"].is_some() && held["half"].is_none());
    let json = serde_json::to_string(&list[0]).unwrap();
    assert!(
        json.contains("\"apiPort\":6444") && json.contains("\"podSubnet\":\"10.64.0.0/20\""),
        "{json}"
    );
}

#[test]
fn status_and_kubeconfig_come_from_the_var_volume() {
    let h = harness();
    let mp = h.dir.path().join("var");
    {
        let mut m = h.model.borrow_mut();
        let mut node = owned("a", labels::ROLE_NODE);
        node.insert(labels::API_PORT.into(), "6450".into());
        node.insert(labels::POD_SUBNET.into(), "10.64.0.0/20".into());
        node.insert(labels::SERVICE_SUBNET.into(), "10.64.16.0/20".into());
        m.containers
            .insert("kinc-a-control-plane".into(), (node, "running".into()));
        m.volumes.insert(
            "kinc-a-var-data".into(),
            (owned("a", labels::ROLE_VAR), mp.clone()),
        );
    }
    let e = h.kinc.status(&n("a")).unwrap_err();
    assert!(matches!(e, ClusterError::NotPublished { .. }), "{e}");
    let mut s = BootstrapStatus::new("a", &["one"]);
    s.finish("one").unwrap();
    s.save(&var_path(&mp, kinc_types::status::STATUS_PATH))
        .unwrap();
    assert!(h.kinc.status(&n("a")).unwrap().is_ready());
    let admin = var_path(&mp, kinc_types::node::ADMIN_KUBECONFIG);
    std::fs::write(
        &admin,
        "clusters:\n- name: k\n  cluster: {server: 'https://x:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\ncurrent-context: c\n",
    )
    .unwrap();
    let k = h.kinc.kubeconfig(&n("a")).unwrap();
    assert_eq!(k.current_context, "kinc-a");
    assert_eq!(
        k.clusters[0].get("cluster").unwrap().server,
        "https://127.0.0.1:6450"
    );
    let path = h.kinc.export_kubeconfig(&n("a")).unwrap();
    assert!(std::fs::read_to_string(path).unwrap().contains("kinc-a"));
    // No exec was needed for any of it.
    assert!(!h
        .kinc
        .podman
        .runner()
        .lines()
        .iter()
        .any(|l| l.contains(" exec ")));
}

#[test]
fn systemd_gate_reads_the_console() {
    assert!(reached_default_target(
        "[  OK  ] Reached target Multi-User System.\n"
    ));
    assert!(reached_default_target(
        "Reached target multi-user.target - Multi-User System."
    ));
    assert!(!reached_default_target(
        "Reached target Basic System.\nStarting kinc-init..."
    ));
}

#[test]
fn wait_for_systemd_times_out_with_a_message() {
    let h = harness();
    h.model.borrow_mut().logs = "Reached target Basic System.\n".into();
    let e = h
        .kinc
        .wait_for_systemd(&n("zz"), Duration::from_millis(1))
        .unwrap_err();
    assert!(e.to_string().contains("default target"), "{e}");
    h.model.borrow_mut().logs = "Reached target Multi-User System.\n".into();
    h.kinc
        .wait_for_systemd(&n("zz"), Duration::from_millis(1))
        .unwrap();
}
