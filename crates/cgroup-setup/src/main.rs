use std::path::PathBuf;
use std::process::ExitCode;

use cgroup_setup::controllers::parse_proc_cgroups;
use cgroup_setup::fs::{HostCgroupfs, HostProcfs};
use cgroup_setup::layout::{classify, parse_proc_cgroup};
use cgroup_setup::plan::Options;
use cgroup_setup::{run, System};
use clap::Parser;

/// Delegates every cgroup v2 controller from the node container's cgroup namespace root
/// down to kubelet's cgroup root, so CRI-O and kubelet can limit pods.
///
/// Steps: check that the cgroup hierarchy is pure v2; move every process out of the root
/// cgroup (and any cgroup on the way down) into a leaf such as /init.scope, again and again
/// until none is left (cgroup v2 forbids enabling controllers for children of a non-root
/// cgroup that holds processes); create the cgroups down to kubelet's cgroup root and write
/// all controllers into each cgroup.subtree_control in one write; read it all back.
///
/// kubelet needs cpu cpuset io memory pids (and uses hugetlb misc when present). When the
/// host did not delegate one of them, nothing is changed and the message names them
/// with the systemd drop-in that fixes it on the host.
///
/// Running it again changes nothing. Exit status: 0 ok, 1 failed (the reason on stderr, or
/// in the JSON), 2 bad usage.
#[derive(Parser, Debug)]
#[command(version, about, long_about, verbatim_doc_comment)]
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
    let fs = HostCgroupfs::new(&args.cgroup_mount);
    let procs = HostProcfs::new("/proc");
    // An unreadable mountinfo reads as "no cgroup mount", which is reported precisely.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let sys = System {
        fs: &fs,
        procs: &procs,
        layout: classify(&mountinfo, &args.cgroup_mount),
        init_cgroup: std::fs::read_to_string("/proc/1/cgroup")
            .ok()
            .and_then(|t| parse_proc_cgroup(&t)),
        kernel: std::fs::read_to_string("/proc/cgroups")
            .ok()
            .map(|t| parse_proc_cgroups(&t)),
    };
    let opts = Options {
        kubelet_root: args.kubelet_cgroup_root,
        leaf: args.leaf,
    };
    let report = run(&sys, &opts, args.dry_run);
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
