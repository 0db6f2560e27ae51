// SPDX-License-Identifier: GPL-2.0

//! The requests in flight, found by the sequence number their replies carry.
//!
//! Every send of a request takes a fresh number, and a reply completes the
//! request entered under that number, only with an answer to it (see
//! `reply.rs`): the entry is then taken off, so a duplicate of the reply
//! finds nothing. A request resent after its timeout is taken off first and
//! entered again under a new number, so a late reply to the old number finds
//! nothing either. Uses `core` only; compiled on the host too.

use core::sync::atomic::{AtomicU32, Ordering};

/// Hands out sequence numbers, module-wide.
pub(crate) struct Sequence(AtomicU32);

impl Sequence {
    /// Numbers from 0.
    pub(crate) const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// The next number. It wraps: 2^32 sends later a number comes back,
    /// long after any request it named was answered or forgotten.
    pub(crate) fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A request waiting for the reply numbered `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiting<T> {
    pub(crate) seq: u32,
    pub(crate) request: T,
}

/// What a reply did to the requests in flight.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery<T, A, F> {
    /// No request waits for its number: a late or duplicate reply, or noise.
    Unmatched,
    /// Not an answer to the request waiting for its number: dropped, and the
    /// request goes on waiting.
    Dropped(F),
    /// The answer to this request, now taken off the table.
    Completed(T, A),
}

/// Enters a request sent as `seq` in a free entry of `table`; gives the
/// request back if there is none.
pub(crate) fn enter<T>(table: &mut [Option<Waiting<T>>], seq: u32, request: T) -> Result<(), T> {
    match table.iter_mut().find(|e| e.is_none()) {
        Some(free) => {
            *free = Some(Waiting { seq, request });
            Ok(())
        }
        None => Err(request),
    }
}

/// Hands the reply numbered `seq` to the request waiting for it: `check`
/// says whether the reply answers that request (and how) or why not.
pub(crate) fn deliver<T, A, F>(
    table: &mut [Option<Waiting<T>>],
    seq: u32,
    check: impl FnOnce(&T) -> Result<A, F>,
) -> Delivery<T, A, F> {
    let Some(entry) = table
        .iter_mut()
        .find(|e| e.as_ref().is_some_and(|w| w.seq == seq))
    else {
        return Delivery::Unmatched;
    };
    let answer = match entry.as_ref().map(|w| check(&w.request)) {
        Some(Ok(answer)) => answer,
        Some(Err(fault)) => return Delivery::Dropped(fault),
        None => return Delivery::Unmatched,
    };
    match entry.take() {
        Some(w) => Delivery::Completed(w.request, answer),
        None => Delivery::Unmatched,
    }
}

/// Takes the request numbered `seq` off `table` (it timed out, or could not
/// be sent); returns whether it was still there, unanswered.
pub(crate) fn forget<T>(table: &mut [Option<Waiting<T>>], seq: u32) -> bool {
    table
        .iter_mut()
        .find(|e| e.as_ref().is_some_and(|w| w.seq == seq))
        .and_then(Option::take)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the tests send it: whether it is an answer to the request
    /// (a name), and the answer.
    fn answers(name: &'static str, value: u32) -> impl FnOnce(&&'static str) -> Result<u32, ()> {
        move |request| if *request == name { Ok(value) } else { Err(()) }
    }

    #[test]
    fn a_reply_completes_the_request_with_its_number_only() {
        let mut table = [None, None, None];
        enter(&mut table, 7, "a").unwrap();
        enter(&mut table, 8, "b").unwrap();
        assert_eq!(
            deliver(&mut table, 8, answers("b", 1)),
            Delivery::Completed("b", 1)
        );
        assert_eq!(deliver(&mut table, 9, answers("a", 2)), Delivery::Unmatched);
        assert_eq!(
            deliver(&mut table, 7, answers("a", 3)),
            Delivery::Completed("a", 3)
        );
        assert!(table.iter().all(Option::is_none));
    }

    #[test]
    fn a_reply_that_does_not_answer_leaves_the_request_waiting() {
        let mut table = [None, None];
        enter(&mut table, 7, "a").unwrap();
        assert_eq!(
            deliver(&mut table, 7, answers("b", 1)),
            Delivery::Dropped(())
        );
        assert_eq!(
            deliver(&mut table, 7, answers("a", 1)),
            Delivery::Completed("a", 1)
        );
    }

    #[test]
    fn a_duplicate_reply_finds_nothing() {
        let mut table = [None];
        enter(&mut table, 7, "a").unwrap();
        assert_eq!(
            deliver(&mut table, 7, answers("a", 1)),
            Delivery::Completed("a", 1)
        );
        assert_eq!(deliver(&mut table, 7, answers("a", 1)), Delivery::Unmatched);
    }

    #[test]
    fn a_late_reply_to_a_resent_request_finds_nothing() {
        let mut table = [None, None];
        let seq = Sequence::new();
        let first = seq.next();
        enter(&mut table, first, "a").unwrap();
        // Timed out: forgotten, and sent again under a new number.
        assert!(forget(&mut table, first));
        let again = seq.next();
        assert_ne!(again, first);
        enter(&mut table, again, "a").unwrap();
        assert_eq!(
            deliver(&mut table, first, answers("a", 1)),
            Delivery::Unmatched
        );
        assert_eq!(
            deliver(&mut table, again, answers("a", 2)),
            Delivery::Completed("a", 2)
        );
    }

    #[test]
    fn a_request_answered_as_it_timed_out_is_not_forgotten() {
        let mut table = [None];
        enter(&mut table, 7, "a").unwrap();
        assert_eq!(
            deliver(&mut table, 7, answers("a", 1)),
            Delivery::Completed("a", 1)
        );
        assert!(!forget(&mut table, 7));
    }

    #[test]
    fn a_full_table_gives_the_request_back_and_freed_entries_are_reused() {
        let mut table = [None, None];
        enter(&mut table, 1, "a").unwrap();
        enter(&mut table, 2, "b").unwrap();
        assert_eq!(enter(&mut table, 3, "c"), Err("c"));
        assert!(forget(&mut table, 1));
        enter(&mut table, 3, "c").unwrap();
        assert_eq!(
            deliver(&mut table, 3, answers("c", 1)),
            Delivery::Completed("c", 1)
        );
        assert_eq!(
            deliver(&mut table, 2, answers("b", 1)),
            Delivery::Completed("b", 1)
        );
    }

    #[test]
    fn sequence_numbers_are_fresh_and_wrap() {
        let seq = Sequence(AtomicU32::new(u32::MAX));
        assert_eq!(seq.next(), u32::MAX);
        assert_eq!(seq.next(), 0);
        assert_eq!(seq.next(), 1);
    }
}
