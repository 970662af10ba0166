//! Turns parsed commands into library calls and prints results: listings on stdout
//! (text or `-o json`), progress and notes on stderr, both through [`crate::out`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use kinc::create::{ClusterOptionsFile, CreateOptions, RunMode};
use kinc::doctor::Level;
use kinc::host::Host;
use kinc::livetest::{self, LiveTestOptions};
use kinc::progress::Progress;
use kinc::runner::SystemRunner;
use kinc::Kinc;
use kinc_types::status::{BootstrapStatus, StepState};
use kinc_types::ClusterName;

use crate::cli::*;

/// kinc on this machine: the edge where the host's facts are gathered.
fn kinc() -> Result<Kinc<SystemRunner>> {
    Ok(Kinc::from_env(SystemRunner, Host::gather())?)
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)
}

/// Whether `--name` came from the command line or the environment (not the default).
fn name_given() -> bool {
    std::env::args().any(|a| a == "--name" || a == "-n" || a.starts_with("--name="))
        || std::env::var_os(kinc_types::name::NAME_ENV).is_some()
}

pub fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Create(CreateCmd::Cluster(a)) => create(a, quiet),
        Command::Delete(DeleteCmd::Cluster(n)) => delete(&[n.name], quiet),
        Command::Delete(DeleteCmd::Clusters { all: _ }) => {
            let k = kinc()?;
            let mut names: Vec<ClusterName> = Vec::new();
            for c in k.clusters()? {
                names.push(ClusterName::new(&c.name)?);
            }
            for n in k.lock_state()?.state.clusters.keys() {
                let n = ClusterName::new(n)?;
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            delete(&names, quiet)
        }
        Command::Get(GetCmd::Clusters { output }) => {
            let list = kinc()?.clusters()?;
            match output {
                Output::Json => json(&list),
                Output::Text => {
                    if list.is_empty() {
                        errln!("No kinc clusters found.");
                    }
                    for c in list {
                        outln!("{}", c.name)?;
                    }
                    Ok(())
                }
            }
        }
        Command::Get(GetCmd::Kubeconfig(n)) => {
            out!("{}", kinc()?.kubeconfig(&n.name)?.to_yaml())
        }
        Command::Export(ExportCmd::Kubeconfig { name, kubeconfig }) => {
            let mut k = kinc()?;
            if let Some(p) = kubeconfig {
                k.kubeconfig_path = Some(p);
            }
            let path = k.export_kubeconfig(&name.name)?;
            errln!(
                "Set kubectl context to \"{}\" in {} (`kubectl cluster-info --context {}`)",
                name.name.context(),
                path.display(),
                name.name.context()
            );
            Ok(())
        }
        Command::Load(LoadCmd::Image { images, name }) => {
            let done = kinc()?.load_images(&name.name, &images, Duration::from_secs(120))?;
            for (img, via) in done {
                let how = match via {
                    kinc::images::LoadedVia::HostStore => {
                        "visible through the shared host image store"
                    }
                    kinc::images::LoadedVia::Archive => "copied into the node",
                };
                errln!("Image {img:?} {how} on cluster {}", name.name);
            }
            Ok(())
        }
        Command::Status(a) => status(a),
        Command::Doctor(a) => doctor(a),
        Command::Test(a) => live_test(a),
        Command::Logs(a) => {
            let l = kinc()?.logs(&a.name.name, a.tail)?;
            outln!("==> container {} <==", a.name.name.container())?;
            out!("{}", l.container)?;
            outln!("==> node journal <==")?;
            match l.journal {
                Ok(j) => out!("{j}"),
                Err(why) => outln!("({why})"),
            }
        }
    }
}

fn create(a: CreateArgs, quiet: bool) -> Result<()> {
    let file = match &a.config {
        Some(p) => ClusterOptionsFile::load(p)?,
        None => ClusterOptionsFile::default(),
    };
    let name = match (&file.name, name_given()) {
        (Some(n), false) => n.clone(),
        _ => a.name.name.clone(),
    };
    kinc::signal::install();
    let progress = Progress::new(quiet);
    progress.note(&format!("Creating cluster \"{name}\" ..."));
    let opts = CreateOptions {
        name: name.clone(),
        image: a.image,
        api_port: a.api_port,
        file,
        wait: a.wait,
        retain: a.retain,
        skip_checks: a.skip_checks,
    };
    let k = kinc()?;
    let created = k
        .create(&opts, &progress, &kinc::signal::interrupted)
        .with_context(|| format!("failed to create cluster \"{name}\""))?;
    if let RunMode::Quadlet(dir) = &created.mode {
        progress.note(&format!(
            "Quadlet units in {}; the cluster comes back after a reboot",
            dir.display()
        ));
    }
    if !created.ready {
        progress.note(&format!(
            "Not waiting for Ready (--wait 0): follow it with `kinc status --name {name} --watch`"
        ));
    }
    progress.note(&format!(
        "API server: https://127.0.0.1:{}\nNext: kinc export kubeconfig --name {name} && kubectl --context {} get nodes",
        created.config.api_port,
        name.context()
    ));
    Ok(())
}

fn delete(names: &[ClusterName], quiet: bool) -> Result<()> {
    let k = kinc()?;
    for n in names {
        let r = k
            .delete(n)
            .with_context(|| format!("failed to delete cluster \"{n}\""))?;
        if quiet {
            continue;
        }
        if r.is_empty() {
            errln!("Cluster \"{n}\" has no resources: nothing to delete");
        } else {
            errln!(
                "Deleted cluster \"{n}\": containers [{}], volumes [{}], units [{}]",
                r.containers.join(", "),
                r.volumes.join(", "),
                r.units
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(p) = r.kubeconfig {
            errln!("Removed context {} from {}", n.context(), p.display());
        }
    }
    Ok(())
}

fn print_status(s: &BootstrapStatus) -> Result<()> {
    outln!("cluster {}: {:?} (boot {})", s.cluster, s.phase, s.boot)?;
    for st in &s.steps {
        let mark = match st.state {
            StepState::Done => "✓",
            StepState::Skipped => "-",
            StepState::Running => "…",
            StepState::Failed => "✗",
            StepState::Pending => " ",
        };
        let took = match (st.started_at, st.finished_at) {
            (Some(a), Some(b)) => format!(" ({:.1}s)", (b - a).as_seconds_f64()),
            _ => String::new(),
        };
        let msg = st
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        outln!(" {mark} {}{took}{msg}", st.name)?;
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<()> {
    let k = kinc()?;
    let mut last = None;
    loop {
        let s = k.status(&a.name.name)?;
        if last.as_ref() != Some(&s) {
            match a.output {
                Output::Json => outln!("{}", serde_json::to_string(&s)?)?,
                Output::Text => print_status(&s)?,
            }
        }
        let finished = s.phase != kinc_types::status::Phase::Bootstrapping;
        last = Some(s);
        if !a.watch || finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn doctor(a: DoctorArgs) -> Result<()> {
    let findings = kinc()?.doctor();
    match a.output {
        Output::Json => json(&findings)?,
        Output::Text => {
            for f in &findings {
                let mark = match f.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                outln!("[{mark}] {:<18} {}", f.check, f.summary)?;
                if let Some(fix) = &f.fix {
                    outln!("       fix: {fix}")?;
                }
            }
        }
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    if failed > 0 {
        bail!("{failed} check(s) would stop `kinc create cluster`");
    }
    Ok(())
}

fn live_test(a: TestArgs) -> Result<()> {
    let k = kinc()?;
    let yaml = k.kubeconfig(&a.name.name)?.to_yaml();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = LiveTestOptions {
        image: a.image,
        timeout: a.timeout,
        namespace: format!("kinc-test-{}", std::process::id()),
    };
    let results = rt.block_on(async {
        let client = livetest::client(&yaml).await?;
        anyhow::Ok(livetest::run(client, &opts).await)
    })?;
    match a.output {
        Output::Json => json(&results)?,
        Output::Text => {
            for r in &results {
                let mark = if r.ok { "PASS" } else { "FAIL" };
                outln!("[{mark}] {:<12} {} ({:.1}s)", r.check, r.detail, r.seconds)?;
            }
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        bail!(
            "{failed} live check(s) failed on cluster {:?}",
            a.name.name.as_str()
        );
    }
    Ok(())
}
