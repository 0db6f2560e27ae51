// SPDX-License-Identifier: GPL-2.0

//! When a request is sent again.
//!
//! A request waits for a well-formed answer (`reply.rs`) for as long as it
//! takes: netlink may drop messages, and a server may die holding one, so a
//! request unanswered after the resend timeout is sent again, forever, and
//! so is one the server answers with `EAGAIN`. A send the netlink layer
//! could not take is tried again too, within limits. Uses `core` only;
//! compiled on the host too.

use crate::reply::Answer;

/// How waiting for a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A well-formed answer came.
    Done(Answer),
    /// None came in time.
    TimedOut,
}

/// What a request does after a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// It is over, with this answer (data or a refusal).
    Finish(Answer),
    /// Send it again at once: it timed out.
    ResendTimedOut,
    /// Send it again, after this many milliseconds: the server said `EAGAIN`.
    Resend { pause_ms: u32 },
}

/// `EAGAIN` answers a request takes before it pauses between resends, so
/// that a server that keeps saying it does not make it spin.
const EAGAIN_WITHOUT_PAUSE: u32 = 3;

/// The pause between resends after those.
const EAGAIN_PAUSE_MS: u32 = 10;

/// The retries of one request.
#[derive(Default)]
pub(crate) struct Retries {
    eagain: u32,
}

impl Retries {
    /// What the request does after `wait`.
    pub(crate) fn after(&mut self, wait: Wait) -> Next {
        match wait {
            Wait::TimedOut => Next::ResendTimedOut,
            Wait::Done(Answer::Resend) => {
                self.eagain += 1;
                let pause_ms = if self.eagain > EAGAIN_WITHOUT_PAUSE {
                    EAGAIN_PAUSE_MS
                } else {
                    0
                };
                Next::Resend { pause_ms }
            }
            Wait::Done(answer) => Next::Finish(answer),
        }
    }
}

/// Why the netlink layer did not take a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// A listener had no room for it (`ENOBUFS`): maybe the server.
    NoBufs,
    /// No memory for it (`ENOMEM`), for now.
    NoMem,
    /// Anything else (`ESRCH`: nobody listens).
    Other,
}

/// What a send does after the netlink layer did not take its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterSendError {
    /// Send the same message again after this many milliseconds.
    Again { pause_ms: u32 },
    /// Wait for the reply as if it was sent: the resend timeout covers it.
    LeaveToTimeout,
    /// The request fails with that error.
    Fail,
}

/// Sends of one message retried for want of buffer space: each waits twice
/// as long, 2, 4, ... 64 ms; a server that had it after all answers twice,
/// and its second answer finds no waiter.
const NOBUFS_RETRIES: u32 = 6;

/// Sends of one message retried for want of memory, this many milliseconds
/// apart (1 s in all), before its request fails. Failing is worse: a failed
/// IN_SYNC sends a write to the default leg only; a failed SET_REGION_SYNC
/// leaves the region out of sync at the server until the next resume.
const NOMEM_RETRIES: u32 = 100;
const NOMEM_PAUSE_MS: u32 = 10;

/// The retries of one message.
#[derive(Default)]
pub(crate) struct SendRetries {
    nobufs: u32,
    nomem: u32,
}

impl SendRetries {
    /// What the send does after `error`.
    pub(crate) fn after(&mut self, error: SendError) -> AfterSendError {
        match error {
            SendError::NoBufs if self.nobufs < NOBUFS_RETRIES => {
                self.nobufs += 1;
                AfterSendError::Again {
                    pause_ms: 1 << self.nobufs,
                }
            }
            SendError::NoBufs => AfterSendError::LeaveToTimeout,
            SendError::NoMem if self.nomem < NOMEM_RETRIES => {
                self.nomem += 1;
                AfterSendError::Again {
                    pause_ms: NOMEM_PAUSE_MS,
                }
            }
            SendError::NoMem | SendError::Other => AfterSendError::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_resends_forever() {
        let mut r = Retries::default();
        for _ in 0..1000 {
            assert_eq!(r.after(Wait::TimedOut), Next::ResendTimedOut);
        }
        assert_eq!(
            r.after(Wait::Done(Answer::Data(0))),
            Next::Finish(Answer::Data(0))
        );
    }

    #[test]
    fn eagain_resends_and_pauses_after_the_third() {
        let mut r = Retries::default();
        let eagain = Wait::Done(Answer::Resend);
        for _ in 0..3 {
            assert_eq!(r.after(eagain), Next::Resend { pause_ms: 0 });
        }
        for _ in 0..100 {
            assert_eq!(r.after(eagain), Next::Resend { pause_ms: 10 });
        }
    }

    #[test]
    fn data_and_refusals_finish() {
        let mut r = Retries::default();
        assert_eq!(
            r.after(Wait::Done(Answer::Data(8))),
            Next::Finish(Answer::Data(8))
        );
        assert_eq!(
            r.after(Wait::Done(Answer::Refused(5))),
            Next::Finish(Answer::Refused(5))
        );
    }

    #[test]
    fn no_buffer_space_retries_six_times_then_leaves_it_to_the_timeout() {
        let mut s = SendRetries::default();
        for pause_ms in [2, 4, 8, 16, 32, 64] {
            assert_eq!(
                s.after(SendError::NoBufs),
                AfterSendError::Again { pause_ms }
            );
        }
        assert_eq!(s.after(SendError::NoBufs), AfterSendError::LeaveToTimeout);
    }

    #[test]
    fn no_memory_retries_for_a_second_then_fails() {
        let mut s = SendRetries::default();
        for _ in 0..100 {
            assert_eq!(
                s.after(SendError::NoMem),
                AfterSendError::Again { pause_ms: 10 }
            );
        }
        assert_eq!(s.after(SendError::NoMem), AfterSendError::Fail);
    }

    #[test]
    fn other_errors_fail_at_once() {
        assert_eq!(
            SendRetries::default().after(SendError::Other),
            AfterSendError::Fail
        );
    }
}
