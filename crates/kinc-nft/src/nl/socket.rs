//! A NETLINK_NETFILTER socket: batched transactions with per-message ACKs, dumps, gets.
//!
//! The socket is opened in the calling thread's network namespace and lives as long as
//! the value; every request is answered before the call returns.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::attr::Attrs;
use super::consts::*;
use super::error::Error;
use super::msg::{Msg, NFGENMSG_LEN, NLMSG_HDRLEN};

/// One reply message: its nfgenmsg family and the attribute bytes after it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub kind: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
}

impl Reply {
    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::new(&self.attrs)
    }
}

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// Set when a conversation failed below the kernel's answer (I/O error, malformed
    /// reply): unread replies may be left, so the socket is not reused.
    broken: bool,
}

fn sock_err(op: &'static str) -> Error {
    Error::Socket {
        op,
        source: io::Error::last_os_error(),
    }
}

fn setopt(fd: i32, level: i32, opt: i32, val: i32) -> bool {
    // SAFETY: valid fd, pointer to a live c_int with its exact size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

/// Send buffer asked for at open: room for batches of some 50,000 elements.
const SNDBUF_DEFAULT: usize = 4 << 20;

/// Sets a socket buffer size: `force` (root, ignores the sysctl caps), else `plain`
/// (capped by `net.core.{w,r}mem_max`). Returns whether either worked.
fn set_buf(fd: i32, force: i32, plain: i32, bytes: usize) -> bool {
    let v = i32::try_from(bytes).unwrap_or(i32::MAX);
    setopt(fd, libc::SOL_SOCKET, force, v) || setopt(fd, libc::SOL_SOCKET, plain, v)
}

/// The send buffer the kernel granted (it reports twice what was asked).
fn get_buf(fd: i32, opt: i32) -> usize {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid fd, pointer to a live c_int and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        usize::try_from(v).unwrap_or(0)
    } else {
        0
    }
}

/// A decoded netlink message header + payload, borrowed from the receive buffer.
struct Raw<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn split_msgs(mut buf: &[u8]) -> Vec<Raw<'_>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        out.push(Raw {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// errno and extended-ack message of an NLMSG_ERROR payload (`struct nlmsgerr`: i32
/// error, then the request's header; with NLM_F_ACK_TLVS, attributes after that).
fn parse_error(flags: u16, p: &[u8]) -> Option<(i32, Option<String>)> {
    let err = i32::from_ne_bytes(p.get(..4)?.try_into().ok()?);
    let mut ext = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK only the request header is echoed.
        let echoed_len = u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?) as usize;
        let skip = if flags & 0x100 != 0 {
            NLMSG_HDRLEN
        } else {
            echoed_len
        };
        if let Some(tlvs) = p.get(4 + ((skip + 3) & !3)..) {
            ext = Attrs::new(tlvs).find(NLMSGERR_ATTR_MSG).map(|a| a.string());
        }
    }
    Some((-err, ext))
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Socket, Error> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(sock_err("socket(AF_NETLINK, NETLINK_NETFILTER)"));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Errors echo only the header (small acks even for big batches), and carry the
        // kernel's explanation when it has one. Both are best effort on old kernels.
        setopt(raw, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        setopt(raw, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        // Room for the acks of a large batch, and for the batch itself: a whole
        // transaction must go in one sendto (nfnetlink reads BEGIN..END from one skb),
        // and netlink refuses a message larger than the send buffer with EMSGSIZE.
        // `commit` grows the send buffer further when a batch needs it.
        set_buf(raw, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 4 << 20);
        set_buf(raw, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF_DEFAULT);
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: valid fd and timeval; a receive that hangs becomes EAGAIN, not a hang.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sock_err("bind"));
        }
        // Sequence numbers only need to be unique per socket; start somewhere random-ish
        // so stale replies of an earlier socket could never match.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1)
            | 1;
        Ok(Socket {
            fd,
            seq,
            buf: vec![0; 1 << 16],
            broken: false,
        })
    }

    /// Grows the send buffer so that one `len`-byte batch fits (netlink wants
    /// `len <= sk_sndbuf - 32`); if the kernel does not allow it, `sendto` reports EMSGSIZE.
    fn fit_sndbuf(&self, len: usize) {
        let fd = self.fd.as_raw_fd();
        if get_buf(fd, libc::SO_SNDBUF) >= len + 4096 {
            return;
        }
        set_buf(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, len + 4096);
    }

    /// The send buffer in bytes, as the kernel reports it.
    pub fn sndbuf(&self) -> usize {
        get_buf(self.fd.as_raw_fd(), libc::SO_SNDBUF)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: bytes and addr are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(sock_err("sendto"));
            }
        }
    }

    /// One datagram (possibly several messages); `Ok(None)` when `nonblock` and empty.
    fn recv(&mut self, nonblock: bool) -> Result<Option<usize>, Error> {
        let flags = if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags | libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > self.buf.len() {
                    // Grow and let the caller see a clean error; this cannot happen with
                    // nf_tables' own message sizes but must not be silently truncated.
                    self.buf.resize(n, 0);
                    return Err(Error::Socket {
                        op: "recv (reply larger than buffer)",
                        source: io::Error::from_raw_os_error(libc::EMSGSIZE),
                    });
                }
                return Ok(Some(n));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if nonblock => return Ok(None),
                _ => return Err(sock_err("recv")),
            }
        }
    }

    /// Applies `msgs` as ONE transaction (BATCH_BEGIN .. BATCH_END). Every message asks
    /// for an ACK; the first refusal (by position in the batch) is returned and nothing
    /// of the batch is applied. With `genid`, the kernel refuses the whole batch with
    /// ERESTART if the ruleset changed since that generation was read.
    pub fn commit(&mut self, msgs: &[Msg], genid: Option<u32>) -> Result<(), Error> {
        let r = self.commit_inner(msgs, genid);
        self.note(&r);
        r
    }

    /// Whether an earlier failure may have left the socket out of step with the kernel.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn note<T>(&mut self, r: &Result<T, Error>) {
        if matches!(r, Err(Error::Socket { .. } | Error::Malformed { .. })) {
            self.broken = true;
        }
    }

    fn commit_inner(&mut self, msgs: &[Msg], genid: Option<u32>) -> Result<(), Error> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut out =
            Vec::with_capacity(256 + msgs.iter().map(|m| m.attrs.len() + 32).sum::<usize>());
        let begin_seq = self.next_seq();
        let mut begin_attrs = super::attr::AttrWriter::new();
        if let Some(g) = genid {
            begin_attrs.be32(NFNL_BATCH_GENID, g);
        }
        let begin = Msg {
            kind: NFNL_MSG_BATCH_BEGIN,
            flags: NLM_F_REQUEST,
            family: NFPROTO_UNSPEC,
            attrs: begin_attrs.into_bytes(),
            what: "transaction".into(),
        };
        begin.encode(begin_seq, NFNL_SUBSYS_NFTABLES, &mut out);
        let mut pending: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, m) in msgs.iter().enumerate() {
            let seq = self.next_seq();
            debug_assert!(m.flags & NLM_F_ACK != 0, "{} lacks NLM_F_ACK", m.what);
            pending.insert(seq, i);
            m.encode(seq, 0, &mut out);
        }
        let end = Msg {
            kind: NFNL_MSG_BATCH_END,
            ..begin
        };
        let end_seq = self.next_seq();
        let mut end_msg = end;
        end_msg.attrs.clear();
        end_msg.encode(end_seq, NFNL_SUBSYS_NFTABLES, &mut out);
        self.fit_sndbuf(out.len());
        self.send(&out)?;

        let mut failures: Vec<(usize, i32, Option<String>)> = Vec::new();
        let mut batch_err: Option<(i32, Option<String>)> = None;
        // The kernel handles the batch inside sendto and queues every answer before it
        // returns; block only while answers are still missing, then drain what is left.
        loop {
            let nonblock = pending.is_empty() || !failures.is_empty() || batch_err.is_some();
            let Some(n) = self.recv(nonblock)? else { break };
            for raw in split_msgs(&self.buf[..n]) {
                if raw.kind != NLMSG_ERROR {
                    continue;
                }
                let Some((errno, ext)) = parse_error(raw.flags, raw.payload) else {
                    continue;
                };
                if raw.seq == begin_seq || raw.seq == end_seq {
                    if errno != 0 {
                        batch_err = Some((errno, ext));
                    }
                } else if let Some(i) = pending.remove(&raw.seq) {
                    if errno != 0 {
                        failures.push((i, errno, ext));
                    }
                }
            }
        }
        failures.sort_by_key(|f| f.0);
        if let Some((i, errno, ext)) = failures.into_iter().next() {
            return Err(Error::Kernel {
                what: msgs[i].what.clone(),
                errno,
                ext,
            });
        }
        if let Some((errno, ext)) = batch_err {
            let what = if errno == libc::ERESTART {
                "transaction (the ruleset changed since it was read)".to_string()
            } else {
                format!("transaction of {} message(s)", msgs.len())
            };
            return Err(Error::Kernel { what, errno, ext });
        }
        if !pending.is_empty() {
            return Err(Error::Malformed {
                what: "transaction".into(),
                why: "the kernel did not acknowledge every message",
            });
        }
        Ok(())
    }

    /// Sends a GET (dump or not) and collects the replies. A dump interrupted by a
    /// concurrent change (NLM_F_DUMP_INTR) is retried.
    pub fn request(&mut self, msg: &Msg) -> Result<Vec<Reply>, Error> {
        for _ in 0..8 {
            let r = self.request_once(msg);
            self.note(&r);
            if let Some(replies) = r? {
                return Ok(replies);
            }
        }
        Err(Error::Kernel {
            what: msg.what.clone(),
            errno: libc::EINTR,
            ext: Some("dump kept being interrupted by concurrent changes".into()),
        })
    }

    fn request_once(&mut self, msg: &Msg) -> Result<Option<Vec<Reply>>, Error> {
        let seq = self.next_seq();
        let dump = msg.flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut m = msg.clone();
        // A non-dump GET is answered by its replies then an ACK, so we know when it ends.
        m.flags |= NLM_F_ACK;
        let mut out = Vec::new();
        m.encode(seq, 0, &mut out);
        self.send(&out)?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let Some(n) = self.recv(false)? else { continue };
            for raw in split_msgs(&self.buf[..n]) {
                if raw.seq != seq {
                    continue;
                }
                if raw.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match raw.kind {
                    NLMSG_DONE => {
                        return Ok(if interrupted { None } else { Some(replies) });
                    }
                    NLMSG_ERROR => {
                        let (errno, ext) =
                            parse_error(raw.flags, raw.payload).ok_or_else(|| {
                                Error::Malformed {
                                    what: msg.what.clone(),
                                    why: "short error message",
                                }
                            })?;
                        if errno != 0 {
                            return Err(Error::Kernel {
                                what: msg.what.clone(),
                                errno,
                                ext,
                            });
                        }
                        if !dump {
                            return Ok(Some(replies));
                        }
                    }
                    kind => {
                        if raw.payload.len() < NFGENMSG_LEN {
                            return Err(Error::Malformed {
                                what: msg.what.clone(),
                                why: "reply shorter than nfgenmsg",
                            });
                        }
                        replies.push(Reply {
                            kind: kind & 0xff,
                            family: raw.payload[0],
                            attrs: raw.payload[NFGENMSG_LEN..].to_vec(),
                        });
                    }
                }
            }
        }
    }

    /// The current ruleset generation, for [`Socket::commit`]'s guard.
    pub fn genid(&mut self) -> Result<u32, Error> {
        let msg = super::msg::getgen_msg();
        let replies = self.request(&msg)?;
        replies
            .iter()
            .find_map(|r| r.attrs().find(NFTA_GEN_ID).and_then(|a| a.be32()))
            .ok_or(Error::Malformed {
                what: msg.what,
                why: "no NFTA_GEN_ID",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_with_capped_ack_and_ext_msg() {
        // nlmsgerr: error = -2, echoed header (16 bytes), then NLMSGERR_ATTR_MSG "nope".
        let mut p = Vec::new();
        p.extend_from_slice(&(-2i32).to_ne_bytes());
        p.extend_from_slice(&[40, 0, 0, 0, 0, 10, 5, 4, 1, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[9, 0, 1, 0, b'n', b'o', b'p', b'e', 0, 0, 0, 0]);
        let (errno, ext) = parse_error(0x100 | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(errno, 2);
        assert_eq!(ext.as_deref(), Some("nope"));
    }

    #[test]
    fn splits_multiple_messages() {
        let mut buf = Vec::new();
        for seq in [1u32, 2] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&0i32.to_ne_bytes());
        }
        let v = split_msgs(&buf);
        assert_eq!(v.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    }
}
