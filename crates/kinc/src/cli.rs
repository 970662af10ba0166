//! The command line: clap definitions and dispatch to the library. Nothing here
//! decides anything the library could.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kinc_types::name::{DEFAULT_NAME, NAME_ENV};
use kinc_types::ClusterName;

const ABOUT: &str = "kinc creates and manages local Kubernetes clusters, each in a single rootless Podman container.";

const LONG_ABOUT: &str = "\
kinc creates and manages local Kubernetes clusters, each in a single rootless Podman container.

Every cluster is one node container `kinc-<name>-control-plane` plus two volumes
(`kinc-<name>-var-data` at /var, `kinc-<name>-config` read-only), all labelled
io.kinc.owner=kinc. kinc only ever touches resources that carry that label.";

const EXAMPLES: &str = "\
Examples:
  kinc doctor                              # is this host ready? every finding has its fix
  kinc create cluster                      # cluster \"default\", API on 127.0.0.1:6443
  kinc create cluster --name dev --wait 10m
  kinc get clusters -o json
  kinc export kubeconfig --name dev && kubectl --context kinc-dev get nodes
  kinc status --name dev --watch
  kinc load image localhost/myapp:dev --name dev
  kinc test --name dev
  kinc delete cluster --name dev

The cluster name defaults to \"default\", or to $KINC_CLUSTER_NAME when set.";

#[derive(Debug, Parser)]
#[command(name = "kinc", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Print no progress on stderr (results still go to stdout).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster.
    #[command(subcommand)]
    Create(CreateCmd),
    /// Delete one cluster or all of them.
    #[command(subcommand)]
    Delete(DeleteCmd),
    /// Print clusters or a cluster's kubeconfig.
    #[command(subcommand)]
    Get(GetCmd),
    /// Merge a cluster's kubeconfig into your kubeconfig file.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Make host images available to a cluster.
    #[command(subcommand)]
    Load(LoadCmd),
    /// Show the node's bootstrap steps (from its status file).
    #[command(
        after_help = "Examples:\n  kinc status\n  kinc status --name dev --watch\n  kinc status -o json"
    )]
    Status(StatusArgs),
    /// Check this host and print how to fix each finding.
    #[command(
        after_help = "Examples:\n  kinc doctor\n  kinc doctor -o json | jq '.[] | select(.level != \"ok\")'\n\n`create` runs the same checks first and stops on failures (skip one with --skip-check NAME)."
    )]
    Doctor(DoctorArgs),
    /// Run live checks against a cluster (PVC, pod-to-pod, service, DNS, rollout).
    #[command(
        after_help = "Examples:\n  kinc test\n  kinc test --name dev --image localhost/busybox:latest\n\nThe image must hold busybox (sh, wget, httpd) and be loadable by the node\n(see `kinc load image`)."
    )]
    Test(TestArgs),
    /// Print the node container's output and the node's journal.
    #[command(after_help = "Examples:\n  kinc logs --name dev\n  kinc logs --tail 100")]
    Logs(LogsArgs),
}

#[derive(Debug, Args, Clone)]
pub struct NameArg {
    /// Cluster name (a DNS-1123 label).
    #[arg(short = 'n', long, env = NAME_ENV, default_value = DEFAULT_NAME, value_parser = parse_name)]
    pub name: ClusterName,
}

pub fn parse_name(s: &str) -> Result<ClusterName, String> {
    ClusterName::new(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CreateCmd {
    /// Create a cluster and wait until it is Ready.
    #[command(after_help = "\
Examples:
  kinc create cluster
  kinc create cluster --name dev --api-port 7443
  kinc create cluster --name ci --wait 0          # return once the node container runs
  kinc create cluster --config cluster.yaml       # apiPort, podSubnet, serviceSubnet, ...

Without --api-port the first cluster gets 6443, later ones the next free port.
Pod and service CIDRs come from 10.64.0.0/10, never overlapping other clusters or
the host's routes. A failed or interrupted create (Ctrl-C) removes what it made
unless --retain is given.")]
    Cluster(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Node image.
    #[arg(long, default_value = kinc_types::node::DEFAULT_NODE_IMAGE)]
    pub image: String,
    /// API port on 127.0.0.1 (default: 6443 or the next free one).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Cluster options file (YAML or JSON, kind: ClusterConfig, every field optional).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long to wait for the cluster to be Ready (e.g. 90s, 10m; 0 = do not wait).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Keep what was created when create fails (for debugging).
    #[arg(long)]
    pub retain: bool,
    /// Go on despite a failing `kinc doctor` check of this name (repeatable).
    #[arg(
        long = "skip-check",
        value_name = "CHECK",
        env = "KINC_SKIP_CHECKS",
        value_delimiter = ','
    )]
    pub skip_checks: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeleteCmd {
    /// Delete a cluster: its container, volumes, units and kubeconfig entries.
    #[command(
        after_help = "Examples:\n  kinc delete cluster\n  kinc delete cluster --name dev\n\nDeleting a cluster that does not exist succeeds. Only resources labelled\nio.kinc.owner=kinc are removed."
    )]
    Cluster(NameArg),
    /// Delete every kinc cluster.
    #[command(after_help = "Example:\n  kinc delete clusters --all")]
    Clusters {
        /// Required, so nobody deletes everything by accident.
        #[arg(long, required = true)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GetCmd {
    /// List clusters (one name per line, or JSON with ports, CIDRs and state).
    #[command(after_help = "Examples:\n  kinc get clusters\n  kinc get clusters -o json")]
    Clusters {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print a cluster's kubeconfig (context kinc-<name>, server 127.0.0.1:<port>).
    #[command(
        after_help = "Examples:\n  kinc get kubeconfig --name dev > dev.kubeconfig\n  KUBECONFIG=dev.kubeconfig kubectl get pods -A"
    )]
    Kubeconfig(NameArg),
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Merge the cluster's kubeconfig into $KUBECONFIG or ~/.kube/config.
    #[command(
        after_help = "Examples:\n  kinc export kubeconfig --name dev\n  kubectl config use-context kinc-dev\n\nOnly the cluster, user and context named kinc-<name> are written; the file\nkeeps mode 0600 and is replaced atomically."
    )]
    Kubeconfig {
        #[command(flatten)]
        name: NameArg,
        /// Write into this file instead.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LoadCmd {
    /// Make host images visible to the cluster's CRI, CRI-O or containerd (kind's
    /// `load docker-image`).
    #[command(
        after_help = "Examples:\n  podman build -t localhost/myapp:dev . && kinc load image localhost/myapp:dev\n  kinc load image localhost/a:1 localhost/b:1 --name dev"
    )]
    Image {
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        name: NameArg,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Keep watching until the node is Ready or failed.
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Image with busybox for the test pods.
    #[arg(long, default_value = kinc::livetest::DEFAULT_TEST_IMAGE)]
    pub image: String,
    /// Per-check timeout.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Only the last N lines of each.
    #[arg(long)]
    pub tail: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_names_are_rejected_by_the_parser() {
        let e =
            Cli::try_parse_from(["kinc", "create", "cluster", "--name", "Bad_Name"]).unwrap_err();
        assert!(e.to_string().contains("DNS-1123"), "{e}");
        let ok = Cli::try_parse_from(["kinc", "delete", "cluster", "--name", "dev-1"]).unwrap();
        match ok.command {
            Command::Delete(DeleteCmd::Cluster(n)) => assert_eq!(n.name.as_str(), "dev-1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_defaults() {
        let c = Cli::try_parse_from([
            "kinc",
            "create",
            "cluster",
            "--name",
            "x",
            "--wait",
            "90s",
            "--skip-check",
            "cgroup-v2,nofile",
        ])
        .unwrap();
        let Command::Create(CreateCmd::Cluster(a)) = c.command else {
            panic!()
        };
        assert_eq!(a.wait, Duration::from_secs(90));
        assert_eq!(a.image, kinc_types::node::DEFAULT_NODE_IMAGE);
        assert_eq!(a.skip_checks, vec!["cgroup-v2", "nofile"]);
        assert!(
            Cli::try_parse_from(["kinc", "delete", "clusters"]).is_err(),
            "--all is required"
        );
        assert!(
            Cli::try_parse_from(["kinc", "load", "image"]).is_err(),
            "an image is required"
        );
    }

    #[test]
    fn help_teaches_with_examples() {
        let h = Cli::command().render_long_help().to_string();
        assert!(h.contains("kinc create cluster --name dev"), "{h}");
        assert!(h.contains("KINC_CLUSTER_NAME"), "{h}");
    }
}
