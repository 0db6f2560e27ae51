// SPDX-License-Identifier: GPL-2.0

//! Random interleavings of three nodes' kernels, the simulated corosync,
//! partitions, merges, node failures and restarts, and failed sends, checked
//! after every step against what must hold whatever the order:
//!
//! - safety: a region a node may have written and not recovered since (it
//!   died, or was cut off and came back) is never reported in sync by a
//!   node that may answer FLUSHes. While the node is cut off and alive the
//!   region is not checked: without fencing, the majority cannot know it
//!   still writes (see the README's cluster section); the merge must then
//!   put the region out of sync again;
//! - quorum: a node cut off from the quorate side never gets a FLUSH it
//!   sent after the cut answered before the partition heals;
//! - durability: once the cluster is settled, every region a node's kernel
//!   may write is marked by that node (or out of sync) in every copy;
//! - agreement: once settled and whole, every copy of the state is equal;
//! - liveness: once healed, every request is answered and the resync
//!   finishes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ulog_proto::wire::RequestType as T;

use super::sim::{settle, Bus, Node, SharedBus};
use super::wire::{Message, Op};

const NODES: u32 = 3;
const REGIONS: u64 = 12;
/// 12 regions of 8 sectors, out of sync at the start. (With `nosync`,
/// losing every copy of the state would start it again all in sync, as the
/// table says: a documented limit, not something to test.)
const CORE: &str = "96 clustered-core 8";

#[derive(Clone, Debug)]
enum Action {
    /// The node's kernel writes a region (marking and flushing it first).
    Write(u32, u64),
    /// The node's kernel finishes writing its lowest writable region.
    Done(u32),
    /// The node's kernel takes the next step of its resync.
    Resync(u32),
    /// The bus delivers this many operations.
    Step(u8),
    /// Everything queued is delivered.
    Settle,
    /// The nodes of the mask (1..=6) go one way, the rest the other.
    Partition(u8),
    Heal,
    /// A node dies with its server.
    Crash(u32),
    /// A dead node boots again and rejoins.
    Restart(u32),
    /// Every node dies at once.
    PowerCut,
    /// The node's next send fails.
    FailSend(u32),
    /// The node takes in its groups' events before the quorum's news.
    GroupNewsFirst(u32),
}

fn action() -> impl Strategy<Value = Action> {
    let node = 1..=NODES;
    prop_oneof![
        6 => (node.clone(), 0..REGIONS).prop_map(|(n, r)| Action::Write(n, r)),
        3 => node.clone().prop_map(Action::Done),
        3 => node.clone().prop_map(Action::Resync),
        6 => (1u8..12).prop_map(Action::Step),
        2 => Just(Action::Settle),
        1 => (1u8..7).prop_map(Action::Partition),
        1 => Just(Action::Heal),
        1 => node.clone().prop_map(Action::Crash),
        1 => node.clone().prop_map(Action::Restart),
        1 => Just(Action::PowerCut),
        1 => node.clone().prop_map(Action::FailSend),
        2 => node.prop_map(Action::GroupNewsFirst),
    ]
}

/// What a node's kernel is doing, as dm-raid1 would.
#[derive(Default)]
struct Kernel {
    /// Regions marked and not cleared.
    marked: BTreeSet<u64>,
    /// Marked regions whose FLUSH was answered: the kernel may write them.
    writable: BTreeSet<u64>,
    /// The FLUSH in flight (one at a time), the regions it covers, and
    /// when it was sent.
    flush: Option<(u32, BTreeSet<u64>, u64)>,
    /// The RESUME in flight.
    resume: Option<u32>,
    /// The kernel must replay CTR and RESUME (an ESRCH answer).
    replay: bool,
    resync: Resync,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Resync {
    #[default]
    Idle,
    Asked(u32),
    /// Recovering a region, handed out at this time.
    Recovering(u64, u64),
}

struct World {
    /// The table every node loads.
    ctr: String,
    bus: SharedBus,
    nodes: BTreeMap<u32, Node>,
    kernels: BTreeMap<u32, Kernel>,
    pids: BTreeMap<u32, u32>,
    /// Ghost time: one tick per action.
    now: u64,
    /// Regions that may differ between the legs, and since when.
    unsafe_since: BTreeMap<u64, u64>,
    /// Nodes alive but cut off from the quorate side.
    cut_off: BTreeSet<u32>,
    /// When the current partition started.
    partitioned_at: Option<u64>,
    /// For each node cut off, the regions its batches delivered before the
    /// cut had marked: the quorate side knows them.
    known_marks: BTreeMap<u32, BTreeSet<u64>>,
    /// Nodes that died while cut off, with what they could write: to the
    /// others, still cut off (nothing tells them apart) until they boot.
    /// A region a recovery copies after the death is no longer held apart.
    dead_apart: BTreeMap<u32, BTreeSet<u64>>,
    /// When each node of `dead_apart` died.
    died_at: BTreeMap<u32, u64>,
}

impl World {
    fn new(ctr: &str) -> Self {
        let bus = Bus::new(NODES);
        let mut w = Self {
            ctr: ctr.to_string(),
            bus,
            nodes: BTreeMap::new(),
            kernels: BTreeMap::new(),
            pids: BTreeMap::new(),
            now: 0,
            unsafe_since: BTreeMap::new(),
            cut_off: BTreeSet::new(),
            partitioned_at: None,
            known_marks: BTreeMap::new(),
            dead_apart: BTreeMap::new(),
            died_at: BTreeMap::new(),
        };
        for n in 1..=NODES {
            w.boot(n);
        }
        w.settle();
        w
    }

    fn boot(&mut self, n: u32) {
        let pid = self.pids.get(&n).map_or(n * 100, |p| p + 1);
        self.pids.insert(n, pid);
        let mut node = Node::new(n, pid, &self.bus);
        assert_eq!(node.construct(&self.ctr), Ok(vec![]));
        let k = Kernel {
            resume: Some(node.send(T::Resume, &[])),
            ..Kernel::default()
        };
        self.nodes.insert(n, node);
        self.kernels.insert(n, k);
    }

    fn settle(&mut self) {
        let mut nodes: Vec<&mut Node> = self.nodes.values_mut().collect();
        settle(&self.bus, &mut nodes);
        self.collect();
    }

    fn step(&mut self, count: u8) {
        for _ in 0..count {
            self.bus.borrow_mut().step();
            for n in self.nodes.values_mut() {
                n.pump();
            }
        }
        self.collect();
    }

    /// Takes in the answers the kernels got.
    fn collect(&mut self) {
        self.now += 1;
        let World {
            nodes,
            kernels,
            unsafe_since,
            cut_off,
            partitioned_at,
            known_marks,
            now,
            ..
        } = self;
        for (id, node) in nodes.iter() {
            let k = kernels.get_mut(id).expect("a kernel per node");
            if let Some(seq) = k.resume {
                match node.answer(seq) {
                    Some(Ok(_)) => k.resume = None,
                    Some(Err(_)) => {
                        k.resume = None;
                        k.replay = true;
                    }
                    None => {}
                }
            }
            if let Some((seq, covered, sent)) = k.flush.clone() {
                match node.answer(seq) {
                    Some(Ok(_)) => {
                        let known = known_marks.get(id).cloned().unwrap_or_default();
                        let new_marks = covered
                            .iter()
                            .any(|r| !k.writable.contains(r) && !known.contains(r));
                        if cut_off.contains(id) && new_marks {
                            assert!(
                                partitioned_at.is_some_and(|p| sent <= p),
                                "node {id} cut off without quorum got a FLUSH sent after the \
                                 cut answered: covers {covered:?}, writable {:?}, known {known:?}",
                                k.writable
                            );
                            for &r in &covered {
                                unsafe_since.insert(r, *now);
                            }
                        }
                        k.writable.extend(covered.intersection(&k.marked));
                        k.flush = None;
                    }
                    Some(Err(e)) => {
                        k.flush = None;
                        if e == libc::ESRCH {
                            k.replay = true;
                        }
                        // EAGAIN: the kernel resends (the next action).
                    }
                    None => {}
                }
            }
            if let Resync::Asked(seq) = k.resync {
                match node.answer(seq) {
                    Some(Ok(w)) if w[0] == 1 => k.resync = Resync::Recovering(w[1], *now),
                    Some(Ok(_)) => k.resync = Resync::Idle,
                    Some(Err(e)) => {
                        k.resync = Resync::Idle;
                        k.replay |= e == libc::ESRCH;
                    }
                    None => {}
                }
            }
        }
    }

    /// The kernel replays CTR and RESUME when told to; true if busy.
    fn replaying(&mut self, n: u32) -> bool {
        let (Some(node), Some(k)) = (self.nodes.get_mut(&n), self.kernels.get_mut(&n)) else {
            return true;
        };
        if k.resume.is_some() {
            return true;
        }
        if k.replay {
            k.replay = false;
            assert_eq!(node.construct(&self.ctr), Ok(vec![]));
            k.resume = Some(node.send(T::Resume, &[]));
            return true;
        }
        false
    }

    fn flush(&mut self, n: u32) {
        let now = self.now;
        let (Some(node), Some(k)) = (self.nodes.get_mut(&n), self.kernels.get_mut(&n)) else {
            return;
        };
        let seq = node.send(T::Flush, &[]);
        k.flush = Some((seq, k.marked.clone(), now));
    }

    fn write(&mut self, n: u32, r: u64) {
        if self.replaying(n) {
            return;
        }
        let k = &self.kernels[&n];
        if k.writable.contains(&r) {
            return; // writes to a marked region need no request
        }
        if k.flush.is_some() {
            // One flush at a time: a new mark waits.
            return;
        }
        let node = self.nodes.get_mut(&n).expect("alive");
        if !k.marked.contains(&r) {
            let k = self.kernels.get_mut(&n).expect("kernel");
            match node.ask(T::MarkRegion, &[r]) {
                Ok(_) => {
                    k.marked.insert(r);
                }
                Err(e) => {
                    assert_eq!(e, libc::ESRCH);
                    k.replay = true;
                    return;
                }
            }
        }
        self.flush(n);
    }

    fn done(&mut self, n: u32) {
        if self.replaying(n) || self.kernels[&n].flush.is_some() {
            return;
        }
        let Some(&r) = self.kernels[&n].writable.iter().next() else {
            return;
        };
        let node = self.nodes.get_mut(&n).expect("alive");
        let k = self.kernels.get_mut(&n).expect("kernel");
        match node.ask(T::ClearRegion, &[r]) {
            Ok(_) => {
                k.writable.remove(&r);
                k.marked.remove(&r);
                self.flush(n);
            }
            Err(e) => {
                assert_eq!(e, libc::ESRCH);
                k.replay = true;
            }
        }
    }

    fn resync(&mut self, n: u32) {
        if self.replaying(n) {
            return;
        }
        let node = self.nodes.get_mut(&n).expect("alive");
        let k = self.kernels.get_mut(&n).expect("kernel");
        match k.resync {
            Resync::Idle => k.resync = Resync::Asked(node.send(T::GetResyncWork, &[])),
            Resync::Asked(_) => {}
            Resync::Recovering(r, at) => {
                // The copy is done: every leg has the primary's data.
                let seq = node.send_words(T::SetRegionSync, &[r, 1]);
                if node.answer(seq) == Some(Err(libc::ESRCH)) {
                    k.replay = true;
                    return;
                }
                if !k.marked.contains(&r) {
                    let seq = node.send_words(T::ClearRegion, &[r]);
                    k.replay |= node.answer(seq) == Some(Err(libc::ESRCH));
                }
                k.resync = Resync::Idle;
                // A dead node writes no more: a copy that started after it
                // died leaves the legs equal as far as it is concerned.
                for (n, w) in &mut self.dead_apart {
                    if self.died_at[n] < at {
                        w.remove(&r);
                    }
                }
                let held_apart = self
                    .cut_off
                    .iter()
                    .any(|c| self.kernels.get(c).is_some_and(|k| k.writable.contains(&r)))
                    || self.dead_apart.values().any(|w| w.contains(&r));
                if self.unsafe_since.get(&r).is_some_and(|&t| t < at) && !held_apart {
                    self.unsafe_since.remove(&r);
                }
            }
        }
    }

    fn quorate(&self, side: &[u32]) -> bool {
        side.len() * 2 > NODES as usize
    }

    fn partition(&mut self, mask: u8) {
        let alive: BTreeSet<u32> = self.nodes.keys().copied().collect();
        let a: Vec<u32> = alive
            .iter()
            .copied()
            .filter(|n| mask & (1 << (n - 1)) != 0)
            .collect();
        let b: Vec<u32> = alive.iter().copied().filter(|n| !a.contains(n)).collect();
        if a.is_empty() || b.is_empty() {
            return;
        }
        self.bus.borrow_mut().partition(&[&a, &b]);
        self.partitioned_at = Some(self.now);
        // What every node's batches marked, as delivered before the cut.
        self.known_marks.clear();
        for (_, from, bytes) in &self.bus.borrow().history {
            let Ok(Message::Batch(b)) = Message::decode(bytes) else {
                continue;
            };
            let known = self.known_marks.entry(from.node).or_default();
            for op in b.ops {
                match op {
                    Op::Mark(r) => {
                        known.insert(r);
                    }
                    Op::Clear(r) => {
                        known.remove(&r);
                    }
                    _ => {}
                }
            }
        }
        for side in [&a, &b] {
            if !self.quorate(side) {
                for n in side.iter().filter(|n| alive.contains(n)) {
                    self.cut_off.insert(*n);
                    for &r in &self.kernels[n].writable {
                        self.unsafe_since.insert(r, self.now);
                    }
                }
            }
        }
    }

    fn heal(&mut self) {
        self.bus.borrow_mut().heal();
        // What the cut-off nodes may have written meanwhile: the merge must
        // put it out of sync again.
        for n in std::mem::take(&mut self.cut_off) {
            if let Some(k) = self.kernels.get(&n) {
                for &r in &k.writable {
                    self.unsafe_since.insert(r, self.now);
                }
            }
        }
        self.partitioned_at = None;
    }

    fn power_cut(&mut self) {
        let all: Vec<u32> = self.nodes.keys().copied().collect();
        for n in all {
            self.crash_anyway(n);
        }
    }

    fn crash(&mut self, n: u32) {
        if self.nodes.len() <= 1 || !self.nodes.contains_key(&n) {
            return;
        }
        self.crash_anyway(n);
    }

    fn crash_anyway(&mut self, n: u32) {
        self.bus.borrow_mut().fail_node(n);
        self.nodes.remove(&n);
        if let Some(k) = self.kernels.remove(&n) {
            if self.cut_off.contains(&n) {
                self.dead_apart.insert(n, k.writable);
                self.died_at.insert(n, self.now);
            } else {
                for r in k.writable {
                    self.unsafe_since.insert(r, self.now);
                }
            }
        }
        self.cut_off.remove(&n);
    }

    fn restart(&mut self, n: u32) {
        if self.nodes.contains_key(&n) {
            return;
        }
        {
            let mut bus = self.bus.borrow_mut();
            bus.revive_node(n);
        }
        // It boots, and corosync brings it back into the cluster: what it
        // could write before it died (and no copy started since) must now
        // resync.
        self.heal();
        let died = self.died_at.remove(&n).unwrap_or(self.now);
        for r in self.dead_apart.remove(&n).into_iter().flatten() {
            let since = self.unsafe_since.entry(r).or_insert(died);
            *since = (*since).max(died);
        }
        self.boot(n);
    }

    fn apply(&mut self, a: &Action) {
        self.now += 1;
        match *a {
            Action::Write(n, r) if self.nodes.contains_key(&n) => self.write(n, r),
            Action::Done(n) if self.nodes.contains_key(&n) => self.done(n),
            Action::Resync(n) if self.nodes.contains_key(&n) => self.resync(n),
            Action::Step(k) => self.step(k),
            Action::Settle => self.settle(),
            Action::Partition(mask) if self.partitioned_at.is_none() => self.partition(mask),
            Action::Heal => self.heal(),
            Action::Crash(n) => self.crash(n),
            Action::Restart(n) => self.restart(n),
            Action::PowerCut => self.power_cut(),
            Action::GroupNewsFirst(n) => {
                if let Some(node) = self.nodes.get_mut(&n) {
                    node.pump_groups_first();
                }
            }
            Action::FailSend(n) => {
                if let Some(node) = self.nodes.get(&n) {
                    *self.bus.borrow_mut().failing.entry(node.me).or_insert(0) += 1;
                }
            }
            _ => {}
        }
        self.collect();
    }

    /// Safety: no node that may answer FLUSHes reports a region in sync
    /// that may differ between the legs (unless a live node cut off holds
    /// it: no fencing).
    fn check_safety(&self) {
        for (id, node) in &self.nodes {
            let Some(g) = node.store.cluster().and_then(|c| c.group(super::sim::UUID)) else {
                continue;
            };
            // A node answers from what it has heard: between a failure and
            // its news reaching a node (corosync's token timeout), nothing
            // can be done.
            if !g.is_open() || self.bus.borrow().has_news_for(node.me) {
                continue;
            }
            for (&r, &since) in &self.unsafe_since {
                let held_apart = self
                    .cut_off
                    .iter()
                    .any(|c| self.kernels.get(c).is_some_and(|k| k.writable.contains(&r)))
                    || self.dead_apart.values().any(|w| w.contains(&r));
                assert!(
                    held_apart || !g.reports_in_sync(r),
                    "node {id} reports region {r} in sync, unsafe since {since} (now {})",
                    self.now
                );
            }
        }
    }

    /// Durability and agreement, once everything is delivered.
    fn check_settled(&self) {
        let me = |n: u32| self.nodes[&n].me;
        let open: Vec<(&u32, &Node)> = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                !self.cut_off.contains(id)
                    && n.shared().is_some()
                    && n.store
                        .cluster()
                        .unwrap()
                        .group(super::sim::UUID)
                        .unwrap()
                        .is_open()
            })
            .collect();
        for (_, v) in &open {
            let s = v.shared().expect("open nodes hold the state").log();
            for (n, k) in &self.kernels {
                if self.cut_off.contains(n) {
                    continue;
                }
                for &r in &k.writable {
                    assert!(
                        s.marked_by(me(*n), r) || !s.in_sync(r).unwrap(),
                        "node {n} may write region {r}, which {} does not have marked",
                        v.me
                    );
                }
            }
        }
        if self.cut_off.is_empty() && self.partitioned_at.is_none() {
            for w in open.windows(2) {
                let (a, b) = (w[0].1.shared().unwrap(), w[1].1.shared().unwrap());
                assert!(a.same_as(b), "copies differ: {a:?} vs {b:?}");
            }
        }
    }

    /// Boots the dead nodes, heals everything (so the cluster is quorate)
    /// and drives the kernels until nothing is left to do.
    fn finish(&mut self) {
        for n in 1..=NODES {
            self.restart(n);
        }
        self.heal();
        self.settle();
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for _ in 0..200 {
            for &n in &ids {
                self.replaying(n);
                let k = &self.kernels[&n];
                let idle = k.flush.is_none() && k.resume.is_none();
                if idle && !k.marked.is_subset(&k.writable) {
                    self.flush(n);
                } else if idle && !k.writable.is_empty() {
                    self.done(n);
                }
                self.resync(n);
            }
            self.settle();
            self.check_safety();
            let idle = ids.iter().all(|n| {
                let k = &self.kernels[n];
                k.flush.is_none()
                    && k.resume.is_none()
                    && !k.replay
                    && k.writable.is_empty()
                    && k.marked.is_empty()
                    && k.resync == Resync::Idle
            });
            let synced = ids.iter().all(|n| {
                self.nodes[n]
                    .shared()
                    .is_some_and(|s| s.log().sync_count() == REGIONS)
            });
            if idle && synced {
                self.check_settled();
                return;
            }
        }
        panic!("the cluster never finished its requests and resync");
    }
}

fn run(ctr: &str, actions: &[Action]) {
    let mut w = World::new(ctr);
    for a in actions {
        w.apply(a);
        w.check_safety();
        if matches!(a, Action::Settle) {
            w.check_settled();
        }
    }
    w.finish();
}

proptest! {
    // PROPTEST_CASES=20000 for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_interleaving_reports_a_written_region_in_sync(actions in prop::collection::vec(action(), 1..80)) {
        run(CORE, &actions);
    }

    #[test]
    fn no_interleaving_loses_a_mark_of_a_shared_disk_log(actions in prop::collection::vec(action(), 1..80)) {
        let tmp = crate::test_util::TempDir::new();
        let dev = tmp.path().join("log");
        std::fs::write(&dev, vec![0u8; 1 << 12]).unwrap();
        run(&format!("96 clustered-disk {} 8", dev.display()), &actions);
    }
}
