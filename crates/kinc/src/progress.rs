//! Progress for people, on stderr: a spinner per step with its elapsed time on a
//! terminal, one line per finished step otherwise (logs, CI), nothing with `--quiet`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A running step: its message, when it started, its spinner (terminal only).
type Step = (String, Instant, Option<ProgressBar>);

pub struct Progress {
    mode: Mode,
    steps: Mutex<BTreeMap<String, Step>>,
    /// Steps that ended: a caller that polls a status (kinc create reads the node's
    /// status file every 400 ms) may report a step again; it is shown once.
    ended: Mutex<BTreeSet<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Lines,
    Spinners,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Spinners
        } else {
            Mode::Lines
        };
        Self {
            mode,
            steps: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn quiet() -> Self {
        Self::new(true)
    }

    fn multi() -> &'static MultiProgress {
        static M: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
        M.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    }

    /// Starts step `key` (again: only the message changes).
    pub fn start(&self, key: &str, msg: &str) {
        if self.ended.lock().unwrap().contains(key) {
            return;
        }
        let mut steps = self.steps.lock().unwrap();
        if let Some((m, _, bar)) = steps.get_mut(key) {
            *m = msg.to_string();
            if let Some(b) = bar {
                b.set_message(msg.to_string());
            }
            return;
        }
        let bar = (self.mode == Mode::Spinners).then(|| {
            let b = Self::multi().add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template(" {spinner} {msg} ({elapsed})")
                    .expect("static template"),
            );
            b.set_message(msg.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        steps.insert(key.to_string(), (msg.to_string(), Instant::now(), bar));
    }

    pub fn done(&self, key: &str) {
        self.end(key, "✓", None);
    }

    pub fn fail(&self, key: &str, why: &str) {
        self.end(key, "✗", Some(why));
    }

    /// Ends a step that had nothing to do, with the reason.
    pub fn skipped(&self, key: &str, why: &str) {
        self.end(key, "-", Some(why));
    }

    /// Ends every step still running as failed.
    pub fn fail_all(&self, why: &str) {
        let keys: Vec<String> = self
            .steps
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, _, b))| b.as_ref().is_none_or(|b| !b.is_finished()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.fail(&k, why);
        }
    }

    fn end(&self, key: &str, mark: &str, why: Option<&str>) {
        let mut steps = self.steps.lock().unwrap();
        let Some((msg, t0, bar)) = steps.remove(key) else {
            return;
        };
        self.ended.lock().unwrap().insert(key.to_string());
        let line = match why {
            Some(w) => format!(" {mark} {msg} ({}): {w}", fmt_elapsed(t0.elapsed())),
            None => format!(" {mark} {msg} ({})", fmt_elapsed(t0.elapsed())),
        };
        match (self.mode, bar) {
            (Mode::Spinners, Some(b)) => {
                // Replace the spinner line with the final mark and elapsed time.
                b.set_style(ProgressStyle::with_template("{msg}").expect("static template"));
                b.finish_with_message(line);
            }
            (Mode::Lines, _) => stderr_line(&line),
            _ => {}
        }
    }

    /// A plain message (kept above the spinners on a terminal).
    pub fn note(&self, msg: &str) {
        match self.mode {
            Mode::Spinners => {
                let _ = Self::multi().println(msg);
            }
            Mode::Lines => stderr_line(msg),
            Mode::Quiet => {}
        }
    }
}

/// Progress is best effort: a closed or full stderr must not stop a create
/// (`eprintln!` would panic there).
fn stderr_line(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub fn fmt_elapsed(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_format() {
        assert_eq!(fmt_elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_elapsed(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn quiet_tracks_steps_without_output() {
        let p = Progress::quiet();
        p.start("a", "Doing a");
        p.start("a", "Doing a again");
        p.done("a");
        p.fail("missing", "no such step");
        p.start("b", "b");
        p.fail_all("interrupted");
        assert!(p.steps.lock().unwrap().is_empty());
    }

    #[test]
    fn an_ended_step_reported_again_is_not_started_again() {
        let p = Progress::quiet();
        p.start("step:load-config", "load-config");
        p.done("step:load-config");
        // The next poll of the status file says the same.
        p.start("step:load-config", "load-config");
        assert!(p.steps.lock().unwrap().is_empty());
        p.start("step:x", "x");
        p.skipped("step:x", "nothing to do");
        p.start("step:x", "x");
        assert!(p.steps.lock().unwrap().is_empty());
        p.start("step:y", "y");
        assert_eq!(p.steps.lock().unwrap().len(), 1);
    }
}
