// SPDX-License-Identifier: GPL-2.0

//! Who holds a log's marks and recoveries: a dm-ulogd process on one node
//! (on a single node, always [`MemberId::LOCAL`]), and how a log's group of
//! such processes changes in cluster mode.

use std::fmt;

/// One member of a log's group: a dm-ulogd process on one node. The pid is
/// part of the identity so that a server restarted on the same node is a new
/// member (its predecessor's departure and its own join may come together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    /// The corosync node id.
    pub node: u32,
    /// The server's process id on that node.
    pub pid: u32,
}

impl MemberId {
    /// The only owner of a single-node log's marks and recoveries.
    pub const LOCAL: Self = Self::new(0, 0);

    /// A member.
    pub const fn new(node: u32, pid: u32) -> Self {
        Self { node, pid }
    }

    /// As one number, for the wire.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.node) << 32) | u64::from(self.pid)
    }

    /// From [`Self::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        Self {
            node: (v >> 32) as u32,
            pid: v as u32,
        }
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (pid {})", self.node, self.pid)
    }
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
