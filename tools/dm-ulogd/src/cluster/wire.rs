// SPDX-License-Identifier: GPL-2.0

//! What the members of a log's group send each other, and its encoding:
//! little-endian, versioned, checked on decode (a member of another version
//! or another program on the same group name is refused, not misread).

use crate::member::MemberId;

const MAGIC: u32 = 0x4c55_4d44; // "DMUL"
const VERSION: u8 = 1;

/// One change of shared state a node's kernel asked for, in the order the
/// kernel sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// MARK_REGION (or a mark carried by an integrated FLUSH).
    Mark(u64),
    /// CLEAR_REGION.
    Clear(u64),
    /// SET_REGION_SYNC with `in_sync` 1 or 0.
    SetSync(u64, bool),
    /// The node waits to write this region: recover it first.
    Prioritize(u64),
}

/// The request a batch ends with, which its sender waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// Nothing waits: the batch only carries state.
    None,
    /// FLUSH: the sender's marks are known to every member on delivery.
    Flush,
    /// GET_RESYNC_WORK: every member assigns the same region on delivery.
    ResyncWork,
}

/// Everything a node's kernel sent between two waits, as one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The state changes, in kernel order.
    pub ops: Vec<Op>,
    /// What the sender waits for.
    pub barrier: Barrier,
}

/// The group's state for members that joined: `targets` pairs each joiner
/// with the number of group events it saw before the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Joiners and how many of their buffered events the snapshot covers.
    pub targets: Vec<(MemberId, u64)>,
    /// The encoded [`super::replica::Replica`].
    pub snapshot: Vec<u8>,
}

/// A message on a log's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A node's requests.
    Batch(Batch),
    /// State for joiners.
    Checkpoint(Checkpoint),
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Appends little-endian fields.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// Four bytes.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Eight bytes.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads what [`Writer`] wrote, refusing truncation.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("message truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Four bytes.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Eight bytes.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of at least `item_size` bytes each, checked against
    /// what is left (so a corrupt count cannot make us allocate).
    pub fn count(&mut self, item_size: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > (self.0.len() / item_size.max(1)) as u64 {
            return Err(DecodeError("count larger than the message"));
        }
        Ok(n as usize)
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1)?;
        self.take(n)
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const KIND_BATCH: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;

impl Op {
    fn encode(self, w: &mut Writer) {
        let (tag, region) = match self {
            Self::Mark(r) => (1, r),
            Self::Clear(r) => (2, r),
            Self::SetSync(r, true) => (3, r),
            Self::SetSync(r, false) => (4, r),
            Self::Prioritize(r) => (5, r),
        };
        w.u8(tag);
        w.u64(region);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8()?;
        let region = r.u64()?;
        Ok(match tag {
            1 => Self::Mark(region),
            2 => Self::Clear(region),
            3 => Self::SetSync(region, true),
            4 => Self::SetSync(region, false),
            5 => Self::Prioritize(region),
            _ => return Err(DecodeError("unknown operation")),
        })
    }
}

impl Message {
    /// The bytes to multicast.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(MAGIC);
        w.u8(VERSION);
        match self {
            Self::Batch(b) => {
                w.u8(KIND_BATCH);
                w.u8(match b.barrier {
                    Barrier::None => 0,
                    Barrier::Flush => 1,
                    Barrier::ResyncWork => 2,
                });
                w.u64(b.ops.len() as u64);
                for op in &b.ops {
                    op.encode(&mut w);
                }
            }
            Self::Checkpoint(c) => {
                w.u8(KIND_CHECKPOINT);
                w.u64(c.targets.len() as u64);
                for (m, after) in &c.targets {
                    w.u64(m.to_u64());
                    w.u64(*after);
                }
                w.bytes(&c.snapshot);
            }
        }
        w.0
    }

    /// Decodes a received message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        if r.u32()? != MAGIC {
            return Err(DecodeError("not a dm-ulogd message"));
        }
        if r.u8()? != VERSION {
            return Err(DecodeError("message of another dm-ulogd version"));
        }
        let message = match r.u8()? {
            KIND_BATCH => {
                let barrier = match r.u8()? {
                    0 => Barrier::None,
                    1 => Barrier::Flush,
                    2 => Barrier::ResyncWork,
                    _ => return Err(DecodeError("unknown barrier")),
                };
                let n = r.count(9)?;
                let ops = (0..n)
                    .map(|_| Op::decode(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::Batch(Batch { ops, barrier })
            }
            KIND_CHECKPOINT => {
                let n = r.count(16)?;
                let mut targets = Vec::with_capacity(n);
                for _ in 0..n {
                    targets.push((MemberId::from_u64(r.u64()?), r.u64()?));
                }
                let snapshot = r.bytes()?.to_vec();
                Self::Checkpoint(Checkpoint { targets, snapshot })
            }
            _ => return Err(DecodeError("unknown message kind")),
        };
        if !r.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let batch = Message::Batch(Batch {
            ops: vec![
                Op::Clear(3),
                Op::Mark(u64::from(u32::MAX)),
                Op::SetSync(9, true),
                Op::SetSync(10, false),
                Op::Prioritize(11),
            ],
            barrier: Barrier::Flush,
        });
        assert_eq!(Message::decode(&batch.encode()), Ok(batch));
        let cp = Message::Checkpoint(Checkpoint {
            targets: vec![(MemberId::new(2, 77), 5)],
            snapshot: vec![1, 2, 3],
        });
        assert_eq!(Message::decode(&cp.encode()), Ok(cp));
    }

    #[test]
    fn corrupt_messages_are_refused() {
        let good = Message::Batch(Batch {
            ops: vec![Op::Mark(1)],
            barrier: Barrier::None,
        })
        .encode();
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err(), "truncated to {n}");
        }
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(
            Message::decode(&bad),
            Err(DecodeError("not a dm-ulogd message"))
        );
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(Message::decode(&bad).is_err());
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(DecodeError("trailing bytes")));
        // A huge count must not allocate.
        let mut huge = good;
        huge[7..15].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Message::decode(&huge).is_err());
    }
}
