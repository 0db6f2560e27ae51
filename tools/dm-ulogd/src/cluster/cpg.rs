// SPDX-License-Identifier: GPL-2.0

//! The transport over corosync's closed process groups (libcpg, through the
//! `rust-corosync` crate): one CPG handle per log in its group (a handle
//! joins one group), messages multicast with agreed ordering, so messages
//! and membership changes reach every member in one total order.
//!
//! libcpg calls back plain functions during `cpg_dispatch`; they only queue
//! the events, which [`Transport::dispatch`] then hands out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use rust_corosync::cpg::{self, Address, Guarantee, Handle, Model1Data, Model1Flags, ModelData};
use rust_corosync::{CsError, DispatchFlags, NodeId};

use super::transport::{Transport, TransportEvent};
use crate::member::{ConfigChange, MemberId};

thread_local! {
    /// Events the callbacks queued, with the handle they came on.
    static QUEUED: RefCell<Vec<(Handle, String, TransportEvent)>> = const { RefCell::new(Vec::new()) };
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

fn io_error(what: &str, e: CsError) -> io::Error {
    let kind = match e {
        CsError::CsErrTryAgain => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// Groups and their handles.
pub struct CpgTransport {
    me: MemberId,
    /// Keeps the connection that told us our node id.
    _probe: Handle,
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
        totem_confchg_fn: None,
    })
}

impl CpgTransport {
    /// Connects to the local corosync.
    pub fn new() -> Result<Self, String> {
        let probe = cpg::initialize(&model(), 0).map_err(|e| {
            format!("cannot connect to corosync's CPG service: {e} (is corosync running?)")
        })?;
        let node = cpg::local_get(&probe)
            .map_err(|e| format!("cannot get this node's corosync id: {e}"))?;
        Ok(Self {
            me: MemberId::new(u32::from(node), std::process::id()),
            _probe: probe,
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

    fn poll_fds(&self) -> Vec<RawFd> {
        self.active
            .values()
            .chain(self.leaving.iter().map(|(_, h)| h))
            .filter_map(|h| cpg::fd_get(h).ok())
            .collect()
    }

    fn dispatch(&mut self, out: &mut Vec<(String, TransportEvent)>) -> io::Result<()> {
        for h in self
            .active
            .values()
            .chain(self.leaving.iter().map(|(_, h)| h))
        {
            match cpg::dispatch(h, DispatchFlags::All) {
                Ok(()) | Err(CsError::CsErrTryAgain) => {}
                Err(e) => return Err(io_error("cpg_dispatch", e)),
            }
        }
        let queued = QUEUED.with(|q| std::mem::take(&mut *q.borrow_mut()));
        let me = self.me;
        for (handle, group, event) in queued {
            if self.active.get(&group) == Some(&handle) {
                out.push((group, event));
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
