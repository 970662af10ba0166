//! `cargo xtask hostvm build`: the Debian trixie host image, from Debian packages only,
//! cached under a directory named by the hash of everything it is made of.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::cmd::{chroot, require_tools, run_quiet, run_visible};
use super::config::{self, RootFile};
use super::kernel;

/// The finished artifacts of one cache key.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
}

impl Built {
    pub fn disk(&self) -> PathBuf {
        self.dir.join("base.raw")
    }
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }
}

/// Written last: its presence means the directory is complete.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub key: String,
    pub mirror: String,
    pub kernel: String,
    pub build_seconds: f64,
    pub key_material: String,
}

/// The machine-wide cache root (for root): outside any checkout, so a fresh clone on the
/// same machine (CI) reuses the image instead of building it again.
pub const SYSTEM_CACHE: &str = "/var/cache/kinc-hostvm";

/// `$KINC_HOSTVM_CACHE`, else [`SYSTEM_CACHE`] for root, else `<target dir>/hostvm`.
pub fn cache_root() -> PathBuf {
    cache_root_for(std::env::var_os("KINC_HOSTVM_CACHE"), is_root())
}

pub fn cache_root_for(env: Option<std::ffi::OsString>, root: bool) -> PathBuf {
    match env {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if root => PathBuf::from(SYSTEM_CACHE),
        _ => target_dir().join("hostvm"),
    }
}

/// The checkout xtask runs from. `cargo xtask` sets CARGO_MANIFEST_DIR at run time: a
/// binary reused from the shared target directory (another clone built it, and cargo's
/// freshness ignores where the sources are) must not read that other clone.
pub fn workspace_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target"),
    }
}

/// The Debian archive apt uses here (`KINC_HOSTVM_MIRROR` overrides it).
pub fn mirror() -> Result<String> {
    if let Ok(m) = std::env::var("KINC_HOSTVM_MIRROR") {
        return Ok(m);
    }
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.insert(0, PathBuf::from("/etc/apt/sources.list"));
    for f in &files {
        if let Ok(text) = fs::read_to_string(f) {
            if let Some(m) = config::mirror_from_sources(&text) {
                return Ok(m);
            }
        }
    }
    bail!(
        "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources; \
         set KINC_HOSTVM_MIRROR"
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `$KINC_HOSTVM_IMAGE`: a built directory to use instead of the current recipe's (to
/// debug against an older image without rebuilding).
fn image_override() -> Option<Built> {
    std::env::var_os("KINC_HOSTVM_IMAGE").map(|d| Built { dir: d.into() })
}

/// The artifacts for the current recipe, if they were built.
pub fn find_built() -> Result<Option<Built>> {
    if let Some(b) = image_override() {
        return Ok(b.manifest().is_file().then_some(b));
    }
    let key = config::cache_key(&mirror()?);
    let b = Built {
        dir: cache_root().join(&key),
    };
    Ok(b.manifest().is_file().then_some(b))
}

/// Builds the image unless the cache already has it. Returns where it is.
pub fn ensure_built() -> Result<Built> {
    if let Some(b) = image_override() {
        if !b.manifest().is_file() {
            bail!(
                "KINC_HOSTVM_IMAGE={}: no manifest.json there",
                b.dir.display()
            );
        }
        return Ok(b);
    }
    let mirror = mirror()?;
    let key = config::cache_key(&mirror);
    let root = cache_root();
    let built = Built {
        dir: root.join(&key),
    };
    if built.manifest().is_file() {
        eprintln!("hostvm: {} is up to date", built.dir.display());
        return Ok(built);
    }
    if !is_root() {
        bail!("building the host image needs root (debootstrap, chroot, device nodes)");
    }
    require_tools(&[
        ("debootstrap", "debootstrap"),
        ("chroot", "coreutils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("tar", "tar"),
        ("zstd", "zstd"),
        ("xz", "xz-utils"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ])?;
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = Lock::exclusive(&root.join(".lock"))?;
    // Another build may have finished while we waited for the lock.
    if built.manifest().is_file() {
        return Ok(built);
    }
    let work = root.join(format!("{key}.partial"));
    if work.exists() {
        remove_tree(&work)?;
    }
    fs::create_dir_all(&work)?;
    let t0 = Instant::now();
    let kernel_version = build_into(&work, &mirror)?;
    provision(&work)?;
    let manifest = Manifest {
        key: key.clone(),
        key_material: config::key_material(&mirror),
        mirror,
        kernel: kernel_version,
        build_seconds: t0.elapsed().as_secs_f64(),
    };
    kinc_types::fsutil::write_atomic(
        &work.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        Some(0o644),
    )?;
    fs::rename(&work, &built.dir)
        .with_context(|| format!("renaming {} to {}", work.display(), built.dir.display()))?;
    eprintln!(
        "hostvm: built {} in {:.0} s",
        built.dir.display(),
        manifest.build_seconds
    );
    remove_other_builds(&root, &key);
    Ok(built)
}

/// All steps, in `work`; returns the kernel version.
fn build_into(work: &Path, mirror: &str) -> Result<String> {
    let rootfs = work.join("rootfs");
    let node = work.join("node-rootfs");
    let node_log = work.join("debootstrap-node.log");

    // The two debootstraps overlap: mostly downloads and dpkg, on different trees.
    let t = Instant::now();
    let mut node_child = debootstrap(&node, config::NODE_PACKAGES, mirror)
        .stdout(Stdio::from(fs::File::create(&node_log)?))
        .stderr(Stdio::from(fs::File::create(
            work.join("debootstrap-node.err"),
        )?))
        .stdin(Stdio::null())
        .spawn()
        .context("starting debootstrap for the node stand-in")?;
    let host_result = run_visible(&mut debootstrap(&rootfs, config::HOST_PACKAGES, mirror));
    let node_status = node_child.wait()?;
    host_result.context("debootstrap of the host VM")?;
    if !node_status.success() {
        bail!(
            "debootstrap of the node stand-in failed ({node_status}); see {}",
            node_log.display()
        );
    }
    eprintln!(
        "hostvm: debootstrap (host + node) {:.0} s",
        t.elapsed().as_secs_f64()
    );

    configure_node(&node)?;
    let tarball = rootfs.join(config::NODE_TARBALL.trim_start_matches('/'));
    fs::create_dir_all(tarball.parent().expect("has a parent"))?;
    run_quiet(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--zstd", "-C"])
            .arg(&node)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    )?;
    remove_tree(&node)?;

    configure_host(&rootfs)?;

    let (kver, vmlinuz, initrd) = kernel_files(&rootfs)?;
    kernel::extract_vmlinux(&vmlinuz, &work.join("vmlinux"))?;
    fs::copy(&initrd, work.join("initrd.img"))
        .with_context(|| format!("copying {}", initrd.display()))?;

    let t = Instant::now();
    run_quiet(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(work.join("base.raw"))
            .arg(config::DISK_SIZE),
    )?;
    eprintln!("hostvm: mkfs.ext4 -d {:.0} s", t.elapsed().as_secs_f64());
    remove_tree(&rootfs)?;
    Ok(kver)
}

/// Images of older recipes are ~700 MB each and never used again.
fn remove_other_builds(root: &Path, keep: &str) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{}-", config::SUITE)) && name != keep && e.path().is_dir() {
            eprintln!("hostvm: removing the outdated {}", e.path().display());
            let _ = remove_tree(&e.path());
        }
    }
}

/// One boot of the fresh image with its disk writable, to do what only a running host can:
/// import the node stand-in into the test user's container storage (~90 s under TCG, paid
/// once here instead of in every end-to-end run).
fn provision(work: &Path) -> Result<()> {
    use super::agent::{Job, Step};
    let t = Instant::now();
    let job = Job {
        steps: vec![Step {
            name: "provision".into(),
            argv: vec![
                format!("{}/agent", config::CTL_MOUNT),
                "hostvm".into(),
                "guest-check".into(),
                "provision".into(),
            ],
            as_user: true,
            cwd: None,
            reboot_after: false,
            keep_going: false,
            timeout_secs: None,
        }],
        shares: Vec::new(),
    };
    let opts = super::vm::RunOptions {
        timeout: Some(std::time::Duration::from_secs(1800)),
        snapshot: false,
        ..Default::default()
    };
    let built = Built {
        dir: work.to_path_buf(),
    };
    let out = super::vm::run_job(&built, &job, &opts)?;
    if out.exit_code != 0 {
        bail!(
            "provisioning boot failed with status {}{}",
            out.exit_code,
            out.why.map(|w| format!(": {w}")).unwrap_or_default()
        );
    }
    eprintln!(
        "hostvm: provisioning boot {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// debootstrap with its downloads kept per tree under the cache root (separate dirs: the
/// two runs overlap), so a rebuild after a recipe change does not download again.
fn debootstrap(target: &Path, packages: &[&str], mirror: &str) -> Command {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let debs = cache_root().join(format!("debs-{name}"));
    let _ = fs::create_dir_all(&debs);
    let debs = fs::canonicalize(&debs).unwrap_or(debs);
    let mut c = Command::new("debootstrap");
    c.arg(format!("--cache-dir={}", debs.display()))
        .arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg(config::SUITE)
        .arg(target)
        .arg(mirror);
    c
}

fn write_files(root: &Path, files: &[RootFile]) -> Result<()> {
    for f in files {
        let p = root.join(f.path);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&p, &f.content).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

fn write_symlinks(root: &Path, links: &[(String, String)]) -> Result<()> {
    for (link, target) in links {
        let p = root.join(link);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        if p.symlink_metadata().is_ok() {
            fs::remove_file(&p)?;
        }
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("linking {} -> {target}", p.display()))?;
    }
    Ok(())
}

fn configure_host(root: &Path) -> Result<()> {
    write_files(root, &config::host_files())?;
    write_symlinks(root, &config::host_symlinks())?;
    let user = config::TEST_USER;
    let uid = config::TEST_UID.to_string();
    run_quiet(&mut chroot(
        root,
        ["useradd", "-m", "-u", &uid, "-s", "/bin/bash", user],
    ))?;
    run_quiet(&mut chroot(root, ["passwd", "-d", "root"]))?;
    let linger = root.join("var/lib/systemd/linger");
    fs::create_dir_all(&linger)?;
    fs::write(linger.join(user), "")?;
    let t = Instant::now();
    run_quiet(&mut chroot(root, ["update-initramfs", "-u", "-k", "all"]))?;
    eprintln!(
        "hostvm: trimmed initramfs {:.0} s",
        t.elapsed().as_secs_f64()
    );
    run_quiet(&mut chroot(root, ["apt-get", "clean"]))?;
    // Newer than /usr: ldconfig.service and systemd-update-done skip on every boot.
    for f in ["etc/.updated", "var/.updated"] {
        fs::write(root.join(f), "")?;
    }
    Ok(())
}

fn configure_node(root: &Path) -> Result<()> {
    write_files(root, &config::node_files())?;
    write_symlinks(root, &config::node_symlinks())?;
    fs::create_dir_all(root.join("usr/local/lib/kinc"))?;
    run_quiet(&mut chroot(root, ["apt-get", "clean"]))?;
    let lists = root.join("var/lib/apt/lists");
    if lists.is_dir() {
        remove_tree(&lists)?;
        fs::create_dir_all(&lists)?;
    }
    Ok(())
}

/// The kernel version and the paths of its bzImage and initramfs in the rootfs.
fn kernel_files(root: &Path) -> Result<(String, PathBuf, PathBuf)> {
    let boot = root.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    versions.sort();
    let Some(kver) = versions.pop() else {
        bail!("no vmlinuz-* in {}", boot.display());
    };
    let initrd = boot.join(format!("initrd.img-{kver}"));
    if !initrd.is_file() {
        bail!("{} is missing", initrd.display());
    }
    Ok((kver.clone(), boot.join(format!("vmlinuz-{kver}")), initrd))
}

/// Removes a tree, refusing if anything is mounted below it (debootstrap mounts /proc and
/// /sys in its target; a leftover mount must not be deleted through).
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|mp| mp.starts_with(&prefix))
    {
        bail!("refusing to remove {}: {m} is mounted", dir.display());
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// An exclusive `flock` on a file, released on drop.
pub struct Lock {
    _file: fs::File,
}

impl Lock {
    pub fn exclusive(path: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_outside_the_checkout_for_root() {
        assert_eq!(
            cache_root_for(Some("/x/c".into()), true),
            PathBuf::from("/x/c")
        );
        assert_eq!(cache_root_for(None, true), PathBuf::from(SYSTEM_CACHE));
        assert_eq!(
            cache_root_for(Some("".into()), true),
            PathBuf::from(SYSTEM_CACHE)
        );
        // Not root: below cargo's build directory (CARGO_TARGET_DIR, else target/).
        assert_eq!(cache_root_for(None, false), target_dir().join("hostvm"));
    }
}
