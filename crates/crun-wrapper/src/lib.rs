//! crun-wrapper: CRI-O (or podman) calls it exactly as it would call crun. For `create`
//! and `run` it reduces the bundle's config.json to what the calling process can grant
//! (oomScoreAdj, capabilities, rlimits, ping_group_range, labels of disabled security
//! modules), never touching `process.user`; then it `exec`s the real crun with the
//! same argv (plus `--no-new-keyring` when configured). Every other call passes through.

pub mod args;
pub mod caller;
pub mod config;
pub mod explain;
pub mod log;
pub mod patch;
pub mod rewrite;
pub mod rules;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

pub use args::CrunCall;
pub use caller::{Caller, IdMap, Lsm};
pub use config::Config;
pub use rewrite::Outcome;

/// The top-level help; `--help` then continues to crun's own help.
pub const HELP: &str = "\
crun-wrapper: a drop-in for crun that makes pod specs runnable by a rootless caller.

Call it exactly like crun. For `create` and `run` it reads the bundle's config.json
(--bundle/-b, else the current directory; --config/-f if given) and changes only what
the calling process cannot grant, one log line per change:
  process.oomScoreAdj        raised to the caller's oom_score_adj when lower
  process.capabilities.*     each set cut to the caller's permitted and bounding sets
                             (not when the spec has its own user namespace)
  process.rlimits[*]         hard/soft clamped to the caller's hard limits
  linux.sysctl ping_group_range   narrowed to mapped gids
  apparmorProfile, selinuxLabel, mountLabel   removed when that module is off
process.user is never changed: an unmapped uid/gid is reported and left to crun.
Only the changed values are rewritten; every other byte of the file is kept.
A config.json that is not JSON, or has a key twice in one object, is passed to crun
unchanged. Other verbs pass through. Log lines that cannot be written are dropped:
crun runs whatever stdout and stderr are.

  crun-wrapper explain [--json] BUNDLE   show what would change and why, change nothing

Settings: /etc/kinc/crun-wrapper.toml (or $KINC_CRUN_WRAPPER_CONFIG):
  crun = \"/usr/bin/crun\"   real crun ($KINC_CRUN overrides)
  no_new_keyring = true     add --no-new-keyring to create/run (keyring quota)
  log_file = \"/path\"        log here instead of stderr; log_max_bytes = 1048576

The real crun's help follows.
";

/// Runs one wrapper call and execs crun; returns only on failure, with the exit code.
pub fn wrap(args: Vec<OsString>) -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    let config = match Config::load(&env) {
        Ok(c) => c,
        Err(e) => {
            log::stderr_line(&e.to_string());
            return 1;
        }
    };
    let logger = match &config.log_file {
        Some(path) => log::Logger::File {
            path: path.clone(),
            max_bytes: config.log_max_bytes,
        },
        None => log::Logger::Stderr,
    };
    let call = CrunCall::parse(&args);
    let mut argv = args;
    if call.touches_bundle() {
        fix_spec(&call, &logger);
        if config.no_new_keyring {
            argv = call.with_no_new_keyring(&argv);
        }
    }
    exec_crun(&config, &argv)
}

/// Rewrites the spec of a create/run call, logging each change. Failures are logged and
/// crun still runs: it then reports the problem in its own words.
fn fix_spec(call: &CrunCall, logger: &log::Logger) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let path = call.spec_path(&cwd);
    let who = call.container_id.as_deref().unwrap_or("?");
    let caller = match Caller::from_kernel() {
        Ok(c) => c,
        Err(e) => {
            logger.line(&format!("{who}: {e}; {} left unchanged", path.display()));
            return;
        }
    };
    match rewrite::rewrite_file(&path, &caller, Lsm::from_kernel()) {
        Ok(Outcome::Malformed(why)) => logger.line(&format!(
            "{who}: {} is not a valid spec ({why}); passed to crun unchanged",
            path.display()
        )),
        Ok(Outcome::Checked { report, .. }) => {
            for c in &report.changes {
                logger.line(&format!(
                    "{who}: {}: {} -> {} ({})",
                    c.field, c.from, c.to, c.why
                ));
            }
            for n in &report.notes {
                logger.line(&format!("{who}: {}: {}", n.field, n.message));
            }
        }
        // A missing spec is crun's to report; anything else is worth a line.
        Err(rewrite::RewriteError::Read { err, .. })
            if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => logger.line(&format!("{who}: {e}; spec left unchanged")),
    }
}

/// Replaces this process with the real crun; returns an exit code if that fails.
pub fn exec_crun(config: &Config, argv: &[OsString]) -> i32 {
    let err = std::process::Command::new(&config.crun)
        .arg0(&config.crun)
        .args(argv)
        .exec();
    log::stderr_line(&missing_crun_message(
        &config.crun,
        &config.crun_source,
        &err,
    ));
    match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

pub fn missing_crun_message(crun: &Path, source: &str, err: &std::io::Error) -> String {
    format!(
        "cannot run the real crun {} (from {source}): {err}; set `crun` in {} or the {} environment variable",
        crun.display(),
        kinc_types::node::CRUN_WRAPPER_CONFIG,
        config::ENV_CRUN
    )
}
