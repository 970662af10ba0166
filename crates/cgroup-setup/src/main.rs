use std::path::PathBuf;
use std::process::ExitCode;

use cgroup_setup::plan::Options;
use cgroup_setup::run_host;
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  cgroup-setup                      what kinc-cgroup-setup.service runs at boot
  cgroup-setup --dry-run            show what would be moved, created and enabled
  cgroup-setup --json               one JSON object: {\"ok\":true,\"changed\":false,...}
  cgroup-setup --kubelet-cgroup-root /kinc/kubelet   a deeper kubelet cgroupRoot";

/// Delegates every cgroup v2 controller from the node container's cgroup namespace root
/// down to kubelet's cgroup root, so CRI-O and kubelet can limit pods.
///
/// Steps: check that the cgroup hierarchy is pure v2; move every process out of the root
/// cgroup (and any cgroup on the way down) into a leaf such as /init.scope, again and again
/// until none is left (cgroup v2 refuses, with EBUSY, to enable controllers for children of
/// a non-root cgroup that holds processes); create the cgroups down to kubelet's cgroup root and write
/// all controllers into each cgroup.subtree_control in one write; read it all back.
///
/// kubelet needs cpu cpuset io memory pids (and uses hugetlb misc when present). When the
/// host did not delegate one of them, nothing is changed and the message names them
/// with the host-side fix: a systemd drop-in for user@.service with
/// `Delegate=cpu cpuset io memory pids`.
///
/// Running it again changes nothing. Exit status: 0 ok, 1 failed (the reason on stderr, or
/// in the JSON), 2 bad usage.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment, after_long_help = EXAMPLES)]
struct Args {
    /// kubelet's cgroupRoot (cgroupfs driver); controllers are enabled down to and in it.
    #[arg(long, env = "KINC_KUBELET_CGROUP_ROOT", default_value = kinc_types::node::KUBELET_CGROUP_ROOT)]
    kubelet_cgroup_root: String,

    /// Name of the leaf cgroup that processes are moved into (below each cgroup that
    /// enables controllers).
    #[arg(long, default_value = "init.scope")]
    leaf: String,

    /// Where cgroup2 is mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_mount: PathBuf,

    /// Print one JSON object (ok, changes, subtree_control per cgroup, missing controllers,
    /// error, hint, hostFix) on stdout instead of lines, for the bootstrap status.
    #[arg(long)]
    json: bool,

    /// Show what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = Options {
        kubelet_root: args.kubelet_cgroup_root,
        leaf: args.leaf,
    };
    // Usage errors first, with clap's exit status, before looking at the system.
    if let Err(e) = cgroup_setup::plan::levels_of(&opts) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let report = run_host(&args.cgroup_mount, &opts, args.dry_run);
    if args.json {
        println!("{}", report.to_json());
    } else {
        let (out, err) = report.human();
        print!("{out}");
        eprint!("{err}");
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
