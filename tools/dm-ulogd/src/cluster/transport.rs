// SPDX-License-Identifier: GPL-2.0

//! How the members of a log's group reach each other: one group per log,
//! named after its uuid, with messages and membership changes delivered in
//! one total order to every member (corosync CPG, or a simulated bus in the
//! tests); and whether this node's part of the cluster has quorum
//! (corosync's quorum service over votequorum).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use crate::member::MemberId;

/// A configuration of the cluster's ring (corosync's totem ring id): every
/// change of the cluster's membership makes a new one, with a larger
/// sequence number than any before it on its members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingId {
    /// The ring's sequence number.
    pub seq: u64,
    /// The node that formed it.
    pub node: u32,
}

/// A membership change of one group, as CPG delivers it: in the same total
/// order as the messages, so every member sees it at the same point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// The members after the change.
    pub members: Vec<MemberId>,
    /// Who joined.
    pub joined: Vec<MemberId>,
    /// Who left: cleanly or not, the group cannot tell whether their I/O
    /// finished, so every departure is handled as a failure.
    pub left: Vec<MemberId>,
}

/// A group event as the transport delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A message (still encoded) and its sender.
    Deliver(MemberId, Vec<u8>),
    /// A membership change.
    Change(ConfigChange),
    /// The cluster moved to a new ring: the group's events from here on
    /// belong to it.
    Ring(RingId),
}

/// What the quorum service says about a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumEvent {
    /// The ring.
    pub ring: RingId,
    /// Whether this node's partition has quorum in it.
    pub quorate: bool,
}

/// A totally ordered group messaging service, and the quorum.
pub trait Transport {
    /// This process as a member.
    fn local_id(&self) -> MemberId;
    /// Joins `group`; the first event of the group is the change that
    /// lists this member as joined.
    fn join(&mut self, group: &str) -> io::Result<()>;
    /// Leaves `group`; no event of it is delivered afterwards.
    fn leave(&mut self, group: &str) -> io::Result<()>;
    /// Multicasts to `group`, this member included, in the total order.
    /// `WouldBlock` means "later" (flow control); any other error means the
    /// message did not go out.
    fn send(&mut self, group: &str, payload: &[u8]) -> io::Result<()>;
    /// Descriptors that become readable when events are waiting.
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>>;
    /// Appends the events waiting (of the groups whose descriptors are in
    /// `ready`, or of all groups if `ready` is `None`), in order, each with
    /// its group; and the quorum's news.
    fn dispatch(
        &mut self,
        ready: Option<&[RawFd]>,
        out: &mut Vec<(String, TransportEvent)>,
        quorum: &mut Vec<QuorumEvent>,
    ) -> io::Result<()>;
}

/// Without the `cluster` feature: no transport exists.
pub const NOT_BUILT: &str = "this dm-ulogd was built without cluster support: \
     rebuild with 'cargo build --release --features cluster' (needs Debian's libcpg-dev \
     and libquorum-dev)";
