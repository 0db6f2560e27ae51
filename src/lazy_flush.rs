// SPDX-License-Identifier: GPL-2.0

//! The lazy FLUSH: a flush that sent clears but no marks sends no FLUSH, and
//! one commits its clears a few seconds later instead (uncommitted clears
//! cost at most a resync after a crash). A flush with marks ends with a
//! FLUSH, which commits the clears sent before it too: the lazy one is then
//! moot, also when it already waits for the lane behind that flush. Uses
//! `core` only; compiled on the host too.

use core::sync::atomic::{AtomicBool, Ordering};

/// What to do with the deferred work that sends the lazy FLUSH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deferred {
    /// Schedule it (one already pending stays as it is).
    Schedule,
    /// Cancel it: a FLUSH just committed the clears.
    Cancel,
    /// Leave it as it is.
    Leave,
}

/// Whether clears were sent with no FLUSH after them. Changed only with the
/// log's lane held, so that a lazy FLUSH and a flush never interleave.
pub(crate) struct LazyFlush {
    clears_uncommitted: AtomicBool,
}

impl LazyFlush {
    /// Nothing to commit.
    pub(crate) const fn new() -> Self {
        Self {
            clears_uncommitted: AtomicBool::new(false),
        }
    }

    /// After a flush that succeeded, which sent clears without a FLUSH
    /// (`needs_lazy_flush`) or sent marks and a FLUSH (`sent_marks`).
    pub(crate) fn flushed(&self, needs_lazy_flush: bool, sent_marks: bool) -> Deferred {
        if needs_lazy_flush {
            self.clears_uncommitted.store(true, Ordering::Relaxed);
            Deferred::Schedule
        } else if sent_marks {
            self.clears_uncommitted.store(false, Ordering::Relaxed);
            Deferred::Cancel
        } else {
            Deferred::Leave
        }
    }

    /// For the deferred work, lane held: whether to send a FLUSH now. If
    /// it fails, [`failed`](Self::failed) says so.
    pub(crate) fn take(&self) -> bool {
        self.clears_uncommitted.swap(false, Ordering::Relaxed)
    }

    /// The lazy FLUSH failed: the clears are still uncommitted.
    pub(crate) fn failed(&self) {
        self.clears_uncommitted.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_alone_ask_for_one_lazy_flush() {
        let l = LazyFlush::new();
        assert_eq!(l.flushed(true, false), Deferred::Schedule);
        assert!(l.take());
        // Sent: a second run of the work has nothing to do.
        assert!(!l.take());
    }

    #[test]
    fn a_flush_with_marks_commits_the_clears_and_cancels_it() {
        let l = LazyFlush::new();
        assert_eq!(l.flushed(true, false), Deferred::Schedule);
        assert_eq!(l.flushed(false, true), Deferred::Cancel);
        // The lazy FLUSH that waited for the lane behind it sends nothing.
        assert!(!l.take());
    }

    #[test]
    fn a_failed_lazy_flush_is_owed_still() {
        let l = LazyFlush::new();
        l.flushed(true, false);
        assert!(l.take());
        l.failed();
        assert!(l.take());
    }

    #[test]
    fn a_flush_that_sent_nothing_leaves_it() {
        let l = LazyFlush::new();
        assert_eq!(l.flushed(false, false), Deferred::Leave);
        assert!(!l.take());
        l.flushed(true, false);
        assert_eq!(l.flushed(false, false), Deferred::Leave);
        assert!(l.take());
    }
}
