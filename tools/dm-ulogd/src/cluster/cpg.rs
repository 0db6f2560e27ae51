// SPDX-License-Identifier: GPL-2.0

//! The transport over corosync (through the `rust-corosync` crate): closed
//! process groups for the logs, one CPG handle per log in its group (a
//! handle joins one group), messages multicast with agreed ordering, so
//! messages and membership changes reach every member in one total order;
//! and the quorum service (backed by votequorum) for whether this node's
//! partition is quorate in each ring.
//!
//! libcpg and libquorum call back plain functions during their dispatch;
//! those only queue the events, which [`Transport::dispatch`] then hands out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use rust_corosync::cpg::{self, Address, Guarantee, Handle, Model1Data, Model1Flags, ModelData};
use rust_corosync::{quorum, CsError, DispatchFlags, NodeId, TrackFlags};

use super::transport::{ConfigChange, QuorumEvent, RingId, Transport, TransportEvent};
use crate::member::MemberId;

thread_local! {
    /// Events the CPG callbacks queued, with the handle they came on.
    static QUEUED: RefCell<Vec<(Handle, String, TransportEvent)>> = const { RefCell::new(Vec::new()) };
    /// What the quorum callback said.
    static QUORUM: RefCell<Vec<QuorumEvent>> = const { RefCell::new(Vec::new()) };
}

fn member(a: &Address) -> MemberId {
    MemberId::new(u32::from(a.nodeid), a.pid)
}

fn on_deliver(h: &Handle, group: String, node: NodeId, pid: u32, msg: &[u8], _len: usize) {
    let event = TransportEvent::Deliver(MemberId::new(u32::from(node), pid), msg.to_vec());
    QUEUED.with(|q| q.borrow_mut().push((h.clone(), group, event)));
}

fn on_confchg(
    h: &Handle,
    group: &str,
    members: Vec<Address>,
    left: Vec<Address>,
    joined: Vec<Address>,
) {
    let change = ConfigChange {
        members: members.iter().map(member).collect(),
        joined: joined.iter().map(member).collect(),
        left: left.iter().map(member).collect(),
    };
    QUEUED.with(|q| {
        q.borrow_mut()
            .push((h.clone(), group.to_string(), TransportEvent::Change(change)))
    });
}

fn on_totem(h: &Handle, ring: cpg::RingId, _members: Vec<NodeId>) {
    let ring = RingId {
        seq: ring.seq,
        node: u32::from(ring.nodeid),
    };
    // The group is known from the handle (see `dispatch`).
    QUEUED.with(|q| {
        q.borrow_mut()
            .push((h.clone(), String::new(), TransportEvent::Ring(ring)))
    });
}

fn on_quorum(_h: &quorum::Handle, quorate: bool, ring: quorum::RingId, _members: Vec<NodeId>) {
    let event = QuorumEvent {
        ring: RingId {
            seq: ring.seq,
            node: u32::from(ring.nodeid),
        },
        quorate,
    };
    QUORUM.with(|q| q.borrow_mut().push(event));
}

fn io_error(what: &str, e: CsError) -> io::Error {
    let kind = match e {
        CsError::CsErrTryAgain => io::ErrorKind::WouldBlock,
        CsError::CsErrNotExist | CsError::CsErrBadHandle => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// Groups, their handles, and the quorum.
pub struct CpgTransport {
    me: MemberId,
    /// Keeps the connection that told us our node id.
    _probe: Handle,
    quorum: quorum::Handle,
    active: HashMap<String, Handle>,
    /// Handles that left their group, dispatched until their departure is
    /// seen: only then may this process join the group again.
    leaving: Vec<(String, Handle)>,
    /// Joins waiting for a departure or for corosync.
    pending_joins: Vec<String>,
}

fn model() -> ModelData {
    ModelData::ModelV1(Model1Data {
        flags: Model1Flags::None,
        deliver_fn: Some(on_deliver),
        confchg_fn: Some(on_confchg),
        totem_confchg_fn: Some(on_totem),
    })
}

impl CpgTransport {
    /// Connects to the local corosync: CPG, and the quorum service (whose
    /// first notification, the current state, is queued at once).
    pub fn new() -> Result<Self, String> {
        let probe = cpg::initialize(&model(), 0).map_err(|e| {
            format!("cannot connect to corosync's CPG service: {e} (is corosync running?)")
        })?;
        let node = cpg::local_get(&probe)
            .map_err(|e| format!("cannot get this node's corosync id: {e}"))?;
        let (quorum, _) = quorum::initialize(
            &quorum::ModelData::ModelV1(quorum::Model1Data {
                flags: quorum::Model1Flags::None,
                quorum_notification_fn: Some(on_quorum),
                nodelist_notification_fn: None,
            }),
            0,
        )
        .map_err(|e| {
            format!(
                "cannot connect to corosync's quorum service: {e} (is a quorum provider \
                 such as corosync_votequorum configured?)"
            )
        })?;
        quorum::trackstart(&quorum, TrackFlags::Changes)
            .map_err(|e| format!("cannot track the quorum: {e}"))?;
        Ok(Self {
            me: MemberId::new(u32::from(node), std::process::id()),
            _probe: probe,
            quorum,
            active: HashMap::new(),
            leaving: Vec::new(),
            pending_joins: Vec::new(),
        })
    }

    fn try_join(&mut self, group: &str) -> io::Result<bool> {
        if self.leaving.iter().any(|(g, _)| g == group) {
            return Ok(false);
        }
        let handle = cpg::initialize(&model(), 0).map_err(|e| io_error("cpg_initialize", e))?;
        match cpg::join(&handle, group) {
            Ok(()) => {
                self.active.insert(group.to_string(), handle);
                Ok(true)
            }
            // Our previous membership is still being dropped.
            Err(CsError::CsErrTryAgain | CsError::CsErrExist) => Ok(false),
            Err(e) => Err(io_error("cpg_join", e)),
        }
    }

    fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.active
            .values()
            .chain(self.leaving.iter().map(|(_, h)| h))
    }
}

impl Transport for CpgTransport {
    fn local_id(&self) -> MemberId {
        self.me
    }

    fn join(&mut self, group: &str) -> io::Result<()> {
        if !self.try_join(group)? {
            self.pending_joins.push(group.to_string());
        }
        Ok(())
    }

    fn leave(&mut self, group: &str) -> io::Result<()> {
        self.pending_joins.retain(|g| g != group);
        let Some(handle) = self.active.remove(group) else {
            return Ok(());
        };
        let result = cpg::leave(&handle, group).map_err(|e| io_error("cpg_leave", e));
        self.leaving.push((group.to_string(), handle));
        result
    }

    fn send(&mut self, group: &str, payload: &[u8]) -> io::Result<()> {
        let handle = self
            .active
            .get(group)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not in the group"))?;
        cpg::mcast_joined(handle, Guarantee::TypeAgreed, payload)
            .map_err(|e| io_error("cpg_mcast_joined", e))
    }

    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.handles()
            .filter_map(|h| cpg::fd_get(h).ok())
            .chain(quorum::fd_get(&self.quorum).ok())
            // SAFETY: each descriptor belongs to a libcpg or libquorum
            // connection held open by a handle `self` owns, so it stays open
            // for as long as the borrow of `self` these descriptors carry.
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect()
    }

    fn dispatch(
        &mut self,
        ready: Option<&[RawFd]>,
        out: &mut Vec<(String, TransportEvent)>,
        quorum_out: &mut Vec<QuorumEvent>,
    ) -> io::Result<()> {
        let wanted = |fd: Option<RawFd>| match (ready, fd) {
            (None, _) => true,
            (Some(r), Some(fd)) => r.contains(&fd),
            (Some(_), None) => false,
        };
        if wanted(quorum::fd_get(&self.quorum).ok()) {
            match quorum::dispatch(&self.quorum, DispatchFlags::All) {
                Ok(()) | Err(CsError::CsErrTryAgain) => {}
                Err(e) => return Err(io_error("quorum_dispatch", e)),
            }
        }
        for h in self.handles() {
            if !wanted(cpg::fd_get(h).ok()) {
                continue;
            }
            match cpg::dispatch(h, DispatchFlags::All) {
                Ok(()) | Err(CsError::CsErrTryAgain) => {}
                Err(e) => return Err(io_error("cpg_dispatch", e)),
            }
        }
        quorum_out.extend(QUORUM.with(|q| std::mem::take(&mut *q.borrow_mut())));
        let queued = QUEUED.with(|q| std::mem::take(&mut *q.borrow_mut()));
        let me = self.me;
        for (handle, group, event) in queued {
            let active = self.active.iter().find(|(_, h)| **h == handle);
            if let Some((name, _)) = active {
                out.push((name.clone(), event));
            } else if let TransportEvent::Change(c) = &event {
                // A leaving handle's own departure: it may go now.
                if c.left.contains(&me) {
                    self.leaving.retain(|(g, h)| !(g == &group && h == &handle));
                }
            }
        }
        let joins = std::mem::take(&mut self.pending_joins);
        for group in joins {
            if !self.try_join(&group)? {
                self.pending_joins.push(group);
            }
        }
        Ok(())
    }
}
