//! Assembling the image build context from the workspace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// A binary the image carries: its crate, its file name, and where the Containerfile
/// puts it (for the record; the Containerfile is the authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    pub krate: &'static str,
    pub bin: &'static str,
    pub install: &'static str,
}

pub const BINARIES: &[Binary] = &[
    Binary {
        krate: "kincnet",
        bin: "kincnet",
        install: "/opt/cni/bin/kincnet",
    },
    Binary {
        krate: "crun-wrapper",
        bin: "crun-wrapper",
        install: "/usr/local/bin/crun-wrapper",
    },
    Binary {
        krate: "cgroup-setup",
        bin: "cgroup-setup",
        install: "/usr/local/bin/cgroup-setup",
    },
    Binary {
        krate: "kinc-init",
        bin: "kinc-init",
        install: "/usr/local/bin/kinc-init",
    },
    Binary {
        krate: "kincnet-policy",
        bin: "kincnet-policy",
        install: "/usr/local/bin/kincnet-policy",
    },
];

/// Marks a directory as a context this task made, so it may be emptied next time.
const MARKER: &str = ".kinc-image-context";

/// Where the context's pieces come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `image/`: Containerfile, repos/, files/.
    pub image_dir: PathBuf,
    /// `manifests/`.
    pub manifests_dir: PathBuf,
    /// Built binaries found so far.
    pub binaries: Vec<(Binary, PathBuf)>,
}

impl Sources {
    pub fn of_workspace(root: &Path, binaries: Vec<(Binary, PathBuf)>) -> Self {
        Self {
            image_dir: root.join("image"),
            manifests_dir: root.join("manifests"),
            binaries,
        }
    }
}

/// The binaries of `wanted` that exist as files in `dir`.
pub fn binaries_in(dir: &Path, wanted: &[Binary]) -> Vec<(Binary, PathBuf)> {
    wanted
        .iter()
        .map(|b| (*b, dir.join(b.bin)))
        .filter(|(_, p)| p.is_file())
        .collect()
}

/// Writes the context into `out`: Containerfile, repos/, files/, manifests/, bin/.
/// Every binary in `required` must be in `sources`, else nothing is written and the
/// error names each missing crate.
pub fn assemble(sources: &Sources, required: &[Binary], out: &Path) -> anyhow::Result<()> {
    let missing: Vec<String> = required
        .iter()
        .filter(|b| !sources.binaries.iter().any(|(have, _)| have.bin == b.bin))
        .map(|b| {
            format!(
                "{} (crate crates/{}, installed at {})",
                b.bin, b.krate, b.install
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "the image needs binaries that were not built: {}. Each comes from its crate in this workspace; merge the crate or pass --bin-dir with prebuilt binaries",
            missing.join("; ")
        );
    }
    for (what, p) in [
        ("Containerfile", sources.image_dir.join("Containerfile")),
        ("package repo files", sources.image_dir.join("repos")),
        ("image files", sources.image_dir.join("files")),
        ("manifests", sources.manifests_dir.clone()),
    ] {
        if !p.exists() {
            bail!("{what} not found at {}", p.display());
        }
    }
    prepare_dir(out)?;
    copy(
        &sources.image_dir.join("Containerfile"),
        &out.join("Containerfile"),
    )?;
    copy_tree(&sources.image_dir.join("repos"), &out.join("repos"))?;
    copy_tree(&sources.image_dir.join("files"), &out.join("files"))?;
    copy_tree(&sources.manifests_dir, &out.join("manifests"))?;
    let bin = out.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for b in required {
        let (_, src) = sources
            .binaries
            .iter()
            .find(|(have, _)| have.bin == b.bin)
            .expect("checked above");
        let dst = bin.join(b.bin);
        copy(src, &dst)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    Ok(())
}

/// Creates `out`, or empties it when it is a context made before. Refuses to empty a
/// directory with other content.
fn prepare_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).exists() {
            bail!(
                "{} is not empty and was not made by `cargo xtask image`: choose an empty or new directory",
                out.display()
            );
        }
        fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(out.join(MARKER), "made by cargo xtask image\n")
        .with_context(|| format!("writing {}", out.join(MARKER).display()))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    kinc_types::fsutil::copy_tree(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
