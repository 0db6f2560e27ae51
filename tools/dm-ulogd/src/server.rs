// SPDX-License-Identifier: GPL-2.0

//! The daemon, in both modes: one thread waiting on the netlink socket, the
//! signals, the control socket and (cluster mode) the corosync connections;
//! it wakes only when one of them has something (no polling at any number
//! of logs). Requests are served strictly in arrival order (the kernel may
//! have clears, marks and a FLUSH in flight back to back, and relies on them
//! being applied in that order). On one node each is answered before the
//! next is read: per request one `recv` and one `send`, plus one `write`
//! and one `fdatasync` for a FLUSH that made a disk log's region dirty. In
//! cluster mode a request the group answers later waits in the store.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use sd_notify::NotifyState;
use ulog_proto::socket::{ConnectorSocket, Incoming, Received, SocketOptions, RECV_BUFFER_SIZE};
use ulog_proto::wire::{
    Message, ParseError, RequestHeader, CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, REQUEST_MASK,
};

use crate::cluster::transport::Transport;
use crate::compat;
use crate::control::{self, Command, ControlServer};
use crate::signals::{Signal, Signals};
use crate::state_file::StateDir;
use crate::stats::{ClusterInfo, Snapshot, SocketCounters};
use crate::store::LogStore;
use crate::{debug, error, info, warning};

/// Requests served per wake-up before signals, the control socket and the
/// group events get a look (poll then returns at once while requests
/// remain queued).
const DRAIN_BUDGET: usize = 256;

/// The longest wait before retrying a send corosync deferred (flow
/// control); the first retry comes after 1 ms, each next one waits twice as
/// long. A delivery of this node's own messages retries at once.
const MAX_RETRY: Duration = Duration::from_millis(64);

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
    signals: Signals,
    control: ControlServer,
    transport: Option<Box<dyn Transport>>,
    started: Instant,
    reset_at: Instant,
    recv_buf: Vec<u8>,
    _lock: File,
    _instance: UnixListener,
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

/// Counts the replies that could not be sent.
struct CountingSink<'a, S: ReplySink> {
    inner: &'a S,
    failures: std::cell::Cell<u64>,
}

impl<S: ReplySink> ReplySink for CountingSink<'_, S> {
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        let r = self.inner.send_reply(header, data);
        if r.is_err() {
            self.failures.set(self.failures.get() + 1);
        }
        r
    }

    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        let r = self.inner.send_ack(seq, errno);
        if r.is_err() {
            self.failures.set(self.failures.get() + 1);
        }
        r
    }
}

/// Turns received connector messages into requests for the [`LogStore`],
/// which answers them; counts what the socket sees. No system call of its
/// own.
pub struct Dispatcher {
    store: LogStore,
    counters: SocketCounters,
}

/// The name of the abstract socket that makes a server the only one on
/// its host (the kernel multicasts every request: two servers would both
/// answer it).
const INSTANCE_NAME: &[u8] = b"dm-ulogd";

/// Why the server could not start: one line for the admin, naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another server holds the host.
    #[error(
        "another dm-ulogd (pid {pid}) serves this host's kernel: stop it first (two servers \
         would both answer every request)"
    )]
    AnotherServer {
        /// Its pid, if known.
        pid: String,
    },
    /// Another server uses the state directory.
    #[error("another dm-ulogd (pid {pid}) is using state directory {}", dir.display())]
    StateDirBusy {
        /// Its pid, as its lock file says.
        pid: String,
        /// The directory.
        dir: PathBuf,
    },
    /// A file or socket the server needs.
    #[error("cannot {what} {}: {source}", path.display())]
    Path {
        /// What was tried.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The host lock socket.
    #[error("cannot bind the instance socket @dm-ulogd: {0}")]
    Instance(#[source] io::Error),
    /// Signal handling.
    #[error("cannot set up signals: {0}")]
    Signals(#[source] io::Error),
    /// The netlink connector.
    #[error("cannot open the netlink connector socket: {0} (is CONFIG_CONNECTOR enabled? are you root?)")]
    Netlink(#[source] io::Error),
    /// Corosync (cluster mode).
    #[error("{0}")]
    Cluster(String),
}

/// Becomes the only dm-ulogd on this host: binds the abstract unix socket
/// `@dm-ulogd`, which the kernel releases when the process dies however it
/// dies. If another server holds it, says which.
fn claim_host() -> Result<UnixListener, StartError> {
    let addr = SocketAddr::from_abstract_name(INSTANCE_NAME).map_err(StartError::Instance)?;
    match UnixListener::bind_addr(&addr) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let pid = UnixStream::connect_addr(&addr)
                .ok()
                .and_then(|s| compat::peer_pid(&s).ok())
                .map_or_else(|| "?".to_string(), |pid| pid.to_string());
            Err(StartError::AnotherServer { pid })
        }
        Err(e) => Err(StartError::Instance(e)),
    }
}

/// Takes the state directory's lock, so two servers never share it.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<File, StartError> {
    let path = dir.join("lock");
    let failed = |what, source| StartError::Path {
        what,
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| failed("open", e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(StartError::StateDirBusy {
                pid: pid.trim().to_string(),
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(failed("lock", e.into())),
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

impl Server {
    /// Sets everything up: state directory and its lock, signals, restored
    /// logs, then the netlink socket (so requests find the state loaded) and
    /// the control socket. With a `transport`, the server runs in cluster
    /// mode over corosync. Errors are one line for the admin.
    pub fn start(options: &ServerOptions, cluster: bool) -> Result<Self, StartError> {
        let instance = claim_host()?;
        let dir = StateDir::open(&options.state_dir).map_err(|source| StartError::Path {
            what: "create state directory",
            path: options.state_dir.clone(),
            source,
        })?;
        let lock = lock_state_dir(dir.root())?;
        let signals = Signals::new().map_err(StartError::Signals)?;
        let transport = if cluster {
            Some(cluster_transport().map_err(StartError::Cluster)?)
        } else {
            None
        };
        let control_path = dir.root().join(control::SOCKET_NAME);
        let (store, report) = match &transport {
            Some(t) => (LogStore::clustered(t.local_id(), dir.root()), None),
            None => {
                let mut store = LogStore::new(Some(dir));
                let report = store.load_state();
                (store, Some(report))
            }
        };
        let socket = ConnectorSocket::open(SocketOptions {
            nonblocking: true,
            rcvbuf: options.rcvbuf,
        })
        .map_err(StartError::Netlink)?;
        let control = ControlServer::bind(&control_path).map_err(|source| StartError::Path {
            what: "create control socket",
            path: control_path.clone(),
            source,
        })?;
        // The kernel reports twice what it grants, for its bookkeeping.
        let rcvbuf = socket.rcvbuf().unwrap_or(0) / 2;
        match (report, store.cluster()) {
            (Some(report), _) => info!(
                "serving userspace logs: {} restored, {} unusable; state in {}, receive buffer {} bytes",
                report.loaded,
                report.failed,
                options.state_dir.display(),
                rcvbuf
            ),
            (None, Some(c)) => info!(
                "serving clustered userspace logs as {}; one group per log, named after its \
                 uuid; control socket in {}, receive buffer {} bytes",
                c.me(),
                options.state_dir.display(),
                rcvbuf
            ),
            (None, None) => {}
        }
        let now = Instant::now();
        Ok(Self {
            socket,
            dispatcher: Dispatcher::new(store),
            signals,
            control,
            transport,
            started: now,
            reset_at: now,
            recv_buf: vec![0; RECV_BUFFER_SIZE],
            _lock: lock,
            _instance: instance,
        })
    }

    /// Serves until SIGTERM or SIGINT. Single-node logs stay in the state
    /// directory for the next start.
    pub fn run(&mut self) -> io::Result<()> {
        let mut retry: Option<Duration> = None;
        // The quorum's current state and anything already queued.
        self.pump_transport(None)?;
        // systemd (Type=notify): the kernel's requests are served from now.
        let _ = compat::notify(&[NotifyState::Ready]);
        loop {
            let (ready, transport_ready) = self.wait(retry)?;
            if ready[1] {
                for signal in self.signals.take() {
                    match signal {
                        Signal::Terminate => {
                            let _ = compat::notify(&[NotifyState::Stopping]);
                            if self.transport.is_some() {
                                info!("exiting on signal");
                                self.report();
                            } else {
                                info!("exiting on signal; logs stay in the state directory");
                            }
                            self.dispatcher.store.commit_all();
                            return Ok(());
                        }
                        Signal::DumpStats => self.report(),
                        Signal::Hangup => info!("SIGHUP: nothing to reload"),
                    }
                }
            }
            if ready[0] {
                self.drain_socket()?;
            }
            if ready[2] {
                self.serve_control();
            }
            if !transport_ready.is_empty() || retry.is_some() {
                self.pump_transport(Some(&transport_ready))?;
            }
            if self.transport.is_some() {
                self.dispatcher.store.end_of_burst(&self.socket);
                self.flush_transport();
                retry = if self
                    .dispatcher
                    .store
                    .cluster()
                    .is_some_and(|c| c.has_outbox())
                {
                    Some(retry.map_or(Duration::from_millis(1), |d| (d * 2).min(MAX_RETRY)))
                } else {
                    None
                };
            }
        }
    }

    /// Waits until a descriptor is readable (or `timeout` passes): which of
    /// socket, signals and control are, and which transport descriptors.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<([bool; 3], Vec<RawFd>)> {
        let mut fds = vec![
            PollFd::new(&self.socket, PollFlags::IN),
            PollFd::new(&self.signals, PollFlags::IN),
            PollFd::new(&self.control, PollFlags::IN),
        ];
        if let Some(t) = &self.transport {
            fds.extend(
                t.poll_fds()
                    .into_iter()
                    .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
            );
        }
        match compat::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(([false; 3], Vec::new())),
            Err(e) => return Err(e.into()),
        }
        let ready = [0, 1, 2].map(|i| !fds[i].revents().is_empty());
        let transport = fds[3..]
            .iter()
            .filter(|p| !p.revents().is_empty())
            .map(|p| p.as_fd().as_raw_fd())
            .collect();
        Ok((ready, transport))
    }

    /// Applies what corosync delivered (of the ready descriptors, or all).
    fn pump_transport(&mut self, ready: Option<&[RawFd]>) -> io::Result<()> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        let mut quorum = Vec::new();
        if let Err(e) = transport.dispatch(ready, &mut events, &mut quorum) {
            error!("the cluster transport failed: {e}");
            return Err(e);
        }
        let store = &mut self.dispatcher.store;
        for q in quorum {
            store.quorum_event(q, &self.socket);
        }
        for (group, event) in events {
            store.group_event(&group, event, &self.socket);
        }
        Ok(())
    }

    fn flush_transport(&mut self) {
        if let Some(t) = self.transport.as_mut() {
            self.dispatcher.store.flush_outbox(t.as_mut(), &self.socket);
        }
    }

    fn report(&self) {
        for line in self.snapshot().to_text().lines() {
            info!("stats: {line}");
        }
        if let Some(c) = self.dispatcher.store.cluster() {
            for line in c.report() {
                info!("stats: {line}");
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
        let store = &self.dispatcher.store;
        Snapshot {
            uptime_s: self.started.elapsed().as_secs_f64(),
            since_reset_s: self.reset_at.elapsed().as_secs_f64(),
            socket: self.dispatcher.counters,
            total: store.total(),
            logs: store.summaries(),
            cluster: store.cluster().map(|c| ClusterInfo {
                member: c.me(),
                quorate: c.quorate(),
                ring: c.ring(),
                totals: c.totals(),
                counters: c.counters(),
            }),
        }
    }
}

impl Dispatcher {
    /// A dispatcher serving the logs of `store`.
    pub fn new(store: LogStore) -> Self {
        Self {
            store,
            counters: SocketCounters::default(),
        }
    }

    /// The logs.
    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// The logs, to change.
    pub fn store_mut(&mut self) -> &mut LogStore {
        &mut self.store
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
    /// `sink` (now, or later in cluster mode) and counts it.
    pub fn serve(&mut self, sink: &impl ReplySink, received: &Received<'_>, t0: Instant) {
        self.counters.received += 1;
        let sink = CountingSink {
            inner: sink,
            failures: std::cell::Cell::new(0),
        };
        match received {
            Received::Message(m) => self.serve_message(&sink, m, t0),
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
                    self.ack(&sink, cn.seq, libc::EINVAL);
                    self.store.record(None, 0, true, elapsed_ns(t0));
                }
            }
        }
        self.counters.send_errors += sink.failures.get();
    }

    fn ack(&mut self, sink: &impl ReplySink, seq: u32, errno: i32) {
        if let Err(e) = sink.send_ack(seq, errno as u32) {
            warning!("cannot send ack for seq {seq}: {e}");
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
                if let Err(e) = sink.send_reply(&header, &[]) {
                    warning!("cannot send reply for seq {}: {e}", header.seq);
                }
                self.store
                    .record(None, header.request_type, true, elapsed_ns(t0));
            }
            Ok(Message::Request { header, data }) => {
                if header.request_type & REQUEST_MASK == 0 {
                    // cmirrord's answer to a garbled request: ask for a resend.
                    debug!("request type 0 (seq {}): asking for a resend", m.cn.seq);
                    self.ack(sink, m.cn.seq, libc::EAGAIN);
                    self.store.record(None, 0, true, elapsed_ns(t0));
                    return;
                }
                self.store.serve(&header, data, sink, t0);
            }
        }
    }
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `dm-ulogd --cluster`: the transport over corosync.
#[cfg(feature = "cluster")]
pub fn cluster_transport() -> Result<Box<dyn Transport>, String> {
    Ok(Box::new(crate::cluster::cpg::CpgTransport::new()?))
}

/// `dm-ulogd --cluster` in a build without the `cluster` feature.
#[cfg(not(feature = "cluster"))]
pub fn cluster_transport() -> Result<Box<dyn Transport>, String> {
    Err(crate::cluster::transport::NOT_BUILT.to_string())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
