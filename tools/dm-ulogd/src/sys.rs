// SPDX-License-Identifier: GPL-2.0

//! Thin safe wrappers over the system calls std does not offer. All `unsafe`
//! of dm-ulogd is in this file.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Locks all current and future pages in memory, so that serving a request
/// never waits for swap-in (the server may sit on the swap device's own
/// write path).
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall() takes no pointers.
    check(unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) }).map(drop)
}

/// Takes an exclusive `flock` on `file` without waiting; `Ok(false)` if
/// another process holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock() on an open descriptor takes no pointers.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The major and minor numbers of a device number.
pub fn dev_numbers(dev: libc::dev_t) -> (u32, u32) {
    // SAFETY: major() and minor() only split the integer. Older libc
    // releases (Debian 13's 0.2.169) declare them unsafe, newer ones safe.
    #[allow(unused_unsafe)]
    unsafe {
        (libc::major(dev), libc::minor(dev))
    }
}

/// Creates a block device node for `major:minor` at `path` (mode 0600).
pub fn make_block_node(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: makedev() only combines the integers (unsafe in older libc).
    #[allow(unused_unsafe)]
    let dev = unsafe { libc::makedev(major, minor) };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check(unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, dev) }).map(drop)
}

/// The logical block size of the block device open as `file`.
pub fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // BLKSSZGET = _IO(0x12, 104)
    const BLKSSZGET: libc::c_ulong = 0x1268;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which is valid.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut size as *mut libc::c_int) })?;
    u32::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A shared, writable mapping of a whole file: stores into it reach the
/// file's page cache at once, so they survive the death of the process.
#[derive(Debug)]
pub struct MappedFile {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is exclusively owned by this value (like a Box), and
// only reachable through &self/&mut self.
unsafe impl Send for MappedFile {}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (which must be at least that
    /// long, open for reading and writing).
    pub fn map(file: &File, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh shared mapping chosen by the kernel overlaps no
        // Rust object; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `map` refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self`
        // lives. The state directory is locked by this process, so no other
        // process writes the file behind our back.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The words after the first `head` bytes (see [`Self::split_words_mut`]).
    pub fn words(&self, head: usize) -> &[u64] {
        let head = head.min(self.len) & !7;
        let words = (self.len - head) / 8;
        // SAFETY: [head, head + 8 * words) lies in the live mapping, is
        // 8-byte aligned (page-aligned base, `head` a multiple of 8) and any
        // bit pattern is a valid u64; &self keeps writers away.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(head).cast::<u64>(), words) }
    }

    /// Splits the mapping into its first `head` bytes and the rest as
    /// 64-bit words. `head` must be a multiple of 8 (the mapping itself is
    /// page aligned); the words are as many as fit.
    pub fn split_words_mut(&mut self, head: usize) -> (&mut [u8], &mut [u64]) {
        let head = head.min(self.len) & !7;
        let words = (self.len - head) / 8;
        // SAFETY: the two ranges [0, head) and [head, head + 8 * words) are
        // disjoint parts of the live, writable mapping; `head` is a multiple
        // of 8 and the mapping page aligned, so the words are aligned; any
        // bit pattern is a valid u64. The &mut self borrow keeps them unique.
        unsafe {
            let base = self.ptr.as_ptr();
            (
                std::slice::from_raw_parts_mut(base, head),
                std::slice::from_raw_parts_mut(base.add(head).cast::<u64>(), words),
            )
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not yet
        // unmapped; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The signals the daemon handles, delivered through a descriptor so the
/// poll loop sees them like any other event.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

/// A signal read from a [`SignalFd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: exit cleanly.
    Terminate,
    /// SIGUSR1: log the counters.
    DumpStats,
    /// SIGHUP: nothing to reload; noted in the log.
    Hangup,
    /// Anything else.
    Other(u32),
}

impl SignalFd {
    /// Blocks SIGTERM, SIGINT, SIGUSR1 and SIGHUP for the process and opens a
    /// nonblocking signalfd for them.
    pub fn new() -> io::Result<Self> {
        // SAFETY: an all-zero sigset_t is valid storage for sigemptyset.
        let mut set: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: `set` is valid, writable storage for each call.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not wanted.
        check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // SAFETY: `set` is initialised; -1 asks for a new descriptor.
        let raw =
            check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Reads one pending signal; `None` when there is none.
    pub fn read(&self) -> io::Result<Option<Signal>> {
        // SAFETY: all-zero is a valid signalfd_siginfo.
        let mut info: libc::signalfd_siginfo = unsafe { mem::zeroed() };
        let size = mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable storage of `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        if n as usize != size {
            return Ok(None);
        }
        let sig = info.ssi_signo as i32;
        Ok(Some(match sig {
            libc::SIGTERM | libc::SIGINT => Signal::Terminate,
            libc::SIGUSR1 => Signal::DumpStats,
            libc::SIGHUP => Signal::Hangup,
            _ => Signal::Other(info.ssi_signo),
        }))
    }

    /// The descriptor, for poll.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable; returns which ones are, as a bit
/// mask (bit i for fds\[i\], at most 8 descriptors).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<u8> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 8];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(&fds[..n]) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    // SAFETY: `pfds` holds `n` initialised pollfd entries.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(err)
        };
    }
    let mut mask = 0u8;
    for (i, p) in pfds[..n].iter().enumerate() {
        if p.revents != 0 {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// The process's connection to syslog.
pub struct Syslog {
    _ident: CString,
}

/// Syslog priorities used by the daemon.
#[derive(Clone, Copy, Debug)]
pub enum Priority {
    /// LOG_ERR
    Error,
    /// LOG_WARNING
    Warning,
    /// LOG_INFO
    Info,
    /// LOG_DEBUG
    Debug,
}

impl Syslog {
    /// Opens syslog with `ident`, facility daemon, with the pid.
    pub fn open(ident: &str) -> Self {
        let ident = CString::new(ident).unwrap_or_default();
        // SAFETY: `ident` is kept alive in the returned value for as long as
        // syslog may use the pointer (openlog keeps it, it does not copy).
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        Self { _ident: ident }
    }

    /// Sends one message.
    pub fn send(&self, priority: Priority, message: &str) {
        let prio = match priority {
            Priority::Error => libc::LOG_ERR,
            Priority::Warning => libc::LOG_WARNING,
            Priority::Info => libc::LOG_INFO,
            Priority::Debug => libc::LOG_DEBUG,
        };
        let text: Vec<u8> = message.bytes().filter(|&b| b != 0).collect();
        let Ok(text) = CString::new(text) else { return };
        // SAFETY: the format is a literal "%s" and `text` a valid C string.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), text.as_ptr()) };
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        // SAFETY: closelog() takes no arguments.
        unsafe { libc::closelog() };
    }
}
