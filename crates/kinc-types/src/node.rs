//! Paths and values inside the node container that more than one crate relies on:
//! the image puts things here, the bootstrap and the host CLI find them here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The admin kubeconfig that `kinc-init` copies onto the `/var` volume (mode 0600), so the
/// host CLI can read it from the volume without exec'ing into the node.
pub const ADMIN_KUBECONFIG: &str = "/var/lib/kinc/admin.conf";

/// kubelet's `cgroupRoot` (cgroupfs driver); `cgroup-setup` delegates controllers down to it.
pub const KUBELET_CGROUP_ROOT: &str = "/kubelet";

/// Where the CNI plugin binaries live (CRI-O's default plugin dir).
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Where `kinc-init` writes kincnet's conflist.
pub const KINCNET_CONFLIST: &str = "/etc/cni/net.d/10-kincnet.conflist";
/// Name of the CNI network, and of the bridge kincnet creates in the node.
pub const KINCNET_NETWORK: &str = "kinc";
pub const KINCNET_BRIDGE: &str = "kinc0";
/// kincnet's nf_tables table (family ip): kincnet's NAT and hostPort chains and
/// kincnet-policy's policy chains and sets live in it.
pub const KINCNET_TABLE: &str = "kincnet";
/// The kubeconfig (ServiceAccount token, mode 0600) `kinc-init` writes for kincnet-policy,
/// and whose appearance starts `kincnet-policy.service`.
pub const POLICY_KUBECONFIG: &str = "/etc/kinc/kincnet-policy.kubeconfig";

/// crun-wrapper's config file and the real crun it runs.
pub const CRUN_WRAPPER_BIN: &str = "/usr/local/bin/crun-wrapper";
pub const CRUN_WRAPPER_CONFIG: &str = "/etc/kinc/crun-wrapper.toml";
pub const REAL_CRUN: &str = "/usr/bin/crun";

/// CRI-O's `default_capabilities` (the node image keeps CRI-O's default): what a pod's
/// container holds unless its securityContext says otherwise, so what every pod spec
/// crun-wrapper sees carries. The CRI-O-shaped specs in the tests are built from it.
pub const CRIO_DEFAULT_CAPABILITIES: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

/// Where the host's container storage is mounted read-only, for CRI-O's
/// `additionalimagestores` (clusters reuse what the host already pulled).
pub const HOST_IMAGE_STORE: &str = "/usr/lib/kinc/host-storage";

/// The node image the CLI runs by default, and what `cargo xtask image` tags.
pub const DEFAULT_NODE_IMAGE: &str = "localhost/kinc/node:v1.33.13";

/// Which CRI the node image carries and where its preloaded images are: written by the
/// image build (`cargo xtask image`), read by `kinc-init`. The Fedora image ships no such
/// file: absent means CRI-O and no preloaded images.
pub const NODE_IMAGE_INFO: &str = "/usr/share/kinc/node-image.json";
/// Where the offline image keeps its component images (OCI archives, `*.tar`) and
/// [`IMAGE_LIST_FILE`] naming them.
pub const PRELOADED_IMAGES_DIR: &str = "/usr/share/kinc/images";
/// The list of the archives in an images dir ([`ImageList`]), inside that dir.
pub const IMAGE_LIST_FILE: &str = "images.json";
/// containerd's namespace for the images the CRI (and so kubelet) sees.
pub const CONTAINERD_K8S_NAMESPACE: &str = "k8s.io";
/// The snapshotter preloaded images are unpacked into: containerd's default, and the one
/// its CRI plugin uses unless its config names another (the two must agree, or the CRI
/// unpacks every image again on first use).
pub const CONTAINERD_SNAPSHOTTER: &str = "overlayfs";

/// The container runtime (CRI implementation) in the node image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cri {
    /// CRI-O: the Fedora image.
    #[default]
    Crio,
    /// containerd (Debian's package): the offline Debian image.
    Containerd,
}

impl Cri {
    /// The runtime's socket in the node (each one's default).
    pub fn socket_path(self) -> &'static str {
        match self {
            Cri::Crio => "/var/run/crio/crio.sock",
            Cri::Containerd => "/run/containerd/containerd.sock",
        }
    }

    /// The socket as kubelet and kubeadm name it (`unix://...`).
    pub fn endpoint(self) -> String {
        format!("unix://{}", self.socket_path())
    }

    /// The runtime's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Cri::Crio => "CRI-O",
            Cri::Containerd => "containerd",
        }
    }
}

impl std::fmt::Display for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The content of [`NODE_IMAGE_INFO`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeImageInfo {
    pub cri: Cri,
    /// Absolute node path of a directory of OCI archives and their [`IMAGE_LIST_FILE`],
    /// to import into the CRI before kubeadm runs (no registry is reachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_dir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {what} {path}: {source}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{what} {path}: {msg}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        msg: String,
    },
}

const INFO_WHAT: &str = "node image info";
const LIST_WHAT: &str = "preloaded image list";

fn read_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<T, NodeFileError> {
    serde_json::from_slice(bytes).map_err(|source| NodeFileError::Parse {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn to_json_text<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("node image files always serialize");
    s.push('\n');
    s
}

impl NodeImageInfo {
    /// The file at `path`; an absent file is the Fedora image's default (CRI-O, nothing
    /// preloaded).
    pub fn load(path: &Path) -> Result<Self, NodeFileError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(NodeFileError::Read {
                    what: INFO_WHAT,
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let info: Self = read_json(INFO_WHAT, path, &bytes)?;
        if let Some(dir) = &info.images_dir {
            if !dir.starts_with('/') {
                return Err(NodeFileError::Invalid {
                    what: INFO_WHAT,
                    path: path.to_path_buf(),
                    msg: format!("imagesDir {dir:?} is not an absolute path"),
                });
            }
        }
        Ok(info)
    }

    /// The file as the image build writes it.
    pub fn to_json(&self) -> String {
        to_json_text(self)
    }
}

/// One preloaded image: its full reference (the archive's `io.containerd.image.name`
/// annotation, which `ctr images import` names it by) and its archive's file name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadedImage {
    /// e.g. `registry.k8s.io/kube-apiserver:v1.33.13`.
    pub name: String,
    /// A file name in the images dir, e.g. `kube-apiserver.tar`.
    pub file: String,
}

/// The content of [`IMAGE_LIST_FILE`]: `[{"name": "...", "file": "x.tar"}, ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageList(pub Vec<PreloadedImage>);

impl ImageList {
    /// Reads and checks the list at `path` (it must exist): every file a plain `*.tar`
    /// name, every name a reference with a tag or digest, no name twice. One file may
    /// hold several images (they share layers), each listed with it.
    pub fn load(path: &Path) -> Result<Self, NodeFileError> {
        let bytes = std::fs::read(path).map_err(|source| NodeFileError::Read {
            what: LIST_WHAT,
            path: path.to_path_buf(),
            source,
        })?;
        let list: Self = read_json(LIST_WHAT, path, &bytes)?;
        list.validate().map_err(|msg| NodeFileError::Invalid {
            what: LIST_WHAT,
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(list)
    }

    /// What [`Self::load`] checks, as a message.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for img in &self.0 {
            let f = &img.file;
            if f.contains('/') || f.starts_with('.') || !f.ends_with(".tar") {
                return Err(format!(
                    "file {f:?} is not a plain *.tar file name in the list's directory"
                ));
            }
            let n = &img.name;
            let last = n.rsplit('/').next().unwrap_or_default();
            if n.is_empty() || n.contains(char::is_whitespace) || !n.contains('/') {
                return Err(format!("image name {n:?} of {f} is not a full reference"));
            }
            if !last.contains(':') && !last.contains('@') {
                return Err(format!("image name {n:?} of {f} has no tag or digest"));
            }
            if !names.insert(n.as_str()) {
                return Err(format!("image {n} is listed twice"));
            }
        }
        Ok(())
    }

    /// The file as the image build writes it.
    pub fn to_json(&self) -> String {
        to_json_text(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn cri_sockets_endpoints_names() {
        assert_eq!(Cri::Crio.socket_path(), "/var/run/crio/crio.sock");
        assert_eq!(
            Cri::Containerd.socket_path(),
            "/run/containerd/containerd.sock"
        );
        assert_eq!(Cri::Crio.endpoint(), "unix:///var/run/crio/crio.sock");
        assert_eq!(
            Cri::Containerd.endpoint(),
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(Cri::Crio.name(), "CRI-O");
        assert_eq!(Cri::Containerd.to_string(), "containerd");
        assert_eq!(Cri::default(), Cri::Crio);
    }

    #[test]
    fn absent_info_is_the_fedora_image() {
        let dir = tempfile::tempdir().unwrap();
        let info = NodeImageInfo::load(&dir.path().join("node-image.json")).unwrap();
        assert_eq!(info.cri, Cri::Crio);
        assert_eq!(info.images_dir, None);
    }

    #[test]
    fn offline_image_info_parses_and_round_trips() {
        let (_d, p) = temp_file(r#"{"cri": "containerd", "imagesDir": "/usr/share/kinc/images"}"#);
        let info = NodeImageInfo::load(&p).unwrap();
        assert_eq!(
            info,
            NodeImageInfo {
                cri: Cri::Containerd,
                images_dir: Some(PRELOADED_IMAGES_DIR.into()),
            }
        );
        let (_d, p2) = temp_file(&info.to_json());
        assert_eq!(NodeImageInfo::load(&p2).unwrap(), info);
        assert!(info.to_json().contains("\"imagesDir\""));
        let (_d, p3) = temp_file(r#"{"cri": "crio"}"#);
        assert_eq!(NodeImageInfo::load(&p3).unwrap(), NodeImageInfo::default());
    }

    #[test]
    fn malformed_info_names_the_path_and_the_problem() {
        for (text, want) in [
            (r#"{"cri": "docker"}"#, "unknown variant `docker`"),
            (
                r#"{"cri": "containerd", "imageDir": "/x"}"#,
                "unknown field `imageDir`",
            ),
            (r#"{"imagesDir": "/x"}"#, "missing field `cri`"),
            ("{", "EOF"),
        ] {
            let (_d, p) = temp_file(text);
            let err = NodeImageInfo::load(&p).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("parsing node image info {}: ", p.display()))
                    && err.contains(want),
                "{text}: {err}"
            );
        }
        let (_d, p) = temp_file(r#"{"cri": "containerd", "imagesDir": "images"}"#);
        let err = NodeImageInfo::load(&p).unwrap_err().to_string();
        assert!(
            err.contains(&p.display().to_string()) && err.contains("not an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_info_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = NodeImageInfo::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("reading node image info {}", dir.path().display())),
            "{err}"
        );
    }

    #[test]
    fn image_list_parses_round_trips_and_is_checked() {
        let text = r#"[{"name": "registry.k8s.io/pause:3.10", "file": "pause.tar"},
                      {"name": "registry.k8s.io/etcd:3.5.21-0", "file": "etcd.tar"}]"#;
        let (_d, p) = temp_file(text);
        let list = ImageList::load(&p).unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[0].name, "registry.k8s.io/pause:3.10");
        assert_eq!(list.0[1].file, "etcd.tar");
        let (_d, p2) = temp_file(&list.to_json());
        assert_eq!(ImageList::load(&p2).unwrap(), list);
        // Two images in one archive.
        let shared = r#"[{"name": "registry.k8s.io/kube-proxy:v1", "file": "k.tar"},
                        {"name": "registry.k8s.io/kube-apiserver:v1", "file": "k.tar"}]"#;
        let (_d, p3) = temp_file(shared);
        assert_eq!(ImageList::load(&p3).unwrap().0.len(), 2);

        let bad = [
            (
                r#"[{"name": "registry.k8s.io/pause:3.10", "file": "../pause.tar"}]"#,
                "not a plain",
            ),
            (
                r#"[{"name": "registry.k8s.io/pause:3.10", "file": "pause.tar.gz"}]"#,
                "not a plain",
            ),
            (
                r#"[{"name": "pause:3.10", "file": "pause.tar"}]"#,
                "not a full reference",
            ),
            (
                r#"[{"name": "registry.k8s.io/pause", "file": "pause.tar"}]"#,
                "no tag or digest",
            ),
            (
                r#"[{"name": "registry.k8s.io/pause:3.10", "file": "a.tar"},
                    {"name": "registry.k8s.io/pause:3.10", "file": "b.tar"}]"#,
                "listed twice",
            ),
            (
                r#"[{"name": "registry.k8s.io/pause:3.10", "file": "a.tar", "x": 1}]"#,
                "unknown field `x`",
            ),
        ];
        for (text, want) in bad {
            let (_d, p) = temp_file(text);
            let err = ImageList::load(&p).unwrap_err().to_string();
            assert!(
                err.contains(&p.display().to_string()) && err.contains(want),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn absent_image_list_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(IMAGE_LIST_FILE);
        let err = ImageList::load(&p).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("reading preloaded image list {}", p.display())),
            "{err}"
        );
    }
}
