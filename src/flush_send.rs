// SPDX-License-Identifier: GPL-2.0

//! How the requests of a flush are sent: a window at a time, all in flight
//! together, so that a flush waits for one round trip instead of one per
//! request; and after a failure, one at a time, as the C module would have
//! from that request on. Uses `core` only; compiled on the host too.
//!
//! The server handles requests in order, and may have handled the requests
//! of a window after the one that failed: those are sent again one by one.
//! A refused group of several clears or marks is sent again one region per
//! request (a server may not take groups); a refused FLUSH, or a refused
//! single region, fails the flush, and its marks wait for the next one.

use crate::flush_plan::Group;
use crate::reply::Answer;
use crate::resend::Wait;
use crate::wire::RequestType;

/// Requests one log may have in flight at once.
pub(crate) const WINDOW: usize = 8;

/// The groups of a flush about to be sent together.
pub(crate) struct GroupWindow {
    groups: [Group; WINDOW],
    len: usize,
}

impl GroupWindow {
    /// An empty window.
    pub(crate) const fn new() -> Self {
        Self {
            groups: [Group::empty(RequestType::Flush); WINDOW],
            len: 0,
        }
    }

    /// Forgets the queued groups.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Queues `g`; returns `false`, queueing nothing, if the window is full.
    pub(crate) fn push(&mut self, g: Group) -> bool {
        match self.groups.get_mut(self.len) {
            Some(slot) => {
                *slot = g;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The queued groups.
    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups[..self.len]
    }
}

/// Why the groups of a window did not all succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupFailure<E> {
    /// Group `index` got no usable answer (a timeout, `EAGAIN`, or it was
    /// never sent): it must be sent again, and every group after it.
    Unanswered(usize),
    /// The server answered group `index` with this error.
    Refused(usize, E),
}

/// The first failure among the groups of a window, in window order.
pub(crate) struct WindowResult {
    first: Option<GroupFailure<u32>>,
    /// The first group that was never sent, if any.
    unsent: Option<usize>,
}

impl WindowResult {
    /// For a window of `queued` groups of which the first `sent` went out.
    pub(crate) fn new(queued: usize, sent: usize) -> Self {
        Self {
            first: None,
            unsent: (sent < queued).then_some(sent),
        }
    }

    /// Notes how waiting for group `index` ended.
    pub(crate) fn note(&mut self, index: usize, wait: Wait) {
        let failure = match wait {
            Wait::Done(Answer::Data(_)) => return,
            Wait::Done(Answer::Refused(errno)) => GroupFailure::Refused(index, errno),
            Wait::Done(Answer::Resend) | Wait::TimedOut => GroupFailure::Unanswered(index),
        };
        if self.first.is_none() {
            self.first = Some(failure);
        }
    }

    /// `Ok` if every group succeeded at its first attempt; otherwise the
    /// first that did not and why (a refusal's errno).
    pub(crate) fn finish(self) -> Result<(), GroupFailure<u32>> {
        // The groups sent come before the first group not sent.
        match (self.first, self.unsent) {
            (Some(f), _) => Err(f),
            (None, Some(i)) => Err(GroupFailure::Unanswered(i)),
            (None, None) => Ok(()),
        }
    }
}

/// What a flush sends through: its log's lane.
pub(crate) trait GroupLink {
    type Error: Copy;

    /// The window [`send_window`](Self::send_window) sends.
    fn window(&mut self) -> &mut GroupWindow;

    /// Sends the window's groups back to back and waits for all their
    /// replies (each group's answer is waited for, whatever came before).
    fn send_window(&mut self) -> Result<(), GroupFailure<Self::Error>>;

    /// Sends one request of `kind` naming `regions` and waits for its
    /// answer, sending it again as long as it gets none.
    fn send_one(&mut self, kind: RequestType, regions: &[u64]) -> Result<(), Self::Error>;
}

/// Sends the requests of a flush plan, in order.
pub(crate) fn send_plan<L: GroupLink>(
    link: &mut L,
    plan: &mut impl Iterator<Item = Group>,
) -> Result<(), L::Error> {
    loop {
        let window = link.window();
        window.clear();
        while window.groups().len() < WINDOW {
            let Some(g) = plan.next() else { break };
            // The window has room: this queues `g`.
            window.push(g);
        }
        let n = window.groups().len();
        if n == 0 {
            return Ok(());
        }
        let first = match link.send_window() {
            Ok(()) => continue,
            Err(GroupFailure::Unanswered(i)) => i,
            Err(GroupFailure::Refused(i, e)) => {
                let g = link.window().groups()[i];
                after_refusal(link, &g, e)?;
                i + 1
            }
        };
        for i in first..n {
            let g = link.window().groups()[i];
            send_slowly(link, &g)?;
        }
        for g in plan {
            send_slowly(link, &g)?;
        }
        return Ok(());
    }
}

/// Sends one group, waiting for its reply.
fn send_slowly<L: GroupLink>(link: &mut L, g: &Group) -> Result<(), L::Error> {
    match link.send_one(g.kind, g.regions()) {
        Ok(()) => Ok(()),
        Err(e) => after_refusal(link, g, e),
    }
}

/// What follows the server refusing group `g` with `e`: a group of several
/// clears or marks is sent again one region per request; anything else
/// fails the flush.
fn after_refusal<L: GroupLink>(link: &mut L, g: &Group, e: L::Error) -> Result<(), L::Error> {
    if g.kind == RequestType::Flush || g.regions().len() < 2 {
        return Err(e);
    }
    for &r in g.regions() {
        link.send_one(g.kind, &[r])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush_plan::{FlushPlan, FromIter};
    use RequestType::{ClearRegion as C, Flush as F, MarkRegion as M};

    /// A server that answers windows and single requests as scripted, and
    /// records what it was sent.
    #[derive(Default)]
    struct Script {
        window: GroupWindow,
        /// Answers to the windows sent, in order; then `Ok`.
        windows: Vec<Result<(), GroupFailure<u32>>>,
        /// Refuses single requests of this kind with more than one region...
        refuse_groups_of: Option<RequestType>,
        /// ...and any single request naming this region.
        refuse_region: Option<u64>,
        /// The windows sent, as (kind, regions), one entry per window.
        sent_windows: Vec<Vec<(RequestType, Vec<u64>)>>,
        /// The single requests sent.
        sent_one: Vec<(RequestType, Vec<u64>)>,
    }

    impl Default for GroupWindow {
        fn default() -> Self {
            Self::new()
        }
    }

    impl GroupLink for Script {
        type Error = u32;

        fn window(&mut self) -> &mut GroupWindow {
            &mut self.window
        }

        fn send_window(&mut self) -> Result<(), GroupFailure<u32>> {
            let groups = self.window.groups();
            self.sent_windows.push(
                groups
                    .iter()
                    .map(|g| (g.kind, g.regions().to_vec()))
                    .collect(),
            );
            if self.windows.is_empty() {
                Ok(())
            } else {
                self.windows.remove(0)
            }
        }

        fn send_one(&mut self, kind: RequestType, regions: &[u64]) -> Result<(), u32> {
            self.sent_one.push((kind, regions.to_vec()));
            let refused = (self.refuse_groups_of == Some(kind) && regions.len() > 1)
                || self.refuse_region.is_some_and(|r| regions.contains(&r));
            if refused {
                Err(22)
            } else {
                Ok(())
            }
        }
    }

    fn run(s: &mut Script, clears: u64, marks: u64) -> Result<(), u32> {
        let mut plan = FlushPlan::new(FromIter(100..100 + clears), FromIter(0..marks), false);
        send_plan(s, &mut plan)
    }

    fn kinds(reqs: &[(RequestType, Vec<u64>)]) -> Vec<(RequestType, usize)> {
        reqs.iter().map(|(k, r)| (*k, r.len())).collect()
    }

    #[test]
    fn a_flush_goes_out_a_window_at_a_time() {
        let mut s = Script::default();
        // 9 clear groups, 1 mark group, a FLUSH: 11 requests, 2 windows.
        assert_eq!(run(&mut s, 32 * 9, 1), Ok(()));
        assert_eq!(s.sent_windows.len(), 2);
        assert_eq!(s.sent_windows[0].len(), WINDOW);
        assert_eq!(kinds(&s.sent_windows[1]), [(C, 32), (M, 1), (F, 0)]);
        assert!(s.sent_one.is_empty());
    }

    #[test]
    fn an_unanswered_group_and_every_later_one_go_again_one_by_one() {
        let mut s = Script {
            windows: [Err(GroupFailure::Unanswered(1))].into(),
            ..Script::default()
        };
        // Window: C C C C C C C C; then C M F left in the plan.
        assert_eq!(run(&mut s, 32 * 9, 1), Ok(()));
        assert_eq!(s.sent_windows.len(), 1);
        let again: Vec<_> = s
            .sent_one
            .iter()
            .map(|(k, r)| (*k, r.first().copied()))
            .collect();
        let want: Vec<_> = (1..9)
            .map(|i| (C, Some(100 + 32 * i)))
            .chain([(M, Some(0)), (F, None)])
            .collect();
        assert_eq!(again, want);
    }

    #[test]
    fn a_refused_group_of_marks_is_sent_again_one_region_each() {
        let mut s = Script {
            windows: [Err(GroupFailure::Refused(1, 22))].into(),
            ..Script::default()
        };
        // Window: C M(32) M(3) F.
        assert_eq!(run(&mut s, 1, 35), Ok(()));
        let singles: Vec<_> = (0..32).map(|r| (M, vec![r])).collect();
        assert_eq!(s.sent_one[..32], singles[..]);
        // Then the groups after it, as the server may have had them first.
        assert_eq!(kinds(&s.sent_one[32..]), [(M, 3), (F, 0)]);
    }

    #[test]
    fn a_group_refused_when_sent_alone_is_split_too() {
        let mut s = Script {
            windows: [Err(GroupFailure::Unanswered(0))].into(),
            refuse_groups_of: Some(C),
            ..Script::default()
        };
        assert_eq!(run(&mut s, 3, 0), Ok(()));
        assert_eq!(
            s.sent_one,
            [
                (C, vec![100, 101, 102]),
                (C, vec![100]),
                (C, vec![101]),
                (C, vec![102])
            ]
        );
    }

    #[test]
    fn a_refused_flush_or_single_region_fails_the_flush() {
        let mut s = Script {
            windows: [Err(GroupFailure::Refused(1, 5))].into(),
            ..Script::default()
        };
        // Window: M(1) F.
        assert_eq!(run(&mut s, 0, 1), Err(5));
        assert!(s.sent_one.is_empty());
        let mut s = Script {
            windows: [Err(GroupFailure::Refused(0, 5))].into(),
            ..Script::default()
        };
        assert_eq!(run(&mut s, 0, 1), Err(5));
        // A region of a split group refused alone: the flush fails there.
        let mut s = Script {
            windows: [Err(GroupFailure::Refused(0, 22))].into(),
            refuse_region: Some(2),
            ..Script::default()
        };
        assert_eq!(run(&mut s, 0, 4), Err(22));
        assert_eq!(kinds(&s.sent_one), [(M, 1), (M, 1), (M, 1)]);
    }

    fn window_result(queued: usize, sent: usize, waits: &[Wait]) -> Result<(), GroupFailure<u32>> {
        let mut r = WindowResult::new(queued, sent);
        for (i, &w) in waits.iter().enumerate() {
            r.note(i, w);
        }
        r.finish()
    }

    #[test]
    fn the_first_group_that_failed_is_the_window_failure() {
        let ok = Wait::Done(Answer::Data(0));
        assert_eq!(window_result(3, 3, &[ok, ok, ok]), Ok(()));
        assert_eq!(
            window_result(3, 3, &[ok, Wait::TimedOut, Wait::Done(Answer::Refused(5))]),
            Err(GroupFailure::Unanswered(1))
        );
        assert_eq!(
            window_result(3, 3, &[ok, Wait::Done(Answer::Refused(5)), Wait::TimedOut]),
            Err(GroupFailure::Refused(1, 5))
        );
        // EAGAIN: sent again, as after a timeout.
        assert_eq!(
            window_result(2, 2, &[Wait::Done(Answer::Resend), ok]),
            Err(GroupFailure::Unanswered(0))
        );
        // A group that could not be sent: sent again from there...
        assert_eq!(window_result(3, 1, &[ok]), Err(GroupFailure::Unanswered(1)));
        // ...unless a group sent before it failed: the server may have lost
        // it (it went away, hence the failed send), or refused it.
        assert_eq!(
            window_result(3, 2, &[Wait::TimedOut, ok]),
            Err(GroupFailure::Unanswered(0))
        );
        assert_eq!(
            window_result(3, 2, &[ok, Wait::Done(Answer::Refused(5))]),
            Err(GroupFailure::Refused(1, 5))
        );
    }
}
