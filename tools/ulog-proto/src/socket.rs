// SPDX-License-Identifier: GPL-2.0

//! The netlink connector socket a userspace peer of the kernel log talks on.
//!
//! The kernel multicasts every request to netlink group [`CN_IDX_DM`] of the
//! `NETLINK_CONNECTOR` family; whoever answers sends the reply back to the
//! kernel (port id 0). [`ConnectorSocket`] wraps that socket: it joins the
//! group, receives one connector message at a time with its framing checked,
//! and sends full or ack-only replies. All `unsafe` of this crate is here.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::{
    CnHeader, RequestHeader, CN_IDX_DM, CN_MSG_SIZE, CONNECTOR_MAX_MSG_SIZE, HEADER_SIZE,
};

/// Size of `struct nlmsghdr` (`NLMSG_HDRLEN`).
pub const NLMSG_HDRLEN: usize = 16;

/// A receive buffer of this size holds any message the connector can send.
pub const RECV_BUFFER_SIZE: usize = NLMSG_HDRLEN + CN_MSG_SIZE + CONNECTOR_MAX_MSG_SIZE;

/// Default socket receive buffer: room for thousands of queued requests, so a
/// burst from many mirrors is not dropped while the reader is busy.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// How to open a [`ConnectorSocket`].
#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// Open in nonblocking mode (`recv` then fails with `WouldBlock`).
    pub nonblocking: bool,
    /// Receive buffer size in bytes. Set with `SO_RCVBUFFORCE` when the
    /// caller may (root), else with `SO_RCVBUF`, which the kernel caps at
    /// `net.core.rmem_max`.
    pub rcvbuf: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            nonblocking: false,
            rcvbuf: DEFAULT_RCVBUF,
        }
    }
}

/// Who sent a received message, from its netlink source address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// Netlink port id of the sender: 0 for the kernel.
    pub port_id: u32,
    /// Multicast groups the message was sent to, as a bit mask.
    pub groups: u32,
}

impl Sender {
    /// Whether the message came from the kernel rather than a process.
    pub fn is_kernel(&self) -> bool {
        self.port_id == 0
    }
}

/// One well-formed connector message.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The sender.
    pub sender: Sender,
    /// `nlmsghdr.nlmsg_seq` (the kernel copies `cn_msg.seq` there).
    pub nlmsg_seq: u32,
    /// The connector header.
    pub cn: CnHeader,
    /// The connector payload, exactly `cn.len` bytes.
    pub body: &'a [u8],
}

/// Why a received datagram is not a usable connector message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The datagram was longer than the receive buffer (and was cut).
    Oversized {
        /// Its real length.
        len: usize,
    },
    /// Too short for `nlmsghdr` + `cn_msg`, or `nlmsg_len` disagrees with
    /// the datagram length.
    BadNetlinkLength {
        /// Bytes received.
        received: usize,
        /// `nlmsghdr.nlmsg_len`.
        nlmsg_len: u32,
    },
    /// A netlink message type other than `NLMSG_DONE`.
    UnexpectedType(u16),
    /// `cn_msg.len` claims more payload than the message holds.
    BadConnectorLength {
        /// `cn_msg.len`.
        len: u16,
        /// Payload bytes present.
        present: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Oversized { len } => write!(f, "datagram of {len} bytes exceeds the buffer"),
            Self::BadNetlinkLength {
                received,
                nlmsg_len,
            } => write!(
                f,
                "netlink length {nlmsg_len} does not fit a {received}-byte datagram"
            ),
            Self::UnexpectedType(t) => write!(f, "unexpected netlink message type {t}"),
            Self::BadConnectorLength { len, present } => write!(
                f,
                "connector length {len} exceeds the {present} payload bytes present"
            ),
        }
    }
}

/// The result of one receive.
#[derive(Debug)]
pub enum Received<'a> {
    /// A well-formed connector message.
    Message(Incoming<'a>),
    /// The socket's receive queue overflowed (`ENOBUFS`): messages were lost.
    /// Already counted in [`ConnectorSocket::overruns`]; receiving goes on.
    Overrun,
    /// A datagram that is not a well-formed connector message.
    Invalid {
        /// Its sender.
        sender: Sender,
        /// The connector header, when it could be read (to ack its `seq`).
        cn: Option<CnHeader>,
        /// What is wrong.
        error: FrameError,
    },
}

/// A `NETLINK_CONNECTOR` socket joined to the device-mapper group.
#[derive(Debug)]
pub struct ConnectorSocket {
    fd: OwnedFd,
    port_id: u32,
    overruns: AtomicU64,
}

impl ConnectorSocket {
    /// Opens the socket, sizes its receive buffer and joins group
    /// [`CN_IDX_DM`]. Needs `CAP_NET_ADMIN` (root).
    ///
    /// The bind leaves `nl_groups` empty and joins with
    /// `NETLINK_ADD_MEMBERSHIP` only: `nl_groups` is a bit mask, so binding
    /// with `CN_IDX_DM` (7) as older servers do would also join groups 1 to 3,
    /// among them the process-events connector, whose traffic could then
    /// crowd out log requests.
    pub fn open(options: SocketOptions) -> io::Result<Self> {
        Self::from_socket(Self::socket(options)?, options)
    }

    /// Creates an unbound `NETLINK_CONNECTOR` socket, for
    /// [`Self::from_socket`]. The kernel records the credentials of the
    /// caller as those of the socket's opener.
    pub fn socket(options: SocketOptions) -> io::Result<OwnedFd> {
        let mut kind = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
        if options.nonblocking {
            kind |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: socket() takes no pointers; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, kind, libc::NETLINK_CONNECTOR) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// Sets up `fd`, a socket from [`Self::socket`] (possibly created
    /// under other credentials), as [`Self::open`] does. Needs
    /// `CAP_NET_ADMIN` (root).
    pub fn from_socket(fd: OwnedFd, options: SocketOptions) -> io::Result<Self> {
        let rcvbuf = libc::c_int::try_from(options.rcvbuf).unwrap_or(libc::c_int::MAX);
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf).is_err() {
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf)?;
        }

        let addr = netlink_addr(0, 0);
        // SAFETY: `addr` is a valid sockaddr_nl and the length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                sockaddr_nl_len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        setsockopt_int(
            &fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            CN_IDX_DM as libc::c_int,
        )?;
        // Connected to the kernel (port 0): the kernel refuses unicasts to
        // this socket from any other process (they get ECONNREFUSED), so
        // only the kernel and the group's multicasts reach it.
        let kernel = netlink_addr(0, 0);
        // SAFETY: `kernel` is a valid sockaddr_nl and the length passed is its size.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&kernel as *const libc::sockaddr_nl).cast(),
                sockaddr_nl_len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }

        let mut bound = netlink_addr(0, 0);
        let mut len = sockaddr_nl_len();
        // SAFETY: `bound` is writable storage of `len` bytes for the address.
        let r = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut bound as *mut libc::sockaddr_nl).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            port_id: bound.nl_pid,
            overruns: AtomicU64::new(0),
        })
    }

    /// The netlink port id the kernel assigned to this socket.
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Number of receive-queue overflows seen so far.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }

    /// The receive buffer size the kernel granted (`SO_RCVBUF`, which the
    /// kernel reports doubled for its bookkeeping).
    pub fn rcvbuf(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` is writable storage of `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// Switches nonblocking mode on or off.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        // SAFETY: fcntl(F_GETFL) on an open descriptor takes no pointers.
        let flags = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: fcntl(F_SETFL) on an open descriptor takes no pointers.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram into `buf` (at least [`RECV_BUFFER_SIZE`]
    /// bytes to never cut a message) and checks its framing.
    ///
    /// In nonblocking mode, fails with [`io::ErrorKind::WouldBlock`] when
    /// nothing is queued. `EINTR` is retried.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Received<'b>> {
        let mut addr = netlink_addr(0, 0);
        let n = loop {
            let mut addr_len = sockaddr_nl_len();
            // SAFETY: `buf` is writable for `buf.len()` bytes and `addr` for
            // `addr_len` bytes; both outlive the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut addr as *mut libc::sockaddr_nl).cast(),
                    &mut addr_len,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => {
                    self.overruns.fetch_add(1, Ordering::Relaxed);
                    return Ok(Received::Overrun);
                }
                _ => return Err(err),
            }
        };
        let sender = Sender {
            port_id: addr.nl_pid,
            groups: addr.nl_groups,
        };
        Ok(parse_datagram(sender, buf, n))
    }

    /// Sends a full reply: `header` echoed with `data_size` set to
    /// `data.len()`, then `data`, with `cn_msg.seq` set to the request's
    /// sequence number and `cn_msg.ack` 0.
    pub fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        // The kernel's connector drops messages whose cn_msg and payload
        // together exceed CONNECTOR_MAX_MSG_SIZE.
        let len = HEADER_SIZE + data.len();
        let cn_len = u16::try_from(len)
            .ok()
            .filter(|&l| CN_MSG_SIZE + usize::from(l) <= CONNECTOR_MAX_MSG_SIZE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut reply = header.clone();
        reply.data_size = data.len() as u32;
        let mut head = [0u8; HEADER_SIZE];
        reply
            .encode(&mut head)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.send_parts(&CnHeader::for_log(header.seq, 0, cn_len), &[&head, data])
    }

    /// Sends an ack-only reply: `cn_msg.len` 0, `cn_msg.seq` the request's
    /// sequence number, `cn_msg.ack` the positive errno (`EAGAIN` asks the
    /// kernel to resend).
    pub fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        self.send_parts(&CnHeader::for_log(seq, errno, 0), &[])
    }

    /// Sends `cn` and `payload` to the kernel as they are: for tests and
    /// fuzzers that need frames the other methods would refuse to build.
    pub fn send_raw(&self, cn: &CnHeader, payload: &[u8]) -> io::Result<()> {
        self.send_parts(cn, &[payload])
    }

    fn send_parts(&self, cn: &CnHeader, parts: &[&[u8]]) -> io::Result<()> {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let total = NLMSG_HDRLEN + CN_MSG_SIZE + payload;
        let mut head = [0u8; NLMSG_HDRLEN + CN_MSG_SIZE];
        encode_head(self.port_id, cn, total, &mut head)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;

        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 4];
        if parts.len() + 1 > iov.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        iov[0] = libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        };
        for (slot, part) in iov[1..].iter_mut().zip(parts) {
            *slot = libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            };
        }
        let mut kernel = netlink_addr(0, 0);
        // SAFETY: an all-zero msghdr is a valid empty message header.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut kernel as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = sockaddr_nl_len();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = parts.len() + 1;
        loop {
            // SAFETY: `msg` points at `kernel` and at `parts.len() + 1`
            // iovecs whose buffers are borrowed for the whole call; sendmsg
            // only reads them.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }
}

impl AsFd for ConnectorSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ConnectorSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Checks the framing of a datagram of real length `n` received into `buf`
/// (`n` larger than `buf` means it was cut) from `sender`: what
/// [`ConnectorSocket::recv`] does after the system call.
pub fn parse_datagram(sender: Sender, buf: &[u8], n: usize) -> Received<'_> {
    if n > buf.len() {
        return Received::Invalid {
            sender,
            cn: None,
            error: FrameError::Oversized { len: n },
        };
    }
    let frame = &buf[..n];
    let nlmsg_len = frame
        .get(0..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let bad_length = Received::Invalid {
        sender,
        cn: None,
        error: FrameError::BadNetlinkLength {
            received: n,
            nlmsg_len,
        },
    };
    let Ok(msg_len) = usize::try_from(nlmsg_len) else {
        return bad_length;
    };
    if n < NLMSG_HDRLEN + CN_MSG_SIZE || msg_len < NLMSG_HDRLEN + CN_MSG_SIZE || msg_len > n {
        return bad_length;
    }
    let nlmsg_type = u16::from_ne_bytes([frame[4], frame[5]]);
    let nlmsg_seq = u32::from_ne_bytes([frame[8], frame[9], frame[10], frame[11]]);
    let payload = &frame[NLMSG_HDRLEN..msg_len];
    let cn = CnHeader::decode(payload);
    if nlmsg_type != libc::NLMSG_DONE as u16 {
        return Received::Invalid {
            sender,
            cn,
            error: FrameError::UnexpectedType(nlmsg_type),
        };
    }
    let Some(cn) = cn else {
        return bad_length;
    };
    let rest = &payload[CN_MSG_SIZE..];
    match rest.get(..usize::from(cn.len)) {
        Some(body) => Received::Message(Incoming {
            sender,
            nlmsg_seq,
            cn,
            body,
        }),
        None => Received::Invalid {
            sender,
            cn: Some(cn),
            error: FrameError::BadConnectorLength {
                len: cn.len,
                present: rest.len(),
            },
        },
    }
}

/// Drops to `uid` (and the same gid) for good: a peer that keeps its
/// socket but loses `CAP_SYS_ADMIN`, whose replies the kernel must ignore.
pub fn drop_privileges(uid: u32) -> io::Result<()> {
    // SAFETY: setgroups/setgid/setuid take plain integers or a null list.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes the netlink frame [`ConnectorSocket`] would send: `nlmsghdr`
/// (from `port_id`), `cn`, then `parts` back to back. Returns its length, or
/// `None` if `out` is too small.
pub fn encode_frame(port_id: u32, cn: &CnHeader, parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let payload: usize = parts.iter().map(|p| p.len()).sum();
    let total = NLMSG_HDRLEN + CN_MSG_SIZE + payload;
    let out = out.get_mut(..total)?;
    let (head, mut rest) = out.split_at_mut(NLMSG_HDRLEN + CN_MSG_SIZE);
    encode_head(port_id, cn, total, head)?;
    for part in parts {
        let (dst, tail) = rest.split_at_mut(part.len());
        dst.copy_from_slice(part);
        rest = tail;
    }
    Some(total)
}

/// Writes `nlmsghdr` + `cn_msg` for a frame of `total` bytes.
fn encode_head(port_id: u32, cn: &CnHeader, total: usize, head: &mut [u8]) -> Option<()> {
    let nlmsg_len = u32::try_from(total).ok()?;
    let head = head.get_mut(..NLMSG_HDRLEN + CN_MSG_SIZE)?;
    head.fill(0);
    head[0..4].copy_from_slice(&nlmsg_len.to_ne_bytes());
    head[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    // Bytes 6..12 (flags, seq) stay 0.
    head[12..16].copy_from_slice(&port_id.to_ne_bytes());
    cn.encode(&mut head[NLMSG_HDRLEN..])
}

fn netlink_addr(pid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = pid;
    addr.nl_groups = groups;
    addr
}

fn sockaddr_nl_len() -> libc::socklen_t {
    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a readable c_int and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RequestType, UUID_LEN};

    fn frame(nlmsg_type: u16, cn: CnHeader, body: &[u8], extra_len: i32) -> Vec<u8> {
        let mut v = vec![0u8; NLMSG_HDRLEN + CN_MSG_SIZE + body.len()];
        let n = encode_frame(0, &cn, &[body], &mut v).unwrap();
        assert_eq!(n, v.len());
        let nl_len = (n as i32 + extra_len) as u32;
        v[0..4].copy_from_slice(&nl_len.to_ne_bytes());
        v[4..6].copy_from_slice(&nlmsg_type.to_ne_bytes());
        v
    }

    const KERNEL: Sender = Sender {
        port_id: 0,
        groups: 1 << (CN_IDX_DM - 1),
    };

    #[test]
    fn well_formed_request_is_trimmed_to_cn_len() {
        let mut body = [0u8; HEADER_SIZE + 8];
        let h = RequestHeader::new(9, &[b'u'; UUID_LEN], 3, RequestType::IsClean);
        h.encode(&mut body).unwrap();
        let cn = CnHeader::for_log(3, 0, HEADER_SIZE as u16);
        let f = frame(libc::NLMSG_DONE as u16, cn, &body, 0);
        match parse_datagram(KERNEL, &f, f.len()) {
            Received::Message(m) => {
                assert!(m.sender.is_kernel());
                assert_eq!(m.cn, cn);
                assert_eq!(m.body.len(), HEADER_SIZE);
            }
            r => panic!("unexpected {r:?}"),
        }
    }

    #[test]
    fn bad_frames_are_reported_not_parsed() {
        let cn = CnHeader::for_log(5, 0, 100);
        let f = frame(libc::NLMSG_DONE as u16, cn, &[0u8; 40], 0);
        match parse_datagram(KERNEL, &f, f.len()) {
            Received::Invalid {
                cn: Some(c),
                error:
                    FrameError::BadConnectorLength {
                        len: 100,
                        present: 40,
                    },
                ..
            } => assert_eq!(c.seq, 5),
            r => panic!("unexpected {r:?}"),
        }
        let f = frame(libc::NLMSG_DONE as u16, cn, &[0u8; 100], 8);
        assert!(matches!(
            parse_datagram(KERNEL, &f, f.len()),
            Received::Invalid {
                error: FrameError::BadNetlinkLength { .. },
                ..
            }
        ));
        let f = frame(libc::NLMSG_ERROR as u16, cn, &[0u8; 100], 0);
        assert!(matches!(
            parse_datagram(KERNEL, &f, f.len()),
            Received::Invalid {
                error: FrameError::UnexpectedType(2),
                ..
            }
        ));
        assert!(matches!(
            parse_datagram(KERNEL, &[0u8; 10], 10),
            Received::Invalid {
                error: FrameError::BadNetlinkLength { .. },
                ..
            }
        ));
        assert!(matches!(
            parse_datagram(KERNEL, &[0u8; 64], 100),
            Received::Invalid {
                error: FrameError::Oversized { len: 100 },
                ..
            }
        ));
    }

    #[test]
    fn ack_frames_have_an_empty_body() {
        let cn = CnHeader::for_log(77, 11, 0);
        let f = frame(libc::NLMSG_DONE as u16, cn, &[], 0);
        match parse_datagram(KERNEL, &f, f.len()) {
            Received::Message(m) => {
                assert!(m.body.is_empty());
                assert_eq!(m.cn.ack, 11);
            }
            r => panic!("unexpected {r:?}"),
        }
    }

    #[test]
    fn encoded_frames_parse_back() {
        let mut body = [0u8; HEADER_SIZE + 8];
        let h = RequestHeader::new(1, &[b'x'; UUID_LEN], 42, RequestType::InSync);
        h.encode(&mut body).unwrap();
        let cn = CnHeader::for_log(42, 0, body.len() as u16);
        let mut out = [0u8; 512];
        let n = encode_frame(9, &cn, &[&body[..100], &body[100..]], &mut out).unwrap();
        assert_eq!(n, NLMSG_HDRLEN + CN_MSG_SIZE + body.len());
        assert_eq!(&out[12..16], &9u32.to_ne_bytes(), "sender port id");
        match parse_datagram(KERNEL, &out, n) {
            Received::Message(m) => assert_eq!(m.body, &body[..]),
            r => panic!("unexpected {r:?}"),
        }
        assert_eq!(encode_frame(9, &cn, &[&body], &mut [0u8; 100]), None);
    }

    /// Needs root (CAP_NET_ADMIN) and a kernel with the connector; skips
    /// itself otherwise.
    #[test]
    fn opens_joins_and_sends_when_permitted() {
        let s = match ConnectorSocket::open(SocketOptions {
            nonblocking: true,
            rcvbuf: 1 << 20,
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: cannot open the connector socket: {e}");
                return;
            }
        };
        assert_ne!(s.port_id(), 0);
        assert!(s.rcvbuf().unwrap() >= 1 << 20);
        let mut buf = vec![0u8; RECV_BUFFER_SIZE];
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Nobody in the kernel listens to an ack for a request it never
        // sent; the send itself must still be accepted.
        s.send_ack(0xffff_fff0, libc::EAGAIN as u32).unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_nonblocking(true).unwrap();
        assert_eq!(s.overruns(), 0);
    }
}
