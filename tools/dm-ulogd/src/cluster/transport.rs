// SPDX-License-Identifier: GPL-2.0

//! How the members of a log's group reach each other: one group per log,
//! named after its uuid, with messages and membership changes delivered in
//! one total order to every member (corosync CPG, or a simulated bus in the
//! tests).

use std::io;
use std::os::fd::RawFd;

use crate::member::{ConfigChange, MemberId};

/// A group event as the transport delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A message (still encoded) and its sender.
    Deliver(MemberId, Vec<u8>),
    /// A membership change.
    Change(ConfigChange),
}

/// A totally ordered group messaging service.
pub trait Transport {
    /// This process as a member.
    fn local_id(&self) -> MemberId;
    /// Joins `group`; the first event of the group is the change that
    /// lists this member as joined.
    fn join(&mut self, group: &str) -> io::Result<()>;
    /// Leaves `group`; no event of it is delivered afterwards.
    fn leave(&mut self, group: &str) -> io::Result<()>;
    /// Multicasts to `group`, this member included, in the total order.
    /// `WouldBlock` means "later" (flow control).
    fn send(&mut self, group: &str, payload: &[u8]) -> io::Result<()>;
    /// Descriptors that become readable when events are waiting.
    fn poll_fds(&self) -> Vec<RawFd>;
    /// Appends the events waiting, in order, each with its group.
    fn dispatch(&mut self, out: &mut Vec<(String, TransportEvent)>) -> io::Result<()>;
}

/// Without the `cluster` feature: no transport exists.
pub const NOT_BUILT: &str = "this dm-ulogd was built without cluster support: \
     rebuild with 'cargo build --release --features cluster' (needs Debian's libcpg-dev)";
