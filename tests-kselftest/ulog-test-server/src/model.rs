// SPDX-License-Identifier: GPL-2.0

//! A small in-memory core log, enough for a mirror to run: sync bits, marks
//! and a recovery in progress, per log instance. Answers are computed here;
//! faults are applied by the caller.

use std::collections::{BTreeSet, HashMap};

use ulog_proto::wire::{payload_regions, payload_u64, RequestType, UUID_LEN};

/// Negative errnos used in replies.
pub const EINVAL: i32 = -22;
/// The log is unknown: the kernel replays CTR and RESUME.
pub const ESRCH: i32 = -3;

/// One log instance.
#[derive(Debug)]
struct Log {
    region_size: u64,
    in_sync: Vec<bool>,
    sync_count: u64,
    recovering: BTreeSet<u64>,
    marked: BTreeSet<u64>,
}

/// How the server answers, beyond its log's state.
#[derive(Debug, Default)]
pub struct Settings {
    /// Region size to answer instead of the CTR's, for tests of bad values.
    pub region_size_override: Option<u64>,
    /// STATUS_INFO text.
    pub status: String,
    /// Never hand out resync work: regions out of sync stay so.
    pub stall_resync: bool,
    /// Device name the CTR reply carries (NUL-terminated), as a disk log's.
    pub ctr_device: Option<String>,
    /// In-sync hint of every IS_REMOTE_RECOVERING answer ("not recovering"),
    /// instead of the first region out of sync.
    pub remote_hint: Option<u64>,
}

/// Every log the server holds, by uuid and luid.
#[derive(Debug, Default)]
pub struct Model {
    logs: HashMap<([u8; UUID_LEN], u64), Log>,
    settings: Settings,
}

/// A normal answer: `error` and reply data.
pub type Answer = (i32, Vec<u8>);

fn word(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn words(a: u64, b: u64) -> Vec<u8> {
    let mut v = word(a);
    v.extend_from_slice(&b.to_ne_bytes());
    v
}

impl Log {
    /// Parses `"<sectors> <type> [<dev>] <region size> [sync|nosync] ..."`.
    fn from_ctr(text: &str) -> Option<Self> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let sectors: u64 = tokens.first()?.parse().ok()?;
        let size_at = match *tokens.get(1)? {
            "core" | "clustered-core" => 2,
            "disk" | "clustered-disk" => 3,
            _ => return None,
        };
        let region_size: u64 = tokens.get(size_at)?.parse().ok()?;
        if region_size == 0 {
            return None;
        }
        let count = sectors.div_ceil(region_size) as usize;
        let nosync = tokens[size_at + 1..].contains(&"nosync");
        Some(Self {
            region_size,
            in_sync: vec![nosync; count],
            sync_count: if nosync { count as u64 } else { 0 },
            recovering: BTreeSet::new(),
            marked: BTreeSet::new(),
        })
    }

    fn first_out_of_sync(&self) -> u64 {
        self.in_sync
            .iter()
            .position(|s| !s)
            .unwrap_or(self.in_sync.len()) as u64
    }

    fn set_sync(&mut self, region: u64, in_sync: bool) {
        if let Some(s) = self.in_sync.get_mut(region as usize) {
            if *s != in_sync {
                *s = in_sync;
                if in_sync {
                    self.sync_count += 1;
                } else {
                    self.sync_count -= 1;
                }
            }
        }
        self.recovering.remove(&region);
    }
}

impl Model {
    /// A model holding no log yet.
    pub fn new(settings: Settings) -> Self {
        Self {
            logs: HashMap::new(),
            settings,
        }
    }

    /// Answers request `kind` with payload `data` for log `(uuid, luid)`.
    pub fn answer(
        &mut self,
        uuid: &[u8; UUID_LEN],
        luid: u64,
        kind: RequestType,
        data: &[u8],
    ) -> Answer {
        let key = (*uuid, luid);
        if kind == RequestType::Ctr {
            let text = String::from_utf8_lossy(data);
            let text = text.trim_end_matches('\0');
            return match Log::from_ctr(text) {
                Some(log) => {
                    self.logs.insert(key, log);
                    let device = self.settings.ctr_device.as_ref();
                    (
                        0,
                        device.map_or_else(Vec::new, |d| format!("{d}\0").into_bytes()),
                    )
                }
                None => (EINVAL, Vec::new()),
            };
        }
        let Settings {
            region_size_override: override_size,
            stall_resync,
            remote_hint,
            ..
        } = self.settings;
        let status = self.settings.status.clone();
        let Some(log) = self.logs.get_mut(&key) else {
            return (ESRCH, Vec::new());
        };
        let region = payload_u64(data, 0).unwrap_or(u64::MAX);
        let regions = || payload_regions(data).into_iter().flatten();
        match kind {
            RequestType::Ctr => unreachable!(),
            RequestType::Dtr => {
                self.logs.remove(&key);
                (0, Vec::new())
            }
            RequestType::Presuspend | RequestType::Postsuspend | RequestType::Resume => {
                log.recovering.clear();
                (0, Vec::new())
            }
            RequestType::GetRegionSize => (0, word(override_size.unwrap_or(log.region_size))),
            RequestType::IsClean => (0, word(u64::from(!log.marked.contains(&region)))),
            RequestType::InSync => (
                0,
                word(u64::from(
                    log.in_sync.get(region as usize).copied().unwrap_or(false),
                )),
            ),
            RequestType::Flush | RequestType::MarkRegion => {
                log.marked.extend(regions());
                (0, Vec::new())
            }
            RequestType::ClearRegion => {
                for r in regions() {
                    log.marked.remove(&r);
                }
                (0, Vec::new())
            }
            RequestType::GetResyncWork => {
                // dm-raid1 recovers one region at a time: asked again before
                // SET_REGION_SYNC, the kernel lost the answer (refused or
                // resent it), so the same region goes out again, as from
                // cmirrord.
                let found = log
                    .recovering
                    .first()
                    .copied()
                    .or_else(|| (0..log.in_sync.len() as u64).find(|r| !log.in_sync[*r as usize]))
                    .filter(|_| !stall_resync);
                match found {
                    Some(r) => {
                        log.recovering.insert(r);
                        (0, words(1, r))
                    }
                    None => (0, words(0, 0)),
                }
            }
            RequestType::SetRegionSync => {
                let in_sync = payload_u64(data, 1).unwrap_or(0) != 0;
                log.set_sync(region, in_sync);
                (0, Vec::new())
            }
            RequestType::GetSyncCount => (0, word(log.sync_count)),
            RequestType::StatusInfo => (0, status.into_bytes()),
            RequestType::StatusTable => (0, b"clustered-core".to_vec()),
            RequestType::IsRemoteRecovering => (
                0,
                words(0, remote_hint.unwrap_or_else(|| log.first_out_of_sync())),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid() -> [u8; UUID_LEN] {
        [b'u'; UUID_LEN]
    }

    #[test]
    fn serves_a_resync() {
        let mut m = Model::new(Settings::default());
        let u = uuid();
        let ctr = b"4096 clustered-core 1024 sync\0";
        assert_eq!(m.answer(&u, 1, RequestType::Ctr, ctr).0, 0);
        assert_eq!(
            m.answer(&u, 1, RequestType::GetRegionSize, &[]).1,
            1024u64.to_ne_bytes()
        );
        assert_eq!(
            m.answer(&u, 1, RequestType::GetResyncWork, &[]).1,
            words(1, 0)
        );
        assert_eq!(
            m.answer(&u, 1, RequestType::GetResyncWork, &[]).1,
            words(1, 0),
            "asked again before SET_REGION_SYNC: the same region"
        );
        m.answer(&u, 1, RequestType::SetRegionSync, &words(0, 1));
        assert_eq!(m.answer(&u, 1, RequestType::GetSyncCount, &[]).1, word(1));
        assert_eq!(
            m.answer(&u, 1, RequestType::GetResyncWork, &[]).1,
            words(1, 1)
        );
        assert_eq!(m.answer(&u, 2, RequestType::GetSyncCount, &[]).0, ESRCH);
        assert_eq!(
            m.answer(&u, 1, RequestType::IsRemoteRecovering, &word(3)).1,
            words(0, 1)
        );
    }

    #[test]
    fn marks_and_clears() {
        let mut m = Model::new(Settings::default());
        let u = uuid();
        m.answer(&u, 1, RequestType::Ctr, b"2048 core 1024 nosync");
        m.answer(&u, 1, RequestType::MarkRegion, &words(0, 1));
        assert_eq!(m.answer(&u, 1, RequestType::IsClean, &word(1)).1, word(0));
        m.answer(&u, 1, RequestType::ClearRegion, &word(1));
        assert_eq!(m.answer(&u, 1, RequestType::IsClean, &word(1)).1, word(1));
        assert_eq!(m.answer(&u, 1, RequestType::Ctr, b"bad").0, EINVAL);
    }

    #[test]
    fn settings_shape_the_answers() {
        let mut m = Model::new(Settings {
            ctr_device: Some("7:3".into()),
            remote_hint: Some(16),
            ..Settings::default()
        });
        let u = uuid();
        assert_eq!(
            m.answer(&u, 1, RequestType::Ctr, b"32768 clustered-core 1024 sync"),
            (0, b"7:3\0".to_vec())
        );
        assert_eq!(
            m.answer(&u, 1, RequestType::IsRemoteRecovering, &word(20))
                .1,
            words(0, 16)
        );
    }
}
