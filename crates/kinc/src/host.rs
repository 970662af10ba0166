//! What kinc learns from the machine it runs on, other than through commands (the
//! [`Runner`](crate::runner::Runner)) and the routes file: who runs it, its limits, the
//! files `kinc doctor` reads, the 127.0.0.1 ports and the clock waits run on. The `kinc`
//! binary gathers it once ([`Host::gather`]) and hands it to [`Kinc`](crate::Kinc); tests
//! give a fake, so no unit test depends on who runs it, on which machine, or on real time.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Probes a 127.0.0.1 port.
pub type PortProbe = Box<dyn Fn(u16) -> bool>;

/// Monotonic time and sleeping for kinc's waits: real in the binary, simulated in tests
/// so a wait of minutes runs at once and a test can act at a given moment of it.
pub trait Clock {
    /// Time since a fixed origin; never goes back.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The machine's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

pub struct Host {
    /// Root of the files doctor's checks read (`/sys`, `/proc`, `/etc`, `/dev/fuse`):
    /// `/` for real, a temp tree in tests.
    pub root: PathBuf,
    pub uid: u32,
    pub user: String,
    pub nofile_hard: u64,
    /// Whether 127.0.0.1:port can be bound now (nothing listens there).
    pub port_free: PortProbe,
    /// Whether something accepts connections on 127.0.0.1:port (the node's API server).
    pub port_answers: PortProbe,
    /// What `kinc create --wait` polls by.
    pub clock: Box<dyn Clock>,
}

impl Host {
    /// The machine this process runs on, as the user it runs as.
    pub fn gather() -> Host {
        // SAFETY: getuid has no preconditions; getrlimit writes only into `lim`.
        let uid = unsafe { libc::getuid() };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: see above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Host {
            root: PathBuf::from("/"),
            uid,
            user: user_name(std::env::var("USER").ok(), &passwd, uid),
            nofile_hard: lim.rlim_max,
            port_free: Box::new(port_is_free),
            port_answers: Box::new(port_answers),
            clock: Box::new(SystemClock::new()),
        }
    }

    pub fn rootless(&self) -> bool {
        self.uid != 0
    }

    /// `p` (absolute) under [`Host::root`].
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Whether `/dev/fuse` exists (fuse-overlayfs in the node needs it).
    pub fn has_fuse(&self) -> bool {
        self.path("/dev/fuse").exists()
    }

    pub fn port_free(&self, port: u16) -> bool {
        (self.port_free)(port)
    }

    pub fn port_answers(&self, port: u16) -> bool {
        (self.port_answers)(port)
    }
}

/// Whether 127.0.0.1:port can be bound right now (nothing listens there).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether something accepts connections on 127.0.0.1:port (the API server's TLS
/// handshake is `kinc test`'s business).
pub fn port_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// `$USER` when set, else the name `/etc/passwd` (its text) gives `uid`, else the uid.
pub fn user_name(env_user: Option<String>, passwd: &str, uid: u32) -> String {
    if let Some(u) = env_user.filter(|u| !u.is_empty()) {
        return u;
    }
    passwd
        .lines()
        .find_map(|l| {
            let p: Vec<&str> = l.split(':').collect();
            (p.len() > 2 && p[2] == uid.to_string()).then(|| p[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// A fake host for unit tests: a healthy rootless machine (cgroup v2 with every
/// controller delegated, subordinate ids, lingering, sysctls, nf_tables modules,
/// `/dev/fuse`) under `root`, every port free and none answering.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::{Cell, RefCell};
    use std::path::Path;
    use std::rc::Rc;

    use super::*;

    type SleepHook = Rc<RefCell<Box<dyn FnMut(Duration)>>>;

    /// A clock that moves only when slept on. Clones share the time, so a test keeps one
    /// and hands the other to the host.
    #[derive(Clone)]
    pub struct FakeClock {
        now: Rc<Cell<Duration>>,
        sleeps: Rc<Cell<u32>>,
        on_sleep: SleepHook,
    }

    impl Default for FakeClock {
        fn default() -> Self {
            Self::with(|_| {})
        }
    }

    impl FakeClock {
        /// `on_sleep` runs after each sleep with the new time: how a test changes the
        /// world at a moment of a wait.
        pub fn with(on_sleep: impl FnMut(Duration) + 'static) -> Self {
            Self {
                now: Rc::new(Cell::new(Duration::ZERO)),
                sleeps: Rc::new(Cell::new(0)),
                on_sleep: Rc::new(RefCell::new(Box::new(on_sleep))),
            }
        }

        /// How many times it was slept on.
        pub fn sleeps(&self) -> u32 {
            self.sleeps.get()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.now.get()
        }

        fn sleep(&self, d: Duration) {
            self.now.set(self.now.get() + d);
            self.sleeps.set(self.sleeps.get() + 1);
            (self.on_sleep.borrow_mut())(self.now.get());
        }
    }

    pub const UID: u32 = 1000;
    pub const USER: &str = "alice";

    pub fn put(root: &Path, p: &str, text: &str) {
        let p = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn healthy(root: &Path) -> Host {
        let r = root;
        let all = "cpuset cpu io memory pids";
        put(r, "/sys/fs/cgroup/cgroup.controllers", all);
        put(
            r,
            "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers",
            all,
        );
        put(
            r,
            "/sys/fs/cgroup/user.slice/user-1000.slice/pids.max",
            "max",
        );
        put(r, "/var/lib/systemd/linger/alice", "");
        put(r, "/etc/subuid", "bob:100000:65536\nalice:165536:65536\n");
        put(r, "/etc/subgid", "1000:165536:65536\n");
        put(r, "/proc/sys/fs/inotify/max_user_instances", "8192\n");
        put(r, "/proc/sys/fs/inotify/max_user_watches", "524288\n");
        put(r, "/proc/sys/kernel/keys/maxkeys", "20000\n");
        put(
            r,
            "/proc/key-users",
            "    0:    10 9/9 5/1000000 100/25000000\n 1000:     5 5/5 5/20000 50/400000\n",
        );
        put(r, "/proc/sys/net/ipv4/ip_forward", "1\n");
        for m in crate::doctor::NFT_MODULES {
            put(r, &format!("/sys/module/{m}/refcnt"), "1");
        }
        put(r, "/dev/fuse", "");
        Host {
            root: r.to_path_buf(),
            uid: UID,
            user: USER.into(),
            nofile_hard: 524288,
            port_free: Box::new(|_| true),
            port_answers: Box::new(|_| false),
            clock: Box::new(FakeClock::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_name_from_env_then_passwd_then_uid() {
        let passwd = "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";
        assert_eq!(user_name(Some("carol".into()), passwd, 1001), "carol");
        assert_eq!(user_name(Some(String::new()), passwd, 1001), "bob");
        assert_eq!(user_name(None, passwd, 1001), "bob");
        assert_eq!(user_name(None, passwd, 0), "root");
        assert_eq!(user_name(None, passwd, 4242), "4242");
        assert_eq!(user_name(None, "", 7), "7");
    }

    #[test]
    fn files_are_read_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        let mut h = fake::healthy(d.path());
        assert_eq!(h.path("/dev/fuse"), d.path().join("dev/fuse"));
        assert!(h.has_fuse() && h.rootless());
        std::fs::remove_file(d.path().join("dev/fuse")).unwrap();
        assert!(!h.has_fuse());
        h.uid = 0;
        assert!(!h.rootless());
    }
}
