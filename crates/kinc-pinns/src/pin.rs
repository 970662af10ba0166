//! Creating the namespaces, setting sysctls in them and pinning them with bind mounts.
//!
//! Order as upstream: unshare, write sysctls (so a bad sysctl fails before any mount),
//! then bind-mount each namespace file onto `<dir>/<ns>ns/<file>`. Unlike upstream,
//! a failure undoes what this run mounted and created before pinns exits.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, getppid, ForkResult, Gid, Pid, Uid};

use crate::cli::Config;
use crate::idmap::{self, IdRange};
use crate::ns::{pin_dir, pin_path, proc_ns_path, Namespace};
use crate::Error;

const PROC_SYS: &str = "/proc/sys";

fn sys(context: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let context = context.into();
    move |errno| Error::Sys { context, errno }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |err| Error::Io { context, err }
}

/// Pins the namespaces `cfg` asks for and returns the pin files, in bind order.
///
/// Forks a helper process when a user or mount namespace is asked for, so the caller
/// must be single-threaded (pinns' `main` is).
pub fn run(cfg: &Config) -> Result<Vec<PathBuf>, Error> {
    ensure_dir(&cfg.dir)?;
    let mut undo = Undo::default();
    match pin_all(cfg, &mut undo) {
        Ok(()) => Ok(undo.mounts),
        Err(error) => {
            let failures = undo.run();
            if failures.is_empty() {
                Err(error)
            } else {
                Err(Error::Cleanup {
                    error: Box::new(error),
                    failures,
                })
            }
        }
    }
}

fn pin_all(cfg: &Config, undo: &mut Undo) -> Result<(), Error> {
    let helper = if cfg.needs_helper() {
        Some(Helper::start(cfg)?)
    } else {
        unshare_and_set(cfg)?;
        None
    };
    let pid = helper.as_ref().map(|h| h.pid.as_raw());
    for &(ns, _) in &cfg.namespaces {
        if ns == Namespace::Mnt {
            make_unbindable(&pin_dir(&cfg.dir, ns))?;
        }
        let target = pin_path(&cfg.dir, ns, &cfg.file);
        bind(undo, &proc_ns_path(pid, ns), &target, ns)?;
    }
    // Dropping the helper kills it: the pins now hold its namespaces.
    drop(helper);
    Ok(())
}

fn new_flags(cfg: &Config) -> CloneFlags {
    cfg.new_namespaces()
        .fold(CloneFlags::empty(), |f, ns| f | ns.clone_flag())
}

fn names(cfg: &Config, skip_user: bool) -> String {
    let v: Vec<_> = cfg
        .new_namespaces()
        .filter(|ns| !(skip_user && *ns == Namespace::User))
        .map(Namespace::name)
        .collect();
    v.join(", ")
}

/// Moves this process into the new namespaces and sets the sysctls there: /proc/sys
/// shows the net and ipc sysctls of the namespaces of whoever opens the file.
fn unshare_and_set(cfg: &Config) -> Result<(), Error> {
    let flags = new_flags(cfg) & !CloneFlags::CLONE_NEWUSER;
    if !flags.is_empty() {
        unshare(flags).map_err(sys(format!("unshare {}", names(cfg, true))))?;
    }
    for s in &cfg.sysctls {
        s.write(Path::new(PROC_SYS))?;
    }
    Ok(())
}

/// Creates `path` (mode 0755, with parents) unless it is already a directory.
fn ensure_dir(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(io(format!("create directory {}", path.display()))),
        Err(e) => Err(io(format!("stat {}", path.display()))(e)),
    }
}

/// What this run mounted and created, to take back on failure.
#[derive(Default)]
struct Undo {
    mounts: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

impl Undo {
    /// Unmounts and removes in reverse order; returns what could not be undone.
    fn run(self) -> Vec<String> {
        let mut failures = Vec::new();
        for m in self.mounts.iter().rev() {
            if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
                failures.push(format!("unmount {}: {e}", m.display()));
            }
        }
        for f in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_file(f) {
                failures.push(format!("remove {}: {e}", f.display()));
            }
        }
        failures
    }
}

/// Bind-mounts the namespace file `src` onto `target`, creating `target` if needed
/// (CRI-O creates it first, chowned, for user-namespaced pods).
fn bind(undo: &mut Undo, src: &Path, target: &Path, ns: Namespace) -> Result<(), Error> {
    if let Some(dir) = target.parent() {
        ensure_dir(dir)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
    {
        Ok(_) => undo.created.push(target.to_path_buf()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io(format!("create {ns} pin file {}", target.display()))(e));
        }
    }
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(format!(
        "bind-mount {ns} namespace {} on {}",
        src.display(),
        target.display()
    )))?;
    undo.mounts.push(target.to_path_buf());
    Ok(())
}

/// A mount namespace can only be pinned on a mount that does not propagate into it:
/// make `<dir>/mntns` a mount point of its own, marked unbindable (as upstream).
fn make_unbindable(dir: &Path) -> Result<(), Error> {
    ensure_dir(dir)?;
    if !is_mount_point(dir)? {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(sys(format!("bind-mount {} on itself", dir.display())))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_UNBINDABLE,
        None::<&str>,
    )
    .map_err(sys(format!("make {} unbindable", dir.display())))
}

fn is_mount_point(dir: &Path) -> Result<bool, Error> {
    let canon = dir
        .canonicalize()
        .map_err(io(format!("resolve {}", dir.display())))?;
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read /proc/self/mountinfo"))?;
    let found = mount_points(&info).any(|p| Path::new(&p) == canon);
    Ok(found)
}

/// The mount point column of /proc/self/mountinfo, with its octal escapes undone.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Messages on the socket between pinns and its helper (one datagram each).
const USERNS_MADE: &str = "userns";
const MAPS_WRITTEN: &str = "mapped";
const READY: &str = "ready";
const FAILED: &str = "error: ";

fn send(sock: &OwnedFd, msg: &str) -> Result<(), Error> {
    nix::unistd::write(sock, msg.as_bytes())
        .map(drop)
        .map_err(sys("write to the namespace helper socket"))
}

/// Receives `want`; a helper failure arrives as its message, a dead peer as EOF.
fn expect(sock: &OwnedFd, want: &str, peer: &str) -> Result<(), Error> {
    let mut buf = [0u8; 4096];
    let n = loop {
        match nix::unistd::read(sock, &mut buf) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(sys(format!("read from {peer}")))?,
        }
    };
    let msg = String::from_utf8_lossy(&buf[..n]);
    if n == 0 {
        return Err(Error::Helper(format!("{peer} went away before {want:?}")));
    }
    if let Some(e) = msg.strip_prefix(FAILED) {
        return Err(Error::Helper(e.to_string()));
    }
    if msg != want {
        return Err(Error::Helper(format!(
            "{peer} sent {msg:?}, expected {want:?}"
        )));
    }
    Ok(())
}

/// A child that creates the namespaces and sits in them until pinns has bound them.
struct Helper {
    pid: Pid,
}

impl Helper {
    fn start(cfg: &Config) -> Result<Helper, Error> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair for the namespace helper"))?;
        let parent = getpid();
        // SAFETY: pinns is single-threaded, so the child may run ordinary code.
        match unsafe { fork() }.map_err(sys("fork the namespace helper"))? {
            ForkResult::Child => {
                drop(ours);
                let code = match helper_main(cfg, &theirs, parent) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = send(&theirs, &format!("{FAILED}{e}"));
                        1
                    }
                };
                // No atexit handlers or buffered output of the parent's: _exit.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let helper = Helper { pid: child };
                let peer = format!("namespace helper {child}");
                if cfg.new_namespaces().any(|n| n == Namespace::User) {
                    expect(&ours, USERNS_MADE, &peer)?;
                    // gid_map before uid_map, as upstream; both one write each.
                    write_map(child, "gid_map", cfg.gid_map.as_deref())?;
                    write_map(child, "uid_map", cfg.uid_map.as_deref())?;
                    send(&ours, MAPS_WRITTEN)?;
                }
                expect(&ours, READY, &peer)?;
                Ok(helper)
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

fn write_map(pid: Pid, file: &str, ranges: Option<&[IdRange]>) -> Result<(), Error> {
    let path = format!("/proc/{pid}/{file}");
    let text = idmap::map_file_text(ranges.unwrap_or_default());
    let res = OpenOptions::new().write(true).open(&path).and_then(|f| {
        let n = nix::unistd::write(&f, text.as_bytes())?;
        if n == text.len() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("short write ({n} bytes)")))
        }
    });
    res.map_err(io(format!("write {text:?} to {path}")))
}

/// The helper's side: user namespace first (pinns writes its maps), then the others,
/// owned by it, then the sysctls; then wait to be killed.
fn helper_main(cfg: &Config, sock: &OwnedFd, parent: Pid) -> Result<(), Error> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set parent-death signal"))?;
    // pinns may have died before the line above: then nobody would ever kill us.
    if getppid() != parent {
        return Err(Error::Helper(
            "pinns exited before its helper started".into(),
        ));
    }
    if cfg.new_namespaces().any(|n| n == Namespace::User) {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(sys("unshare user"))?;
        send(sock, USERNS_MADE)?;
        expect(sock, MAPS_WRITTEN, "pinns")?;
        let (g, u) = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(g, g, g).map_err(sys("setresgid 0 in the new user namespace"))?;
        nix::unistd::setresuid(u, u, u).map_err(sys("setresuid 0 in the new user namespace"))?;
    }
    unshare_and_set(cfg)?;
    send(sock, READY)?;
    loop {
        nix::unistd::pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "22 1 0:21 / / rw - ext4 /dev/sda rw\n\
                    30 22 0:4 net:[4026531840] /run/crio/ns/netns/a\\040b rw - nsfs nsfs rw\n";
        let v: Vec<_> = mount_points(info).collect();
        assert_eq!(v, ["/", "/run/crio/ns/netns/a b"]);
    }

    #[test]
    fn octal_unescape_leaves_other_backslashes() {
        assert_eq!(unescape_octal("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape_octal("a\\9b\\"), "a\\9b\\");
    }

    #[test]
    fn ensure_dir_refuses_a_file_and_creates_parents() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let e = ensure_dir(&file).unwrap_err().to_string();
        assert!(e.contains(&format!("{} exists and is not a directory", file.display())));
        let deep = d.path().join("a/b/netns");
        ensure_dir(&deep).unwrap();
        assert!(deep.is_dir());
        ensure_dir(&deep).unwrap();
    }
}
