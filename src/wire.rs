// SPDX-License-Identifier: GPL-2.0

//! The userspace log wire format: `struct dm_ulog_request` (version 3) inside a
//! connector message.
//!
//! This file is shared, unchanged, by the kernel module and the userspace
//! programs in `tools/`, so both ends encode one definition. It uses `core`
//! only, never panics on any input, and has no `unsafe`. The layout is that of
//! `include/uapi/linux/dm-log-userspace.h`; fields are in host byte order, as
//! in the kernel's.

/// Request format version this implementation speaks (adds `luid`, the CTR
/// reply naming a log device, and marks carried by FLUSH).
pub const REQUEST_VERSION: u32 = 3;

/// Length of the uuid field, `DM_UUID_LEN`, including the terminating NUL.
pub const UUID_LEN: usize = 129;

/// Size of `struct dm_ulog_request` without its payload.
pub const HEADER_SIZE: usize = 160;

/// Size of `struct cn_msg` without its payload.
pub const CN_MSG_SIZE: usize = 20;

/// Connector index of device-mapper, `CN_IDX_DM`; also the netlink multicast
/// group requests are sent to.
pub const CN_IDX_DM: u32 = 7;

/// Connector value of the userspace log, `CN_VAL_DM_USERSPACE_LOG`.
pub const CN_VAL_DM_USERSPACE_LOG: u32 = 1;

/// Largest connector payload, `CONNECTOR_MAX_MSG_SIZE`.
pub const CONNECTOR_MAX_MSG_SIZE: usize = 16384;

/// Mask of the request type in `request_type`; other bits are reserved.
pub const REQUEST_MASK: u32 = 0xff;

/// Most regions carried by one MARK_REGION, CLEAR_REGION or FLUSH request.
pub const MAX_GROUP_REGIONS: usize = 32;

/// Largest payload the kernel sends: the C module's 512-byte buffer less the
/// connector and request headers. The CTR string must fit in it.
pub const MAX_REQUEST_PAYLOAD: usize = 512 - CN_MSG_SIZE - HEADER_SIZE;

/// Largest log device name a CTR reply may carry (`DM_NAME_LEN`).
pub const MAX_DEVICE_NAME: usize = 128;

// Field offsets inside `struct dm_ulog_request`.
const OFF_LUID: usize = 0;
const OFF_UUID: usize = 8;
const OFF_VERSION: usize = 140;
const OFF_ERROR: usize = 144;
const OFF_SEQ: usize = 148;
const OFF_TYPE: usize = 152;
const OFF_DATA_SIZE: usize = 156;

/// The request types of the protocol, `DM_ULOG_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    /// Create a log: payload `"<sectors> <args>"`; reply: optional device name.
    Ctr = 1,
    /// Destroy a log.
    Dtr = 2,
    /// The mirror is about to suspend.
    Presuspend = 3,
    /// The mirror has suspended.
    Postsuspend = 4,
    /// The mirror resumes.
    Resume = 5,
    /// Reply: `u64` region size in sectors.
    GetRegionSize = 6,
    /// Payload: `u64` region; reply: `i64` 1 if clean.
    IsClean = 7,
    /// Payload: `u64` region; reply: `i64` 1 if in sync.
    InSync = 8,
    /// Commit marks and clears; with `integrated_flush`, payload: `u64[]` marks.
    Flush = 9,
    /// Payload: `u64[]` regions to mark dirty.
    MarkRegion = 10,
    /// Payload: `u64[]` regions to mark clean.
    ClearRegion = 11,
    /// Reply: `{ i64 found; u64 region }`.
    GetResyncWork = 12,
    /// Payload: `{ u64 region; i64 in_sync }`.
    SetRegionSync = 13,
    /// Reply: `u64` number of regions in sync.
    GetSyncCount = 14,
    /// Reply: status string, no NUL.
    StatusInfo = 15,
    /// Reply: table string, no NUL.
    StatusTable = 16,
    /// Payload: `u64` region; reply: `{ i64 is_recovering; u64 in_sync_hint }`.
    IsRemoteRecovering = 17,
}

impl RequestType {
    /// Every request type, in numeric order.
    pub const ALL: [RequestType; 17] = [
        Self::Ctr,
        Self::Dtr,
        Self::Presuspend,
        Self::Postsuspend,
        Self::Resume,
        Self::GetRegionSize,
        Self::IsClean,
        Self::InSync,
        Self::Flush,
        Self::MarkRegion,
        Self::ClearRegion,
        Self::GetResyncWork,
        Self::SetRegionSync,
        Self::GetSyncCount,
        Self::StatusInfo,
        Self::StatusTable,
        Self::IsRemoteRecovering,
    ];

    /// Decodes the `request_type` field (reserved bits are ignored).
    pub fn from_wire(raw: u32) -> Option<Self> {
        let t = (raw & REQUEST_MASK) as usize;
        if t == 0 {
            return None;
        }
        Self::ALL.get(t - 1).copied()
    }

    /// The name used in logs and counters, `DM_ULOG_` stripped.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ctr => "CTR",
            Self::Dtr => "DTR",
            Self::Presuspend => "PRESUSPEND",
            Self::Postsuspend => "POSTSUSPEND",
            Self::Resume => "RESUME",
            Self::GetRegionSize => "GET_REGION_SIZE",
            Self::IsClean => "IS_CLEAN",
            Self::InSync => "IN_SYNC",
            Self::Flush => "FLUSH",
            Self::MarkRegion => "MARK_REGION",
            Self::ClearRegion => "CLEAR_REGION",
            Self::GetResyncWork => "GET_RESYNC_WORK",
            Self::SetRegionSync => "SET_REGION_SYNC",
            Self::GetSyncCount => "GET_SYNC_COUNT",
            Self::StatusInfo => "STATUS_INFO",
            Self::StatusTable => "STATUS_TABLE",
            Self::IsRemoteRecovering => "IS_REMOTE_RECOVERING",
        }
    }

    /// The exact reply payload size the kernel accepts for this request, or
    /// `None` when it varies (strings). Checking every reply against this is
    /// what keeps the kernel from reading fields the server never wrote.
    pub fn reply_size(self) -> ReplySize {
        match self {
            Self::GetRegionSize | Self::IsClean | Self::InSync | Self::GetSyncCount => {
                ReplySize::Exact(8)
            }
            Self::GetResyncWork | Self::IsRemoteRecovering => ReplySize::Exact(16),
            Self::Ctr => ReplySize::AtMost(MAX_DEVICE_NAME),
            Self::StatusInfo | Self::StatusTable => ReplySize::Text,
            Self::Dtr
            | Self::Presuspend
            | Self::Postsuspend
            | Self::Resume
            | Self::Flush
            | Self::MarkRegion
            | Self::ClearRegion
            | Self::SetRegionSync => ReplySize::Exact(0),
        }
    }
}

/// How big a reply payload must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySize {
    /// Exactly this many bytes.
    Exact(usize),
    /// Up to this many bytes.
    AtMost(usize),
    /// A string of any length up to the caller's buffer.
    Text,
}

impl ReplySize {
    /// Whether a reply payload of `len` bytes is acceptable when the caller
    /// has room for `capacity` bytes.
    pub fn accepts(self, len: usize, capacity: usize) -> bool {
        len <= capacity
            && match self {
                Self::Exact(n) => len == n,
                Self::AtMost(n) => len <= n,
                Self::Text => true,
            }
    }
}

/// A decoded `struct dm_ulog_request` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Local unique id of the log instance.
    pub luid: u64,
    /// The log's uuid, NUL padded.
    pub uuid: [u8; UUID_LEN],
    /// Request format version.
    pub version: u32,
    /// Negative errno from the server, 0 on success.
    pub error: i32,
    /// Sequence number; replies are matched on it.
    pub seq: u32,
    /// Raw request type (see [`RequestType::from_wire`]).
    pub request_type: u32,
    /// Bytes of payload that follow the header.
    pub data_size: u32,
}

impl RequestHeader {
    /// A request header of the current version with no error and no payload.
    pub fn new(luid: u64, uuid: &[u8; UUID_LEN], seq: u32, kind: RequestType) -> Self {
        Self {
            luid,
            uuid: *uuid,
            version: REQUEST_VERSION,
            error: 0,
            seq,
            request_type: kind as u32,
            data_size: 0,
        }
    }

    /// The request type, if it is one this protocol knows.
    pub fn kind(&self) -> Option<RequestType> {
        RequestType::from_wire(self.request_type)
    }

    /// The uuid up to its first NUL.
    pub fn uuid_bytes(&self) -> &[u8] {
        let end = self.uuid.iter().position(|&b| b == 0).unwrap_or(UUID_LEN);
        &self.uuid[..end]
    }

    /// Writes the header into the first [`HEADER_SIZE`] bytes of `out`,
    /// padding zeroed. Returns `None` if `out` is too short.
    pub fn encode(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..HEADER_SIZE)?;
        out.fill(0);
        out[OFF_LUID..OFF_LUID + 8].copy_from_slice(&self.luid.to_ne_bytes());
        out[OFF_UUID..OFF_UUID + UUID_LEN].copy_from_slice(&self.uuid);
        put_u32(out, OFF_VERSION, self.version);
        put_u32(out, OFF_ERROR, self.error as u32);
        put_u32(out, OFF_SEQ, self.seq);
        put_u32(out, OFF_TYPE, self.request_type);
        put_u32(out, OFF_DATA_SIZE, self.data_size);
        Some(())
    }

    /// Reads a header from the start of `buf`; `None` if `buf` is too short.
    /// Nothing is checked beyond the length: see [`Message::parse`].
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let buf = buf.get(..HEADER_SIZE)?;
        let mut uuid = [0u8; UUID_LEN];
        uuid.copy_from_slice(&buf[OFF_UUID..OFF_UUID + UUID_LEN]);
        Some(Self {
            luid: get_u64(buf, OFF_LUID)?,
            uuid,
            version: get_u32(buf, OFF_VERSION)?,
            error: get_u32(buf, OFF_ERROR)? as i32,
            seq: get_u32(buf, OFF_SEQ)?,
            request_type: get_u32(buf, OFF_TYPE)?,
            data_size: get_u32(buf, OFF_DATA_SIZE)?,
        })
    }
}

/// A decoded `struct cn_msg` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CnHeader {
    /// Connector index (`id.idx`).
    pub idx: u32,
    /// Connector value (`id.val`).
    pub val: u32,
    /// Connector sequence number.
    pub seq: u32,
    /// Acknowledgement; in an ack-only reply, the positive errno.
    pub ack: u32,
    /// Payload length after this header.
    pub len: u16,
    /// Flags (unused by this protocol).
    pub flags: u16,
}

impl CnHeader {
    /// A header addressed to the userspace log with a `len`-byte payload.
    pub fn for_log(seq: u32, ack: u32, len: u16) -> Self {
        Self {
            idx: CN_IDX_DM,
            val: CN_VAL_DM_USERSPACE_LOG,
            seq,
            ack,
            len,
            flags: 0,
        }
    }

    /// Writes the header into the first [`CN_MSG_SIZE`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..CN_MSG_SIZE)?;
        put_u32(out, 0, self.idx);
        put_u32(out, 4, self.val);
        put_u32(out, 8, self.seq);
        put_u32(out, 12, self.ack);
        out[16..18].copy_from_slice(&self.len.to_ne_bytes());
        out[18..20].copy_from_slice(&self.flags.to_ne_bytes());
        Some(())
    }

    /// Reads a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..CN_MSG_SIZE)?;
        Some(Self {
            idx: get_u32(b, 0)?,
            val: get_u32(b, 4)?,
            seq: get_u32(b, 8)?,
            ack: get_u32(b, 12)?,
            len: u16::from_ne_bytes([b[16], b[17]]),
            flags: u16::from_ne_bytes([b[18], b[19]]),
        })
    }
}

/// Why a connector payload is not a usable message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than a request header (and not an ack).
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// `data_size` claims more payload than the message holds.
    DataSizeMismatch {
        /// The header's `data_size`.
        data_size: u32,
        /// Payload bytes actually present after the header.
        present: usize,
    },
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated { len } => write!(
                f,
                "incomplete message (expected {HEADER_SIZE} bytes, got {len})"
            ),
            Self::DataSizeMismatch { data_size, present } => {
                write!(f, "data_size {data_size} but {present} bytes of data")
            }
        }
    }
}

/// One connector payload from the peer, checked for internal consistency.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `cn_msg.len == 0`: an acknowledgement of request `seq` with result
    /// `-ack` (`EAGAIN` asks for a resend).
    Ack {
        /// The connector sequence number, which is the request's.
        seq: u32,
        /// Positive errno.
        ack: u32,
    },
    /// A full request or reply: header and exactly `data_size` payload bytes.
    Request {
        /// The header.
        header: RequestHeader,
        /// The payload.
        data: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Parses the connector payload `body` (what follows `struct cn_msg`,
    /// already trimmed to `cn_msg.len`). Extra bytes after `data_size` are
    /// ignored, as the kernel and cmirrord do; fewer are an error.
    pub fn parse(cn: &CnHeader, body: &'a [u8]) -> Result<Self, ParseError> {
        if body.is_empty() {
            return Ok(Self::Ack {
                seq: cn.seq,
                ack: cn.ack,
            });
        }
        let header =
            RequestHeader::decode(body).ok_or(ParseError::Truncated { len: body.len() })?;
        let present = body.len() - HEADER_SIZE;
        let data = usize::try_from(header.data_size)
            .ok()
            .and_then(|n| body.get(HEADER_SIZE..HEADER_SIZE.checked_add(n)?))
            .ok_or(ParseError::DataSizeMismatch {
                data_size: header.data_size,
                present,
            })?;
        Ok(Self::Request { header, data })
    }
}

/// Reads the `i`th native-endian `u64` of a payload.
pub fn payload_u64(data: &[u8], i: usize) -> Option<u64> {
    get_u64(data, i.checked_mul(8)?)
}

/// Reads the `i`th native-endian `i64` of a payload.
pub fn payload_i64(data: &[u8], i: usize) -> Option<i64> {
    payload_u64(data, i).map(|v| v as i64)
}

/// Iterates over a payload of `u64` regions; `None` if its length is not a
/// multiple of 8.
pub fn payload_regions(data: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    if data.len() % 8 != 0 {
        return None;
    }
    Some(data.chunks_exact(8).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        u64::from_ne_bytes(b)
    }))
}

/// Writes `values` as consecutive native-endian 64-bit words; returns the
/// number of bytes written, or `None` if `out` is too short.
pub fn put_words(out: &mut [u8], values: &[u64]) -> Option<usize> {
    let len = values.len().checked_mul(8)?;
    if out.len() < len {
        return None;
    }
    let mut off = 0;
    for v in values {
        out.get_mut(off..off + 8)?.copy_from_slice(&v.to_ne_bytes());
        off += 8;
    }
    Some(len)
}

fn put_u32(out: &mut [u8], off: usize, v: u32) {
    if let Some(dst) = out.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

fn get_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn get_u64(buf: &[u8], off: usize) -> Option<u64> {
    let b = buf.get(off..off.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Some(u64::from_ne_bytes(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(s: &str) -> [u8; UUID_LEN] {
        let mut u = [0u8; UUID_LEN];
        u[..s.len()].copy_from_slice(s.as_bytes());
        u
    }

    #[test]
    fn header_round_trips_at_c_offsets() {
        let mut h = RequestHeader::new(
            0x1122_3344_5566_7788,
            &uuid("LVM-abc"),
            42,
            RequestType::Flush,
        );
        h.error = -11;
        h.data_size = 16;
        let mut buf = [0xffu8; HEADER_SIZE];
        h.encode(&mut buf).unwrap();
        assert_eq!(&buf[0..8], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&buf[8..15], b"LVM-abc");
        assert!(
            buf[15..140].iter().all(|&b| b == 0),
            "uuid and padding are zeroed"
        );
        assert_eq!(&buf[140..144], &3u32.to_ne_bytes());
        assert_eq!(&buf[144..148], &(-11i32).to_ne_bytes());
        assert_eq!(&buf[148..152], &42u32.to_ne_bytes());
        assert_eq!(&buf[152..156], &9u32.to_ne_bytes());
        assert_eq!(&buf[156..160], &16u32.to_ne_bytes());
        assert_eq!(RequestHeader::decode(&buf).unwrap(), h);
        assert_eq!(h.uuid_bytes(), b"LVM-abc");
    }

    #[test]
    fn request_types_are_numbered_as_in_the_header() {
        for (i, t) in RequestType::ALL.iter().enumerate() {
            assert_eq!(*t as u32, i as u32 + 1);
            assert_eq!(RequestType::from_wire(*t as u32), Some(*t));
            assert_eq!(RequestType::from_wire(*t as u32 | 0x100), Some(*t));
        }
        assert_eq!(RequestType::from_wire(0), None);
        assert_eq!(RequestType::from_wire(18), None);
    }

    #[test]
    fn cn_header_round_trips() {
        let h = CnHeader::for_log(7, 11, 176);
        let mut buf = [0u8; CN_MSG_SIZE];
        h.encode(&mut buf).unwrap();
        assert_eq!(CnHeader::decode(&buf), Some(h));
        assert_eq!(&buf[0..4], &7u32.to_ne_bytes());
        assert_eq!(&buf[16..18], &176u16.to_ne_bytes());
    }

    #[test]
    fn parse_checks_data_size_against_length() {
        let cn = CnHeader::for_log(0, 0, 0);
        assert_eq!(
            Message::parse(&cn, &[]),
            Ok(Message::Ack { seq: 0, ack: 0 })
        );
        assert_eq!(
            Message::parse(&cn, &[0u8; 100]),
            Err(ParseError::Truncated { len: 100 })
        );
        let mut buf = [0u8; HEADER_SIZE + 8];
        let mut h = RequestHeader::new(1, &uuid("u"), 5, RequestType::GetSyncCount);
        h.data_size = 9;
        h.encode(&mut buf).unwrap();
        assert_eq!(
            Message::parse(&cn, &buf),
            Err(ParseError::DataSizeMismatch {
                data_size: 9,
                present: 8
            })
        );
        h.data_size = u32::MAX;
        h.encode(&mut buf).unwrap();
        assert!(Message::parse(&cn, &buf).is_err());
        h.data_size = 8;
        h.encode(&mut buf).unwrap();
        buf[HEADER_SIZE..].copy_from_slice(&77u64.to_ne_bytes());
        match Message::parse(&cn, &buf).unwrap() {
            Message::Request { header, data } => {
                assert_eq!(header.seq, 5);
                assert_eq!(payload_u64(data, 0), Some(77));
                assert_eq!(payload_u64(data, 1), None);
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    #[test]
    fn reply_sizes_are_strict() {
        assert!(RequestType::GetSyncCount.reply_size().accepts(8, 8));
        assert!(!RequestType::GetSyncCount.reply_size().accepts(4, 8));
        assert!(!RequestType::GetSyncCount.reply_size().accepts(16, 16));
        assert!(!RequestType::Flush.reply_size().accepts(8, 8));
        assert!(RequestType::Ctr.reply_size().accepts(0, 128));
        assert!(!RequestType::Ctr.reply_size().accepts(129, 512));
        assert!(RequestType::StatusInfo.reply_size().accepts(300, 300));
        assert!(!RequestType::StatusInfo.reply_size().accepts(301, 300));
    }

    #[test]
    fn regions_encode_and_decode() {
        let mut buf = [0u8; 24];
        assert_eq!(put_words(&mut buf, &[1, 2, u64::MAX]), Some(24));
        let v: [u64; 3] = {
            let mut it = payload_regions(&buf).unwrap();
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(v, [1, 2, u64::MAX]);
        assert!(payload_regions(&buf[..7]).is_none());
        assert_eq!(put_words(&mut buf[..8], &[1, 2]), None);
    }
}
