//! Podman as kinc's provider: every call goes through a [`Runner`] with separate
//! arguments, and every answer is Podman's `--format json`, read with tolerant structs
//! (unknown fields ignored, missing ones defaulted) so versions 4.x and 5.x both parse.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::runner::{CommandLine, RunError, Runner};

pub const PODMAN: &str = "podman";

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error(transparent)]
    Run(#[from] RunError),
    /// `msg` is bounded ([`crate::excerpt`]).
    #[error("reading the JSON of `podman {what}`: {msg}")]
    Json { what: String, msg: String },
    #[error("`podman {what}` returned nothing for {name}")]
    Missing { what: String, name: String },
}

/// One entry of `podman ps -a --format json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names")]
    pub names: Vec<String>,
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Ports", deserialize_with = "null_as_default")]
    pub ports: Vec<PortMapping>,
}

impl ContainerSummary {
    pub fn name(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or(&self.id)
    }
}

/// A published port, as `podman ps --format json` shows it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PortMapping {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

/// One entry of `podman volume ls/inspect --format json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VolumeSummary {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// The parts of `podman info --format json` kinc reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Info {
    pub host: HostInfo,
    pub store: StoreInfo,
    pub version: VersionInfo,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HostInfo {
    pub cgroup_version: String,
    pub cgroup_manager: String,
    pub security: SecurityInfo,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecurityInfo {
    pub rootless: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StoreInfo {
    pub graph_root: String,
    pub graph_driver_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionInfo {
    #[serde(rename = "Version")]
    pub version: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `major.minor.patch` of a version string such as `4.3.1` or `5.4.0-dev`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let patch = it.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Podman driven through a [`Runner`].
pub struct Podman<R: Runner> {
    runner: R,
}

impl<R: Runner> Podman<R> {
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    pub fn runner(&self) -> &R {
        &self.runner
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, args: Vec<String>) -> Result<T, PodmanError> {
        let out = self.runner.run(PODMAN, &args)?;
        let text = out.stdout_str();
        serde_json::from_str(&text).map_err(|e| PodmanError::Json {
            what: args.join(" "),
            msg: crate::excerpt::json(&e),
        })
    }

    /// A JSON listing; Podman prints nothing or `null` (not `[]`) for some empty ones.
    fn json_list<T: for<'de> Deserialize<'de>>(
        &self,
        args: Vec<String>,
    ) -> Result<Vec<T>, PodmanError> {
        let out = self.runner.run(PODMAN, &args)?;
        let text = out.stdout_str();
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Option<Vec<T>> = serde_json::from_str(&text).map_err(|e| PodmanError::Json {
            what: args.join(" "),
            msg: crate::excerpt::json(&e),
        })?;
        Ok(v.unwrap_or_default())
    }

    pub fn info(&self) -> Result<Info, PodmanError> {
        self.json(vec![s("info"), s("--format"), s("json")])
    }

    /// The client version, e.g. `4.3.1`.
    pub fn version(&self) -> Result<String, PodmanError> {
        let out = self.runner.run(
            PODMAN,
            &[s("version"), s("--format"), s("{{.Client.Version}}")],
        )?;
        Ok(out.stdout_str().trim().to_string())
    }

    pub fn image_exists(&self, image: &str) -> Result<bool, PodmanError> {
        let out = self
            .runner
            .try_run(PODMAN, &[s("image"), s("exists"), s(image)])?;
        Ok(out.success())
    }

    /// Containers carrying every `key=value` label given.
    pub fn containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, PodmanError> {
        let mut args = vec![s("ps"), s("-a"), s("--format"), s("json")];
        args.extend(label_filters(labels));
        let mut v: Vec<ContainerSummary> = self.json_list(args)?;
        v.retain(|c| has_labels(&c.labels, labels));
        Ok(v)
    }

    /// Volumes carrying every `key=value` label given.
    pub fn volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<VolumeSummary>, PodmanError> {
        let mut args = vec![s("volume"), s("ls"), s("--format"), s("json")];
        args.extend(label_filters(labels));
        let mut v: Vec<VolumeSummary> = self.json_list(args)?;
        v.retain(|c| has_labels(&c.labels, labels));
        Ok(v)
    }

    pub fn volume_inspect(&self, name: &str) -> Result<Option<VolumeSummary>, PodmanError> {
        let args = vec![s("volume"), s("inspect"), s("--format"), s("json"), s(name)];
        let out = self.runner.try_run(PODMAN, &args)?;
        if !out.success() {
            return Ok(None);
        }
        let v: Option<Vec<VolumeSummary>> =
            serde_json::from_str(&out.stdout_str()).map_err(|e| PodmanError::Json {
                what: args.join(" "),
                msg: crate::excerpt::json(&e),
            })?;
        Ok(v.unwrap_or_default().into_iter().next())
    }

    /// The directory on the host that backs a volume (readable by the calling user,
    /// rootless included, since the node's root maps to that user).
    pub fn volume_mountpoint(&self, name: &str) -> Result<PathBuf, PodmanError> {
        match self.volume_inspect(name)? {
            Some(v) if !v.mountpoint.is_empty() => Ok(PathBuf::from(v.mountpoint)),
            _ => Err(PodmanError::Missing {
                what: "volume inspect".into(),
                name: name.into(),
            }),
        }
    }

    pub fn volume_create(
        &self,
        name: &str,
        labels: &[(String, String)],
    ) -> Result<(), PodmanError> {
        let mut args = vec![s("volume"), s("create")];
        for (k, v) in labels {
            args.push(s("--label"));
            args.push(format!("{k}={v}"));
        }
        args.push(s(name));
        self.runner.run(PODMAN, &args)?;
        Ok(())
    }

    pub fn volume_rm(&self, names: &[String]) -> Result<(), PodmanError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut args = vec![s("volume"), s("rm"), s("--force")];
        args.extend(names.iter().cloned());
        self.runner.run(PODMAN, &args)?;
        Ok(())
    }

    /// Removes containers by id; missing ones are not an error (`--ignore`).
    pub fn container_rm(&self, ids: &[String]) -> Result<(), PodmanError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec![s("rm"), s("--force"), s("--ignore"), s("--time"), s("2")];
        args.extend(ids.iter().cloned());
        self.runner.run(PODMAN, &args)?;
        Ok(())
    }

    /// `podman run` with the given arguments (everything after `run`); returns the id.
    pub fn run_container(&self, run_args: &[String]) -> Result<String, PodmanError> {
        let mut args = vec![s("run")];
        args.extend(run_args.iter().cloned());
        let out = self.runner.run(PODMAN, &args)?;
        Ok(out.stdout_str().trim().to_string())
    }

    /// The last `tail` lines of the container's output (stdout and stderr interleaved).
    pub fn logs(&self, name: &str, tail: Option<usize>) -> Result<String, PodmanError> {
        let mut args = vec![s("logs")];
        if let Some(n) = tail {
            args.push(s("--tail"));
            args.push(n.to_string());
        }
        args.push(s(name));
        let out = self.runner.run(PODMAN, &args)?;
        let mut text = out.stdout_str();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(text)
    }

    /// `podman exec` in a running container. Callers must first make sure the node's
    /// systemd reached its default target (see `cluster::wait_for_systemd`).
    pub fn exec(&self, name: &str, cmd: &[String]) -> Result<String, PodmanError> {
        let mut args = vec![s("exec"), s(name)];
        args.extend(cmd.iter().cloned());
        Ok(self.runner.run(PODMAN, &args)?.stdout_str())
    }

    /// The text of a file in a running container (`podman exec NAME cat PATH`), or None
    /// when the file does not exist there. Same precondition as [`Self::exec`].
    pub fn read_file(&self, name: &str, path: &str) -> Result<Option<String>, PodmanError> {
        let args = vec![s("exec"), s(name), s("cat"), s(path)];
        let out = self.runner.try_run(PODMAN, &args)?;
        if out.success() {
            return Ok(Some(out.stdout_str()));
        }
        let stderr = out.stderr_str();
        // Only cat's own "PATH: No such file" means absent: a failed exec of a missing
        // `cat` also says "No such file", but not after PATH.
        if stderr.contains(&format!("{path}: No such file")) {
            return Ok(None);
        }
        Err(RunError::Failed {
            cmd: CommandLine {
                program: s(PODMAN),
                args,
            },
            code: out.code,
            stderr,
        }
        .into())
    }

    /// `podman save` of one image into an archive file of the given format.
    pub fn save_image(
        &self,
        image: &str,
        archive: &std::path::Path,
        format: ArchiveFormat,
    ) -> Result<(), PodmanError> {
        let args = vec![
            s("save"),
            s("--format"),
            s(format.as_str()),
            s("-o"),
            archive.display().to_string(),
            s(image),
        ];
        self.runner.run(PODMAN, &args)?;
        Ok(())
    }
}

/// The archive formats `podman save` writes that kinc uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `oci-archive`: what skopeo copies into CRI-O's store.
    OciArchive,
    /// `docker-archive`: its `manifest.json` RepoTags name the image, which `ctr images
    /// import` uses (podman's OCI archives carry no `io.containerd.image.name`).
    DockerArchive,
}

impl ArchiveFormat {
    /// The name `podman save --format` and skopeo's transports use.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::OciArchive => "oci-archive",
            ArchiveFormat::DockerArchive => "docker-archive",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct InspectedContainer {
    #[serde(rename = "Mounts", deserialize_with = "null_as_default")]
    mounts: Vec<InspectedMount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct InspectedMount {
    #[serde(rename = "Destination")]
    destination: String,
}

impl<R: Runner> Podman<R> {
    /// Where the container has mounts (`podman container inspect`).
    pub fn mount_destinations(&self, name: &str) -> Result<Vec<String>, PodmanError> {
        let v: Vec<InspectedContainer> = self.json_list(vec![
            s("container"),
            s("inspect"),
            s("--format"),
            s("json"),
            s(name),
        ])?;
        Ok(v.into_iter()
            .flat_map(|c| c.mounts)
            .map(|m| m.destination)
            .collect())
    }
}

/// Podman 4.3 ORs repeated `label=` filters for volumes, so every listing is
/// checked again here: an item must carry every pair.
fn has_labels(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
}

fn label_filters(labels: &[(&str, &str)]) -> Vec<String> {
    labels
        .iter()
        .flat_map(|(k, v)| [s("--filter"), format!("label={k}={v}")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CmdOutput, FakeRunner};

    const PS: &str = r#"[{"Id":"abc","Names":["kinc-a-control-plane"],"State":"running",
        "Labels":{"io.kinc.cluster":"a"},"Ports":[{"host_ip":"127.0.0.1","container_port":6443,
        "host_port":6444,"range":1,"protocol":"tcp"}],"Unknown":{"x":1}},
        {"Id":"def","Names":["x"],"State":"exited","Labels":null,"Ports":null}]"#;

    #[test]
    fn reads_ps_json_tolerantly() {
        let p = Podman::new(FakeRunner::with(|_| CmdOutput::ok(PS)));
        let cs = p.containers(&[]).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].name(), "kinc-a-control-plane");
        assert_eq!(cs[0].ports[0].host_port, 6444);
        assert!(cs[1].labels.is_empty() && cs[1].ports.is_empty());
        let only_a = p.containers(&[("io.kinc.cluster", "a")]).unwrap();
        assert_eq!(only_a.len(), 1);
        assert_eq!(
            p.runner().lines(),
            vec![
                "podman ps -a --format json",
                "podman ps -a --format json --filter label=io.kinc.cluster=a"
            ]
        );
    }

    #[test]
    fn listings_keep_only_items_with_every_label() {
        // What podman 4.3 answers to two label filters on `volume ls`: either match.
        let p = Podman::new(FakeRunner::with(|_| {
            CmdOutput::ok(
                r#"[{"Name":"mine","Labels":{"io.kinc.owner":"kinc","io.kinc.cluster":"a"}},
                    {"Name":"foreign","Labels":{"io.kinc.cluster":"a"}},
                    {"Name":"nolabels","Labels":null}]"#,
            )
        }));
        let v = p
            .volumes(&[("io.kinc.owner", "kinc"), ("io.kinc.cluster", "a")])
            .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "mine");
    }

    #[test]
    fn empty_listing_is_empty() {
        for out in ["", "null", "[]"] {
            let p = Podman::new(FakeRunner::with(move |_| CmdOutput::ok(out)));
            assert!(p.volumes(&[]).unwrap().is_empty());
        }
    }

    #[test]
    fn bad_json_names_the_command() {
        let p = Podman::new(FakeRunner::with(|_| CmdOutput::ok("{oops")));
        let e = p.volumes(&[("k", "v")]).unwrap_err().to_string();
        assert!(
            e.contains("volume ls --format json --filter label=k=v"),
            "{e}"
        );
    }

    #[test]
    fn info_and_versions() {
        let p = Podman::new(FakeRunner::with(|_| {
            CmdOutput::ok(
                r#"{"host":{"security":{"rootless":true},"cgroupVersion":"v1"},
              "store":{"graphRoot":"/home/u/.local/share/containers/storage"},
              "version":{"Version":"4.3.1"}}"#,
            )
        }));
        let i = p.info().unwrap();
        assert!(i.host.security.rootless);
        assert_eq!(
            i.store.graph_root,
            "/home/u/.local/share/containers/storage"
        );
        assert_eq!(parse_version(&i.version.version), Some((4, 3, 1)));
        assert_eq!(parse_version("5.4.0-dev"), Some((5, 4, 0)));
        assert_eq!(parse_version("5"), Some((5, 0, 0)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn rm_ignores_missing_and_skips_empty() {
        let p = Podman::new(FakeRunner::new());
        p.container_rm(&[]).unwrap();
        p.volume_rm(&[]).unwrap();
        p.container_rm(&["a".into(), "b".into()]).unwrap();
        assert_eq!(
            p.runner().lines(),
            vec!["podman rm --force --ignore --time 2 a b"]
        );
    }
}
