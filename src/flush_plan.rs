// SPDX-License-Identifier: GPL-2.0

//! The requests one flush sends, in the order the server relies on: clears
//! first, in groups of up to 32 regions; then marks, in MARK_REGION groups
//! followed by one payload-less FLUSH, or, with `integrated_flush`, inside
//! the FLUSH requests themselves. A flush that has only clears sends no
//! FLUSH: it asks for a lazy one later. Uses `core` only; compiled on the
//! host too.

use crate::wire::{RequestType, MAX_GROUP_REGIONS};

/// Where a plan takes regions from.
pub(crate) trait RegionSource {
    /// Fills `out` with the next regions; returns how many (0: none left).
    fn fill(&mut self, out: &mut [u64]) -> usize;
}

/// One request of a flush: a type and up to 32 regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// CLEAR_REGION, MARK_REGION or FLUSH.
    pub(crate) kind: RequestType,
    len: usize,
    regions: [u64; MAX_GROUP_REGIONS],
}

impl Group {
    /// A group of `kind` with no region.
    pub(crate) const fn empty(kind: RequestType) -> Self {
        Self {
            kind,
            len: 0,
            regions: [0; MAX_GROUP_REGIONS],
        }
    }

    /// The regions of the group.
    pub(crate) fn regions(&self) -> &[u64] {
        &self.regions[..self.len]
    }

    fn from_source(kind: RequestType, src: &mut impl RegionSource) -> Option<Self> {
        let mut g = Self::empty(kind);
        g.len = src.fill(&mut g.regions).min(MAX_GROUP_REGIONS);
        (g.len > 0).then_some(g)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Clears,
    Marks,
    Commit,
    Done,
}

/// The requests of one flush, produced lazily so that regions are taken
/// from their sources only as requests are built.
pub(crate) struct FlushPlan<C: RegionSource, M: RegionSource> {
    clears: C,
    marks: M,
    integrated: bool,
    stage: Stage,
    sent_clears: bool,
    sent_marks: bool,
}

impl<C: RegionSource, M: RegionSource> FlushPlan<C, M> {
    /// A plan over pending `clears` and `marks`.
    pub(crate) fn new(clears: C, marks: M, integrated_flush: bool) -> Self {
        Self {
            clears,
            marks,
            integrated: integrated_flush,
            stage: Stage::Clears,
            sent_clears: false,
            sent_marks: false,
        }
    }

    /// After the plan is exhausted: whether it sent clears but no FLUSH, so
    /// a lazy FLUSH should commit them later. (When it sent a FLUSH, that
    /// FLUSH committed earlier clears too, and a pending lazy one is moot.)
    pub(crate) fn needs_lazy_flush(&self) -> bool {
        self.sent_clears && !self.sent_marks
    }

    /// Whether the plan sent any mark (and so a FLUSH).
    pub(crate) fn sent_marks(&self) -> bool {
        self.sent_marks
    }
}

impl<C: RegionSource, M: RegionSource> Iterator for FlushPlan<C, M> {
    type Item = Group;

    fn next(&mut self) -> Option<Group> {
        loop {
            match self.stage {
                Stage::Clears => {
                    match Group::from_source(RequestType::ClearRegion, &mut self.clears) {
                        Some(g) => {
                            self.sent_clears = true;
                            return Some(g);
                        }
                        None => self.stage = Stage::Marks,
                    }
                }
                Stage::Marks => {
                    let kind = if self.integrated {
                        RequestType::Flush
                    } else {
                        RequestType::MarkRegion
                    };
                    match Group::from_source(kind, &mut self.marks) {
                        Some(g) => {
                            self.sent_marks = true;
                            return Some(g);
                        }
                        None => self.stage = Stage::Commit,
                    }
                }
                Stage::Commit => {
                    self.stage = Stage::Done;
                    if self.sent_marks && !self.integrated {
                        return Some(Group::empty(RequestType::Flush));
                    }
                }
                Stage::Done => return None,
            }
        }
    }
}

/// A [`RegionSource`] over an iterator of regions.
pub(crate) struct FromIter<I: Iterator<Item = u64>>(pub(crate) I);

impl<I: Iterator<Item = u64>> RegionSource for FromIter<I> {
    fn fill(&mut self, out: &mut [u64]) -> usize {
        let mut n = 0;
        for slot in out.iter_mut() {
            match self.0.next() {
                Some(r) => {
                    *slot = r;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// A [`RegionSource`] that takes regions a bounded step at a time, as the
/// log takes its marks: one step per hold of a lock that disables
/// interrupts. `step(from, out)` writes regions at or above `from` into
/// `out` and returns how many, and where the next step starts (`None`: no
/// region left); a step may write none and still have regions left.
pub(crate) struct Stepwise<F: FnMut(u64, &mut [u64]) -> (usize, Option<u64>)> {
    step: F,
    /// Where the next step starts; `None` once all are taken.
    next: Option<u64>,
}

impl<F: FnMut(u64, &mut [u64]) -> (usize, Option<u64>)> Stepwise<F> {
    /// A source of the regions `step` finds from 0 on.
    pub(crate) fn new(step: F) -> Self {
        Self {
            step,
            next: Some(0),
        }
    }
}

impl<F: FnMut(u64, &mut [u64]) -> (usize, Option<u64>)> RegionSource for Stepwise<F> {
    fn fill(&mut self, out: &mut [u64]) -> usize {
        while let Some(from) = self.next.filter(|_| !out.is_empty()) {
            let (n, next) = (self.step)(from, out);
            self.next = next;
            if n > 0 {
                return n;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clears: u64, marks: u64, integrated: bool) -> (Vec<(RequestType, Vec<u64>)>, bool) {
        let mut p = FlushPlan::new(FromIter(100..100 + clears), FromIter(0..marks), integrated);
        let reqs = p.by_ref().map(|g| (g.kind, g.regions().to_vec())).collect();
        (reqs, p.needs_lazy_flush())
    }

    fn kinds(reqs: &[(RequestType, Vec<u64>)]) -> Vec<(RequestType, usize)> {
        reqs.iter().map(|(k, r)| (*k, r.len())).collect()
    }

    use RequestType::{ClearRegion as C, Flush as F, MarkRegion as M};

    #[test]
    fn nothing_pending_sends_nothing() {
        assert_eq!(plan(0, 0, false), (vec![], false));
        assert_eq!(plan(0, 0, true), (vec![], false));
    }

    #[test]
    fn clears_come_first_in_groups_of_32_then_marks_then_flush() {
        let (reqs, lazy) = plan(33, 65, false);
        assert_eq!(
            kinds(&reqs),
            [(C, 32), (C, 1), (M, 32), (M, 32), (M, 1), (F, 0)]
        );
        assert_eq!(reqs[0].1[0], 100);
        assert_eq!(reqs[1].1, [132]);
        assert_eq!(reqs[4].1, [64]);
        assert!(!lazy);
    }

    #[test]
    fn clears_only_send_no_flush_and_ask_for_a_lazy_one() {
        for integrated in [false, true] {
            let (reqs, lazy) = plan(3, 0, integrated);
            assert_eq!(kinds(&reqs), [(C, 3)]);
            assert!(lazy);
        }
    }

    #[test]
    fn integrated_flush_carries_the_marks() {
        let (reqs, lazy) = plan(1, 40, true);
        assert_eq!(kinds(&reqs), [(C, 1), (F, 32), (F, 8)]);
        assert!(!lazy);
        let (reqs, _) = plan(0, 2, true);
        assert_eq!(reqs, [(F, vec![0, 1])]);
    }

    /// A step over the sorted `regions` as a bitmap scan takes it: the
    /// regions in `from..from + 100` while `out` has room; the next step
    /// starts at the region that did not fit, or past the scanned range.
    fn step(regions: &[u64], from: u64, out: &mut [u64]) -> (usize, Option<u64>) {
        let rest: Vec<u64> = regions.iter().copied().filter(|&r| r >= from).collect();
        let found = rest.iter().take_while(|&&r| r < from + 100).count();
        let n = found.min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        let next = if n < found {
            Some(rest[n])
        } else {
            rest.get(n).map(|_| from + 100)
        };
        (n, next)
    }

    #[test]
    fn marks_taken_step_by_step_all_go_out_in_order() {
        let regions: Vec<u64> = (0..40).chain([1000, 5000]).chain(5002..5030).collect();
        let marks = Stepwise::new(|from, out: &mut [u64]| step(&regions, from, out));
        let mut p = FlushPlan::new(FromIter(0..0), marks, false);
        let groups: Vec<_> = p.by_ref().map(|g| (g.kind, g.regions().to_vec())).collect();
        let sent: Vec<u64> = groups.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(sent, regions);
        // A group is what one step found, at most 32; empty steps are skipped.
        assert_eq!(kinds(&groups), [(M, 32), (M, 8), (M, 1), (M, 29), (F, 0)]);
    }

    #[test]
    fn marks_only_send_one_flush() {
        let (reqs, lazy) = plan(0, 1, false);
        assert_eq!(reqs, [(M, vec![0]), (F, vec![])]);
        assert!(!lazy);
    }
}
