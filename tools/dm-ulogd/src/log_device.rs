// SPDX-License-Identifier: GPL-2.0

//! The log device of a disk log: finding it from `major:minor` or a path,
//! reading its image at resume, and committing changed blocks.
//!
//! Block devices are opened with `O_DIRECT`, so reads see what the kernel's
//! own disk log wrote and writes bypass the page cache; a commit that makes
//! a region dirty ends with `fdatasync`, which also flushes the device's
//! write cache. Regular files are accepted too (buffered, same syncing), for
//! tests and for logs kept on a file system; the kernel cannot hold those,
//! so the CTR reply names no device for them.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ctr_args::DeviceSpec;
use crate::disk_format::{self, DiskHeader, DiskImage};
use crate::log::{CommitPlan, Log};
use crate::sys;

/// Runs of changed blocks closer than this are written as one I/O.
const MERGE_GAP: usize = 16 * 1024;

/// Why a log device could not be used.
#[derive(Debug)]
pub struct DeviceError {
    /// Positive errno for the reply.
    pub errno: i32,
    /// What happened, for the admin.
    pub message: String,
}

fn dev_err(errno: i32, message: String) -> DeviceError {
    DeviceError { errno, message }
}

/// Positive errno of an I/O error (EIO when it has none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// What one commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write system calls.
    pub writes: u32,
    /// Bytes written.
    pub bytes: u64,
    /// Whether it ended with `fdatasync`.
    pub synced: bool,
}

/// An open log device.
#[derive(Debug)]
pub struct LogDevice {
    file: File,
    status_name: String,
    reply_name: Option<String>,
    block_size: usize,
    image: DiskImage,
    region_count: u64,
    /// Test hook: fail every write with EIO.
    #[cfg(test)]
    pub(crate) fail_writes: bool,
}

impl LogDevice {
    /// Opens the log device of a log of `region_count` regions and checks
    /// that the image fits. `scratch` is where a device node may be made
    /// when `major:minor` has none under `/dev/block`.
    pub fn open(spec: &DeviceSpec, region_count: u64, scratch: &Path) -> Result<Self, DeviceError> {
        let (file, meta) = match spec {
            DeviceSpec::Number { major, minor } => open_number(*major, *minor, scratch)?,
            DeviceSpec::Path(path) => open_path(path)?,
        };
        let is_block = meta.file_type().is_block_device();
        let rdev = meta.rdev();
        let (major, minor) = sys::dev_numbers(rdev);
        let (block_size, size) = if is_block {
            let bs = sys::logical_block_size(&file).map_err(|e| {
                dev_err(
                    errno_of(&e),
                    format!("cannot get the block size of log device {major}:{minor}: {e}"),
                )
            })?;
            let size = (&file).seek(SeekFrom::End(0)).map_err(|e| {
                dev_err(
                    errno_of(&e),
                    format!("cannot get the size of log device {major}:{minor}: {e}"),
                )
            })?;
            (bs as usize, size)
        } else {
            (512, meta.len())
        };
        let status_name = format!("{major}:{minor}");
        let needed = disk_format::image_bytes(region_count, block_size);
        if (needed as u64) > size {
            return Err(dev_err(
                libc::EINVAL,
                format!("log device {spec} is too small: {region_count} regions need {needed} bytes, it has {size}"),
            ));
        }
        Ok(Self {
            file,
            reply_name: is_block.then(|| status_name.clone()),
            status_name,
            block_size,
            image: DiskImage::new(needed, block_size.max(4096)),
            region_count,
            #[cfg(test)]
            fail_writes: false,
        })
    }

    /// `major:minor` for status lines (`0:0` for a regular file).
    pub fn status_name(&self) -> &str {
        &self.status_name
    }

    /// The name the CTR reply gives the kernel to hold, for block devices.
    pub fn reply_name(&self) -> Option<&str> {
        self.reply_name.as_deref()
    }

    /// Reads the whole image from the device; returns its header.
    pub fn read(&mut self) -> io::Result<DiskHeader> {
        self.file.read_exact_at(self.image.bytes_mut(), 0)?;
        Ok(self.image.header())
    }

    /// Puts `log`'s clean bitmap into the image, as if it had been read
    /// from the device (when uncommitted marks must not be lost to a
    /// re-read).
    pub fn stage(&mut self, log: &Log) {
        self.image
            .set_header(DiskHeader::current(self.region_count));
        self.image.store_all(log.clean_words());
    }

    /// The bitmap area of the image last read.
    pub fn bitmap(&self) -> &[u8] {
        self.image.bitmap()
    }

    /// Writes what `plan` says from `log`'s clean bitmap, then syncs if the
    /// plan needs it. On success the log's changes are marked committed.
    pub fn commit(&mut self, log: &mut Log, plan: CommitPlan) -> io::Result<CommitStats> {
        let mut stats = CommitStats::default();
        // Never write a partial image over a header this device object has
        // not read or written itself.
        let full = plan.full || self.image.header() != DiskHeader::current(self.region_count);
        if full {
            self.image
                .set_header(DiskHeader::current(self.region_count));
            self.image.store_all(log.clean_words());
            self.write(0, self.image.len(), &mut stats)?;
        } else {
            let mut run: Option<(usize, usize)> = None;
            for chunk in log.dirty_chunks() {
                self.image.store_chunk(log.clean_words(), chunk);
                let (start, end) = self.image.chunk_blocks(chunk, self.block_size);
                run = match run {
                    Some((s, e)) if start <= e + MERGE_GAP => Some((s, end.max(e))),
                    Some((s, e)) => {
                        self.write(s, e, &mut stats)?;
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            if let Some((s, e)) = run {
                self.write(s, e, &mut stats)?;
            }
        }
        if plan.needs_sync || full {
            self.file.sync_data()?;
            stats.synced = true;
        }
        log.commit_done();
        Ok(stats)
    }

    fn write(&self, start: usize, end: usize, stats: &mut CommitStats) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let bytes = &self.image.bytes()[start..end];
        self.file.write_all_at(bytes, start as u64)?;
        stats.writes += 1;
        stats.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn open_rw(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

fn open_path(path: &Path) -> Result<(File, std::fs::Metadata), DeviceError> {
    let fail = |e: io::Error| {
        dev_err(
            errno_of(&e),
            format!("cannot open log device {}: {e}", path.display()),
        )
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    let ft = meta.file_type();
    if !ft.is_block_device() && !ft.is_file() {
        return Err(dev_err(
            libc::ENOTBLK,
            format!("log device {} is not a block device", path.display()),
        ));
    }
    let file = open_rw(path, ft.is_block_device()).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    Ok((file, meta))
}

/// Opens `major:minor` through `/dev/block/M:m` when udev made it, else
/// through a private node made (and removed at once) in `scratch`: the
/// minimal systems the mirror may run on have no udev.
fn open_number(
    major: u32,
    minor: u32,
    scratch: &Path,
) -> Result<(File, std::fs::Metadata), DeviceError> {
    let want = libc::makedev(major, minor);
    let matches = |m: &std::fs::Metadata| m.file_type().is_block_device() && m.rdev() == want;
    let by_udev = PathBuf::from(format!("/dev/block/{major}:{minor}"));
    if std::fs::metadata(&by_udev).is_ok_and(|m| matches(&m)) {
        if let Ok(file) = open_rw(&by_udev, true) {
            if let Ok(meta) = file.metadata() {
                if matches(&meta) {
                    return Ok((file, meta));
                }
            }
        }
    }
    let node = scratch.join(format!(".dev-{major}-{minor}-{}", std::process::id()));
    let _ = std::fs::remove_file(&node);
    let made = sys::make_block_node(&node, major, minor).and_then(|()| open_rw(&node, true));
    let _ = std::fs::remove_file(&node);
    let file = made.map_err(|e| {
        dev_err(
            errno_of(&e),
            format!("cannot open log device {major}:{minor}: {e}"),
        )
    })?;
    let meta = file.metadata().map_err(|e| {
        dev_err(
            errno_of(&e),
            format!("cannot stat log device {major}:{minor}: {e}"),
        )
    })?;
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctr_args;
    use crate::log::Backing;
    use crate::test_util::TempDir;

    fn disk_log(path: &Path, extra: &str) -> (Log, LogDevice) {
        let c = ctr_args::parse(&format!("80000 disk {} 8{extra}", path.display())).unwrap();
        let dev = LogDevice::open(c.device.as_ref().unwrap(), c.region_count, path).unwrap();
        (Log::new(&c, Backing::memory(c.region_count)), dev)
    }

    #[test]
    fn too_small_and_missing_devices_are_refused() {
        let tmp = TempDir::new();
        let f = tmp.path().join("small");
        std::fs::write(&f, vec![0u8; 1024]).unwrap();
        let e = LogDevice::open(&DeviceSpec::Path(f), 10_000, tmp.path()).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.message.contains("too small"), "{}", e.message);
        let e = LogDevice::open(&DeviceSpec::Path(tmp.path().join("none")), 10, tmp.path())
            .unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        let e = LogDevice::open(&DeviceSpec::Path(tmp.path().to_path_buf()), 10, tmp.path())
            .unwrap_err();
        assert!(e.message.contains("not a block device"));
    }

    #[test]
    fn commits_write_only_changed_chunks() {
        let tmp = TempDir::new();
        let f = tmp.path().join("log");
        std::fs::write(&f, vec![0u8; 1 << 20]).unwrap();
        let (mut log, mut dev) = disk_log(&f, ""); // 10000 regions
        assert_eq!(dev.reply_name(), None, "a file is not held by the kernel");
        assert_eq!(dev.status_name(), "0:0");
        let h = dev.read().unwrap();
        assert_eq!(h.trusted_regions(), Ok(0), "blank device");
        log.resume_from_disk(0, dev.bitmap());
        let plan = log.pending_commit().unwrap();
        let s = dev.commit(&mut log, plan).unwrap();
        assert_eq!(s.writes, 1);
        assert_eq!(s.bytes, disk_format::image_bytes(10_000, 512) as u64);
        assert!(s.synced);
        assert_eq!(log.pending_commit(), None);

        log.clear(&[9000]).unwrap();
        let plan = log.pending_commit().unwrap();
        let s = dev.commit(&mut log, plan).unwrap();
        assert_eq!(
            (s.writes, s.bytes, s.synced),
            (1, 512, false),
            "clears are lazy"
        );

        log.mark(&[0]).unwrap();
        assert_eq!(log.pending_commit(), None, "region 0 was already dirty");
        log.clear(&[100]).unwrap();
        log.mark(&[9000]).unwrap();
        let plan = log.pending_commit().unwrap();
        let s = dev.commit(&mut log, plan).unwrap();
        assert_eq!(
            (s.writes, s.bytes, s.synced),
            (1, 1536, true),
            "one merged run"
        );

        let img = std::fs::read(&f).unwrap();
        let h = DiskHeader::decode(&img).unwrap();
        assert_eq!(h, DiskHeader::current(10_000));
        assert_eq!(img[1024 + 9000 / 8] & (1 << (9000 % 8)), 0);
    }
}
