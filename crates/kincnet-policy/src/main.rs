//! kincnet-policy: NetworkPolicy enforcement for kinc clusters (thin main; see lib.rs).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use kincnet_policy::controller::Controller;
use kincnet_policy::nft::NftEnforcer;
use kincnet_policy::runner::{self, RunOptions};

/// Watches Pods, Namespaces and NetworkPolicies and enforces the policies in kincnet's
/// nf_tables table (family ip): isolated pods and their allowed peers/ports become set
/// elements, so every change is an element update applied as one transaction.
///
/// Run it in the node's network namespace (where kincnet's bridge is), as root or with
/// CAP_NET_ADMIN. Use `--status` to see what is programmed.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Kubeconfig of the controller's ServiceAccount (read-only on pods, namespaces and
    /// networkpolicies). Default: in-cluster config, then $KUBECONFIG.
    #[arg(long, env = "KINCNET_POLICY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// kincnet's nf_tables table (family ip); the policy chains and sets are added to it.
    #[arg(long, default_value = kinc_types::node::KINCNET_TABLE)]
    table: String,
    /// Status file, rewritten after every change and read by `--status`.
    #[arg(long, default_value = "/run/kincnet-policy/status.json")]
    status_file: PathBuf,
    /// The Unix socket kincnet's CNI ADD asks to program a pod before it returns
    /// (`none`: do not serve it; ADD of a pod in a namespace with policies then fails).
    #[arg(long, default_value = kinc_types::policy_gate::SOCKET)]
    cni_socket: PathBuf,
    /// Full resync interval: recompute everything from the watch caches and repair.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Print the running controller's status (policies, pods, set elements, last sync)
    /// and exit.
    #[arg(long)]
    status: bool,
    /// With --status: print JSON.
    #[arg(long, short = 'o', value_parser = ["json", "text"], default_value = "text")]
    output: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.status {
        let s = runner::read_status(&cli.status_file).map_err(anyhow::Error::msg)?;
        let text = if cli.output == "json" {
            serde_json::to_string_pretty(&s)? + "\n"
        } else {
            s.to_string()
        };
        return print(&text);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    };
    let client = kube::Client::try_from(config).context("building the API client")?;
    let enforcer = NftEnforcer::new(&cli.table);
    enforcer
        .ensure()
        .with_context(|| format!("creating the policy chains in table ip {}", cli.table))?;
    let mut ctl = Controller::new(enforcer);
    let opts = RunOptions {
        status_file: cli.status_file,
        resync: cli.resync,
        cni_socket: (cli.cni_socket != std::path::Path::new("none")).then_some(cli.cni_socket),
    };
    runner::run(client, &mut ctl, &opts).await?;
    Ok(())
}

/// Writes `text` to stdout. A reader that left (`--status | head -1`) ends the command
/// quietly, as ripgrep does; `println!` would panic (an abort in the release build).
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing the status to stdout"))
        }
        _ => Ok(()),
    }
}
