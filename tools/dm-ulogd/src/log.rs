// SPDX-License-Identifier: GPL-2.0

//! The state machine of one dirty log, as the kernel's own `core` and `disk`
//! logs keep it (drivers/md/dm-log.c): a clean bitmap (region not being
//! written), a sync bitmap (region identical on all legs), a recovering
//! bitmap (region handed out for resync), the sync count and the resync
//! cursor.
//!
//! Every operation is pure: no I/O and no clock, so the same operations can
//! later be driven by totally ordered cluster messages. Committing a disk
//! log is the caller's job: [`Log::pending_commit`] says what changed since
//! the last commit, [`Log::commit_done`] records that it is on the device.

use crate::bitmap;
use crate::ctr_args::{LogConfig, LogKind, SyncMode};
use crate::disk_format::{self, CHUNK_WORDS};
use crate::state_file::{StateFile, MAPS};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// The region asked for.
    pub region: u64,
    /// Regions in the log.
    pub count: u64,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "region {} is out of range (the log has {} regions)",
            self.region, self.count
        )
    }
}

/// Where the bitmaps live: on the heap, or in a mapped state file that
/// outlives the process.
#[derive(Debug)]
pub enum Backing {
    /// Heap memory (tests, benchmarks, a server without a state directory).
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

#[derive(Debug, Default)]
struct Dirty {
    /// One bit per bitmap chunk changed since the last commit.
    chunks: Vec<u64>,
    any: bool,
    marks: bool,
    full: bool,
}

/// One dirty log.
#[derive(Debug)]
pub struct Log {
    kind: LogKind,
    sync_mode: SyncMode,
    region_size: u32,
    region_count: u64,
    words: usize,
    backing: Backing,
    sync_count: u64,
    /// Next region `get_resync_work` looks at (dm-log's `sync_search`).
    sync_search: u64,
    lifecycle: Lifecycle,
    device_failed: bool,
    dirty: Dirty,
}

impl Log {
    /// A new log as dm-log's `create_log_context` makes it: all regions
    /// clean; in sync only with `nosync`; nothing recovering.
    pub fn new(config: &LogConfig, backing: Backing) -> Self {
        let mut log = Self::empty(config, backing);
        log.reset();
        log
    }

    /// Makes this a freshly constructed log again, as [`Self::new`] does.
    pub fn reset(&mut self) {
        let n = self.region_count;
        let nosync = self.sync_mode == SyncMode::NoSync;
        let (clean, sync, recovering) = self.maps_mut();
        bitmap::fill(clean, n, true);
        bitmap::fill(sync, n, nosync);
        bitmap::fill(recovering, n, false);
        self.sync_count = if nosync { n } else { 0 };
        self.sync_search = 0;
        self.lifecycle = Lifecycle::Constructed;
        self.device_failed = false;
        self.commit_done();
        self.persist_meta();
    }

    /// A log brought back from its state file after a server restart.
    ///
    /// The clean and sync bitmaps are taken as they are. The recovering
    /// bitmap and the resync cursor are reset: a GET_RESYNC_WORK whose reply
    /// died with the old server is resent by the kernel, and a region left
    /// marked as recovering would never be handed out again. (dm-raid1
    /// recovers one region at a time and reports it with SET_REGION_SYNC
    /// before asking for more, so nothing is being recovered when it asks.)
    /// A disk log is marked fully dirty: its device may lack marks the old
    /// server applied but had not flushed yet.
    pub fn restore(config: &LogConfig, backing: Backing) -> Self {
        let (lifecycle, flags) = match backing.state_file() {
            Some(f) => (Lifecycle::from_raw(f.lifecycle()), f.flags()),
            None => (None, 0),
        };
        let mut log = Self::empty(config, backing);
        log.lifecycle = lifecycle.unwrap_or(Lifecycle::Constructed);
        log.device_failed = flags & 1 != 0;
        let n = log.region_count;
        let (clean, sync, recovering) = log.maps_mut();
        bitmap::clear_range(clean, n, u64::MAX);
        bitmap::clear_range(sync, n, u64::MAX);
        bitmap::fill(recovering, n, false);
        log.sync_count = bitmap::count_ones(log.maps().1);
        if log.kind == LogKind::Disk && log.lifecycle != Lifecycle::Constructed {
            log.mark_all_dirty();
        }
        log
    }

    fn empty(config: &LogConfig, backing: Backing) -> Self {
        let words = bitmap::words_for(config.region_count);
        let chunks = words.div_ceil(CHUNK_WORDS) as u64;
        Self {
            kind: config.kind,
            sync_mode: config.sync,
            region_size: config.region_size,
            region_count: config.region_count,
            words,
            backing,
            sync_count: 0,
            sync_search: 0,
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

    fn maps(&self) -> (&[u64], &[u64], &[u64]) {
        let (clean, rest) = self.backing.words().split_at(self.words);
        let (sync, recovering) = rest.split_at(self.words);
        (clean, sync, recovering)
    }

    fn maps_mut(&mut self) -> (&mut [u64], &mut [u64], &mut [u64]) {
        let words = self.words;
        let all = self.backing.words_mut();
        let (clean, rest) = all.split_at_mut(words);
        let (sync, recovering) = rest.split_at_mut(words);
        (clean, sync, recovering)
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

    fn note_clean_change(&mut self, region: u64, became_dirty: bool) {
        if self.kind != LogKind::Disk {
            return;
        }
        let chunk = region / 64 / CHUNK_WORDS as u64;
        bitmap::set(&mut self.dirty.chunks, chunk);
        self.dirty.any = true;
        self.dirty.marks |= became_dirty;
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
        let (clean, sync, _) = self.maps_mut();
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

    /// IN_SYNC.
    pub fn in_sync(&self, region: u64) -> Result<bool, OutOfRange> {
        self.check(region)?;
        Ok(bitmap::test(self.maps().1, region))
    }

    /// MARK_REGION (and the marks of an integrated FLUSH): the regions
    /// become dirty. All are checked before any is applied.
    pub fn mark(&mut self, regions: &[u64]) -> Result<(), OutOfRange> {
        for &r in regions {
            self.check(r)?;
        }
        for &r in regions {
            if bitmap::clear(self.maps_mut().0, r) {
                self.note_clean_change(r, true);
            }
        }
        Ok(())
    }

    /// CLEAR_REGION: the regions become clean (dm-log `core_clear_region`).
    /// All are checked before any is applied.
    pub fn clear(&mut self, regions: &[u64]) -> Result<(), OutOfRange> {
        for &r in regions {
            self.check(r)?;
        }
        for &r in regions {
            if bitmap::set(self.maps_mut().0, r) {
                self.note_clean_change(r, false);
            }
        }
        Ok(())
    }

    /// GET_RESYNC_WORK (dm-log `core_get_resync_work`): the next region out
    /// of sync and not already being recovered, now marked as recovering.
    /// The scan only moves forward until the next resume.
    ///
    /// dm-raid1 recovers one region at a time: asked again before the
    /// SET_REGION_SYNC of the region handed out, the kernel never got that
    /// answer (an `EAGAIN` ack or a timeout made it resend). The same region
    /// goes out again, as cmirrord does ("Re-requesting work"); the next one
    /// would leave it recovering, out of sync, for good.
    pub fn get_resync_work(&mut self) -> Option<u64> {
        let n = self.region_count;
        let recovering = self.maps().2;
        if let Some((w, word)) = recovering.iter().enumerate().find(|(_, w)| **w != 0) {
            let region = w as u64 * 64 + u64::from(word.trailing_zeros());
            if region < n {
                return Some(region);
            }
        }
        if self.sync_search >= n {
            return None;
        }
        loop {
            let region = bitmap::next_zero(self.maps().1, self.sync_search, n);
            self.sync_search = region + 1;
            if region >= n {
                return None;
            }
            if !bitmap::test(self.maps().2, region) {
                bitmap::set(self.maps_mut().2, region);
                return Some(region);
            }
        }
    }

    /// SET_REGION_SYNC: recovery of `region` ended; it is in sync or not.
    /// Unlike dm-log, a region already in sync is not counted twice.
    pub fn set_region_sync(&mut self, region: u64, in_sync: bool) -> Result<(), OutOfRange> {
        self.check(region)?;
        let (_, sync, recovering) = self.maps_mut();
        bitmap::clear(recovering, region);
        if in_sync {
            if bitmap::set(sync, region) {
                self.sync_count += 1;
            }
        } else if bitmap::clear(sync, region) {
            self.sync_count -= 1;
        }
        Ok(())
    }

    /// GET_SYNC_COUNT.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// The `in_sync_hint` of IS_REMOTE_RECOVERING: every region below it
    /// needs no more resync work in this pass. As cmirrord computes it, the
    /// region the resync scan last handed out (`sync_search - 1`); the
    /// region count once everything is in sync.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctr_args;

    fn log(ctr: &str) -> Log {
        let c = ctr_args::parse(ctr).unwrap();
        Log::new(&c, Backing::memory(c.region_count))
    }

    #[test]
    fn core_default_starts_clean_and_out_of_sync() {
        let l = log("1000 clustered-core 8"); // 125 regions
        assert_eq!(l.region_count(), 125);
        assert_eq!(l.is_clean(0), Ok(true));
        assert_eq!(l.is_clean(124), Ok(true));
        assert_eq!(l.in_sync(0), Ok(false));
        assert_eq!(l.sync_count(), 0);
        assert_eq!(
            l.is_clean(125),
            Err(OutOfRange {
                region: 125,
                count: 125
            })
        );
        assert!(l.in_sync(u64::MAX).is_err());
        let l = log("1000 clustered-core 8 nosync");
        assert_eq!(l.in_sync(124), Ok(true));
        assert_eq!(l.sync_count(), 125);
        assert_eq!(l.count_sync_bits(), 125, "no bits past the end");
        let l = log("1000 clustered-core 8 sync");
        assert_eq!(l.sync_count(), 0);
    }

    #[test]
    fn mark_and_clear_are_checked_first() {
        let mut l = log("80 core 8"); // 10 regions
        l.mark(&[1, 3]).unwrap();
        assert_eq!(l.is_clean(1), Ok(false));
        assert_eq!(l.is_clean(3), Ok(false));
        assert!(l.mark(&[2, 10]).is_err());
        assert_eq!(l.is_clean(2), Ok(true), "nothing applied on error");
        l.clear(&[1]).unwrap();
        assert_eq!(l.is_clean(1), Ok(true));
        assert!(l.clear(&[3, 99]).is_err());
        assert_eq!(l.is_clean(3), Ok(false));
    }

    #[test]
    fn resync_work_hands_out_each_region_once() {
        let mut l = log("40 core 8"); // 5 regions, none in sync
        l.set_region_sync(1, true).unwrap();
        assert_eq!(l.get_resync_work(), Some(0));
        assert_eq!(l.in_sync_hint(), 0);
        l.set_region_sync(0, true).unwrap();
        assert_eq!(l.get_resync_work(), Some(2));
        assert_eq!(l.in_sync_hint(), 2);
        l.set_region_sync(2, false).unwrap(); // recovery failed
        assert_eq!(l.get_resync_work(), Some(3));
        l.set_region_sync(3, true).unwrap();
        assert_eq!(l.get_resync_work(), Some(4));
        assert_eq!(l.in_sync_hint(), 4, "region 4 is being recovered");
        l.set_region_sync(4, true).unwrap();
        assert_eq!(l.get_resync_work(), None);
        assert_eq!(l.get_resync_work(), None, "scan stays done until resume");
        l.resume_core();
        assert_eq!(l.get_resync_work(), Some(2));
        l.set_region_sync(2, true).unwrap();
        assert_eq!(l.get_resync_work(), None);
        assert_eq!(l.sync_count(), 5);
        assert_eq!(l.in_sync_hint(), 5);
        assert_eq!(l.is_remote_recovering(4), Ok((false, 5)));
        assert!(l.is_remote_recovering(5).is_err());
    }

    #[test]
    fn resync_work_asked_again_gets_the_same_region() {
        // dm-raid1 asks again only if it never got the answer.
        let mut l = log("40 core 8");
        assert_eq!(l.get_resync_work(), Some(0));
        assert_eq!(l.get_resync_work(), Some(0), "the answer was lost: again");
        l.set_region_sync(0, true).unwrap();
        assert_eq!(l.get_resync_work(), Some(1));
        l.set_region_sync(1, false).unwrap();
        assert_eq!(
            l.get_resync_work(),
            Some(2),
            "a failed region waits for the next pass"
        );
    }

    #[test]
    fn sync_count_never_double_counts() {
        let mut l = log("40 core 8");
        l.set_region_sync(1, true).unwrap();
        l.set_region_sync(1, true).unwrap();
        assert_eq!(l.sync_count(), 1);
        l.set_region_sync(1, false).unwrap();
        l.set_region_sync(1, false).unwrap();
        assert_eq!(l.sync_count(), 0);
        assert!(l.set_region_sync(5, true).is_err());
    }

    #[test]
    fn disk_dirty_tracking_separates_marks_from_clears() {
        let mut l = log("100000000 disk /dev/null 8"); // 12.5M regions
        assert_eq!(l.pending_commit(), None, "never resumed: nothing to write");
        let img = vec![0u8; 0];
        l.resume_from_disk(0, &img);
        assert_eq!(
            l.pending_commit(),
            Some(CommitPlan {
                full: true,
                needs_sync: true
            })
        );
        l.commit_done();
        assert_eq!(l.pending_commit(), None);
        l.mark(&[5000]).unwrap();
        assert_eq!(l.pending_commit(), None, "already dirty after a resync");
        l.clear(&[5000, 9000]).unwrap();
        assert_eq!(
            l.pending_commit(),
            Some(CommitPlan {
                full: false,
                needs_sync: false
            })
        );
        assert_eq!(l.dirty_chunks().collect::<Vec<_>>(), [1, 2]);
        l.commit_done();
        l.mark(&[9000]).unwrap();
        assert_eq!(
            l.pending_commit(),
            Some(CommitPlan {
                full: false,
                needs_sync: true
            })
        );
        assert_eq!(l.dirty_chunks().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn disk_resume_trusts_the_valid_prefix() {
        let c = ctr_args::parse("80 disk /dev/null 8").unwrap(); // 10 regions
        let mut l = Log::new(&c, Backing::memory(10));
        let on_disk = [0b1111_0101u8, 0xff, 0, 0, 0, 0, 0, 0];
        l.resume_from_disk(8, &on_disk);
        let clean: Vec<bool> = (0..10).map(|r| l.is_clean(r).unwrap()).collect();
        assert_eq!(
            clean,
            [true, false, true, false, true, true, true, true, false, false],
            "regions 8 and 9 are new: dirty and out of sync"
        );
        assert_eq!(l.sync_count(), 6);
        assert_eq!(l.in_sync(0), Ok(true));
        assert_eq!(l.in_sync(1), Ok(false));

        let c = ctr_args::parse("80 disk /dev/null 8 nosync").unwrap();
        let mut l = Log::new(&c, Backing::memory(10));
        l.resume_from_disk(0, &on_disk);
        assert_eq!(l.sync_count(), 10);
        assert_eq!(l.count_sync_bits(), 10);
    }
}
