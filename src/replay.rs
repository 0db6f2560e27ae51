// SPDX-License-Identifier: GPL-2.0

//! Reaching a log server again after it went away.
//!
//! While no server listens, a request waits: the log tries, a pause apart,
//! to create the log again at a server (CTR), then resumes it (RESUME) and
//! sends the request anew. A server that lost the log may hold regions out
//! of sync again, so what the log learnt from the old one about regions (its
//! hints, its memo of IN_SYNC answers) is forgotten first, as on a resume.
//! Uses `core` only; compiled on the host too.

use crate::wire::RequestType;

/// What a replay did, for the log to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event<E> {
    /// No server listens.
    Lost,
    /// About to try CTR again, after a pause.
    Trying,
    /// A server took the CTR.
    Recreated,
    /// It refused the RESUME: the request fails with the error of a lost
    /// server.
    ResumeFailed(E),
}

/// A log's way to its server.
pub(crate) trait Server {
    type Error: Copy;

    /// Sends one request and waits for its answer; see
    /// `Channel::request`.
    fn request(
        &mut self,
        kind: RequestType,
        data: &[u8],
        reply: &mut [u8],
    ) -> Result<usize, Self::Error>;

    /// Whether `e` says no server listens.
    fn is_lost(&self, e: Self::Error) -> bool;

    /// Creates the log at the server (CTR, with the table's arguments).
    fn recreate(&mut self) -> Result<(), Self::Error>;

    /// Waits before the next attempt to reach a server.
    fn pause(&mut self);

    /// Forgets what the log learnt about regions from the lost server.
    fn forget_answers(&mut self);

    /// Says what happened.
    fn report(&mut self, event: Event<Self::Error>);
}

/// Sends a request; while no server listens, waits for one and replays CTR
/// and RESUME to it first.
pub(crate) fn request<S: Server>(
    server: &mut S,
    kind: RequestType,
    data: &[u8],
    reply: &mut [u8],
) -> Result<usize, S::Error> {
    loop {
        let lost = match server.request(kind, data, reply) {
            Err(e) if server.is_lost(e) => e,
            r => return r,
        };
        server.report(Event::Lost);
        loop {
            server.pause();
            server.report(Event::Trying);
            if server.recreate().is_ok() {
                break;
            }
        }
        server.report(Event::Recreated);
        if let Err(e) = server.request(RequestType::Resume, &[], &mut []) {
            server.report(Event::ResumeFailed(e));
            return Err(lost);
        }
        server.forget_answers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestType::{Ctr, InSync, Resume};

    const ESRCH: i32 = 3;

    /// What the fake server saw and the log did, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Sent(RequestType),
        Paused,
        Forgot,
        Said(Event<i32>),
    }
    use Seen::*;

    /// A server that answers with the scripted results, in order, then 0.
    struct Script {
        answers: Vec<Result<usize, i32>>,
        seen: Vec<Seen>,
    }

    impl Script {
        fn new(answers: &[Result<usize, i32>]) -> Self {
            Self {
                answers: answers.to_vec(),
                seen: Vec::new(),
            }
        }

        fn answer(&mut self, kind: RequestType) -> Result<usize, i32> {
            self.seen.push(Sent(kind));
            if self.answers.is_empty() {
                Ok(0)
            } else {
                self.answers.remove(0)
            }
        }
    }

    impl Server for Script {
        type Error = i32;

        fn request(&mut self, kind: RequestType, _: &[u8], _: &mut [u8]) -> Result<usize, i32> {
            self.answer(kind)
        }

        fn is_lost(&self, e: i32) -> bool {
            e == ESRCH
        }

        fn recreate(&mut self) -> Result<(), i32> {
            self.answer(Ctr).map(|_| ())
        }

        fn pause(&mut self) {
            self.seen.push(Paused);
        }

        fn forget_answers(&mut self) {
            self.seen.push(Forgot);
        }

        fn report(&mut self, event: Event<i32>) {
            self.seen.push(Said(event));
        }
    }

    fn run(s: &mut Script) -> Result<usize, i32> {
        request(s, InSync, &[], &mut [])
    }

    #[test]
    fn an_answer_or_a_refusal_returns_at_once() {
        let mut s = Script::new(&[Ok(8)]);
        assert_eq!(run(&mut s), Ok(8));
        let mut s = Script::new(&[Err(5)]);
        assert_eq!(run(&mut s), Err(5));
        assert_eq!(s.seen, [Sent(InSync)]);
    }

    #[test]
    fn a_lost_server_gets_ctr_until_it_takes_it_then_resume_then_the_request() {
        let mut s = Script::new(&[Err(ESRCH), Err(ESRCH), Err(ESRCH), Ok(0), Ok(0), Ok(8)]);
        assert_eq!(run(&mut s), Ok(8));
        assert_eq!(
            s.seen,
            [
                Sent(InSync),
                Said(Event::Lost),
                Paused,
                Said(Event::Trying),
                Sent(Ctr),
                Paused,
                Said(Event::Trying),
                Sent(Ctr),
                Paused,
                Said(Event::Trying),
                Sent(Ctr),
                Said(Event::Recreated),
                Sent(Resume),
                Forgot,
                Sent(InSync),
            ]
        );
    }

    #[test]
    fn answers_of_the_lost_server_are_forgotten_before_the_request_goes_again() {
        let mut s = Script::new(&[Err(ESRCH), Ok(0), Ok(0), Err(ESRCH), Ok(0), Ok(0), Ok(1)]);
        assert_eq!(run(&mut s), Ok(1));
        let forgot: Vec<_> = s
            .seen
            .iter()
            .enumerate()
            .filter(|(_, e)| **e == Forgot)
            .collect();
        assert_eq!(forgot.len(), 2);
        assert_eq!(s.seen[forgot[1].0 + 1], Sent(InSync));
    }

    #[test]
    fn a_refused_resume_fails_the_request_as_lost() {
        let mut s = Script::new(&[Err(ESRCH), Ok(0), Err(5)]);
        assert_eq!(run(&mut s), Err(ESRCH));
        assert!(!s.seen.contains(&Forgot));
        assert_eq!(s.seen.last(), Some(&Said(Event::ResumeFailed(5))));
    }
}
