// SPDX-License-Identifier: GPL-2.0

//! A kernel request to a log, decoded from its payload: what both modes of
//! the server act on (CTR, DTR, GET_REGION_SIZE and the status requests are
//! the store's own).

use ulog_proto::wire::{payload_i64, payload_u64, RequestType, MAX_GROUP_REGIONS};

/// A request to a log's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// RESUME.
    Resume,
    /// PRESUSPEND.
    Presuspend,
    /// POSTSUSPEND.
    Postsuspend,
    /// IS_CLEAN.
    IsClean(u64),
    /// IN_SYNC.
    InSync(u64),
    /// FLUSH, with the marks of an integrated flush.
    Flush(&'a [u64]),
    /// MARK_REGION.
    Mark(&'a [u64]),
    /// CLEAR_REGION.
    Clear(&'a [u64]),
    /// GET_RESYNC_WORK.
    GetResyncWork,
    /// SET_REGION_SYNC.
    SetRegionSync(u64, bool),
    /// GET_SYNC_COUNT.
    GetSyncCount,
    /// IS_REMOTE_RECOVERING.
    IsRemoteRecovering(u64),
}

/// Why a payload does not fit its request type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPayload(pub String);

fn expect_size(kind: RequestType, data: &[u8], size: usize) -> Result<(), BadPayload> {
    if data.len() == size {
        Ok(())
    } else {
        Err(BadPayload(format!(
            "payload of {} bytes does not fit a {} request",
            data.len(),
            kind.name()
        )))
    }
}

fn region(kind: RequestType, data: &[u8]) -> Result<u64, BadPayload> {
    expect_size(kind, data, 8)?;
    Ok(payload_u64(data, 0).unwrap_or(u64::MAX))
}

/// A `u64[]` payload of at most [`MAX_GROUP_REGIONS`] regions, decoded
/// into `buf`.
fn regions<'a>(
    kind: RequestType,
    data: &[u8],
    buf: &'a mut [u64; MAX_GROUP_REGIONS],
) -> Result<&'a [u64], BadPayload> {
    let n = data.len() / 8;
    if data.len() % 8 != 0 || n > MAX_GROUP_REGIONS {
        return Err(BadPayload(format!(
            "payload of {} bytes is not a list of up to {MAX_GROUP_REGIONS} regions ({})",
            data.len(),
            kind.name()
        )));
    }
    for (i, slot) in buf[..n].iter_mut().enumerate() {
        *slot = payload_u64(data, i).unwrap_or(u64::MAX);
    }
    Ok(&buf[..n])
}

impl<'a> Request<'a> {
    /// Decodes the payload of a request of type `kind` (region lists into
    /// `buf`); `None` for the types that are not requests to the log's
    /// state.
    pub fn decode(
        kind: RequestType,
        data: &[u8],
        buf: &'a mut [u64; MAX_GROUP_REGIONS],
    ) -> Option<Result<Self, BadPayload>> {
        let empty = |r: Self| expect_size(kind, data, 0).map(|()| r);
        Some(match kind {
            RequestType::Resume => empty(Self::Resume),
            RequestType::Presuspend => empty(Self::Presuspend),
            RequestType::Postsuspend => empty(Self::Postsuspend),
            RequestType::IsClean => region(kind, data).map(Self::IsClean),
            RequestType::InSync => region(kind, data).map(Self::InSync),
            RequestType::Flush => regions(kind, data, buf).map(Self::Flush),
            RequestType::MarkRegion => regions(kind, data, buf).map(Self::Mark),
            RequestType::ClearRegion => regions(kind, data, buf).map(Self::Clear),
            RequestType::GetResyncWork => empty(Self::GetResyncWork),
            RequestType::SetRegionSync => expect_size(kind, data, 16).map(|()| {
                Self::SetRegionSync(
                    payload_u64(data, 0).unwrap_or(u64::MAX),
                    payload_i64(data, 1).unwrap_or(0) != 0,
                )
            }),
            RequestType::GetSyncCount => empty(Self::GetSyncCount),
            RequestType::IsRemoteRecovering => region(kind, data).map(Self::IsRemoteRecovering),
            RequestType::Ctr
            | RequestType::Dtr
            | RequestType::GetRegionSize
            | RequestType::StatusInfo
            | RequestType::StatusTable => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[u64]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn payloads_are_checked() {
        let mut buf = [0; MAX_GROUP_REGIONS];
        let mut d = |k, data: &[u8]| {
            Request::decode(k, data, &mut buf)
                .unwrap()
                .map(|r| format!("{r:?}"))
        };
        assert_eq!(d(RequestType::Resume, &[]), Ok("Resume".into()));
        assert!(d(RequestType::Resume, &[0]).is_err());
        assert_eq!(d(RequestType::InSync, &words(&[7])), Ok("InSync(7)".into()));
        assert!(d(RequestType::InSync, &[]).is_err());
        assert_eq!(
            d(RequestType::MarkRegion, &words(&[1, 2, 3])),
            Ok("Mark([1, 2, 3])".into())
        );
        assert!(d(RequestType::MarkRegion, &[0; 9]).is_err());
        assert!(d(RequestType::Flush, &words(&[0; 33])).is_err());
        assert_eq!(
            d(RequestType::SetRegionSync, &words(&[4, 1])),
            Ok("SetRegionSync(4, true)".into())
        );
        assert!(Request::decode(RequestType::Ctr, &[], &mut buf).is_none());
    }
}
