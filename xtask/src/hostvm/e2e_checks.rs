//! The end-to-end checks, run inside the guest by `xtask hostvm guest-check NAME`. Each
//! prints what it runs and sees, and fails with a message saying what was expected.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::config::{DELEGATE_DROPIN, DELEGATE_DROPIN_PATH, NODE_TARBALL, TEST_UID, TEST_USER};
use super::e2e::guest_bin;
use super::node::NODE_XTASK;
use kinc_types::node::REAL_CRUN;

/// The busybox-static the VM image carries, copied into images the checks build.
pub const BUSYBOX: &str = "/usr/local/lib/kinc-e2e/busybox";

const ALL_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids"];
const STANDIN_BASE: &str = "localhost/kinc/node-standin:base";
/// The stand-in node image the stand-in checks create clusters with (`--image`): the real
/// offline image has kinc's default tag.
pub const STANDIN_IMAGE: &str = "localhost/kinc/node-standin:e2e";
pub fn guest_check(name: &str) -> Result<()> {
    let t = Instant::now();
    let r = match name {
        "boot" => boot(),
        "delegation-default" => delegation_default(),
        "delegation-dropin" => delegation_dropin(),
        "host-prepare" => host_prepare(),
        "kinc-doctor-before" => kinc_doctor(false),
        "kinc-doctor-after" => kinc_doctor(true),
        "podman-rootless" => podman_rootless(),
        "provision" => provision(),
        "node-image" => node_image(),
        "kinc-parallel" => super::e2e_kinc::parallel(),
        "kinc-interrupted" => super::e2e_kinc::interrupted(),
        "kinc-killed" => super::e2e_kinc::killed(),
        "real-image" => super::e2e_real::image(),
        "real-create" => super::e2e_real::create(),
        "real-use" => super::e2e_real::use_cluster(),
        "real-test" => super::e2e_real::live_test(),
        "real-identity" => super::e2e_real::identity(),
        "real-load-image" => super::e2e_real::load_image(),
        "real-fail-fast" => super::e2e_real::fail_fast(),
        "real-persist" => super::e2e_real::persist_write(),
        "real-network" => super::e2e_real::network(),
        "real-policy-first-packet" => super::e2e_real::policy_first_packet(),
        "real-two-clusters" => super::e2e_real::two_clusters(),
        "real-after-reboot" => super::e2e_real::after_reboot(),
        "real-delete" => super::e2e_real::delete(),
        other => bail!("no end-to-end check named {other:?}"),
    };
    match &r {
        Ok(()) => println!("check {name}: ok ({:.1} s)", t.elapsed().as_secs_f64()),
        Err(e) => eprintln!("check {name}: FAILED: {e:#}"),
    }
    r
}

pub(super) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command, echoing it and what it printed (the log is the evidence).
pub(super) fn sh(argv: &[&str]) -> Result<Out> {
    run_echo(argv, true)
}

/// Like [`ok`] but echoes only the command line and status (for long machine output).
fn ok_data(argv: &[&str]) -> Result<String> {
    let o = run_echo(argv, false)?;
    ensure!(
        o.code == 0,
        "`{}` exited {}: {}",
        argv.join(" "),
        o.code,
        o.stderr.trim()
    );
    Ok(o.stdout)
}

fn run_echo(argv: &[&str], echo_output: bool) -> Result<Out> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("starting {prog}"))?;
    let o = Out {
        code: super::agent::exit_code(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("$ {}  # exit {}", argv.join(" "), o.code);
    if !echo_output {
        return Ok(o);
    }
    for l in o.stdout.lines().take(60) {
        println!("  {l}");
    }
    for l in o.stderr.lines().take(30) {
        println!("  ! {l}");
    }
    Ok(o)
}

/// Like [`sh`], failing unless the command succeeds; returns its trimmed stdout.
pub(super) fn ok(argv: &[&str]) -> Result<String> {
    let o = sh(argv)?;
    ensure!(
        o.code == 0,
        "`{}` exited {}: {}",
        argv.join(" "),
        o.code,
        o.stderr.trim()
    );
    Ok(o.stdout.trim().to_string())
}

/// Same as [`sh`] without echoing: for polls.
pub(super) fn quiet(argv: &[&str]) -> Option<String> {
    let (prog, args) = argv.split_first()?;
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(super) fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            println!("  {what}: after {:.1} s", t.elapsed().as_secs_f64());
            return Ok(v);
        }
        if t.elapsed() > timeout {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn controller_set(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn user_cgroup() -> String {
    format!(
        "/sys/fs/cgroup/user.slice/user-{TEST_UID}.slice/user@{TEST_UID}.service/cgroup.controllers"
    )
}

/// The (fstype, options) of the mount at `mount_point` in a mountinfo text.
pub fn mount_of(mountinfo: &str, mount_point: &str) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        if pre.get(4) != Some(&mount_point) {
            return None;
        }
        let fstype = post.split(' ').next()?;
        Some((fstype.to_string(), pre.get(5)?.to_string()))
    })
}

fn boot() -> Result<()> {
    ensure!(
        ok(&["systemctl", "is-active", "multi-user.target"])? == "active",
        "multi-user.target is not active"
    );
    let failed = ok(&[
        "systemctl",
        "list-units",
        "--state=failed",
        "--plain",
        "--no-legend",
    ])?;
    ensure!(failed.is_empty(), "failed units:\n{failed}");
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let (fstype, _) = mount_of(&mi, "/sys/fs/cgroup").context("/sys/fs/cgroup is not mounted")?;
    ensure!(
        fstype == "cgroup2",
        "/sys/fs/cgroup is {fstype}, not cgroup2"
    );
    let root = controller_set(&std::fs::read_to_string(
        "/sys/fs/cgroup/cgroup.controllers",
    )?);
    println!("  root controllers: {root:?}");
    ensure!(
        root.is_superset(&set(ALL_CONTROLLERS)),
        "root cgroup lacks some of {ALL_CONTROLLERS:?}: {root:?}"
    );
    ok(&["uname", "-r"])?;
    ok(&["podman", "--version"])?;
    Ok(())
}

fn start_user_manager() -> Result<()> {
    ok(&["systemctl", "start", &format!("user@{TEST_UID}.service")]).map(|_| ())
}

fn delegation_default() -> Result<()> {
    start_user_manager()?;
    ok(&[
        "systemctl",
        "show",
        "-p",
        "DelegateControllers",
        &format!("user@{TEST_UID}.service"),
    ])?;
    let have = controller_set(&std::fs::read_to_string(user_cgroup())?);
    println!("  {}: {have:?}", user_cgroup());
    ensure!(
        have == set(&["cpu", "memory", "pids"]),
        "expected trixie's default delegation cpu memory pids, got {have:?}"
    );
    Ok(())
}

fn delegation_dropin() -> Result<()> {
    let p = Path::new(DELEGATE_DROPIN_PATH);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    std::fs::write(p, DELEGATE_DROPIN)?;
    println!("  wrote {DELEGATE_DROPIN_PATH}:\n{DELEGATE_DROPIN}");
    ok(&["systemctl", "daemon-reload"])?;
    ok(&["systemctl", "restart", &format!("user@{TEST_UID}.service")])?;
    let want = set(ALL_CONTROLLERS);
    let have = poll("cpuset and io delegated", Duration::from_secs(30), || {
        let have = controller_set(&std::fs::read_to_string(user_cgroup()).ok()?);
        (have == want).then_some(have)
    })?;
    println!("  {}: {have:?}", user_cgroup());
    Ok(())
}

/// What `kinc doctor` tells a user to do besides the delegation drop-in, done the way
/// its fixes say (modules, sysctls, the user slice's task limit), so that doctor can be
/// required to be clean afterwards.
fn host_prepare() -> Result<()> {
    let modules = ["nf_tables", "nft_chain_nat", "nf_nat"];
    let mut argv = vec!["modprobe", "-a"];
    argv.extend(modules);
    ok(&argv)?;
    std::fs::write(
        "/etc/modules-load.d/kinc.conf",
        format!("{}\n", modules.join("\n")),
    )?;
    std::fs::write(
        "/etc/sysctl.d/90-kinc.conf",
        "net.ipv4.ip_forward = 1\n\
         fs.inotify.max_user_instances = 512\n\
         fs.inotify.max_user_watches = 524288\n\
         kernel.keys.maxkeys = 20000\n\
         kernel.keys.maxbytes = 400000\n",
    )?;
    ok(&["sysctl", "--system"])?;
    ok(&[
        "systemctl",
        "set-property",
        &format!("user-{TEST_UID}.slice"),
        "TasksMax=infinity",
    ])?;
    Ok(())
}

fn kinc_doctor(after_dropin: bool) -> Result<()> {
    let kinc = guest_bin("kinc");
    let o = sh(&[&kinc, "doctor"])?;
    let all = format!("{}{}", o.stdout, o.stderr);
    if after_dropin {
        ensure!(
            o.code == 0,
            "kinc doctor exited {} on a prepared host",
            o.code
        );
        ensure!(
            !all.contains("delegate.conf"),
            "kinc doctor still asks for the delegation drop-in after it was applied"
        );
        let findings: serde_json::Value =
            serde_json::from_str(&ok_data(&[&kinc, "doctor", "-o", "json"])?)
                .context("parsing `kinc doctor -o json`")?;
        let open: Vec<String> = findings
            .as_array()
            .context("kinc doctor -o json is not a list")?
            .iter()
            .filter(|f| f["level"] != "ok")
            .map(|f| format!("{}: {}", f["check"], f["summary"]))
            .collect();
        ensure!(
            open.is_empty(),
            "kinc doctor is not clean on a host prepared as it says: {open:?}"
        );
    } else {
        for word in [
            "cpuset",
            "io",
            "delegate.conf",
            "Delegate=cpu cpuset io memory pids",
        ] {
            ensure!(
                all.contains(word),
                "kinc doctor on trixie's default delegation does not mention {word:?}"
            );
        }
    }
    Ok(())
}

fn podman_rootless() -> Result<()> {
    let info: serde_json::Value =
        serde_json::from_str(&ok_data(&["podman", "info", "--format", "json"])?)
            .context("parsing `podman info --format json`")?;
    let get = |ptr: &str| {
        info.pointer(ptr)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let version = get("/version/Version");
    println!("  podman {version}");
    let mut problems = Vec::new();
    if !version.as_str().is_some_and(|v| v.starts_with("5.")) {
        problems.push(format!("version {version}, expected 5.x"));
    }
    for (ptr, want) in [
        ("/host/cgroupVersion", "v2"),
        ("/host/cgroupManager", "systemd"),
        ("/host/networkBackend", "netavark"),
        ("/host/ociRuntime/name", "crun"),
        ("/store/graphDriverName", "overlay"),
    ] {
        let have = get(ptr);
        println!("  {ptr} = {have}");
        if have.as_str() != Some(want) {
            problems.push(format!("{ptr} is {have}, expected {want:?}"));
        }
    }
    if get("/host/security/rootless") != serde_json::Value::Bool(true) {
        problems.push("host.security.rootless is not true".into());
    }
    let pasta = get("/host/pasta/executable");
    println!("  /host/pasta/executable = {pasta}");
    if pasta.as_str().is_none_or(|p| p.is_empty()) {
        problems.push("no pasta executable".into());
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// At build time: the stand-in's base image in the test user's storage.
fn provision() -> Result<()> {
    let t = Instant::now();
    import_standin()?;
    println!("  podman import: {:.1} s", t.elapsed().as_secs_f64());
    ok(&["podman", "images"])?;
    Ok(())
}

/// The stand-in's base image (imported at build time), plus a layer with the binaries.
fn node_image() -> Result<()> {
    if quiet(&["podman", "image", "exists", STANDIN_BASE]).is_none() {
        let t = Instant::now();
        import_standin()?;
        println!("  podman import: {:.1} s", t.elapsed().as_secs_f64());
    }
    let home = format!("/home/{TEST_USER}");
    let ctx = Path::new(&home).join("e2e-node-context");
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx)?;
    }
    // One tree copied to / in one COPY: every COPY step is a layer commit, ~15 s each
    // under emulation.
    let root = ctx.join("root");
    let at = |abs: &str| root.join(abs.trim_start_matches('/'));
    let mkparent = |p: &Path| std::fs::create_dir_all(p.parent().expect("has a parent"));
    mkparent(&at(NODE_XTASK))?;
    std::fs::copy(
        format!("{}/agent", super::config::CTL_MOUNT),
        at(NODE_XTASK),
    )
    .context("copying the agent")?;
    let mut carried = Vec::new();
    std::fs::create_dir_all(at("/usr/local/bin"))?;
    for b in super::e2e::NODE_BINARIES {
        let src = guest_bin(b.bin);
        if Path::new(&src).is_file() {
            std::fs::copy(&src, at("/usr/local/bin").join(b.bin))?;
            carried.push(b.bin);
        }
    }
    println!("  real binaries carried: {carried:?}");
    carry_e2e_tools(&root)?;
    // The units again, from this binary: fixing them needs no image rebuild.
    std::fs::create_dir_all(at("/etc/systemd/system"))?;
    for f in super::config::node_files() {
        if let Some(unit) = f.path.strip_prefix("etc/systemd/system/") {
            std::fs::write(at("/etc/systemd/system").join(unit), &f.content)?;
        }
    }
    std::fs::write(ctx.join("Containerfile"), node_containerfile())?;
    let t = Instant::now();
    podman_build(STANDIN_IMAGE, &ctx)?;
    println!("  podman build: {:.1} s", t.elapsed().as_secs_f64());
    ok(&["podman", "image", "exists", STANDIN_IMAGE])?;
    Ok(())
}

/// `podman build` of `ctx/Containerfile` as `tag`, with nothing pulled and no network:
/// the VM has neither.
pub(super) fn podman_build(tag: &str, ctx: &Path) -> Result<()> {
    ok(&[
        "podman",
        "build",
        "--pull=never",
        "--network=none",
        "-t",
        tag,
        "-f",
        &ctx.join("Containerfile").to_string_lossy(),
        &ctx.to_string_lossy(),
    ])
    .map(|_| ())
}

/// `zstd -dc TARBALL | podman import ... - IMAGE`: podman 5.4 computes a wrong DiffID when
/// it decompresses a zstd file itself ("does not match config's DiffID"), so it gets the
/// plain tar on stdin.
fn import_standin() -> Result<()> {
    let argv = [
        "podman",
        "import",
        "--change",
        "CMD [\"/sbin/init\"]",
        "--change",
        "STOPSIGNAL SIGRTMIN+3",
        "--change",
        "ENV container=podman",
        "-",
        STANDIN_BASE,
    ];
    println!("$ zstd -dc {NODE_TARBALL} | {}", argv.join(" "));
    let mut zstd = Command::new("zstd")
        .args(["-dc", NODE_TARBALL])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting zstd")?;
    let tar = zstd.stdout.take().expect("piped");
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(tar)
        .status()
        .context("starting podman import")?;
    let zst = zstd.wait()?;
    ensure!(zst.success(), "zstd -dc {NODE_TARBALL}: {zst}");
    ensure!(st.success(), "podman import: {st}");
    Ok(())
}

/// The per-run layer: no RUN instruction, so the build needs no network and no runtime.
pub fn node_containerfile() -> String {
    format!(
        "FROM {STANDIN_BASE}\n\
         LABEL io.kinc.standin=true\n\
         COPY root/ /\n"
    )
}

/// Where the host VM's libraries for crun and nft go in the node: the Debian directory
/// the stand-in's own libraries are in (both are trixie from the same mirror, so a
/// library both have is the same file).
const E2E_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// The host VM's crun, nft (with the libraries the stand-in lacks) and busybox-static,
/// for the checks inside the node: the real node image has crun; nft and busybox are
/// the tests' tools (inspect the firewall, a pod's rootfs).
fn carry_e2e_tools(root: &Path) -> Result<()> {
    let at = |abs: &str| root.join(abs.trim_start_matches('/'));
    let lib = at(E2E_LIB_DIR);
    std::fs::create_dir_all(&lib)?;
    for (src, dest) in [
        ("/usr/bin/crun", REAL_CRUN),
        ("/usr/sbin/nft", "/usr/sbin/nft"),
        ("/bin/busybox", BUSYBOX),
    ] {
        let dest = at(dest);
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        std::fs::copy(src, &dest).with_context(|| format!("copying {src}"))?;
        // ldd fails on a static binary: then there is nothing to carry.
        let Some(list) = quiet(&["ldd", src]) else {
            continue;
        };
        for path in ldd_paths(&list) {
            let file = Path::new(&path);
            let Some(base) = file.file_name() else {
                continue;
            };
            // The loader and libc are the stand-in's own.
            let b = base.to_string_lossy();
            if b.starts_with("ld-linux") || b.starts_with("libc.so") {
                continue;
            }
            std::fs::copy(file, lib.join(base)).with_context(|| format!("copying {path}"))?;
        }
    }
    Ok(())
}

/// Absolute library paths in `ldd` output.
pub fn ldd_paths(ldd: &str) -> Vec<String> {
    ldd.split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// `podman exec NAME ARGV...` of a read-only command, failing unless it succeeds. Exit
/// 125 is podman's own failure (a known, rare conmon flake), not the command's: that is
/// tried once more, and the log shows both attempts.
pub(super) fn exec(name: &str, argv: &[&str]) -> Result<String> {
    let mut v = vec!["podman", "exec", name];
    v.extend_from_slice(argv);
    let mut o = sh(&v)?;
    if o.code == 125 {
        println!("  podman itself failed (exit 125); trying once more");
        o = sh(&v)?;
    }
    ensure!(
        o.code == 0,
        "`{}` exited {}: {}",
        v.join(" "),
        o.code,
        o.stderr.trim()
    );
    Ok(o.stdout.trim().to_string())
}

/// systemd is PID 1 of the node, in its own cgroup namespace with a rw cgroup2 holding
/// every controller kinc needs.
pub(super) fn node_cgroup_namespace(name: &str) -> Result<()> {
    ensure!(
        exec(name, &["cat", "/proc/1/comm"])? == "systemd",
        "PID 1 is not systemd"
    );
    let cg = exec(name, &["cat", "/proc/1/cgroup"])?;
    ensure!(
        cg == "0::/init.scope",
        "PID 1's cgroup is {cg:?}, expected 0::/init.scope (a cgroup namespace)"
    );
    let mi = exec(name, &["cat", "/proc/self/mountinfo"])?;
    let (fstype, opts) =
        mount_of(&mi, "/sys/fs/cgroup").context("no /sys/fs/cgroup in the node")?;
    ensure!(
        fstype == "cgroup2" && opts.split(',').any(|o| o == "rw"),
        "/sys/fs/cgroup in the node is {fstype} {opts}, expected cgroup2 rw"
    );
    let have = controller_set(&exec(name, &["cat", "/sys/fs/cgroup/cgroup.controllers"])?);
    ensure!(
        have.is_superset(&set(ALL_CONTROLLERS)),
        "the node's cgroup namespace root lacks some of {ALL_CONTROLLERS:?}: {have:?}"
    );
    Ok(())
}

/// cgroup-setup delegated every controller down to kubelet's cgroup root.
pub(super) fn kubelet_root_has_every_controller(name: &str) -> Result<()> {
    let root = kinc_types::node::KUBELET_CGROUP_ROOT;
    let have = controller_set(&exec(
        name,
        &["cat", &format!("/sys/fs/cgroup{root}/cgroup.controllers")],
    )?);
    ensure!(
        have.is_superset(&set(ALL_CONTROLLERS)),
        "kubelet's cgroup root {root} lacks some of {ALL_CONTROLLERS:?}: {have:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing() {
        let mi = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n\
                  36 24 0:31 / /sys/fs/bpf rw - bpf bpf rw\n";
        assert_eq!(
            mount_of(mi, "/sys/fs/cgroup"),
            Some(("cgroup2".into(), "rw,nosuid,nodev,noexec,relatime".into()))
        );
        assert_eq!(mount_of(mi, "/sys"), None);
        // The last mount on a point wins (it hides the ones below).
        let two = format!("{mi}40 24 0:40 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n");
        assert_eq!(mount_of(&two, "/sys/fs/cgroup").unwrap().0, "tmpfs");
    }

    #[test]
    fn rendered_guest_files() {
        let c = node_containerfile();
        assert!(c.starts_with(&format!("FROM {STANDIN_BASE}\n")));
        assert!(!c.contains("RUN"), "the layer must build without a runtime");
        assert!(c.ends_with("COPY root/ /\n"));
        assert_eq!(
            ldd_paths("\tlinux-vdso.so.1 (0x7ffc)\n\tlibyajl.so.2 => /lib/x86_64-linux-gnu/libyajl.so.2 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n"),
            ["/lib/x86_64-linux-gnu/libyajl.so.2", "/lib64/ld-linux-x86-64.so.2"]
        );
        assert_eq!(
            controller_set("cpu  memory\npids\n"),
            set(&["cpu", "memory", "pids"])
        );
    }
}
