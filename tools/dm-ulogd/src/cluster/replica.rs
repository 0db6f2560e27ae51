// SPDX-License-Identifier: GPL-2.0

//! The state of one clustered log that every member holds a copy of. Every
//! change comes from a totally ordered group event (a message or a
//! membership change) and is deterministic, so members that applied the same
//! events hold the same state.
//!
//! - Each member's marks are kept apart: a region is clean only when no
//!   member has it marked.
//! - A region is recovered by one member at a time (`recovering`).
//! - A member that leaves takes its marks with it: the regions it had marked
//!   may have been half written, so they become out of sync and the resync
//!   scan starts over.
//! - Join bookkeeping: which members hold the state (`stateful`) and, for
//!   each joiner still waiting for it, how many group events it has seen
//!   (`awaiting`), so a checkpoint says where the joiner's replay starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::wire::{Barrier, Batch, DecodeError, Op, Reader, Writer};
use crate::bitmap;
use crate::member::{ConfigChange, MemberId};

/// Priority requests kept at most (each is only a hint for the scan).
const MAX_PRIORITY: usize = 1024;

/// One clustered log's shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    region_count: u64,
    region_size: u32,
    sync: Vec<u64>,
    sync_count: u64,
    marks: BTreeMap<MemberId, BTreeSet<u64>>,
    recovering: BTreeMap<u64, MemberId>,
    /// Next region the resync scan looks at (dm-log's `sync_search`).
    sync_search: u64,
    /// Regions a member waits to write: recovered before the scan's.
    priority: VecDeque<u64>,
    members: BTreeSet<MemberId>,
    stateful: BTreeSet<MemberId>,
    awaiting: BTreeMap<MemberId, u64>,
}

impl Replica {
    /// A log as its constructor makes it: nothing marked; every region in
    /// sync (`nosync`) or none.
    pub fn new(region_count: u64, region_size: u32, all_in_sync: bool) -> Self {
        let mut sync = vec![0; bitmap::words_for(region_count)];
        bitmap::fill(&mut sync, region_count, all_in_sync);
        Self {
            region_count,
            region_size,
            sync,
            sync_count: if all_in_sync { region_count } else { 0 },
            marks: BTreeMap::new(),
            recovering: BTreeMap::new(),
            sync_search: 0,
            priority: VecDeque::new(),
            members: BTreeSet::new(),
            stateful: BTreeSet::new(),
            awaiting: BTreeMap::new(),
        }
    }

    /// Number of regions.
    pub fn region_count(&self) -> u64 {
        self.region_count
    }

    /// Region size in sectors.
    pub fn region_size(&self) -> u32 {
        self.region_size
    }

    /// Whether `region` is in sync.
    pub fn in_sync(&self, region: u64) -> bool {
        bitmap::test(&self.sync, region)
    }

    /// Regions in sync.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// The first region out of sync, or the region count.
    pub fn first_unsynced(&self) -> u64 {
        bitmap::next_zero(&self.sync, 0, self.region_count)
    }

    /// Whether any member has `region` marked.
    pub fn is_marked(&self, region: u64) -> bool {
        self.marks.values().any(|set| set.contains(&region))
    }

    /// Whether `member` has `region` marked.
    pub fn marked_by(&self, member: MemberId, region: u64) -> bool {
        self.marks.get(&member).is_some_and(|s| s.contains(&region))
    }

    /// Regions `member` has marked.
    pub fn marks_of(&self, member: MemberId) -> usize {
        self.marks.get(&member).map_or(0, BTreeSet::len)
    }

    /// Who recovers `region`, if anyone.
    pub fn recoverer(&self, region: u64) -> Option<MemberId> {
        self.recovering.get(&region).copied()
    }

    /// The group's members.
    pub fn members(&self) -> &BTreeSet<MemberId> {
        &self.members
    }

    /// Members that hold the state.
    pub fn stateful(&self) -> &BTreeSet<MemberId> {
        &self.stateful
    }

    /// Joiners waiting for the state, with the events they saw since.
    pub fn awaiting(&self) -> &BTreeMap<MemberId, u64> {
        &self.awaiting
    }

    /// The member that sends joiners the state: the lowest that holds it.
    pub fn checkpoint_sender(&self) -> Option<MemberId> {
        self.stateful.iter().next().copied()
    }

    fn set_sync(&mut self, region: u64, value: bool) -> bool {
        let changed = if value {
            bitmap::set(&mut self.sync, region)
        } else {
            bitmap::clear(&mut self.sync, region)
        };
        if changed {
            if value {
                self.sync_count += 1;
            } else {
                self.sync_count -= 1;
            }
        }
        changed
    }

    /// Counts one more group event for every joiner still waiting.
    fn tick(&mut self) {
        for seen in self.awaiting.values_mut() {
            *seen += 1;
        }
    }

    fn apply_op(&mut self, from: MemberId, op: Op) {
        match op {
            Op::Mark(r) if r < self.region_count => {
                self.marks.entry(from).or_default().insert(r);
            }
            Op::Clear(r) => {
                if let Some(set) = self.marks.get_mut(&from) {
                    set.remove(&r);
                    if set.is_empty() {
                        self.marks.remove(&from);
                    }
                }
            }
            Op::SetSync(r, value) if r < self.region_count => {
                if self.recovering.get(&r) == Some(&from) {
                    self.recovering.remove(&r);
                }
                self.set_sync(r, value);
            }
            Op::Prioritize(r) if r < self.region_count => {
                if !self.in_sync(r)
                    && !self.recovering.contains_key(&r)
                    && !self.priority.contains(&r)
                    && self.priority.len() < MAX_PRIORITY
                {
                    self.priority.push_back(r);
                }
            }
            // Checked by the sender; a bad region changes nothing anywhere.
            Op::Mark(_) | Op::SetSync(..) | Op::Prioritize(_) => {}
        }
    }

    /// GET_RESYNC_WORK from `from`: the region it already recovers (its
    /// kernel asks again after losing the answer), else the first priority
    /// request still out of sync, else the scan's next region out of sync
    /// and not being recovered. The scan only moves forward until a member
    /// leaves.
    fn assign_resync_work(&mut self, from: MemberId) -> Option<u64> {
        if let Some((&r, _)) = self.recovering.iter().find(|(_, &m)| m == from) {
            return Some(r);
        }
        while let Some(r) = self.priority.pop_front() {
            if !self.in_sync(r) && !self.recovering.contains_key(&r) {
                self.recovering.insert(r, from);
                return Some(r);
            }
        }
        let n = self.region_count;
        while self.sync_search < n {
            let r = bitmap::next_zero(&self.sync, self.sync_search, n);
            self.sync_search = r + 1;
            if r >= n {
                break;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.recovering.entry(r) {
                slot.insert(from);
                return Some(r);
            }
        }
        None
    }

    /// A batch from `from`: its operations in order, then its barrier.
    /// Returns the region a GET_RESYNC_WORK barrier assigned.
    pub fn apply_batch(&mut self, from: MemberId, batch: &Batch) -> Option<u64> {
        for &op in &batch.ops {
            self.apply_op(from, op);
        }
        let assigned = match batch.barrier {
            Barrier::ResyncWork => self.assign_resync_work(from),
            Barrier::None | Barrier::Flush => None,
        };
        self.tick();
        assigned
    }

    /// A membership change. Returns whether regions went out of sync or
    /// recoveries were abandoned, so the resync scan restarted.
    pub fn apply_change(&mut self, change: &ConfigChange) -> bool {
        self.tick();
        self.members = change.members.iter().copied().collect();
        let mut restarted = false;
        for gone in &change.left {
            if let Some(set) = self.marks.remove(gone) {
                for r in set {
                    restarted |= self.set_sync(r, false);
                }
            }
            let before = self.recovering.len();
            self.recovering.retain(|_, m| m != gone);
            restarted |= self.recovering.len() != before;
        }
        // Whoever is not a member any more holds nothing.
        let members = &self.members;
        self.stateful.retain(|m| members.contains(m));
        self.awaiting.retain(|m, _| members.contains(m));
        let stale: Vec<MemberId> = self
            .marks
            .keys()
            .filter(|m| !members.contains(m))
            .copied()
            .collect();
        for m in stale {
            for r in self.marks.remove(&m).unwrap_or_default() {
                restarted |= self.set_sync(r, false);
            }
        }
        for &j in &change.joined {
            if self.members.contains(&j) && !self.stateful.contains(&j) {
                self.awaiting.insert(j, 0);
            }
        }
        if restarted {
            self.sync_search = 0;
        }
        restarted
    }

    /// A checkpoint was delivered: its targets hold the state from now on.
    pub fn apply_checkpoint(&mut self, targets: &[(MemberId, u64)]) {
        for (m, _) in targets {
            if self.awaiting.remove(m).is_some() {
                self.stateful.insert(*m);
            }
        }
        self.tick();
    }

    /// Takes the state over as its only holder, when no member that held it
    /// is left (the first member, or the survivors of a group whose holders
    /// all left): what anyone had marked may be half written, so it is out
    /// of sync, and nothing is being recovered any more.
    pub fn restart_alone(
        &mut self,
        me: MemberId,
        members: &[MemberId],
        awaiting: BTreeMap<MemberId, u64>,
    ) {
        let marked: BTreeSet<u64> = self.marks.values().flatten().copied().collect();
        for r in marked {
            self.set_sync(r, false);
        }
        self.marks.clear();
        self.recovering.clear();
        self.priority.clear();
        self.sync_search = 0;
        self.members = members.iter().copied().collect();
        self.members.insert(me);
        self.stateful = [me].into_iter().collect();
        self.awaiting = awaiting;
    }

    /// The state as a checkpoint snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.region_count);
        w.u32(self.region_size);
        let runs = sync_runs(&self.sync, self.region_count);
        w.u64(runs.len() as u64);
        for (from, to) in runs {
            w.u64(from);
            w.u64(to);
        }
        w.u64(self.marks.len() as u64);
        for (m, set) in &self.marks {
            w.u64(m.to_u64());
            w.u64(set.len() as u64);
            for &r in set {
                w.u64(r);
            }
        }
        w.u64(self.recovering.len() as u64);
        for (&r, m) in &self.recovering {
            w.u64(r);
            w.u64(m.to_u64());
        }
        w.u64(self.sync_search);
        w.u64(self.priority.len() as u64);
        for &r in &self.priority {
            w.u64(r);
        }
        for set in [&self.members, &self.stateful] {
            w.u64(set.len() as u64);
            for m in set {
                w.u64(m.to_u64());
            }
        }
        w.u64(self.awaiting.len() as u64);
        for (m, &seen) in &self.awaiting {
            w.u64(m.to_u64());
            w.u64(seen);
        }
        w.0
    }

    /// A snapshot made by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bad = |why| Err(DecodeError(why));
        let mut r = Reader(bytes);
        let region_count = r.u64()?;
        let region_size = r.u32()?;
        if region_count > crate::ctr_args::MAX_REGIONS {
            return bad("snapshot with too many regions");
        }
        let mut replica = Self::new(region_count, region_size, false);
        for _ in 0..r.count(16)? {
            let (from, to) = (r.u64()?, r.u64()?);
            if from >= to || to > region_count {
                return bad("snapshot with a bad sync range");
            }
            bitmap::set_range(&mut replica.sync, from, to);
        }
        replica.sync_count = bitmap::count_ones(&replica.sync);
        for _ in 0..r.count(16)? {
            let m = MemberId::from_u64(r.u64()?);
            let mut set = BTreeSet::new();
            for _ in 0..r.count(8)? {
                let region = r.u64()?;
                if region >= region_count {
                    return bad("snapshot with a bad mark");
                }
                set.insert(region);
            }
            replica.marks.insert(m, set);
        }
        for _ in 0..r.count(16)? {
            let region = r.u64()?;
            if region >= region_count {
                return bad("snapshot with a bad recovering region");
            }
            replica
                .recovering
                .insert(region, MemberId::from_u64(r.u64()?));
        }
        replica.sync_search = r.u64()?;
        for _ in 0..r.count(8)? {
            replica.priority.push_back(r.u64()?);
        }
        for set in [&mut replica.members, &mut replica.stateful] {
            for _ in 0..r.count(8)? {
                set.insert(MemberId::from_u64(r.u64()?));
            }
        }
        for _ in 0..r.count(16)? {
            replica
                .awaiting
                .insert(MemberId::from_u64(r.u64()?), r.u64()?);
        }
        if !r.is_empty() {
            return bad("snapshot with trailing bytes");
        }
        Ok(replica)
    }
}

/// The runs `[from, to)` of regions in sync: a few numbers for a log that
/// is (nearly) all in sync or all out of sync.
fn sync_runs(words: &[u64], count: u64) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut bit = 0;
    while bit < count {
        let w = (bit / 64) as usize;
        let word = words[w] >> (bit % 64);
        if word == 0 {
            bit = (bit / 64 + 1) * 64;
            continue;
        }
        let from = bit + u64::from(word.trailing_zeros());
        if from >= count {
            break;
        }
        let to = bitmap::next_zero(words, from, count);
        runs.push((from, to));
        bit = to;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MemberId = MemberId::new(1, 10);
    const B: MemberId = MemberId::new(2, 20);

    fn batch(ops: &[Op], barrier: Barrier) -> Batch {
        Batch {
            ops: ops.to_vec(),
            barrier,
        }
    }

    #[test]
    fn clean_only_when_no_member_marks() {
        let mut r = Replica::new(10, 8, true);
        r.apply_batch(A, &batch(&[Op::Mark(3)], Barrier::Flush));
        r.apply_batch(B, &batch(&[Op::Mark(3), Op::Mark(4)], Barrier::Flush));
        r.apply_batch(A, &batch(&[Op::Clear(3)], Barrier::None));
        assert!(r.is_marked(3), "B still writes region 3");
        r.apply_batch(B, &batch(&[Op::Clear(3), Op::Clear(4)], Barrier::None));
        assert!(!r.is_marked(3) && !r.is_marked(4));
        r.apply_batch(A, &batch(&[Op::Mark(99)], Barrier::Flush));
        assert_eq!(r.marks_of(A), 0, "out of range changes nothing");
    }

    #[test]
    fn one_recoverer_per_region() {
        let mut r = Replica::new(4, 8, false);
        let ra = r.apply_batch(A, &batch(&[], Barrier::ResyncWork));
        let rb = r.apply_batch(B, &batch(&[], Barrier::ResyncWork));
        assert_eq!((ra, rb), (Some(0), Some(1)));
        assert_eq!(
            r.apply_batch(A, &batch(&[], Barrier::ResyncWork)),
            Some(0),
            "asking again returns the region A already recovers"
        );
        assert_eq!(r.recoverer(1), Some(B));
        r.apply_batch(
            B,
            &batch(
                &[Op::SetSync(1, true), Op::Prioritize(3)],
                Barrier::ResyncWork,
            ),
        );
        assert_eq!(r.recoverer(3), Some(B), "priority request first");
        assert_eq!(r.sync_count(), 1);
        r.apply_batch(A, &batch(&[Op::SetSync(0, true)], Barrier::None));
        r.apply_batch(B, &batch(&[Op::SetSync(3, true)], Barrier::None));
        assert_eq!(r.apply_batch(A, &batch(&[], Barrier::ResyncWork)), Some(2));
        assert_eq!(r.apply_batch(B, &batch(&[], Barrier::ResyncWork)), None);
        r.apply_batch(A, &batch(&[Op::SetSync(2, true)], Barrier::None));
        assert_eq!(r.sync_count(), 4);
        assert_eq!(r.first_unsynced(), 4);
    }

    #[test]
    fn a_departed_members_marks_go_out_of_sync() {
        let mut r = Replica::new(100, 8, true);
        r.apply_change(&ConfigChange {
            members: vec![A, B],
            joined: vec![A, B],
            left: vec![],
        });
        r.apply_batch(A, &batch(&[Op::Mark(5), Op::Mark(6)], Barrier::Flush));
        r.apply_batch(B, &batch(&[Op::Mark(6), Op::Mark(70)], Barrier::Flush));
        r.apply_batch(B, &batch(&[], Barrier::ResyncWork));
        let restarted = r.apply_change(&ConfigChange {
            members: vec![B],
            joined: vec![],
            left: vec![A],
        });
        assert!(restarted);
        assert!(!r.in_sync(5) && !r.in_sync(6) && r.in_sync(70));
        assert_eq!(r.sync_count(), 98);
        assert!(r.is_marked(6), "B's own mark stays");
        assert_eq!(r.apply_batch(B, &batch(&[], Barrier::ResyncWork)), Some(5));
        assert!(!r.apply_change(&ConfigChange {
            members: vec![B],
            joined: vec![],
            left: vec![],
        }));
    }

    #[test]
    fn snapshots_round_trip() {
        let mut r = Replica::new(1000, 1024, false);
        for i in (0..1000).filter(|i| i % 7 != 0 && *i != 999) {
            r.set_sync(i, true);
        }
        r.apply_change(&ConfigChange {
            members: vec![A, B],
            joined: vec![B],
            left: vec![],
        });
        r.stateful.insert(A);
        r.apply_batch(A, &batch(&[Op::Mark(1), Op::Mark(998)], Barrier::Flush));
        r.apply_batch(A, &batch(&[Op::Prioritize(14)], Barrier::ResyncWork));
        r.apply_batch(A, &batch(&[Op::Prioritize(21)], Barrier::None));
        let copy = Replica::decode(&r.encode()).unwrap();
        assert_eq!(copy, r);
        assert_eq!(copy.awaiting().get(&B), Some(&3));
        let full = Replica::new(1 << 24, 8, true);
        assert!(full.encode().len() < 128, "one run for a log all in sync");
        assert_eq!(Replica::decode(&full.encode()).unwrap(), full);
        let bytes = r.encode();
        for n in 0..bytes.len() {
            assert!(Replica::decode(&bytes[..n]).is_err());
        }
    }
}
