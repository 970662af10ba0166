//! `crun-wrapper explain BUNDLE`: the rules' verdict on a bundle, without changing it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::caller::{Caller, Lsm};
use crate::rewrite;
use crate::rules::{self, Report};

#[derive(Debug, clap::Parser)]
#[command(
    name = "crun-wrapper explain",
    about = "Show what crun-wrapper would change in a bundle's config.json, and why",
    long_about = "Show what crun-wrapper would change in a bundle's config.json, and why.\n\n\
        The caller's limits are read from this process, so run it where crun would run \
        (e.g. inside the node container, as CRI-O's user). Nothing is written."
)]
pub struct ExplainArgs {
    /// Bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// Spec file name, relative to the bundle (like crun's --config).
    #[arg(short = 'f', long, default_value = "config.json")]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, short = 'o', value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
    /// Print JSON (same as -o json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub spec: PathBuf,
    /// Set when the file is not a spec: crun would get it unchanged.
    pub malformed: Option<String>,
    /// Whether oci-spec's typed `Spec` accepts the file (informational: the rewrite
    /// never depends on it, see rules.rs).
    pub oci_spec_check: String,
    #[serde(flatten)]
    pub report: Report,
}

pub fn explain(
    bundle: &Path,
    config: &Path,
    caller: &Caller,
    lsm: Lsm,
) -> Result<Explanation, String> {
    let path = bundle.join(config);
    let parsed = rewrite::read_spec(&path)
        .map_err(|e| e.to_string())?
        .and_then(|bytes| rewrite::parse_spec(&bytes).map(|s| s.value));
    let mut spec = match parsed {
        Ok(v) => v,
        Err(why) => {
            return Ok(Explanation {
                spec: path,
                malformed: Some(why),
                oci_spec_check: "not checked".into(),
                report: Report::default(),
            })
        }
    };
    let oci_spec_check = match serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone()) {
        Ok(_) => "ok".to_string(),
        // serde quotes the offending value whole: keep an excerpt.
        Err(e) => format!(
            "oci-spec cannot type it: {}",
            kinc_types::excerpt::bounded(&e.to_string())
        ),
    };
    let report = rules::apply(&mut spec, caller, lsm);
    Ok(Explanation {
        spec: path,
        malformed: None,
        oci_spec_check,
        report,
    })
}

pub fn render_text(e: &Explanation, caller: &Caller) -> String {
    let mut s = format!("spec: {}\n", e.spec.display());
    s += &format!(
        "caller: oom_score_adj {}, {} grantable capabilities, uids {}, gids {}\n",
        caller.oom_score_adj,
        caller.grantable_caps.len(),
        caller.uid_map,
        caller.gid_map
    );
    if let Some(why) = &e.malformed {
        s += &format!("not a valid spec ({why}): crun gets it unchanged and reports it\n");
        return s;
    }
    s += &format!("oci-spec check: {}\n", e.oci_spec_check);
    if e.report.changes.is_empty() {
        s += "no change needed\n";
    } else {
        s += "would change:\n";
        for c in &e.report.changes {
            s += &format!(
                "  {}: {} -> {}\n      because {}\n",
                c.field, c.from, c.to, c.why
            );
        }
    }
    for n in &e.report.notes {
        s += &format!("left for crun to refuse:\n  {}: {}\n", n.field, n.message);
    }
    s
}

/// Entry point for `crun-wrapper explain ...` (args after `explain`).
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    use clap::Parser;
    let a = match ExplainArgs::try_parse_from(
        std::iter::once(std::ffi::OsString::from("crun-wrapper explain")).chain(args),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let caller = match Caller::from_kernel() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "crun-wrapper explain: {e}");
            return 1;
        }
    };
    let text = match explain(&a.bundle, &a.config, &caller, Lsm::from_kernel()) {
        Ok(e) if a.json || a.output == "json" => {
            serde_json::to_string_pretty(&e).expect("serializable") + "\n"
        }
        Ok(e) => render_text(&e, &caller),
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "crun-wrapper explain: {msg}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        // The reader is gone (`| head -1`): nothing left to do, like ripgrep.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "crun-wrapper explain: writing to stdout: {e}"
            );
            1
        }
    }
}
