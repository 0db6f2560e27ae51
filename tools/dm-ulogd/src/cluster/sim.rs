// SPDX-License-Identifier: GPL-2.0

//! A simulated corosync for the tests: one totally ordered queue of group
//! operations (messages, joins, leaves, failures) that the test steps
//! through, delivering each to every member of its group in the same order,
//! as CPG's agreed ordering and virtual synchrony promise.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use ulog_proto::wire::{RequestHeader, RequestType, UUID_LEN};

use super::node::Answer;
use super::store::ClusterStore;
use super::transport::{Transport, TransportEvent};
use crate::member::{ConfigChange, MemberId};
use crate::server::ReplySink;

enum Op {
    Send(MemberId, Vec<u8>),
    Join(MemberId),
    Leave(MemberId),
}

/// The simulated group service.
#[derive(Default)]
pub struct Bus {
    queue: VecDeque<(String, Op)>,
    groups: HashMap<String, Vec<MemberId>>,
    inboxes: BTreeMap<MemberId, Vec<(String, TransportEvent)>>,
    /// Messages delivered per group (one CPG round each).
    pub delivered: u64,
}

/// A shared handle on the bus.
pub type SharedBus = Rc<RefCell<Bus>>;

impl Bus {
    /// A new bus.
    pub fn shared() -> SharedBus {
        Rc::new(RefCell::new(Self::default()))
    }

    /// Whether operations wait.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    fn deliver(&mut self, to: &[MemberId], group: &str, event: &TransportEvent) {
        for m in to {
            if let Some(inbox) = self.inboxes.get_mut(m) {
                inbox.push((group.to_string(), event.clone()));
            }
        }
    }

    /// Carries out the next queued operation.
    pub fn step(&mut self) -> bool {
        let Some((group, op)) = self.queue.pop_front() else {
            return false;
        };
        let mut members = self.groups.get(&group).cloned().unwrap_or_default();
        match op {
            Op::Send(from, bytes) => {
                if members.contains(&from) {
                    self.delivered += 1;
                    self.deliver(&members, &group, &TransportEvent::Deliver(from, bytes));
                }
            }
            Op::Join(m) => {
                if !members.contains(&m) {
                    members.push(m);
                    members.sort();
                    let change = ConfigChange {
                        members: members.clone(),
                        joined: vec![m],
                        left: vec![],
                    };
                    self.deliver(&members, &group, &TransportEvent::Change(change));
                    self.groups.insert(group, members);
                }
            }
            Op::Leave(m) => {
                if members.contains(&m) {
                    members.retain(|&x| x != m);
                    let change = ConfigChange {
                        members: members.clone(),
                        joined: vec![],
                        left: vec![m],
                    };
                    self.deliver(&members, &group, &TransportEvent::Change(change));
                    self.groups.insert(group, members);
                }
            }
        }
        true
    }

    /// A node dies: its queued messages are lost (virtual synchrony: not
    /// delivered to anyone) and every group it was in sees it leave.
    pub fn fail(&mut self, dead: MemberId) {
        self.inboxes.remove(&dead);
        self.queue.retain(|(_, op)| match op {
            Op::Send(m, _) | Op::Join(m) | Op::Leave(m) => *m != dead,
        });
        let groups: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, ms)| ms.contains(&dead))
            .map(|(g, _)| g.clone())
            .collect();
        for g in groups {
            self.queue.push_front((g, Op::Leave(dead)));
            self.step();
        }
    }
}

/// One member's view of the bus.
pub struct SimTransport {
    me: MemberId,
    bus: SharedBus,
}

impl SimTransport {
    /// Member `me` on `bus`.
    pub fn new(me: MemberId, bus: &SharedBus) -> Self {
        bus.borrow_mut().inboxes.insert(me, Vec::new());
        Self {
            me,
            bus: bus.clone(),
        }
    }
}

impl Transport for SimTransport {
    fn local_id(&self) -> MemberId {
        self.me
    }

    fn join(&mut self, group: &str) -> io::Result<()> {
        let mut bus = self.bus.borrow_mut();
        bus.queue.push_back((group.to_string(), Op::Join(self.me)));
        Ok(())
    }

    fn leave(&mut self, group: &str) -> io::Result<()> {
        let mut bus = self.bus.borrow_mut();
        bus.queue.push_back((group.to_string(), Op::Leave(self.me)));
        Ok(())
    }

    fn send(&mut self, group: &str, payload: &[u8]) -> io::Result<()> {
        let mut bus = self.bus.borrow_mut();
        bus.queue
            .push_back((group.to_string(), Op::Send(self.me, payload.to_vec())));
        Ok(())
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn dispatch(&mut self, out: &mut Vec<(String, TransportEvent)>) -> io::Result<()> {
        if let Some(inbox) = self.bus.borrow_mut().inboxes.get_mut(&self.me) {
            out.append(inbox);
        }
        Ok(())
    }
}

/// Records replies (payload bytes or errno) by sequence number.
#[derive(Default)]
pub struct Replies(RefCell<HashMap<u32, Result<Vec<u8>, i32>>>);

impl ReplySink for Replies {
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        let answer = if header.error != 0 {
            Err(-header.error)
        } else {
            Ok(data.to_vec())
        };
        let old = self.0.borrow_mut().insert(header.seq, answer);
        assert!(old.is_none(), "seq {} answered twice", header.seq);
        Ok(())
    }

    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        self.0.borrow_mut().insert(seq, Err(errno as i32));
        Ok(())
    }
}

/// A node: its kernel (requests with sequence numbers) and its server.
pub struct Node {
    /// The server.
    pub store: ClusterStore<SimTransport>,
    /// Replies its kernel received.
    pub replies: Replies,
    /// The member id.
    pub me: MemberId,
    seq: u32,
    luid: u64,
}

/// The uuid every test log uses.
pub const UUID: &str = "LVM-test-mirror";

impl Node {
    /// Node `node` (process `pid`) on `bus`.
    pub fn new(node: u32, pid: u32, bus: &SharedBus) -> Self {
        let me = MemberId::new(node, pid);
        Self {
            store: ClusterStore::new(SimTransport::new(me, bus)),
            replies: Replies::default(),
            me,
            seq: 0,
            luid: u64::from(pid),
        }
    }

    /// Sends a request, returns its sequence number.
    pub fn send(&mut self, kind: RequestType, data: &[u8]) -> u32 {
        self.send_for(self.luid, kind, data)
    }

    /// Sends a request for log instance `luid`.
    pub fn send_for(&mut self, luid: u64, kind: RequestType, data: &[u8]) -> u32 {
        self.seq += 1;
        let mut uuid = [0u8; UUID_LEN];
        uuid[..UUID.len()].copy_from_slice(UUID.as_bytes());
        let mut header = RequestHeader::new(luid, &uuid, self.seq, kind);
        header.data_size = data.len() as u32;
        self.store.handle(&header, data, &self.replies);
        self.seq
    }

    /// Sends a request whose payload is `words`.
    pub fn send_words(&mut self, kind: RequestType, words: &[u64]) -> u32 {
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.send(kind, &data)
    }

    /// The answer to `seq` as payload words, if it came.
    pub fn answer(&self, seq: u32) -> Option<Answer> {
        let raw = self.raw(seq)?;
        Some(raw.map(|bytes| {
            bytes
                .chunks(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w[..c.len()].copy_from_slice(c);
                    u64::from_ne_bytes(w)
                })
                .collect()
        }))
    }

    /// The answer to `seq` as bytes, if it came.
    pub fn raw(&self, seq: u32) -> Option<Result<Vec<u8>, i32>> {
        self.replies.0.borrow().get(&seq).cloned()
    }

    /// CTR with `text`; its answer.
    pub fn construct(&mut self, text: &str) -> Answer {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        let seq = self.send(RequestType::Ctr, &data);
        self.answer(seq).expect("CTR is answered at once")
    }

    /// Asks and expects an answer at once.
    pub fn ask(&mut self, kind: RequestType, words: &[u64]) -> Answer {
        let seq = self.send_words(kind, words);
        self.answer(seq)
            .unwrap_or_else(|| panic!("{} was not answered at once", kind.name()))
    }

    /// Applies what the bus delivered, then sends what is urgent.
    pub fn pump(&mut self) {
        self.store.pump(&self.replies).unwrap();
        self.store.end_of_burst(&self.replies);
    }
}

/// Runs the bus and the nodes until nothing moves.
pub fn settle(bus: &SharedBus, nodes: &mut [&mut Node]) {
    for _ in 0..100_000 {
        for n in nodes.iter_mut() {
            n.pump();
        }
        if !bus.borrow_mut().step() {
            for n in nodes.iter_mut() {
                n.pump();
            }
            if !bus.borrow().busy() {
                return;
            }
        }
    }
    panic!("the cluster did not settle");
}
