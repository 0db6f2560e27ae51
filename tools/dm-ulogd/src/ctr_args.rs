// SPDX-License-Identifier: GPL-2.0

//! The constructor string of a log: `"<target sectors> <type> <args...>"`.
//!
//! The types and arguments are cmirrord's, so LVM tables work unchanged:
//!
//! ```text
//! clustered-core <region_size> [sync|nosync] [block_on_error]
//! clustered-disk <log device> <region_size> [sync|nosync] [block_on_error]
//! ```
//!
//! `core` and `disk` are accepted as spellings of the same logs. The log
//! device is `major:minor` or a path. The region size is in sectors and must
//! be a power of two.

use std::fmt;
use std::path::PathBuf;

/// Largest region count (the kernel's dirty logs count regions in 32 bits).
pub const MAX_REGIONS: u64 = u32::MAX as u64;

/// Whether the log keeps its state in memory only or on a log device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// State in memory (`clustered-core`, `core`).
    Core,
    /// State on a log device in the kernel's disk log format
    /// (`clustered-disk`, `disk`).
    Disk,
}

/// The `[sync|nosync]` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Neither: a core log resyncs everything, a disk log trusts a valid
    /// on-disk state.
    Default,
    /// `sync`: resync everything.
    Force,
    /// `nosync`: consider everything in sync.
    NoSync,
}

/// Where a disk log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `major:minor`.
    Number {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A path to a block device (or, for tests, a regular file).
    Path(PathBuf),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number { major, minor } => write!(f, "{major}:{minor}"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A parsed constructor string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The type word as given (`clustered-core`, `core`, ...), echoed in
    /// status lines.
    pub type_name: &'static str,
    /// Core or disk.
    pub kind: LogKind,
    /// The log device of a disk log.
    pub device: Option<DeviceSpec>,
    /// Region size in sectors, a power of two.
    pub region_size: u32,
    /// Length of the mirror in sectors.
    pub target_sectors: u64,
    /// `ceil(target_sectors / region_size)`.
    pub region_count: u64,
    /// The sync argument.
    pub sync: SyncMode,
    /// `block_on_error` was given (echoed in the table status only).
    pub block_on_error: bool,
}

/// Why a constructor string was refused; its text is meant for the admin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CtrError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CtrError> {
    Err(CtrError(msg.into()))
}

/// The text of a CTR payload: up to its first NUL, which must be there or
/// the payload must end without one.
pub fn ctr_text(data: &[u8]) -> Result<&str, CtrError> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    std::str::from_utf8(&data[..end]).map_err(|_| CtrError("constructor string is not text".into()))
}

fn parse_decimal(word: &str) -> Option<u64> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

fn parse_device(word: &str) -> Result<DeviceSpec, CtrError> {
    if let Some((maj, min)) = word.split_once(':') {
        if let (Some(major), Some(minor)) = (parse_decimal(maj), parse_decimal(min)) {
            if let (Ok(major), Ok(minor)) = (u32::try_from(major), u32::try_from(minor)) {
                return Ok(DeviceSpec::Number { major, minor });
            }
        }
        return err(format!(
            "log device '{word}' is neither major:minor nor a path"
        ));
    }
    if word.starts_with('/') {
        return Ok(DeviceSpec::Path(PathBuf::from(word)));
    }
    err(format!(
        "log device '{word}' is neither major:minor nor an absolute path"
    ))
}

/// Parses a constructor string (without its NUL).
pub fn parse(text: &str) -> Result<LogConfig, CtrError> {
    let mut words = text.split_ascii_whitespace();
    let Some(length) = words.next() else {
        return err("constructor string is empty");
    };
    let target_sectors = match parse_decimal(length) {
        Some(0) => return err("target length is 0 sectors"),
        Some(n) => n,
        None => {
            return err(format!(
                "target length '{length}' is not a number of sectors"
            ))
        }
    };
    let Some(type_word) = words.next() else {
        return err("no log type after the target length");
    };
    let (type_name, kind) = match type_word {
        "clustered-core" => ("clustered-core", LogKind::Core),
        "core" => ("core", LogKind::Core),
        "clustered-disk" => ("clustered-disk", LogKind::Disk),
        "disk" => ("disk", LogKind::Disk),
        other => {
            return err(format!(
                "unknown log type '{other}' (expected clustered-core, clustered-disk, core or disk)"
            ))
        }
    };
    let args: Vec<&str> = words.collect();
    let usage = match kind {
        LogKind::Core => "<region_size> [sync|nosync] [block_on_error]",
        LogKind::Disk => "<log device> <region_size> [sync|nosync] [block_on_error]",
    };
    let fixed = if kind == LogKind::Disk { 2 } else { 1 };
    if args.len() < fixed || args.len() > fixed + 2 {
        return err(format!(
            "{type_name} takes {} to {} arguments ({usage}), got {}",
            fixed,
            fixed + 2,
            args.len()
        ));
    }
    let device = match kind {
        LogKind::Disk => Some(parse_device(args[0])?),
        LogKind::Core => None,
    };
    let size_word = args[fixed - 1];
    let region_size = match parse_decimal(size_word) {
        Some(0) => return err("region size 0 must be a nonzero power of two"),
        Some(n) if !n.is_power_of_two() => {
            return err(format!("region size {n} is not a power of two"))
        }
        Some(n) => {
            u32::try_from(n).map_err(|_| CtrError(format!("region size {n} is too large")))?
        }
        None => {
            return err(format!(
                "region size '{size_word}' is not a number of sectors"
            ))
        }
    };

    let mut sync = None;
    let mut block_on_error = false;
    for &word in &args[fixed..] {
        match word {
            "sync" | "nosync" => {
                if sync.is_some() {
                    return err("give at most one of sync and nosync");
                }
                sync = Some(if word == "sync" {
                    SyncMode::Force
                } else {
                    SyncMode::NoSync
                });
            }
            "block_on_error" if !block_on_error => block_on_error = true,
            "block_on_error" => return err("block_on_error given twice"),
            other => {
                return err(format!(
                    "unknown argument '{other}' (expected sync, nosync or block_on_error)"
                ))
            }
        }
    }

    let region_count = target_sectors.div_ceil(u64::from(region_size));
    if region_count > MAX_REGIONS {
        return err(format!(
            "{region_count} regions exceed the limit of {MAX_REGIONS}: use a larger region size"
        ));
    }
    Ok(LogConfig {
        type_name,
        kind,
        device,
        region_size,
        target_sectors,
        region_count,
        sync: sync.unwrap_or(SyncMode::Default),
        block_on_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_core_and_disk_strings() {
        let c = parse("131072 clustered-core 1024").unwrap();
        assert_eq!(c.kind, LogKind::Core);
        assert_eq!(c.type_name, "clustered-core");
        assert_eq!(c.region_size, 1024);
        assert_eq!(c.region_count, 128);
        assert_eq!(c.sync, SyncMode::Default);
        assert!(!c.block_on_error);
        assert_eq!(c.device, None);

        let d = parse("1000 clustered-disk 253:4 512 nosync block_on_error").unwrap();
        assert_eq!(d.kind, LogKind::Disk);
        assert_eq!(
            d.device,
            Some(DeviceSpec::Number {
                major: 253,
                minor: 4
            })
        );
        assert_eq!(d.region_count, 2, "rounded up");
        assert_eq!(d.sync, SyncMode::NoSync);
        assert!(d.block_on_error);

        let d = parse("64 disk /dev/loop3 8 block_on_error sync").unwrap();
        assert_eq!(d.type_name, "disk");
        assert_eq!(d.device, Some(DeviceSpec::Path("/dev/loop3".into())));
        assert_eq!(d.sync, SyncMode::Force);
        assert_eq!(d.region_count, 8);

        assert_eq!(parse("10 core 1").unwrap().region_count, 10);
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        let e = |s: &str| parse(s).unwrap_err().0;
        assert_eq!(
            e("100 clustered-core 1000"),
            "region size 1000 is not a power of two"
        );
        assert_eq!(
            e("100 core 0"),
            "region size 0 must be a nonzero power of two"
        );
        assert!(e("100 core abc").contains("'abc' is not a number"));
        assert!(e("100 core 8589934592").contains("too large"));
        assert!(e("").contains("empty"));
        assert!(e("abc core 8").contains("target length 'abc'"));
        assert!(e("0 core 8").contains("0 sectors"));
        assert!(e("100").contains("no log type"));
        assert!(e("100 mirror 8").contains("unknown log type 'mirror'"));
        assert!(e("100 clustered-core").contains("takes 1 to 3 arguments"));
        assert!(e("100 clustered-core 8 sync block_on_error x").contains("got 4"));
        assert!(e("100 clustered-disk 8").contains("takes 2 to 4"));
        assert!(e("100 clustered-core 8 fast").contains("unknown argument 'fast'"));
        assert!(e("100 clustered-core 8 sync nosync").contains("at most one"));
        assert!(e("100 core 8 block_on_error block_on_error").contains("twice"));
        assert!(e("100 disk 8:x 8").contains("neither major:minor"));
        assert!(e("100 disk loop0 8").contains("absolute path"));
        assert!(e("100 disk 1:99999999999 8").contains("neither"));
        assert!(e("9000000000000 core 1").contains("exceed the limit"));
    }

    #[test]
    fn payload_text_stops_at_nul() {
        assert_eq!(ctr_text(b"10 core 8\0").unwrap(), "10 core 8");
        assert_eq!(ctr_text(b"10 core 8").unwrap(), "10 core 8");
        assert_eq!(ctr_text(b"10 core 8\0junk").unwrap(), "10 core 8");
        assert!(ctr_text(b"\xff\xfe\0").is_err());
    }
}
