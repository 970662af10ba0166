//! kinc-init: thin command line over the `kinc_init` library.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kinc_init::runner::SystemRunner;
use kinc_init::{bootstrap, Bootstrap, NodePaths};
use kinc_types::node::{Cri, NodeImageInfo};
use kinc_types::ClusterConfig;

/// Bootstraps a kinc node: run by two oneshot systemd units inside the node container.
///
/// `kinc-prepare.service` runs `kinc-init prepare` before the CRI and kubelet start;
/// `kinc-init.service` runs `kinc-init bootstrap` once the CRI is up (CRI-O, or containerd
/// when /usr/share/kinc/node-image.json says so). Progress goes to the
/// status file /var/lib/kinc/status.json (read by `kinc status` on the host) and to the
/// journal (`journalctl -u kinc-prepare -u kinc-init`).
#[derive(Parser)]
#[command(name = "kinc-init", version, about, long_about)]
struct Cli {
    /// Treat DIR as the node's `/` (for testing; every path is taken below it).
    #[arg(long, value_name = "DIR", default_value = "/", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Choose the config (mounted /etc/kinc/config over the image's default), find the
    /// node IP, write the kubeadm config and kincnet's conflist. Starts this boot's status.
    Prepare,
    /// Wait for the CRI, import the image's preloaded images into containerd (offline
    /// image), run `kubeadm init` (first boot only; later boots restore the
    /// cluster and follow a changed node IP), apply the cluster manifests, export the
    /// admin kubeconfig, wait for node Ready and CoreDNS.
    Bootstrap,
    /// `prepare` then `bootstrap`.
    Run,
    /// Print the kubeadm config for a cluster config file and a node IP, and exit.
    Render {
        /// A cluster.json as the host CLI writes it.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The node container's IPv4 address.
        #[arg(long, value_name = "IP")]
        node_ip: Ipv4Addr,
        /// The container runtime the config names; default: the one the image's
        /// /usr/share/kinc/node-image.json names (CRI-O without that file).
        #[arg(long, value_enum)]
        cri: Option<CriArg>,
    },
    /// Print the bootstrap status file as JSON.
    Status,
}

#[derive(Clone, Copy, ValueEnum)]
enum CriArg {
    Crio,
    Containerd,
}

impl From<CriArg> for Cri {
    fn from(c: CriArg) -> Self {
        match c {
            CriArg::Crio => Cri::Crio,
            CriArg::Containerd => Cri::Containerd,
        }
    }
}

fn render(
    paths: &NodePaths,
    config: &Path,
    node_ip: Ipv4Addr,
    cri: Option<CriArg>,
) -> anyhow::Result<()> {
    let cfg = ClusterConfig::load(config)?;
    let cri = match cri {
        Some(c) => c.into(),
        None => NodeImageInfo::load(&paths.node_image_info())?.cri,
    };
    print!("{}", bootstrap::render_kubeadm(&cfg, node_ip, cri));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let paths = NodePaths::under(&cli.root);
    let runner = SystemRunner;
    let init = Bootstrap::new(paths.clone(), &runner);
    let result: anyhow::Result<()> = match cli.command {
        Command::Prepare => init.prepare().map(|_| ()).map_err(Into::into),
        Command::Bootstrap => init.bootstrap().map(|_| ()).map_err(Into::into),
        Command::Run => init.run_all().map(|_| ()).map_err(Into::into),
        Command::Render {
            config,
            node_ip,
            cri,
        } => render(&paths, &config, node_ip, cri),
        Command::Status => std::fs::read_to_string(paths.status())
            .map(|s| print!("{s}"))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", paths.status().display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinc-init: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
