//! `cargo xtask hostvm`: a Debian trixie test host under qemu (systemd, cgroup v2, rootless
//! Podman 5, Quadlet), and kinc's end-to-end suite run inside it. See notes/hostvm.md.

mod agent;
mod bench_guest;
mod bench_kubeadm;
mod bench_ready;
pub(crate) mod build;
mod cmd;
pub(crate) mod config;
mod e2e;
mod e2e_checks;
mod e2e_kinc;
mod e2e_real;
mod kernel;
mod node;
mod qemu;
#[cfg(test)]
mod testdir;
mod vm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask hostvm",
    about = "A Debian trixie test host under qemu: systemd, cgroup v2, rootless Podman 5, Quadlet",
    long_about = "A Debian trixie test host under qemu: systemd as PID 1, a pure cgroup v2 \
hierarchy, rootless Podman 5 with Quadlet, a test user (`kinc`, uid 1000) with subuid/subgid \
ranges and lingering. Built from Debian packages only (debootstrap) and cached under \
$KINC_HOSTVM_CACHE (default /var/cache/kinc-hostvm as root, else target/hostvm), keyed by the hash of its recipe.\n\n\
Examples:\n  \
sudo cargo xtask hostvm build\n  \
sudo cargo xtask hostvm run -- systemctl is-system-running\n  \
sudo cargo xtask hostvm run --as-user -- podman info\n  \
sudo cargo xtask hostvm run --share . -- ls $PWD\n  \
sudo cargo xtask hostvm e2e"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the host image (debootstrap, ~3-4 min); a no-op when the cache has it.
    Build,
    /// Boot a throw-away overlay of the image, run COMMAND, power off; exits with
    /// COMMAND's status (124: timed out, 125: the guest reported no status).
    Run {
        /// Run COMMAND as the test user inside its systemd session (a scope of user@1000).
        #[arg(long)]
        as_user: bool,
        /// Mount a host directory at the same path in the guest (9p; repeatable).
        #[arg(long, value_name = "DIR")]
        share: Vec<PathBuf>,
        /// Kill the VM after this many seconds (boot included).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        timeout: u64,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 4096)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Keep the run directory (console log, overlay) for debugging.
        #[arg(long)]
        keep: bool,
        /// The command and its arguments, run without a shell.
        #[arg(required = true, last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Run the end-to-end suite in one VM boot (builds the image first if needed).
    E2e(e2e::E2eArgs),
    /// Time to a Ready node with CoreDNS Ready: kinc against a plain kubeadm init of the
    /// same binaries and CRI, in one VM boot (docs/time-to-ready.md).
    BenchReady(bench_ready::BenchArgs),
    /// Inside the guest: run the job in CTL_DIR, then power off.
    #[command(hide = true)]
    GuestAgent { ctl: PathBuf },
    /// Inside the guest: one end-to-end check.
    #[command(hide = true)]
    GuestCheck { name: String },
    /// Inside the guest: measure one side of bench-ready, write its result into OUT.
    #[command(hide = true)]
    GuestBench {
        side: bench_ready::Side,
        #[arg(long)]
        out: PathBuf,
    },
    /// Inside the node stand-in: write the bootstrap status file.
    #[command(hide = true)]
    FakeBootstrap,
}

pub fn run(args: Vec<String>) -> Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("hostvm".to_string()).chain(args))
        .unwrap_or_else(|e| e.exit());
    match cli.cmd {
        Cmd::Build => build::ensure_built().map(|_| ()),
        Cmd::Run {
            as_user,
            share,
            timeout,
            memory,
            smp,
            keep,
            command,
        } => {
            let built = vm::require_built()?;
            let job = agent::Job {
                steps: vec![agent::Step {
                    name: "command".into(),
                    argv: command,
                    as_user,
                    cwd: None,
                    reboot_after: false,
                    keep_going: false,
                    timeout_secs: None,
                }],
                shares: Vec::new(),
            };
            let opts = vm::RunOptions {
                timeout: Some(Duration::from_secs(timeout)),
                memory_mib: memory,
                smp,
                keep,
                shares: share,
                ..Default::default()
            };
            let out = vm::run_job(&built, &job, &opts)?;
            let started = match out.boot_seconds {
                Some(b) => format!("the command started {b:.1} s after qemu"),
                None => "the command never started".to_string(),
            };
            eprintln!(
                "hostvm: exit {} after {:.1} s ({started})",
                out.exit_code, out.total_seconds
            );
            if let Some(why) = &out.why {
                eprintln!("hostvm: {why}");
            }
            std::process::exit(out.exit_code);
        }
        Cmd::E2e(a) => e2e::run(a),
        Cmd::BenchReady(a) => bench_ready::run(a),
        Cmd::GuestBench { side, out } => bench_ready::guest(side, &out),
        Cmd::GuestAgent { ctl } => agent::guest_main(&ctl),
        Cmd::GuestCheck { name } => e2e::guest_check(&name),
        Cmd::FakeBootstrap => node::fake_bootstrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hostvm").chain(args.iter().copied()))
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let cli = parse(&[
            "run",
            "--as-user",
            "--share",
            "/w",
            "--timeout",
            "30",
            "--",
            "podman",
            "run",
            "--rm",
            "x",
        ])
        .unwrap();
        let Cmd::Run {
            as_user,
            share,
            timeout,
            command,
            ..
        } = cli.cmd
        else {
            panic!("not run")
        };
        assert!(as_user);
        assert_eq!(share, [PathBuf::from("/w")]);
        assert_eq!(timeout, 30);
        // Options after `--` belong to the command, not to us.
        assert_eq!(command, ["podman", "run", "--rm", "x"]);
        assert!(parse(&["run"]).is_err(), "a command is required");
        assert!(parse(&["e2e", "--only", "boot", "--json"]).is_ok());
    }
}
