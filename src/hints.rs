// SPDX-License-Identifier: GPL-2.0

//! When a log can answer without asking the server.
//!
//! The in-sync hint is the first region that may still need recovery: below
//! it nothing is being recovered anywhere, so `is_remote_recovering` need not
//! ask, and once it reaches the region count `get_resync_work` need not ask.
//! Above it, `is_remote_recovering` asks at most once per interval per log
//! (the C module's limit is one static shared by every log). Uses `core`
//! only; compiled on the host too.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What `is_remote_recovering` should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RemoteRecovering {
    /// Answer "no": the region is below the in-sync hint.
    No,
    /// Answer "yes" without asking: a query was made less than an interval ago.
    AssumeYes,
    /// Ask the server.
    Ask,
}

/// The hints of one log. Relaxed atomics: a stale hint only costs a query
/// or a short wait, never a wrong "in sync".
pub(crate) struct RecoveryHints {
    in_sync_hint: AtomicU64,
    next_query: AtomicUsize,
}

/// `time_after(a, b)` for jiffies: whether `a` is after `b`, wrapping.
fn time_after(a: usize, b: usize) -> bool {
    (b.wrapping_sub(a) as isize) < 0
}

impl RecoveryHints {
    /// Hints that know nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            in_sync_hint: AtomicU64::new(0),
            next_query: AtomicUsize::new(0),
        }
    }

    /// Forgets the in-sync hint: on resume, recovery may start over.
    pub(crate) fn reset(&self) {
        self.in_sync_hint.store(0, Ordering::Relaxed);
    }

    /// The in-sync hint.
    pub(crate) fn in_sync_hint(&self) -> u64 {
        self.in_sync_hint.load(Ordering::Relaxed)
    }

    /// Records the in-sync hint a server sent.
    pub(crate) fn set_in_sync_hint(&self, hint: u64) {
        self.in_sync_hint.store(hint, Ordering::Relaxed);
    }

    /// Whether every one of `region_count` regions is known to be in sync.
    pub(crate) fn all_in_sync(&self, region_count: u64) -> bool {
        self.in_sync_hint() >= region_count
    }

    /// Records a sync count from the server; a complete count means every
    /// region is in sync.
    pub(crate) fn note_sync_count(&self, sync_count: u64, region_count: u64) {
        if sync_count >= region_count {
            self.set_in_sync_hint(region_count);
        }
    }

    /// Decides how to answer `is_remote_recovering(region)` at jiffies `now`,
    /// asking at most once per `interval` jiffies. When it says
    /// [`RemoteRecovering::Ask`], the next query is allowed after `interval`.
    pub(crate) fn remote_recovering(
        &self,
        region: u64,
        now: usize,
        interval: usize,
    ) -> RemoteRecovering {
        if region < self.in_sync_hint() {
            return RemoteRecovering::No;
        }
        // 0: never asked (a limit that wraps to 0 costs one early query).
        let next = self.next_query.load(Ordering::Relaxed);
        if next != 0 && time_after(next, now) {
            return RemoteRecovering::AssumeYes;
        }
        self.next_query
            .store(now.wrapping_add(interval), Ordering::Relaxed);
        RemoteRecovering::Ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RemoteRecovering::*;

    #[test]
    fn below_the_hint_never_asks() {
        let h = RecoveryHints::new();
        h.set_in_sync_hint(10);
        assert_eq!(h.remote_recovering(9, 1000, 25), No);
        assert_eq!(h.remote_recovering(0, 1000, 25), No);
        assert_eq!(h.remote_recovering(10, 1000, 25), Ask);
    }

    #[test]
    fn asks_at_most_once_per_interval() {
        let h = RecoveryHints::new();
        assert_eq!(h.remote_recovering(5, 1000, 25), Ask);
        assert_eq!(h.remote_recovering(5, 1001, 25), AssumeYes);
        assert_eq!(h.remote_recovering(6, 1024, 25), AssumeYes);
        assert_eq!(h.remote_recovering(6, 1025, 25), Ask);
    }

    #[test]
    fn the_limit_is_per_log() {
        let a = RecoveryHints::new();
        let b = RecoveryHints::new();
        assert_eq!(a.remote_recovering(5, 1000, 25), Ask);
        assert_eq!(b.remote_recovering(5, 1000, 25), Ask);
    }

    #[test]
    fn jiffies_wrap_around() {
        let h = RecoveryHints::new();
        let near_end = usize::MAX - 5;
        assert_eq!(h.remote_recovering(1, near_end, 25), Ask);
        assert_eq!(h.remote_recovering(1, 10, 25), AssumeYes);
        assert_eq!(h.remote_recovering(1, 20, 25), Ask);
    }

    #[test]
    fn sync_count_and_reset() {
        let h = RecoveryHints::new();
        assert!(!h.all_in_sync(100));
        h.note_sync_count(99, 100);
        assert!(!h.all_in_sync(100));
        h.note_sync_count(100, 100);
        assert!(h.all_in_sync(100));
        assert_eq!(h.remote_recovering(99, 0, 25), No);
        h.reset();
        assert!(!h.all_in_sync(100));
    }
}
