//! `kinc load image`: makes host images available to the node's CRI (kind's
//! `load docker-image`). Which CRI the node runs is in its node image info
//! ([`NODE_IMAGE_INFO`]); a node without that file (the Fedora image) runs CRI-O.
//!
//! - CRI-O: the node mounts the host's image store read-only as CRI-O's additional image
//!   store, so a host image is normally visible at once; kinc checks with `crictl`.
//!   Without that mount, the image goes through an OCI archive on the node's `/var`
//!   volume and `skopeo` in the node copies it into CRI-O's store.
//! - containerd (the offline Debian image, which has neither crictl nor skopeo): there is
//!   no shared store, so every image goes through a docker archive on the `/var` volume
//!   that `ctr images import` loads into the CRI's namespace. The docker archive's
//!   `RepoTags` give ctr the image's name.

use std::time::Duration;

use kinc_types::node::{
    Cri, NodeImageInfo, CONTAINERD_K8S_NAMESPACE, CONTAINERD_SNAPSHOTTER, NODE_IMAGE_INFO,
};
use kinc_types::ClusterName;
use serde::Serialize;

use crate::cluster::{var_path, ClusterError, Kinc};
use crate::podman::ArchiveFormat;
use crate::runner::Runner;

/// Where archives wait inside the node (under its `/var` volume).
pub const ARCHIVE_DIR: &str = "/var/lib/kinc/images";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadedVia {
    /// Already visible through the shared, read-only host image store.
    HostStore,
    /// Copied in through an archive on the node's `/var` volume.
    Archive,
}

/// A file name for an image reference (`localhost/app:v1` → `localhost_app_v1.tar`).
pub fn archive_name(image: &str) -> String {
    let safe: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.tar")
}

/// The command, run in the node, that imports a docker archive (a path in the node) into
/// the namespace containerd's CRI serves images from.
pub fn ctr_import_command(node_archive: &str) -> Vec<String> {
    [
        "ctr",
        "--address",
        Cri::Containerd.socket_path(),
        "--namespace",
        CONTAINERD_K8S_NAMESPACE,
        "images",
        "import",
        // The client imports and unpacks (ctr 1.7's default, said explicitly).
        "--local",
        // Into the snapshotter the CRI uses, or it would unpack the image again.
        "--snapshotter",
        CONTAINERD_SNAPSHOTTER,
        node_archive,
    ]
    .map(String::from)
    .to_vec()
}

impl<R: Runner> Kinc<R> {
    pub fn load_images(
        &self,
        name: &ClusterName,
        images: &[String],
        systemd_timeout: Duration,
    ) -> Result<Vec<(String, LoadedVia)>, ClusterError> {
        let info = self.info(name)?;
        if info.state != "running" {
            return Err(ClusterError::Other(format!(
                "the node of cluster \"{name}\" is {}; start it before loading images",
                info.state
            )));
        }
        for img in images {
            if !self.podman.image_exists(img)? {
                return Err(ClusterError::Other(format!(
                    "image {img:?} is not in the host's podman store: `podman pull {img}` or `podman build -t {img} .` first"
                )));
            }
        }
        let node = name.container();
        // No exec before the node's systemd is up (see wait_for_systemd).
        self.wait_for_systemd(name, systemd_timeout)?;
        match self.node_cri(&node)? {
            Cri::Crio => self.load_into_crio(name, &node, images),
            Cri::Containerd => self.load_into_containerd(name, &node, images),
        }
    }

    /// The CRI of a running node, from its node image info.
    pub fn node_cri(&self, node: &str) -> Result<Cri, ClusterError> {
        let Some(text) = self.podman.read_file(node, NODE_IMAGE_INFO)? else {
            // The Fedora image ships no such file.
            return Ok(Cri::Crio);
        };
        let info: NodeImageInfo = serde_json::from_str(&text).map_err(|e| {
            ClusterError::Other(format!(
                "parsing node image info {NODE_IMAGE_INFO} of node {node}: {}",
                crate::excerpt::json(&e)
            ))
        })?;
        Ok(info.cri)
    }

    fn load_into_crio(
        &self,
        name: &ClusterName,
        node: &str,
        images: &[String],
    ) -> Result<Vec<(String, LoadedVia)>, ClusterError> {
        let shared = self
            .podman
            .mount_destinations(node)?
            .iter()
            .any(|d| d == kinc_types::node::HOST_IMAGE_STORE);
        let mut out = Vec::new();
        for img in images {
            let visible = shared
                && self
                    .podman
                    .exec(node, &["crictl".into(), "inspecti".into(), img.clone()])
                    .is_ok();
            if visible {
                out.push((img.clone(), LoadedVia::HostStore));
                continue;
            }
            let format = ArchiveFormat::OciArchive;
            self.through_archive(name, img, format, |archive| {
                let copy = [
                    "skopeo".into(),
                    "copy".into(),
                    // skopeo's transport has the name of podman's format.
                    format!("{}:{archive}", format.as_str()),
                    format!("containers-storage:{img}"),
                ];
                self.podman.exec(node, &copy)?;
                Ok(())
            })?;
            out.push((img.clone(), LoadedVia::Archive));
        }
        Ok(out)
    }

    fn load_into_containerd(
        &self,
        name: &ClusterName,
        node: &str,
        images: &[String],
    ) -> Result<Vec<(String, LoadedVia)>, ClusterError> {
        let mut out = Vec::new();
        for img in images {
            self.through_archive(name, img, ArchiveFormat::DockerArchive, |archive| {
                self.podman
                    .exec(node, &ctr_import_command(archive))
                    .map_err(|e| {
                        ClusterError::Other(format!(
                            "importing image {img:?} into containerd in node {node}: {e}"
                        ))
                    })?;
                Ok(())
            })?;
            out.push((img.clone(), LoadedVia::Archive));
        }
        Ok(out)
    }

    /// Saves `img` as an archive on the node's `/var` volume, calls `load` with the
    /// archive's path inside the node, and removes the archive whatever happened.
    fn through_archive(
        &self,
        name: &ClusterName,
        img: &str,
        format: ArchiveFormat,
        load: impl FnOnce(&str) -> Result<(), ClusterError>,
    ) -> Result<(), ClusterError> {
        let mp = self.var_mountpoint(name)?;
        let file = archive_name(img);
        let host_dir = var_path(&mp, ARCHIVE_DIR);
        std::fs::create_dir_all(&host_dir).map_err(|source| ClusterError::Io {
            what: "creating",
            path: host_dir.display().to_string(),
            source,
        })?;
        let host_file = host_dir.join(&file);
        let done = match self.podman.save_image(img, &host_file, format) {
            Ok(()) => load(&format!("{ARCHIVE_DIR}/{file}")),
            Err(e) => Err(e.into()),
        };
        // Also after a failed save, which may leave a partial file.
        let _ = std::fs::remove_file(&host_file);
        done
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use kinc_types::labels;

    use super::*;
    use crate::cluster::tests::{harness, Harness};
    use crate::podman::Podman;
    use crate::runner::{CmdOutput, FakeRunner};

    const NODE: &str = "kinc-dev-control-plane";
    const APP: &str = "localhost/app:v1";
    const CONTAINERD_INFO: &str = r#"{"cri": "containerd", "imagesDir": "/usr/share/kinc/images"}"#;

    #[test]
    fn archive_names_are_flat() {
        assert_eq!(archive_name("localhost/app:v1"), "localhost_app_v1.tar");
        assert_eq!(
            archive_name("quay.io/a/b@sha256:ab"),
            "quay.io_a_b_sha256_ab.tar"
        );
    }

    fn dev() -> ClusterName {
        ClusterName::new("dev").unwrap()
    }

    /// A running node of cluster "dev" whose systemd is up, with the given node image
    /// info; returns the host directory behind its `/var`.
    fn running_node(h: &Harness, node_image_info: Option<&str>) -> PathBuf {
        let var = h.dir.path().join("var");
        std::fs::create_dir_all(&var).unwrap();
        let owned = |role| {
            crate::node::volume_labels(&dev(), role)
                .into_iter()
                .collect()
        };
        let mut m = h.model.borrow_mut();
        m.containers
            .insert(NODE.into(), (owned(labels::ROLE_NODE), "running".into()));
        m.volumes
            .insert(dev().var_volume(), (owned(labels::ROLE_VAR), var.clone()));
        m.logs = "[  OK  ] Reached target Multi-User System.\n".into();
        m.node_image_info = node_image_info.map(String::from);
        m.node_var = Some(var.clone());
        var
    }

    fn load(h: &Harness, images: &[&str]) -> Result<Vec<(String, LoadedVia)>, ClusterError> {
        let images: Vec<String> = images.iter().map(|s| s.to_string()).collect();
        h.kinc
            .load_images(&dev(), &images, Duration::from_millis(1))
    }

    /// The `podman save` and `podman exec` calls, as argument lists.
    fn save_and_exec_calls(h: &Harness) -> Vec<Vec<String>> {
        h.kinc
            .podman
            .runner()
            .calls()
            .into_iter()
            .filter(|c| c.program == "podman" && ["save", "exec"].contains(&c.args[0].as_str()))
            .map(|c| c.args)
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn archives_left(var: &Path) -> Vec<PathBuf> {
        let dir = var_path(var, ARCHIVE_DIR);
        match std::fs::read_dir(&dir) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn containerd_node_imports_docker_archives_with_ctr() {
        let h = harness();
        let var = running_node(&h, Some(CONTAINERD_INFO));
        let got = load(&h, &[APP, "localhost/b:2"]).unwrap();
        assert_eq!(
            got,
            vec![
                (APP.to_string(), LoadedVia::Archive),
                ("localhost/b:2".to_string(), LoadedVia::Archive)
            ]
        );
        let host_dir = var_path(&var, ARCHIVE_DIR);
        let mut want = vec![strings(&["exec", NODE, "cat", NODE_IMAGE_INFO])];
        for (img, file) in [
            (APP, "localhost_app_v1.tar"),
            ("localhost/b:2", "localhost_b_2.tar"),
        ] {
            want.push(strings(&[
                "save",
                "--format",
                "docker-archive",
                "-o",
                &host_dir.join(file).display().to_string(),
                img,
            ]));
            want.push(strings(&[
                "exec",
                NODE,
                "ctr",
                "--address",
                "/run/containerd/containerd.sock",
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "--local",
                "--snapshotter",
                "overlayfs",
                &format!("/var/lib/kinc/images/{file}"),
            ]));
        }
        assert_eq!(save_and_exec_calls(&h), want);
        // ctr was given the very file podman saved (the path in the node maps to it).
        assert_eq!(
            h.model.borrow().imported,
            vec![
                ("ctr".to_string(), format!("docker-archive {APP}")),
                (
                    "ctr".to_string(),
                    "docker-archive localhost/b:2".to_string()
                )
            ]
        );
        let lines = h.kinc.podman.runner().lines();
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("crictl") || l.contains("skopeo")),
            "{lines:#?}"
        );
        assert!(archives_left(&var).is_empty(), "{:?}", archives_left(&var));
    }

    #[test]
    fn crio_node_without_node_image_info_copies_oci_archives_with_skopeo() {
        let h = harness();
        let var = running_node(&h, None);
        let got = load(&h, &[APP]).unwrap();
        assert_eq!(got, vec![(APP.to_string(), LoadedVia::Archive)]);
        let host_file = var_path(&var, ARCHIVE_DIR).join("localhost_app_v1.tar");
        assert_eq!(
            save_and_exec_calls(&h),
            vec![
                strings(&["exec", NODE, "cat", NODE_IMAGE_INFO]),
                strings(&[
                    "save",
                    "--format",
                    "oci-archive",
                    "-o",
                    &host_file.display().to_string(),
                    APP
                ]),
                strings(&[
                    "exec",
                    NODE,
                    "skopeo",
                    "copy",
                    "oci-archive:/var/lib/kinc/images/localhost_app_v1.tar",
                    "containers-storage:localhost/app:v1"
                ]),
            ]
        );
        assert_eq!(
            h.model.borrow().imported,
            vec![("skopeo".to_string(), format!("oci-archive {APP}"))]
        );
        assert!(archives_left(&var).is_empty(), "{:?}", archives_left(&var));
    }

    #[test]
    fn crio_node_with_the_host_store_skips_images_crictl_sees() {
        let h = harness();
        running_node(&h, Some(r#"{"cri": "crio"}"#));
        {
            let mut m = h.model.borrow_mut();
            m.mounts = vec![kinc_types::node::HOST_IMAGE_STORE.into()];
            m.crictl_images = vec![APP.into()];
        }
        let got = load(&h, &[APP, "localhost/b:2"]).unwrap();
        assert_eq!(
            got,
            vec![
                (APP.to_string(), LoadedVia::HostStore),
                ("localhost/b:2".to_string(), LoadedVia::Archive)
            ]
        );
        let lines = h.kinc.podman.runner().lines();
        let saves: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("podman save"))
            .collect();
        assert_eq!(saves.len(), 1, "{lines:#?}");
        assert!(saves[0].ends_with(" localhost/b:2"), "{lines:#?}");
    }

    #[test]
    fn malformed_node_image_info_is_an_error_naming_the_file_and_node() {
        let h = harness();
        let var = running_node(&h, Some(r#"{"cri": "docker"}"#));
        let err = load(&h, &[APP]).unwrap_err().to_string();
        assert!(
            err.contains(NODE_IMAGE_INFO) && err.contains(NODE) && err.contains("docker"),
            "{err}"
        );
        assert!(
            !h.kinc
                .podman
                .runner()
                .lines()
                .iter()
                .any(|l| l.starts_with("podman save")),
            "nothing is saved for a node of unknown CRI"
        );
        assert!(archives_left(&var).is_empty());
    }

    #[test]
    fn failing_ctr_import_names_the_image_carries_stderr_and_removes_the_archive() {
        let h = harness();
        let var = running_node(&h, Some(CONTAINERD_INFO));
        h.model.borrow_mut().ctr_fails =
            Some("ctr: failed to import: unexpected EOF in layer".into());
        let err = load(&h, &[APP, "localhost/b:2"]).unwrap_err().to_string();
        assert!(
            err.contains(APP) && err.contains("unexpected EOF in layer"),
            "{err}"
        );
        // The failed import stopped the load: one import tried, nothing left behind.
        assert_eq!(h.model.borrow().imported.len(), 1);
        assert!(archives_left(&var).is_empty(), "{:?}", archives_left(&var));
    }

    #[test]
    fn image_missing_on_the_host_is_an_error_before_anything_is_saved() {
        let h = harness();
        let var = running_node(&h, Some(CONTAINERD_INFO));
        let err = load(&h, &[APP, "quay.io/nope/x:1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"quay.io/nope/x:1\" is not in the host's podman store"),
            "{err}"
        );
        assert_eq!(save_and_exec_calls(&h), Vec::<Vec<String>>::new());
        assert!(archives_left(&var).is_empty());
    }

    #[test]
    fn read_file_tells_an_absent_file_from_a_failed_exec() {
        let podman = |code: i32, stderr: &'static str| {
            Podman::new(FakeRunner::with(move |_| CmdOutput {
                code,
                stdout: b"text".to_vec(),
                stderr: stderr.into(),
            }))
        };
        let p = podman(0, "");
        assert_eq!(p.read_file(NODE, "/a/f").unwrap().as_deref(), Some("text"));
        assert_eq!(
            p.runner().lines(),
            vec![format!("podman exec {NODE} cat /a/f")]
        );
        let absent = podman(1, "cat: /a/f: No such file or directory");
        assert_eq!(absent.read_file(NODE, "/a/f").unwrap(), None);
        // crun's message for a missing `cat` also says "No such file", not about the file.
        let no_cat = podman(
            127,
            "Error: crun: executable file `cat` not found in $PATH: No such file or directory",
        );
        let err = no_cat.read_file(NODE, "/a/f").unwrap_err().to_string();
        assert!(err.contains("executable file `cat`"), "{err}");
    }
}
