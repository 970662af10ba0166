//! `kinc load image`: makes host images available to the node's CRI-O (kind's
//! `load docker-image`). The node mounts the host's image store read-only as CRI-O's
//! additional image store, so a host image is normally visible at once; kinc checks
//! with `crictl`. Without that mount, the image goes through an OCI archive on the
//! node's `/var` volume and `skopeo` in the node copies it into CRI-O's store.

use std::time::Duration;

use kinc_types::ClusterName;
use serde::Serialize;

use crate::cluster::{var_path, ClusterError, Kinc};
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
        let shared = self
            .podman
            .mount_destinations(&node)?
            .iter()
            .any(|d| d == kinc_types::node::HOST_IMAGE_STORE);
        // No exec before the node's systemd is up (see wait_for_systemd).
        self.wait_for_systemd(name, systemd_timeout)?;
        let mut out = Vec::new();
        for img in images {
            let visible = shared
                && self
                    .podman
                    .exec(&node, &["crictl".into(), "inspecti".into(), img.clone()])
                    .is_ok();
            if visible {
                out.push((img.clone(), LoadedVia::HostStore));
                continue;
            }
            let mp = self.var_mountpoint(name)?;
            let file = archive_name(img);
            let host_dir = var_path(&mp, ARCHIVE_DIR);
            std::fs::create_dir_all(&host_dir).map_err(|source| ClusterError::Io {
                what: "creating",
                path: host_dir.display().to_string(),
                source,
            })?;
            let host_file = host_dir.join(&file);
            self.podman.save_image(img, &host_file)?;
            let copied = self.podman.exec(
                &node,
                &[
                    "skopeo".into(),
                    "copy".into(),
                    format!("oci-archive:{ARCHIVE_DIR}/{file}"),
                    format!("containers-storage:{img}"),
                ],
            );
            let _ = std::fs::remove_file(&host_file);
            copied?;
            out.push((img.clone(), LoadedVia::Archive));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_flat() {
        assert_eq!(archive_name("localhost/app:v1"), "localhost_app_v1.tar");
        assert_eq!(
            archive_name("quay.io/a/b@sha256:ab"),
            "quay.io_a_b_sha256_ab.tar"
        );
    }
}
