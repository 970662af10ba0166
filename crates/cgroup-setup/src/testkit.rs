//! Test doubles: a cgroupfs laid out as plain files in a temp dir (for planning), and an
//! in-memory kernel that enforces cgroup v2's rules (for the apply loop).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::controllers::{enable_line, parse_list, ControllerSet};
use crate::fs::{child, Cgroupfs, ProcInfo, ProcKind};

pub const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc";

/// Writes a cgroup directory with the interface files planning reads. `nested_root`
/// adds `cgroup.events` at the root, as a namespace root has.
pub fn cg_dir(root: &Path, cg: &str, controllers: &str, subtree: &str, procs: &[u32]) {
    let d = root.join(cg.trim_start_matches('/'));
    std::fs::create_dir_all(&d).unwrap();
    let w = |f: &str, s: String| std::fs::write(d.join(f), s).unwrap();
    w("cgroup.controllers", format!("{controllers}\n"));
    w("cgroup.subtree_control", format!("{subtree}\n"));
    w(
        "cgroup.procs",
        procs.iter().map(|p| format!("{p}\n")).collect(),
    );
    if cg != "/" {
        w("cgroup.type", "domain\n".into());
        w("cgroup.events", "populated 0\nfrozen 0\n".into());
    }
}

/// procfs with `stat` files: `users` are user processes, `kthreads` kernel threads.
pub fn proc_dir(root: &Path, users: &[u32], kthreads: &[u32]) {
    for (pids, flags) in [(users, 4194560u64), (kthreads, 2129984)] {
        for p in pids {
            let d = root.join(p.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{p} (x) S 0 0 0 0 -1 {flags} 0 0 0 0\n"),
            )
            .unwrap();
        }
    }
}

#[derive(Default)]
struct Cg {
    procs: BTreeSet<u32>,
    subtree: ControllerSet,
}

/// A hook run on reads of a cgroup's `cgroup.procs`: (cgroup, nth read) -> pids that
/// appear in it right then, as a fork or a `podman exec` would.
type Arrivals = Box<dyn Fn(&str, usize) -> Vec<u32>>;

/// An in-memory cgroup v2 kernel with the rules that matter here: a non-root cgroup
/// with processes can't enable controllers (EBUSY, all-or-nothing), a process can't
/// enter a cgroup that has controllers enabled for children (EBUSY), a controller must
/// be enabled in the parent first (ENOENT), exited pids give ESRCH.
pub struct FakeKernel {
    cgs: RefCell<BTreeMap<String, Cg>>,
    available: ControllerSet,
    nested: bool,
    /// pids listed in cgroup.procs that exit before they can be moved.
    pub dying: RefCell<BTreeSet<u32>>,
    pub kthreads: BTreeSet<u32>,
    reads: RefCell<BTreeMap<String, usize>>,
    arrivals: Option<Arrivals>,
    pub writes: RefCell<Vec<(String, String, String)>>,
    /// pids that join a cgroup right before its next `cgroup.subtree_control` write.
    pub race_on_enable: RefCell<Vec<u32>>,
    /// errno for every write to `cgroup.procs` (a read-only mount: EROFS).
    pub fail_moves: RefCell<Option<i32>>,
}

impl FakeKernel {
    pub fn new(available: &str, nested: bool) -> Self {
        let mut cgs = BTreeMap::new();
        cgs.insert("/".to_string(), Cg::default());
        Self {
            cgs: RefCell::new(cgs),
            available: parse_list(available),
            nested,
            dying: RefCell::default(),
            kthreads: BTreeSet::new(),
            reads: RefCell::default(),
            arrivals: None,
            writes: RefCell::default(),
            race_on_enable: RefCell::default(),
            fail_moves: RefCell::default(),
        }
    }

    pub fn with_arrivals(mut self, f: impl Fn(&str, usize) -> Vec<u32> + 'static) -> Self {
        self.arrivals = Some(Box::new(f));
        self
    }

    pub fn add(&self, cg: &str, pids: &[u32]) {
        let mut cgs = self.cgs.borrow_mut();
        cgs.entry(cg.to_string())
            .or_default()
            .procs
            .extend(pids.iter().copied());
    }

    pub fn procs(&self, cg: &str) -> Vec<u32> {
        self.cgs.borrow()[cg].procs.iter().copied().collect()
    }

    pub fn subtree(&self, cg: &str) -> String {
        crate::controllers::join(&self.cgs.borrow()[cg].subtree)
    }

    fn controllers(&self, cg: &str) -> ControllerSet {
        if cg == "/" {
            return self.available.clone();
        }
        let parent = match cg.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((p, _)) => p.to_string(),
            None => "/".to_string(),
        };
        self.cgs.borrow()[&parent].subtree.clone()
    }

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }
}

impl Cgroupfs for FakeKernel {
    fn read(&self, cg: &str, file: &str) -> io::Result<String> {
        if !self.exists(cg) {
            return Err(Self::err(libc::ENOENT));
        }
        match file {
            "cgroup.procs" => {
                let n = {
                    let mut r = self.reads.borrow_mut();
                    let n = r.entry(cg.to_string()).or_default();
                    *n += 1;
                    *n
                };
                if let Some(f) = &self.arrivals {
                    let new = f(cg, n);
                    self.add(cg, &new);
                }
                Ok(self.procs(cg).iter().map(|p| format!("{p}\n")).collect())
            }
            "cgroup.controllers" => Ok(format!(
                "{}\n",
                crate::controllers::join(&self.controllers(cg))
            )),
            "cgroup.subtree_control" => Ok(format!("{}\n", self.subtree(cg))),
            "cgroup.type" if cg != "/" => Ok("domain\n".into()),
            _ => Err(Self::err(libc::ENOENT)),
        }
    }

    fn write(&self, cg: &str, file: &str, data: &str) -> io::Result<()> {
        self.writes
            .borrow_mut()
            .push((cg.to_string(), file.to_string(), data.to_string()));
        let is_root = cg == "/";
        match file {
            "cgroup.procs" => {
                if let Some(code) = *self.fail_moves.borrow() {
                    return Err(Self::err(code));
                }
                let pid: u32 = data.trim().parse().map_err(|_| Self::err(libc::EINVAL))?;
                if self.dying.borrow_mut().remove(&pid) {
                    for c in self.cgs.borrow_mut().values_mut() {
                        c.procs.remove(&pid);
                    }
                    return Err(Self::err(libc::ESRCH));
                }
                if self.kthreads.contains(&pid) {
                    return Err(Self::err(libc::EINVAL));
                }
                let mut cgs = self.cgs.borrow_mut();
                if !is_root && !cgs[cg].subtree.is_empty() {
                    return Err(Self::err(libc::EBUSY));
                }
                for c in cgs.values_mut() {
                    c.procs.remove(&pid);
                }
                cgs.get_mut(cg).unwrap().procs.insert(pid);
                Ok(())
            }
            "cgroup.subtree_control" => {
                let racers: Vec<u32> = self.race_on_enable.borrow_mut().drain(..).collect();
                self.add(cg, &racers);
                let avail = self.controllers(cg);
                let mut add = ControllerSet::new();
                for tok in data.split_whitespace() {
                    let name = tok
                        .strip_prefix('+')
                        .ok_or_else(|| Self::err(libc::EINVAL))?;
                    if !avail.contains(name) {
                        return Err(Self::err(libc::ENOENT));
                    }
                    add.insert(name.to_string());
                }
                let mut cgs = self.cgs.borrow_mut();
                let me = cgs.get_mut(cg).unwrap();
                if (!is_root || self.nested) && !me.procs.is_empty() && !add.is_empty() {
                    return Err(Self::err(libc::EBUSY));
                }
                me.subtree.extend(add);
                Ok(())
            }
            _ => Err(Self::err(libc::EACCES)),
        }
    }

    fn mkdir(&self, cg: &str) -> io::Result<()> {
        self.cgs.borrow_mut().entry(cg.to_string()).or_default();
        Ok(())
    }

    fn exists(&self, cg: &str) -> bool {
        self.cgs.borrow().contains_key(cg)
    }

    fn has_file(&self, cg: &str, file: &str) -> bool {
        match file {
            "cgroup.events" | "cgroup.type" => cg != "/" || self.nested,
            _ => self.exists(cg),
        }
    }

    fn path(&self, cg: &str, file: &str) -> PathBuf {
        PathBuf::from("/fake").join(child(cg, file).trim_start_matches('/'))
    }
}

impl ProcInfo for FakeKernel {
    fn kind(&self, pid: u32) -> ProcKind {
        if self.kthreads.contains(&pid) {
            ProcKind::Kernel
        } else if self.cgs.borrow().values().any(|c| c.procs.contains(&pid)) {
            ProcKind::User
        } else {
            ProcKind::Gone
        }
    }
}

/// `+a +b` for expected writes.
pub fn plus(list: &str) -> String {
    enable_line(&parse_list(list))
}
