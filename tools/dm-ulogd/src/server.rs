// SPDX-License-Identifier: GPL-2.0

//! The daemon: one thread polling the netlink socket, a signalfd and the
//! control socket. Requests are served strictly in arrival order, each
//! answered before the next is read (the kernel may have clears, marks and a
//! FLUSH in flight back to back, and relies on them being applied in that
//! order). Per request: one `recv` and one `send`; plus one `write` and one
//! `fdatasync` for a FLUSH that made a disk log's region dirty.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ulog_proto::socket::{ConnectorSocket, Incoming, Received, SocketOptions, RECV_BUFFER_SIZE};
use ulog_proto::wire::{
    payload_u64, Message, ParseError, RequestHeader, RequestType, CN_IDX_DM,
    CN_VAL_DM_USERSPACE_LOG, REQUEST_MASK,
};

use crate::control::{self, Command, ControlServer};
use crate::state_file::StateDir;
use crate::stats::{Snapshot, SocketCounters};
use crate::store::{LogStore, Reply, REPLY_CAPACITY};
use crate::sys::{self, Signal, SignalFd};
use crate::{debug, error, info, warning};

/// Requests served per wake-up before signals and the control socket get a
/// look (poll then returns at once while requests remain queued).
const DRAIN_BUDGET: usize = 256;

/// What the daemon needs to start.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// State directory (lock, control socket, per-log state files).
    pub state_dir: PathBuf,
    /// Netlink receive buffer size in bytes.
    pub rcvbuf: usize,
}

/// The running daemon.
pub struct Server {
    socket: ConnectorSocket,
    dispatcher: Dispatcher,
    signals: SignalFd,
    control: ControlServer,
    started: Instant,
    reset_at: Instant,
    recv_buf: Vec<u8>,
    _lock: File,
}

/// Where replies go: the netlink socket, or a recorder in tests and the
/// benchmark.
pub trait ReplySink {
    /// Sends a full reply (see [`ConnectorSocket::send_reply`]).
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()>;
    /// Sends an ack-only reply (see [`ConnectorSocket::send_ack`]).
    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()>;
}

impl ReplySink for ConnectorSocket {
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        ConnectorSocket::send_reply(self, header, data)
    }

    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        ConnectorSocket::send_ack(self, seq, errno)
    }
}

/// Turns received connector messages into replies: decode, dispatch to the
/// [`LogStore`], encode, count. No system call of its own.
pub struct Dispatcher {
    store: LogStore,
    counters: SocketCounters,
    reply_buf: Vec<u8>,
}

/// Takes the state directory's lock, so two servers never share it (single
/// node and cluster mode alike).
pub(crate) fn lock_state_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(format!(
                "another dm-ulogd (pid {}) is using state directory {}",
                pid.trim(),
                dir.display()
            ));
        }
        Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

impl Server {
    /// Sets everything up: state directory and its lock, signals, restored
    /// logs, then the netlink socket (so requests find the state loaded) and
    /// the control socket. Errors are one line for the admin.
    pub fn start(options: &ServerOptions) -> Result<Self, String> {
        let dir = StateDir::open(&options.state_dir).map_err(|e| {
            format!(
                "cannot create state directory {}: {e}",
                options.state_dir.display()
            )
        })?;
        let lock = lock_state_dir(dir.root())?;
        let signals = SignalFd::new().map_err(|e| format!("cannot set up signals: {e}"))?;
        let control_path = dir.root().join(control::SOCKET_NAME);
        let mut store = LogStore::new(Some(dir));
        let report = store.load_state();
        let socket = ConnectorSocket::open(SocketOptions {
            nonblocking: true,
            rcvbuf: options.rcvbuf,
        })
        .map_err(|e| {
            format!("cannot open the netlink connector socket: {e} (is CONFIG_CONNECTOR enabled?)")
        })?;
        let control = ControlServer::bind(&control_path).map_err(|e| {
            format!(
                "cannot create control socket {}: {e}",
                control_path.display()
            )
        })?;
        info!(
            "serving userspace logs: {} restored, {} unusable; state in {}, receive buffer {} bytes",
            report.loaded,
            report.failed,
            options.state_dir.display(),
            // The kernel reports twice what it grants, for its bookkeeping.
            socket.rcvbuf().unwrap_or(0) / 2
        );
        let now = Instant::now();
        Ok(Self {
            socket,
            dispatcher: Dispatcher::new(store),
            signals,
            control,
            started: now,
            reset_at: now,
            recv_buf: vec![0; RECV_BUFFER_SIZE],
            _lock: lock,
        })
    }

    /// Serves until SIGTERM or SIGINT. Logs stay in the state directory for
    /// the next start.
    pub fn run(&mut self) -> io::Result<()> {
        let fds = [
            self.socket.as_raw_fd(),
            self.signals.raw_fd(),
            self.control.raw_fd(),
        ];
        loop {
            let ready = sys::poll_readable(&fds, -1)?;
            if ready & 0b010 != 0 {
                while let Some(signal) = self.signals.read()? {
                    match signal {
                        Signal::Terminate => {
                            info!("exiting on signal; logs stay in the state directory");
                            self.dispatcher.store.commit_all();
                            return Ok(());
                        }
                        Signal::DumpStats => {
                            for line in self.snapshot().to_text().lines() {
                                info!("stats: {line}");
                            }
                        }
                        Signal::Hangup => info!("SIGHUP: nothing to reload"),
                        Signal::Other(n) => debug!("ignoring signal {n}"),
                    }
                }
            }
            if ready & 0b001 != 0 {
                self.drain_socket()?;
            }
            if ready & 0b100 != 0 {
                self.serve_control();
            }
        }
    }

    /// Serves the queued requests, in order: up to [`DRAIN_BUDGET`] before
    /// going back to poll, so signals and the control socket are not
    /// starved by a flood.
    fn drain_socket(&mut self) -> io::Result<()> {
        let Self {
            socket,
            dispatcher,
            recv_buf,
            ..
        } = self;
        for _ in 0..DRAIN_BUDGET {
            let received = match socket.recv(recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    error!("netlink receive failed: {e}");
                    return Err(e);
                }
            };
            let t0 = Instant::now();
            if let Received::Overrun = received {
                warning!(
                    "netlink receive queue overflowed ({} times so far): requests were lost and \
                     the kernel resends them after 15 s; consider a larger --rcvbuf",
                    socket.overruns()
                );
            }
            dispatcher.serve(&*socket, &received, t0);
        }
        Ok(())
    }

    fn serve_control(&mut self) {
        while let Some((stream, command)) = self.control.accept() {
            match command {
                Ok(Command::Stats { json, reset }) => {
                    let text = if json {
                        self.snapshot().to_json()
                    } else {
                        self.snapshot().to_text()
                    };
                    if reset {
                        self.dispatcher.reset_counters();
                        self.reset_at = Instant::now();
                        info!("counters reset");
                    }
                    control::answer(stream, &text);
                }
                Err(e) => control::answer(stream, &format!("error: {e}\n")),
            }
        }
    }

    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            uptime_s: self.started.elapsed().as_secs_f64(),
            since_reset_s: self.reset_at.elapsed().as_secs_f64(),
            socket: self.dispatcher.counters,
            total: self.dispatcher.store.total(),
            logs: self.dispatcher.store.summaries(),
        }
    }
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Dispatcher {
    /// A dispatcher serving the logs of `store`.
    pub fn new(store: LogStore) -> Self {
        Self {
            store,
            counters: SocketCounters::default(),
            reply_buf: vec![0; REPLY_CAPACITY],
        }
    }

    /// The logs.
    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// The socket-level counters.
    pub fn counters(&self) -> SocketCounters {
        self.counters
    }

    /// Zeroes every counter.
    pub fn reset_counters(&mut self) {
        self.store.reset_counters();
        self.counters = SocketCounters::default();
    }

    /// Serves one receive result, received at `t0`: answers it through
    /// `sink` and counts it.
    pub fn serve(&mut self, sink: &impl ReplySink, received: &Received<'_>, t0: Instant) {
        self.counters.received += 1;
        match received {
            Received::Message(m) => self.serve_message(sink, m, t0),
            Received::Overrun => self.counters.overruns += 1,
            Received::Invalid { sender, cn, error } => {
                self.counters.malformed += 1;
                warning!(
                    "malformed netlink message from port {}: {error}",
                    sender.port_id
                );
                if let Some(cn) = cn.filter(|c| {
                    sender.is_kernel() && c.idx == CN_IDX_DM && c.val == CN_VAL_DM_USERSPACE_LOG
                }) {
                    self.ack(sink, cn.seq, libc::EINVAL);
                    self.store.record(None, 0, true, elapsed_ns(t0));
                }
            }
        }
    }

    fn ack(&mut self, sink: &impl ReplySink, seq: u32, errno: i32) {
        if let Err(e) = sink.send_ack(seq, errno as u32) {
            self.counters.send_errors += 1;
            warning!("cannot send ack for seq {seq}: {e}");
        }
    }

    fn reply(&mut self, sink: &impl ReplySink, header: &RequestHeader, len: usize) {
        if let Err(e) = sink.send_reply(header, &self.reply_buf[..len]) {
            self.counters.send_errors += 1;
            warning!("cannot send reply for seq {}: {e}", header.seq);
        }
    }

    fn serve_message(&mut self, sink: &impl ReplySink, m: &Incoming<'_>, t0: Instant) {
        if !m.sender.is_kernel() || m.cn.idx != CN_IDX_DM || m.cn.val != CN_VAL_DM_USERSPACE_LOG {
            // Only the kernel sends requests; anything else on the group is
            // someone else's traffic.
            self.counters.ignored += 1;
            debug!(
                "ignoring message {}:{} from port {}",
                m.cn.idx, m.cn.val, m.sender.port_id
            );
            return;
        }
        match Message::parse(&m.cn, m.body) {
            Ok(Message::Ack { seq, .. }) => {
                self.counters.ignored += 1;
                debug!("ignoring an ack (seq {seq}) from the kernel");
            }
            Err(ParseError::Truncated { len }) => {
                self.counters.malformed += 1;
                warning!(
                    "request of {len} bytes (seq {}) is shorter than its header: answering EINVAL",
                    m.cn.seq
                );
                self.ack(sink, m.cn.seq, libc::EINVAL);
                self.store.record(None, 0, true, elapsed_ns(t0));
            }
            Err(ParseError::DataSizeMismatch { data_size, present }) => {
                self.counters.malformed += 1;
                let Some(mut header) = RequestHeader::decode(m.body) else {
                    return;
                };
                warning!(
                    "request seq {} claims {data_size} payload bytes but carries {present}: answering EINVAL",
                    header.seq
                );
                header.error = -libc::EINVAL;
                self.reply(sink, &header, 0);
                self.store
                    .record(None, header.request_type, true, elapsed_ns(t0));
            }
            Ok(Message::Request { mut header, data }) => {
                if header.request_type & REQUEST_MASK == 0 {
                    // cmirrord's answer to a garbled request: ask for a resend.
                    debug!("request type 0 (seq {}): asking for a resend", m.cn.seq);
                    self.ack(sink, m.cn.seq, libc::EAGAIN);
                    self.store.record(None, 0, true, elapsed_ns(t0));
                    return;
                }
                let reply = self.store.handle(&header, data, &mut self.reply_buf);
                header.error = reply.error;
                self.reply(sink, &header, reply.len);
                let ns = elapsed_ns(t0);
                self.store
                    .record(reply.slot, header.request_type, reply.error != 0, ns);
                if crate::logging::verbose() {
                    trace(&header, data, &reply, &self.reply_buf[..reply.len], ns);
                }
            }
        }
    }
}

/// One `--verbose` line per request.
fn trace(header: &RequestHeader, data: &[u8], reply: &Reply, payload: &[u8], ns: u64) {
    let kind = header.kind().map_or("?", RequestType::name);
    let uuid = String::from_utf8_lossy(header.uuid_bytes());
    let args: Vec<String> = match header.kind() {
        Some(RequestType::Ctr) => vec![format!(
            "'{}'",
            String::from_utf8_lossy(data).trim_end_matches('\0')
        )],
        _ if data.len() % 8 == 0 => (0..data.len() / 8)
            .filter_map(|i| payload_u64(data, i))
            .map(|v| v.to_string())
            .collect(),
        _ => vec![format!("{} bytes", data.len())],
    };
    let answer: Vec<String> = match header.kind() {
        Some(RequestType::StatusInfo | RequestType::StatusTable | RequestType::Ctr) => {
            vec![format!(
                "'{}'",
                String::from_utf8_lossy(payload).trim_end_matches('\0')
            )]
        }
        _ => (0..payload.len() / 8)
            .filter_map(|i| payload_u64(payload, i))
            .map(|v| (v as i64).to_string())
            .collect(),
    };
    crate::logging::emit(
        crate::logging::Level::Debug,
        format_args!(
            "seq {} {kind} '{uuid}'/{} [{}] -> {} [{}] in {:.1} us",
            header.seq,
            header.luid,
            args.join(" "),
            reply.error,
            answer.join(" "),
            ns as f64 / 1000.0
        ),
    );
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
