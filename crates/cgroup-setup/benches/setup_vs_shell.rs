//! `cargo bench -p cgroup-setup`: cgroup-setup against the shell way of doing the same job
//! (`tests/vm/peer.sh`), side by side in one guest boot on a real cgroup v2 kernel.
//! Each of N rounds gives both a fresh cgroup namespace (two sleepers in its root) and times
//! a first run and a rerun, plus the bare start of each program (`startup`) and a
//! cgroup-setup run that stops at layout detection (`nomount`), because under TCG starting
//! a 1 MB dynamically linked binary is most of the cost. Needs what the VM test needs (root, qemu, busybox-static, a
//! kernel in /boot); prints SKIP otherwise. `KINC_BENCH_ROUNDS` sets N (default 10).

// Shared with tests/vm_cgroup_v2.rs; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/vm/mod.rs"]
mod vm;

use std::collections::BTreeMap;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_cgroup-setup");

fn main() {
    let busybox = kinc_testutil::which("busybox");
    let kernel = vm::find_kernel();
    let ready = kinc_testutil::is_root()
        && kinc_testutil::which("qemu-system-x86_64").is_some()
        && kinc_testutil::which("unshare").is_some()
        && busybox.as_deref().is_some_and(vm::initramfs::is_static)
        && kernel.is_some();
    if !ready {
        eprintln!(
            "SKIP setup_vs_shell: needs root, qemu-system-x86_64, unshare, busybox-static, /boot/vmlinuz-*"
        );
        return;
    }
    let rounds: usize = std::env::var("KINC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    let mut rd = vm::Initramfs::new();
    rd.add_host_file(busybox.as_deref().unwrap(), "/bin/busybox", 0o755);
    rd.add_binary_with_libs(Path::new(BIN), "/usr/local/bin/cgroup-setup");
    rd.add_binary_with_libs(
        &kinc_testutil::which("unshare").unwrap(),
        "/usr/bin/unshare",
    );
    rd.add_bytes("/vm/lib", include_str!("../tests/vm/guest-lib.sh"), 0o644);
    rd.add_bytes(
        "/vm/inner",
        include_str!("../tests/vm/bench-inner.sh"),
        0o755,
    );
    rd.add_bytes("/vm/peer", include_str!("../tests/vm/peer.sh"), 0o755);
    let cmd = format!("N={rounds}\n{}", include_str!("../tests/vm/bench-cases.sh"));
    let limit = std::time::Duration::from_secs(900);
    let run = vm::boot_with_timeout(&kernel.unwrap(), rd, &cmd, limit);
    let out = run.output();
    assert_eq!(run.status, Some(0), "guest failed:\n{}", run.console);
    assert!(out.contains(&"DONE"), "{}", run.console);

    // Both variants must leave the same state, or the comparison means nothing.
    let state = |v: &str| -> Vec<&str> {
        let p = format!("STATE {v} ");
        out.iter()
            .filter_map(|l| l.strip_prefix(&p))
            .filter(|l| l.starts_with("sc:") || l.starts_with("rootprocs"))
            .collect()
    };
    assert_eq!(state("ours"), state("peer"), "{}", run.console);
    assert!(state("ours").contains(&"rootprocs"), "root emptied");

    // (variant, phase) -> seconds per run
    let mut times: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for l in &out {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let ["T", v, phase, a, b] = f[..] {
            let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
            times
                .entry((v.to_string(), phase.to_string()))
                .or_default()
                .push(b - a);
        }
    }
    let mean = |v: &str, p: &str| {
        let xs = &times[&(v.to_string(), p.to_string())];
        xs.iter().sum::<f64>() / xs.len() as f64 * 1000.0
    };
    println!(
        "setup_vs_shell: {rounds} rounds, one boot ({:.1?}), qemu TCG, guest clock /proc/uptime (10 ms ticks, averaged)",
        run.elapsed
    );
    println!(
        "{:<8} {:>16} {:>16} {:>8}",
        "phase", "cgroup-setup ms", "shell peer ms", "ratio"
    );
    for phase in ["startup", "nomount", "first", "rerun"] {
        let (o, p) = (mean("ours", phase), mean("peer", phase));
        println!("{phase:<8} {o:>16.1} {p:>16.1} {:>8.2}", o / p);
    }
}
