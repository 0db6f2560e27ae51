// SPDX-License-Identifier: GPL-2.0

//! A set of region numbers as a two-level bitmap, for the marks a log holds
//! between flushes.
//!
//! Inserting never allocates, so a mark can be recorded in atomic context
//! and cannot fail; duplicates collapse. The summary level has one bit per
//! 64-bit word of the main bitmap, so visiting and clearing the set costs
//! the number of its set words, not the size of the device. Uses `core`
//! only; compiled on the host too, for tests.

use core::ops::DerefMut;

/// Bits per word.
const BITS: u64 = 64;

/// Words of main bitmap and of summary a set of `count` regions needs, or
/// `None` if that does not fit in memory sizes.
pub(crate) fn words_for(count: u64) -> Option<(usize, usize)> {
    let main = count.div_ceil(BITS);
    let summary = main.div_ceil(BITS);
    Some((usize::try_from(main).ok()?, usize::try_from(summary).ok()?))
}

/// A set of regions below a fixed count, over caller-provided storage.
///
/// # Invariants
///
/// - `main.len()` and `summary.len()` are those [`words_for`] gives for
///   `count`, and no bit at or above `count` is set in `main`.
/// - A summary bit is set whenever its main word is nonzero.
pub(crate) struct RegionSet<S: DerefMut<Target = [u64]>> {
    count: u64,
    main: S,
    summary: S,
}

impl<S: DerefMut<Target = [u64]>> RegionSet<S> {
    /// An empty set of regions `0..count` over zeroed `main` and `summary`
    /// storage of the sizes [`words_for`] gives; `None` if they differ or are
    /// not zeroed.
    pub(crate) fn new(count: u64, main: S, summary: S) -> Option<Self> {
        let (m, s) = words_for(count)?;
        let zeroed = main.iter().chain(summary.iter()).all(|&w| w == 0);
        (main.len() == m && summary.len() == s && zeroed).then_some(Self {
            count,
            main,
            summary,
        })
    }

    /// Number of regions the set can hold.
    #[cfg(test)]
    fn capacity(&self) -> u64 {
        self.count
    }

    /// Adds `region`. Returns `false`, changing nothing, if it is out of range.
    pub(crate) fn insert(&mut self, region: u64) -> bool {
        if region >= self.count {
            return false;
        }
        // Both indices are in range: `region < count` (invariant on sizes).
        let w = (region / BITS) as usize;
        self.main[w] |= 1 << (region % BITS);
        self.summary[w / BITS as usize] |= 1 << (w as u64 % BITS);
        true
    }

    /// Whether `region` is in the set.
    #[cfg(test)]
    fn contains(&self, region: u64) -> bool {
        region < self.count && self.main[(region / BITS) as usize] & (1 << (region % BITS)) != 0
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.summary.iter().all(|&s| s == 0)
    }

    /// Writes the regions at or above `from`, in increasing order, into `out`
    /// until it is full; returns how many were written. Resume with one more
    /// than the last region written.
    pub(crate) fn fill_from(&self, from: u64, out: &mut [u64]) -> usize {
        let mut n = 0;
        let mut word = from / BITS;
        while n < out.len() {
            let Some(w) = self.next_set_word(word) else {
                break;
            };
            let mut bits = self.main[w];
            if w as u64 == from / BITS {
                bits &= u64::MAX << (from % BITS);
            }
            while bits != 0 && n < out.len() {
                out[n] = w as u64 * BITS + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                n += 1;
            }
            word = w as u64 + 1;
        }
        n
    }

    /// Moves every region of `self` into `other` (whose capacity must be the
    /// same), leaving `self` empty.
    pub(crate) fn move_into(&mut self, other: &mut Self) {
        if self.count != other.count {
            return;
        }
        for s in 0..self.summary.len() {
            let mut sbits = core::mem::take(&mut self.summary[s]);
            other.summary[s] |= sbits;
            while sbits != 0 {
                let w = s * BITS as usize + sbits.trailing_zeros() as usize;
                other.main[w] |= core::mem::take(&mut self.main[w]);
                sbits &= sbits - 1;
            }
        }
    }

    /// Empties the set.
    pub(crate) fn clear(&mut self) {
        for s in 0..self.summary.len() {
            let mut sbits = core::mem::take(&mut self.summary[s]);
            while sbits != 0 {
                self.main[s * BITS as usize + sbits.trailing_zeros() as usize] = 0;
                sbits &= sbits - 1;
            }
        }
    }

    /// Index of the first nonzero main word at or after `word`.
    fn next_set_word(&self, word: u64) -> Option<usize> {
        let mut s = usize::try_from(word / BITS).ok()?;
        let mut mask = u64::MAX << (word % BITS);
        while s < self.summary.len() {
            let bits = self.summary[s] & mask;
            if bits != 0 {
                return Some(s * BITS as usize + bits.trailing_zeros() as usize);
            }
            s += 1;
            mask = u64::MAX;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(count: u64) -> RegionSet<Vec<u64>> {
        let (m, s) = words_for(count).unwrap();
        RegionSet::new(count, vec![0; m], vec![0; s]).unwrap()
    }

    fn all(s: &RegionSet<Vec<u64>>) -> Vec<u64> {
        let mut out = vec![0; s.capacity() as usize + 1];
        let n = s.fill_from(0, &mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn storage_must_match_the_count() {
        assert!(RegionSet::new(65, vec![0u64; 2], vec![0u64; 1]).is_some());
        assert!(RegionSet::new(65, vec![0u64; 1], vec![0u64; 1]).is_none());
        assert!(RegionSet::new(65, vec![0u64, 1], vec![0u64; 1]).is_none());
        assert_eq!(words_for(0), Some((0, 0)));
        assert_eq!(words_for(4097), Some((65, 2)));
    }

    #[test]
    fn insert_dedups_and_rejects_out_of_range() {
        let mut s = set(200);
        assert!(s.is_empty());
        assert!(s.insert(5));
        assert!(s.insert(5));
        assert!(s.insert(199));
        assert!(!s.insert(200));
        assert!(s.contains(5) && s.contains(199) && !s.contains(6) && !s.contains(200));
        assert_eq!(all(&s), [5, 199]);
    }

    #[test]
    fn fill_from_resumes_in_order_across_words_and_summaries() {
        let mut s = set(10_000);
        let regions = [0, 1, 63, 64, 127, 4095, 4096, 4097, 9999];
        for r in regions.iter().rev() {
            s.insert(*r);
        }
        let mut got = Vec::new();
        let mut from = 0;
        loop {
            let mut out = [0u64; 2];
            let n = s.fill_from(from, &mut out);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
            from = out[n - 1] + 1;
        }
        assert_eq!(got, regions);
        let mut out = [0u64; 4];
        assert_eq!(s.fill_from(4096, &mut out), 3);
        assert_eq!(out[..3], [4096, 4097, 9999]);
    }

    #[test]
    fn move_into_merges_and_empties() {
        let mut a = set(5000);
        let mut b = set(5000);
        a.insert(1);
        a.insert(4999);
        b.insert(1);
        b.insert(70);
        a.move_into(&mut b);
        assert!(a.is_empty());
        assert_eq!(all(&a), Vec::<u64>::new());
        assert_eq!(all(&b), [1, 70, 4999]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(all(&b), Vec::<u64>::new());
        b.insert(3);
        assert_eq!(all(&b), [3]);
    }

    #[test]
    fn matches_a_model_under_random_operations() {
        let mut s = set(3000);
        let mut model = std::collections::BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % 3100;
            assert_eq!(s.insert(r), r < 3000);
            if r < 3000 {
                model.insert(r);
            }
            if i % 997 == 0 {
                s.clear();
                model.clear();
            }
        }
        assert_eq!(all(&s), model.into_iter().collect::<Vec<_>>());
    }
}
