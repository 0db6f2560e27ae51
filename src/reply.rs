// SPDX-License-Identifier: GPL-2.0

//! Which messages from a server complete a waiting request.
//!
//! Only a well-formed answer to that very request completes it: an answer a
//! caller would have to reject must never end the wait, or a stray or
//! hostile message could fail an IN_SYNC, and dm-raid1 sends a write whose
//! IN_SYNC failed to one leg only. Anything else is dropped, and the request
//! keeps waiting for a good answer (and is sent again after the resend
//! timeout). Uses `core` only; compiled on the host too.
//!
//! A reply answers a request when it names the same log and request type:
//! the same uuid, the same request type (its low 8 bits: cmirrord sets a
//! flag above them inside the cluster), and the request's `luid` or 0
//! (cmirrord zeroes the `luid` of every request it sends through the
//! cluster). See `Documentation/dm-log-userspace-protocol.rst`.

use crate::wire::{payload_i64, payload_u64, Message, ReplySize, RequestType, UUID_LEN};
use core::fmt;

/// Largest errno a reply may carry (`MAX_ERRNO`).
pub(crate) const MAX_ERRNO: u32 = 4095;

/// `EAGAIN`: the server asks for the request again.
pub(crate) const EAGAIN: u32 = 11;

/// What a request in flight accepts as its reply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expected<'a> {
    /// The log's local unique id.
    pub(crate) luid: u64,
    /// The log's uuid, NUL padded.
    pub(crate) uuid: &'a [u8; UUID_LEN],
    /// The request's type.
    pub(crate) kind: RequestType,
    /// Regions in the log: region numbers and counts in answers stay below
    /// (or, for a count, at most) this.
    pub(crate) region_count: u64,
}

/// How a well-formed reply ends its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Done, with this many bytes of reply payload.
    Data(usize),
    /// The server refused the request with this errno (`1..=MAX_ERRNO`).
    Refused(u32),
    /// The server asks for the request again (`EAGAIN`).
    Resend,
}

/// Why a message to a waiting request is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// It names another log (uuid, or a `luid` other than ours and 0).
    OtherLog,
    /// It names another request type (the raw `request_type`).
    OtherType(u32),
    /// An ack whose errno is no errno.
    AckErrno(u32),
    /// An `error` field that is no negative errno.
    ErrorField(i32),
    /// A payload of the wrong size for the request type.
    Size {
        /// Bytes received.
        len: usize,
        /// What the request type calls for.
        expected: ReplySize,
    },
    /// A CTR reply whose device name does not end with a NUL.
    DeviceName,
    /// An answer the request cannot have (first and second payload word).
    Value(i64, u64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OtherLog => f.write_str("it names another log"),
            Self::OtherType(t) => write!(f, "it names request type {t}"),
            Self::AckErrno(e) => write!(f, "ack with errno {e}"),
            Self::ErrorField(e) => write!(f, "error field {e}"),
            Self::Size { len, expected } => {
                write!(f, "{len} bytes of data, expected ")?;
                match expected {
                    ReplySize::Exact(n) => write!(f, "{n}"),
                    ReplySize::AtMost(n) => write!(f, "at most {n}"),
                    ReplySize::Text => f.write_str("text"),
                }
            }
            Self::DeviceName => f.write_str("device name not NUL-terminated"),
            Self::Value(a, b) => write!(f, "impossible answer ({a}, {b})"),
        }
    }
}

/// Checks `msg` against the request that waits for it: the answer it gives,
/// or why it must be dropped. (`msg` already passed [`Message::parse`]: its
/// `data_size` agrees with its length.)
pub(crate) fn check(expected: &Expected<'_>, msg: &Message<'_>) -> Result<Answer, Fault> {
    match *msg {
        Message::Ack { ack: 0, .. } => check_data(expected, &[]),
        Message::Ack { ack: EAGAIN, .. } => Ok(Answer::Resend),
        Message::Ack { ack, .. } if ack <= MAX_ERRNO => Ok(Answer::Refused(ack)),
        Message::Ack { ack, .. } => Err(Fault::AckErrno(ack)),
        Message::Request { ref header, data } => {
            if header.uuid != *expected.uuid || (header.luid != expected.luid && header.luid != 0) {
                return Err(Fault::OtherLog);
            }
            if header.kind() != Some(expected.kind) {
                return Err(Fault::OtherType(header.request_type));
            }
            match header.error {
                0 => check_data(expected, data),
                e if e == -(EAGAIN as i32) => Ok(Answer::Resend),
                e if e < 0 && e.unsigned_abs() <= MAX_ERRNO => {
                    Ok(Answer::Refused(e.unsigned_abs()))
                }
                e => Err(Fault::ErrorField(e)),
            }
        }
    }
}

/// Checks the payload of a successful reply: its size, and the values the
/// request can have.
fn check_data(expected: &Expected<'_>, data: &[u8]) -> Result<Answer, Fault> {
    let len = data.len();
    let size = expected.kind.reply_size();
    let size_ok = match size {
        ReplySize::Exact(n) => len == n,
        ReplySize::AtMost(n) => len <= n,
        ReplySize::Text => true,
    };
    if !size_ok {
        return Err(Fault::Size {
            len,
            expected: size,
        });
    }
    let first = payload_i64(data, 0).unwrap_or(0);
    let second = payload_u64(data, 1).unwrap_or(0);
    let count = expected.region_count;
    let possible = match expected.kind {
        RequestType::Ctr => {
            if data.last().is_some_and(|&b| b != 0) {
                return Err(Fault::DeviceName);
            }
            true
        }
        RequestType::IsClean | RequestType::InSync => first == 0 || first == 1,
        RequestType::GetResyncWork => first == 0 || (first == 1 && second < count),
        RequestType::GetSyncCount => (first as u64) <= count,
        _ => true,
    };
    if !possible {
        return Err(Fault::Value(first, second));
    }
    Ok(Answer::Data(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_words, RequestHeader, HEADER_SIZE};

    const UUID: [u8; UUID_LEN] = {
        let mut u = [0u8; UUID_LEN];
        u[0] = b'L';
        u[1] = b'V';
        u
    };

    fn expected(kind: RequestType) -> Expected<'static> {
        Expected {
            luid: 42,
            uuid: &UUID,
            kind,
            region_count: 32,
        }
    }

    /// A full reply to `kind` with `luid`, `error` and `data`, as `check` sees it.
    fn reply<'a>(
        buf: &'a mut [u8],
        kind: RequestType,
        luid: u64,
        error: i32,
        data: &[u8],
    ) -> Message<'a> {
        let mut h = RequestHeader::new(luid, &UUID, 7, kind);
        h.error = error;
        h.data_size = data.len() as u32;
        h.encode(buf).unwrap();
        buf[HEADER_SIZE..HEADER_SIZE + data.len()].copy_from_slice(data);
        let cn = crate::wire::CnHeader::for_log(0, 0, 0);
        Message::parse(&cn, &buf[..HEADER_SIZE + data.len()]).unwrap()
    }

    fn words(values: &[u64]) -> ([u8; 16], usize) {
        let mut b = [0u8; 16];
        let n = put_words(&mut b, values).unwrap();
        (b, n)
    }

    #[test]
    fn a_reply_with_our_luid_or_luid_0_answers() {
        let mut buf = [0u8; 256];
        let (d, n) = words(&[1]);
        for luid in [42, 0] {
            let m = reply(&mut buf, RequestType::InSync, luid, 0, &d[..n]);
            assert_eq!(
                check(&expected(RequestType::InSync), &m),
                Ok(Answer::Data(8))
            );
        }
        let m = reply(&mut buf, RequestType::InSync, 43, 0, &d[..n]);
        assert_eq!(
            check(&expected(RequestType::InSync), &m),
            Err(Fault::OtherLog)
        );
    }

    #[test]
    fn another_uuid_or_type_is_dropped_and_flags_above_the_type_are_ignored() {
        let mut buf = [0u8; 256];
        let m = reply(&mut buf, RequestType::Flush, 42, 0, &[]);
        assert_eq!(
            check(&expected(RequestType::MarkRegion), &m),
            Err(Fault::OtherType(RequestType::Flush as u32))
        );
        let mut h = RequestHeader::new(0, &UUID, 7, RequestType::Resume);
        h.request_type |= 0x1000;
        h.encode(&mut buf).unwrap();
        let cn = crate::wire::CnHeader::for_log(0, 0, 0);
        let m = Message::parse(&cn, &buf[..HEADER_SIZE]).unwrap();
        assert_eq!(
            check(&expected(RequestType::Resume), &m),
            Ok(Answer::Data(0))
        );
        let mut other = UUID;
        other[2] = b'X';
        RequestHeader::new(42, &other, 7, RequestType::Resume)
            .encode(&mut buf)
            .unwrap();
        let m = Message::parse(&cn, &buf[..HEADER_SIZE]).unwrap();
        assert_eq!(
            check(&expected(RequestType::Resume), &m),
            Err(Fault::OtherLog)
        );
    }

    #[test]
    fn acks_resend_refuse_or_are_dropped() {
        let ack = |ack| Message::Ack { seq: 7, ack };
        let e = expected(RequestType::ClearRegion);
        assert_eq!(check(&e, &ack(0)), Ok(Answer::Data(0)));
        assert_eq!(check(&e, &ack(EAGAIN)), Ok(Answer::Resend));
        assert_eq!(check(&e, &ack(5)), Ok(Answer::Refused(5)));
        assert_eq!(check(&e, &ack(4095)), Ok(Answer::Refused(4095)));
        assert_eq!(check(&e, &ack(4096)), Err(Fault::AckErrno(4096)));
        // An ack carries no data: an answer that needs some is not one.
        assert_eq!(
            check(&expected(RequestType::GetSyncCount), &ack(0)),
            Err(Fault::Size {
                len: 0,
                expected: ReplySize::Exact(8)
            })
        );
    }

    #[test]
    fn error_fields_refuse_resend_or_are_dropped() {
        let mut buf = [0u8; 256];
        let e = expected(RequestType::Flush);
        for (error, want) in [
            (-5, Ok(Answer::Refused(5))),
            (-11, Ok(Answer::Resend)),
            (-4095, Ok(Answer::Refused(4095))),
            (-4096, Err(Fault::ErrorField(-4096))),
            (5, Err(Fault::ErrorField(5))),
            (i32::MIN, Err(Fault::ErrorField(i32::MIN))),
        ] {
            let m = reply(&mut buf, RequestType::Flush, 42, error, &[]);
            assert_eq!(check(&e, &m), want, "error {error}");
        }
        // A refusal may carry data: it is not read.
        let m = reply(&mut buf, RequestType::InSync, 42, -5, &[1, 2, 3]);
        assert_eq!(
            check(&expected(RequestType::InSync), &m),
            Ok(Answer::Refused(5))
        );
    }

    #[test]
    fn sizes_must_be_those_of_the_request_type() {
        let mut buf = [0u8; 512];
        let e = expected(RequestType::GetSyncCount);
        for len in [0, 4, 9, 16, 72] {
            let m = reply(&mut buf, RequestType::GetSyncCount, 42, 0, &[0; 72][..len]);
            assert_eq!(
                check(&e, &m),
                Err(Fault::Size {
                    len,
                    expected: ReplySize::Exact(8)
                })
            );
        }
        let m = reply(&mut buf, RequestType::Flush, 42, 0, &[0; 8]);
        assert!(check(&expected(RequestType::Flush), &m).is_err());
        // Status text: any length (the caller keeps what fits).
        let m = reply(&mut buf, RequestType::StatusInfo, 42, 0, &[b'x'; 300]);
        assert_eq!(
            check(&expected(RequestType::StatusInfo), &m),
            Ok(Answer::Data(300))
        );
    }

    #[test]
    fn ctr_device_names_are_short_and_nul_terminated() {
        let mut buf = [0u8; 512];
        let e = expected(RequestType::Ctr);
        let m = reply(&mut buf, RequestType::Ctr, 42, 0, b"7:3\0");
        assert_eq!(check(&e, &m), Ok(Answer::Data(4)));
        let m = reply(&mut buf, RequestType::Ctr, 42, 0, b"");
        assert_eq!(check(&e, &m), Ok(Answer::Data(0)));
        let m = reply(&mut buf, RequestType::Ctr, 42, 0, b"7:3");
        assert_eq!(check(&e, &m), Err(Fault::DeviceName));
        let mut long = [b'a'; 129];
        long[128] = 0;
        let m = reply(&mut buf, RequestType::Ctr, 42, 0, &long);
        assert!(matches!(check(&e, &m), Err(Fault::Size { len: 129, .. })));
        let m = reply(&mut buf, RequestType::Ctr, 42, 0, &long[1..]);
        assert_eq!(check(&e, &m), Ok(Answer::Data(128)));
    }

    #[test]
    fn answers_the_request_cannot_have_are_dropped() {
        let mut buf = [0u8; 256];
        let cases: [(RequestType, &[u64], bool); 11] = [
            (RequestType::InSync, &[0], true),
            (RequestType::InSync, &[1], true),
            (RequestType::InSync, &[2], false),
            (RequestType::IsClean, &[u64::MAX], false),
            (RequestType::GetResyncWork, &[0, 5000], true),
            (RequestType::GetResyncWork, &[1, 31], true),
            (RequestType::GetResyncWork, &[1, 32], false),
            (RequestType::GetResyncWork, &[2, 0], false),
            (RequestType::GetSyncCount, &[32], true),
            (RequestType::GetSyncCount, &[33], false),
            (RequestType::IsRemoteRecovering, &[7, u64::MAX], true),
        ];
        for (kind, values, ok) in cases {
            let (d, n) = words(values);
            let m = reply(&mut buf, kind, 42, 0, &d[..n]);
            assert_eq!(
                check(&expected(kind), &m).is_ok(),
                ok,
                "{kind:?} {values:?}"
            );
        }
    }
}
