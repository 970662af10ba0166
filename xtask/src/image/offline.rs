//! `cargo xtask image --offline`: the node image built with no registry and no
//! distribution Kubernetes packages.
//!
//! Stages, each cached under the image cache root and keyed by its inputs:
//! 1. `go`: Kubernetes, etcd, CoreDNS and local-path-provisioner from the pinned wrapper
//!    modules in `image/go/` ([`super::gobuild`]).
//! 2. `rust`: kinc's node binaries and `pause`, static.
//! 3. `base`: a Debian trixie root filesystem from debootstrap, pruned for a container.
//! 4. `images`: the component images kubeadm and the manifests name, written as OCI
//!    archives by [`super::oci`] under exactly those names.
//! 5. `node`: base + `image/files` + `image/offline/files` + manifests + binaries +
//!    component images, units enabled, written as one OCI archive; then `podman load`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use kinc_types::node::{ImageList, PreloadedImage};
use kinc_types::versions as v;

use super::context::{Binary, BINARIES};
use super::gobuild::{self, GoEnv};
use super::oci::{self, Entry, ImageSpec, LayerSource};
use crate::hostvm::build::{self as hb, Lock};
use crate::hostvm::config::fnv1a64;

/// Bump when the recipe below changes in a way its key material does not show.
const RECIPE: u32 = 1;

/// Packages of the node's root filesystem. containerd is the CRI: CRI-O is not served by
/// the Go module proxy (403 for every version), so it cannot be built here.
pub const NODE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "crun",
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "procps",
    "kmod",
    "ca-certificates",
    "fuse-overlayfs",
    "busybox-static",
    // containerd's CRI brings up every pod's `lo` with the CNI `loopback` plugin.
    "containernetworking-plugins",
    "ethtool",
    "socat",
];

/// Units a user namespace cannot run, or that only cost boot time in a node container;
/// the Fedora Containerfile masks the same list (a test compares them).
pub const MASKED_UNITS: &[&str] = &[
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "getty.target",
    "console-getty.service",
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "systemd-update-utmp.service",
    "systemd-binfmt.service",
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "systemd-resolved.service",
    "systemd-homed.service",
    "systemd-userdbd.service",
    "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
];

/// Units the node starts at boot (containerd is enabled by its package).
pub const ENABLED_UNITS: &[&str] = &[
    "kinc-cgroup-setup.service",
    "kinc-prepare.service",
    "kinc-init.service",
    "containerd.service",
    "kubelet.service",
    "kincnet-policy.path",
];

/// Where the preloaded component images go in the node.
pub const IMAGES_DIR: &str = "usr/share/kinc/images";

/// `$KINC_IMAGE_CACHE`, else `/var/cache/kinc-image` for root (outside any checkout, so a
/// fresh clone on the same machine reuses it), else `<target>/kinc-image`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("KINC_IMAGE_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if hb::is_root() => PathBuf::from("/var/cache/kinc-image"),
        _ => hb::target_dir().join("kinc-image"),
    }
}

/// The default archive path: `target/kinc-node-<version>.oci.tar`.
pub fn default_output() -> PathBuf {
    hb::target_dir().join(format!("kinc-node-{}.oci.tar", v::KUBERNETES))
}

struct Stage {
    name: &'static str,
    started: Instant,
}

impl Stage {
    fn start(name: &'static str, what: &str) -> Self {
        eprintln!("image: [{name}] {what}");
        Self {
            name,
            started: Instant::now(),
        }
    }
    fn done(self, what: &str) {
        eprintln!(
            "image: [{}] {what} ({:.1} s)",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

pub struct Offline {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub tag: String,
    pub output: PathBuf,
    pub load: bool,
}

/// What the rust stage must build for the offline image: the node binaries and pause.
pub const PAUSE: Binary = Binary {
    krate: "kinc-pause",
    bin: "pause",
    install: "/pause (image registry.k8s.io/pause)",
};

impl Offline {
    pub fn run(&self, rust_bins: &[(Binary, PathBuf)]) -> Result<PathBuf> {
        let total = Instant::now();
        if !hb::is_root() {
            bail!("the offline node image needs root: debootstrap and a root-owned tree");
        }
        fs::create_dir_all(&self.cache)
            .with_context(|| format!("creating {}", self.cache.display()))?;
        let _lock = Lock::exclusive(&self.cache.join("lock"))?;

        // 1. go
        let s = Stage::start("go", "Kubernetes, etcd, CoreDNS, local-path-provisioner");
        let env = GoEnv {
            cache: self.cache.clone(),
        };
        let go_version = env.version()?;
        let mut go_bins: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
        for c in gobuild::components() {
            let dir = gobuild::ensure_built(&env, &self.root.join("image/go"), &c, &go_version)?;
            for b in c.names() {
                go_bins.insert(b, dir.join(b));
            }
        }
        verify_programs(&go_bins, &find_bin(rust_bins, PAUSE.bin)?)?;
        s.done(&go_version);

        // 3. base
        let s = Stage::start("base", "Debian root filesystem (debootstrap)");
        let base = self.ensure_base()?;
        s.done(&base.display().to_string());

        // 4. component images
        let s = Stage::start("images", "component images as OCI archives");
        let pause = find_bin(rust_bins, PAUSE.bin)?;
        let archives = component_images(&go_bins, &pause, &base)?;
        let mut names: Vec<String> = archives
            .iter()
            .flat_map(|a| a.images.iter().map(|c| c.spec.name.clone()))
            .collect();
        names.sort();
        if names != preloaded_names() {
            bail!(
                "stage images: built {names:?}, but the node must preload {:?}",
                preloaded_names()
            );
        }
        let mut images = Vec::new();
        for a in &archives {
            images.push((a, self.ensure_archive(a)?));
        }
        s.done(&format!(
            "{} images in {} archives",
            names.len(),
            images.len()
        ));

        // 5. node
        let s = Stage::start("node", "node root filesystem and archive");
        let key = self.node_key(&base, rust_bins, &go_bins, &images)?;
        let key_file = self.output.with_extension("key");
        if self.output.is_file() && fs::read_to_string(&key_file).ok().as_deref() == Some(&key) {
            s.done(&format!("unchanged: {}", self.output.display()));
        } else {
            let stage_dir = self.cache.join("node-stage");
            self.stage_node(&stage_dir, &base, rust_bins, &go_bins, &images)?;
            if let Some(dir) = self.output.parent() {
                fs::create_dir_all(dir)?;
            }
            let info = oci::write_archive(
                &node_spec(&self.tag),
                &[LayerSource::Dir(&stage_dir)],
                &self.output,
            )
            .with_context(|| format!("writing {}", self.output.display()))?;
            kinc_types::fsutil::write_atomic(&key_file, key.as_bytes(), None)?;
            hb::remove_tree(&stage_dir)?;
            s.done(&format!(
                "{} ({} MiB, image {})",
                self.output.display(),
                info.size >> 20,
                &info.image_id[..12]
            ));
        }

        if self.load {
            self.podman_load()?;
        }
        eprintln!(
            "image: offline node image {} ready in {:.0} s",
            self.tag,
            total.elapsed().as_secs_f64()
        );
        Ok(self.output.clone())
    }

    fn ensure_base(&self) -> Result<PathBuf> {
        let mirror = hb::mirror()?;
        let key = format!("{:016x}", fnv1a64(base_key_material(&mirror).as_bytes()));
        let dir = self.cache.join(format!("base-{}-{key}", v::DEBIAN_SUITE));
        let rootfs = dir.join("rootfs");
        if dir.join("done").is_file() {
            return Ok(rootfs);
        }
        if dir.exists() {
            hb::remove_tree(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let debs = self.cache.join("debs");
        fs::create_dir_all(&debs)?;
        let log = dir.join("debootstrap.log");
        let mut c = Command::new("debootstrap");
        c.arg(format!("--cache-dir={}", debs.display()))
            .arg("--variant=minbase")
            .arg(format!("--include={}", NODE_PACKAGES.join(",")))
            .arg(v::DEBIAN_SUITE)
            .arg(&rootfs)
            .arg(&mirror)
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(dir.join("debootstrap.err"))?);
        let st = c
            .status()
            .context("running debootstrap (apt-get install debootstrap)")?;
        if !st.success() {
            bail!(
                "stage base: debootstrap of {} from {mirror} failed ({st}); see {} and {}",
                v::DEBIAN_SUITE,
                log.display(),
                dir.join("debootstrap.err").display()
            );
        }
        prune(&rootfs)?;
        fs::write(dir.join("done"), base_key_material(&mirror))?;
        Ok(rootfs)
    }

    fn ensure_archive(&self, a: &ComponentArchive) -> Result<PathBuf> {
        let mut m = format!("recipe {RECIPE}\n");
        for c in &a.images {
            let _ = writeln!(m, "{:?}", c.spec);
            for (i, layer) in c.layers.iter().enumerate() {
                let _ = writeln!(m, "layer {i}");
                for e in layer {
                    let _ = writeln!(m, "{e:?}");
                    if let Entry::File { source, .. } = e {
                        let md = fs::metadata(source).with_context(|| {
                            format!("image {}: {}", c.spec.name, source.display())
                        })?;
                        let _ = writeln!(m, "{} {}", md.len(), mtime(&md));
                    }
                }
            }
        }
        let stem = a.file.trim_end_matches(".tar");
        let out = self
            .cache
            .join("images")
            .join(format!("{stem}-{:016x}.tar", fnv1a64(m.as_bytes())));
        if !out.is_file() {
            fs::create_dir_all(self.cache.join("images"))?;
            let layers: Vec<Vec<LayerSource>> = a
                .images
                .iter()
                .map(|c| c.layers.iter().map(|l| LayerSource::Entries(l)).collect())
                .collect();
            let images: Vec<(&ImageSpec, &[LayerSource])> = a
                .images
                .iter()
                .zip(&layers)
                .map(|(c, l)| (&c.spec, &l[..]))
                .collect();
            oci::write_images(&images, &out)
                .with_context(|| format!("stage images: writing {}", a.file))?;
        }
        Ok(out)
    }

    fn node_key(
        &self,
        base: &Path,
        rust_bins: &[(Binary, PathBuf)],
        go_bins: &BTreeMap<&'static str, PathBuf>,
        images: &[(&ComponentArchive, PathBuf)],
    ) -> Result<String> {
        let mut m = format!(
            "recipe {RECIPE}\ntag {}\nbase {}\n",
            self.tag,
            base.display()
        );
        for (b, p) in rust_bins {
            let md = fs::metadata(p)?;
            let _ = writeln!(m, "rust {} {} {}", b.bin, md.len(), mtime(&md));
        }
        for (b, p) in go_bins {
            let _ = writeln!(m, "go {b} {}", p.display());
        }
        for (a, p) in images {
            let _ = writeln!(m, "images {} {}", a.file, p.display());
        }
        for dir in ["image/files", "image/offline/files", "manifests"] {
            tree_material(&self.root.join(dir), &mut m)?;
        }
        Ok(format!("{:016x}\n", fnv1a64(m.as_bytes())))
    }

    fn stage_node(
        &self,
        stage: &Path,
        base: &Path,
        rust_bins: &[(Binary, PathBuf)],
        go_bins: &BTreeMap<&'static str, PathBuf>,
        images: &[(&ComponentArchive, PathBuf)],
    ) -> Result<()> {
        if stage.exists() {
            hb::remove_tree(stage)?;
        }
        // cp keeps owners, modes, links and hard links exactly as debootstrap made them.
        let st = Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(stage)
            .status()
            .context("running cp")?;
        if !st.success() {
            bail!(
                "stage node: copying {} to {} failed ({st})",
                base.display(),
                stage.display()
            );
        }
        for dir in ["image/files", "image/offline/files"] {
            super::context::copy_tree(&self.root.join(dir), stage)?;
        }
        super::context::copy_tree(
            &self.root.join("manifests"),
            &stage.join("usr/share/kinc/manifests"),
        )?;
        for b in BINARIES {
            let src = find_bin(rust_bins, b.bin)?;
            install(&src, &stage.join(b.install.trim_start_matches('/')))?;
        }
        // One multi-call binary, and the node's three programs as links to it.
        let bin = stage.join("usr/local/bin");
        install(&go_bins[gobuild::KUBE], &bin.join(gobuild::KUBE))?;
        for b in NODE_KUBE_PROGRAMS {
            std::os::unix::fs::symlink(gobuild::KUBE, bin.join(b))
                .with_context(|| format!("linking {b} in {}", bin.display()))?;
        }
        let img_dir = stage.join(IMAGES_DIR);
        fs::create_dir_all(&img_dir)?;
        let mut list = Vec::new();
        for (a, p) in images {
            fs::copy(p, img_dir.join(&a.file))
                .with_context(|| format!("copying {} into the node", p.display()))?;
            for c in &a.images {
                list.push(PreloadedImage {
                    name: c.spec.name.clone(),
                    file: a.file.clone(),
                });
            }
        }
        let list = ImageList(list);
        fs::write(
            img_dir.join(kinc_types::node::IMAGE_LIST_FILE),
            serde_json::to_vec_pretty(&list)?,
        )?;
        for d in [
            "var/lib/kinc",
            "etc/kinc/config",
            "etc/kubernetes/manifests",
            "usr/lib/kinc/host-storage",
            "etc/cni/net.d",
        ] {
            fs::create_dir_all(stage.join(d))?;
        }
        let root_arg = format!("--root={}", stage.display());
        for (verb, units) in [("enable", ENABLED_UNITS), ("mask", MASKED_UNITS)] {
            let o = Command::new("systemctl")
                .arg(&root_arg)
                .arg(verb)
                .args(units)
                .output()
                .context("running systemctl --root")?;
            if !o.status.success() {
                bail!(
                    "stage node: systemctl {verb} failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
        }
        let o = Command::new("systemctl")
            .arg(&root_arg)
            .args(["set-default", "multi-user.target"])
            .output()?;
        if !o.status.success() {
            bail!(
                "stage node: systemctl set-default failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    }

    fn podman_load(&self) -> Result<()> {
        let Ok(o) = Command::new("podman").arg("--version").output() else {
            eprintln!(
                "image: podman not found; load the archive with `podman load -i {}`",
                self.output.display()
            );
            return Ok(());
        };
        if !o.status.success() {
            eprintln!(
                "image: podman does not run here; archive left at {}",
                self.output.display()
            );
            return Ok(());
        }
        let s = Stage::start("load", "podman load");
        let st = Command::new("podman")
            .args(["load", "--quiet", "--input"])
            .arg(&self.output)
            .status()
            .context("running podman load")?;
        if !st.success() {
            bail!("podman load -i {} failed ({st})", self.output.display());
        }
        s.done(&self.tag);
        Ok(())
    }
}

/// A Go program of the offline image, from the build cache (built if it is not there).
pub fn built_go_binary(bin: &str) -> Result<PathBuf> {
    let root = hb::workspace_root();
    let env = GoEnv {
        cache: cache_root(),
    };
    let go_version = env.version()?;
    for c in gobuild::components() {
        if c.names().any(|b| b == bin) {
            return Ok(
                gobuild::ensure_built(&env, &root.join("image/go"), &c, &go_version)?.join(bin),
            );
        }
    }
    bail!("no Go component builds {bin}")
}

/// The file an image gets in the node's images dir: its name made into a file name.
pub fn image_file_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    format!("{}.tar", last.replace(':', "_"))
}

fn find_bin(bins: &[(Binary, PathBuf)], bin: &str) -> Result<PathBuf> {
    bins.iter()
        .find(|(b, _)| b.bin == bin)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("the offline image needs the binary {bin}, which was not built"))
}

fn install(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn mtime(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime()
}

/// Appends every file under `dir` (path, size, mtime) to `m`.
fn tree_material(dir: &Path, m: &mut String) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let md = fs::symlink_metadata(&p)?;
        if md.is_dir() {
            tree_material(&p, m)?;
        } else if md.file_type().is_symlink() {
            // The target names a path in the node, not on this host.
            let _ = writeln!(m, "link {} {}", p.display(), fs::read_link(&p)?.display());
        } else {
            let _ = writeln!(
                m,
                "file {} {}",
                p.display(),
                fs::read(&p).map(|b| fnv1a64(&b)).unwrap_or(0)
            );
        }
    }
    Ok(())
}

pub fn base_key_material(mirror: &str) -> String {
    format!(
        "recipe {RECIPE}\nsuite {}\nmirror {mirror}\npackages {}\n",
        v::DEBIAN_SUITE,
        NODE_PACKAGES.join(",")
    )
}

/// Removes what a container never uses: docs, man pages, apt's lists and caches, logs.
fn prune(rootfs: &Path) -> Result<()> {
    for d in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
    ] {
        let p = rootfs.join(d);
        if p.exists() {
            hb::remove_tree(&p)?;
            fs::create_dir_all(&p)?;
        }
    }
    // systemd makes a machine ID for each container; an empty file means "generate".
    fs::write(rootfs.join("etc/machine-id"), "")?;
    Ok(())
}

/// The node image's configuration: systemd as PID 1, stopped by SIGRTMIN+3.
pub fn node_spec(tag: &str) -> ImageSpec {
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.title".into(), "kinc node".into());
    labels.insert(
        "org.opencontainers.image.description".into(),
        "Kubernetes in a single rootless Podman container".into(),
    );
    labels.insert("io.kinc.kubernetes-version".into(), v::KUBERNETES.into());
    labels.insert("io.kinc.cri".into(), "containerd".into());
    labels.insert("io.kinc.base".into(), format!("debian-{}", v::DEBIAN_SUITE));
    ImageSpec {
        name: tag.to_string(),
        entrypoint: vec!["/sbin/init".into()],
        cmd: vec![],
        env: vec![
            "container=podman".into(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ],
        user: None,
        working_dir: None,
        // systemd shuts down on SIGRTMIN+3 (SIGTERM would make it re-execute).
        stop_signal: Some("SIGRTMIN+3".into()),
        labels,
    }
}

/// The names of every image the node preloads.
pub fn preloaded_names() -> Vec<String> {
    let mut n = v::kubeadm_images();
    n.push(format!(
        "docker.io/rancher/local-path-provisioner:{}",
        v::LOCAL_PATH_PROVISIONER
    ));
    n.push(format!("docker.io/library/busybox:{}", v::BUSYBOX));
    n.sort();
    n
}

/// One component image: its spec and its layers' files (first = bottom).
pub struct ComponentImage {
    pub spec: ImageSpec,
    pub layers: Vec<Vec<Entry>>,
}

impl ComponentImage {
    fn one_layer(spec: ImageSpec, entries: Vec<Entry>) -> Self {
        Self {
            spec,
            layers: vec![entries],
        }
    }
}

/// Images written to one archive (the node's `file` in its images dir): a layer they
/// share is stored and imported once.
pub struct ComponentArchive {
    pub file: String,
    pub images: Vec<ComponentImage>,
}

impl ComponentArchive {
    fn single(c: ComponentImage) -> Self {
        Self {
            file: image_file_name(&c.spec.name),
            images: vec![c],
        }
    }
}

/// The Kubernetes programs the node itself runs (links to the multi-call binary).
pub const NODE_KUBE_PROGRAMS: &[&str] = &["kubeadm", "kubelet", "kubectl"];

/// The control-plane images' programs: every other program of the multi-call binary, in
/// one layer the four images share.
fn image_kube_programs() -> impl Iterator<Item = &'static str> {
    gobuild::KUBE_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !NODE_KUBE_PROGRAMS.contains(p))
}

const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

fn bin_entry(path: &str, source: &Path) -> Entry {
    Entry::File {
        path: path.into(),
        source: source.to_path_buf(),
        mode: 0o755,
    }
}

fn basic_dirs() -> Vec<Entry> {
    vec![
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
        Entry::Bytes {
            path: "etc/passwd".into(),
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
            mode: 0o644,
        },
        Entry::Bytes {
            path: "etc/group".into(),
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            mode: 0o644,
        },
    ]
}

fn spec(name: String, entrypoint: &[&str]) -> ImageSpec {
    ImageSpec {
        name,
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        env: vec![PATH_ENV.into()],
        ..Default::default()
    }
}

/// Every image the node preloads: what `kubeadm config images list` names for the pinned
/// version, and what `manifests/` runs. The four Kubernetes images share one layer (the
/// multi-call binary and a link for each program) and one archive.
pub fn component_images(
    go: &BTreeMap<&'static str, PathBuf>,
    pause: &Path,
    base: &Path,
) -> Result<Vec<ComponentArchive>> {
    let mut kube_layer = basic_dirs();
    kube_layer.push(bin_entry("usr/local/bin/kube", &go[gobuild::KUBE]));
    for p in image_kube_programs() {
        kube_layer.push(Entry::Symlink {
            path: format!("usr/local/bin/{p}"),
            target: gobuild::KUBE.into(),
        });
    }
    let mut kubernetes = Vec::new();
    for c in image_kube_programs() {
        let mut layers = vec![kube_layer.clone()];
        // kube-proxy's nftables mode runs `nft`: it comes with its libraries from the base.
        if c == "kube-proxy" {
            layers.push(with_libraries(base, &["usr/sbin/nft"])?);
        }
        kubernetes.push(ComponentImage {
            spec: spec(format!("registry.k8s.io/{c}:{}", v::KUBERNETES), &[]),
            layers,
        });
    }
    let mut out = vec![ComponentArchive {
        file: format!("kubernetes_{}.tar", v::KUBERNETES),
        images: kubernetes,
    }];
    let mut e = basic_dirs();
    e.push(bin_entry("usr/local/bin/etcd", &go["etcd"]));
    e.push(Entry::Dir {
        path: "var/lib/etcd".into(),
        mode: 0o700,
    });
    out.push(ComponentArchive::single(ComponentImage::one_layer(
        spec(format!("registry.k8s.io/etcd:{}", v::ETCD_IMAGE_TAG), &[]),
        e,
    )));
    let mut e = basic_dirs();
    e.push(bin_entry("coredns", &go["coredns"]));
    out.push(ComponentArchive::single(ComponentImage::one_layer(
        spec(
            format!("registry.k8s.io/coredns/coredns:{}", v::COREDNS),
            &["/coredns"],
        ),
        e,
    )));
    out.push(ComponentArchive::single(ComponentImage::one_layer(
        spec(format!("registry.k8s.io/pause:{}", v::PAUSE), &["/pause"]),
        vec![bin_entry("pause", pause)],
    )));
    let mut e = basic_dirs();
    e.push(bin_entry(
        "usr/bin/local-path-provisioner",
        &go["local-path-provisioner"],
    ));
    out.push(ComponentArchive::single(ComponentImage::one_layer(
        spec(
            format!(
                "docker.io/rancher/local-path-provisioner:{}",
                v::LOCAL_PATH_PROVISIONER
            ),
            &[],
        ),
        e,
    )));
    out.push(ComponentArchive::single(busybox_image(base)?));
    Ok(out)
}

/// `docker.io/library/busybox:<Debian's busybox-static version>`: the local-path helper pod
/// and kinc's test workloads run it.
fn busybox_image(base: &Path) -> Result<ComponentImage> {
    let bb = base.join("usr/bin/busybox");
    let o = Command::new(&bb)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", bb.display()))?;
    if !o.status.success() {
        bail!("{} --list failed ({})", bb.display(), o.status);
    }
    let head = Command::new(&bb).output()?;
    let version = busybox_version(&String::from_utf8_lossy(&head.stdout))
        .context("reading busybox's version from its help text")?;
    if version != v::BUSYBOX {
        bail!(
            "Debian {}'s busybox-static is {version}, but kinc_types::versions::BUSYBOX says {}:              the manifests and `kinc test` name busybox:{}",
            v::DEBIAN_SUITE,
            v::BUSYBOX,
            v::BUSYBOX
        );
    }
    let mut e = basic_dirs();
    e.push(bin_entry("bin/busybox", &bb));
    for applet in String::from_utf8_lossy(&o.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            e.push(Entry::Symlink {
                path: format!("bin/{applet}"),
                target: "busybox".into(),
            });
        }
    }
    e.push(Entry::Symlink {
        path: "sbin".into(),
        target: "bin".into(),
    });
    let mut s = spec(format!("docker.io/library/busybox:{version}"), &[]);
    s.env = vec!["PATH=/bin".into()];
    s.cmd = vec!["sh".into()];
    Ok(ComponentImage::one_layer(s, e))
}

/// "1.37" from "BusyBox v1.37.0 (Debian 1:1.37.0-6+b9) multi-call binary.".
pub fn busybox_version(help: &str) -> Option<String> {
    let v = help.split_whitespace().nth(1)?.strip_prefix('v')?;
    let mut parts = v.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// `files` of the base (paths relative to it) plus every shared library they load, as
/// `ldd` run in the base reports them.
fn with_libraries(base: &Path, files: &[&str]) -> Result<Vec<Entry>> {
    let mut paths: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    for f in files {
        let o = Command::new("chroot")
            .arg(base)
            .args(["ldd", &format!("/{f}")])
            .output()
            .context("running ldd in the base root filesystem")?;
        if !o.status.success() {
            bail!(
                "ldd /{f} in {} failed: {}",
                base.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        paths.extend(ldd_paths(&String::from_utf8_lossy(&o.stdout)));
    }
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for p in paths {
        let rel = p.trim_start_matches('/').to_string();
        // Copy the file a symlink names too, so the image has what the loader opens.
        let real =
            fs::canonicalize(base.join(&rel)).with_context(|| format!("{} in the base", rel))?;
        let real_rel = real
            .strip_prefix(base)
            .unwrap_or(&real)
            .to_string_lossy()
            .into_owned();
        out.push(Entry::File {
            path: real_rel.clone(),
            source: real.clone(),
            mode: 0o755,
        });
        if real_rel != rel {
            out.push(Entry::Symlink {
                path: rel,
                target: format!("/{real_rel}"),
            });
        }
    }
    Ok(out)
}

/// The absolute paths in `ldd` output.
pub fn ldd_paths(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
        })
        .collect()
}

/// What each Go program of the node and of its component images, and pause, is run with, and what its output must
/// contain: the version pinned in `kinc_types::versions`.
pub fn version_probes() -> Vec<(&'static str, &'static [&'static str], String)> {
    let k8s = format!("Kubernetes {}", v::KUBERNETES);
    vec![
        (
            "kubeadm",
            &["version", "-o", "short"][..],
            v::KUBERNETES.to_string(),
        ),
        ("kubelet", &["--version"], k8s.clone()),
        (
            "kubectl",
            &["version", "--client", "-o", "yaml"],
            format!("gitVersion: {}", v::KUBERNETES),
        ),
        ("kube-apiserver", &["--version"], k8s.clone()),
        ("kube-controller-manager", &["--version"], k8s.clone()),
        ("kube-scheduler", &["--version"], k8s.clone()),
        ("kube-proxy", &["--version"], k8s),
        (
            "etcd",
            &["--version"],
            format!("etcd Version: {}", v::ETCD.trim_start_matches('v')),
        ),
        (
            "coredns",
            &["-version"],
            format!("CoreDNS-{}", v::COREDNS.trim_start_matches('v')),
        ),
        (
            "local-path-provisioner",
            &["--version"],
            format!("version {}", v::LOCAL_PATH_PROVISIONER),
        ),
        ("pause", &["-v"], format!("pause version {}", v::PAUSE)),
    ]
}

/// Every program the node and its component images carry prints its pinned version
/// (checked once, on the built binaries the node and the images copy).
fn verify_programs(go: &BTreeMap<&'static str, PathBuf>, pause: &Path) -> Result<()> {
    for (bin, args, want) in version_probes() {
        let p = if bin == "pause" { pause } else { &go[bin] };
        let o = Command::new(p)
            .args(args)
            .output()
            .with_context(|| format!("running {}", p.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !o.status.success() || !text.contains(&want) {
            bail!(
                "stage go: {bin} {} printed {:?}, not {want:?}",
                args.join(" "),
                text.trim()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_units_match_the_fedora_containerfile() {
        let cf = fs::read_to_string(hb::workspace_root().join("image/Containerfile")).unwrap();
        let from = cf
            .find("RUN systemctl mask")
            .expect("the Containerfile masks units");
        let to = from + cf[from..].find("&& systemctl set-default").unwrap();
        let mut units: Vec<&str> = cf[from..to]
            .split_whitespace()
            .filter(|w| w.contains('.'))
            .collect();
        units.sort();
        let mut want = MASKED_UNITS.to_vec();
        want.sort();
        assert_eq!(units, want);
    }

    #[test]
    fn every_image_the_manifests_run_is_preloaded() {
        let names = preloaded_names();
        let mut seen = 0;
        for dir in ["manifests/cluster", "manifests/test"] {
            for e in fs::read_dir(hb::workspace_root().join(dir)).unwrap() {
                let text = fs::read_to_string(e.unwrap().path()).unwrap();
                for l in text.lines() {
                    if let Some(img) = l.trim().strip_prefix("image:") {
                        seen += 1;
                        assert!(names.contains(&img.trim().to_string()), "{dir}: {img}");
                    }
                }
            }
        }
        assert!(seen >= 3, "found {seen} images in manifests/");
        assert_eq!(names.len(), 9);
    }

    #[test]
    fn containerd_finds_the_loopback_plugin_next_to_kincnet() {
        // containerd's CRI runs `loopback` for every pod from its one bin_dir.
        let link = hb::workspace_root().join("image/offline/files/opt/cni/bin/loopback");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/cni/loopback")
        );
        assert!(NODE_PACKAGES.contains(&"containernetworking-plugins"));
        let cfg = fs::read_to_string(
            hb::workspace_root().join("image/offline/files/etc/containerd/config.toml"),
        )
        .unwrap();
        assert!(cfg.contains(&format!("bin_dir = \"{}\"", kinc_types::node::CNI_BIN_DIR)));
    }

    #[test]
    fn every_component_program_has_a_version_probe() {
        let probes: Vec<&str> = version_probes().iter().map(|p| p.0).collect();
        for c in gobuild::components() {
            for bin in c.names().filter(|b| *b != gobuild::KUBE) {
                assert!(probes.contains(&bin), "{bin} has no version probe");
            }
        }
        assert!(probes.contains(&"pause"));
    }

    #[test]
    fn the_images_get_the_control_plane_programs_and_the_node_the_rest() {
        let images: Vec<&str> = image_kube_programs().collect();
        assert_eq!(
            images,
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy"
            ]
        );
        // Each image is one kubeadm names for the pinned version.
        for p in images {
            let name = format!("registry.k8s.io/{p}:{}", v::KUBERNETES);
            assert!(preloaded_names().contains(&name), "{name}");
        }
    }

    #[test]
    fn busybox_version_from_help() {
        assert_eq!(
            busybox_version("BusyBox v1.37.0 (Debian 1:1.37.0-6+b9) multi-call binary.\n")
                .as_deref(),
            Some("1.37")
        );
        assert_eq!(busybox_version("nonsense"), None);
    }

    #[test]
    fn ldd_output_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                "/lib/x86_64-linux-gnu/libnftables.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn image_file_names() {
        assert_eq!(
            image_file_name("registry.k8s.io/coredns/coredns:v1.12.0"),
            "coredns_v1.12.0.tar"
        );
    }

    #[test]
    fn base_key_tracks_packages_and_mirror() {
        assert_ne!(base_key_material("http://a"), base_key_material("http://b"));
        assert!(base_key_material("m").contains("containerd"));
    }

    #[test]
    fn node_spec_runs_systemd() {
        let s = node_spec("localhost/kinc/node:v1.33.13");
        assert_eq!(s.entrypoint, vec!["/sbin/init"]);
        assert_eq!(s.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        assert!(s.env.contains(&"container=podman".to_string()));
    }
}

/// The golden kubeadm configs of kinc-init meet the real kubeadm of the offline image.
#[cfg(test)]
#[path = "kubeadm_tests.rs"]
mod kubeadm_tests;
