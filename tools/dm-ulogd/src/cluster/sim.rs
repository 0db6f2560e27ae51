// SPDX-License-Identifier: GPL-2.0

//! A simulated corosync for the tests: the cluster's nodes split into
//! components (one, unless partitioned), each with its own ring and one
//! totally ordered queue of group operations (messages, joins, leaves) that
//! the test steps through, delivering each to every member of its group in
//! that component in the same order, as CPG's agreed ordering and virtual
//! synchrony promise. Partitions and merges give each side a new ring, the
//! ring's quorum (more than half of the configured nodes, or either half
//! with `two_node`) and the group changes CPG would deliver; a send can be
//! made to fail.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use ulog_proto::wire::{RequestHeader, RequestType, UUID_LEN};

use super::group::Answer;
use super::transport::{ConfigChange, QuorumEvent, RingId, Transport, TransportEvent};
use crate::log_device::DevicePolicy;
use crate::member::MemberId;
use crate::server::ReplySink;
use crate::store::LogStore;

#[derive(Clone, Debug)]
enum Op {
    Send(MemberId, Vec<u8>),
    Join(MemberId),
    Leave(MemberId),
}

/// One side of the cluster: the nodes that see each other.
#[derive(Default)]
struct Component {
    nodes: BTreeSet<u32>,
    ring: RingId,
    queue: VecDeque<(String, Op)>,
    groups: HashMap<String, Vec<MemberId>>,
}

/// The simulated cluster.
pub struct Bus {
    /// The configured nodes (for quorum).
    configured: BTreeSet<u32>,
    /// corosync's `two_node`: a two-node cluster is quorate with one node.
    pub two_node: bool,
    components: Vec<Component>,
    inboxes: BTreeMap<MemberId, Vec<(String, TransportEvent)>>,
    quorum: BTreeMap<MemberId, Vec<QuorumEvent>>,
    /// Sends that fail, per process: the next this many.
    pub failing: BTreeMap<MemberId, u32>,
    next_seq: u64,
    /// Messages delivered (one CPG round each).
    pub delivered: u64,
    /// Every message delivered: group, sender, bytes.
    pub history: Vec<(String, MemberId, Vec<u8>)>,
}

/// A shared handle on the bus.
pub type SharedBus = Rc<RefCell<Bus>>;

impl Bus {
    /// A cluster of nodes 1..=`nodes`, all in one component.
    pub fn new(nodes: u32) -> SharedBus {
        let configured: BTreeSet<u32> = (1..=nodes).collect();
        let mut bus = Self {
            configured: configured.clone(),
            two_node: false,
            components: Vec::new(),
            inboxes: BTreeMap::new(),
            quorum: BTreeMap::new(),
            failing: BTreeMap::new(),
            next_seq: 0,
            delivered: 0,
            history: Vec::new(),
        };
        let ring = bus.new_ring(&configured);
        bus.components.push(Component {
            nodes: configured,
            ring,
            ..Component::default()
        });
        Rc::new(RefCell::new(bus))
    }

    /// A three-node cluster (the tests' usual).
    pub fn shared() -> SharedBus {
        Self::new(3)
    }

    fn new_ring(&mut self, nodes: &BTreeSet<u32>) -> RingId {
        self.next_seq += 4;
        RingId {
            seq: self.next_seq,
            node: nodes.iter().next().copied().unwrap_or(0),
        }
    }

    fn quorate(&self, nodes: &BTreeSet<u32>) -> bool {
        let n = self.configured.len();
        nodes.len() * 2 > n || (self.two_node && n == 2 && !nodes.is_empty())
    }

    fn component_of(&self, node: u32) -> Option<usize> {
        self.components.iter().position(|c| c.nodes.contains(&node))
    }

    /// Whether operations wait.
    pub fn busy(&self) -> bool {
        self.components.iter().any(|c| !c.queue.is_empty())
    }

    fn deliver(&mut self, to: &[MemberId], group: &str, event: &TransportEvent) {
        for m in to {
            if let Some(inbox) = self.inboxes.get_mut(m) {
                inbox.push((group.to_string(), event.clone()));
            }
        }
    }

    fn tell_quorum(&mut self, c: usize) {
        let event = QuorumEvent {
            ring: self.components[c].ring,
            quorate: self.quorate(&self.components[c].nodes),
        };
        let nodes = self.components[c].nodes.clone();
        for (m, q) in self.quorum.iter_mut() {
            if nodes.contains(&m.node) {
                q.push(event);
            }
        }
    }

    /// Carries out the next queued operation of component `c`.
    fn step_component(&mut self, c: usize) -> bool {
        let Some((group, op)) = self.components[c].queue.pop_front() else {
            return false;
        };
        let mut members = self.components[c]
            .groups
            .get(&group)
            .cloned()
            .unwrap_or_default();
        match op {
            Op::Send(from, bytes) => {
                if members.contains(&from) {
                    self.delivered += 1;
                    self.history.push((group.clone(), from, bytes.clone()));
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
                    self.components[c].groups.insert(group, members);
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
                    self.components[c].groups.insert(group, members);
                }
            }
        }
        true
    }

    /// Carries out everything queued.
    pub fn step_all(&mut self) {
        while self.step() {}
    }

    /// Carries out the next queued operation of any component.
    pub fn step(&mut self) -> bool {
        (0..self.components.len()).any(|c| self.step_component(c))
    }

    /// Whether events wait for `member` (it has not heard of them yet).
    pub fn has_news_for(&self, member: MemberId) -> bool {
        self.inboxes.get(&member).is_some_and(|i| !i.is_empty())
            || self.quorum.get(&member).is_some_and(|q| !q.is_empty())
    }

    /// Queues `bytes` as a message from `from` to `group` (a message
    /// delivered again, late), delivered before anything queued.
    pub fn inject(&mut self, group: &str, from: MemberId, bytes: Vec<u8>) {
        if let Some(c) = self.component_of(from.node) {
            self.components[c]
                .queue
                .push_front((group.to_string(), Op::Send(from, bytes)));
        }
    }

    /// Delivers what component `c` has queued (messages sent in a ring are
    /// delivered in it before the ring changes).
    fn drain(&mut self, c: usize) {
        while self.step_component(c) {}
    }

    /// Splits the cluster into the given sides (every node of the cluster in
    /// exactly one): each side gets a new ring and its quorum, and each
    /// group's members see the others leave.
    pub fn partition(&mut self, sides: &[&[u32]]) {
        for c in 0..self.components.len() {
            self.drain(c);
        }
        let mut groups: HashMap<String, Vec<MemberId>> = HashMap::new();
        for c in &self.components {
            for (g, ms) in &c.groups {
                groups
                    .entry(g.clone())
                    .or_default()
                    .extend(ms.iter().copied());
            }
        }
        let old: Vec<BTreeSet<u32>> = self.components.iter().map(|c| c.nodes.clone()).collect();
        self.components.clear();
        for side in sides {
            let nodes: BTreeSet<u32> = side.iter().copied().collect();
            let ring = self.new_ring(&nodes);
            let mut comp = Component {
                nodes: nodes.clone(),
                ring,
                ..Component::default()
            };
            for (g, ms) in &groups {
                let mine: Vec<MemberId> = ms
                    .iter()
                    .copied()
                    .filter(|m| nodes.contains(&m.node))
                    .collect();
                if !mine.is_empty() {
                    comp.groups.insert(g.clone(), mine);
                }
            }
            self.components.push(comp);
        }
        for c in 0..self.components.len() {
            let ring = self.components[c].ring;
            let group_list: Vec<(String, Vec<MemberId>)> = self.components[c]
                .groups
                .iter()
                .map(|(g, ms)| (g.clone(), ms.clone()))
                .collect();
            for (g, mine) in group_list {
                self.deliver(&mine, &g, &TransportEvent::Ring(ring));
                let all = &groups[&g];
                // Those that saw `mine` until now (not those apart already).
                let was_with_mine = |m: &MemberId| {
                    old.iter()
                        .any(|o| o.contains(&m.node) && mine.iter().any(|x| o.contains(&x.node)))
                };
                let left: Vec<MemberId> = all
                    .iter()
                    .copied()
                    .filter(|m| !mine.contains(m) && was_with_mine(m))
                    .collect();
                if !left.is_empty() {
                    let mut members = mine.clone();
                    members.sort();
                    let change = ConfigChange {
                        members,
                        joined: Vec::new(),
                        left,
                    };
                    self.deliver(&mine, &g, &TransportEvent::Change(change));
                }
            }
            self.tell_quorum(c);
        }
    }

    /// Joins every component back into one: a new ring, quorum, and each
    /// group's members see the others join.
    pub fn heal(&mut self) {
        for c in 0..self.components.len() {
            self.drain(c);
        }
        let nodes: BTreeSet<u32> = self
            .components
            .iter()
            .flat_map(|c| c.nodes.iter().copied())
            .collect();
        let old = std::mem::take(&mut self.components);
        let ring = self.new_ring(&nodes);
        let mut comp = Component {
            nodes,
            ring,
            ..Component::default()
        };
        let mut sides: HashMap<String, Vec<Vec<MemberId>>> = HashMap::new();
        for c in &old {
            for (g, ms) in &c.groups {
                sides.entry(g.clone()).or_default().push(ms.clone());
            }
        }
        for (g, parts) in &sides {
            let mut all: Vec<MemberId> = parts.iter().flatten().copied().collect();
            all.sort();
            comp.groups.insert(g.clone(), all);
        }
        self.components.push(comp);
        for (g, parts) in sides {
            let mut all: Vec<MemberId> = parts.iter().flatten().copied().collect();
            all.sort();
            self.deliver(&all, &g, &TransportEvent::Ring(ring));
            for part in &parts {
                let joined: Vec<MemberId> =
                    all.iter().copied().filter(|m| !part.contains(m)).collect();
                if !joined.is_empty() {
                    let change = ConfigChange {
                        members: all.clone(),
                        joined,
                        left: vec![],
                    };
                    self.deliver(part, &g, &TransportEvent::Change(change));
                }
            }
        }
        self.tell_quorum(0);
    }

    /// A process dies: its queued messages are lost (virtual synchrony: not
    /// delivered to anyone) and every group it was in sees it leave. With
    /// `node`, its whole node goes (the survivors get a new ring).
    pub fn fail(&mut self, dead: MemberId) {
        self.inboxes.remove(&dead);
        self.quorum.remove(&dead);
        let Some(c) = self.component_of(dead.node) else {
            return;
        };
        self.components[c].queue.retain(|(_, op)| match op {
            Op::Send(m, _) | Op::Join(m) | Op::Leave(m) => *m != dead,
        });
        let groups: Vec<String> = self.components[c]
            .groups
            .iter()
            .filter(|(_, ms)| ms.contains(&dead))
            .map(|(g, _)| g.clone())
            .collect();
        for g in groups {
            self.components[c].queue.push_front((g, Op::Leave(dead)));
            self.step_component(c);
        }
    }

    /// A node dies with its processes: as [`Self::fail`] for each, then the
    /// survivors of its component form a new ring without it.
    pub fn fail_node(&mut self, node: u32) {
        let dead: Vec<MemberId> = self
            .inboxes
            .keys()
            .copied()
            .filter(|m| m.node == node)
            .collect();
        for m in dead {
            self.fail(m);
        }
        if let Some(c) = self.component_of(node) {
            self.components[c].nodes.remove(&node);
            let nodes = self.components[c].nodes.clone();
            let ring = self.new_ring(&nodes);
            self.components[c].ring = ring;
            let groups: Vec<(String, Vec<MemberId>)> = self.components[c]
                .groups
                .iter()
                .map(|(g, m)| (g.clone(), m.clone()))
                .collect();
            for (g, ms) in groups {
                self.deliver(&ms, &g, &TransportEvent::Ring(ring));
            }
            self.tell_quorum(c);
        }
    }

    /// A node that was down comes back (alone in its own component until
    /// [`Self::heal`]).
    pub fn revive_node(&mut self, node: u32) {
        if self.component_of(node).is_some() {
            return;
        }
        let nodes: BTreeSet<u32> = [node].into_iter().collect();
        let ring = self.new_ring(&nodes);
        self.components.push(Component {
            nodes,
            ring,
            ..Component::default()
        });
    }

    fn register(&mut self, me: MemberId) {
        self.inboxes.insert(me, Vec::new());
        self.quorum.insert(me, Vec::new());
        if let Some(c) = self.component_of(me.node) {
            let event = QuorumEvent {
                ring: self.components[c].ring,
                quorate: self.quorate(&self.components[c].nodes),
            };
            self.quorum.entry(me).or_default().push(event);
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
        bus.borrow_mut().register(me);
        Self {
            me,
            bus: bus.clone(),
        }
    }

    fn queue(&self, group: &str, op: Op) -> io::Result<()> {
        let mut bus = self.bus.borrow_mut();
        let c = bus
            .component_of(self.me.node)
            .ok_or_else(|| io::Error::other("node down"))?;
        bus.components[c].queue.push_back((group.to_string(), op));
        Ok(())
    }
}

impl Transport for SimTransport {
    fn local_id(&self) -> MemberId {
        self.me
    }

    fn join(&mut self, group: &str) -> io::Result<()> {
        self.queue(group, Op::Join(self.me))
    }

    fn leave(&mut self, group: &str) -> io::Result<()> {
        self.queue(group, Op::Leave(self.me))
    }

    fn send(&mut self, group: &str, payload: &[u8]) -> io::Result<()> {
        {
            let mut bus = self.bus.borrow_mut();
            if let Some(n) = bus.failing.get_mut(&self.me).filter(|n| **n > 0) {
                *n -= 1;
                return Err(io::Error::other("simulated send failure"));
            }
        }
        self.queue(group, Op::Send(self.me, payload.to_vec()))
    }

    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    fn dispatch(
        &mut self,
        _ready: Option<&[RawFd]>,
        out: &mut Vec<(String, TransportEvent)>,
        quorum: &mut Vec<QuorumEvent>,
    ) -> io::Result<()> {
        let mut bus = self.bus.borrow_mut();
        if let Some(q) = bus.quorum.get_mut(&self.me) {
            quorum.append(q);
        }
        if let Some(inbox) = bus.inboxes.get_mut(&self.me) {
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
    pub store: LogStore,
    /// Its transport.
    pub transport: SimTransport,
    /// Replies its kernel received.
    pub replies: Replies,
    /// The member id.
    pub me: MemberId,
    seq: u32,
    /// The log instance its kernel sends requests for.
    pub luid: u64,
}

/// The uuid every test log uses.
pub const UUID: &str = "LVM-test-mirror";

impl Node {
    /// Node `node` (process `pid`) on `bus`.
    pub fn new(node: u32, pid: u32, bus: &SharedBus) -> Self {
        let me = MemberId::new(node, pid);
        let mut store = LogStore::clustered(me, &std::env::temp_dir());
        store.set_device_policy(DevicePolicy::AlsoFiles);
        let mut n = Self {
            store,
            transport: SimTransport::new(me, bus),
            replies: Replies::default(),
            me,
            seq: 0,
            luid: u64::from(pid),
        };
        n.pump();
        n
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
        self.store
            .serve(&header, data, &self.replies, Instant::now());
        self.store.end_of_burst(&self.replies);
        self.store.flush_outbox(&mut self.transport, &self.replies);
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

    /// CTR with `text`; answered at once.
    pub fn construct(&mut self, text: &str) -> Answer {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        let seq = self.send(RequestType::Ctr, &data);
        self.answer(seq).expect("CTR is answered at once")
    }

    /// A request answered at once.
    pub fn ask(&mut self, kind: RequestType, words: &[u64]) -> Answer {
        let seq = self.send_words(kind, words);
        self.answer(seq)
            .unwrap_or_else(|| panic!("{} is answered at once", kind.name()))
    }

    /// Applies what the bus delivered, then sends what that produced.
    pub fn pump(&mut self) {
        let mut events = Vec::new();
        let mut quorum = Vec::new();
        self.transport
            .dispatch(None, &mut events, &mut quorum)
            .expect("the simulated bus never fails");
        for q in quorum {
            self.store.quorum_event(q, &self.replies);
        }
        for (group, event) in events {
            self.store.group_event(&group, event, &self.replies);
        }
        self.store.end_of_burst(&self.replies);
        self.store.flush_outbox(&mut self.transport, &self.replies);
    }

    /// As [`Self::pump`], but the groups' events before the quorum's news
    /// (corosync gives no order between the two).
    pub fn pump_groups_first(&mut self) {
        let mut events = Vec::new();
        let mut quorum = Vec::new();
        self.transport
            .dispatch(None, &mut events, &mut quorum)
            .expect("the simulated bus never fails");
        for (group, event) in events {
            self.store.group_event(&group, event, &self.replies);
        }
        for q in quorum {
            self.store.quorum_event(q, &self.replies);
        }
        self.store.end_of_burst(&self.replies);
        self.store.flush_outbox(&mut self.transport, &self.replies);
    }

    /// The group's shared state on this node, if it holds it.
    pub fn shared(&self) -> Option<&super::group::Shared> {
        self.store.cluster()?.group(UUID)?.shared()
    }
}

/// Runs the bus until nothing is queued and every node applied everything.
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
