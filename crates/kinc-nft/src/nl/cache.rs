//! One nf_tables socket per thread and network namespace, kept open between calls.
//!
//! Why: closing a NETLINK_NETFILTER socket makes the kernel flush the namespace's
//! deferred nf_tables destroy work first (`nft_rcv_nl_event`), and after any delete
//! (element, rule) that work includes an RCU grace period: 5-25 ms here. A socket kept
//! open moves that wait to thread exit, where it overlaps whatever the caller does
//! next (a CNI DEL deleting its veth, which waits for a grace period of its own).

use std::cell::RefCell;
use std::ffi::CString;

use super::error::Error;
use super::socket::Socket;

thread_local! {
    static SOCKETS: RefCell<Vec<((u64, u64), Socket)>> = const { RefCell::new(Vec::new()) };
}

/// (st_dev, st_ino) of the calling thread's network namespace.
fn netns_id() -> Result<(u64, u64), Error> {
    let path = CString::new("/proc/thread-self/ns/net").expect("no NUL");
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and stat buffer.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        return Err(Error::Socket {
            op: "stat /proc/thread-self/ns/net",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((st.st_dev, st.st_ino))
}

/// Runs `f` with this thread's socket for its current network namespace, opening one
/// if needed. A socket whose conversation failed below the kernel's answer (I/O error,
/// malformed reply) is not kept.
pub fn with_socket<T, E: From<Error>>(f: impl FnOnce(&mut Socket) -> Result<T, E>) -> Result<T, E> {
    let Ok(id) = netns_id() else {
        // No /proc: still work, just without reuse.
        let mut sock = Socket::open()?;
        return f(&mut sock);
    };
    let cached = SOCKETS.with(|c| {
        let mut c = c.borrow_mut();
        c.iter()
            .position(|(k, _)| *k == id)
            .map(|i| c.swap_remove(i).1)
    });
    let mut sock = match cached {
        Some(s) => s,
        None => Socket::open()?,
    };
    let r = f(&mut sock);
    if !sock.is_broken() {
        SOCKETS.with(|c| c.borrow_mut().push((id, sock)));
    }
    r
}

/// Closes this thread's cached sockets now (each close may wait for the kernel, see
/// the module docs). Otherwise they close when the thread exits.
pub fn close_cached_sockets() {
    let all = SOCKETS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    drop(all);
}
