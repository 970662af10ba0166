//! `cargo xtask hostvm e2e`: the end-to-end suite, every check a step of one VM boot.
//!
//! Each check is Rust code that runs *inside the guest* (`xtask hostvm guest-check NAME`,
//! the agent binary is this binary), as root or as the test user in its systemd session.
//! Checks that need a kinc binary run when its crate is in the workspace (it is built and
//! carried into the guest); otherwise they are skipped with the reason printed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::agent::{Job, Step, StepResult};
use super::build::{ensure_built, workspace_root};
use super::config::CTL_MOUNT;
use super::vm::{self, RunOptions};

pub use super::e2e_checks::guest_check;

/// A binary of the workspace that some checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    /// Directory under `crates/`.
    pub krate: &'static str,
    pub bin: &'static str,
}

pub const KINC: Binary = Binary {
    krate: "kinc",
    bin: "kinc",
};
pub const CGROUP_SETUP: Binary = Binary {
    krate: "cgroup-setup",
    bin: "cgroup-setup",
};
pub const CRUN_WRAPPER: Binary = Binary {
    krate: "crun-wrapper",
    bin: "crun-wrapper",
};
pub const KINCNET: Binary = Binary {
    krate: "kincnet",
    bin: "kincnet",
};
/// Binaries the node stand-in carries when they exist (put in /usr/local/bin).
pub const NODE_BINARIES: &[Binary] = &[CGROUP_SETUP, CRUN_WRAPPER, KINCNET];

/// Where binaries are in the guest: `<ctl>/bin/NAME`.
pub fn guest_bin(name: &str) -> String {
    format!("{CTL_MOUNT}/bin/{name}")
}

#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub about: &'static str,
    pub as_user: bool,
    pub needs: &'static [Binary],
    /// Runs after the one reboot of the suite (checks that things come back by themselves).
    pub after_reboot: bool,
    /// The agent kills the check after this long (a hung command fails its check, not
    /// the whole run); several times what it takes under TCG on a loaded 2-core host.
    pub timeout_secs: u64,
    /// A check that does not pass yet, with what stops it: planned only when `--only`
    /// names it exactly, and listed with this reason otherwise (never silently dropped).
    pub pending: Option<&'static str>,
    /// Needs the offline node image (`cargo xtask image --offline`), which the host builds
    /// and shares with the guest: a real cluster.
    pub real: bool,
}

/// Guest memory when a real cluster runs.
pub const REAL_CLUSTER_MEMORY_MIB: u32 = 8192;

/// Per-check limit unless a check says otherwise.
pub const CHECK_TIMEOUT_SECS: u64 = 600;

const fn check(name: &'static str, about: &'static str, as_user: bool) -> Check {
    Check {
        name,
        about,
        as_user,
        needs: &[],
        after_reboot: false,
        timeout_secs: CHECK_TIMEOUT_SECS,
        pending: None,
        real: false,
    }
}

/// A check that does not pass yet (see [`Check::pending`]).
const fn pending(why: &'static str, c: Check) -> Check {
    Check {
        pending: Some(why),
        ..c
    }
}

/// Why the real-cluster checks past create and use are left out of CI: on the 2-core CI
/// machine the VM's speed varies 4x from day to day (2026-12-07: `podman load` 226-254 s,
/// the create 326 s; 2026-12-08: 796 s and 1478 s). On a slow day loading the image and
/// creating the cluster take 35-40 of CI's 90 min, with the other checks 60: there is no
/// room for more, and a suite that cannot finish would keep every other change from landing.
pub const REAL_CI_TIME: &str =
    "left out of CI for time: podman load and the create take 35-40 min \
    of CI's 90 in this machine's TCG VM on a slow day (docs/hostvm.md); passed in the VM on \
    2026-12-07; run it by name";

/// A check on a real cluster booted from the offline node image.
const fn real(c: Check) -> Check {
    Check {
        real: true,
        needs: &[KINC],
        ..c
    }
}

const fn timeout(secs: u64, c: Check) -> Check {
    Check {
        timeout_secs: secs,
        ..c
    }
}

const fn needs(needs: &'static [Binary], c: Check) -> Check {
    Check { needs, ..c }
}

const fn after_reboot(c: Check) -> Check {
    Check {
        after_reboot: true,
        ..c
    }
}

/// The suite, in order: later checks build on earlier ones (the drop-in, the node image),
/// and everything before the first `after_reboot` check runs before the reboot.
pub const CHECKS: &[Check] = &[
    check(
        "boot",
        "multi-user.target reached, no failed unit, pure cgroup v2 with every controller",
        false,
    ),
    check(
        "delegation-default",
        "user@1000.service delegates only cpu memory pids (trixie's default)",
        false,
    ),
    needs(
        &[KINC],
        check(
            "kinc-doctor-before",
            "kinc doctor names the missing cpuset and io and prints the drop-in",
            true,
        ),
    ),
    check(
        "delegation-dropin",
        "the delegate.conf drop-in makes cpuset and io appear for the user",
        false,
    ),
    check(
        "host-prepare",
        "the rest of what kinc doctor asks for: nf_tables modules, ip_forward, inotify and \
         keyring sysctls, no task limit on the user slice",
        false,
    ),
    needs(
        &[KINC],
        check(
            "kinc-doctor-after",
            "kinc doctor is clean (every check ok) once the drop-in and its fixes are in place",
            true,
        ),
    ),
    check(
        "podman-rootless",
        "rootless podman 5: cgroup v2, systemd manager, crun, netavark, pasta",
        true,
    ),
    check(
        "node-image",
        "podman import of the stand-in rootfs, plus a layer with the workspace binaries",
        true,
    ),
    real(timeout(
        1200,
        check(
            "real-image",
            "podman load of the offline node image (containerd, Kubernetes from Go modules)",
            true,
        ),
    )),
    real(timeout(
        3000,
        check(
            "real-create",
            "kinc create cluster --wait on the real image: every bootstrap step done, node \
             Ready, CoreDNS Available, the Quadlet unit active",
            true,
        ),
    )),
    real(check(
        "real-use",
        "kinc export kubeconfig, then kubectl with context kinc-real: the node Ready and \
         every kube-system pod Running",
        true,
    )),
    pending(REAL_CI_TIME, real(check(
        "real-identity",
        "a pod with runAsUser 1000 runs as uid 1000; its memory limit is in its cgroup \
         below kubelet's root; crun-wrapper logged what it clamped",
        true,
    ))),
    pending(REAL_CI_TIME, real(check(
        "real-load-image",
        "an image built in the VM (busybox-static FROM scratch), kinc load image, runs as a \
         pod with imagePullPolicy Never",
        true,
    ))),
    pending(REAL_CI_TIME, real(timeout(
        900,
        check(
            "real-network",
            "pod IPs from the pod CIDR through kincnet, a hostPort on the node's address, \
             NetworkPolicy through kincnet-policy on real pods (default-deny, podSelector, \
             namespaceSelector, ipBlock with except), each both ways",
            true,
        ),
    ))),
    pending(
        "new: not yet seen passing in the VM",
        real(timeout(
            600,
            check(
                "real-policy-first-packet",
                "a pod whose container connects out the instant it starts is denied by an \
                 egress policy that selects it (kincnet waits for kincnet-policy before ADD \
                 returns); an unselected pod started the same way connects on its first try",
                true,
            ),
        )),
    ),
    pending(REAL_CI_TIME, real(timeout(
        1200,
        check(
            "real-test",
            "kinc test on the real cluster: PVC bound and read back, pod-to-pod, ClusterIP \
             Service, DNS, Deployment rollout",
            true,
        ),
    ))),
    pending(
        "the PVC on standard now binds (kinc test passes); this write and the reboot that reads it back are not yet seen passing",
        real(check(
            "real-persist",
            "before the reboot: a PVC written by a pod, and a Deployment rolled out",
            true,
        ))
    ),
    pending("new: not yet seen passing in the VM", real(timeout(
        2700,
        check(
            "real-two-clusters",
            "a second cluster created while the first runs: both Ready, distinct API ports \
             and CIDRs, pods in each reach only their own; deleting it leaves the first Ready \
             and nothing of the second",
            true,
        ),
    ))),
    pending(REAL_CI_TIME, real(timeout(
        900,
        check(
            "real-fail-fast",
            "a create whose kubeadm init fails (a version kubeadm refuses) stops soon after, \
             naming the step and kubeadm's error, and leaves no container, volume or unit",
            true,
        ),
    ))),
    pending(
        "reads the PVC that real-persist writes",
        after_reboot(real(timeout(
            1500,
            check(
                "real-after-reboot",
                "after a reboot Quadlet brings the real node back: Ready again without a new \
                 kubeadm init, the Deployment and the PVC's data still there",
                true,
            ),
        )))
    ),
    after_reboot(real(check(
        "real-delete",
        "kinc delete of the real cluster leaves no container, volume or unit",
        true,
    ))),
    after_reboot(needs(
        &[KINC],
        timeout(
            900,
            check(
            "kinc-parallel",
            "three parallel creates get distinct ports and disjoint CIDRs; deletes leave nothing",
            true,
        ),
        ),
    )),
    after_reboot(needs(
        &[KINC],
        check(
            "kinc-interrupted",
            "a create interrupted halfway leaves nothing after the next delete",
            true,
        ),
    )),
    after_reboot(needs(
        &[KINC],
        check(
            "kinc-killed",
            "a create killed (SIGKILL) halfway leaves units and a container; the next delete \
             removes them all",
            true,
        ),
    )),
];

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Run only the checks whose name contains this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// List the checks and what each one proves, then exit.
    #[arg(long)]
    pub list: bool,
    /// Kill the VM after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 4800)]
    pub timeout: u64,
    /// Keep the run directory (console log) for debugging.
    #[arg(long)]
    pub keep: bool,
    /// Print the results as JSON on stdout (the guest's output goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// What happened to one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "result"
)]
pub enum Verdict {
    Pass { seconds: f64 },
    Fail { exit_code: i32, seconds: f64 },
    Skip { reason: String },
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Which checks run and which are skipped, given which crates the workspace has.
pub fn plan(
    checks: &[Check],
    only: &[String],
    has_crate: impl Fn(&str) -> bool,
) -> (Vec<Check>, Vec<Row>) {
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for c in checks {
        if !only.is_empty() && !only.iter().any(|o| c.name.contains(o.as_str())) {
            continue;
        }
        let missing: Vec<&str> = c
            .needs
            .iter()
            .filter(|b| !has_crate(b.krate))
            .map(|b| b.krate)
            .collect();
        if let Some(why) = c.pending.filter(|_| !only.iter().any(|o| o == c.name)) {
            skipped.push(Row {
                name: c.name.to_string(),
                verdict: Verdict::Skip {
                    reason: format!(
                        "PENDING, does not pass yet ({why}); run it with --only {}",
                        c.name
                    ),
                },
            });
        } else if missing.is_empty() {
            run.push(*c);
        } else {
            skipped.push(Row {
                name: c.name.to_string(),
                verdict: Verdict::Skip {
                    reason: format!(
                        "not in this workspace: crates/{}",
                        missing.join(", crates/")
                    ),
                },
            });
        }
    }
    (run, skipped)
}

/// Whether the VM reboots after planned check `i`: the last check before the first
/// `after_reboot` one (no reboot when nothing runs after it, or nothing before it).
pub fn reboot_after(run: &[Check], i: usize) -> bool {
    !run[i].after_reboot && run.get(i + 1).is_some_and(|n| n.after_reboot)
}

/// Puts the results of the steps that ran next to the planned checks, in suite order.
pub fn verdicts(planned: &[Check], results: &[StepResult], skipped: Vec<Row>) -> Vec<Row> {
    let mut rows: Vec<Row> = planned
        .iter()
        .map(|c| {
            let verdict = match results.iter().find(|r| r.name == c.name) {
                Some(r) if r.exit_code == 0 => Verdict::Pass { seconds: r.seconds },
                Some(r) => Verdict::Fail {
                    exit_code: r.exit_code,
                    seconds: r.seconds,
                },
                None => Verdict::NotRun,
            };
            Row {
                name: c.name.to_string(),
                verdict,
            }
        })
        .collect();
    rows.extend(skipped);
    let order = |n: &str| {
        CHECKS
            .iter()
            .position(|c| c.name == n)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| order(&r.name));
    rows
}

/// Checks planned after the reboot must have run in another boot than those before it.
pub fn reboot_happened(planned: &[Check], results: &[StepResult]) -> Result<()> {
    let boot = |after: bool| -> BTreeSet<&str> {
        results
            .iter()
            .filter(|r| {
                planned
                    .iter()
                    .any(|c| c.name == r.name && c.after_reboot == after)
            })
            .map(|r| r.boot_id.as_str())
            .collect()
    };
    let (before, after) = (boot(false), boot(true));
    if let Some(same) = before.intersection(&after).next() {
        bail!("checks before and after the reboot ran in the same boot {same:?}: the VM did not reboot");
    }
    Ok(())
}

pub fn render_table(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let (word, detail) = match &r.verdict {
            Verdict::Pass { seconds } => ("PASS", format!("{seconds:.1} s")),
            Verdict::Fail { exit_code, seconds } => {
                ("FAIL", format!("exit {exit_code} after {seconds:.1} s"))
            }
            Verdict::Skip { reason } => ("SKIP", reason.clone()),
            Verdict::NotRun => ("FAIL", "did not run (the VM stopped before it)".to_string()),
        };
        s.push_str(&format!("{word}  {:<22} {detail}\n", r.name));
    }
    s
}

fn has_crate(krate: &str) -> bool {
    workspace_root()
        .join("crates")
        .join(krate)
        .join("Cargo.toml")
        .is_file()
}

/// The offline node image and the kubectl built with it, for the real-cluster checks.
pub(crate) fn build_offline_image() -> Result<Vec<(String, PathBuf)>> {
    let out = crate::image::offline::default_output();
    crate::image::run(vec![
        "--offline".into(),
        "--no-load".into(),
        "--output".into(),
        out.display().to_string(),
    ])?;
    let kubectl = crate::image::offline::built_go_binary("kubectl")?;
    Ok(vec![
        (super::e2e_real::ARCHIVE.to_string(), out),
        ("bin/kubectl".to_string(), kubectl),
    ])
}

/// Builds the workspace binaries the planned checks and the node image need.
fn build_binaries(planned: &[Check]) -> Result<Vec<(String, PathBuf)>> {
    let mut wanted: Vec<Binary> = planned
        .iter()
        .flat_map(|c| c.needs.iter().copied())
        .collect();
    wanted.extend(NODE_BINARIES.iter().copied().filter(|b| has_crate(b.krate)));
    wanted.sort_by_key(|b| b.bin);
    wanted.dedup();
    let mut files = Vec::new();
    if wanted.is_empty() {
        return Ok(files);
    }
    let mut cargo = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cargo
        .args(["build", "--bins"])
        .current_dir(workspace_root());
    for b in &wanted {
        cargo.args(["-p", b.krate]);
    }
    super::cmd::run_visible(&mut cargo)?;
    let target = super::build::target_dir().join("debug");
    for b in wanted {
        files.push((format!("bin/{}", b.bin), target.join(b.bin)));
    }
    Ok(files)
}

pub fn run(args: E2eArgs) -> Result<()> {
    if args.list {
        for c in CHECKS {
            let who = if c.as_user { "user" } else { "root" };
            println!("{:<22} {who:<4} {}", c.name, c.about);
            if let Some(why) = c.pending {
                println!("{:<27} PENDING: {why}", "");
            }
        }
        return Ok(());
    }
    let (planned, skipped) = plan(CHECKS, &args.only, has_crate);
    if planned.is_empty() {
        bail!("no check matches {:?}", args.only);
    }
    for r in &skipped {
        if let Verdict::Skip { reason } = &r.verdict {
            eprintln!("hostvm e2e: SKIP {}: {reason}", r.name);
        }
    }
    let mut extra_files = build_binaries(&planned)?;
    if planned.iter().any(|c| c.real) {
        extra_files.extend(build_offline_image()?);
    }
    let built = ensure_built()?;
    let job = Job {
        steps: planned
            .iter()
            .enumerate()
            .map(|(i, c)| Step {
                name: c.name.to_string(),
                argv: vec![
                    format!("{CTL_MOUNT}/agent"),
                    "hostvm".into(),
                    "guest-check".into(),
                    c.name.into(),
                ],
                as_user: c.as_user,
                cwd: None,
                reboot_after: reboot_after(&planned, i),
                keep_going: true,
                timeout_secs: Some(c.timeout_secs),
            })
            .collect(),
        shares: Vec::new(),
    };
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(args.timeout)),
        keep: args.keep,
        extra_files,
        allow_reboot: (0..planned.len()).any(|i| reboot_after(&planned, i)),
        // A real control plane (etcd, API server, controller manager, scheduler, CoreDNS)
        // next to the host's own services.
        memory_mib: if planned.iter().any(|c| c.real) {
            REAL_CLUSTER_MEMORY_MIB
        } else {
            RunOptions::default().memory_mib
        },
        stream: !args.json,
        ..Default::default()
    };
    let out = vm::run_job(&built, &job, &opts)?;
    let rows = verdicts(&planned, &out.results, skipped);
    let rebooted = reboot_happened(&planned, &out.results);
    let failed = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail { .. } | Verdict::NotRun))
        .count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        eprint!("\n{}", render_table(&rows));
    }
    eprintln!(
        "hostvm e2e: {} checks, {failed} failed, {:.0} s in the VM (first check {} s after qemu started)",
        rows.len(),
        out.total_seconds,
        out.boot_seconds
            .map_or("never".into(), |b| format!("{b:.1}"))
    );
    if let Some(why) = &out.why {
        eprintln!("hostvm e2e: {why}");
    }
    if failed > 0 && !out.failure_lines.is_empty() {
        eprintln!("hostvm e2e: what failed, as the guest said it:");
        for l in &out.failure_lines {
            eprintln!("  {l}");
        }
    }
    if failed > 0 {
        bail!("{failed} end-to-end check(s) failed");
    }
    rebooted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_skips_checks_whose_crate_is_missing_and_filters() {
        let (run, skipped) = plan(CHECKS, &[], |k| k == "kinc");
        assert!(run.iter().any(|c| c.name == "kinc-doctor-before"));
        let reason = |name: &str| match &skipped.iter().find(|r| r.name == name).unwrap().verdict {
            Verdict::Skip { reason } => reason.clone(),
            v => panic!("{name}: {v:?}"),
        };
        assert!(reason("real-two-clusters").starts_with("PENDING"));
        let (run, skipped) = plan(CHECKS, &["kinc-".into()], |_| true);
        assert!(run.iter().all(|c| c.name.contains("kinc-")));
        assert!(skipped.is_empty());
        let (run, _) = plan(
            CHECKS,
            &["real-create".into(), "real-delete".into()],
            |_| true,
        );
        assert_eq!(run.len(), 2);
        assert!(reboot_after(&run, 0) && !reboot_after(&run, 1));
        let (run, _) = plan(CHECKS, &["real-create".into()], |_| true);
        assert!(!reboot_after(&run, 0), "nothing runs after it: no reboot");
        let (run, _) = plan(CHECKS, &[], |_| true);
        let at: Vec<&str> = (0..run.len())
            .filter(|i| reboot_after(&run, *i))
            .map(|i| run[i].name)
            .collect();
        // The default plan creates and uses the real cluster, reboots, then deletes it; the
        // real checks left out for CI's time (REAL_CI_TIME) run only by name.
        assert_eq!(at, ["real-use"]);
        let real: Vec<&str> = run.iter().filter(|c| c.real).map(|c| c.name).collect();
        assert_eq!(
            real,
            ["real-image", "real-create", "real-use", "real-delete"]
        );
        assert!(reason("real-test").contains("left out of CI for time"));
        let (run, _) = plan(CHECKS, &["real-fail-fast".into()], |_| true);
        assert_eq!(run.len(), 1, "a pending real check runs when named");
        // Every after-reboot check comes after every other one.
        let first_after = CHECKS.iter().position(|c| c.after_reboot).unwrap();
        assert!(CHECKS[first_after..].iter().all(|c| c.after_reboot));
        // Check names are unique: results are matched by name.
        let mut names: Vec<_> = CHECKS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
    }

    #[test]
    fn a_pending_check_runs_only_when_named_exactly() {
        let c = pending("why", check("x-pending", "about", true));
        let checks = [check("x-ok", "about", true), c];
        let (run, skipped) = plan(&checks, &[], |_| true);
        assert_eq!(run.iter().map(|c| c.name).collect::<Vec<_>>(), ["x-ok"]);
        let Verdict::Skip { reason } = &skipped[0].verdict else {
            panic!("{:?}", skipped[0].verdict)
        };
        assert!(
            reason.contains("PENDING")
                && reason.contains("why")
                && reason.contains("--only x-pending")
        );
        let (run, _) = plan(&checks, &["x-".into()], |_| true);
        assert_eq!(run.len(), 1, "a prefix does not run it");
        let (run, skipped) = plan(&checks, &["x-pending".into()], |_| true);
        assert_eq!((run.len(), skipped.len()), (1, 0));
    }

    #[test]
    fn verdicts_cover_pass_fail_skip_and_not_run() {
        let (run, skipped) = plan(CHECKS, &[], |_| false);
        let res = |n: &str, c| StepResult {
            name: n.into(),
            exit_code: c,
            seconds: 1.0,
            uptime: 20.0,
            boot_id: "b1".into(),
        };
        let rows = verdicts(
            &run,
            &[res("boot", 0), res("delegation-default", 1)],
            skipped,
        );
        assert_eq!(rows.len(), CHECKS.len());
        assert_eq!(rows[0].name, "boot");
        assert!(matches!(rows[0].verdict, Verdict::Pass { .. }));
        assert!(matches!(
            rows[1].verdict,
            Verdict::Fail { exit_code: 1, .. }
        ));
        assert!(matches!(rows[2].verdict, Verdict::Skip { .. }));
        assert!(rows.iter().any(|r| r.verdict == Verdict::NotRun));
        let (all, _) = plan(CHECKS, &[], |_| true);
        let mut after = res("kinc-parallel", 0);
        assert!(reboot_happened(&all, &[res("boot", 0), after.clone()]).is_err());
        after.boot_id = "b2".into();
        assert!(reboot_happened(&all, &[res("boot", 0), after]).is_ok());
        let table = render_table(&rows);
        assert!(table.contains("PASS  boot"), "{table}");
        assert!(table.contains("SKIP  kinc-doctor-before"), "{table}");
        let json = serde_json::to_string(&rows[1]).unwrap();
        assert!(
            json.contains("\"result\":\"fail\"") && json.contains("\"exitCode\":1"),
            "{json}"
        );
    }
}
