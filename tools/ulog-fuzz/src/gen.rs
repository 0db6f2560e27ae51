// SPDX-License-Identifier: GPL-2.0

//! The hostile messages: what to send, to which sequence number, and whether
//! the connector core hands it to the module's callback at all.
//!
//! Everything here is pure (time comes in as milliseconds), so the rules
//! that keep a root fuzzer from legitimately failing live requests are unit
//! tested below:
//!
//! - a full reply (or a header with a bad `data_size`) to a *live* sequence
//!   number, from root, always names another log or request type: only the
//!   module's identity check stands between it and the waiting request;
//! - an ack carries no identity, so root acks a live sequence number only
//!   with `EAGAIN` ("resend"), and only for requests the servers handle
//!   idempotently (not GET_RESYNC_WORK: a resent one makes the server hand
//!   out a second region and leave the first marked as recovering; nor the
//!   lifecycle requests);
//! - odd errnos and well-formed replies naming the right log go to sequence
//!   numbers that are provably dead (seen more than [`STALE_MS`] ago: the
//!   module forgets a sequence number 15 s after sending it) or never issued.
//!
//! An unprivileged fuzzer has no such limits: every message it sends must be
//! ignored, so it also forges error replies and acks that *would* fail live
//! requests if the module's CAP_SYS_ADMIN check let them through.
//!
//! Two targeted modes break the root rules on purpose, where a test expects
//! it: replies to the live requests of one log whose sizes, error field or
//! identity lie, some carrying a plausible answer ([`for_victim`]: the
//! module must drop them without reading past the message, and its
//! requests wait for the server's answer), and EAGAIN acks to requests of
//! one type ([`eagain_ack`]: the module resends them, as after a timeout).

use std::collections::VecDeque;

use ulog_proto::socket::NLMSG_HDRLEN;
use ulog_proto::wire::{
    CnHeader, ReplySize, RequestHeader, RequestType, CN_IDX_DM, CN_MSG_SIZE,
    CN_VAL_DM_USERSPACE_LOG, CONNECTOR_MAX_MSG_SIZE, HEADER_SIZE, REQUEST_MASK, UUID_LEN,
};

use crate::rng::Rng;

/// A request seen less than this long ago may still be waiting for its reply.
pub const LIVE_MS: u64 = 2_000;

/// A request seen at least this long ago is certainly not waiting any more:
/// the module resends with a new sequence number after 15 s.
pub const STALE_MS: u64 = 30_000;

/// Largest connector payload the connector core passes on (it drops
/// messages whose `cn_msg` and payload exceed `CONNECTOR_MAX_MSG_SIZE`).
pub const MAX_CN_PAYLOAD: usize = CONNECTOR_MAX_MSG_SIZE - CN_MSG_SIZE;

const EIO: i32 = 5;
const ESRCH: i32 = 3;
const EAGAIN: i32 = 11;
const ENOSPC: i32 = 28;

/// Who sends: what the fuzzer may forge depends on it (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Root (CAP_SYS_ADMIN): the module reads these messages.
    Root,
    /// An unprivileged user: the module must ignore every message.
    Unprivileged,
}

/// A request the kernel multicast, as the fuzzer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its sequence number.
    pub seq: u32,
    /// The log instance.
    pub luid: u64,
    /// The log's uuid field.
    pub uuid: [u8; UUID_LEN],
    /// Raw request type.
    pub request_type: u32,
    /// When the fuzzer received it (ms since its start).
    pub at_ms: u64,
}

impl Seen {
    /// Its request type.
    pub fn kind(&self) -> Option<RequestType> {
        RequestType::from_wire(self.request_type)
    }

    /// Its uuid up to the first NUL.
    pub fn uuid_bytes(&self) -> &[u8] {
        let end = self.uuid.iter().position(|&b| b == 0).unwrap_or(UUID_LEN);
        &self.uuid[..end]
    }
}

/// The requests seen recently and the logs they name.
#[derive(Debug, Default)]
pub struct Tracker {
    recent: VecDeque<Seen>,
    identities: Vec<(u64, [u8; UUID_LEN])>,
    max_seq: u32,
    /// Requests seen in total.
    pub requests_seen: u64,
    last_targeted: Option<u32>,
    taken: Vec<u32>,
}

/// Requests remembered (the oldest are forgotten first).
const RECENT_CAP: usize = 16_384;

/// Log identities remembered.
const IDENTITY_CAP: usize = 256;

impl Tracker {
    /// Records a request the kernel sent, received at `at_ms`.
    pub fn record(&mut self, h: &RequestHeader, at_ms: u64) {
        self.requests_seen += 1;
        self.max_seq = self.max_seq.max(h.seq);
        if !self
            .identities
            .iter()
            .any(|(l, u)| *l == h.luid && *u == h.uuid)
        {
            if self.identities.len() == IDENTITY_CAP {
                self.identities.remove(0);
            }
            self.identities.push((h.luid, h.uuid));
        }
        if self.recent.len() == RECENT_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back(Seen {
            seq: h.seq,
            luid: h.luid,
            uuid: h.uuid,
            request_type: h.request_type,
            at_ms,
        });
    }

    /// The requests that may still be waiting, oldest first.
    fn live(&self, now_ms: u64) -> impl Iterator<Item = &Seen> {
        let first = self
            .recent
            .partition_point(|s| s.at_ms.saturating_add(LIVE_MS) <= now_ms);
        self.recent.range(first..)
    }

    /// Number of requests seen long enough ago to be dead for sure.
    fn stale_count(&self, now_ms: u64) -> usize {
        self.recent
            .partition_point(|s| s.at_ms.saturating_add(STALE_MS) <= now_ms)
    }

    /// The newest request, if live and not yet targeted by
    /// [`Tracker::take_fresh`].
    pub fn take_fresh(&mut self, now_ms: u64) -> Option<Seen> {
        let newest = self.live(now_ms).last()?.clone();
        if self.last_targeted == Some(newest.seq) {
            return None;
        }
        self.last_targeted = Some(newest.seq);
        Some(newest)
    }

    /// The newest live request of type `kind` not returned by this method
    /// before.
    pub fn take_fresh_of(&mut self, now_ms: u64, kind: RequestType) -> Option<Seen> {
        let s = self
            .live(now_ms)
            .filter(|s| s.kind() == Some(kind) && !self.taken.contains(&s.seq))
            .last()?
            .clone();
        if self.taken.len() >= 4096 {
            self.taken.clear();
        }
        self.taken.push(s.seq);
        Some(s)
    }

    /// A sequence number the kernel has not issued and will not issue
    /// during a test (its counter starts at 0 at module load).
    fn unissued_seq(&self, rng: &mut Rng) -> u32 {
        self.max_seq
            .wrapping_add(0x4000_0000)
            .wrapping_add(rng.below(0x1000_0000) as u32)
    }
}

/// The kinds of hostile message, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A datagram of random bytes (netlink and connector headers included).
    Garbage,
    /// A connector payload shorter than a request header.
    Truncated,
    /// 160 or more random bytes: a random header.
    RandomBody,
    /// `cn_msg.len` larger than the payload (the connector drops it).
    CnLenLong,
    /// `cn_msg.len` smaller than the payload (the rest is cut off).
    CnLenShort,
    /// `data_size` larger than the payload present.
    DataSizeLong,
    /// `data_size` of 2^31, 2^32-1 and other huge values.
    DataSizeHuge,
    /// `data_size` smaller than the payload present.
    DataSizeShort,
    /// A payload of 4 to 16 KiB (and a few beyond the connector's limit).
    Oversized,
    /// A well-formed reply to a live request, naming another log or type.
    LiveWrongIdentity,
    /// A well-formed reply naming the right log, to a dead request.
    StaleReply,
    /// A well-formed reply naming a known log, to a sequence never issued.
    UnissuedReply,
    /// An ack (0, EAGAIN, 4096, 0xffffffff, ...) to a dead or unissued seq.
    AckDead,
    /// An EAGAIN ack to a live, idempotent request.
    AckLiveEagain,
    /// (unprivileged only) an error reply or ack to a live request, with
    /// the right identity: would fail it if the module accepted it.
    ForgedLive,
    /// (root only) a request-shaped message multicast to the server's group
    /// as well: the server must ignore it (it does not come from the kernel).
    ServerMulticast,
    /// A reply with the right identity to a live request of the sacrificial
    /// log, whose sizes or error lie: the module must refuse it.
    VictimMalformed,
}

impl Class {
    /// Every class, for the report.
    pub const ALL: [Class; 17] = [
        Self::Garbage,
        Self::Truncated,
        Self::RandomBody,
        Self::CnLenLong,
        Self::CnLenShort,
        Self::DataSizeLong,
        Self::DataSizeHuge,
        Self::DataSizeShort,
        Self::Oversized,
        Self::LiveWrongIdentity,
        Self::StaleReply,
        Self::UnissuedReply,
        Self::AckDead,
        Self::AckLiveEagain,
        Self::ForgedLive,
        Self::ServerMulticast,
        Self::VictimMalformed,
    ];

    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Garbage => "garbage",
            Self::Truncated => "truncated",
            Self::RandomBody => "random_body",
            Self::CnLenLong => "cn_len_long",
            Self::CnLenShort => "cn_len_short",
            Self::DataSizeLong => "data_size_long",
            Self::DataSizeHuge => "data_size_huge",
            Self::DataSizeShort => "data_size_short",
            Self::Oversized => "oversized",
            Self::LiveWrongIdentity => "live_wrong_identity",
            Self::StaleReply => "stale_reply",
            Self::UnissuedReply => "unissued_reply",
            Self::AckDead => "ack_dead",
            Self::AckLiveEagain => "ack_live_eagain",
            Self::ForgedLive => "forged_live",
            Self::ServerMulticast => "server_multicast",
            Self::VictimMalformed => "victim_malformed",
        }
    }

    /// Index in [`Class::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// How a message travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// To the kernel: `nlmsghdr` (built by the socket) + `cn` + `payload`.
    Kernel {
        /// Connector header (its `len` may lie).
        cn: CnHeader,
        /// What follows it.
        payload: Vec<u8>,
    },
    /// To the kernel, these bytes as the whole datagram.
    Raw(Vec<u8>),
    /// To the kernel and to the listeners of group 7 (the servers).
    Multicast {
        /// Connector header.
        cn: CnHeader,
        /// What follows it.
        payload: Vec<u8>,
    },
}

/// One message to send.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Its kind.
    pub class: Class,
    /// Its bytes.
    pub wire: Wire,
    /// The connector core hands it to the module's callback (if sent).
    pub reaches: bool,
    /// Aimed at a request that may still be waiting.
    pub live: bool,
    /// An EAGAIN ack to a live request (root): the one message a root
    /// fuzzer sends that the module may legitimately act on.
    pub live_eagain: bool,
    /// A reply the module may legitimately act on (fail the request): see
    /// [`for_victim`].
    pub victim: bool,
}

impl Frame {
    fn kernel(class: Class, cn: CnHeader, payload: Vec<u8>) -> Self {
        let reaches =
            payload.len() <= MAX_CN_PAYLOAD && usize::from(cn.len) <= payload.len() && is_ours(&cn);
        Self {
            class,
            wire: Wire::Kernel { cn, payload },
            reaches,
            live: false,
            live_eagain: false,
            victim: false,
        }
    }

    fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }
}

fn is_ours(cn: &CnHeader) -> bool {
    cn.idx == CN_IDX_DM && cn.val == CN_VAL_DM_USERSPACE_LOG
}

/// Whether the connector core (6.12 `cn_rx_skb` and `cn_call_callback`)
/// passes the datagram `d` to the callback of the userspace log.
pub fn raw_reaches(d: &[u8]) -> bool {
    let Some(b) = d.get(0..4) else { return false };
    let nlmsg_len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if d.len() < NLMSG_HDRLEN
        || nlmsg_len < NLMSG_HDRLEN + CN_MSG_SIZE
        || d.len() < nlmsg_len
        || nlmsg_len - NLMSG_HDRLEN > CONNECTOR_MAX_MSG_SIZE
    {
        return false;
    }
    let Some(cn) = CnHeader::decode(&d[NLMSG_HDRLEN..]) else {
        return false;
    };
    nlmsg_len >= NLMSG_HDRLEN + CN_MSG_SIZE + usize::from(cn.len) && is_ours(&cn)
}

/// Request types a root fuzzer may make the module resend with an EAGAIN
/// ack: the servers answer a duplicate of these as they did the original.
pub fn eagain_is_harmless(kind: Option<RequestType>) -> bool {
    use RequestType as T;
    matches!(
        kind,
        Some(
            T::IsClean
                | T::InSync
                | T::Flush
                | T::MarkRegion
                | T::ClearRegion
                | T::SetRegionSync
                | T::GetSyncCount
                | T::StatusInfo
                | T::StatusTable
                | T::IsRemoteRecovering
        )
    )
}

/// Where a reply-shaped message points.
#[derive(Clone, Debug)]
enum Target {
    /// A request that may be waiting.
    Live(Seen),
    /// A request dead for sure.
    Dead(Seen),
    /// A sequence number never issued, with a known log's identity.
    Unissued(RequestHeader),
    /// Nothing known: a random header.
    Random,
}

fn pick_target(rng: &mut Rng, t: &Tracker, now_ms: u64) -> Target {
    let live: Vec<&Seen> = t.live(now_ms).collect();
    if !live.is_empty() && rng.chance(40) {
        return Target::Live((*rng.pick(&live)).clone());
    }
    let stale = t.stale_count(now_ms);
    if stale > 0 && rng.chance(50) {
        return Target::Dead(t.recent[rng.below(stale as u64) as usize].clone());
    }
    if !t.identities.is_empty() && rng.chance(90) {
        let (luid, uuid) = *rng.pick(&t.identities);
        let kind = *rng.pick(&RequestType::ALL);
        let mut h = RequestHeader::new(luid, &uuid, t.unissued_seq(rng), kind);
        h.request_type = kind as u32;
        return Target::Unissued(h);
    }
    Target::Random
}

fn header_of(s: &Seen) -> RequestHeader {
    RequestHeader {
        luid: s.luid,
        uuid: s.uuid,
        version: 3,
        error: 0,
        seq: s.seq,
        request_type: s.request_type,
        data_size: 0,
    }
}

/// Changes the luid, the uuid or the low byte of the request type, so that
/// the header names another log or request.
fn perturb_identity(rng: &mut Rng, h: &mut RequestHeader) {
    match rng.below(3) {
        // Never to 0: the module takes luid 0 (cmirrord's replies carry it).
        0 => {
            let other = h.luid ^ (rng.next_u64() | 1);
            h.luid = if other == 0 { h.luid ^ 2 } else { other };
        }
        1 => {
            let i = rng.below(UUID_LEN as u64) as usize;
            h.uuid[i] ^= (rng.next_u32() as u8) | 1;
        }
        _ => {
            let low = h.request_type & REQUEST_MASK;
            let other = (low + 1 + rng.below(u64::from(REQUEST_MASK)) as u32) & REQUEST_MASK;
            h.request_type = (h.request_type & !REQUEST_MASK) | other;
        }
    }
}

/// A reply header for `target`; true if it names a live request's own log
/// and type (never for root).
fn reply_header(rng: &mut Rng, mode: Mode, target: &Target) -> (RequestHeader, bool) {
    let (mut h, intact) = match target {
        Target::Live(s) => {
            let mut h = header_of(s);
            let keep = mode == Mode::Unprivileged && rng.chance(50);
            if !keep {
                perturb_identity(rng, &mut h);
            }
            (h, keep)
        }
        Target::Dead(s) => (header_of(s), false),
        Target::Unissued(h) => (h.clone(), false),
        Target::Random => {
            let mut h = RequestHeader::decode(&rng.bytes(HEADER_SIZE))
                .unwrap_or_else(|| RequestHeader::new(0, &[0; UUID_LEN], 0, RequestType::Flush));
            h.seq = rng.next_u32();
            (h, false)
        }
    };
    h.error = odd_error(rng);
    if rng.chance(10) {
        h.version = rng.next_u32();
    }
    (h, intact)
}

fn odd_error(rng: &mut Rng) -> i32 {
    match rng.below(12) {
        0 | 1 => 0,
        2..=4 => -EIO,
        5 => -EAGAIN,
        6 => -ESRCH,
        7 => -ENOSPC,
        8 => -4095,
        9 => -4096,
        10 => *rng.pick(&[i32::MIN, i32::MAX, 1, 4096]),
        _ => rng.next_u32() as i32,
    }
}

/// A reply payload of the size the request type calls for (mostly).
fn plausible_payload(rng: &mut Rng, request_type: u32) -> Vec<u8> {
    if rng.chance(15) {
        let n = rng.range(0, 600);
        return rng.bytes(n);
    }
    match RequestType::from_wire(request_type).map(RequestType::reply_size) {
        Some(ReplySize::Exact(n)) => {
            let mut v = rng.bytes(n);
            if n >= 8 && rng.chance(50) {
                // A plausible flag or count: 0 or 1.
                v[..8].copy_from_slice(&rng.below(2).to_ne_bytes());
            }
            v
        }
        Some(ReplySize::AtMost(n)) => {
            let len = rng.range(0, n - 1);
            let mut v = rng.bytes(len);
            v.push(0);
            v
        }
        Some(ReplySize::Text) => {
            let n = rng.range(0, 300);
            rng.bytes(n).iter().map(|b| b' ' + b % 95).collect()
        }
        None => {
            let n = rng.range(0, 64);
            rng.bytes(n)
        }
    }
}

/// Header + payload with `data_size` as given.
fn body(h: &RequestHeader, data_size: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = h.clone();
    h.data_size = data_size;
    let mut v = vec![0u8; HEADER_SIZE];
    h.encode(&mut v);
    v.extend_from_slice(payload);
    v
}

/// A connector header for a full message of `len` bytes. Its `seq` only
/// matters if `len` ends up 0 (an ack): never a live sequence number.
fn cn_for(rng: &mut Rng, t: &Tracker, len: usize) -> CnHeader {
    let mut cn = CnHeader::for_log(
        t.unissued_seq(rng),
        0,
        len.min(usize::from(u16::MAX)) as u16,
    );
    if rng.chance(20) {
        cn.ack = rng.next_u32();
        cn.flags = rng.next_u32() as u16;
    }
    cn
}

fn garbage(rng: &mut Rng) -> Frame {
    let bytes = if rng.chance(40) {
        let n = rng.range(0, 128);
        rng.bytes(n)
    } else {
        let payload_len = rng.range(0, 600);
        let total = NLMSG_HDRLEN + CN_MSG_SIZE + payload_len;
        let mut d = rng.bytes(total);
        let nlmsg_len = match rng.below(4) {
            0 => rng.next_u32(),
            1 => (total as u32)
                .wrapping_add(rng.next_u32() % 64)
                .wrapping_sub(32),
            _ => total as u32,
        };
        d[0..4].copy_from_slice(&nlmsg_len.to_ne_bytes());
        // An id no other connector user has, or ours.
        let (idx, val) = if rng.chance(70) {
            (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG)
        } else {
            (0x100 + rng.next_u32() % 0x1000, rng.next_u32())
        };
        d[16..20].copy_from_slice(&idx.to_ne_bytes());
        d[20..24].copy_from_slice(&val.to_ne_bytes());
        let cn_len = if rng.chance(60) {
            payload_len as u16
        } else {
            rng.next_u32() as u16
        };
        d[32..34].copy_from_slice(&cn_len.to_ne_bytes());
        d
    };
    let reaches = raw_reaches(&bytes);
    Frame {
        class: Class::Garbage,
        wire: Wire::Raw(bytes),
        reaches,
        live: false,
        live_eagain: false,
        victim: false,
    }
}

/// One hostile message of a class chosen at random.
pub fn generate(rng: &mut Rng, t: &Tracker, mode: Mode, now_ms: u64, multicast_pct: u64) -> Frame {
    if mode == Mode::Root && rng.chance(multicast_pct) {
        return server_multicast(rng, t, now_ms);
    }
    let class = *rng.pick(&[
        Class::Garbage,
        Class::Garbage,
        Class::Truncated,
        Class::RandomBody,
        Class::CnLenLong,
        Class::CnLenShort,
        Class::DataSizeLong,
        Class::DataSizeHuge,
        Class::DataSizeShort,
        Class::Oversized,
        Class::LiveWrongIdentity,
        Class::StaleReply,
        Class::UnissuedReply,
        Class::AckDead,
        Class::AckDead,
        Class::AckLiveEagain,
        Class::ForgedLive,
    ]);
    let target = match class {
        Class::LiveWrongIdentity | Class::AckLiveEagain | Class::ForgedLive => {
            match t.live(now_ms).last() {
                Some(s) => Target::Live(s.clone()),
                None => pick_target(rng, t, now_ms),
            }
        }
        Class::StaleReply => match t.stale_count(now_ms) {
            0 => pick_target(rng, t, now_ms),
            n => Target::Dead(t.recent[rng.below(n as u64) as usize].clone()),
        },
        _ => pick_target(rng, t, now_ms),
    };
    build(rng, t, mode, class, &target)
}

/// A hostile message aimed at the live request `s`.
pub fn for_live(rng: &mut Rng, t: &Tracker, mode: Mode, s: &Seen) -> Frame {
    let class = *rng.pick(&[
        Class::LiveWrongIdentity,
        Class::LiveWrongIdentity,
        Class::DataSizeLong,
        Class::DataSizeHuge,
        Class::DataSizeShort,
        Class::Oversized,
        Class::AckLiveEagain,
        Class::ForgedLive,
    ]);
    build(rng, t, mode, class, &Target::Live(s.clone()))
}

/// An EAGAIN ack to the live request `s`: the module resends it.
pub fn eagain_ack(s: &Seen) -> Frame {
    let mut f = Frame::kernel(
        Class::AckLiveEagain,
        CnHeader::for_log(s.seq, EAGAIN as u32, 0),
        Vec::new(),
    )
    .live(true);
    f.live_eagain = true;
    f
}

/// A reply to the live request `s` whose sizes, error field or identity
/// lie, some of them carrying a plausible answer ("not in sync"): a correct
/// module drops it, never reads past the message, and the request goes on
/// waiting for the server's answer.
pub fn for_victim(rng: &mut Rng, s: &Seen) -> Frame {
    let mut h = header_of(s);
    let exact = match s.kind().map(RequestType::reply_size) {
        Some(ReplySize::Exact(n)) => Some(n),
        _ => None,
    };
    let want = exact.unwrap_or(0);
    // A wrong size only exists for requests whose reply size is fixed, and
    // data cut off only for requests whose reply has some.
    let mut variant = rng.below(9);
    if variant == 4 && exact.is_none() {
        variant = 5;
    }
    if variant == 7 && want == 0 {
        variant = 8;
    }
    let mut f = match variant {
        // data_size a little beyond the payload: read past the message if
        // believed. Small enough to fit the reply buffer.
        0 | 1 => {
            let data = rng.bytes(want);
            let payload = body(&h, (want + rng.range(1, 120)) as u32, &data);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, payload.len() as u16),
                payload,
            )
        }
        // The connector length cuts the payload short of data_size.
        2 => {
            let extra = rng.range(8, 64);
            let data = rng.bytes(want + extra);
            let payload = body(&h, data.len() as u32, &data);
            let cut = HEADER_SIZE + rng.range(0, data.len() - 1);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, cut as u16),
                payload,
            )
        }
        // A huge data_size.
        3 => {
            let data = rng.bytes(want);
            let payload = body(&h, *rng.pick(&[u32::MAX, 0x8000_0000, 0xffff_ff60]), &data);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, payload.len() as u16),
                payload,
            )
        }
        // A consistent message of the wrong size for the request.
        4 => {
            let mut n = rng.range(0, 40);
            if n == want {
                n += 1;
            }
            let data = rng.bytes(n);
            let payload = body(&h, n as u32, &data);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, payload.len() as u16),
                payload,
            )
        }
        // A plausible answer (all zeros: "not in sync", "no work", ...) that
        // cn_msg.len cuts off: only the header arrives.
        7 => {
            let payload = body(&h, want as u32, &vec![0; want]);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, HEADER_SIZE as u16),
                payload,
            )
        }
        // A plausible answer of the right size naming another log or type.
        8 => {
            perturb_identity(rng, &mut h);
            let payload = body(&h, want as u32, &vec![0; want]);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, payload.len() as u16),
                payload,
            )
        }
        // An error field that is no errno.
        5 => {
            h.error = *rng.pick(&[-4096, 1, 4096, i32::MIN, i32::MAX]);
            let payload = body(&h, 0, &[]);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, 0, payload.len() as u16),
                payload,
            )
        }
        // An ack whose errno is none.
        _ => {
            let errno = *rng.pick(&[4096, u32::MAX, 0x8000_0000]);
            Frame::kernel(
                Class::VictimMalformed,
                CnHeader::for_log(s.seq, errno, 0),
                Vec::new(),
            )
        }
    }
    .live(true);
    f.victim = true;
    f
}

fn build(rng: &mut Rng, t: &Tracker, mode: Mode, class: Class, target: &Target) -> Frame {
    let live = matches!(target, Target::Live(_));
    match class {
        Class::Garbage => garbage(rng),
        Class::Truncated => {
            let (h, _) = reply_header(rng, mode, target);
            let full = body(&h, 0, &[]);
            let n = rng.range(1, HEADER_SIZE - 1);
            let payload = if rng.chance(50) {
                full[..n].to_vec()
            } else {
                rng.bytes(n)
            };
            let cn = cn_for(rng, t, payload.len());
            Frame::kernel(class, cn, payload)
        }
        Class::RandomBody => {
            let n = rng.range(HEADER_SIZE, 1024);
            let mut payload = rng.bytes(n);
            // A random sequence number is never a live one in practice, but
            // make sure: these bytes could otherwise carry any identity.
            let seq = t.unissued_seq(rng);
            payload[148..152].copy_from_slice(&seq.to_ne_bytes());
            let cn = cn_for(rng, t, payload.len());
            Frame::kernel(class, cn, payload)
        }
        Class::CnLenLong => {
            let (h, _) = reply_header(rng, mode, target);
            let data = plausible_payload(rng, h.request_type);
            let payload = body(&h, data.len() as u32, &data);
            let mut cn = cn_for(rng, t, payload.len());
            cn.len = (payload.len() + rng.range(1, 2000)).min(usize::from(u16::MAX)) as u16;
            Frame::kernel(class, cn, payload).live(live)
        }
        Class::CnLenShort => {
            let (h, _) = reply_header(rng, mode, target);
            let data = plausible_payload(rng, h.request_type);
            let payload = body(&h, data.len() as u32, &data);
            let mut cn = cn_for(rng, t, payload.len());
            cn.len = rng.range(1, payload.len() - 1) as u16;
            Frame::kernel(class, cn, payload).live(live)
        }
        Class::DataSizeLong | Class::DataSizeHuge | Class::DataSizeShort => {
            let (h, _) = reply_header(rng, mode, target);
            let data = plausible_payload(rng, h.request_type);
            let present = data.len() as u32;
            let data_size = match class {
                Class::DataSizeLong => present + 1 + rng.below(600) as u32,
                Class::DataSizeHuge => {
                    let random = rng.next_u32() | 0x1000_0000;
                    *rng.pick(&[
                        u32::MAX,
                        u32::MAX - HEADER_SIZE as u32 + 1,
                        0x8000_0000,
                        0x7fff_ffff,
                        16_384,
                        65_536,
                        random,
                    ])
                }
                _ => rng.below(u64::from(present)) as u32,
            };
            let payload = body(&h, data_size, &data);
            let cn = cn_for(rng, t, payload.len());
            Frame::kernel(class, cn, payload).live(live)
        }
        Class::Oversized => {
            let (h, _) = reply_header(rng, mode, target);
            let total = if rng.chance(10) {
                rng.range(MAX_CN_PAYLOAD + 1, MAX_CN_PAYLOAD + 64)
            } else {
                rng.range(4096, MAX_CN_PAYLOAD)
            };
            let data = rng.bytes(total - HEADER_SIZE);
            let data_size = if rng.chance(70) {
                data.len() as u32
            } else {
                rng.next_u32()
            };
            let payload = body(&h, data_size, &data);
            let cn = cn_for(rng, t, payload.len());
            Frame::kernel(class, cn, payload).live(live)
        }
        Class::LiveWrongIdentity | Class::StaleReply | Class::UnissuedReply => {
            let (h, _) = reply_header(rng, Mode::Root, target);
            let data = plausible_payload(rng, h.request_type);
            let payload = body(&h, data.len() as u32, &data);
            let cn = cn_for(rng, t, payload.len());
            Frame::kernel(class, cn, payload).live(live)
        }
        Class::AckDead => {
            let seq = match target {
                Target::Dead(s) => s.seq,
                _ => t.unissued_seq(rng),
            };
            let random = rng.next_u32();
            let errno = *rng.pick(&[0, 11, 4096, u32::MAX, 5, 3, 4095, random]);
            Frame::kernel(class, CnHeader::for_log(seq, errno, 0), Vec::new())
        }
        Class::AckLiveEagain => match target {
            Target::Live(s) if mode == Mode::Unprivileged || eagain_is_harmless(s.kind()) => {
                let mut f = Frame::kernel(
                    class,
                    CnHeader::for_log(s.seq, EAGAIN as u32, 0),
                    Vec::new(),
                )
                .live(true);
                f.live_eagain = mode == Mode::Root;
                f
            }
            _ => build(rng, t, mode, Class::AckDead, target),
        },
        Class::ForgedLive => match target {
            Target::Live(s) if mode == Mode::Unprivileged => {
                if rng.chance(50) {
                    let errno = *rng.pick(&[5, 0, 4096, u32::MAX, 28, 11]);
                    Frame::kernel(class, CnHeader::for_log(s.seq, errno, 0), Vec::new()).live(true)
                } else {
                    let mut h = header_of(s);
                    h.error = -EIO;
                    let payload = body(&h, 0, &[]);
                    let cn = CnHeader::for_log(s.seq, 0, payload.len() as u16);
                    Frame::kernel(class, cn, payload).live(true)
                }
            }
            // Root never forges a reply a live request would accept.
            _ => build(rng, t, mode, Class::LiveWrongIdentity, target),
        },
        Class::ServerMulticast => server_multicast(rng, t, 0),
        Class::VictimMalformed => match target {
            Target::Live(s) if mode == Mode::Root => for_victim(rng, s),
            _ => build(rng, t, mode, Class::LiveWrongIdentity, target),
        },
    }
}

/// A request-shaped message (as the kernel would send) multicast to the
/// servers' group: half of them a CTR for a log no mirror has
/// ("fuzz-forged-..."), which a server that believed it would create.
fn server_multicast(rng: &mut Rng, t: &Tracker, _now_ms: u64) -> Frame {
    let seq = t.unissued_seq(rng);
    let (h, data) = if rng.chance(50) || t.identities.is_empty() {
        let mut uuid = [0u8; UUID_LEN];
        let name = format!("fuzz-forged-{}", rng.below(1000));
        uuid[..name.len()].copy_from_slice(name.as_bytes());
        let h = RequestHeader::new(rng.next_u64() | 1, &uuid, seq, RequestType::Ctr);
        (h, b"2048 clustered-core 8 nosync\0".to_vec())
    } else {
        let (luid, uuid) = *rng.pick(&t.identities);
        let kind = *rng.pick(&RequestType::ALL);
        let h = RequestHeader::new(luid, &uuid, seq, kind);
        let n = 8 * rng.range(0, 4);
        (h, rng.bytes(n))
    };
    let payload = body(&h, data.len() as u32, &data);
    let cn = CnHeader::for_log(seq, 0, payload.len() as u16);
    let mut f = Frame::kernel(Class::ServerMulticast, cn, Vec::new());
    f.wire = Wire::Multicast { cn, payload };
    f.reaches = true;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulog_proto::wire::Message;

    fn uuid(s: &str) -> [u8; UUID_LEN] {
        let mut u = [0u8; UUID_LEN];
        u[..s.len()].copy_from_slice(s.as_bytes());
        u
    }

    /// A tracker that saw requests of every type at `at_ms`, for two logs.
    fn busy_tracker(at_ms: u64) -> Tracker {
        let mut t = Tracker::default();
        let mut seq = 100;
        for log in 0..2u64 {
            for kind in RequestType::ALL {
                let h =
                    RequestHeader::new(0x1000 + log, &uuid(&format!("dmlu-fuzz-{log}")), seq, kind);
                t.record(&h, at_ms);
                seq += 1;
            }
        }
        t
    }

    /// What the module would do with a frame that names `seen`'s seq and
    /// reaches it: `true` if it would complete that request (as the module's
    /// transfer layer matches: seq, then the luid (or 0), uuid and type for
    /// full messages; acks carry no identity).
    fn would_complete(f: &Frame, seen: &Seen) -> Option<(bool, u32)> {
        let (cn, payload) = match &f.wire {
            Wire::Kernel { cn, payload } | Wire::Multicast { cn, payload } => (cn, payload),
            Wire::Raw(_) => return None,
        };
        if !f.reaches {
            return None;
        }
        let body = &payload[..usize::from(cn.len)];
        if body.is_empty() {
            return Some((cn.seq == seen.seq, cn.ack));
        }
        let h = match Message::parse(cn, body) {
            Ok(Message::Request { header, .. }) => header,
            Err(_) => RequestHeader::decode(body)?,
            Ok(Message::Ack { .. }) => unreachable!(),
        };
        let same = h.seq == seen.seq
            && (h.luid == seen.luid || h.luid == 0)
            && h.uuid == seen.uuid
            && h.kind() == seen.kind();
        Some((same, u32::MAX))
    }

    #[test]
    fn root_never_completes_a_live_request_except_with_eagain() {
        let mut rng = Rng::new(42);
        let now = 100_000;
        // Every request is both live (seen just now) and, in a second
        // tracker, dead; the root rules must hold against the live ones.
        let t = busy_tracker(now - 10);
        let live: Vec<Seen> = t.recent.iter().cloned().collect();
        let mut eagain = 0;
        for i in 0..200_000 {
            let f = if i % 2 == 0 {
                generate(&mut rng, &t, Mode::Root, now, 2)
            } else {
                let s = live[rng.below(live.len() as u64) as usize].clone();
                for_live(&mut rng, &t, Mode::Root, &s)
            };
            for s in &live {
                if let Some((true, ack)) = would_complete(&f, s) {
                    assert_eq!(ack, EAGAIN as u32, "{f:?} completes {s:?}");
                    assert!(eagain_is_harmless(s.kind()), "{f:?}");
                    assert!(f.live_eagain);
                    eagain += 1;
                }
            }
        }
        assert!(eagain > 1000);
    }

    #[test]
    fn unprivileged_forges_harmful_live_replies() {
        let mut rng = Rng::new(3);
        let now = 50_000;
        let t = busy_tracker(now - 10);
        let s = t.recent.back().unwrap().clone();
        let mut harmful = 0;
        for _ in 0..10_000 {
            let f = for_live(&mut rng, &t, Mode::Unprivileged, &s);
            if let Some((true, ack)) = would_complete(&f, &s) {
                if ack != EAGAIN as u32 {
                    harmful += 1;
                }
            }
        }
        assert!(harmful > 500, "{harmful}");
    }

    /// The module's view of a reply to a live request: accepted, or why not.
    fn verdict(f: &Frame, s: &Seen) -> Result<(), &'static str> {
        let Wire::Kernel { cn, payload } = &f.wire else {
            return Err("not to the kernel");
        };
        let body = &payload[..usize::from(cn.len)];
        let (error, len) = match Message::parse(cn, body) {
            Ok(Message::Ack { ack, .. }) => {
                return if ack <= 4095 {
                    Ok(())
                } else {
                    Err("ack errno")
                }
            }
            Ok(Message::Request { header, data }) => {
                assert_eq!(header.seq, s.seq);
                let same_log = header.uuid == s.uuid && (header.luid == s.luid || header.luid == 0);
                if !same_log || header.kind() != s.kind() {
                    return Err("identity");
                }
                (header.error, data.len())
            }
            Err(_) => return Err("data_size"),
        };
        if !(-4095..=0).contains(&error) {
            return Err("error field");
        }
        let ok = s.kind().unwrap().reply_size().accepts(len, 4096);
        if error == 0 && !ok {
            return Err("size");
        }
        Ok(())
    }

    #[test]
    fn victim_replies_name_the_request_and_are_refused() {
        let mut rng = Rng::new(11);
        let t = busy_tracker(0);
        for s in &t.recent {
            for _ in 0..200 {
                let f = for_victim(&mut rng, s);
                assert!(f.victim && f.live && f.reaches);
                match verdict(&f, s) {
                    Err(_) => {}
                    Ok(()) => panic!("{f:?} would be accepted for {s:?}"),
                }
            }
        }
    }

    #[test]
    fn eagain_only_for_the_type_asked() {
        let mut t = busy_tracker(1000);
        let a = t.take_fresh_of(1500, RequestType::GetResyncWork).unwrap();
        let b = t.take_fresh_of(1500, RequestType::GetResyncWork).unwrap();
        assert_ne!(a.seq, b.seq);
        assert_eq!(t.take_fresh_of(1500, RequestType::GetResyncWork), None);
        let f = eagain_ack(&a);
        assert!(f.live_eagain && f.reaches);
    }

    #[test]
    fn dead_means_older_than_the_resend_timeout() {
        let mut t = busy_tracker(1_000);
        let h = RequestHeader::new(9, &uuid("x"), 5000, RequestType::Flush);
        t.record(&h, 40_000);
        assert_eq!(t.stale_count(30_999), 0);
        assert_eq!(t.stale_count(31_000), 34);
        assert_eq!(t.live(41_000).count(), 1);
        assert_eq!(t.take_fresh(41_000).map(|s| s.seq), Some(5000));
        assert_eq!(t.take_fresh(41_000), None);
        assert!(t.unissued_seq(&mut Rng::new(1)) > 5000 + 0x3fff_0000);
    }

    #[test]
    fn reaches_follows_the_connector_checks() {
        let mut rng = Rng::new(9);
        let t = busy_tracker(0);
        let mut counts = [0usize; 2];
        for _ in 0..20_000 {
            let f = generate(&mut rng, &t, Mode::Root, 60_000, 2);
            if let Wire::Kernel { cn, payload } = &f.wire {
                // The frame the socket builds, checked as raw bytes.
                let mut d = vec![0u8; NLMSG_HDRLEN + CN_MSG_SIZE + payload.len()];
                let n = ulog_proto::socket::encode_frame(1, cn, &[payload], &mut d).unwrap();
                assert_eq!(raw_reaches(&d[..n]), f.reaches, "{:?}", f.class);
            }
            counts[usize::from(f.reaches)] += 1;
        }
        assert!(counts[0] > 500 && counts[1] > 10_000, "{counts:?}");
        assert!(!raw_reaches(&[0u8; 10]));
    }

    #[test]
    fn every_class_is_generated() {
        let mut rng = Rng::new(5);
        let t = busy_tracker(0);
        for mode in [Mode::Root, Mode::Unprivileged] {
            let mut seen = [0usize; Class::ALL.len()];
            for i in 0..20_000 {
                let now = if i % 2 == 0 { 60_000 } else { 1_000 };
                seen[generate(&mut rng, &t, mode, now, 5).class.index()] += 1;
            }
            for c in Class::ALL {
                let expected = !matches!(
                    (mode, c),
                    (Mode::Root, Class::ForgedLive)
                        | (Mode::Unprivileged, Class::ServerMulticast)
                        | (_, Class::VictimMalformed)
                );
                assert_eq!(seen[c.index()] > 0, expected, "{mode:?} {c:?}");
            }
        }
    }
}
