//! The CNI commands. `run` is the whole plugin minus process I/O: environment lookup
//! and stdin in, stdout text and exit code out.

use std::collections::HashSet;
use std::fs::File;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnetwork::Ipv4Network;

use crate::config::{self, NetConf, PortMapping};
use crate::env::{self, CniEnv, Command};
use crate::error::{CniError, CniResult, Code};
use crate::firewall::{self, Firewall};
use crate::gate::{self, Gate};
use crate::ipam::{self, Store};
use crate::netlink::{mac_string, Link, Netlink, NlError};
use crate::result::{AddOutcome, RawResult, Route};
use crate::version::{self, Version};

/// What the process prints and exits with.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub code: i32,
}

impl From<NlError> for CniError {
    fn from(e: NlError) -> CniError {
        let code = match e.errno() {
            Some(libc::EBUSY) | Some(libc::EAGAIN) => Code::TryAgainLater,
            _ => Code::Generic,
        };
        CniError::new(code, e.to_string())
    }
}

fn nl_open() -> CniResult<Netlink> {
    Netlink::open().map_err(|e| CniError::generic(format!("opening a netlink socket: {e}")))
}

/// Runs one invocation.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Output {
    let asked = config::peek_version(stdin);
    let label = asked
        .as_deref()
        .filter(|v| Version::parse(v).is_ok())
        .unwrap_or(version::LATEST)
        .to_string();
    match dispatch(get, stdin, asked.as_deref()) {
        Ok(stdout) => Output { stdout, code: 0 },
        Err(e) => Output {
            stdout: e.to_json(&label),
            code: 1,
        },
    }
}

fn dispatch(
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    asked: Option<&str>,
) -> CniResult<String> {
    if env::command(get)? == Command::Version {
        return Ok(version::version_info(asked));
    }
    let (conf, cenv) = validate(get, stdin)?;
    let fw = firewall::for_network(&conf);
    match cenv.command {
        Command::Add => {
            let out = add(&cenv, &conf, &fw)?;
            Ok(serde_json::to_string(&out.render(conf.version)).expect("result serializes"))
        }
        Command::Del => del(&cenv, &conf, &fw).map(|_| String::new()),
        Command::Check => check(&cenv, &conf, &fw).map(|_| String::new()),
        Command::Status => status(&conf).map(|_| String::new()),
        Command::Gc => gc(&conf, &fw).map(|_| String::new()),
        Command::Version => unreachable!("handled above"),
    }
}

/// Decodes and checks all of a command's input (stdin and the CNI_* environment)
/// without touching the kernel or the filesystem, so an input error is reported with
/// its spec code (1, 4, 6 or 7) before anything changes. What needs a look at the
/// system (is CNI_NETNS a network namespace, is `bridge` a bridge) is checked by the
/// commands, still before their first change.
pub fn validate(
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> CniResult<(NetConf, CniEnv)> {
    let conf = config::parse(stdin)?;
    let cenv = CniEnv::read(get)?;
    match cenv.command {
        Command::Check => {
            if !conf.version.has_check() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later, config is {}",
                        conf.version.as_str()
                    ),
                ));
            }
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    Code::InvalidConfig,
                    "prevResult: missing (CHECK needs the ADD result)",
                )
            })?;
            prev_ip(prev).ok_or_else(|| {
                CniError::new(Code::InvalidConfig, "prevResult.ips: no IPv4 address")
            })?;
        }
        Command::Gc if conf.valid_attachments.is_none() => {
            return Err(CniError::new(
                Code::InvalidConfig,
                "cni.dev/valid-attachments: missing (GC needs it)",
            ))
        }
        _ => {}
    }
    Ok((conf, cenv))
}

/// The host end's name: stable per attachment, so DEL and GC find it without state.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: no dependency, and 48 bits make a collision on one node negligible.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("kn{:012x}", h & 0xffff_ffff_ffff)
}

/// Locally administered MACs derived from the address: stable across re-creation,
/// and no query needed to report them.
fn mac(kind: u8, ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, kind, o[0], o[1], o[2], o[3]]
}
const MAC_POD: u8 = 0x58;
const MAC_HOST: u8 = 0x59;
const MAC_BRIDGE: u8 = 0x5a;

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, linux/nsfs.h): the `CLONE_NEW*` type of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn ns_type_name(t: libc::c_int) -> &'static str {
    match t {
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        _ => "non-network",
    }
}

/// Opens CNI_NETNS once it is known to be a network namespace other than the plugin's
/// own (code 4 otherwise). The path is first resolved with O_PATH, which opens nothing:
/// a FIFO would block and a device could act on open. A pid namespace used to pass and
/// fail only at veth creation, after the bridge was set up; the plugin's own namespace
/// would get the pod's interface and address.
fn open_pod_netns(path: &Path) -> CniResult<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let bad = |why: String| {
        CniError::new(
            Code::InvalidEnv,
            format!("CNI_NETNS {}: {why}", path.display()),
        )
    };
    let probe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    // SAFETY: statfs is plain data, filled by fstatfs on a descriptor we own.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a valid out pointer.
    if unsafe { libc::fstatfs(probe.as_raw_fd(), &mut sfs) } != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    if sfs.f_type as i64 != libc::NSFS_MAGIC as i64 {
        return Err(bad(
            "not a namespace file (like /proc/PID/ns/net or /run/netns/NAME)".into(),
        ));
    }
    // Reopen the very file the probe resolved, not the path again.
    let ns = File::open(format!("/proc/self/fd/{}", probe.as_raw_fd()))
        .map_err(|e| bad(e.to_string()))?;
    // SAFETY: an ioctl without argument on a descriptor we own.
    let t = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t < 0 {
        return Err(bad(format!(
            "not a namespace: {}",
            std::io::Error::last_os_error()
        )));
    }
    if t != libc::CLONE_NEWNET {
        return Err(bad(format!(
            "a {} namespace, not a network namespace",
            ns_type_name(t)
        )));
    }
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let own = std::fs::metadata("/proc/thread-self/ns/net").map(id);
    if ns.metadata().map(id).ok() == own.ok() {
        return Err(bad(
            "the plugin's own network namespace, not a container's".into()
        ));
    }
    Ok(ns)
}

/// Sets a sysctl of the calling thread's netns to a one-digit value unless it
/// already has it (a read is cheaper than a write, and ADD runs this every time).
fn sysctl(key: &str, value: u8) -> CniResult<()> {
    let path = format!("/proc/sys/{key}");
    let want = b'0' + value;
    match std::fs::read(&path) {
        Ok(v) if v.first() == Some(&want) && v.get(1).is_none_or(|c| *c == b'\n') => Ok(()),
        _ => std::fs::write(&path, [want])
            .map_err(|e| CniError::new(Code::Io, format!("writing {value} to {path}: {e}"))),
    }
}

fn sysctl_on(key: &str) -> CniResult<()> {
    sysctl(key, 1)
}

/// Makes the node route pod-to-pod traffic instead of bridging it. Pod ports are
/// isolated (`Netlink::set_port_up`), and the bridge answers a pod's ARP for another
/// pod with its own MAC (`proxy_arp_pvlan`, at once: `proxy_delay` 0), so every
/// packet between two pods crosses the node's IP stack: the forward hook (where
/// NetworkPolicy is enforced) and conntrack (which un-DNATs a Service's reply). Without
/// this, that needs br_netfilter, a module a rootless node can neither load nor rely on.
/// Redirects are off, or the node would tell pods to go direct, which isolation forbids.
/// Where the host has br_netfilter loaded, its netfilter calls are off in the node's
/// netns: it would bridge a DNATed packet straight to another isolated port, which the
/// bridge then drops.
fn route_between_ports(nl: &mut Netlink, bridge: &Link, name: &str) -> CniResult<()> {
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        sysctl("net/bridge/bridge-nf-call-iptables", 0)?;
    }
    sysctl(&format!("net/ipv4/conf/{name}/proxy_arp_pvlan"), 1)?;
    nl.set_arp_proxy_delay_zero(bridge.index)?;
    // A redirect is sent when either the interface's or `all`'s value is on.
    sysctl(&format!("net/ipv4/conf/{name}/send_redirects"), 0)?;
    sysctl("net/ipv4/conf/all/send_redirects", 0)
}

fn ensure_bridge(nl: &mut Netlink, conf: &NetConf, fw: &dyn Firewall) -> CniResult<Link> {
    let gw_net = Ipv4Network::new(conf.ipam.gateway, conf.ipam.subnet.prefix())
        .expect("gateway and prefix validated");
    let link = match nl.link_by_name(&conf.bridge)? {
        Some(l) => l,
        None => {
            nl.create_bridge(&conf.bridge, mac(MAC_BRIDGE, conf.ipam.gateway))?;
            nl.link_by_name(&conf.bridge)?.ok_or_else(|| {
                CniError::generic(format!("bridge {} vanished after creation", conf.bridge))
            })?
        }
    };
    // Checked by `add` already; again here because a link of this name may have been
    // made by someone else between that check and our create.
    not_a_bridge(conf, &link)?;
    if !link.up {
        nl.set_up(link.index)?;
    }
    if conf.is_gateway {
        nl.add_addr(link.index, gw_net)?;
        sysctl_on("net/ipv4/ip_forward")?;
        route_between_ports(nl, &link, &conf.bridge)?;
    }
    // 127.0.0.1:hostPort is DNATed to a pod: the kernel drops such packets unless
    // route_localnet allows 127/8 to be routed.
    sysctl_on("net/ipv4/conf/all/route_localnet")?;
    fw.ensure()?;
    Ok(link)
}

/// `bridge` naming a link that exists and is not a bridge (code 7): refused before the
/// gateway address and the firewall rules would be put on that link.
fn not_a_bridge(conf: &NetConf, link: &Link) -> CniResult<()> {
    if link.is_bridge() {
        return Ok(());
    }
    Err(CniError::new(
        Code::InvalidConfig,
        format!(
            "bridge: {:?} names an existing link that is not a bridge (kind {})",
            conf.bridge,
            link.kind.as_deref().unwrap_or("none")
        ),
    ))
}

fn pod_routes(conf: &NetConf) -> Vec<Route> {
    let gw = conf.ipam.gateway;
    let mut routes: Vec<Route> = conf
        .ipam
        .routes
        .iter()
        .map(|r| Route {
            dst: r.dst,
            gw: Some(r.gw.unwrap_or(gw)),
        })
        .collect();
    if conf.is_gateway && !routes.iter().any(|r| r.dst.prefix() == 0) {
        routes.insert(
            0,
            Route {
                dst: Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).unwrap(),
                gw: Some(gw),
            },
        );
    }
    routes
}

fn add(cenv: &CniEnv, conf: &NetConf, fw: &dyn Firewall) -> CniResult<AddOutcome> {
    let netns_path = cenv.netns.as_deref().expect("CNI_NETNS checked");
    let ns = open_pod_netns(netns_path)?;
    // Only reads until the allocation: a refusal up to there leaves the host as it was.
    let mut pod = Netlink::open_in(&ns).map_err(|e| {
        CniError::generic(format!("entering CNI_NETNS {}: {e}", netns_path.display()))
    })?;
    // The spec: an interface of that name in the container is an error. Also what keeps
    // a repeated ADD from replacing a working interface.
    if pod.link_by_name(&cenv.ifname)?.is_some() {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!(
                "CNI_IFNAME {}: an interface of that name already exists in CNI_NETNS {}",
                cenv.ifname,
                netns_path.display()
            ),
        ));
    }
    let mut nl = nl_open()?;
    if let Some(l) = nl.link_by_name(&conf.bridge)? {
        not_a_bridge(conf, &l)?;
    }
    // Refuses an attachment that already has an address: everything undone below on
    // failure then belongs to this call.
    let ip = Store::open(&conf.ipam.data_dir)?.allocate(
        &conf.ipam,
        &cenv.container_id,
        &cenv.ifname,
        cenv.requested_ip,
        &conf.port_mappings,
    )?;
    let host = host_veth_name(&cenv.container_id, &cenv.ifname);
    let mut gated = false;
    let made = ensure_bridge(&mut nl, conf, fw).and_then(|bridge| {
        // NetworkPolicy before the first packet: a pod policies may select is fail-closed
        // in the kernel before its interface exists, and ADD returns only once
        // kincnet-policy has programmed its rules (see `gate`).
        let gate = gate::decide(cenv.pod.as_ref(), fw.policy_namespaces()?.as_ref());
        if gate != Gate::Open {
            fw.pend(ip)?;
            gated = true;
            DETACH_EXIT.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let out = set_up_pod(&mut nl, &mut pod, &ns, cenv, conf, fw, &bridge, &host, ip)?;
        if let (Gate::NotSynced | Gate::Namespace, Some(p)) = (gate, cenv.pod.as_ref()) {
            gate::program(
                &conf.policy_socket,
                conf.policy_timeout,
                gate,
                p,
                ip,
                &cenv.container_id,
            )?;
        }
        Ok(out)
    });
    match made {
        Ok(out) => Ok(out),
        Err(e) => {
            // Undo what this call made; report the first error, and any cleanup failure.
            // The veth's name and the record are this attachment's; the firewall
            // elements removed are those pointing at this call's address, which no one
            // else can hold while its record exists.
            let mut cleanup = Vec::new();
            if let Err(ce) = nl.del_link_by_name(&host) {
                cleanup.push(ce.to_string());
            }
            let undone = Store::open(&conf.ipam.data_dir).and_then(|mut s| {
                fw.remove_pod(ip, &conf.port_mappings)?;
                if gated {
                    // The controller may have programmed the pod after we gave up.
                    release_policy(fw, conf, ip, &cenv.container_id)?;
                }
                s.release(&cenv.container_id, &cenv.ifname)
            });
            if let Err(ce) = undone {
                cleanup.push(ce.to_string());
            }
            if cleanup.is_empty() {
                Err(e)
            } else {
                let msg = format!("{}; error during cleanup: {}", e.msg, cleanup.join("; "));
                Err(CniError { msg, ..e })
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn set_up_pod(
    nl: &mut Netlink,
    pod: &mut Netlink,
    ns: &File,
    cenv: &CniEnv,
    conf: &NetConf,
    fw: &dyn Firewall,
    bridge: &Link,
    host: &str,
    ip: Ipv4Addr,
) -> CniResult<AddOutcome> {
    let host_mac = mac(MAC_HOST, ip);
    let pod_mac = mac(MAC_POD, ip);
    let create = |nl: &mut Netlink| {
        nl.create_veth(
            host,
            host_mac,
            &cenv.ifname,
            pod_mac,
            ns,
            conf.mtu,
            bridge.index,
        )
    };
    match create(nl) {
        // A host end left by an ADD that was killed: replace it.
        Err(e) if e.is(libc::EEXIST) && nl.link_by_name(host)?.is_some() => {
            nl.del_link_by_name(host)?;
            create(nl)?;
        }
        r => r?,
    }
    // Fault injection for the test that kills ADD midway: hold here until killed.
    if std::env::var_os("KINCNET_TEST_STALL_AFTER_VETH").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    let h = nl
        .link_by_name(host)?
        .ok_or_else(|| CniError::generic(format!("veth {host} vanished after creation")))?;
    // Isolated only when the node routes (it is the pods' gateway); else the bridge
    // is all that connects them.
    nl.set_port_up(h.index, conf.is_gateway, conf.hairpin)?;
    let link = pod.link_by_name(&cenv.ifname)?.ok_or_else(|| {
        CniError::generic(format!(
            "{} not found in the pod netns after creation",
            cenv.ifname
        ))
    })?;
    let address = Ipv4Network::new(ip, conf.ipam.subnet.prefix()).expect("prefix validated");
    pod.add_addr(link.index, address)?;
    pod.set_up(link.index)?;
    let routes = pod_routes(conf);
    for r in &routes {
        pod.add_route(r.dst, r.gw, link.index)?;
    }
    fw.add_pod(ip, &conf.port_mappings)?;
    Ok(AddOutcome {
        bridge: (conf.bridge.clone(), mac_string(&bridge.mac)),
        host_veth: (host.to_string(), mac_string(&host_mac)),
        container: (cenv.ifname.clone(), mac_string(&pod_mac)),
        sandbox: cenv
            .netns
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        address,
        gateway: conf.ipam.gateway,
        routes,
        dns: conf.dns.clone(),
        mtu: conf.mtu,
    })
}

/// The pod's IPv4 address according to a prevResult.
fn prev_ip(prev: &RawResult) -> Option<Ipv4Network> {
    prev.ips
        .iter()
        .find_map(|i| i.address.parse::<Ipv4Network>().ok())
}

fn del(cenv: &CniEnv, conf: &NetConf, fw: &dyn Firewall) -> CniResult<()> {
    // The store stays locked until the firewall is done, so the address cannot be
    // handed to another attachment (which would map its host ports to it) in between.
    let mut store = Store::open(&conf.ipam.data_dir)?;
    // Only this attachment's own record says what to undo. Without one (a repeated DEL,
    // an ADD that never allocated) none of the firewall state is this attachment's:
    // prevResult's address may belong to another pod by now, with the same host port.
    // Elements left by a lost store are GC's (it compares them with the live records).
    if let Some(rec) = store.get(&cenv.container_id, &cenv.ifname).cloned() {
        fw.remove_pod(rec.ip, &rec.port_mappings)?;
        release_policy(fw, conf, rec.ip, &cenv.container_id)?;
        store.release(&cenv.container_id, &cenv.ifname)?;
    }
    drop(store);
    // Deleting the host end removes the pair, also when the netns is already gone.
    delete_link_detached(&host_veth_name(&cenv.container_id, &cenv.ifname))
}

/// Set when kincnet-policy may have deleted set elements during this call (a gated ADD,
/// a release): see [`exit_detached`].
static DETACH_EXIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the binary should leave closing its sockets to a child (`exit_detached`).
pub fn exit_detached_wanted() -> bool {
    DETACH_EXIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Exits with `code` at once, leaving the release of this process's nf_tables socket to
/// a forked child. Releasing an nfnetlink socket waits for the kernel's pending
/// nf_tables destroy work, which ends with an RCU grace period (~10 ms here) when anyone
/// deleted elements just before: kincnet-policy does (the pending element) right before
/// a gated ADD returns. The runtime waits for this process, not for the child, which
/// holds the socket, closes it and exits. The answer is on stdout already.
pub fn exit_detached(code: i32) -> ! {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: called by main after the command, with no other threads running: the
    // child is a full copy of a single-threaded process.
    if let Ok(ForkResult::Child) = unsafe { fork() } {
        stdio_to_null();
        // SAFETY: _exit, as a forked child should.
        unsafe { libc::_exit(0) }
    }
    // Parent (or no fork: exit here and wait for the release ourselves).
    // SAFETY: stdout was flushed by the caller; nothing else needs an exit handler.
    unsafe { libc::_exit(code) }
}

/// In a forked child that outlives the call: stdin, stdout and stderr on /dev/null, so
/// the runtime reading the plugin's output never waits for the child.
fn stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
        // SAFETY: dup2 onto the standard descriptors of this (child) process only.
        unsafe {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
}

/// Removes every NetworkPolicy verdict of `ip` before its address can be handed out
/// again (called under the IPAM store's lock): its pending element, and the elements
/// kincnet-policy programmed for it as a pod and as a peer. The controller is asked
/// first (it keeps its model in step); when it does not confirm in time, kincnet
/// deletes them from the kernel itself, and the controller's next transaction that
/// misses them rewrites its sets whole. Without a controller only `pod_pending` can
/// hold the address.
fn release_policy(
    fw: &dyn Firewall,
    conf: &NetConf,
    ip: Ipv4Addr,
    container_id: &str,
) -> CniResult<()> {
    // A delete is looked for first: any nf_tables delete makes the next release of an
    // nfnetlink socket, anyone's, wait for an RCU grace period (see `exit_detached`).
    let unpend = |fw: &dyn Firewall| -> CniResult<()> {
        if fw.is_pending(ip)? {
            DETACH_EXIT.store(true, std::sync::atomic::Ordering::Relaxed);
            fw.unpend(ip)?;
        }
        Ok(())
    };
    if fw.policy_namespaces()?.is_none() {
        return unpend(fw);
    }
    DETACH_EXIT.store(true, std::sync::atomic::Ordering::Relaxed);
    let timeout = std::time::Duration::from_millis(kinc_types::policy_gate::RELEASE_TIMEOUT_MS)
        .min(conf.policy_timeout);
    if gate::release(&conf.policy_socket, ip, container_id, timeout) {
        unpend(fw)?;
    } else {
        fw.purge_policy(ip)?;
    }
    Ok(())
}

/// Deletes a link without making the caller wait for it.
///
/// A netdev delete returns only after an RCU barrier (one grace period, ~20 ms here),
/// which is most of a DEL. The address and the firewall state are already released
/// when this runs, so nothing depends on the link being gone at the moment DEL
/// returns: a forked child (no exec) does the delete while the parent answers. The
/// child drops stdout/stderr first so the runtime sees EOF at once. If the child
/// fails, GC removes the link (it deletes kincnet veths of no valid attachment), and
/// an ADD for the same attachment replaces a leftover host end.
fn delete_link_detached(name: &str) -> CniResult<()> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: DEL starts no threads, so the child is a full copy of a single-threaded
    // process and may allocate and make syscalls.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            stdio_to_null();
            if let Ok(mut nl) = Netlink::open() {
                let _ = nl.del_link_by_name(name);
            }
            // SAFETY: _exit skips the parent's exit handlers, as a forked child should.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { .. }) => Ok(()),
        // No fork: delete in place and wait.
        Err(_) => nl_open()?
            .del_link_by_name(name)
            .map(drop)
            .map_err(Into::into),
    }
}

fn check_failed(msg: String) -> CniError {
    CniError::generic(msg)
}

fn check(cenv: &CniEnv, conf: &NetConf, fw: &dyn Firewall) -> CniResult<()> {
    let prev = conf.prev_result.as_ref().expect("validated");
    let want_ip = prev_ip(prev).expect("validated");
    let want_mac = prev
        .interfaces
        .iter()
        .find(|i| i.name == cenv.ifname && i.sandbox.is_some())
        .map(|i| i.mac.to_ascii_lowercase());
    let netns_path = cenv.netns.as_deref().expect("CNI_NETNS checked");
    let ns = open_pod_netns(netns_path)?;
    let record = Store::open(&conf.ipam.data_dir)?
        .get(&cenv.container_id, &cenv.ifname)
        .cloned()
        .ok_or_else(|| {
            check_failed(format!(
                "no IPAM allocation for container {} interface {}",
                cenv.container_id, cenv.ifname
            ))
        })?;
    if record.ip != want_ip.ip() {
        return Err(check_failed(format!(
            "IPAM holds {} for this container, prevResult says {}",
            record.ip, want_ip
        )));
    }
    let mut pod = Netlink::open_in(&ns).map_err(|e| {
        CniError::generic(format!("entering CNI_NETNS {}: {e}", netns_path.display()))
    })?;
    let link = pod.link_by_name(&cenv.ifname)?.ok_or_else(|| {
        check_failed(format!(
            "interface {} not found in {}",
            cenv.ifname,
            netns_path.display()
        ))
    })?;
    if let Some(m) = want_mac.filter(|m| !m.is_empty()) {
        if mac_string(&link.mac) != m {
            return Err(check_failed(format!(
                "interface {} has MAC {}, prevResult says {m}",
                cenv.ifname,
                mac_string(&link.mac)
            )));
        }
    }
    if !pod.addrs_v4(link.index)?.contains(&want_ip) {
        return Err(check_failed(format!(
            "interface {} lacks address {want_ip}",
            cenv.ifname
        )));
    }
    let have_routes = pod.routes_v4()?;
    for r in &prev.routes {
        let Ok(dst) = r.dst.parse::<Ipv4Network>() else {
            continue;
        };
        let gw = r.gw.as_deref().and_then(|g| g.parse::<Ipv4Addr>().ok());
        if !have_routes
            .iter()
            .any(|(d, g, _)| *d == dst && (gw.is_none() || *g == gw))
        {
            return Err(check_failed(format!(
                "route {} via {} missing in the pod",
                r.dst,
                r.gw.as_deref().unwrap_or("-")
            )));
        }
    }
    let mut nl = nl_open()?;
    let host = host_veth_name(&cenv.container_id, &cenv.ifname);
    let bridge = nl.link_by_name(&conf.bridge)?;
    match (nl.link_by_name(&host)?, bridge) {
        (Some(h), Some(b)) if h.controller == Some(b.index) => {}
        (None, _) => return Err(check_failed(format!("host veth {host} not found"))),
        _ => {
            return Err(check_failed(format!(
                "host veth {host} is not a port of bridge {}",
                conf.bridge
            )))
        }
    }
    let mut want: Vec<PortMapping> = conf.port_mappings.clone();
    let mut have = fw.pod_mappings(want_ip.ip())?;
    want.sort();
    want.dedup();
    have.sort();
    have.dedup();
    if want != have {
        return Err(check_failed(format!(
            "port mappings of {} differ: runtime asks for {}, firewall has {}",
            want_ip.ip(),
            serde_json::to_string(&want).unwrap_or_default(),
            serde_json::to_string(&have).unwrap_or_default()
        )));
    }
    Ok(())
}

fn status(conf: &NetConf) -> CniResult<()> {
    let not_available = |msg: String| CniError::new(Code::NotAvailable, msg);
    let store = Store::open(&conf.ipam.data_dir).map_err(|e| not_available(e.msg))?;
    store.probe_writable().map_err(|e| not_available(e.msg))?;
    if store.free_count(&conf.ipam) == 0 {
        return Err(not_available(format!(
            "no free address left in {}-{}",
            conf.ipam.range_start, conf.ipam.range_end
        )));
    }
    nl_open().map_err(|e| not_available(e.msg))?;
    Ok(())
}

fn gc(conf: &NetConf, fw: &dyn Firewall) -> CniResult<()> {
    let valid = conf.valid_attachments.as_ref().expect("validated");
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| ipam::key(&a.container_id, &a.ifname))
        .collect();
    let keep_veths: HashSet<String> = valid
        .iter()
        .map(|a| host_veth_name(&a.container_id, &a.ifname))
        .collect();
    let mut store = Store::open(&conf.ipam.data_dir)?;
    let before: Vec<(Ipv4Addr, String)> = store
        .records()
        .map(|r| (r.ip, r.container_id.clone()))
        .collect();
    store.retain(&keep)?;
    let kept_ips: Vec<Ipv4Addr> = store.records().map(|r| r.ip).collect();
    // Every element of this subnet whose address no kept record holds: the freed
    // attachments' and any orphan (hostPort and pending elements), in one transaction.
    // Under the store's lock, so an ADD cannot be handed a freed address and map a port
    // to it in between; the freed addresses' policy verdicts go under it too.
    fw.retain_pods(&kept_ips)?;
    for (ip, cid) in before.iter().filter(|(ip, _)| !kept_ips.contains(ip)) {
        release_policy(fw, conf, *ip, cid)?;
    }
    drop(store);
    // Host ends left behind (a killed ADD, a DEL that never came): kincnet's names on
    // this network's bridge that belong to no valid attachment.
    let mut nl = nl_open()?;
    if let Some(b) = nl.link_by_name(&conf.bridge)? {
        for l in nl.links()? {
            if l.controller == Some(b.index)
                && l.name.starts_with("kn")
                && l.name.len() == 14
                && !keep_veths.contains(&l.name)
            {
                match nl.del_link_by_name(&l.name) {
                    Ok(_) => {}
                    Err(e) if e.is(libc::ENODEV) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Whether the netns at `path` still exists (used by tests and diagnostics).
pub fn netns_exists(path: &Path) -> bool {
    !matches!(File::open(path), Err(e) if e.kind() == ErrorKind::NotFound)
}
