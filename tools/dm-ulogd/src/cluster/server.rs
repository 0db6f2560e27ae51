// SPDX-License-Identifier: GPL-2.0

//! The daemon loop of cluster mode: the netlink socket, the signals and the
//! transport's descriptors, polled by one thread. Kernel requests are read
//! in arrival order; a request that waits for the group (a FLUSH with marks,
//! GET_RESYNC_WORK, RESUME) is answered when the group's event arrives,
//! while later requests are read and answered meanwhile (the kernel sends a
//! flush's clears, marks and FLUSH back to back before waiting, and all of
//! it then travels as one message).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use ulog_proto::socket::{ConnectorSocket, Received, SocketOptions, RECV_BUFFER_SIZE};
use ulog_proto::wire::{
    Message as KernelMessage, RequestHeader, RequestType, CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG,
    REQUEST_MASK,
};

use super::store::ClusterStore;
use super::transport::Transport;
use crate::server::{ReplySink, ServerOptions};
use crate::sys::{self, Signal, SignalFd};
use crate::{debug, error, info, warning};

/// Requests read per wake-up before the group's events get a look.
const DRAIN_BUDGET: usize = 256;

/// Descriptors `sys::poll_readable` takes besides the socket and signals;
/// beyond that many logs in their groups, the loop also wakes every
/// [`POLL_FALLBACK_MS`] to dispatch the rest.
const MAX_POLLED_GROUPS: usize = 6;
const POLL_FALLBACK_MS: i32 = 10;

/// The cluster-mode daemon.
pub struct ClusterServer<T: Transport> {
    socket: ConnectorSocket,
    store: ClusterStore<T>,
    signals: SignalFd,
    recv_buf: Vec<u8>,
    _lock: File,
}

/// Takes the state directory's lock (one server per node), as single-node
/// mode does; cluster mode keeps no other state there.
fn lock_state_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
    crate::server::lock_state_dir(dir)
}

impl<T: Transport> ClusterServer<T> {
    /// Sets up the lock, signals and the netlink socket over `transport`.
    pub fn start(options: &ServerOptions, transport: T) -> Result<Self, String> {
        let lock = lock_state_dir(&options.state_dir)?;
        let signals = SignalFd::new().map_err(|e| format!("cannot set up signals: {e}"))?;
        let socket = ConnectorSocket::open(SocketOptions {
            nonblocking: true,
            rcvbuf: options.rcvbuf,
        })
        .map_err(|e| {
            format!("cannot open the netlink connector socket: {e} (is CONFIG_CONNECTOR enabled?)")
        })?;
        let me = transport.local_id();
        info!("serving clustered userspace logs as {me}; one group per log, named after its uuid");
        Ok(Self {
            socket,
            store: ClusterStore::new(transport),
            signals,
            recv_buf: vec![0; RECV_BUFFER_SIZE],
            _lock: lock,
        })
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            let mut fds = vec![self.socket.as_raw_fd(), self.signals.raw_fd()];
            let groups = self.store.transport().poll_fds();
            fds.extend(groups.iter().take(MAX_POLLED_GROUPS));
            let timeout = if self.store.has_outbox() || groups.len() > MAX_POLLED_GROUPS {
                POLL_FALLBACK_MS
            } else {
                -1
            };
            let ready = sys::poll_readable(&fds, timeout)?;
            if ready & 0b10 != 0 {
                while let Some(signal) = self.signals.read()? {
                    match signal {
                        Signal::Terminate => {
                            info!("exiting on signal");
                            self.report();
                            return Ok(());
                        }
                        Signal::DumpStats => self.report(),
                        Signal::Hangup => info!("SIGHUP: nothing to reload"),
                        Signal::Other(n) => debug!("ignoring signal {n}"),
                    }
                }
            }
            if ready & 0b01 != 0 {
                self.drain_socket()?;
            }
            if let Err(e) = self.store.pump(&self.socket) {
                error!("the cluster transport failed: {e}");
                return Err(e);
            }
            self.store.flush_outbox();
        }
    }

    fn report(&self) {
        for line in self.store.report() {
            info!("stats: {line}");
        }
    }

    fn drain_socket(&mut self) -> io::Result<()> {
        for _ in 0..DRAIN_BUDGET {
            let received = match self.socket.recv(&mut self.recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    error!("netlink receive failed: {e}");
                    return Err(e);
                }
            };
            serve(&mut self.store, &self.socket, &received);
        }
        self.store.end_of_burst(&self.socket);
        Ok(())
    }
}

/// Serves one receive result.
fn serve<T: Transport>(
    store: &mut ClusterStore<T>,
    socket: &ConnectorSocket,
    received: &Received<'_>,
) {
    let t0 = Instant::now();
    let m = match received {
        Received::Message(m) => m,
        Received::Overrun => {
            warning!("netlink receive queue overflowed: requests were lost and the kernel resends them after 15 s");
            return;
        }
        Received::Invalid { sender, cn, error } => {
            warning!(
                "malformed netlink message from port {}: {error}",
                sender.port_id
            );
            if let Some(cn) = cn.filter(|c| {
                sender.is_kernel() && c.idx == CN_IDX_DM && c.val == CN_VAL_DM_USERSPACE_LOG
            }) {
                let _ = socket.send_ack(cn.seq, libc::EINVAL as u32);
            }
            return;
        }
    };
    if !m.sender.is_kernel() || m.cn.idx != CN_IDX_DM || m.cn.val != CN_VAL_DM_USERSPACE_LOG {
        return;
    }
    match KernelMessage::parse(&m.cn, m.body) {
        Ok(KernelMessage::Request { header, data }) => {
            if header.request_type & REQUEST_MASK == 0 {
                let _ = socket.send_ack(m.cn.seq, libc::EAGAIN as u32);
                return;
            }
            store.handle(&header, data, socket);
            if crate::logging::verbose() {
                let kind = header.kind().map_or("?", RequestType::name);
                debug!(
                    "{kind} seq {} log '{}' ({} payload bytes) served in {} us",
                    header.seq,
                    String::from_utf8_lossy(header.uuid_bytes()),
                    data.len(),
                    t0.elapsed().as_micros()
                );
            }
        }
        Ok(KernelMessage::Ack { .. }) => {}
        Err(_) => {
            warning!("malformed request (seq {}): answering EINVAL", m.cn.seq);
            if let Some(mut header) = RequestHeader::decode(m.body) {
                header.error = -libc::EINVAL;
                let _ = ReplySink::send_reply(socket, &header, &[]);
            } else {
                let _ = socket.send_ack(m.cn.seq, libc::EINVAL as u32);
            }
        }
    }
}

/// `dm-ulogd --cluster`: serves over corosync CPG until a signal.
#[cfg(feature = "cluster")]
pub fn run(options: &ServerOptions) -> Result<(), String> {
    let transport = super::cpg::CpgTransport::new()?;
    let mut server = ClusterServer::start(options, transport)?;
    server.run().map_err(|e| format!("stopping: {e}"))
}

/// `dm-ulogd --cluster` in a build without the `cluster` feature.
#[cfg(not(feature = "cluster"))]
pub fn run(_options: &ServerOptions) -> Result<(), String> {
    Err(super::transport::NOT_BUILT.to_string())
}
