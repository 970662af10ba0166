//! Per-call overhead of crun-wrapper against calling crun directly, side by side with
//! the old approach (a jq rewrite + exec, benches/jq-wrapper.sh), in one interleaved run.
//!
//! Context: root without CAP_SYS_RESOURCE (dropped here, as on the kinc dev VM), hard
//! NOFILE 20000, so the ~14 KB CRI-O-shaped pod spec needs three reductions (six field changes). Bundle on
//! tmpfs (/dev/shm), like CRI-O's bundles under /run. Needs root; `cargo bench -p crun-wrapper`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const CRUN: &str = "/usr/bin/crun";
const JQ_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/jq-wrapper.sh");
const WRAPPER: &str = env!("CARGO_BIN_EXE_crun-wrapper");

/// The wrapper binary to measure: `CRUN_WRAPPER_BENCH_BIN` (e.g. the static build
/// `cargo xtask image` ships), else this build's.
fn wrapper() -> String {
    std::env::var("CRUN_WRAPPER_BENCH_BIN").unwrap_or_else(|_| WRAPPER.to_string())
}

fn main() {
    if !kinc_testutil::is_root() || kinc_testutil::which("jq").is_none() {
        eprintln!("SKIP crun-wrapper bench: needs root, crun and jq");
        return;
    }
    isolate();
    let dir = tempfile::Builder::new()
        .prefix("kcw-bench-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();

    let mut spec = support::base_spec(&rootfs, &["/bin/sh"]);
    let p = &mut spec["process"];
    p["oomScoreAdj"] = json!(-997);
    // No RLIM_INFINITY entry: jq 1.6 rounds it and crun then refuses the peer's spec.
    p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]);
    for set in ["bounding", "effective", "permitted"] {
        p["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_RESOURCE"));
    }
    let original = serde_json::to_vec(&spec).unwrap();
    let caller = crun_wrapper::Caller::from_kernel().unwrap();
    let lsm = crun_wrapper::Lsm::from_kernel();
    let (report, fixed) = crun_wrapper::rewrite::rewrite_bytes(&original, &caller, lsm).unwrap();
    let fixed = fixed.expect("the bench spec must need rewriting");
    assert_eq!(report.changes.len(), 6, "{report:#?}");

    let bundle = dir.path().join("bundle");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&bundle).unwrap();
    let cfg = dir.path().join("crun-wrapper.toml");
    std::fs::write(&cfg, "crun = \"/usr/bin/crun\"\n").unwrap();
    std::env::set_var("KINC_CRUN_WRAPPER_CONFIG", &cfg);
    let wrapper = wrapper();
    eprintln!("measuring {wrapper}");

    // Interleaved: each round runs every variant once, so load changes hit all alike.
    let variants: [(&str, &str, &[u8]); 3] = [
        ("crun", CRUN, &fixed),
        ("crun-wrapper", wrapper.as_str(), &original),
        ("jq + exec", JQ_PEER, &original),
    ];
    let rounds_version = 100;
    let rounds_create = 30;
    let mut version = vec![Vec::new(); 3];
    let mut create = vec![Vec::new(); 3];
    for _ in 0..rounds_version {
        for (i, (_, prog, _)) in variants.iter().enumerate() {
            version[i].push(time(Command::new(prog).arg("--version")));
        }
    }
    let spec_path = bundle.join("config.json");
    for round in 0..rounds_create {
        for (i, (_, prog, spec)) in variants.iter().enumerate() {
            std::fs::write(&spec_path, spec).unwrap();
            let id = format!("kcw-bench-{}-{round}-{i}", std::process::id());
            create[i].push(create_delete(prog, &state, &bundle, &id));
        }
        // Every variant must have produced a spec crun accepts; the wrapper's equals `fixed`
        // as JSON (checked once).
        if round == 0 {
            std::fs::write(&spec_path, &original).unwrap();
            let st = Command::new(&wrapper)
                .args(["explain", "--json"])
                .arg(&bundle)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    let rewrite_in_process = {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(crun_wrapper::rewrite::rewrite_bytes(
                &original, &caller, lsm,
            ))
            .unwrap();
        }
        t.elapsed() / n
    };

    println!(
        "crun-wrapper overhead (root without CAP_SYS_RESOURCE, bundle on tmpfs, spec {} bytes, {} field changes)",
        original.len(),
        report.changes.len()
    );
    println!(
        "{:<24}{:>14}{:>24}{:>24}",
        "median per call", variants[0].0, variants[1].0, variants[2].0
    );
    let mut ratios = Vec::new();
    for (label, runs, n) in [
        ("--version", &version, rounds_version),
        ("create+delete", &create, rounds_create),
    ] {
        let base = median(&runs[0]);
        let w = paired_overhead(&runs[1], &runs[0]);
        let j = paired_overhead(&runs[2], &runs[0]);
        println!(
            "{:<24}{:>14}{:>24}{:>24}",
            format!("{label} (n={n})"),
            ms(base),
            format!("{} (+{})", ms(median(&runs[1])), ms(w)),
            format!("{} (+{})", ms(median(&runs[2])), ms(j)),
        );
        ratios.push((label, j.as_secs_f64() / w.as_secs_f64().max(1e-6)));
    }
    for (label, r) in ratios {
        println!("overhead ratio jq/crun-wrapper, {label}: {r:.0}x");
    }
    println!(
        "in-process parse + rules + serialize of the spec: {} per call",
        ms(rewrite_in_process)
    );
}

/// Private mount namespace with the hybrid-cgroup file hidden (crun 1.8.1 refuses such
/// hosts), no CAP_SYS_RESOURCE and hard NOFILE 20000: the kinc dev VM's root, anywhere.
fn isolate() {
    // SAFETY: plain syscalls at the start of a single-threaded main.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare mount ns");
        let none = std::ptr::null();
        assert_eq!(
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast()
            ),
            0
        );
        let hybrid =
            std::fs::read_to_string(support::HYBRID_FILE).is_ok_and(|s| !s.trim().is_empty());
        if hybrid {
            let target = std::ffi::CString::new(support::HYBRID_FILE).unwrap();
            let r = libc::mount(
                c"/dev/null".as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND,
                none.cast(),
            );
            assert_eq!(r, 0, "hide {}", support::HYBRID_FILE);
        }
        let rl = libc::rlimit {
            rlim_cur: 20000,
            rlim_max: 20000,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
    let cap = caps::Capability::CAP_SYS_RESOURCE;
    caps::drop(None, caps::CapSet::Bounding, cap).unwrap();
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
    ] {
        caps::drop(None, set, cap).unwrap();
    }
}

fn time(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let d = t.elapsed();
    assert!(st.success(), "{cmd:?}");
    d
}

fn create_delete(prog: &str, state: &Path, bundle: &Path, id: &str) -> Duration {
    let root = format!("--root={}", state.display());
    let t = Instant::now();
    // The container's init keeps stdio open until delete: no pipes, or we would wait on it.
    let st = Command::new(prog)
        .args([&root, "--cgroup-manager=disabled", "create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{prog} create {id} failed");
    let st = Command::new(prog)
        .args([&root, "delete", "--force", id])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let d = t.elapsed();
    assert!(st.success(), "{prog} delete");
    d
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

/// Median of per-round differences (variant - crun): robust against load drifting
/// between rounds.
fn paired_overhead(v: &[Duration], base: &[Duration]) -> Duration {
    let mut d: Vec<f64> = v
        .iter()
        .zip(base)
        .map(|(a, b)| a.as_secs_f64() - b.as_secs_f64())
        .collect();
    d.sort_unstable_by(|a, b| a.total_cmp(b));
    Duration::from_secs_f64(d[d.len() / 2].max(0.0))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
