//! The apply loop against an in-memory kernel that enforces cgroup v2's rules.

use super::*;
use crate::plan::{plan, Options};
use crate::testkit::{plus, FakeKernel, ALL};

const ALL_SORTED: &str = "cpu cpuset hugetlb io memory misc pids rdma";

/// Applies a fresh plan; the changes come back in both cases.
fn run_apply(k: &FakeKernel) -> Result<Changes, Box<(Error, Changes)>> {
    let p = plan(k, k, None, &Options::default()).unwrap();
    let mut c = Changes::default();
    match apply(k, k, &p, &mut c) {
        Ok(()) => Ok(c),
        Err(e) => Err(Box::new((e, c))),
    }
}

#[test]
fn nested_root_is_emptied_then_enabled_in_one_write_per_cgroup() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1, 40, 41]);
    let c = run_apply(&k).unwrap();
    assert!(k.procs("/").is_empty());
    assert_eq!(k.procs("/init.scope"), [1, 40, 41]);
    assert_eq!(k.subtree("/"), ALL_SORTED);
    assert_eq!(k.subtree("/kubelet"), ALL_SORTED);
    let sc: Vec<_> = k
        .writes
        .borrow()
        .iter()
        .filter(|w| w.1 == "cgroup.subtree_control")
        .map(|w| (w.0.clone(), w.2.clone()))
        .collect();
    assert_eq!(
        sc,
        [
            ("/".to_string(), plus(ALL)),
            ("/kubelet".to_string(), plus(ALL))
        ],
        "one write per cgroup, no retries"
    );
    assert_eq!(c.created, ["/init.scope", "/kubelet"]);
    assert_eq!(c.moved.len(), 3);
}

#[test]
fn second_apply_changes_nothing() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1]);
    run_apply(&k).unwrap();
    let writes = k.writes.borrow().len();
    let p = plan(&k, &k, None, &Options::default()).unwrap();
    assert!(p.is_noop());
    let c = run_apply(&k).unwrap();
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(k.writes.borrow().len(), writes, "no write at all");
}

#[test]
fn processes_arriving_while_it_works_are_moved_too() {
    // A fork storm: the first five reads of the root's cgroup.procs each find a newcomer.
    let k = FakeKernel::new(ALL, true).with_arrivals(|cg, n| {
        if cg == "/" && n <= 5 {
            vec![100 + n as u32]
        } else {
            vec![]
        }
    });
    k.add("/", &[1]);
    let c = run_apply(&k).unwrap();
    assert!(k.procs("/").is_empty());
    assert_eq!(k.procs("/init.scope").len(), 6);
    assert_eq!(c.moved.len(), 6);
    assert_eq!(k.subtree("/kubelet"), ALL_SORTED);
}

#[test]
fn exited_processes_are_skipped() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1, 7]);
    k.dying.borrow_mut().insert(7);
    let c = run_apply(&k).unwrap();
    let moved: Vec<_> = c.moved.iter().map(|m| m.pid).collect();
    assert_eq!(moved, [1], "pid 7 exited: ESRCH ignored");
    assert_eq!(k.subtree("/"), ALL_SORTED);
}

#[test]
fn a_process_that_never_stops_coming_back_is_an_error_not_a_hang() {
    let k = FakeKernel::new(ALL, true).with_arrivals(|cg, n| {
        if cg == "/" {
            vec![1000 + n as u32]
        } else {
            vec![]
        }
    });
    let (e, c) = *run_apply(&k).unwrap_err();
    assert!(matches!(e, Error::KeepAppearing { .. }), "{e}");
    assert!(e.to_string().contains("/init.scope"), "{e}");
    // Everything moved so far is in the leaf, below where it was: nothing stranded.
    assert!(c.moved.iter().all(|m| m.to == "/init.scope"));
    assert_eq!(k.subtree("/"), "", "nothing enabled on failure");
}

#[test]
fn real_root_keeps_kernel_threads_and_sweeps_late_arrivals() {
    let mut k = FakeKernel::new(ALL, false);
    k.kthreads.insert(2);
    k.add("/", &[1, 2]);
    // The real root is exempt from the no-internal-process rule, so a process can land
    // there after the controllers are on; the final sweep catches it.
    let k = k.with_arrivals(|cg, n| {
        if cg == "/" && n == 3 {
            vec![77]
        } else {
            vec![]
        }
    });
    run_apply(&k).unwrap();
    assert_eq!(k.procs("/"), [2], "only the kernel thread stays");
    assert_eq!(k.procs("/init.scope"), [1, 77]);
}

#[test]
fn ebusy_from_a_late_arrival_is_retried_after_evacuating_again() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[1]);
    // pid 55 joins / between the evacuation's last read and the subtree_control write.
    k.race_on_enable.borrow_mut().push(55);
    let c = run_apply(&k).unwrap();
    assert!(k.procs("/").is_empty());
    assert!(c.moved.iter().any(|m| m.pid == 55 && m.to == "/init.scope"));
    assert_eq!(k.subtree("/"), ALL_SORTED);
    let root_writes = k
        .writes
        .borrow()
        .iter()
        .filter(|w| w.0 == "/" && w.1 == "cgroup.subtree_control")
        .count();
    assert_eq!(root_writes, 2, "EBUSY once, then success");
}

#[test]
fn a_move_refused_by_the_kernel_stops_with_the_pid_and_cgroups() {
    let k = FakeKernel::new(ALL, true);
    k.add("/", &[5]);
    *k.fail_moves.borrow_mut() = Some(libc::EROFS);
    let (e, c) = *run_apply(&k).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("pid 5") && msg.contains("from cgroup /") && msg.contains("/init.scope"),
        "{msg}"
    );
    assert!(e.hint().unwrap().contains("read-write"));
    assert_eq!(k.procs("/"), [5], "still where it was");
    assert_eq!(k.subtree("/"), "", "nothing enabled");
    assert!(c.moved.is_empty());
}
