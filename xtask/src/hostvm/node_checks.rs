//! Checks that run *inside* the running node container, as its user-namespaced root:
//! `podman exec NODE /usr/local/lib/kinc/xtask hostvm node-check NAME` (the xtask binary
//! is in the node; see node.rs). They prove what only the node's context can show:
//! crun-wrapper makes a CRI-O-shaped spec run that plain crun refuses there, and kincnet
//! wires two pods on its bridge and cleans up after itself.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

/// busybox-static from the host VM (the per-run node layer adds it, see
/// e2e_checks::node_image): the rootfs of the test pod.
pub const BUSYBOX: &str = "/usr/local/lib/kinc-e2e/busybox";

pub fn node_check(name: &str) -> Result<()> {
    let t = Instant::now();
    let r = match name {
        "crun-wrapper" => crun_wrapper(),
        "kincnet" => kincnet(),
        other => bail!("no in-node check named {other:?}"),
    };
    match &r {
        Ok(()) => println!("node-check {name}: ok ({:.1} s)", t.elapsed().as_secs_f64()),
        Err(e) => eprintln!("node-check {name}: FAILED: {e:#}"),
    }
    r
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(prog: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Result<Ran> {
    let mut c = Command::new(prog);
    c.args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("starting {prog}"))?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input)?;
    }
    let out = child.wait_with_output()?;
    let r = Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("$ {prog} {}  # {}", args.join(" "), out.status);
    for l in r.stdout.lines().take(40) {
        println!("  {l}");
    }
    for l in r.stderr.lines().take(20) {
        println!("  ! {l}");
    }
    Ok(r)
}

fn run_ok(prog: &str, args: &[&str]) -> Result<String> {
    let r = run(prog, args, &[], None)?;
    ensure!(
        r.ok,
        "`{prog} {}` failed: {}",
        args.join(" "),
        r.stderr.trim()
    );
    Ok(r.stdout)
}

fn first_line(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

// ---------------------------------------------------------------------------------------
// crun-wrapper

const POD_UID: u32 = 1000;
const POD_GID: u32 = 3000;
const POD_GROUP: u32 = 2000;
/// CRI-O's pause/critical value: below what a rootless caller may set.
const POD_OOM: i32 = -998;
const POD_CGROUP: &str = "kubepods/pod-kinc-e2e/crio-kinc-e2e";

/// A pod spec shaped like the ones CRI-O writes (its namespaces, mounts, capabilities,
/// rlimits, oomScoreAdj, sysctls, seccomp, cgroupsPath under kubelet's root), reduced
/// to what a busybox rootfs can run.
pub fn pod_spec(rootfs: &Path, userdata: &Path, args: &[&str]) -> Value {
    let caps = json!(kinc_types::node::CRIO_DEFAULT_CAPABILITIES);
    let bind = |name: &str, dest: &str, ro: bool| {
        json!({"destination": dest, "type": "bind",
               "source": userdata.join(name),
               "options": if ro { json!(["ro", "bind", "nodev", "nosuid", "noexec"]) }
                          else { json!(["rw", "bind"]) }})
    };
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": POD_UID, "gid": POD_GID, "additionalGids": [POD_GID, POD_GROUP], "umask": 18},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm", "HOSTNAME=kinc-e2e-pod", "KUBERNETES_SERVICE_PORT=443"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1_048_576u64, "soft": 1_048_576u64},
                {"type": "RLIMIT_NPROC", "hard": 4_194_304u64, "soft": 4_194_304u64}
            ],
            "noNewPrivileges": false,
            "oomScoreAdj": POD_OOM,
            "apparmorProfile": "crio-default"
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "kinc-e2e-pod",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            bind("shm", "/dev/shm", false),
            bind("resolv.conf", "/etc/resolv.conf", true),
            bind("hostname", "/etc/hostname", true),
            bind("hosts", "/etc/hosts", false)
        ],
        "annotations": {
            "io.kubernetes.container.name": "app",
            "io.kubernetes.pod.name": "kinc-e2e",
            "io.kubernetes.pod.namespace": "default",
            "io.kubernetes.cri-o.ContainerType": "container"
        },
        "linux": {
            "sysctl": {"net.ipv4.ping_group_range": "0 2147483647"},
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 67_108_864},
                "pids": {"limit": 256}
            },
            "cgroupsPath": format!("{}/{POD_CGROUP}", kinc_types::node::KUBELET_CGROUP_ROOT),
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["keyctl", "add_key", "request_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            },
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/bus", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The rootfs (busybox and its applet links) and CRI-O's per-container files.
fn make_bundle_base(base: &Path) -> Result<(PathBuf, PathBuf)> {
    let rootfs = base.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .with_context(|| format!("copying {BUSYBOX} (the stand-in carries it)"))?;
    for applet in ["sh", "id", "cat"] {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    for f in ["resolv.conf", "hostname", "hosts"] {
        File::create(rootfs.join("etc").join(f))?;
    }
    let userdata = base.join("userdata");
    fs::create_dir_all(userdata.join("shm"))?;
    fs::write(userdata.join("resolv.conf"), "nameserver 10.96.0.10\n")?;
    fs::write(userdata.join("hostname"), "kinc-e2e-pod\n")?;
    fs::write(userdata.join("hosts"), "127.0.0.1 localhost\n")?;
    Ok((rootfs, userdata))
}

fn write_bundle(base: &Path, name: &str, spec: &Value) -> Result<PathBuf> {
    let b = base.join(name);
    fs::create_dir_all(&b)?;
    fs::write(b.join("config.json"), serde_json::to_vec(spec)?)?;
    Ok(b)
}

/// Removes the test containers and files, also when the check fails halfway.
struct CrunCleanup {
    base: PathBuf,
    state: PathBuf,
    ids: Vec<String>,
}

impl Drop for CrunCleanup {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = Command::new(kinc_types::node::REAL_CRUN)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "-f", id])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn crun_wrapper() -> Result<()> {
    let crun = kinc_types::node::REAL_CRUN;
    let wrapper = kinc_types::node::CRUN_WRAPPER_BIN;
    println!(
        "  caller: uid_map {:?}, oom_score_adj {}, {}",
        first_line("/proc/self/uid_map"),
        first_line("/proc/self/oom_score_adj"),
        fs::read_to_string("/proc/self/limits")?
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or("")
    );
    run_ok(crun, &["--version"])?;
    let base = PathBuf::from("/var/tmp/kinc-e2e-crun");
    let _ = fs::remove_dir_all(&base);
    let state = base.join("state");
    fs::create_dir_all(&state)?;
    let _cleanup = CrunCleanup {
        base: base.clone(),
        state: state.clone(),
        ids: vec!["kinc-e2e-plain".into(), "kinc-e2e-wrapped".into()],
    };
    let (rootfs, userdata) = make_bundle_base(&base)?;
    let script = format!(
        "id -u; id -g; id -G; cat /proc/self/oom_score_adj; cat /proc/self/cgroup; \
         cat /sys/fs/cgroup{}/{POD_CGROUP}/memory.max",
        kinc_types::node::KUBELET_CGROUP_ROOT
    );
    let spec = pod_spec(&rootfs, &userdata, &["/bin/sh", "-c", &script]);
    let state_s = state.to_string_lossy().into_owned();

    // Plain crun refuses it here: that is why the node has crun-wrapper.
    let plain = write_bundle(&base, "plain", &spec)?;
    let r = run(
        crun,
        &[
            "--root",
            &state_s,
            "run",
            "--bundle",
            &plain.to_string_lossy(),
            "kinc-e2e-plain",
        ],
        &[],
        None,
    )?;
    ensure!(
        !r.ok,
        "plain crun ran the CRI-O-shaped spec in the node; expected a refusal \
         (oom_score_adj {POD_OOM} / rlimits above the caller's): {}",
        r.stdout
    );
    let reasons = ["oom_score_adj", "setrlimit", "capset", "ping_group_range"];
    ensure!(
        reasons.iter().any(|w| r.stderr.contains(w)),
        "plain crun failed, but not for a reason crun-wrapper's rules address ({reasons:?}): {}",
        r.stderr.trim()
    );

    // The same spec through crun-wrapper runs, as the uid it asked for.
    let wrapped = write_bundle(&base, "wrapped", &spec)?;
    let r = run(
        wrapper,
        &[
            "--root",
            &state_s,
            "run",
            "--bundle",
            &wrapped.to_string_lossy(),
            "kinc-e2e-wrapped",
        ],
        &[],
        None,
    )?;
    ensure!(
        r.ok,
        "crun-wrapper did not run the spec plain crun refused: {}",
        r.stderr.trim()
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    ensure!(
        lines.len() >= 6,
        "the pod printed too little: {:?}",
        r.stdout
    );
    ensure!(
        lines[0] == POD_UID.to_string(),
        "the pod ran as uid {}, the spec asked for {POD_UID}",
        lines[0]
    );
    ensure!(
        lines[1] == POD_GID.to_string(),
        "the pod ran as gid {}, the spec asked for {POD_GID}",
        lines[1]
    );
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    ensure!(
        groups.contains(&POD_GROUP.to_string().as_str()),
        "the pod's groups {groups:?} lack additional gid {POD_GROUP}"
    );
    let oom: i32 = lines[3].parse().context("the pod's oom_score_adj")?;
    let caller: i32 = first_line("/proc/self/oom_score_adj").parse()?;
    ensure!(
        oom >= caller && oom != POD_OOM,
        "pod oom_score_adj {oom}: expected the caller's floor {caller}"
    );
    let cgroup = lines[4];
    ensure!(
        cgroup.ends_with(POD_CGROUP),
        "the pod runs in cgroup {cgroup:?}, not below kubelet's root at {POD_CGROUP}"
    );
    ensure!(
        lines[5] == "67108864",
        "the pod cgroup's memory.max is {:?}, the spec asked 67108864",
        lines[5]
    );
    for field in ["process.oomScoreAdj", "process.rlimits", "apparmorProfile"] {
        ensure!(
            r.stderr.contains(field),
            "crun-wrapper logged no change of {field}: {}",
            r.stderr
        );
    }
    // What it rewrote: never the user, only what the caller cannot grant.
    let written: Value = serde_json::from_slice(&fs::read(wrapped.join("config.json"))?)?;
    ensure!(
        written["process"]["user"] == spec["process"]["user"],
        "crun-wrapper changed process.user: {}",
        written["process"]["user"]
    );
    ensure!(
        written["process"]["oomScoreAdj"] != spec["process"]["oomScoreAdj"],
        "process.oomScoreAdj was not rewritten"
    );
    println!(
        "  uid {} gid {} groups {groups:?} oom {oom} cgroup {cgroup}: as asked, oom raised to the caller's",
        lines[0], lines[1]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// kincnet

const HOST_PORT: u16 = 18080;
const POD_PORT: u16 = 8080;
const CIDS: [&str; 2] = ["kinc-e2e-pod-a", "kinc-e2e-pod-b"];

/// A named netns, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Result<Netns> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run_ok("ip", &["netns", "add", name])?;
        Ok(Netns(name.to_string()))
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `f` on a thread that joined the netns at `path`.
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns changes only this scoped thread's netns; the thread ends after f.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "setns {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    })
}

/// A TCP server in a netns answering each connection with the peer's address.
fn echo_peer_server(ns: &Path, port: u16) -> Result<()> {
    let l = in_netns(ns, || {
        Ok(TcpListener::bind(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        ))?)
    })?;
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
    Ok(())
}

fn connect(to: SocketAddrV4) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(3))
        .with_context(|| format!("TCP connect to {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .with_context(|| format!("reading from {to}"))?;
    Ok(buf)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One ICMP echo over a raw socket (the node has no ping binary); the reply's source
/// must be `dst`.
fn ping(dst: Ipv4Addr) -> Result<Duration> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    ensure!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: tv outlives the call; the size matches.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"kinc-e2e-ping");
    let ck = checksum(&pkt);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let t = Instant::now();
    // SAFETY: pkt and addr are valid for the given lengths.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    ensure!(n >= 0, "sendto {dst}: {}", std::io::Error::last_os_error());
    let mut buf = [0u8; 1500];
    while t.elapsed() < Duration::from_secs(3) {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 20 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let icmp = &buf[ihl..n as usize];
        if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && src == dst {
            return Ok(t.elapsed());
        }
    }
    bail!("no ICMP echo reply from {dst} within 3 s")
}

fn cni(command: &str, conf: &Value, cid: &str, netns: Option<&Path>) -> Result<Value> {
    let mut env = vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", cid.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", kinc_types::node::CNI_BIN_DIR.to_string()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}"),
        ),
    ];
    if let Some(n) = netns {
        env.push(("CNI_NETNS", n.to_string_lossy().into_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bin = format!("/usr/local/bin/{}", super::e2e::KINCNET.bin);
    let r = run(&bin, &[], &env, Some(conf.to_string().as_bytes()))?;
    ensure!(
        r.ok,
        "kincnet {command} {cid} failed: {}{}",
        r.stdout.trim(),
        r.stderr.trim()
    );
    Ok(serde_json::from_str(&r.stdout).unwrap_or(Value::Null))
}

fn result_ip(r: &Value, key: &str) -> Result<Ipv4Addr> {
    let s = r["ips"][0][key]
        .as_str()
        .with_context(|| format!("no ips[0].{key} in the ADD result {r}"))?;
    Ok(s.split('/').next().unwrap_or(s).parse()?)
}

/// Host-side veths attached to the bridge.
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn ipam_records(network: &str) -> Result<Vec<String>> {
    let p = Path::new("/var/lib/cni/kincnet")
        .join(network)
        .join("allocations.json");
    let v: Value = match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?,
        Err(_) => return Ok(Vec::new()),
    };
    Ok(v["allocations"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

fn nft_table() -> Result<String> {
    run_ok("nft", &["list", "table", "ip", "kincnet"])
}

/// DELs both pods on drop when the check fails before its own DEL.
struct PodsGuard<'a> {
    conf: &'a Value,
    armed: bool,
}

impl Drop for PodsGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            for cid in CIDS {
                let _ = cni("DEL", self.conf, cid, None);
            }
        }
    }
}

fn kincnet() -> Result<()> {
    use kinc_types::config::{ClusterConfig, CONFIG_FILE, MOUNTED_CONFIG_DIR};
    let cfg_path = Path::new(MOUNTED_CONFIG_DIR).join(CONFIG_FILE);
    let cfg = ClusterConfig::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let network = kinc_types::node::KINCNET_NETWORK;
    let bridge = kinc_types::node::KINCNET_BRIDGE;
    let conf = json!({
        "cniVersion": "1.0.0", "name": network, "type": "kincnet",
        "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
        "ipam": {"subnet": cfg.pod_subnet.to_string(), "routes": [{"dst": "0.0.0.0/0"}]}
    });
    println!("  cluster {} pod subnet {}", cfg.name, cfg.pod_subnet);
    let mut with_port = conf.clone();
    with_port["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}]});
    let a = Netns::new("kinc-e2e-pod-a")?;
    let b = Netns::new("kinc-e2e-pod-b")?;
    let mut guard = PodsGuard {
        conf: &conf,
        armed: true,
    };
    let ra = cni("ADD", &with_port, CIDS[0], Some(&a.path()))?;
    let rb = cni("ADD", &conf, CIDS[1], Some(&b.path()))?;
    let (ip_a, ip_b) = (result_ip(&ra, "address")?, result_ip(&rb, "address")?);
    let gw = result_ip(&ra, "gateway")?;
    println!("  pod a {ip_a}, pod b {ip_b}, gateway {gw}");
    ensure!(ip_a != ip_b, "both pods got {ip_a}");

    let ports = bridge_ports(bridge);
    ensure!(
        ports.len() == 2,
        "expected 2 veths on {bridge}, found {ports:?}"
    );
    let recs = ipam_records(network)?;
    ensure!(
        CIDS.iter().all(|c| recs.iter().any(|r| r.starts_with(c))),
        "IPAM store lacks our pods: {recs:?}"
    );
    let table = nft_table()?;
    ensure!(
        table.contains(&HOST_PORT.to_string()) && table.contains(&ip_a.to_string()),
        "no hostPort element {HOST_PORT} -> {ip_a} in table ip kincnet"
    );

    echo_peer_server(&a.path(), POD_PORT)?;
    let t = in_netns(&b.path(), || ping(ip_a))?;
    println!("  ping b -> a ({ip_a}): {:.1} ms", t.as_secs_f64() * 1e3);
    let t = in_netns(&a.path(), || ping(ip_b))?;
    println!("  ping a -> b ({ip_b}): {:.1} ms", t.as_secs_f64() * 1e3);
    let seen = in_netns(&b.path(), || connect(SocketAddrV4::new(ip_a, POD_PORT)))?;
    println!("  TCP b -> a:{POD_PORT}: a saw {seen}");
    ensure!(
        seen == ip_b.to_string(),
        "pod a saw {seen:?}, expected pod b's own address {ip_b} (no NAT between pods)"
    );
    let seen = connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, HOST_PORT))?;
    println!("  TCP node 127.0.0.1:{HOST_PORT} -> a: a saw {seen}");
    let seen = in_netns(&b.path(), || connect(SocketAddrV4::new(gw, HOST_PORT)))?;
    println!("  TCP b -> {gw}:{HOST_PORT} (hostPort via the gateway) -> a: a saw {seen}");

    for (cid, r) in [(CIDS[0], &ra), (CIDS[1], &rb)] {
        let mut c = if cid == CIDS[0] {
            with_port.clone()
        } else {
            conf.clone()
        };
        c["prevResult"] = r.clone();
        let netns = if cid == CIDS[0] { a.path() } else { b.path() };
        cni("DEL", &c, cid, Some(&netns))?;
    }
    guard.armed = false;
    // The veth goes a grace period after DEL answers (deleted in a forked child).
    let t = Instant::now();
    let ports = loop {
        let p = bridge_ports(bridge);
        if p.is_empty() || t.elapsed() > Duration::from_secs(10) {
            break p;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        ports.is_empty(),
        "veths left on {bridge} after DEL: {ports:?}"
    );
    let recs = ipam_records(network)?;
    ensure!(
        !CIDS.iter().any(|c| recs.iter().any(|r| r.starts_with(c))),
        "IPAM records left after DEL: {recs:?}"
    );
    let table = nft_table()?;
    ensure!(
        !table.contains(&format!(" {HOST_PORT} ")) && !table.contains(&format!("{ip_a} ")),
        "nft elements left after DEL:\n{table}"
    );
    let gone = connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, HOST_PORT));
    ensure!(gone.is_err(), "the hostPort still answers after DEL");
    println!("  after DEL: no veth on {bridge}, no IPAM record, no nft element, hostPort closed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_is_cri_o_shaped_and_asks_for_what_a_rootless_caller_lacks() {
        let s = pod_spec(Path::new("/r"), Path::new("/u"), &["/bin/sh"]);
        assert_eq!(s["process"]["user"]["uid"], POD_UID);
        assert_eq!(s["process"]["oomScoreAdj"], POD_OOM);
        assert_eq!(s["root"]["path"], "/r");
        assert_eq!(s["linux"]["cgroupsPath"], format!("/kubelet/{POD_CGROUP}"));
        assert!(s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["source"] == "/u/hostname"));
        // Parses as an OCI runtime spec where it matters to crun.
        assert!(s["linux"]["namespaces"].as_array().unwrap().len() == 5);
    }

    #[test]
    fn icmp_checksum() {
        // An echo request with a zero checksum field checksums to a value that makes
        // the whole packet sum to 0xffff.
        let mut pkt = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c'];
        let ck = checksum(&pkt);
        pkt[2..4].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(checksum(&pkt), 0);
    }
}
