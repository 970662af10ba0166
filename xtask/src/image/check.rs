//! Checks an assembled context without building it: everything that can be verified
//! without Fedora's packages or a registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::context::{copy_tree, BINARIES};

#[derive(Debug, Default)]
pub struct Report {
    /// What passed, one line each.
    pub checked: Vec<String>,
    /// What could not be checked here and why.
    pub skipped: Vec<String>,
    /// What is wrong, one line each, naming the file.
    pub problems: Vec<String>,
}

/// One `COPY`/`ADD` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstr {
    pub line: usize,
    pub sources: Vec<String>,
    pub dest: String,
}

/// The `COPY`/`ADD` instructions that take files from the context (not `--from=`).
pub fn parse_copies(containerfile: &str) -> Vec<CopyInstr> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in containerfile.lines().enumerate() {
        let line = raw.trim();
        if logical.is_empty() {
            start = i + 1;
            if line.starts_with('#') {
                continue;
            }
        } else if line.starts_with('#') {
            continue; // comment lines inside a continued instruction are dropped
        }
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        if let Some(c) = parse_copy(&logical, start) {
            out.push(c);
        }
        logical.clear();
    }
    out
}

fn parse_copy(instr: &str, line: usize) -> Option<CopyInstr> {
    let (word, rest) = instr.trim().split_once(char::is_whitespace)?;
    if !(word.eq_ignore_ascii_case("COPY") || word.eq_ignore_ascii_case("ADD")) {
        return None;
    }
    let mut rest = rest.trim();
    // Flags come first: --chmod=, --chown=, --link, --from= (another stage or image).
    while let Some(r) = rest.strip_prefix("--") {
        let (flag, tail) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
        if flag.starts_with("from=") {
            return None;
        }
        rest = tail.trim_start();
    }
    let mut parts: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).ok()?
    } else {
        rest.split_whitespace().map(String::from).collect()
    };
    let dest = parts.pop()?;
    Some(CopyInstr {
        line,
        sources: parts,
        dest,
    })
}

/// Runs every check on the context in `ctx`.
pub fn check_context(ctx: &Path) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let cf_path = ctx.join("Containerfile");
    let cf =
        fs::read_to_string(&cf_path).with_context(|| format!("reading {}", cf_path.display()))?;
    check_copies(ctx, &cf, &mut r);
    check_binaries(ctx, &mut r);
    check_formats(ctx, &mut r);
    check_units(ctx, &mut r)?;
    check_kubeadm_render(ctx, &mut r);
    Ok(r)
}

fn check_copies(ctx: &Path, cf: &str, r: &mut Report) {
    let copies = parse_copies(cf);
    if copies.is_empty() {
        r.problems
            .push("Containerfile: no COPY instructions found".into());
    }
    for c in &copies {
        for s in &c.sources {
            let rel = s.trim_start_matches("./");
            if Path::new(rel)
                .components()
                .any(|x| x == std::path::Component::ParentDir)
            {
                r.problems.push(format!(
                    "Containerfile:{}: source {s} leaves the context",
                    c.line
                ));
            } else if !ctx.join(rel).exists() {
                r.problems.push(format!(
                    "Containerfile:{}: COPY source {s} is not in the context",
                    c.line
                ));
            }
        }
    }
    for b in BINARIES {
        let src = format!("bin/{}", b.bin);
        if !copies
            .iter()
            .any(|c| c.dest == b.install && c.sources.contains(&src))
        {
            r.problems
                .push(format!("Containerfile: no `COPY {src} {}`", b.install));
        }
    }
    r.checked.push(format!(
        "{} COPY instructions: every source is in the context",
        copies.len()
    ));
}

fn check_binaries(ctx: &Path, r: &mut Report) {
    for b in BINARIES {
        let p = ctx.join("bin").join(b.bin);
        match Command::new(&p).arg("--version").output() {
            Ok(o) if o.status.success() && !o.stdout.is_empty() => {
                let v = String::from_utf8_lossy(&o.stdout);
                r.checked.push(format!(
                    "bin/{} --version: {}",
                    b.bin,
                    v.lines().next().unwrap_or("").trim()
                ));
            }
            Ok(o) => r.problems.push(format!(
                "bin/{} --version: {} (stdout {:?}, stderr {:?})",
                b.bin,
                o.status,
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => r
                .problems
                .push(format!("bin/{} --version: cannot run: {e}", b.bin)),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// TOML for CRI-O and containers config, YAML and JSON wherever they appear.
fn check_formats(ctx: &Path, r: &mut Report) {
    let mut files = Vec::new();
    walk(&ctx.join("files"), &mut files);
    walk(&ctx.join("manifests"), &mut files);
    files.sort();
    let (mut toml_n, mut yaml_n, mut json_n) = (0, 0, 0);
    for f in &files {
        let rel = f.strip_prefix(ctx).unwrap_or(f).display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let is_toml = ext == "toml"
            || (ext == "conf" && (rel.contains("/etc/crio/") || rel.contains("/etc/containers/")));
        let Ok(text) = fs::read_to_string(f) else {
            if is_toml || matches!(ext, "yaml" | "yml" | "json" | "conflist") {
                r.problems.push(format!("{rel}: not readable as UTF-8"));
            }
            continue;
        };
        if is_toml {
            toml_n += 1;
            if let Err(e) = toml::from_str::<toml::Value>(&text) {
                r.problems.push(format!("{rel}: invalid TOML: {e}"));
            }
        } else if matches!(ext, "yaml" | "yml") {
            yaml_n += 1;
            for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
                if let Err(e) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
                    r.problems
                        .push(format!("{rel}: document {i}: invalid YAML: {e}"));
                    // serde_yaml's document iterator repeats a syntax error forever.
                    break;
                }
            }
        } else if matches!(ext, "json" | "conflist") {
            json_n += 1;
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                r.problems.push(format!("{rel}: invalid JSON: {e}"));
            }
        }
    }
    r.checked.push(format!(
        "{toml_n} TOML, {yaml_n} YAML, {json_n} JSON files parse"
    ));
}

const UNIT_EXTS: &[&str] = &[
    "service", "socket", "target", "timer", "mount", "path", "slice",
];

/// `systemd-analyze verify` in a staged root: the host's stock units, the context's
/// files, the binaries at their install paths, and placeholders for package units
/// (crio, kubelet) that the context only extends with drop-ins.
fn check_units(ctx: &Path, r: &mut Report) -> anyhow::Result<()> {
    let unit_dir = ctx.join("files/etc/systemd/system");
    let mut units = Vec::new();
    let mut dropin_parents = Vec::new();
    if let Ok(rd) = fs::read_dir(&unit_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if p.is_dir() {
                if let Some(parent) = name.strip_suffix(".d") {
                    dropin_parents.push(parent.to_string());
                }
            } else if UNIT_EXTS.iter().any(|x| name.ends_with(&format!(".{x}"))) {
                units.push(name);
            }
        }
    }
    units.sort();
    dropin_parents.sort();
    if units.is_empty() {
        r.problems
            .push("files/etc/systemd/system: no unit files".into());
        return Ok(());
    }
    let Some(analyze) = find_tool("systemd-analyze") else {
        r.skipped
            .push("systemd-analyze verify (systemd-analyze is not installed)".into());
        return Ok(());
    };
    let stage = tempfile::Builder::new().prefix("kinc-units-").tempdir()?;
    let root = stage.path();
    for host in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        if Path::new(host).is_dir() {
            copy_tree(Path::new(host), &root.join("usr/lib/systemd/system"))?;
            break;
        }
    }
    copy_tree(&ctx.join("files"), root)?;
    for b in BINARIES {
        let dst = root.join(b.install.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("install paths are absolute"))?;
        fs::copy(ctx.join("bin").join(b.bin), &dst)?;
    }
    let true_bin = root.join("usr/bin/true");
    fs::create_dir_all(true_bin.parent().expect("has parent"))?;
    fs::copy(
        find_tool("true").unwrap_or_else(|| "/bin/true".into()),
        &true_bin,
    )?;
    let mut targets: Vec<PathBuf> = units
        .iter()
        .map(|u| root.join("etc/systemd/system").join(u))
        .collect();
    for parent in &dropin_parents {
        let installed = root.join("etc/systemd/system").join(parent);
        let stock = root.join("usr/lib/systemd/system").join(parent);
        if !installed.exists() && !stock.exists() {
            fs::write(
                &stock,
                format!("[Unit]\nDescription=placeholder for the package's {parent}\n[Service]\nExecStart=/usr/bin/true\n"),
            )?;
        }
        targets.push(if installed.exists() { installed } else { stock });
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .args(&targets)
        .output()
        .with_context(|| format!("running {}", analyze.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let root_s = root.display().to_string();
    let noise: Vec<String> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.replace(&root_s, ""))
        .collect();
    if !out.status.success() || !noise.is_empty() {
        r.problems.push(format!(
            "systemd-analyze verify ({}): {}",
            out.status,
            if noise.is_empty() {
                "no output".into()
            } else {
                noise.join(" | ")
            }
        ));
    } else {
        r.checked.push(format!(
            "systemd-analyze verify: {} (drop-ins of {})",
            units.join(", "),
            dropin_parents.join(", ")
        ));
    }
    Ok(())
}

/// kinc-init renders a kubeadm config for the baked-in cluster config; it must parse
/// as the four kubeadm documents.
fn check_kubeadm_render(ctx: &Path, r: &mut Report) {
    let cfg = ctx.join("files/usr/share/kinc/config/cluster.json");
    let out = Command::new(ctx.join("bin/kinc-init"))
        .arg("render")
        .arg("--config")
        .arg(&cfg)
        .args(["--node-ip", "10.88.0.2"])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            r.problems.push(format!(
                "bin/kinc-init render: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            r.problems
                .push(format!("bin/kinc-init render: cannot run: {e}"));
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        match <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
            Ok(v) => kinds.push(v["kind"].as_str().unwrap_or("?").to_string()),
            Err(e) => {
                r.problems
                    .push(format!("kinc-init render: invalid YAML: {e}"));
                return;
            }
        }
    }
    let want = [
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ];
    if kinds != want {
        r.problems.push(format!(
            "kinc-init render: documents {kinds:?}, expected {want:?}"
        ));
    } else {
        r.checked
            .push("kinc-init render: kubeadm, kubelet and kube-proxy YAML parse".into());
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
