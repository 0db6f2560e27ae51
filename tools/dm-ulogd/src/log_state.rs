// SPDX-License-Identifier: GPL-2.0

//! The state of one dirty log, as the kernel's own `core` and `disk` logs
//! keep it (drivers/md/dm-log.c), for one node or for a cluster: a clean
//! bitmap (region not being written; what a disk log writes to its device),
//! a sync bitmap (region identical on all legs), the regions handed out for
//! resync and who recovers each, regions waiting for priority recovery, and
//! the resync cursor.
//!
//! Both modes of the server use this one type. On one node every mark and
//! recovery belongs to [`MemberId::LOCAL`] and a clear makes a region clean,
//! as in dm-log. Shared by the nodes of a cluster (see [`Sharing`]), it
//! follows cmirrord: it remembers which member marked which region, a region
//! becomes clean only when no member has it marked and it is in sync, a
//! member that leaves takes its marks out of sync, and only the member a
//! region was handed to may report it in sync.
//!
//! Every operation is pure: no I/O and no clock. Committing a disk log is
//! the caller's job: [`LogState::pending_commit`] says what changed since the
//! last commit, [`LogState::commit_done`] records that it is on the device.
//! Every change of a sync bit goes through one function, `set_sync`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::bitmap;
use crate::ctr_args::{LogConfig, LogKind, SyncMode, MAX_REGIONS};
use crate::disk_format::{self, CHUNK_WORDS};
use crate::member::MemberId;
use crate::state_file::{StateFile, MAPS};
use crate::wire_codec::{DecodeError, Reader, Writer};

/// Priority requests kept at most (each is only a hint for the scan).
const MAX_PRIORITY: usize = 1024;

/// Where a log is in its kernel-driven lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Constructed, never resumed: a disk log has not read its device yet.
    Constructed = 1,
    /// Resumed: serving I/O.
    Resumed = 2,
    /// Suspended (after POSTSUSPEND).
    Suspended = 3,
}

impl Lifecycle {
    fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Constructed),
            2 => Some(Self::Resumed),
            3 => Some(Self::Suspended),
            _ => None,
        }
    }

    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constructed => "constructed",
            Self::Resumed => "resumed",
            Self::Suspended => "suspended",
        }
    }
}

/// A region number at or past the end of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("region {region} is out of range (the log has {count} regions)")]
pub struct OutOfRange {
    /// The region asked for.
    pub region: u64,
    /// Regions in the log.
    pub count: u64,
}

/// Where the clean and sync bitmaps live: on the heap, or in a mapped state
/// file that outlives the process.
#[derive(Debug)]
pub enum Backing {
    /// Heap memory (cluster mode, tests, a server without a state directory).
    Memory(Vec<u64>),
    /// A mapped state file.
    File(StateFile),
}

impl Backing {
    /// Heap memory for a log of `region_count` regions.
    pub fn memory(region_count: u64) -> Self {
        Self::Memory(vec![0; bitmap::words_for(region_count) * MAPS])
    }

    fn words(&self) -> &[u64] {
        match self {
            Self::Memory(v) => v,
            Self::File(f) => f.bitmaps(),
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Self::Memory(v) => v,
            Self::File(f) => f.bitmaps_mut(),
        }
    }

    /// The state file, if any.
    pub fn state_file(&self) -> Option<&StateFile> {
        match self {
            Self::Memory(_) => None,
            Self::File(f) => Some(f),
        }
    }

    /// Takes the state file out (to delete it).
    pub fn into_state_file(self) -> Option<StateFile> {
        match self {
            Self::Memory(_) => None,
            Self::File(f) => Some(f),
        }
    }
}

/// Who may change the log: this node's kernel alone, or the kernels of
/// several nodes (cluster mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// One node (dm-log's rules).
    Single,
    /// Several nodes (cmirrord's rules).
    Shared,
}

/// What a disk commit must write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPlan {
    /// Write the whole image, header included.
    pub full: bool,
    /// A region became dirty (or the header changed): the write must be
    /// durable before the reply. Clears alone are written lazily, as dm-log
    /// does.
    pub needs_sync: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Dirty {
    /// One bit per bitmap chunk changed since the last commit.
    chunks: Vec<u64>,
    any: bool,
    marks: bool,
    full: bool,
}

/// One dirty log's state.
#[derive(Debug)]
pub struct LogState {
    kind: LogKind,
    sync_mode: SyncMode,
    sharing: Sharing,
    region_size: u32,
    region_count: u64,
    words: usize,
    backing: Backing,
    sync_count: u64,
    /// Next region `get_resync_work` looks at (dm-log's `sync_search`).
    sync_search: u64,
    /// Regions handed out for resync, and to whom.
    recovering: BTreeMap<u64, MemberId>,
    /// Regions a member waits to write: recovered before the scan's.
    priority: VecDeque<u64>,
    /// Who has which region marked (shared logs only).
    marks: BTreeMap<MemberId, BTreeSet<u64>>,
    /// Regions kept dirty whatever the clears (shared logs: what a node
    /// that went away may still write), so a disk log keeps them for the
    /// next activation.
    pinned: BTreeSet<u64>,
    lifecycle: Lifecycle,
    device_failed: bool,
    dirty: Dirty,
}

impl LogState {
    /// A new log as dm-log's `create_log_context` makes it: all regions
    /// clean; in sync only with `nosync`; nothing recovering.
    pub fn new(config: &LogConfig, sharing: Sharing, backing: Backing) -> Self {
        let mut log = Self::empty(config, sharing, backing);
        log.reset();
        log
    }

    /// Makes this a freshly constructed log again, as [`Self::new`] does.
    pub fn reset(&mut self) {
        let n = self.region_count;
        let nosync = self.sync_mode == SyncMode::NoSync;
        let (clean, sync) = self.maps_mut();
        bitmap::fill(clean, n, true);
        bitmap::fill(sync, n, nosync);
        self.sync_count = if nosync { n } else { 0 };
        self.sync_search = 0;
        self.recovering.clear();
        self.priority.clear();
        self.marks.clear();
        self.pinned.clear();
        self.lifecycle = Lifecycle::Constructed;
        self.device_failed = false;
        self.commit_done();
        self.persist_meta();
    }

    /// A single-node log brought back from its state file after a server
    /// restart.
    ///
    /// The clean and sync bitmaps are taken as they are. The recoveries and
    /// the resync cursor are reset: a GET_RESYNC_WORK whose reply died with
    /// the old server is resent by the kernel, and a region left recovering
    /// would never be handed out again. (dm-raid1 recovers one region at a
    /// time and reports it with SET_REGION_SYNC before asking for more, so
    /// nothing is being recovered when it asks.) A disk log is marked fully
    /// dirty: its device may lack marks the old server applied but had not
    /// flushed yet.
    pub fn restore(config: &LogConfig, backing: Backing) -> Self {
        let (lifecycle, flags) = match backing.state_file() {
            Some(f) => (Lifecycle::from_raw(f.lifecycle()), f.flags()),
            None => (None, 0),
        };
        let mut log = Self::empty(config, Sharing::Single, backing);
        log.lifecycle = lifecycle.unwrap_or(Lifecycle::Constructed);
        log.device_failed = flags & 1 != 0;
        let n = log.region_count;
        let (clean, sync) = log.maps_mut();
        bitmap::clear_range(clean, n, u64::MAX);
        bitmap::clear_range(sync, n, u64::MAX);
        log.sync_count = bitmap::count_ones(log.maps().1);
        if log.kind == LogKind::Disk && log.lifecycle != Lifecycle::Constructed {
            log.mark_all_dirty();
        }
        log
    }

    fn empty(config: &LogConfig, sharing: Sharing, backing: Backing) -> Self {
        let words = bitmap::words_for(config.region_count);
        let chunks = words.div_ceil(CHUNK_WORDS) as u64;
        Self {
            kind: config.kind,
            sync_mode: config.sync,
            sharing,
            region_size: config.region_size,
            region_count: config.region_count,
            words,
            backing,
            sync_count: 0,
            sync_search: 0,
            recovering: BTreeMap::new(),
            priority: VecDeque::new(),
            marks: BTreeMap::new(),
            pinned: BTreeSet::new(),
            lifecycle: Lifecycle::Constructed,
            device_failed: false,
            dirty: Dirty {
                chunks: if config.kind == LogKind::Disk {
                    vec![0; bitmap::words_for(chunks)]
                } else {
                    Vec::new()
                },
                ..Dirty::default()
            },
        }
    }

    fn maps(&self) -> (&[u64], &[u64]) {
        let words = &self.backing.words()[..2 * self.words];
        words.split_at(self.words)
    }

    fn maps_mut(&mut self) -> (&mut [u64], &mut [u64]) {
        let words = self.words;
        let all = &mut self.backing.words_mut()[..2 * words];
        all.split_at_mut(words)
    }

    fn persist_meta(&mut self) {
        let (lifecycle, flags) = (self.lifecycle as u32, u32::from(self.device_failed));
        if let Backing::File(f) = &mut self.backing {
            f.set_meta(lifecycle, flags);
        }
    }

    fn check(&self, region: u64) -> Result<(), OutOfRange> {
        if region < self.region_count {
            Ok(())
        } else {
            Err(OutOfRange {
                region,
                count: self.region_count,
            })
        }
    }

    fn check_all(&self, regions: &[u64]) -> Result<(), OutOfRange> {
        regions.iter().try_for_each(|&r| self.check(r))
    }

    fn note_clean_change(&mut self, region: u64, became_dirty: bool) {
        if self.kind != LogKind::Disk {
            return;
        }
        let chunk = region / 64 / CHUNK_WORDS as u64;
        bitmap::set(&mut self.dirty.chunks, chunk);
        self.dirty.any = true;
        self.dirty.marks |= became_dirty;
    }

    fn set_clean(&mut self, region: u64, clean: bool) {
        let changed = if clean {
            bitmap::set(self.maps_mut().0, region)
        } else {
            bitmap::clear(self.maps_mut().0, region)
        };
        if changed {
            self.note_clean_change(region, !clean);
        }
    }

    /// The only place a sync bit changes. Returns whether it did.
    fn set_sync(&mut self, region: u64, in_sync: bool) -> bool {
        let changed = if in_sync {
            bitmap::set(self.maps_mut().1, region)
        } else {
            bitmap::clear(self.maps_mut().1, region)
        };
        if changed {
            if in_sync {
                self.sync_count += 1;
            } else {
                self.sync_count -= 1;
            }
        }
        changed
    }

    /// Core or disk.
    pub fn kind(&self) -> LogKind {
        self.kind
    }

    /// Region size in sectors.
    pub fn region_size(&self) -> u32 {
        self.region_size
    }

    /// Number of regions.
    pub fn region_count(&self) -> u64 {
        self.region_count
    }

    /// The lifecycle state.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// Whether a write to the log device has failed (status `D`).
    pub fn device_failed(&self) -> bool {
        self.device_failed
    }

    /// Records a log device failure (sticky for this log, as in dm-log).
    pub fn set_device_failed(&mut self) {
        if !self.device_failed {
            self.device_failed = true;
            self.persist_meta();
        }
    }

    /// The backing store.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Gives the state file, once the bitmaps are initialised, its real name.
    pub fn publish_state_file(&mut self) -> std::io::Result<()> {
        match &mut self.backing {
            Backing::File(f) => f.publish(),
            Backing::Memory(_) => Ok(()),
        }
    }

    /// Gives up the backing store (the log is being destroyed).
    pub fn into_backing(self) -> Backing {
        self.backing
    }

    /// RESUME of a core log: restart the resync scan (dm-log `core_resume`).
    pub fn resume_core(&mut self) {
        self.sync_search = 0;
        self.lifecycle = Lifecycle::Resumed;
        self.persist_meta();
    }

    /// RESUME of a disk log, from its device (dm-log `disk_resume`): the
    /// first `trusted` regions take their clean bit from `on_disk`; the rest
    /// are clean and in sync with `nosync`, dirty and out of sync otherwise;
    /// then the sync bitmap becomes a copy of the clean one. The whole image
    /// must then be written back (see [`Self::pending_commit`]).
    pub fn resume_from_disk(&mut self, trusted: u64, on_disk: &[u8]) {
        let n = self.region_count;
        let nosync = self.sync_mode == SyncMode::NoSync;
        let trusted = trusted.min(n);
        let (clean, sync) = self.maps_mut();
        disk_format::load_bits(on_disk, clean, trusted);
        if nosync {
            bitmap::set_range(clean, trusted, n);
        } else {
            bitmap::clear_range(clean, trusted, n);
        }
        bitmap::clear_range(clean, n, u64::MAX);
        sync.copy_from_slice(clean);
        self.sync_count = bitmap::count_ones(self.maps().1);
        self.sync_search = 0;
        self.recovering.clear();
        self.priority.clear();
        self.marks.clear();
        self.lifecycle = Lifecycle::Resumed;
        self.persist_meta();
        self.mark_all_dirty();
    }

    /// POSTSUSPEND: the mirror is suspended. A log never resumed stays
    /// constructed: a disk log has still not read its device.
    pub fn suspend(&mut self) {
        if self.lifecycle == Lifecycle::Resumed {
            self.lifecycle = Lifecycle::Suspended;
            self.persist_meta();
        }
    }

    /// IS_CLEAN.
    pub fn is_clean(&self, region: u64) -> Result<bool, OutOfRange> {
        self.check(region)?;
        Ok(bitmap::test(self.maps().0, region))
    }

    /// IN_SYNC, as the bitmap says.
    pub fn in_sync(&self, region: u64) -> Result<bool, OutOfRange> {
        self.check(region)?;
        Ok(bitmap::test(self.maps().1, region))
    }

    /// MARK_REGION (and the marks of an integrated FLUSH) by `owner`: the
    /// regions become dirty. All are checked before any is applied.
    pub fn mark(&mut self, owner: MemberId, regions: &[u64]) -> Result<(), OutOfRange> {
        self.check_all(regions)?;
        for &r in regions {
            if self.sharing == Sharing::Shared {
                self.marks.entry(owner).or_default().insert(r);
            }
            self.set_clean(r, false);
        }
        Ok(())
    }

    /// CLEAR_REGION by `owner` (dm-log `core_clear_region`; shared:
    /// cmirrord's `clear_region`, clean only if no other member has the
    /// region marked and it is in sync). All are checked before any is
    /// applied.
    pub fn clear(&mut self, owner: MemberId, regions: &[u64]) -> Result<(), OutOfRange> {
        self.check_all(regions)?;
        for &r in regions {
            let clean = match self.sharing {
                Sharing::Single => true,
                Sharing::Shared => {
                    if let Some(set) = self.marks.get_mut(&owner) {
                        set.remove(&r);
                        if set.is_empty() {
                            self.marks.remove(&owner);
                        }
                    }
                    !self.is_marked(r)
                        && !self.pinned.contains(&r)
                        && bitmap::test(self.maps().1, r)
                }
            };
            if clean {
                self.set_clean(r, true);
            }
        }
        Ok(())
    }

    /// Keeps exactly `regions` dirty whatever the clears (shared logs).
    pub fn set_pinned(&mut self, regions: BTreeSet<u64>) {
        for &r in &regions {
            if r < self.region_count {
                self.set_clean(r, false);
            }
        }
        self.pinned = regions;
    }

    /// Whether any member has `region` marked (shared logs).
    pub fn is_marked(&self, region: u64) -> bool {
        self.marks.values().any(|set| set.contains(&region))
    }

    /// Whether `member` has `region` marked (shared logs).
    pub fn marked_by(&self, member: MemberId, region: u64) -> bool {
        self.marks.get(&member).is_some_and(|s| s.contains(&region))
    }

    /// The regions `member` has marked (shared logs).
    pub fn marks_of(&self, member: MemberId) -> impl Iterator<Item = u64> + '_ {
        self.marks.get(&member).into_iter().flatten().copied()
    }

    /// Who recovers `region`, if anyone.
    pub fn recoverer(&self, region: u64) -> Option<MemberId> {
        self.recovering.get(&region).copied()
    }

    /// The regions `member` recovers.
    pub fn recovered_by(&self, member: MemberId) -> impl Iterator<Item = u64> + '_ {
        self.recovering
            .iter()
            .filter(move |(_, &m)| m == member)
            .map(|(&r, _)| r)
    }

    /// GET_RESYNC_WORK from `owner` (dm-log `core_get_resync_work`, with
    /// cmirrord's priority list): the region it already recovers, else the
    /// first region waiting for priority recovery still out of sync, else
    /// the scan's next region out of sync and not being recovered. The scan
    /// only moves forward until the next resume (or a departure).
    ///
    /// dm-raid1 recovers one region at a time: asked again before the
    /// SET_REGION_SYNC of the region handed out, the kernel never got that
    /// answer (an `EAGAIN` ack or a timeout made it resend). The same region
    /// goes out again, as cmirrord does ("Re-requesting work"); the next one
    /// would leave it recovering, out of sync, for good.
    pub fn get_resync_work(&mut self, owner: MemberId) -> Option<u64> {
        if let Some(r) = self.recovered_by(owner).next() {
            return Some(r);
        }
        while let Some(r) = self.priority.pop_front() {
            if !bitmap::test(self.maps().1, r) && !self.recovering.contains_key(&r) {
                self.recovering.insert(r, owner);
                return Some(r);
            }
        }
        let n = self.region_count;
        while self.sync_search < n {
            let r = bitmap::next_zero(self.maps().1, self.sync_search, n);
            self.sync_search = r + 1;
            if r >= n {
                break;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.recovering.entry(r) {
                slot.insert(owner);
                return Some(r);
            }
        }
        None
    }

    /// SET_REGION_SYNC from `owner`: recovery of `region` ended; it is in
    /// sync or not. A region already in sync is not counted twice. In a
    /// shared log only the member the region was handed to may call it in
    /// sync (another member's copy may predate writes it never saw); anyone
    /// may call it out of sync (a failed write).
    /// Returns whether the report counted.
    pub fn set_region_sync(
        &mut self,
        owner: MemberId,
        region: u64,
        in_sync: bool,
    ) -> Result<bool, OutOfRange> {
        self.check(region)?;
        let was_recoverer = match self.sharing {
            Sharing::Single => {
                self.recovering.remove(&region);
                true
            }
            Sharing::Shared => {
                let mine = self.recovering.get(&region) == Some(&owner);
                if mine {
                    self.recovering.remove(&region);
                }
                mine
            }
        };
        if in_sync && !was_recoverer {
            return Ok(false);
        }
        self.set_sync(region, in_sync);
        Ok(true)
    }

    /// The kernel of a member waits to write `region`, which is out of sync:
    /// it is recovered first (cmirrord's priority list).
    pub fn prioritize(&mut self, region: u64) {
        if region < self.region_count
            && !bitmap::test(self.maps().1, region)
            && !self.recovering.contains_key(&region)
            && !self.priority.contains(&region)
            && self.priority.len() < MAX_PRIORITY
        {
            self.priority.push_back(region);
        }
    }

    /// Whether `region` is waiting for priority recovery.
    pub fn is_prioritized(&self, region: u64) -> bool {
        self.priority.contains(&region)
    }

    /// Sets `regions` out of sync (and dirty, so a disk log keeps them for
    /// the next activation): what a member that is gone may have written.
    /// A recovery of one of them under way may have copied it before that
    /// member's last writes: it no longer counts, the region is recovered
    /// again. Returns whether anything changed; if so the resync scan
    /// starts over.
    pub fn set_out_of_sync(&mut self, regions: impl IntoIterator<Item = u64>) -> bool {
        let mut changed = false;
        for r in regions {
            if r < self.region_count {
                changed |= self.set_sync(r, false);
                changed |= self.recovering.remove(&r).is_some();
                self.set_clean(r, false);
            }
        }
        if changed {
            self.sync_search = 0;
        }
        changed
    }

    /// `member` left (or failed): the regions it had marked may be half
    /// written, so they go out of sync; the regions it recovered are free
    /// again. Returns whether the resync scan had to start over.
    pub fn member_departed(&mut self, member: MemberId) -> bool {
        let marked: Vec<u64> = self.marks.remove(&member).into_iter().flatten().collect();
        let mut restarted = self.set_out_of_sync(marked);
        let before = self.recovering.len();
        self.recovering.retain(|_, m| *m != member);
        if self.recovering.len() != before {
            self.sync_search = 0;
            restarted = true;
        }
        restarted
    }

    /// The members that have regions marked.
    pub fn marking_members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.marks.keys().copied()
    }

    /// GET_SYNC_COUNT.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// The first region out of sync, or the region count.
    pub fn first_unsynced(&self) -> u64 {
        bitmap::next_zero(self.maps().1, 0, self.region_count)
    }

    /// The `in_sync_hint` of IS_REMOTE_RECOVERING on one node: every region
    /// below it needs no more resync work in this pass. As cmirrord computes
    /// it, the region the resync scan last handed out (`sync_search - 1`);
    /// the region count once everything is in sync.
    pub fn in_sync_hint(&self) -> u64 {
        if self.sync_count >= self.region_count {
            self.region_count
        } else {
            self.sync_search.saturating_sub(1).min(self.region_count)
        }
    }

    /// IS_REMOTE_RECOVERING on a single node: never; with the hint.
    pub fn is_remote_recovering(&self, region: u64) -> Result<(bool, u64), OutOfRange> {
        self.check(region)?;
        Ok((false, self.in_sync_hint()))
    }

    /// The clean bitmap (what a disk commit writes).
    pub fn clean_words(&self) -> &[u64] {
        self.maps().0
    }

    /// Chunks of the clean bitmap changed since the last commit.
    pub fn dirty_chunks(&self) -> impl Iterator<Item = usize> + '_ {
        self.dirty.chunks.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    /// What a disk commit must write now, if anything. A disk log that was
    /// never resumed has no device image yet and commits nothing.
    pub fn pending_commit(&self) -> Option<CommitPlan> {
        if self.kind != LogKind::Disk || self.lifecycle == Lifecycle::Constructed {
            return None;
        }
        if !self.dirty.any && !self.dirty.full {
            return None;
        }
        Some(CommitPlan {
            full: self.dirty.full,
            needs_sync: self.dirty.marks || self.dirty.full,
        })
    }

    /// The commit planned by [`Self::pending_commit`] is on the device.
    pub fn commit_done(&mut self) {
        self.dirty.chunks.fill(0);
        self.dirty.any = false;
        self.dirty.marks = false;
        self.dirty.full = false;
    }

    /// The next commit must write everything, durably.
    pub fn mark_all_dirty(&mut self) {
        if self.kind == LogKind::Disk {
            self.dirty.full = true;
        }
    }

    /// Counts regions in sync by scanning the bitmap (for checks).
    pub fn count_sync_bits(&self) -> u64 {
        bitmap::count_ones(self.maps().1)
    }

    /// The shared part of the state, for a member that joins: everything
    /// but the backing's identity and the commit bookkeeping.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.region_count);
        w.u32(self.region_size);
        w.u8(u8::from(self.device_failed));
        w.u8(self.lifecycle as u8);
        let (clean, sync) = self.maps();
        encode_runs(w, sync, self.region_count, true);
        encode_runs(w, clean, self.region_count, false);
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
    }

    /// A shared state made by [`Self::encode`], for a log of `config`
    /// (which must have the same geometry).
    pub fn decode(config: &LogConfig, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bad = |why| Err(DecodeError(why));
        let region_count = r.u64()?;
        let region_size = r.u32()?;
        if region_count > MAX_REGIONS
            || region_count != config.region_count
            || region_size != config.region_size
        {
            return bad("snapshot of a log of another size");
        }
        let mut log = Self::empty(config, Sharing::Shared, Backing::memory(region_count));
        log.device_failed = r.u8()? != 0;
        log.lifecycle = Lifecycle::from_raw(u32::from(r.u8()?)).unwrap_or(Lifecycle::Resumed);
        let (clean, sync) = log.maps_mut();
        decode_runs(r, sync, region_count, true)?;
        decode_runs(r, clean, region_count, false)?;
        log.sync_count = bitmap::count_ones(log.maps().1);
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
            if !set.is_empty() {
                log.marks.insert(m, set);
            }
        }
        for _ in 0..r.count(16)? {
            let region = r.u64()?;
            if region >= region_count {
                return bad("snapshot with a bad recovering region");
            }
            log.recovering.insert(region, MemberId::from_u64(r.u64()?));
        }
        log.sync_search = r.u64()?;
        for _ in 0..r.count(8)? {
            let region = r.u64()?;
            if region >= region_count {
                return bad("snapshot with a bad priority region");
            }
            log.priority.push_back(region);
        }
        Ok(log)
    }

    /// Whether two states hold the same shared contents (for checks).
    pub fn same_contents(&self, other: &Self) -> bool {
        self.region_count == other.region_count
            && self.maps() == other.maps()
            && self.sync_count == other.sync_count
            && self.sync_search == other.sync_search
            && self.recovering == other.recovering
            && self.priority == other.priority
            && self.marks == other.marks
            && self.pinned == other.pinned
            && self.device_failed == other.device_failed
    }
}

/// The runs of regions whose bit is `value`, as `[from, to)` pairs: a few
/// numbers for a log that is (nearly) all in sync or all out of sync.
fn encode_runs(w: &mut Writer, words: &[u64], count: u64, value: bool) {
    let mut runs = Vec::new();
    let mut bit = 0;
    while bit < count {
        let from = if value {
            next_one(words, bit, count)
        } else {
            bitmap::next_zero(words, bit, count)
        };
        if from >= count {
            break;
        }
        let to = if value {
            bitmap::next_zero(words, from, count)
        } else {
            next_one(words, from, count)
        };
        runs.push((from, to));
        bit = to;
    }
    w.u64(runs.len() as u64);
    for (from, to) in runs {
        w.u64(from);
        w.u64(to);
    }
}

fn decode_runs(
    r: &mut Reader<'_>,
    words: &mut [u64],
    count: u64,
    value: bool,
) -> Result<(), DecodeError> {
    bitmap::fill(words, count, !value);
    for _ in 0..r.count(16)? {
        let (from, to) = (r.u64()?, r.u64()?);
        if from >= to || to > count {
            return Err(DecodeError("snapshot with a bad range"));
        }
        if value {
            bitmap::set_range(words, from, to);
        } else {
            bitmap::clear_range(words, from, to);
        }
    }
    Ok(())
}

/// The first set bit at or after `start`, or `limit`.
fn next_one(words: &[u64], start: u64, limit: u64) -> u64 {
    let mut bit = start;
    while bit < limit {
        let w = (bit / 64) as usize;
        let word = words[w] >> (bit % 64);
        if word != 0 {
            return (bit + u64::from(word.trailing_zeros())).min(limit);
        }
        bit = (bit / 64 + 1) * 64;
    }
    limit
}

#[cfg(test)]
#[path = "log_state_tests.rs"]
mod tests;
