// SPDX-License-Identifier: GPL-2.0

//! A set of region numbers as a two-level bitmap, for the marks a log holds
//! between flushes.
//!
//! Inserting never allocates, so a mark can be recorded in atomic context
//! and cannot fail; duplicates collapse. The summary level has one bit per
//! 64-bit word of the main bitmap, so visiting and clearing the set costs
//! the number of its set words, not the size of the device.
//!
//! The log keeps its sets under a lock that disables interrupts, so every
//! operation that scans is done in bounded steps (see [`STEP_WORDS`]) that
//! the caller can take one lock hold at a time. Uses `core` only; compiled
//! on the host too, for tests.

use core::ops::DerefMut;

/// Bits per word.
const BITS: u64 = 64;

/// Words one step of a scan ([`RegionSet::fill_from`],
/// [`RegionSet::move_into`], [`RegionSet::clear`]) reads or writes, about:
/// a step visits summary words until it has visited this many words,
/// summary and main ones together, so it stops within `STEP_WORDS + 64`
/// words whatever the size of the set: a microsecond or so of interrupts
/// off, ten when every word misses the cache.
pub(crate) const STEP_WORDS: usize = 64;

/// Where a bounded scan for a set main word ended.
enum Scan {
    /// At this set main word.
    Found(usize),
    /// Out of steps: no set word between the start and this main word.
    Paused(u64),
    /// No set word from the start to the end.
    End,
}

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

    /// Writes the regions at or above `from`, in increasing order, into `out`,
    /// for one bounded step or until `out` is full. Returns how many were
    /// written and where to resume, or `None` if there is no region left
    /// after them. (With an empty `out`, that is `(0, Some(from))`.)
    pub(crate) fn fill_from(&self, from: u64, out: &mut [u64]) -> (usize, Option<u64>) {
        let mut n = 0;
        let mut next = from;
        let mut budget = STEP_WORDS;
        while n < out.len() {
            let w = match self.next_set_word(next / BITS, &mut budget) {
                Scan::Found(w) => w,
                Scan::Paused(word) => return (n, Some(next.max(word * BITS))),
                Scan::End => return (n, None),
            };
            budget = budget.saturating_sub(1);
            let mut bits = self.main[w];
            if w as u64 == next / BITS {
                bits &= u64::MAX << (next % BITS);
            }
            next = (w as u64 + 1) * BITS;
            while bits != 0 {
                let r = w as u64 * BITS + u64::from(bits.trailing_zeros());
                if n == out.len() {
                    return (n, Some(r));
                }
                out[n] = r;
                n += 1;
                bits &= bits - 1;
            }
        }
        (n, Some(next))
    }

    /// Moves the regions of `self` into `other` (whose capacity must be the
    /// same), one bounded step from summary word `from` on: the first call
    /// passes 0, the next ones what the previous returned, until `None`.
    /// Then `self` is empty, unless regions were inserted below the point
    /// reached while the steps went on.
    pub(crate) fn move_into(&mut self, other: &mut Self, from: usize) -> Option<usize> {
        if self.count != other.count {
            return None;
        }
        let mut budget = STEP_WORDS;
        for s in from..self.summary.len() {
            if budget == 0 {
                return Some(s);
            }
            let mut sbits = core::mem::take(&mut self.summary[s]);
            budget = budget.saturating_sub(1 + sbits.count_ones() as usize);
            other.summary[s] |= sbits;
            while sbits != 0 {
                let w = s * BITS as usize + sbits.trailing_zeros() as usize;
                other.main[w] |= core::mem::take(&mut self.main[w]);
                sbits &= sbits - 1;
            }
        }
        None
    }

    /// Empties the set, one bounded step from summary word `from` on, as
    /// [`Self::move_into`] does.
    pub(crate) fn clear(&mut self, from: usize) -> Option<usize> {
        let mut budget = STEP_WORDS;
        for s in from..self.summary.len() {
            if budget == 0 {
                return Some(s);
            }
            let mut sbits = core::mem::take(&mut self.summary[s]);
            budget = budget.saturating_sub(1 + sbits.count_ones() as usize);
            while sbits != 0 {
                self.main[s * BITS as usize + sbits.trailing_zeros() as usize] = 0;
                sbits &= sbits - 1;
            }
        }
        None
    }

    /// The first nonzero main word at or after `word`, visiting at most
    /// `budget` summary words (and taking them off it).
    fn next_set_word(&self, word: u64, budget: &mut usize) -> Scan {
        let Ok(mut s) = usize::try_from(word / BITS) else {
            return Scan::End;
        };
        let mut mask = u64::MAX << (word % BITS);
        while s < self.summary.len() {
            if *budget == 0 {
                return Scan::Paused(s as u64 * BITS);
            }
            *budget -= 1;
            let bits = self.summary[s] & mask;
            if bits != 0 {
                return Scan::Found(s * BITS as usize + bits.trailing_zeros() as usize);
            }
            s += 1;
            mask = u64::MAX;
        }
        Scan::End
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Set = RegionSet<Vec<u64>>;

    fn set(count: u64) -> Set {
        let (m, s) = words_for(count).unwrap();
        RegionSet::new(count, vec![0; m], vec![0; s]).unwrap()
    }

    /// The regions of `s` from `from` on, taken `chunk` at a time; and the
    /// number of steps that took.
    fn fill_all(s: &Set, from: u64, chunk: usize) -> (Vec<u64>, usize) {
        let mut got = Vec::new();
        let mut out = vec![0; chunk];
        let mut next = Some(from);
        let mut steps = 0;
        while let Some(f) = next {
            let (n, resume) = s.fill_from(f, &mut out);
            got.extend_from_slice(&out[..n]);
            assert!(resume.is_none_or(|r| r > f || n > 0), "no progress at {f}");
            next = resume;
            steps += 1;
        }
        (got, steps)
    }

    fn all(s: &Set) -> Vec<u64> {
        fill_all(s, 0, 32).0
    }

    /// Runs a stepped operation to the end; returns the number of steps.
    fn steps(mut step: impl FnMut(usize) -> Option<usize>) -> usize {
        let mut next = Some(0);
        let mut n = 0;
        while let Some(from) = next {
            next = step(from);
            assert!(next.is_none_or(|s| s > from), "no progress at {from}");
            n += 1;
        }
        n
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
        for chunk in [1, 2, 3, 32] {
            assert_eq!(fill_all(&s, 0, chunk).0, regions);
        }
        let mut out = [0u64; 4];
        assert_eq!(s.fill_from(4096, &mut out), (3, None));
        assert_eq!(out[..3], [4096, 4097, 9999]);
        let (n, resume) = s.fill_from(4097, &mut out[..1]);
        assert_eq!((n, out[0]), (1, 4097));
        assert!(resume.is_some_and(|r| (4098..=9999).contains(&r)));
        assert_eq!(fill_all(&s, 65, 32).0, [127, 4095, 4096, 4097, 9999]);
        assert_eq!(s.fill_from(10_000, &mut out), (0, None));
        assert_eq!(s.fill_from(u64::MAX, &mut out), (0, None));
    }

    #[test]
    fn move_into_merges_and_empties() {
        let mut a = set(5000);
        let mut b = set(5000);
        a.insert(1);
        a.insert(4999);
        b.insert(1);
        b.insert(70);
        steps(|from| a.move_into(&mut b, from));
        assert!(a.is_empty());
        assert_eq!(all(&a), Vec::<u64>::new());
        assert_eq!(all(&b), [1, 70, 4999]);
        steps(|from| b.clear(from));
        assert!(b.is_empty());
        assert_eq!(all(&b), Vec::<u64>::new());
        b.insert(3);
        assert_eq!(all(&b), [3]);
        assert_eq!(b.move_into(&mut set(5001), 0), None);
        assert_eq!(all(&b), [3]);
    }

    /// Each step stops after a bounded amount of work, whatever the size of
    /// the set, and the steps together do the whole job: an empty stretch
    /// of 4096 summary words takes 4096 / STEP_WORDS steps to cross, a full
    /// set one step per STEP_WORDS + 64 words.
    #[test]
    fn scans_stop_after_a_bounded_step() {
        let count: u64 = 1 << 24;
        let (main, summary) = words_for(count).unwrap();
        let mut a = set(count);
        a.insert(count - 1);
        let (got, n) = fill_all(&a, 0, 32);
        assert_eq!(got, [count - 1]);
        assert!(n >= summary / STEP_WORDS, "{n} fill steps");
        let mut b = set(count);
        assert!(steps(|from| b.clear(from)) >= summary / STEP_WORDS);
        assert!(steps(|from| a.move_into(&mut b, from)) >= summary / STEP_WORDS);
        assert_eq!(all(&b), [count - 1]);

        for r in 0..count {
            a.insert(r);
        }
        let least = (main + summary) / (STEP_WORDS + 64);
        let n = steps(|from| a.move_into(&mut b, from));
        assert!(n >= least, "{n} move steps, at least {least} expected");
        assert!(a.is_empty());
        let (got, _) = fill_all(&b, 0, 4096);
        assert_eq!(got.len() as u64, count);
        let n = steps(|from| b.clear(from));
        assert!(n >= least, "{n} clear steps, at least {least} expected");
        assert!(b.is_empty());
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
                steps(|from| s.clear(from));
                model.clear();
            }
        }
        assert_eq!(all(&s), model.into_iter().collect::<Vec<_>>());
    }

    /// Not a test: prints how long a flush holds the marks lock (interrupts
    /// off) at once, as `log.rs` takes it: a swap at the start, then a step
    /// at a time; the slowest step of each kind, as the 99.9th percentile
    /// (the host preempts the measurement now and then) and the maximum
    /// (`cargo test --release -p kmod-logic -- --ignored --nocapture
    /// irqs_off`).
    #[test]
    #[ignore]
    fn irqs_off_longest_hold() {
        use std::time::Instant;
        fn time<R>(times: &mut Vec<u128>, f: impl FnOnce() -> R) -> R {
            let t = Instant::now();
            let r = f();
            times.push(t.elapsed().as_nanos());
            r
        }
        fn summary(mut times: Vec<u128>) -> String {
            times.sort_unstable();
            let p = times[(times.len() - 1) * 999 / 1000];
            let max = times[times.len() - 1];
            format!("{:.1}/{:.1}", p as f64 / 1000.0, max as f64 / 1000.0)
        }
        for (name, count, every) in [
            ("1M regions, all marked", 1u64 << 20, 1u64),
            ("1M regions, last one marked", 1 << 20, 1 << 20),
            ("1G regions, last one marked", 1 << 30, 1 << 30),
            ("1G regions, every 4096th marked", 1 << 30, 4096),
        ] {
            let mut times: [Vec<u128>; 4] = Default::default();
            for _ in 0..3 {
                // Touched beforehand, as kvmalloc'd memory is.
                let touched = || {
                    let (m, s) = words_for(count).unwrap();
                    let mut main = vec![1u64; m];
                    let mut summary = vec![1u64; s];
                    main.iter_mut().for_each(|w| *w = std::hint::black_box(0));
                    summary
                        .iter_mut()
                        .for_each(|w| *w = std::hint::black_box(0));
                    RegionSet::new(count, main, summary).unwrap()
                };
                let mut pending = touched();
                let mut in_flight = touched();
                let mut r = every - 1;
                while r < count {
                    pending.insert(r);
                    r += every;
                }
                time(&mut times[0], || {
                    core::mem::swap(&mut pending, &mut in_flight)
                });
                let mut out = [0u64; 32];
                let mut next = Some(0);
                while let Some(from) = next {
                    next = time(&mut times[1], || in_flight.fill_from(from, &mut out)).1;
                }
                let mut next = Some(0);
                while let Some(from) = next {
                    next = time(&mut times[2], || in_flight.move_into(&mut pending, from));
                }
                let mut next = Some(0);
                while let Some(from) = next {
                    next = time(&mut times[3], || pending.clear(from));
                }
            }
            let [start, fill, back, clear] = times;
            println!(
                "{name}, slowest hold in us (99.9th percentile/max): start {}, fill {}, move back {}, clear {}",
                summary(start),
                summary(fill),
                summary(back),
                summary(clear)
            );
        }
    }
}
