//! Writes OCI image-layout tar archives (`oci-layout`, `index.json`, `blobs/sha256/...`)
//! from local files, with no registry and no container tool: the node image needs the
//! Kubernetes component images built from local binaries, and the node image itself
//! built from a root filesystem directory.
//!
//! The output is deterministic (fixed mtime, sorted walk, canonical JSON), so the same
//! inputs give a byte-identical archive and the same image ID; the build caches on that.
//! Layers are uncompressed tar: the archives are loaded locally (`podman load`,
//! `ctr images import`), where compression only costs time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, Sha256Digest,
};
// Reading an archive back is for the tests: the build writes, kubelet and podman read.
#[cfg(test)]
use oci_spec::image::{ImageIndex, ImageManifest};
use oci_spec::OciSpecError;
use sha2::Digest as _;

/// The mtime of every tar entry (layers and archive), so rebuilds of unchanged inputs
/// are byte-identical. Every file gets the same time, so mtime comparisons inside the
/// image (e.g. systemd's `ConditionNeedsUpdate`) see nothing as newer.
pub const MTIME: u64 = 0;
/// [`MTIME`] as RFC 3339, the config's `created`.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// Annotation podman (containers/common libimage) reads as the image name on load.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd's importer (`ctr images import`) reads as the image name; newer
/// podman prefers it over [`ANNOTATION_REF_NAME`] too.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Blobs up to this size are kept in memory by [`read_index`]; JSON documents are far
/// smaller, layers are skipped over.
#[cfg(test)]
const SMALL_BLOB: u64 = 4 << 20;

/// One file-system entry of a layer built from [`LayerSource::Entries`]. `path` is the
/// path inside the image: relative, '/'-separated, no leading '/', no `.` or `..`
/// components. Owner and group are 0; mtime is [`MTIME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir { path: String, mode: u32 },
    /// A regular file whose content is read from `source` on the host while writing.
    File {
        path: String,
        source: PathBuf,
        mode: u32,
    },
    /// A regular file with the given content.
    Bytes {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// A symbolic link to `target` (kept as given; may be absolute).
    Symlink { path: String, target: String },
}

impl Entry {
    /// The path inside the image.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Bytes { path, .. }
            | Entry::Symlink { path, .. } => path,
        }
    }
}

/// What a layer is made of.
#[derive(Debug, Clone, Copy)]
pub enum LayerSource<'a> {
    /// Listed entries, written sorted by path whatever their order here. Parent
    /// directories that are not listed are added with mode 0755.
    Entries(&'a [Entry]),
    /// A whole root filesystem directory (e.g. a debootstrap tree), walked sorted by file
    /// name without following symlinks or crossing into other file systems (a mount point
    /// is kept as an empty directory). Each entry keeps its mode and numeric uid/gid as
    /// the host sees them; symlinks stay symlinks; hard links within the tree become tar
    /// hard links. Sockets, fifos and device nodes are skipped and listed in
    /// [`ArchiveInfo::skipped`]: the container runtime makes `/dev`. Extended attributes
    /// (file capabilities, SELinux labels) are not kept: rootless storage could not apply
    /// most of them, and the node image sets none that it needs.
    Dir(&'a Path),
}

/// The image's name and run-time configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Full reference with registry host and tag, e.g. `registry.k8s.io/pause:3.10`;
    /// `podman load` and `ctr images import` name the image exactly this.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What [`write_archive`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Hex sha256 of the config blob, without `sha256:`: the image ID podman shows.
    pub image_id: String,
    /// `sha256:<hex>` of each layer, in order (equal to the config's diff_ids).
    pub layer_digests: Vec<String>,
    /// Size of the archive file in bytes (the whole archive, when it holds several images).
    pub size: u64,
    /// Entries of [`LayerSource::Dir`] layers left out (sockets, fifos, devices), as paths
    /// inside the image.
    pub skipped: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid image name {name:?} (ImageSpec.name): {reason}")]
    BadName { name: String, reason: String },
    #[error("invalid layer entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("building the image {what}: {source}")]
    Spec {
        what: &'static str,
        source: OciSpecError,
    },
    #[error("serializing the image {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("invalid image archive {path}: {reason}")]
    #[cfg(test)]
    BadArchive { path: PathBuf, reason: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OciError + 'a {
    move |source| OciError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn spec_err(what: &'static str) -> impl FnOnce(OciSpecError) -> OciError {
    move |source| OciError::Spec { what, source }
}

/// Writes an OCI image-layout tar archive of `spec` with `layers` (first = bottom) to
/// `out`. The archive goes to a temporary file next to `out` that is renamed over it
/// when complete, so on error nothing is left at `out` (an older archive stays).
///
/// Each layer is streamed into the archive while its sha256 is computed, then its tar
/// header is written in place, so a layer is never held in memory or copied twice.
pub fn write_archive(
    spec: &ImageSpec,
    layers: &[LayerSource],
    out: &Path,
) -> Result<ArchiveInfo, OciError> {
    let mut infos = write_images(&[(spec, layers)], out)?;
    Ok(infos.remove(0))
}

/// Like [`write_archive`], for several images in one archive: the index names each, and a
/// blob two images share (an identical layer) is stored once. `ctr images import` imports
/// and names them all.
pub fn write_images(
    images: &[(&ImageSpec, &[LayerSource])],
    out: &Path,
) -> Result<Vec<ArchiveInfo>, OciError> {
    let mut seen = HashSet::new();
    for (spec, _) in images {
        validate_name(&spec.name)?;
        if !seen.insert(spec.name.as_str()) {
            return Err(OciError::BadName {
                name: spec.name.clone(),
                reason: "named twice in one archive".into(),
            });
        }
    }
    // Check every Entries layer before creating any file.
    let planned: Vec<Vec<Option<Vec<Planned>>>> = images
        .iter()
        .map(|(_, layers)| {
            layers
                .iter()
                .map(|l| match l {
                    LayerSource::Entries(e) => plan_entries(e).map(Some),
                    LayerSource::Dir(_) => Ok(None),
                })
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| OciError::Io {
            what: "writing image archive",
            path: out.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        })?
        .to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;

    let mut ar = ArchiveWriter {
        out: BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
        path: out,
        written: HashSet::new(),
    };

    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_err("layout"))?;
    ar.file("oci-layout", &to_json(&layout, "layout")?)?;
    ar.dir("blobs")?;
    ar.dir("blobs/sha256")?;

    let platform = PlatformBuilder::default()
        .architecture(oci_arch(std::env::consts::ARCH))
        .os(Os::Linux)
        .build()
        .map_err(spec_err("index"))?;
    let mut infos = Vec::new();
    let mut index_entries = Vec::new();
    for ((spec, layers), planned) in images.iter().zip(&planned) {
        let mut skipped = Vec::new();
        let mut layer_descs = Vec::new();
        for (source, plan) in layers.iter().zip(planned) {
            let blob = ar.blob_with(|w| match (source, plan) {
                (_, Some(plan)) => write_planned(plan, w, out),
                (LayerSource::Dir(root), None) => write_dir(root, w, out, &mut skipped),
                (LayerSource::Entries(_), None) => unreachable!("entries are planned"),
            })?;
            layer_descs.push(Descriptor::new(
                MediaType::ImageLayer,
                blob.size,
                blob.digest()?,
            ));
        }
        let layer_digests: Vec<String> =
            layer_descs.iter().map(|d| d.digest().to_string()).collect();

        let config = image_config(spec, &layer_digests)?;
        let config_blob = ar.blob(&to_json(&config, "config")?)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_blob.size,
                config_blob.digest()?,
            ))
            .layers(layer_descs)
            .build()
            .map_err(spec_err("manifest"))?;
        let manifest_blob = ar.blob(&to_json(&manifest, "manifest")?)?;

        let annotations = HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), spec.name.clone()),
            (ANNOTATION_CONTAINERD_NAME.to_string(), spec.name.clone()),
        ]);
        index_entries.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .size(manifest_blob.size)
                .digest(manifest_blob.digest()?)
                .annotations(annotations)
                .platform(platform.clone())
                .build()
                .map_err(spec_err("index"))?,
        );
        infos.push(ArchiveInfo {
            manifest_digest: format!("sha256:{}", manifest_blob.hex),
            image_id: config_blob.hex,
            layer_digests,
            size: 0,
            skipped,
        });
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()
        .map_err(spec_err("index"))?;
    ar.file("index.json", &to_json(&index, "index")?)?;
    ar.finish()?;

    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting the mode of", tmp.path()))?;
    file.sync_all()
        .map_err(io_err("syncing image archive", tmp.path()))?;
    let size = file
        .metadata()
        .map_err(io_err("reading the size of", tmp.path()))?
        .len();
    tmp.persist(out)
        .map_err(|e| io_err("renaming the new image archive to", out)(e.error))?;
    for i in &mut infos {
        i.size = size;
    }
    Ok(infos)
}

/// Reads an archive written by [`write_archive`] back: its image name (the
/// `org.opencontainers.image.ref.name` annotation) and its config. Checks on the way that
/// the index names one manifest, that both name annotations agree, that the manifest and
/// config blobs match their digests, and that every layer blob is present.
// Only tests call it so far; it is meant for the image checks.
#[cfg(test)]
pub fn read_index(archive: &Path) -> Result<(String, ImageConfiguration), OciError> {
    let bad = |reason: String| OciError::BadArchive {
        path: archive.to_path_buf(),
        reason,
    };
    let file = File::open(archive).map_err(io_err("opening image archive", archive))?;
    let mut tar = tar::Archive::new(file);
    let mut index_json = None;
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut all_blobs = HashSet::new();
    let entries = tar
        .entries_with_seek()
        .map_err(io_err("reading image archive", archive))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading image archive", archive))?;
        let path = entry
            .path()
            .map_err(io_err("reading image archive", archive))?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").to_string();
        let path = path.as_str();
        if path == "index.json" {
            index_json = Some(read_all(&mut entry, archive)?);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            all_blobs.insert(hex.to_string());
            if entry.header().size().unwrap_or(u64::MAX) <= SMALL_BLOB {
                small.insert(hex.to_string(), read_all(&mut entry, archive)?);
            }
        }
    }

    let index_json = index_json.ok_or_else(|| bad("no index.json".into()))?;
    let index = ImageIndex::from_reader(&index_json[..])
        .map_err(|e| bad(format!("index.json does not parse: {e}")))?;
    let [desc] = index.manifests().as_slice() else {
        return Err(bad(format!(
            "index.json lists {} manifests, expected 1",
            index.manifests().len()
        )));
    };
    let annotations = desc.annotations().clone().unwrap_or_default();
    let name = annotations.get(ANNOTATION_REF_NAME).ok_or_else(|| {
        bad(format!(
            "the manifest has no {ANNOTATION_REF_NAME} annotation"
        ))
    })?;
    if let Some(other) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        if other != name {
            return Err(bad(format!(
                "{ANNOTATION_REF_NAME} is {name:?} but {ANNOTATION_CONTAINERD_NAME} is {other:?}"
            )));
        }
    }

    let blob = |d: &Descriptor, what: &str| -> Result<&Vec<u8>, OciError> {
        let hex = d
            .as_digest_sha256()
            .ok_or_else(|| bad(format!("the {what} digest {} is not sha256", d.digest())))?;
        let data = small
            .get(hex)
            .ok_or_else(|| bad(format!("the {what} blob {hex} is missing")))?;
        if sha256_hex(data) != hex {
            return Err(bad(format!(
                "the {what} blob {hex} does not match its digest"
            )));
        }
        Ok(data)
    };
    let manifest = ImageManifest::from_reader(&blob(desc, "manifest")?[..])
        .map_err(|e| bad(format!("the manifest does not parse: {e}")))?;
    let config = ImageConfiguration::from_reader(&blob(manifest.config(), "config")?[..])
        .map_err(|e| bad(format!("the config does not parse: {e}")))?;
    for layer in manifest.layers() {
        let hex = layer.as_digest_sha256().unwrap_or_default();
        if !all_blobs.contains(hex) {
            return Err(bad(format!("the layer blob {} is missing", layer.digest())));
        }
    }
    Ok((name.clone(), config))
}

#[cfg(test)]
fn read_all(entry: &mut impl Read, archive: &Path) -> Result<Vec<u8>, OciError> {
    let mut buf = Vec::new();
    entry
        .read_to_end(&mut buf)
        .map_err(io_err("reading image archive", archive))?;
    Ok(buf)
}

/// The OCI (Go) name of a Rust target architecture.
pub fn oci_arch(rust_arch: &str) -> Arch {
    match rust_arch {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "x86" => Arch::i386,
        "powerpc64" => Arch::PowerPC64,
        "s390x" => Arch::s390x,
        "riscv64" => Arch::RISCV64,
        other => Arch::from(other),
    }
}

/// Checks that `name` is a full, tagged reference, so that podman and containerd both
/// store it under exactly this name (podman would prefix `localhost/` to a name without
/// a registry host, containerd `docker.io/library/`).
pub fn validate_name(name: &str) -> Result<(), OciError> {
    let bad = |reason: &str| {
        Err(OciError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    if name.contains('@') {
        return bad("has a digest: give only a tag, the digest is computed");
    }
    let last_slash = name.rfind('/');
    let (repo, tag) = match name.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&name[..i], &name[i + 1..]),
        _ => return bad("has no tag (add \":TAG\")"),
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !tag_ok {
        return bad("has an invalid tag (letters, digits, '_', '.', '-'; at most 128)");
    }
    if repo.len() > 255 {
        return bad("repository is longer than 255 characters");
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("repository must be lower case");
    }
    let mut parts = repo.split('/');
    let host = parts.next().unwrap_or_default();
    let path: Vec<&str> = parts.collect();
    if path.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return bad("has no registry host (e.g. \"registry.k8s.io/NAME:TAG\")");
    }
    let (hostname, port) = host.split_once(':').unwrap_or((host, ""));
    let host_ok = !hostname.is_empty()
        && hostname
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        && (host.len() == hostname.len()
            || (!port.is_empty() && port.chars().all(|c| c.is_ascii_digit())));
    if !host_ok {
        return bad("has an invalid registry host");
    }
    let component_ok = |c: &str| {
        c.starts_with(|c: char| c.is_ascii_alphanumeric())
            && c.ends_with(|c: char| c.is_ascii_alphanumeric())
            && c.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    };
    if !path.iter().all(|c| component_ok(c)) {
        return bad("has an invalid repository path component (a-z, 0-9, '.', '_', '-')");
    }
    Ok(())
}

fn image_config(spec: &ImageSpec, diff_ids: &[String]) -> Result<ImageConfiguration, OciError> {
    let mut config = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        config = config.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        config = config.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        config = config.env(spec.env.clone());
    }
    if let Some(user) = &spec.user {
        config = config.user(user.clone());
    }
    if let Some(dir) = &spec.working_dir {
        config = config.working_dir(dir.clone());
    }
    if let Some(signal) = &spec.stop_signal {
        config = config.stop_signal(signal.clone());
    }
    if !spec.labels.is_empty() {
        let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        config = config.labels(labels);
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids.to_vec())
        .build()
        .map_err(spec_err("config"))?;
    ImageConfigurationBuilder::default()
        .created(CREATED)
        .architecture(oci_arch(std::env::consts::ARCH))
        .os(Os::Linux)
        .config(config.build().map_err(spec_err("config"))?)
        .rootfs(rootfs)
        .build()
        .map_err(spec_err("config"))
}

/// Serializes with object keys sorted: oci-spec keeps labels and annotations in
/// `HashMap`s, whose order changes from run to run, and the digests must not.
fn to_json<T: serde::Serialize>(doc: &T, what: &'static str) -> Result<Vec<u8>, OciError> {
    let json = |source| OciError::Json { what, source };
    let mut value = serde_json::to_value(doc).map_err(json)?;
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(json)
}

#[cfg(test)]
fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A blob written into the archive.
struct Blob {
    hex: String,
    size: u64,
}

impl Blob {
    fn digest(&self) -> Result<Digest, OciError> {
        Sha256Digest::from_str(&self.hex)
            .map(Digest::from)
            .map_err(spec_err("digest"))
    }
}

/// The outer archive. Its entries are few and short-named, so headers are written
/// directly; only layers need the tar crate's long-name handling.
struct ArchiveWriter<'a> {
    out: BufWriter<&'a mut File>,
    /// The final archive path, for error messages.
    path: &'a Path,
    /// Blobs already in the archive: an identical layer is stored once.
    written: HashSet<String>,
}

impl<'a> ArchiveWriter<'a> {
    fn io(&self) -> impl FnOnce(io::Error) -> OciError + 'a {
        io_err("writing image archive", self.path)
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        Ok(h)
    }

    fn dir(&mut self, name: &str) -> Result<(), OciError> {
        let h = Self::header(name, tar::EntryType::Directory, 0o755, 0).map_err(self.io())?;
        self.out.write_all(h.as_bytes()).map_err(self.io())
    }

    fn file(&mut self, name: &str, data: &[u8]) -> Result<(), OciError> {
        let h = Self::header(name, tar::EntryType::Regular, 0o644, data.len() as u64)
            .map_err(self.io())?;
        self.out.write_all(h.as_bytes()).map_err(self.io())?;
        self.out.write_all(data).map_err(self.io())?;
        self.pad(data.len() as u64)
    }

    fn pad(&mut self, len: u64) -> Result<(), OciError> {
        let rest = (512 - len % 512) % 512;
        self.out
            .write_all(&[0u8; 512][..rest as usize])
            .map_err(self.io())
    }

    fn blob(&mut self, data: &[u8]) -> Result<Blob, OciError> {
        let io = self.io();
        self.blob_with(|w| w.write_all(data).map_err(io))
    }

    /// Appends a blob whose content `fill` streams: a placeholder header first, then the
    /// content through a hasher, then the real header (name = digest) over the
    /// placeholder.
    fn blob_with(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), OciError>,
    ) -> Result<Blob, OciError> {
        let start = self.out.stream_position().map_err(self.io())?;
        self.out.write_all(&[0u8; 512]).map_err(self.io())?;
        let mut hashing = Hashing {
            inner: &mut self.out,
            hasher: sha2::Sha256::new(),
            len: 0,
        };
        fill(&mut hashing)?;
        let Hashing {
            hasher, len: size, ..
        } = hashing;
        let hex = hex(&hasher.finalize());
        if !self.written.insert(hex.clone()) {
            // Already stored: later entries overwrite this copy; finish() cuts any rest.
            self.out.seek(SeekFrom::Start(start)).map_err(self.io())?;
            return Ok(Blob { hex, size });
        }
        self.pad(size)?;
        let end = self.out.stream_position().map_err(self.io())?;
        let h = Self::header(
            &format!("blobs/sha256/{hex}"),
            tar::EntryType::Regular,
            0o644,
            size,
        )
        .map_err(self.io())?;
        self.out.seek(SeekFrom::Start(start)).map_err(self.io())?;
        self.out.write_all(h.as_bytes()).map_err(self.io())?;
        self.out.seek(SeekFrom::Start(end)).map_err(self.io())?;
        Ok(Blob { hex, size })
    }

    /// Writes the end-of-archive marker and cuts off anything a dropped duplicate blob
    /// left past it.
    fn finish(mut self) -> Result<(), OciError> {
        self.out.write_all(&[0u8; 1024]).map_err(self.io())?;
        let end = self.out.stream_position().map_err(self.io())?;
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err("writing image archive", path)(e.into_error()))?;
        file.set_len(end)
            .map_err(io_err("writing image archive", path))
    }
}

/// Counts and hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `left` bytes, failing if the file shrank or grew while being read:
/// the tar header already promised its size.
struct ExactLen<R: Read> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if buf.is_empty() || self.inner.read(&mut [0u8; 1])? == 0 {
                return Ok(0);
            }
            return Err(io::Error::other("the file grew while being read"));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// One checked entry of an Entries layer.
#[derive(Debug)]
enum Planned<'a> {
    /// A parent directory that was not listed: created with mode 0755.
    Parent(String),
    Listed(&'a Entry),
}

/// Checks the paths, adds missing parent directories and orders everything by path
/// components, which puts each directory before its contents.
fn plan_entries(entries: &[Entry]) -> Result<Vec<Planned<'_>>, OciError> {
    let bad = |path: &str, reason: &str| OciError::BadEntry {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let mut listed: BTreeMap<Vec<&str>, &Entry> = BTreeMap::new();
    for e in entries {
        let path = e.path();
        if path.is_empty() {
            return Err(bad(path, "the path is empty"));
        }
        if path.starts_with('/') {
            return Err(bad(path, "the path must be relative (no leading '/')"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(bad(path, "the path has an empty, '.' or '..' component"));
        }
        if path.contains('\0') {
            return Err(bad(path, "the path contains a NUL byte"));
        }
        if let Entry::Symlink { target, .. } = e {
            if target.is_empty() || target.contains('\0') {
                return Err(bad(
                    path,
                    "the symlink target is empty or contains a NUL byte",
                ));
            }
        }
        if listed.insert(parts, e).is_some() {
            return Err(bad(path, "the path is listed twice"));
        }
    }
    let mut all: BTreeMap<Vec<&str>, Planned> = BTreeMap::new();
    for (parts, e) in &listed {
        for n in 1..parts.len() {
            let parent = &parts[..n];
            match listed.get(parent) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => {
                    return Err(bad(
                        e.path(),
                        &format!("the parent {:?} is not a directory", parent.join("/")),
                    ))
                }
                None => {
                    all.insert(parent.to_vec(), Planned::Parent(parent.join("/")));
                }
            }
        }
        all.insert(parts.clone(), Planned::Listed(e));
    }
    Ok(all.into_values().collect())
}

fn layer_header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    // GNU headers: the tar crate then writes long names and link targets as GNU
    // extensions, which Go's archive/tar (containers/storage, containerd) reads.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}

fn write_planned(plan: &[Planned], w: &mut dyn Write, archive: &Path) -> Result<(), OciError> {
    let mut b = tar::Builder::new(w);
    for p in plan {
        let entry = match p {
            Planned::Parent(path) => &Entry::Dir {
                path: path.clone(),
                mode: 0o755,
            },
            Planned::Listed(e) => e,
        };
        let path = entry.path();
        let res = match entry {
            Entry::Dir { mode, .. } => {
                let mut h = layer_header(tar::EntryType::Directory, *mode, 0, 0, 0);
                b.append_data(&mut h, path, io::empty())
            }
            Entry::Bytes { data, mode, .. } => {
                let mut h = layer_header(tar::EntryType::Regular, *mode, 0, 0, data.len() as u64);
                b.append_data(&mut h, path, &data[..])
            }
            Entry::Symlink { target, .. } => {
                let mut h = layer_header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
                b.append_link(&mut h, path, target)
            }
            Entry::File { source, mode, .. } => {
                let file = File::open(source).map_err(io_err("opening", source))?;
                let meta = file
                    .metadata()
                    .map_err(io_err("reading metadata of", source))?;
                if !meta.is_file() {
                    return Err(OciError::BadEntry {
                        path: path.to_string(),
                        reason: format!("the source {} is not a regular file", source.display()),
                    });
                }
                let mut h = layer_header(tar::EntryType::Regular, *mode, 0, 0, meta.len());
                let data = ExactLen {
                    inner: file,
                    left: meta.len(),
                };
                b.append_data(&mut h, path, data)
                    .map_err(io_err("adding to an image layer", source))?;
                continue;
            }
        };
        res.map_err(|source| OciError::Io {
            what: "adding to an image layer",
            path: PathBuf::from(path),
            source,
        })?;
    }
    b.finish().map_err(io_err("writing image archive", archive))
}

fn write_dir(
    root: &Path,
    w: &mut dyn Write,
    archive: &Path,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), OciError> {
    let meta = fs::metadata(root).map_err(io_err("reading root filesystem", root))?;
    if !meta.is_dir() {
        return Err(OciError::Io {
            what: "reading root filesystem",
            path: root.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut b = tar::Builder::new(w);
    // First path seen for each multiply linked inode.
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name();
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("symlink loop"));
            OciError::Io {
                what: "walking",
                path,
                source,
            }
        })?;
        let host = item.path();
        let rel = host.strip_prefix(root).unwrap_or(host).to_path_buf();
        let meta = item.metadata().map_err(|e| OciError::Io {
            what: "reading metadata of",
            path: host.to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("unknown")),
        })?;
        let add = io_err("adding to an image layer", host);
        let ft = meta.file_type();
        let (mode, uid, gid) = (meta.mode(), u64::from(meta.uid()), u64::from(meta.gid()));
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                let mut h = layer_header(tar::EntryType::Link, mode, uid, gid, 0);
                b.append_link(&mut h, &rel, first).map_err(add)?;
                continue;
            }
            if ft.is_file() || ft.is_symlink() {
                links.insert(key, rel.clone());
            }
        }
        if ft.is_dir() {
            let mut h = layer_header(tar::EntryType::Directory, mode, uid, gid, 0);
            b.append_data(&mut h, &rel, io::empty()).map_err(add)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(host).map_err(io_err("reading symlink", host))?;
            let mut h = layer_header(tar::EntryType::Symlink, mode, uid, gid, 0);
            b.append_link(&mut h, &rel, target).map_err(add)?;
        } else if ft.is_file() {
            let file = File::open(host).map_err(io_err("opening", host))?;
            let mut h = layer_header(tar::EntryType::Regular, mode, uid, gid, meta.len());
            let data = ExactLen {
                inner: file,
                left: meta.len(),
            };
            b.append_data(&mut h, &rel, data).map_err(add)?;
        } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            skipped.push(rel);
        }
    }
    b.finish().map_err(io_err("writing image archive", archive))
}

#[cfg(test)]
#[path = "oci_tests.rs"]
mod tests;
