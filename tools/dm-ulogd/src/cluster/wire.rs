// SPDX-License-Identifier: GPL-2.0

//! What the members of a log's group send each other, and its encoding:
//! little-endian, versioned, checked on decode (a member of another version
//! or another program on the same group name is refused, not misread).

use crate::member::MemberId;
use crate::wire_codec::{DecodeError, Reader, Writer};

const MAGIC: u32 = 0x4c55_4d44; // "DMUL"
const VERSION: u8 = 2;

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
    /// Its sender's number for it, so the sender knows which of its
    /// requests it answers when it comes back (never by position: a batch
    /// that failed to go out is never delivered).
    pub id: u64,
    /// The state changes, in kernel order.
    pub ops: Vec<Op>,
    /// What the sender waits for.
    pub barrier: Barrier,
}

/// A round of the group: after every change of membership (or of the
/// cluster's ring), the lowest member asks every member what state it holds,
/// and every member then applies the same decision. `decider` and `number`
/// make it unique, so a late answer to an older round is never taken for
/// this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoundId {
    /// The member that runs the round.
    pub decider: MemberId,
    /// Its count of rounds.
    pub number: u64,
}

/// Which history of the log a state descends from: the round that last
/// decided it (its epoch counts the decided rounds) and how many group
/// events it has applied since the history began. Two members hold the
/// same state exactly when their lineages are equal; a member that was cut
/// off has an older epoch, or the same epoch with other events applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lineage {
    /// Rounds decided.
    pub epoch: u64,
    /// Events applied.
    pub generation: u64,
    /// The decider of the last round.
    pub origin: MemberId,
}

/// A member's answer to a round: its geometry and, if it holds the log's
/// state, that state's lineage and what its own kernel may have written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The round answered.
    pub round: RoundId,
    /// Regions of the sender's table.
    pub region_count: u64,
    /// Region size of the sender's table.
    pub region_size: u32,
    /// The sender's state, if it holds one.
    pub claim: Option<Claim>,
}

/// What a member holding state says about it in a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Its lineage.
    pub lineage: Lineage,
    /// A digest of its state: two partitions may have applied as many
    /// events since they split, but not the same ones.
    pub digest: u64,
    /// Whether the sender held it while its partition had no quorum (and
    /// no round confirmed it since): a quorate partition may have changed
    /// the state meanwhile.
    pub tainted: bool,
    /// Regions its own kernel has marked.
    pub marks: Vec<u64>,
    /// Regions any member of its lineage marked or recovered while some
    /// node was away: they may differ between the legs if another lineage
    /// wins.
    pub apart: Vec<u64>,
}

/// The state for the members a round sent to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The round that decided to send it (a joiner only loads the
    /// checkpoint of the round it waits for: an older one is stale).
    pub round: RoundId,
    /// The lineage of the snapshot.
    pub lineage: Lineage,
    /// The members that load it.
    pub targets: Vec<MemberId>,
    /// The encoded shared state.
    pub snapshot: Vec<u8>,
}

/// A message on a log's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A node's requests.
    Batch(Batch),
    /// The decider opens a round.
    Round(RoundId),
    /// A member's answer to a round.
    Offer(Offer),
    /// The decider closes a round: every member applies the decision.
    Decide(RoundId),
    /// State for the members that lack it.
    Checkpoint(Checkpoint),
    /// The member that writes the shared log device has written everything
    /// up to this point of its lineage (or failed with `errno`).
    Committed {
        /// The lineage, at the generation written.
        lineage: Lineage,
        /// 0, or the errno of the failed write.
        errno: u32,
    },
}

const KIND_BATCH: u8 = 1;
const KIND_ROUND: u8 = 2;
const KIND_OFFER: u8 = 3;
const KIND_DECIDE: u8 = 4;
const KIND_CHECKPOINT: u8 = 5;
const KIND_COMMITTED: u8 = 6;

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

fn put_round(w: &mut Writer, id: RoundId) {
    w.u64(id.decider.to_u64());
    w.u64(id.number);
}

fn get_round(r: &mut Reader<'_>) -> Result<RoundId, DecodeError> {
    Ok(RoundId {
        decider: MemberId::from_u64(r.u64()?),
        number: r.u64()?,
    })
}

fn put_lineage(w: &mut Writer, l: Lineage) {
    w.u64(l.epoch);
    w.u64(l.generation);
    w.u64(l.origin.to_u64());
}

fn get_lineage(r: &mut Reader<'_>) -> Result<Lineage, DecodeError> {
    Ok(Lineage {
        epoch: r.u64()?,
        generation: r.u64()?,
        origin: MemberId::from_u64(r.u64()?),
    })
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
                w.u64(b.id);
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
            Self::Round(id) => {
                w.u8(KIND_ROUND);
                put_round(&mut w, *id);
            }
            Self::Offer(o) => {
                w.u8(KIND_OFFER);
                put_round(&mut w, o.round);
                w.u64(o.region_count);
                w.u32(o.region_size);
                match &o.claim {
                    None => w.u8(0),
                    Some(c) => {
                        w.u8(1);
                        put_lineage(&mut w, c.lineage);
                        w.u64(c.digest);
                        w.u8(u8::from(c.tainted));
                        w.u64s(c.marks.iter().copied());
                        w.u64s(c.apart.iter().copied());
                    }
                }
            }
            Self::Decide(id) => {
                w.u8(KIND_DECIDE);
                put_round(&mut w, *id);
            }
            Self::Checkpoint(c) => {
                w.u8(KIND_CHECKPOINT);
                put_round(&mut w, c.round);
                put_lineage(&mut w, c.lineage);
                w.u64s(c.targets.iter().map(|m| m.to_u64()));
                w.bytes(&c.snapshot);
            }
            Self::Committed { lineage, errno } => {
                w.u8(KIND_COMMITTED);
                put_lineage(&mut w, *lineage);
                w.u32(*errno);
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
                let id = r.u64()?;
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
                Self::Batch(Batch { id, ops, barrier })
            }
            KIND_ROUND => Self::Round(get_round(&mut r)?),
            KIND_OFFER => {
                let round = get_round(&mut r)?;
                let region_count = r.u64()?;
                let region_size = r.u32()?;
                let claim = match r.u8()? {
                    0 => None,
                    1 => Some(Claim {
                        lineage: get_lineage(&mut r)?,
                        digest: r.u64()?,
                        tainted: r.u8()? != 0,
                        marks: r.u64s()?,
                        apart: r.u64s()?,
                    }),
                    _ => return Err(DecodeError("bad offer")),
                };
                Self::Offer(Offer {
                    round,
                    region_count,
                    region_size,
                    claim,
                })
            }
            KIND_DECIDE => Self::Decide(get_round(&mut r)?),
            KIND_CHECKPOINT => Self::Checkpoint(Checkpoint {
                round: get_round(&mut r)?,
                lineage: get_lineage(&mut r)?,
                targets: r.u64s()?.into_iter().map(MemberId::from_u64).collect(),
                snapshot: r.bytes()?.to_vec(),
            }),
            KIND_COMMITTED => Self::Committed {
                lineage: get_lineage(&mut r)?,
                errno: r.u32()?,
            },
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

    fn samples() -> Vec<Message> {
        let round = RoundId {
            decider: MemberId::new(1, 10),
            number: 7,
        };
        let lineage = Lineage {
            epoch: 3,
            generation: 99,
            origin: MemberId::new(2, 20),
        };
        vec![
            Message::Batch(Batch {
                id: 5,
                ops: vec![
                    Op::Clear(3),
                    Op::Mark(u64::from(u32::MAX)),
                    Op::SetSync(9, true),
                    Op::SetSync(10, false),
                    Op::Prioritize(11),
                ],
                barrier: Barrier::Flush,
            }),
            Message::Round(round),
            Message::Offer(Offer {
                round,
                region_count: 100,
                region_size: 8,
                claim: None,
            }),
            Message::Offer(Offer {
                round,
                region_count: 100,
                region_size: 8,
                claim: Some(Claim {
                    lineage,
                    digest: 42,
                    tainted: true,
                    marks: vec![1, 2],
                    apart: vec![3],
                }),
            }),
            Message::Decide(round),
            Message::Checkpoint(Checkpoint {
                round,
                lineage,
                targets: vec![MemberId::new(2, 77)],
                snapshot: vec![1, 2, 3],
            }),
            Message::Committed { lineage, errno: 5 },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn corrupt_messages_are_refused() {
        for m in samples() {
            let good = m.encode();
            for n in 0..good.len() {
                assert!(Message::decode(&good[..n]).is_err(), "{m:?} cut to {n}");
            }
            let mut long = good.clone();
            long.push(0);
            assert_eq!(Message::decode(&long), Err(DecodeError("trailing bytes")));
        }
        let good = samples()[0].encode();
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(
            Message::decode(&bad),
            Err(DecodeError("not a dm-ulogd message"))
        );
        let mut bad = good.clone();
        bad[4] = 1;
        assert_eq!(
            Message::decode(&bad),
            Err(DecodeError("message of another dm-ulogd version"))
        );
        // A huge count must not allocate.
        let mut huge = good;
        huge[15..23].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Message::decode(&huge).is_err());
    }
}
