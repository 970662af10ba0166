//! `cargo xtask image`: build kinc's release binaries, assemble the node image's build
//! context, check it, and run `podman build`.

mod check;
mod context;
pub mod gobuild;
pub mod oci;
pub mod offline;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use clap::Parser;

pub use context::{Binary, BINARIES};

/// Builds the kinc node image (`localhost/kinc/node:v1.33.13` by default).
///
/// Two paths share one set of node files (image/files, manifests/, the kinc binaries) and
/// one place for versions (crates/kinc-types/src/versions.rs):
///
/// --offline: no registry, no distribution Kubernetes packages. Builds Kubernetes, etcd,
/// CoreDNS and local-path-provisioner from the Go modules pinned in image/go/, a Debian
/// trixie root filesystem with containerd (debootstrap), the component images as OCI
/// archives, and the node as one OCI archive (default target/kinc-node-VERSION.oci.tar),
/// then `podman load`s it. Needs root, Go and debootstrap; every stage is cached under
/// $KINC_IMAGE_CACHE (default /var/cache/kinc-image as root).
///
/// Without --offline (the Fedora 42 path): `cargo build --release` of kincnet, crun-wrapper, cgroup-setup, kinc-init and
/// kincnet-policy; assemble the context (image/Containerfile, image/repos, image/files,
/// manifests/, the binaries); check it (every COPY source exists, the binaries run `--version`, systemd
/// units pass `systemd-analyze verify`, CRI-O drop-ins parse as TOML, YAML and JSON parse,
/// kinc-init renders a kubeadm config); then `podman build`. The build needs network
/// access to registry.fedoraproject.org, pkgs.k8s.io and download.opensuse.org.
///
/// Examples:
///   cargo xtask image --offline
///   cargo xtask image --offline --output /tmp/node.tar --no-load
///   cargo xtask image
///   cargo xtask image --tag localhost/kinc/node:dev --cache-bust 2
///   cargo xtask image --context-only target/node-context && podman build target/node-context
#[derive(Parser, Debug)]
#[command(name = "cargo xtask image", verbatim_doc_comment)]
pub struct Args {
    /// Image name and tag to build.
    #[arg(long, default_value = kinc_types::node::DEFAULT_NODE_IMAGE)]
    pub tag: String,
    /// Value of the CACHE_BUST build argument: change it to refresh the package layer.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cache_bust: u64,
    /// Assemble and check the context in DIR, then stop (no podman needed).
    #[arg(long, value_name = "DIR")]
    pub context_only: Option<PathBuf>,
    /// Take the node binaries from DIR instead of building them (e.g. target/debug).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Build without any registry or Kubernetes packages: Go modules, debootstrap, our own
    /// OCI writer (see above).
    #[arg(long)]
    pub offline: bool,
    /// With --offline: where to write the node's OCI archive.
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub output: Option<PathBuf>,
    /// With --offline: do not `podman load` the archive.
    #[arg(long, requires = "offline")]
    pub no_load: bool,
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let args =
        match Args::try_parse_from(std::iter::once("cargo xtask image".to_string()).chain(args)) {
            Ok(a) => a,
            Err(e) if !e.use_stderr() => {
                // --help and --version: print and succeed.
                print!("{e}");
                return Ok(());
            }
            Err(e) => bail!("{e}"),
        };
    let root = crate::hostvm::build::workspace_root();
    if args.offline {
        let mut wanted = BINARIES.to_vec();
        wanted.push(offline::PAUSE);
        let binaries = match &args.bin_dir {
            Some(dir) => context::binaries_in(dir, &wanted),
            None => build_release(&root, &wanted)?,
        };
        let o = offline::Offline {
            root: root.clone(),
            cache: offline::cache_root(),
            tag: args.tag.clone(),
            output: args.output.clone().unwrap_or_else(offline::default_output),
            load: !args.no_load,
        };
        o.run(&binaries)?;
        return Ok(());
    }
    let binaries = match &args.bin_dir {
        Some(dir) => context::binaries_in(dir, BINARIES),
        None => build_release(&root, BINARIES)?,
    };
    let ctx_dir = match &args.context_only {
        Some(d) => d.clone(),
        None => crate::hostvm::build::target_dir().join("kinc-image-context"),
    };
    let sources = context::Sources::of_workspace(&root, binaries);
    context::assemble(&sources, BINARIES, &ctx_dir)?;
    let report = check::check_context(&ctx_dir)?;
    for line in &report.checked {
        eprintln!("  ok  {line}");
    }
    for line in &report.skipped {
        eprintln!("  --  skipped: {line}");
    }
    if !report.problems.is_empty() {
        bail!(
            "the image context in {} has {} problem(s):\n  {}",
            ctx_dir.display(),
            report.problems.len(),
            report.problems.join("\n  ")
        );
    }
    eprintln!("context ready: {}", ctx_dir.display());
    if args.context_only.is_some() {
        return Ok(());
    }
    podman_build("podman", &ctx_dir, &args.tag, args.cache_bust)
}

/// `cargo build --release` of every binary crate present in the workspace; returns
/// where each present one was built. Absent crates are left for `assemble` to report.
fn build_release(root: &Path, wanted: &[Binary]) -> anyhow::Result<Vec<(Binary, PathBuf)>> {
    let present: Vec<&Binary> = wanted
        .iter()
        .filter(|b| {
            root.join("crates")
                .join(b.krate)
                .join("Cargo.toml")
                .is_file()
        })
        .collect();
    if !present.is_empty() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        // Static, non-PIE binaries: each is exec'd per pod or per runtime call, and
        // skipping the dynamic loader saves ~0.5 ms a start on a small VM. The explicit
        // --target keeps these flags off build scripts and proc-macros.
        cmd.current_dir(root)
            .args(["build", "--release", "--target", &node_target()])
            .env(
                format!(
                    "CARGO_TARGET_{}_RUSTFLAGS",
                    node_target().to_uppercase().replace('-', "_")
                ),
                "-C target-feature=+crt-static -C relocation-model=static",
            );
        for b in &present {
            cmd.args(["-p", b.krate]);
        }
        eprintln!("building: {cmd:?}");
        let status = cmd
            .status()
            .with_context(|| format!("running {cargo} build --release"))?;
        if !status.success() {
            bail!("`cargo build --release` failed ({status})");
        }
    }
    Ok(context::binaries_in(
        &crate::hostvm::build::target_dir()
            .join(node_target())
            .join("release"),
        wanted,
    ))
}

/// The target triple of the node's binaries: this machine's architecture, glibc.
fn node_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The Containerfile's build arguments: every version comes from `kinc_types::versions`.
fn fedora_build_args(cache_bust: u64) -> Vec<String> {
    use kinc_types::versions as v;
    vec![
        format!("FEDORA_VERSION={}", v::FEDORA),
        format!("KUBERNETES_VERSION={}", v::KUBERNETES),
        format!("CRIO_VERSION={}", v::CRIO_STREAM),
        format!("CACHE_BUST={cache_bust}"),
    ]
}

/// Runs `podman build`; a missing podman or a failed build (usually no network) is an
/// error that says what the build needs.
pub fn podman_build(podman: &str, ctx: &Path, tag: &str, cache_bust: u64) -> anyhow::Result<()> {
    let version = Command::new(podman).arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => bail!(
            "`{podman} --version` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!(
            "podman is needed to build the image and `{podman}` could not be run ({e}); install podman, or use --context-only DIR to stop after the context"
        ),
    }
    let containerfile = ctx.join("Containerfile");
    let mut cmd = Command::new(podman);
    cmd.arg("build");
    for a in fedora_build_args(cache_bust) {
        cmd.args(["--build-arg", &a]);
    }
    cmd.args(["--tag", tag])
        .arg("--file")
        .arg(&containerfile)
        .arg(ctx);
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("running {podman} build"))?;
    if !status.success() {
        bail!(
            "`{podman} build` failed ({status}). The build pulls registry.fedoraproject.org/fedora and packages from pkgs.k8s.io and download.opensuse.org: check network access and proxy settings, then retry (add --cache-bust N to refresh the package layer)"
        );
    }
    eprintln!("built {tag}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_with_defaults_and_reject_unknown() {
        let a = Args::try_parse_from(["x", "--context-only", "/tmp/c"]).unwrap();
        assert_eq!(a.tag, "localhost/kinc/node:v1.33.13");
        assert_eq!(a.cache_bust, 1);
        assert_eq!(a.context_only.as_deref(), Some(Path::new("/tmp/c")));
        let a = Args::try_parse_from(["x", "--tag", "t:1", "--cache-bust", "7"]).unwrap();
        assert_eq!((a.tag.as_str(), a.cache_bust), ("t:1", 7));
        let err = run(vec!["--bogus".into()]).unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        assert!(run(vec!["--help".into()]).is_ok());
    }

    #[test]
    fn containerfile_versions_come_from_kinc_types() {
        let args = fedora_build_args(3);
        assert!(
            args.contains(&"KUBERNETES_VERSION=v1.33.13".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"CACHE_BUST=3".to_string()));
        // Every ARG the Containerfile declares without a default is passed.
        let cf = std::fs::read_to_string(
            crate::hostvm::build::workspace_root().join("image/Containerfile"),
        )
        .unwrap();
        for line in cf
            .lines()
            .filter(|l| l.starts_with("ARG ") && !l.contains('='))
        {
            let name = line.trim_start_matches("ARG ").trim();
            assert!(
                args.iter().any(|a| a.starts_with(&format!("{name}="))),
                "ARG {name} is not passed"
            );
        }
    }

    #[test]
    fn missing_podman_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let err = podman_build("kinc-xtask-no-such-podman", d.path(), "t", 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("podman is needed") && err.contains("--context-only"),
            "{err}"
        );
    }

    #[test]
    fn failed_build_names_the_network_it_needs() {
        let d = tempfile::tempdir().unwrap();
        // A stand-in podman: `--version` works, `build` fails as with no network.
        let fake = d.path().join("podman");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nexit 125\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = podman_build(fake.to_str().unwrap(), d.path(), "t", 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkgs.k8s.io") && err.contains("125"), "{err}");
    }
}
