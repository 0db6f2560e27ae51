// SPDX-License-Identifier: GPL-2.0

//! IN_SYNC answers kept until the log's next flush.
//!
//! dm-raid1 asks twice about a region it is about to write that is not in
//! its region hash: `dm_rh_get_state()` picks the bio's list (both legs, or
//! the default leg only), then `__rh_alloc()` sets the region's state when
//! `dm_rh_inc_pending()` inserts it, before the flush that commits the marks.
//! Asking the server twice costs a round trip per write, and two answers can
//! disagree: a region found out of sync, then in sync, has its write go to
//! the default leg only while the region counts as in sync, and no resync
//! copies it. The second question gets the first answer instead. Every
//! flush, suspend, resume or SET_REGION_SYNC forgets them, so an answer
//! lives no longer than the pass of the mirror's thread that asked, while
//! dm-raid1 itself keeps a region's state for as long as the region stays
//! in its hash. Uses `core` only; compiled on the host too.

/// Answers kept at most: a pass asks about one region per write it maps.
pub(crate) const MEMO_SIZE: usize = 32;

/// Recent IN_SYNC answers, by region.
///
/// # Invariants
///
/// `regions[..len]` holds distinct regions, `answers[..len]` their answers.
pub(crate) struct InSyncMemo {
    regions: [u64; MEMO_SIZE],
    answers: [bool; MEMO_SIZE],
    len: usize,
}

impl InSyncMemo {
    /// A memo with no answer.
    pub(crate) const fn new() -> Self {
        Self {
            regions: [0; MEMO_SIZE],
            answers: [false; MEMO_SIZE],
            len: 0,
        }
    }

    /// The answer kept for `region`, if any.
    pub(crate) fn get(&self, region: u64) -> Option<bool> {
        let i = self.regions[..self.len].iter().position(|&r| r == region)?;
        Some(self.answers[i])
    }

    /// Keeps `in_sync` as the answer for `region`. When the memo is full the
    /// answer is not kept: the next question goes to the server.
    pub(crate) fn put(&mut self, region: u64, in_sync: bool) {
        if let Some(i) = self.regions[..self.len].iter().position(|&r| r == region) {
            self.answers[i] = in_sync;
        } else if self.len < MEMO_SIZE {
            self.regions[self.len] = region;
            self.answers[self.len] = in_sync;
            self.len += 1;
        }
    }

    /// Forgets the answer for `region`.
    pub(crate) fn forget(&mut self, region: u64) {
        if let Some(i) = self.regions[..self.len].iter().position(|&r| r == region) {
            self.len -= 1;
            self.regions[i] = self.regions[self.len];
            self.answers[i] = self.answers[self.len];
        }
    }

    /// Forgets every answer.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_answers_until_forgotten() {
        let mut m = InSyncMemo::new();
        assert_eq!(m.get(7), None);
        m.put(7, false);
        m.put(9, true);
        assert_eq!((m.get(7), m.get(9)), (Some(false), Some(true)));
        m.put(7, true);
        assert_eq!(m.get(7), Some(true));
        m.forget(7);
        assert_eq!((m.get(7), m.get(9)), (None, Some(true)));
        m.clear();
        assert_eq!(m.get(9), None);
    }

    #[test]
    fn a_full_memo_keeps_what_it_has() {
        let mut m = InSyncMemo::new();
        for r in 0..MEMO_SIZE as u64 {
            m.put(r, r % 2 == 0);
        }
        m.put(1000, true);
        assert_eq!(m.get(1000), None);
        assert_eq!(m.get(4), Some(true));
        m.forget(4);
        m.put(1000, true);
        assert_eq!(m.get(1000), Some(true));
        assert_eq!(m.get(5), Some(false));
    }
}
