//! `cargo xtask hostvm bench-ready`: time to a Ready node with CoreDNS Ready, kinc against a
//! plain `kubeadm init` of the same binaries and CRI, in one boot of the test VM.
//!
//! The guest measures both sides (`xtask hostvm guest-bench kinc|kubeadm`, see
//! [`super::bench_guest`] and [`super::bench_kubeadm`]) and writes one [`SideResult`] each
//! as JSON into a host directory shared with the VM; the host puts them side by side in a
//! [`Report`]. Everything from a result to the table is a pure function, unit-tested here.
//!
//! Order: kinc first, then plain kubeadm. The plain run changes the host for good (a root
//! containerd and kubelet that keep running, a dummy link with the node address and a
//! default route, kube-proxy's and kincnet's nf_tables rules in the host's namespace), and
//! rootless Podman's pasta copies the host's addresses and routes into the node: run
//! first, it would change what kinc's node sees. `kinc delete` leaves the host as it was
//! (the e2e suite checks that), so kinc going first perturbs nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kinc_types::BootstrapStatus;
use serde::{Deserialize, Serialize};

use super::agent::{Job, Step, StepResult};
use super::build::{ensure_built, target_dir, workspace_root};
use super::config::CTL_MOUNT;
use super::e2e::REAL_CLUSTER_MEMORY_MIB;
use super::vm::{self, RunOptions};

/// The goal: kinc at or below this fraction of plain kubeadm's time.
pub const GOAL_RATIO: f64 = 0.7;
/// The name of kinc's benchmark cluster (its node is `kinc-bench-control-plane`).
pub const CLUSTER: &str = "bench";
/// The API port on 127.0.0.1 for both sides (one after the other, never together).
pub const API_PORT: u16 = 6443;
/// The guest steps' limits: several times what each takes under TCG on a loaded host.
const SIDE_TIMEOUT_SECS: u64 = 2700;
const PREP_TIMEOUT_SECS: u64 = 900;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print the report as JSON on stdout (the guest's output is not streamed).
    #[arg(long)]
    pub json: bool,
    /// Kill the VM after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5400)]
    pub timeout: u64,
    /// Keep the VM's run directory (console log, the guest's stdout/stderr).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Kinc,
    Kubeadm,
}

impl Side {
    pub fn file(self) -> &'static str {
        match self {
            Side::Kinc => "kinc.json",
            Side::Kubeadm => "kubeadm.json",
        }
    }
    fn step(self) -> &'static str {
        match self {
            Side::Kinc => "bench-kinc",
            Side::Kubeadm => "bench-kubeadm",
        }
    }
}

/// A machine as the report's header describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineInfo {
    pub kernel: String,
    pub cpus: usize,
    /// The 1, 5 and 15 minute load averages.
    pub loadavg: String,
}

impl MachineInfo {
    pub fn here() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg: loadavg(&read("/proc/loadavg")),
        }
    }
}

/// The three load averages of a `/proc/loadavg` text.
pub fn loadavg(text: &str) -> String {
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Something that took time, in seconds from the side's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub name: String,
    pub start: f64,
    pub end: f64,
}

impl Span {
    pub fn seconds(&self) -> f64 {
        self.end - self.start
    }
}

/// What one side measured. Every time is in seconds from `started_unix`, when the timed
/// command (`kinc create` or `kubeadm init`) was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SideResult {
    pub side: Side,
    pub command: Vec<String>,
    pub started_unix: f64,
    /// The guest right before the clock started.
    pub guest: Option<MachineInfo>,
    /// Untimed preparation (plain kubeadm: extracting the node's files, starting
    /// containerd, importing the images).
    pub setup_seconds: Option<f64>,
    /// Of that, importing the component images into containerd.
    pub image_import_seconds: Option<f64>,
    pub exit_code: Option<i32>,
    /// When the timed command exited.
    pub command_seconds: Option<f64>,
    /// CPU (user + system) of the timed command and every process it waited for.
    pub command_cpu_seconds: Option<f64>,
    /// The first `200` from `GET /readyz`, polled every second.
    pub api_answering: Option<f64>,
    /// The node's Ready condition, from its `lastTransitionTime`.
    pub node_ready: Option<f64>,
    /// The last CoreDNS pod's Ready condition, from its `lastTransitionTime`.
    pub coredns_ready: Option<f64>,
    pub coredns_pods: usize,
    /// When the poll first saw both (the poll's own latency included).
    pub ready_observed: Option<f64>,
    /// kubeadm init as one span: kinc's `kubeadm-init` step, or the plain command.
    pub kubeadm_init: Option<Span>,
    /// kinc: the bootstrap steps from the status file; plain: kubeadm's output phases.
    pub spans: Vec<Span>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

impl SideResult {
    pub fn new(side: Side) -> Self {
        Self {
            side,
            command: Vec::new(),
            started_unix: 0.0,
            guest: None,
            setup_seconds: None,
            image_import_seconds: None,
            exit_code: None,
            command_seconds: None,
            command_cpu_seconds: None,
            api_answering: None,
            node_ready: None,
            coredns_ready: None,
            coredns_pods: 0,
            ready_observed: None,
            kubeadm_init: None,
            spans: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    /// Time to a Ready node with CoreDNS Ready: the later of the two.
    pub fn total(&self) -> Option<f64> {
        Some(self.node_ready?.max(self.coredns_ready?))
    }

    /// Writes the result atomically into `dir` (the host reads it after the VM is gone).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = dir.join(self.side.file());
        kinc_types::fsutil::write_atomic(&p, &serde_json::to_vec_pretty(self)?, Some(0o644))
            .with_context(|| format!("writing {}", p.display()))
    }
}

/// The bootstrap steps of a status file as spans from `t0_unix`; a step not finished (or
/// never started) has no span. Skipped and failed steps say so in their name.
pub fn kinc_spans(st: &BootstrapStatus, t0_unix: f64) -> Vec<Span> {
    st.steps
        .iter()
        .filter_map(|s| {
            let start = s
                .started_at
                .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)?;
            let end = s
                .finished_at
                .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)?;
            let name = match s.state {
                kinc_types::StepState::Skipped => format!("{} (skipped)", s.name),
                kinc_types::StepState::Failed => format!("{} (failed)", s.name),
                _ => s.name.clone(),
            };
            Some(Span {
                name,
                start: start - t0_unix,
                end: end - t0_unix,
            })
        })
        .collect()
}

/// The `[phase]` tag kubeadm starts its progress lines with (`[certs] Generating ...`).
pub fn phase_tag(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (tag, _) = rest.split_once(']')?;
    let ok = !tag.is_empty()
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(&line.trim_start()[..tag.len() + 2])
}

/// kubeadm's phases from its stdout lines, each timed when it arrived: a phase runs from
/// its first line to the next phase's first line; the first from the start (0), the last
/// until the command ended (`end`). Untagged lines (the closing instructions) belong to
/// the phase before them.
pub fn kubeadm_spans(lines: &[(f64, String)], end: f64) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for (t, line) in lines {
        let Some(tag) = phase_tag(line) else { continue };
        match spans.last_mut() {
            Some(last) if last.name == tag => continue,
            Some(last) => last.end = *t,
            None => {}
        }
        let start = if spans.is_empty() { 0.0 } else { *t };
        spans.push(Span {
            name: tag.to_string(),
            start,
            end: *t,
        });
    }
    if let Some(last) = spans.last_mut() {
        last.end = end;
    }
    spans
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01 (the inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Unix seconds of a UTC RFC 3339 time as Kubernetes writes it (`2026-12-07T11:59:44Z`,
/// a fraction allowed). Other offsets are not what the API server writes: `None`.
pub fn parse_utc(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, format!("0.{f}").parse::<f64>().ok()?),
        None => (time, 0.0),
    };
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + sec) as f64 + frac)
}

/// `2026-12-07T11:59:44Z` for unix seconds (whole seconds).
pub fn format_utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The parts of a `kubectl get -o json` list of nodes or pods that say when they became
/// Ready.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectList {
    #[serde(default)]
    pub items: Vec<Object>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: ObjectStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub last_transition_time: Option<String>,
}

/// Since when (unix seconds) the object's Ready condition is True, if it is.
pub fn ready_since(o: &Object) -> Option<f64> {
    o.status
        .conditions
        .iter()
        .find(|c| c.kind == "Ready" && c.status == "True")
        .and_then(|c| parse_utc(c.last_transition_time.as_deref()?))
}

/// When the last of the objects became Ready, once all of them (at least one) are.
pub fn all_ready_at(list: &ObjectList) -> Option<f64> {
    if list.items.is_empty() {
        return None;
    }
    list.items
        .iter()
        .map(ready_since)
        .try_fold(f64::MIN, |acc, t| Some(acc.max(t?)))
}

/// A side's time to Ready in three parts: before kubeadm init, kubeadm init, after it.
/// A part is missing when the side did not get that far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Breakdown {
    pub before: Option<f64>,
    pub init: Option<f64>,
    pub after: Option<f64>,
    pub total: Option<f64>,
}

/// kubeadm init's span: the side's own, else kinc's `kubeadm-init` step that failed (so a
/// failed run still shows how far it got).
pub fn init_span(r: &SideResult) -> Option<&Span> {
    r.kubeadm_init
        .as_ref()
        .or_else(|| r.spans.iter().find(|s| s.name.starts_with("kubeadm-init")))
}

pub fn breakdown(r: &SideResult) -> Breakdown {
    let init = init_span(r);
    let total = r.total();
    Breakdown {
        before: init.map(|i| i.start),
        init: init.map(Span::seconds),
        after: init.zip(total).map(|(i, t)| t - i.end),
        total,
    }
}

/// kinc / plain kubeadm.
pub fn ratio(kinc: Option<f64>, kubeadm: Option<f64>) -> Option<f64> {
    let (k, a) = (kinc?, kubeadm?);
    (a > 0.0).then(|| k / a)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The figure the ratio is taken of.
    Total,
    /// One of the three parts that add up to the total.
    Part,
    /// What a part is made of, as one side can tell.
    Detail,
    /// A point in time, seconds from the start.
    Milestone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub phase: String,
    pub level: Level,
    pub kinc: Option<f64>,
    pub kubeadm: Option<f64>,
}

fn row(level: Level, phase: &str, kinc: Option<f64>, kubeadm: Option<f64>) -> Row {
    Row {
        phase: phase.to_string(),
        level,
        kinc,
        kubeadm,
    }
}

/// Time between consecutive spans, and from the last one until `until`.
pub fn gaps(spans: &[&Span], until: f64) -> f64 {
    let mut sum = 0.0;
    for w in spans.windows(2) {
        sum += (w[1].start - w[0].end).max(0.0);
    }
    if let Some(last) = spans.last() {
        sum += (until - last.end).max(0.0);
    }
    sum
}

/// The table: the three parts of each side's time to Ready with what each is made of,
/// the total, then the milestones.
pub fn table_rows(k: &SideResult, a: &SideResult) -> Vec<Row> {
    const EPS: f64 = 1e-6;
    let (kb, ab) = (breakdown(k), breakdown(a));
    let kinit = init_span(k);
    let mut rows = vec![row(
        Level::Part,
        "before kubeadm init",
        kb.before,
        ab.before,
    )];
    let not_init = |s: &&Span| kinit.is_none_or(|i| s.name != i.name);
    if let Some(init) = kinit {
        if let Some(first) = k.spans.first() {
            rows.push(row(
                Level::Detail,
                "kinc create until the node's first step (doctor, Quadlet, podman run, systemd)",
                Some(first.start),
                None,
            ));
        }
        let pre: Vec<&Span> = k
            .spans
            .iter()
            .filter(not_init)
            .filter(|s| s.end <= init.start + EPS)
            .collect();
        for s in &pre {
            rows.push(row(Level::Detail, &s.name, Some(s.seconds()), None));
        }
        rows.push(row(
            Level::Detail,
            "between those steps (units starting: containerd, kinc-init)",
            Some(gaps(&pre, init.start)),
            None,
        ));
    }
    rows.push(row(Level::Part, "kubeadm init", kb.init, ab.init));
    for s in &a.spans {
        rows.push(row(
            Level::Detail,
            &format!("kubeadm {}", s.name),
            None,
            Some(s.seconds()),
        ));
    }
    rows.push(row(
        Level::Part,
        "kubeadm init done until node Ready and CoreDNS Ready",
        kb.after,
        ab.after,
    ));
    if let Some(init) = kinit {
        for s in k
            .spans
            .iter()
            .filter(not_init)
            .filter(|s| s.start >= init.end - EPS)
        {
            rows.push(row(Level::Detail, &s.name, Some(s.seconds()), None));
        }
    }
    rows.push(row(
        Level::Total,
        "node Ready with CoreDNS Ready",
        kb.total,
        ab.total,
    ));
    rows.push(row(
        Level::Milestone,
        "API answering (GET /readyz 200)",
        k.api_answering,
        a.api_answering,
    ));
    rows.push(row(
        Level::Milestone,
        "node Ready",
        k.node_ready,
        a.node_ready,
    ));
    rows.push(row(
        Level::Milestone,
        "CoreDNS Ready (every pod)",
        k.coredns_ready,
        a.coredns_ready,
    ));
    rows.push(row(
        Level::Milestone,
        "command returned (kinc create --wait / kubeadm init)",
        k.command_seconds,
        a.command_seconds,
    ));
    rows
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

/// The table in Markdown.
pub fn render_table(rows: &[Row]) -> String {
    let mut s = String::from("| phase | kinc (s) | plain kubeadm (s) |\n|---|---:|---:|\n");
    for r in rows {
        let (k, a) = (cell(r.kinc), cell(r.kubeadm));
        let line = match r.level {
            Level::Total => format!("| **total: {}** | **{k}** | **{a}** |\n", r.phase),
            Level::Part => format!("| **{}** | {k} | {a} |\n", r.phase),
            Level::Detail => format!("| · {} | {k} | {a} |\n", r.phase),
            Level::Milestone => format!("| at: {} | {k} | {a} |\n", r.phase),
        };
        s.push_str(&line);
    }
    s
}

/// The ratio line under the table.
pub fn render_ratio(ratio: Option<f64>, goal: f64) -> String {
    match ratio {
        Some(r) => format!(
            "**kinc / plain kubeadm, node Ready with CoreDNS Ready: {r:.2}x** (goal: at or below {goal:.2}x: {})",
            if r <= goal { "met" } else { "not met" }
        ),
        None => "**kinc / plain kubeadm: no ratio** (a side did not reach node Ready with CoreDNS Ready; see below)".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub date: String,
    pub commit: String,
    pub host: MachineInfo,
    /// qemu processes already running when the benchmark started (they share the CPUs).
    pub other_vms: usize,
    /// While our VM ran: the most other qemu processes seen at once, and the share of the
    /// samples (every 5 s) that saw one.
    #[serde(default)]
    pub other_vms_max: usize,
    #[serde(default)]
    pub other_vms_share: f64,
    pub accel: String,
    pub vm_cpus: u32,
    pub vm_memory_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub header: Header,
    pub kinc: SideResult,
    pub kubeadm: SideResult,
    /// The untimed `podman load` of the node archive before kinc's run.
    pub podman_load_seconds: Option<f64>,
    pub rows: Vec<Row>,
    pub ratio: Option<f64>,
    pub goal: f64,
}

impl Report {
    pub fn new(
        header: Header,
        kinc: SideResult,
        kubeadm: SideResult,
        podman_load_seconds: Option<f64>,
    ) -> Self {
        let rows = table_rows(&kinc, &kubeadm);
        let ratio = ratio(kinc.total(), kubeadm.total());
        Self {
            header,
            kinc,
            kubeadm,
            podman_load_seconds,
            rows,
            ratio,
            goal: GOAL_RATIO,
        }
    }

    pub fn ok(&self) -> bool {
        self.ratio.is_some() && self.kinc.error.is_none() && self.kubeadm.error.is_none()
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |v| format!("{v:.0} s"))
}

fn guest_line(r: &SideResult) -> String {
    r.guest.as_ref().map_or("?".to_string(), |g| {
        format!(
            "load average {} (kernel {}, {} CPUs)",
            g.loadavg, g.kernel, g.cpus
        )
    })
}

/// The whole report in Markdown: header, table, ratio, what is outside the clocks, failures.
pub fn render_report(r: &Report) -> String {
    let h = &r.header;
    let mut s = format!(
        "## Time to Ready: kinc against plain kubeadm\n\n\
         - date: {}\n\
         - commit: {}\n\
         - host: kernel {}, {} CPUs, load average {} at the start; other VMs (qemu) running then: {}, \
         during the run: {}\n\
         - VM: qemu {}, {} vCPUs, {} MiB; before kinc's clock: {}; before plain kubeadm's clock: {}\n\n",
        h.date,
        h.commit,
        h.host.kernel,
        h.host.cpus,
        h.host.loadavg,
        h.other_vms,
        if h.other_vms_max == 0 {
            "none".to_string()
        } else {
            format!(
                "up to {} in {:.0} % of the samples (the figures are not clean)",
                h.other_vms_max,
                h.other_vms_share * 100.0
            )
        },
        h.accel,
        h.vm_cpus,
        h.vm_memory_mib,
        guest_line(&r.kinc),
        guest_line(&r.kubeadm),
    );
    s.push_str(&render_table(&r.rows));
    s.push('\n');
    s.push_str(&render_ratio(r.ratio, r.goal));
    s.push_str("\n\n");
    let cpu = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1} s"));
    s.push_str(&format!(
        "- Clocks: kinc's starts at `kinc create cluster --wait` (so it includes the node \
         container, systemd, containerd and importing the 9 component images from the \
         node's own archives); plain kubeadm's at `kubeadm init`, with containerd already \
         running and the images already imported (kubeadm's usual pre-pulled state).\n\
         - Not on either clock: `podman load` of the node archive {} (kinc); extracting the \
         node's files, starting containerd and importing the images {} before plain \
         kubeadm's clock (the import alone {}).\n\
         - Node Ready and CoreDNS Ready are the Ready conditions' lastTransitionTime (1 s \
         resolution; CoreDNS: the last of its pods, {} for kinc and {} for plain kubeadm); \
         API answering is the first \
         200 from /readyz, polled every second.\n\
         - CPU (user + system) of the timed command and what it waited for: kinc create {} \
         (its podman and systemctl calls included), kubeadm init {}.\n",
        secs(r.podman_load_seconds),
        secs(r.kubeadm.setup_seconds),
        secs(r.kubeadm.image_import_seconds),
        r.kinc.coredns_pods,
        r.kubeadm.coredns_pods,
        cpu(r.kinc.command_cpu_seconds),
        cpu(r.kubeadm.command_cpu_seconds),
    ));
    for side in [&r.kinc, &r.kubeadm] {
        for n in &side.notes {
            s.push_str(&format!("- {}: {n}\n", name(side.side)));
        }
    }
    for side in [&r.kinc, &r.kubeadm] {
        if let Some(e) = &side.error {
            s.push_str(&format!(
                "- **{} FAILED**: `{}`: {e}\n",
                name(side.side),
                side.command.join(" ")
            ));
        }
    }
    s
}

fn name(side: Side) -> &'static str {
    match side {
        Side::Kinc => "kinc",
        Side::Kubeadm => "plain kubeadm",
    }
}

/// Inside the guest: measure one side and write its result into `out`.
pub fn guest(side: Side, out: &Path) -> Result<()> {
    match side {
        Side::Kinc => super::bench_guest::kinc_side(out),
        Side::Kubeadm => super::bench_kubeadm::kubeadm_side(out),
    }
}

/// qemu processes running now that are not this run's (other VMs share the CPUs). Ours
/// has its run directory, `runs/<our pid>-...`, on its command line.
fn other_qemus() -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let ours = format!("/runs/{}-", std::process::id());
    rd.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.starts_with("qemu-system"))
                && !std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&ours))
        })
        .count()
}

/// Samples [`other_qemus`] every 5 s until dropped: (most at once, share of samples).
struct Contention {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, f64)>>,
}

impl Contention {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut n, mut busy, mut max) = (0u32, 0u32, 0usize);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let o = other_qemus();
                n += 1;
                busy += u32::from(o > 0);
                max = max.max(o);
                std::thread::sleep(Duration::from_secs(5));
            }
            (
                max,
                if n == 0 {
                    0.0
                } else {
                    f64::from(busy) / f64::from(n)
                },
            )
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0.0))
    }
}

fn commit() -> String {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("unknown ({})", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("unknown (git: {e})"),
    }
}

/// The kinc CLI as a user builds it (`cargo build --release`).
fn build_kinc() -> Result<PathBuf> {
    let mut cargo = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cargo
        .args(["build", "--release", "-p", "kinc", "--bin", "kinc"])
        .current_dir(workspace_root());
    super::cmd::run_visible(&mut cargo)?;
    Ok(target_dir().join("release").join("kinc"))
}

fn agent_step(name: &str, args: &[&str], as_user: bool, keep_going: bool, secs: u64) -> Step {
    let mut argv = vec![format!("{CTL_MOUNT}/agent"), "hostvm".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Step {
        name: name.to_string(),
        argv,
        as_user,
        cwd: None,
        reboot_after: false,
        keep_going,
        timeout_secs: Some(secs),
    }
}

/// The guest's job: the e2e suite's host preparation and `podman load` (untimed), then
/// kinc, then plain kubeadm (see the module comment for why in that order).
pub fn job(results: &Path) -> Job {
    let out = results.display().to_string();
    let bench = |side: Side, as_user: bool| {
        let word = match side {
            Side::Kinc => "kinc",
            Side::Kubeadm => "kubeadm",
        };
        agent_step(
            side.step(),
            &["guest-bench", word, "--out", &out],
            as_user,
            true,
            SIDE_TIMEOUT_SECS,
        )
    };
    Job {
        steps: vec![
            agent_step(
                "delegation-dropin",
                &["guest-check", "delegation-dropin"],
                false,
                false,
                PREP_TIMEOUT_SECS,
            ),
            agent_step(
                "host-prepare",
                &["guest-check", "host-prepare"],
                false,
                false,
                PREP_TIMEOUT_SECS,
            ),
            // A failed load fails kinc's side, not plain kubeadm's: keep going.
            agent_step(
                "real-image",
                &["guest-check", "real-image"],
                true,
                true,
                PREP_TIMEOUT_SECS,
            ),
            bench(Side::Kinc, true),
            bench(Side::Kubeadm, false),
        ],
        shares: Vec::new(),
    }
}

/// A side's result file, or a result saying why there is none.
fn load_side(dir: &Path, side: Side, steps: &[StepResult]) -> SideResult {
    let p = dir.join(side.file());
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            let mut r = SideResult::new(side);
            r.error = Some(format!("{} does not parse: {e}", p.display()));
            r
        }),
        Err(_) => {
            let mut r = SideResult::new(side);
            r.error = Some(match steps.iter().find(|s| s.name == side.step()) {
                Some(s) if s.exit_code == super::agent::STEP_TIMED_OUT => format!(
                    "guest step {} timed out after {:.0} s and wrote no result",
                    s.name, s.seconds
                ),
                Some(s) => format!(
                    "guest step {} exited {} and wrote no result",
                    s.name, s.exit_code
                ),
                None => format!("guest step {} did not run", side.step()),
            });
            r
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let host = MachineInfo::here();
    let other_vms = other_qemus();
    let started = now_unix();
    if other_vms > 0 {
        eprintln!(
            "hostvm bench-ready: {other_vms} other qemu process(es) running: they share the CPUs \
             and the report says so"
        );
    }
    // Everything is built before the VM starts: nothing competes with it for the CPUs.
    let mut extra_files = vec![("bin/kinc".to_string(), build_kinc()?)];
    extra_files.extend(super::e2e::build_offline_image()?);
    let built = ensure_built()?;
    let stamp = format_utc(started).replace([':', '-'], "");
    let results = target_dir().join("bench-ready").join(stamp);
    std::fs::create_dir_all(&results)?;
    // The test user's step writes its result here through 9p (security_model=none: the
    // guest sees the host's owner and mode).
    std::fs::set_permissions(&results, std::fs::Permissions::from_mode(0o777))?;
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(args.timeout)),
        keep: args.keep,
        extra_files,
        shares: vec![results.clone()],
        memory_mib: REAL_CLUSTER_MEMORY_MIB,
        stream: !args.json,
        ..Default::default()
    };
    let header = Header {
        date: format_utc(started),
        commit: commit(),
        host,
        other_vms,
        other_vms_max: 0,
        other_vms_share: 0.0,
        accel: format!("{:?}", super::qemu::detect_accel()).to_uppercase(),
        vm_cpus: opts.smp,
        vm_memory_mib: opts.memory_mib,
    };
    let contention = Contention::start();
    let out = vm::run_job(&built, &job(&results), &opts);
    let mut header = header;
    (header.other_vms_max, header.other_vms_share) = contention.finish();
    let out = out?;
    let kinc = load_side(&results, Side::Kinc, &out.results);
    let kubeadm = load_side(&results, Side::Kubeadm, &out.results);
    let podman_load = out
        .results
        .iter()
        .find(|s| s.name == "real-image" && s.exit_code == 0)
        .map(|s| s.seconds);
    let report = Report::new(header, kinc, kubeadm, podman_load);
    let text = render_report(&report);
    std::fs::write(
        results.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(results.join("report.md"), &text)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{text}");
    }
    eprintln!(
        "hostvm bench-ready: {:.0} s in the VM; results in {}",
        out.total_seconds,
        results.display()
    );
    if let Some(why) = &out.why {
        eprintln!("hostvm bench-ready: {why}");
    }
    for l in &out.failure_lines {
        eprintln!("  {l}");
    }
    if !report.ok() || out.exit_code != 0 {
        bail!(
            "the benchmark did not complete (VM exit {}); the report says what failed",
            out.exit_code
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubeadm v1.33's progress lines, abridged, each with when it arrived.
    fn kubeadm_lines() -> Vec<(f64, String)> {
        [
            (0.3, "[init] Using Kubernetes version: v1.33.13"),
            (0.4, "[preflight] Running pre-flight checks"),
            (
                2.0,
                "[preflight] Pulling images required for setting up a Kubernetes cluster",
            ),
            (
                3.0,
                "[certs] Using certificateDir folder \"/etc/kubernetes/pki\"",
            ),
            (
                9.0,
                "[kubeconfig] Using kubeconfig folder \"/etc/kubernetes\"",
            ),
            (11.0, "[etcd] Creating static Pod manifest for local etcd"),
            (
                11.5,
                "[control-plane] Using manifest folder \"/etc/kubernetes/manifests\"",
            ),
            (12.0, "[kubelet-start] Starting the kubelet"),
            (
                13.0,
                "[wait-control-plane] Waiting for the kubelet to boot up the control plane",
            ),
            (13.1, "[kubelet-check] The kubelet is healthy after 1.0s"),
            (
                15.0,
                "[control-plane-check] Waiting for healthy control plane components.",
            ),
            (
                60.0,
                "[control-plane-check] kube-apiserver is healthy after 45s",
            ),
            (
                61.0,
                "[upload-config] Storing the configuration used in ConfigMap",
            ),
            (62.0, "[kubelet] Creating a ConfigMap \"kubelet-config\""),
            (
                63.0,
                "[mark-control-plane] Marking the node as control-plane",
            ),
            (
                64.0,
                "[bootstrap-token] Using token: abcdef.0123456789abcdef",
            ),
            (
                66.0,
                "[kubelet-finalize] Updating \"/etc/kubernetes/kubelet.conf\"",
            ),
            (67.0, "[addons] Applied essential addon: CoreDNS"),
            (68.0, "[addons] Applied essential addon: kube-proxy"),
            (68.1, ""),
            (
                68.2,
                "Your Kubernetes control-plane has initialized successfully!",
            ),
            (
                68.3,
                "  kubeadm join 127.0.0.1:6443 --token abcdef.0123456789abcdef \\",
            ),
        ]
        .into_iter()
        .map(|(t, l)| (t, l.to_string()))
        .collect()
    }

    #[test]
    fn kubeadm_phases_from_its_output() {
        let spans = kubeadm_spans(&kubeadm_lines(), 70.0);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "[init]",
                "[preflight]",
                "[certs]",
                "[kubeconfig]",
                "[etcd]",
                "[control-plane]",
                "[kubelet-start]",
                "[wait-control-plane]",
                "[kubelet-check]",
                "[control-plane-check]",
                "[upload-config]",
                "[kubelet]",
                "[mark-control-plane]",
                "[bootstrap-token]",
                "[kubelet-finalize]",
                "[addons]"
            ]
        );
        // From the start to the end, no gap and no overlap.
        assert_eq!(spans[0].start, 0.0);
        assert_eq!(spans.last().unwrap().end, 70.0);
        for w in spans.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let cpc = spans
            .iter()
            .find(|s| s.name == "[control-plane-check]")
            .unwrap();
        assert_eq!((cpc.start, cpc.end), (15.0, 61.0));
        let addons = spans.last().unwrap();
        assert_eq!((addons.start, addons.seconds()), (67.0, 3.0));
        assert!(kubeadm_spans(&[], 5.0).is_empty());
    }

    #[test]
    fn phase_tags() {
        assert_eq!(phase_tag("[certs] Generating \"ca\""), Some("[certs]"));
        assert_eq!(
            phase_tag("  [wait-control-plane] x"),
            Some("[wait-control-plane]")
        );
        assert_eq!(phase_tag("[kubelet-check]"), Some("[kubelet-check]"));
        assert_eq!(phase_tag("Your Kubernetes control-plane"), None);
        assert_eq!(phase_tag("[] empty"), None);
        assert_eq!(phase_tag("[WARNING Swap]: swap is on"), None);
        assert_eq!(phase_tag("W1207 12:00:00.1 [x]"), None);
    }

    #[test]
    fn utc_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        for d in [-1000, 0, 59, 60, 365, 10_957, 20_795, 24_000, 100_000] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d, "{y}-{m}-{day}");
        }
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_utc("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        let t = parse_utc("2026-12-07T11:59:44Z").unwrap();
        assert_eq!(format_utc(t), "2026-12-07T11:59:44Z");
        assert_eq!(format_utc(t + 0.9), "2026-12-07T11:59:44Z");
        assert_eq!(parse_utc("2026-12-07T11:59:44.25Z"), Some(t + 0.25));
        assert_eq!(parse_utc("2026-12-07T11:59:44+01:00"), None);
        assert_eq!(parse_utc("2026-13-07T11:59:44Z"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(loadavg("0.52 0.58 0.59 1/467 12345\n"), "0.52 0.58 0.59");
    }

    fn status_json() -> String {
        // Steps as kinc-init records them; times at 12:00:00 + n.
        let at = |s: u32| format!("2026-12-07T12:{:02}:{:02}Z", s / 60, s % 60);
        let step = |name: &str, state: &str, a: u32, b: Option<u32>| {
            let fin = b.map_or(String::new(), |b| format!(",\"finishedAt\":\"{}\"", at(b)));
            format!(
                "{{\"name\":\"{name}\",\"state\":\"{state}\",\"startedAt\":\"{}\"{fin}}}",
                at(a)
            )
        };
        let steps = [
            step("load-config", "done", 20, Some(21)),
            step("detect-node-ip", "done", 21, Some(22)),
            step("wait-cri", "done", 30, Some(32)),
            step("load-images", "done", 32, Some(117)),
            step("restore-node", "skipped", 117, Some(117)),
            step("kubeadm-init", "done", 117, Some(223)),
            step("apply-manifests", "done", 224, Some(256)),
            step("wait-coredns", "done", 260, Some(300)),
            "{\"name\":\"later\",\"state\":\"pending\"}".to_string(),
        ];
        format!(
            "{{\"cluster\":\"bench\",\"phase\":\"ready\",\"boot\":1,\"updatedAt\":\"{}\",\"steps\":[{}]}}",
            at(300),
            steps.join(",")
        )
    }

    fn t0() -> f64 {
        parse_utc("2026-12-07T12:00:00Z").unwrap()
    }

    #[test]
    fn kinc_phases_from_the_status_file() {
        let st = BootstrapStatus::from_json(status_json().as_bytes(), "test").unwrap();
        let spans = kinc_spans(&st, t0());
        assert_eq!(spans.len(), 8, "the pending step has no span: {spans:?}");
        assert_eq!(
            spans[0],
            Span {
                name: "load-config".into(),
                start: 20.0,
                end: 21.0
            }
        );
        assert_eq!(spans[4].name, "restore-node (skipped)");
        assert_eq!(spans[5].seconds(), 106.0);
    }

    fn kinc_result() -> SideResult {
        let st = BootstrapStatus::from_json(status_json().as_bytes(), "test").unwrap();
        let mut k = SideResult::new(Side::Kinc);
        k.spans = kinc_spans(&st, t0());
        k.kubeadm_init = k.spans.iter().find(|s| s.name == "kubeadm-init").cloned();
        k.api_answering = Some(190.0);
        k.node_ready = Some(215.0);
        k.coredns_ready = Some(305.0);
        k.command_seconds = Some(302.0);
        k
    }

    fn kubeadm_result() -> SideResult {
        let mut a = SideResult::new(Side::Kubeadm);
        a.spans = kubeadm_spans(&kubeadm_lines(), 70.0);
        a.kubeadm_init = Some(Span {
            name: "kubeadm init".into(),
            start: 0.0,
            end: 70.0,
        });
        a.api_answering = Some(58.0);
        a.node_ready = Some(75.0);
        a.coredns_ready = Some(100.0);
        a.command_seconds = Some(70.0);
        a
    }

    #[test]
    fn ready_times_from_kubectl_lists() {
        let list: ObjectList = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"List","items":[
              {"metadata":{"name":"coredns-a"},"status":{"phase":"Running","conditions":[
                {"type":"PodScheduled","status":"True","lastTransitionTime":"2026-12-07T12:03:00Z"},
                {"type":"Ready","status":"True","lastTransitionTime":"2026-12-07T12:04:10Z"}]}},
              {"metadata":{"name":"coredns-b"},"status":{"conditions":[
                {"type":"Ready","status":"True","lastTransitionTime":"2026-12-07T12:05:05Z"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(all_ready_at(&list), Some(t0() + 305.0));
        assert_eq!(ready_since(&list.items[0]), Some(t0() + 250.0));
        let pending: ObjectList = serde_json::from_str(
            r#"{"items":[{"metadata":{"name":"x"},"status":{"conditions":[
                {"type":"Ready","status":"False","lastTransitionTime":"2026-12-07T12:04:10Z"}]}},
              {"metadata":{"name":"y"},"status":{"conditions":[
                {"type":"Ready","status":"True","lastTransitionTime":"2026-12-07T12:04:10Z"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(all_ready_at(&pending), None, "one pod is not Ready");
        assert_eq!(all_ready_at(&ObjectList::default()), None, "no pods yet");
        let no_status: ObjectList = serde_json::from_str(r#"{"items":[{"metadata":{}}]}"#).unwrap();
        assert_eq!(all_ready_at(&no_status), None);
    }

    #[test]
    fn the_table_adds_up_and_gives_the_ratio() {
        let (k, a) = (kinc_result(), kubeadm_result());
        let kb = breakdown(&k);
        let some = |v: [f64; 4]| v.map(Some);
        assert_eq!(
            [kb.before, kb.init, kb.after, kb.total],
            some([117.0, 106.0, 82.0, 305.0])
        );
        let ab = breakdown(&a);
        assert_eq!(
            [ab.before, ab.init, ab.after, ab.total],
            some([0.0, 70.0, 30.0, 100.0])
        );
        assert_eq!(ratio(k.total(), a.total()), Some(3.05));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);

        let rows = table_rows(&k, &a);
        let find = |p: &str| {
            rows.iter()
                .find(|r| r.phase == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        // The three parts add up to the total on both sides.
        let parts: Vec<&Row> = rows.iter().filter(|r| r.level == Level::Part).collect();
        assert_eq!(parts.len(), 3);
        let total = find("node Ready with CoreDNS Ready");
        assert_eq!(total.level, Level::Total);
        for side in [|r: &Row| r.kinc, |r: &Row| r.kubeadm] {
            let sum: f64 = parts.iter().map(|r| side(r).unwrap()).sum();
            assert!((sum - side(total).unwrap()).abs() < 1e-9);
        }
        // kinc's steps before kubeadm-init, and what lies between them.
        assert_eq!(find("load-images").kinc, Some(85.0));
        assert_eq!(find("load-images").kubeadm, None);
        let first = rows
            .iter()
            .find(|r| r.phase.starts_with("kinc create until"))
            .unwrap();
        assert_eq!(first.kinc, Some(20.0));
        let between = rows
            .iter()
            .find(|r| r.phase.starts_with("between"))
            .unwrap();
        assert_eq!(between.kinc, Some(8.0), "22 -> 30, and nothing else");
        let pre: f64 = rows
            .iter()
            .take_while(|r| r.phase != "kubeadm init")
            .filter(|r| r.level == Level::Detail)
            .map(|r| r.kinc.unwrap())
            .sum();
        assert_eq!(Some(pre), kb.before, "the details of 'before' add up");
        // kubeadm's phases are plain kubeadm's details of kubeadm init.
        assert_eq!(find("kubeadm [addons]").kubeadm, Some(3.0));
        assert_eq!(find("kubeadm [addons]").kinc, None);
        // Steps after kubeadm-init, and kubeadm-init itself only as the part.
        assert_eq!(find("wait-coredns").kinc, Some(40.0));
        assert!(!rows.iter().any(|r| r.phase == "kubeadm-init"));
        assert_eq!(find("API answering (GET /readyz 200)").kubeadm, Some(58.0));

        let table = render_table(&rows);
        assert!(table.starts_with("| phase | kinc (s) | plain kubeadm (s) |\n|---|---:|---:|\n"));
        assert!(
            table.contains("| **total: node Ready with CoreDNS Ready** | **305.0** | **100.0** |"),
            "{table}"
        );
        assert!(table.contains("| · load-images | 85.0 | - |"), "{table}");
        assert!(
            table.contains("| **kubeadm init** | 106.0 | 70.0 |"),
            "{table}"
        );
        assert!(render_ratio(Some(3.05), GOAL_RATIO).contains("3.05x"));
        assert!(render_ratio(Some(3.05), GOAL_RATIO).contains("not met"));
        assert!(render_ratio(Some(0.65), GOAL_RATIO).contains(": met"));
        assert!(render_ratio(None, GOAL_RATIO).contains("no ratio"));
    }

    #[test]
    fn a_failed_kinc_run_still_shows_its_steps() {
        // kubeadm-init failed after 90 s; nothing ran after it.
        let mut st = BootstrapStatus::from_json(status_json().as_bytes(), "test").unwrap();
        let i = st
            .steps
            .iter()
            .position(|s| s.name == "kubeadm-init")
            .unwrap();
        st.steps[i].state = kinc_types::StepState::Failed;
        st.steps[i].finished_at = st.steps[i].started_at.map(|t| t + Duration::from_secs(90));
        for later in &mut st.steps[i + 1..] {
            later.state = kinc_types::StepState::Pending;
            (later.started_at, later.finished_at) = (None, None);
        }
        let mut k = SideResult::new(Side::Kinc);
        k.spans = kinc_spans(&st, t0());
        k.command_seconds = Some(210.0);
        let b = breakdown(&k);
        assert_eq!(
            (b.before, b.init, b.after, b.total),
            (Some(117.0), Some(90.0), None, None)
        );
        let rows = table_rows(&k, &kubeadm_result());
        let find = |p: &str| {
            rows.iter()
                .find(|r| r.phase == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(find("load-images").kinc, Some(85.0));
        assert_eq!(find("kubeadm init").kinc, Some(90.0));
        assert!(!rows.iter().any(|r| r.phase == "wait-coredns"));
        assert_eq!(find("node Ready with CoreDNS Ready").kinc, None);
        assert_eq!(find("node Ready with CoreDNS Ready").kubeadm, Some(100.0));
        assert!(!rows.iter().any(|r| r.phase.starts_with("kubeadm-init")));
    }

    fn header() -> Header {
        Header {
            date: "2026-12-07T12:00:00Z".into(),
            commit: "0123abc".into(),
            host: MachineInfo {
                kernel: "6.12.0".into(),
                cpus: 2,
                loadavg: "0.10 0.20 0.30".into(),
            },
            other_vms: 0,
            other_vms_max: 0,
            other_vms_share: 0.0,
            accel: "TCG".into(),
            vm_cpus: 2,
            vm_memory_mib: 8192,
        }
    }

    #[test]
    fn report_has_header_table_ratio_and_failures() {
        let r = Report::new(header(), kinc_result(), kubeadm_result(), Some(250.0));
        assert!(r.ok());
        let text = render_report(&r);
        for want in [
            "- date: 2026-12-07T12:00:00Z",
            "- commit: 0123abc",
            "kernel 6.12.0, 2 CPUs, load average 0.10 0.20 0.30",
            "qemu TCG, 2 vCPUs, 8192 MiB",
            "| phase | kinc (s) |",
            "3.05x",
            "`podman load` of the node archive 250 s",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);

        let mut failed = kubeadm_result();
        failed.node_ready = None;
        failed.command = vec!["kubeadm".into(), "init".into()];
        failed.error = Some("exited 1: preflight".into());
        let r = Report::new(header(), kinc_result(), failed, None);
        assert!(!r.ok());
        assert_eq!(r.ratio, None);
        let text = render_report(&r);
        assert!(text.contains("no ratio"), "{text}");
        assert!(
            text.contains("**plain kubeadm FAILED**: `kubeadm init`: exited 1: preflight"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_result_says_which_step_and_why() {
        let dir = super::super::testdir::TestDir::new("bench");
        let step = |code| StepResult {
            name: "bench-kubeadm".into(),
            exit_code: code,
            seconds: 12.0,
            uptime: 1.0,
            boot_id: "b".into(),
        };
        let r = load_side(dir.path(), Side::Kubeadm, &[step(124)]);
        assert!(r.error.unwrap().contains("timed out after 12 s"));
        let r = load_side(dir.path(), Side::Kubeadm, &[step(3)]);
        assert!(r.error.unwrap().contains("exited 3"));
        assert!(load_side(dir.path(), Side::Kinc, &[])
            .error
            .unwrap()
            .contains("bench-kinc did not run"));
        let mut k = kinc_result();
        k.save(dir.path()).unwrap();
        k.error = None;
        assert_eq!(load_side(dir.path(), Side::Kinc, &[]), k);
    }

    #[test]
    fn the_job_prepares_then_runs_kinc_then_kubeadm() {
        let j = job(Path::new("/r/out"));
        let names: Vec<&str> = j.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "delegation-dropin",
                "host-prepare",
                "real-image",
                "bench-kinc",
                "bench-kubeadm"
            ]
        );
        let users: Vec<bool> = j.steps.iter().map(|s| s.as_user).collect();
        assert_eq!(users, [false, false, true, true, false]);
        assert_eq!(
            j.steps[3].argv[1..],
            ["hostvm", "guest-bench", "kinc", "--out", "/r/out"]
        );
        assert!(
            j.steps[3].keep_going,
            "plain kubeadm runs even when kinc failed"
        );
        assert!(j
            .steps
            .iter()
            .all(|s| s.timeout_secs.is_some() && !s.reboot_after));
        // What the guest is given parses as the hidden subcommand.
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from(
            std::iter::once("hostvm")
                .chain(j.steps[4].argv[1..].iter().skip(1).map(String::as_str)),
        )
        .unwrap();
        assert!(matches!(
            cli.cmd,
            super::super::Cmd::GuestBench {
                side: Side::Kubeadm,
                ..
            }
        ));
        assert!(
            super::super::Cli::try_parse_from(["hostvm", "bench-ready", "--json", "--keep"])
                .is_ok()
        );
    }
}
