// SPDX-License-Identifier: GPL-2.0

//! Tests of the request handlers, through [`LogStore::handle`] exactly as the
//! server drives it.

use super::*;
use crate::disk_format::{DiskHeader, MIRROR_MAGIC};
use crate::log_device::DevicePolicy;
use crate::test_util::TempDir;
use ulog_proto::wire::{ReplySize, REQUEST_VERSION};

const UUID: &str = "LVM-Kf3ZeBdhMwXcTtP2Lx1q8rVn0yGsYaQeW7hJ4uOiPk9cE6mN5bD2vF0gH8jK1lZ";

struct Harness {
    store: LogStore,
    seq: u32,
    version: u32,
}

/// A reply: the `error` field and the payload.
type Answer = (i32, Vec<u8>);

impl Harness {
    fn memory() -> Self {
        let mut store = LogStore::new(None);
        store.set_device_policy(DevicePolicy::AlsoFiles);
        Self {
            store,
            seq: 0,
            version: REQUEST_VERSION,
        }
    }

    /// A store over `dir`, with whatever state it holds loaded.
    fn persistent(dir: &Path) -> Self {
        let mut store = LogStore::new(Some(StateDir::open(dir).unwrap()));
        store.set_device_policy(DevicePolicy::AlsoFiles);
        store.load_state();
        Self {
            store,
            seq: 1000,
            version: REQUEST_VERSION,
        }
    }

    fn raw(&mut self, uuid: &str, luid: u64, request_type: u32, data: &[u8]) -> Answer {
        let mut u = [0u8; UUID_LEN];
        u[..uuid.len()].copy_from_slice(uuid.as_bytes());
        self.seq += 1;
        let header = RequestHeader {
            luid,
            uuid: u,
            version: self.version,
            error: 0,
            seq: self.seq,
            request_type,
            data_size: data.len() as u32,
        };
        let mut out = vec![0u8; REPLY_CAPACITY];
        let r = self.store.handle(&header, data, &mut out);
        assert!(r.error <= 0);
        if r.error == 0 {
            if let Some(kind) = header.kind() {
                let ok = match kind.reply_size() {
                    ReplySize::Text => true,
                    size => size.accepts(r.len, REPLY_CAPACITY),
                };
                assert!(ok, "{} reply of {} bytes", kind.name(), r.len);
            }
        } else {
            assert_eq!(r.len, 0, "errors carry no payload");
        }
        self.store.record(r.slot, request_type, r.error != 0, 1000);
        out.truncate(r.len);
        (r.error, out)
    }

    fn req(&mut self, luid: u64, kind: RequestType, data: &[u8]) -> Answer {
        self.raw(UUID, luid, kind as u32, data)
    }

    fn ctr(&mut self, luid: u64, args: &str) -> Answer {
        let mut data = args.as_bytes().to_vec();
        data.push(0);
        self.req(luid, RequestType::Ctr, &data)
    }

    fn ok(&mut self, luid: u64, kind: RequestType, data: &[u8]) -> Vec<u8> {
        let (e, out) = self.req(luid, kind, data);
        assert_eq!(e, 0, "{} failed", kind.name());
        out
    }

    fn word(&mut self, luid: u64, kind: RequestType, region: u64) -> i64 {
        let out = self.ok(luid, kind, &region.to_ne_bytes());
        i64::from_ne_bytes(out[..8].try_into().unwrap())
    }

    fn count(&mut self, luid: u64) -> u64 {
        let out = self.ok(luid, RequestType::GetSyncCount, &[]);
        u64::from_ne_bytes(out[..8].try_into().unwrap())
    }

    fn resync_work(&mut self, luid: u64) -> Option<u64> {
        let out = self.ok(luid, RequestType::GetResyncWork, &[]);
        let found = i64::from_ne_bytes(out[..8].try_into().unwrap());
        let region = u64::from_ne_bytes(out[8..16].try_into().unwrap());
        (found == 1).then_some(region)
    }

    fn set_sync(&mut self, luid: u64, region: u64, in_sync: bool) {
        let mut d = region.to_ne_bytes().to_vec();
        d.extend_from_slice(&i64::from(in_sync).to_ne_bytes());
        self.ok(luid, RequestType::SetRegionSync, &d);
    }

    fn text(&mut self, luid: u64, kind: RequestType) -> String {
        String::from_utf8(self.ok(luid, kind, &[])).unwrap()
    }

    fn entry(&self, luid: u64) -> &Entry {
        let key = LogKey::new(UUID.as_bytes(), luid);
        let slot = self.store.index[&key];
        self.store.slots[slot].as_ref().unwrap()
    }

    fn entry_mut(&mut self, luid: u64) -> &mut Entry {
        let key = LogKey::new(UUID.as_bytes(), luid);
        let slot = self.store.index[&key];
        self.store.slots[slot].as_mut().unwrap()
    }
}

fn regions(list: &[u64]) -> Vec<u8> {
    list.iter().flat_map(|r| r.to_ne_bytes()).collect()
}

#[test]
fn every_request_on_a_core_log() {
    let mut h = Harness::memory();
    let (e, reply) = h.ctr(1, "10000 clustered-core 1024");
    assert_eq!((e, reply.len()), (0, 0), "core CTR names no device");
    assert_eq!(
        h.ok(1, RequestType::GetRegionSize, &[]),
        1024u64.to_ne_bytes()
    );
    h.ok(1, RequestType::Resume, &[]);
    // 10 regions; core default: clean, out of sync.
    assert_eq!(h.word(1, RequestType::IsClean, 9), 1);
    assert_eq!(h.word(1, RequestType::InSync, 9), 0);
    assert_eq!(h.count(1), 0);

    h.ok(1, RequestType::MarkRegion, &regions(&[2, 3]));
    assert_eq!(h.word(1, RequestType::IsClean, 2), 0);
    h.ok(1, RequestType::Flush, &[]);
    h.ok(1, RequestType::ClearRegion, &regions(&[2]));
    assert_eq!(h.word(1, RequestType::IsClean, 2), 1);
    assert_eq!(h.word(1, RequestType::IsClean, 3), 0);

    assert_eq!(h.resync_work(1), Some(0));
    h.set_sync(1, 0, true);
    assert_eq!(h.word(1, RequestType::InSync, 0), 1);
    assert_eq!(h.count(1), 1);
    let rr = h.ok(1, RequestType::IsRemoteRecovering, &5u64.to_ne_bytes());
    assert_eq!(rr.len(), 16);
    assert_eq!(
        i64::from_ne_bytes(rr[..8].try_into().unwrap()),
        0,
        "single node"
    );
    assert_eq!(u64::from_ne_bytes(rr[8..].try_into().unwrap()), 0, "hint");

    assert_eq!(h.text(1, RequestType::StatusInfo), "1 clustered-core");
    assert_eq!(h.text(1, RequestType::StatusTable), "clustered-core 1024  ");
    h.ok(1, RequestType::Presuspend, &[]);
    h.ok(1, RequestType::Postsuspend, &[]);
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(
        h.word(1, RequestType::IsClean, 3),
        0,
        "state kept over suspend"
    );
    assert_eq!(h.resync_work(1), Some(1), "scan restarts at resume");

    h.ok(1, RequestType::Dtr, &[]);
    assert!(h.store.is_empty());
    assert_eq!(h.req(1, RequestType::GetSyncCount, &[]).0, -libc::ESRCH);
}

#[test]
fn status_strings_follow_cmirrord() {
    let mut h = Harness::memory();
    h.ctr(1, "64 clustered-core 8 nosync block_on_error");
    assert_eq!(h.text(1, RequestType::StatusInfo), "1 clustered-core");
    assert_eq!(
        h.text(1, RequestType::StatusTable),
        "clustered-core 8 nosync block_on_error "
    );
    h.ctr(2, "64 core 8 sync");
    assert_eq!(h.text(2, RequestType::StatusInfo), "1 core");
    assert_eq!(h.text(2, RequestType::StatusTable), "core 8 sync  ");
}

#[test]
fn sync_modes_of_a_core_log() {
    let mut h = Harness::memory();
    h.ctr(1, "100 clustered-core 8 nosync"); // 13 regions
    assert_eq!(h.count(1), 13);
    assert_eq!(h.word(1, RequestType::InSync, 12), 1);
    assert_eq!(h.resync_work(1), None);
    let rr = h.ok(1, RequestType::IsRemoteRecovering, &0u64.to_ne_bytes());
    assert_eq!(u64::from_ne_bytes(rr[8..].try_into().unwrap()), 13);
    h.ctr(2, "100 clustered-core 8 sync");
    assert_eq!(h.count(2), 0);
    let handed: Vec<u64> = std::iter::from_fn(|| {
        let r = h.resync_work(2)?;
        h.set_sync(2, r, true);
        Some(r)
    })
    .collect();
    assert_eq!(handed, (0..13).collect::<Vec<_>>(), "each region once");
}

#[test]
fn bad_payload_sizes_are_refused() {
    let mut h = Harness::memory();
    h.ctr(1, "800 clustered-core 8"); // 100 regions
    let einval = -libc::EINVAL;
    use RequestType::*;
    for (kind, len) in [
        (IsClean, 4),
        (IsClean, 16),
        (InSync, 0),
        (IsRemoteRecovering, 9),
        (SetRegionSync, 8),
        (SetRegionSync, 24),
        (GetSyncCount, 8),
        (GetRegionSize, 1),
        (GetResyncWork, 8),
        (StatusInfo, 8),
        (StatusTable, 8),
        (Presuspend, 8),
        (Postsuspend, 8),
        (Resume, 8),
        (MarkRegion, 12),
        (ClearRegion, 7),
        (Flush, 3),
        (MarkRegion, 33 * 8),
        (Flush, 33 * 8),
        (Dtr, 8),
    ] {
        assert_eq!(
            h.req(1, kind, &vec![0; len]).0,
            einval,
            "{} with {len} bytes",
            kind.name()
        );
    }
    assert_eq!(h.store.len(), 1, "a bad DTR destroys nothing");
    // Empty and full region lists are fine.
    h.ok(1, MarkRegion, &[]);
    h.ok(1, ClearRegion, &regions(&(0..32).collect::<Vec<_>>()));
    h.ok(1, Flush, &regions(&(0..32).collect::<Vec<_>>()));
}

#[test]
fn out_of_range_regions_are_refused_without_effect() {
    let mut h = Harness::memory();
    h.ctr(1, "800 clustered-core 8"); // regions 0..100
    let einval = -libc::EINVAL;
    use RequestType::*;
    assert_eq!(h.req(1, IsClean, &100u64.to_ne_bytes()).0, einval);
    assert_eq!(h.req(1, InSync, &u64::MAX.to_ne_bytes()).0, einval);
    assert_eq!(
        h.req(1, IsRemoteRecovering, &100u64.to_ne_bytes()).0,
        einval
    );
    assert_eq!(h.req(1, MarkRegion, &regions(&[5, 100])).0, einval);
    assert_eq!(h.word(1, IsClean, 5), 1, "nothing applied");
    assert_eq!(h.req(1, Flush, &regions(&[6, 1000])).0, einval);
    assert_eq!(h.word(1, IsClean, 6), 1);
    let mut d = regions(&[100]);
    d.extend_from_slice(&1i64.to_ne_bytes());
    assert_eq!(h.req(1, SetRegionSync, &d).0, einval);
    assert_eq!(h.count(1), 0);
}

#[test]
fn unknown_types_and_logs() {
    let mut h = Harness::memory();
    assert_eq!(h.raw(UUID, 1, 18, &[]).0, -libc::EINVAL);
    assert_eq!(h.raw(UUID, 1, 0, &[]).0, -libc::EINVAL);
    for kind in RequestType::ALL {
        if kind == RequestType::Ctr {
            continue;
        }
        let data = match kind {
            RequestType::IsClean | RequestType::InSync | RequestType::IsRemoteRecovering => {
                vec![0; 8]
            }
            RequestType::SetRegionSync => vec![0; 16],
            _ => vec![],
        };
        assert_eq!(h.req(7, kind, &data).0, -libc::ESRCH, "{}", kind.name());
    }
    h.ctr(7, "80 clustered-core 8");
    assert_eq!(
        h.raw("LVM-other", 7, RequestType::InSync as u32, &[0; 8]).0,
        -libc::ESRCH
    );
    assert_eq!(
        h.req(8, RequestType::InSync, &[0; 8]).0,
        -libc::ESRCH,
        "other luid"
    );
    assert_eq!(
        h.raw(UUID, 7, RequestType::GetSyncCount as u32 | 0x100, &[])
            .0,
        0,
        "reserved bits ignored"
    );
    let invalid = h.store.total().ops[0].clone();
    assert_eq!((invalid.count, invalid.errors), (2, 2));
    assert_eq!(h.store.total().ops[RequestType::InSync as usize].errors, 3);
}

#[test]
fn bad_constructors_are_refused() {
    let mut h = Harness::memory();
    let einval = -libc::EINVAL;
    assert_eq!(h.ctr(1, "100 clustered-core 1000").0, einval);
    assert_eq!(h.ctr(1, "100 clustered-core 0").0, einval);
    assert_eq!(h.ctr(1, "100 clustered-core 8 fast").0, einval);
    assert_eq!(h.ctr(1, "100 clustered-core").0, einval);
    assert_eq!(h.ctr(1, "100 clustered-core 8 sync nosync").0, einval);
    assert_eq!(h.ctr(1, "100 mirror 8").0, einval);
    assert_eq!(h.ctr(1, "").0, einval);
    assert_eq!(h.req(1, RequestType::Ctr, &[]).0, einval);
    assert_eq!(h.req(1, RequestType::Ctr, b"\xff 1\0").0, einval);
    assert_eq!(h.req(1, RequestType::Ctr, &vec![b'1'; 2000]).0, einval);
    assert_eq!(
        h.raw("", 1, RequestType::Ctr as u32, b"100 core 8\0").0,
        einval
    );
    assert_eq!(
        h.ctr(1, "100 clustered-disk /nonexistent/dev 8").0,
        -libc::ENOENT
    );
    assert!(h.store.is_empty());
    // Without the NUL is fine too.
    assert_eq!(h.req(1, RequestType::Ctr, b"100 core 8").0, 0);
}

#[test]
fn repeated_constructor_is_idempotent() {
    let mut h = Harness::memory();
    h.ctr(1, "800 clustered-core 8");
    h.ok(1, RequestType::MarkRegion, &regions(&[4]));
    assert_eq!(h.ctr(1, "800 clustered-core 8").0, 0);
    assert_eq!(h.word(1, RequestType::IsClean, 4), 0, "state kept");
    assert_eq!(h.ctr(1, "800 clustered-core 16").0, -libc::EEXIST);
    assert_eq!(h.ok(1, RequestType::GetRegionSize, &[]), 8u64.to_ne_bytes());
}

#[test]
fn table_reload_with_two_luids_for_one_uuid() {
    let mut h = Harness::memory();
    h.ctr(1, "800 clustered-core 8");
    h.ok(1, RequestType::Resume, &[]);
    h.ok(1, RequestType::MarkRegion, &regions(&[1]));
    assert_eq!(h.resync_work(1), Some(0));
    h.set_sync(1, 0, true);
    // The reload: new instance first, then the old one suspends and goes.
    h.ctr(2, "1600 clustered-core 8");
    assert_eq!(h.store.len(), 2);
    assert_eq!(h.ok(2, RequestType::GetRegionSize, &[]), 8u64.to_ne_bytes());
    h.ok(1, RequestType::Presuspend, &[]);
    h.ok(1, RequestType::Postsuspend, &[]);
    assert_eq!(h.word(1, RequestType::IsClean, 1), 0, "old instance intact");
    h.ok(2, RequestType::Resume, &[]);
    h.ok(1, RequestType::Dtr, &[]);
    assert_eq!(h.store.len(), 1);
    assert_eq!(
        h.word(2, RequestType::IsClean, 1),
        1,
        "new instance is its own log"
    );
    assert_eq!(h.count(2), 0);
    assert_eq!(
        h.word(2, RequestType::InSync, 199),
        0,
        "new instance is larger"
    );
    assert_eq!(h.req(1, RequestType::InSync, &[0; 8]).0, -libc::ESRCH);
}

#[test]
fn counters_follow_requests() {
    let mut h = Harness::memory();
    h.ctr(1, "800 clustered-core 8");
    h.ok(1, RequestType::MarkRegion, &regions(&[1, 2, 3]));
    h.ok(1, RequestType::Flush, &regions(&[4]));
    h.ok(1, RequestType::ClearRegion, &regions(&[1]));
    let c = &h.entry(1).counters;
    assert_eq!(c.regions_marked, 4);
    assert_eq!(c.regions_cleared, 1);
    assert_eq!(c.ops[RequestType::MarkRegion as usize].count, 1);
    assert_eq!(c.all_ops().count, 4, "CTR counted too");
    assert_eq!(h.store.total().regions_marked, 4);
    h.store.reset_counters();
    assert_eq!(h.store.total().all_ops().count, 0);
    assert_eq!(h.store.summaries()[0].counters.all_ops().count, 0);
}

// ---- disk logs ----

/// A file standing in for a log device of `len` bytes.
fn device_file(dir: &Path, contents: &[u8], len: usize) -> PathBuf {
    let path = dir.join("logdev");
    let mut data = contents.to_vec();
    data.resize(len, 0);
    std::fs::write(&path, data).unwrap();
    path
}

/// A valid dm-log image of `nr` regions, all clean (in sync).
fn clean_image(nr: u64) -> Vec<u8> {
    let mut img = vec![0u8; 1024 + crate::disk_format::bitmap_bytes(nr)];
    DiskHeader::current(nr).encode(&mut img);
    for r in 0..nr {
        img[1024 + (r / 8) as usize] |= 1 << (r % 8);
    }
    img
}

fn on_disk_clean(path: &Path, region: u64) -> bool {
    let img = std::fs::read(path).unwrap();
    img[1024 + (region / 8) as usize] & (1 << (region % 8)) != 0
}

#[test]
fn disk_log_on_a_blank_device() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let mut h = Harness::memory();
    let ctr = format!("8000 clustered-disk {} 8", dev.display()); // 1000 regions
    let (e, reply) = h.ctr(1, &ctr);
    assert_eq!(
        (e, reply.len()),
        (0, 0),
        "a regular file is not named to the kernel"
    );
    h.ok(1, RequestType::Resume, &[]);
    let img = std::fs::read(&dev).unwrap();
    assert_eq!(DiskHeader::decode(&img).unwrap(), DiskHeader::current(1000));
    assert_eq!(h.count(1), 0, "no valid header: all regions resync");
    assert_eq!(h.word(1, RequestType::IsClean, 0), 0);
    assert_eq!(h.text(1, RequestType::StatusInfo), "3 clustered-disk 0:0 A");
    assert_eq!(
        h.text(1, RequestType::StatusTable),
        format!("clustered-disk 0:0 8  ")
    );
}

#[test]
fn disk_log_reads_an_image_written_by_dm_log() {
    // Build the image exactly as dm-log's disk_flush writes it: header in
    // sector 0 (little endian), clean bits from sector 2, rounded to 64 bits.
    let tmp = TempDir::new();
    let mut img = vec![0u8; 1024 + 24];
    img[0..4].copy_from_slice(&MIRROR_MAGIC.to_le_bytes());
    img[4..8].copy_from_slice(&2u32.to_le_bytes());
    img[8..16].copy_from_slice(&150u64.to_le_bytes());
    let clean: Vec<u64> = (0..150).filter(|r| r % 3 != 0).collect();
    for r in &clean {
        img[1024 + (r / 8) as usize] |= 1 << (r % 8);
    }
    let dev = device_file(tmp.path(), &img, 4096);
    let mut h = Harness::memory();
    h.ctr(1, &format!("1200 disk {} 8", dev.display())); // 150 regions
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(h.count(1), clean.len() as u64);
    for r in 0..150 {
        let expect = i64::from(r % 3 != 0);
        assert_eq!(h.word(1, RequestType::InSync, r), expect, "region {r}");
        assert_eq!(h.word(1, RequestType::IsClean, r), expect, "region {r}");
    }
    let handed: Vec<u64> = std::iter::from_fn(|| {
        let r = h.resync_work(1)?;
        h.set_sync(1, r, false); // not written back: the image stays as it was
        Some(r)
    })
    .take(3)
    .collect();
    assert_eq!(handed, [0, 3, 6]);
    assert_eq!(h.text(1, RequestType::StatusInfo), "3 disk 0:0 A");
    // Written back unchanged (same bits, same header).
    assert_eq!(&std::fs::read(&dev).unwrap()[..img.len()], &img[..]);
}

#[test]
fn disk_log_header_policy() {
    let tmp = TempDir::new();
    let mut valid = vec![0xffu8; 1024 + 8];
    valid[..1024].fill(0);
    DiskHeader::current(40).encode(&mut valid);
    let mut bad_magic = valid.clone();
    bad_magic[0] ^= 1;
    let mut v3 = valid.clone();
    v3[4] = 3;
    let mut grown = valid.clone();
    DiskHeader::current(20).encode(&mut grown);

    let cases: [(&[u8], &str, u64); 6] = [
        (&valid, "", 40),
        (&bad_magic, "", 0),
        (&bad_magic, " nosync", 40),
        (&valid, " sync", 0),
        (&v3, "", 0),
        (&grown, "", 20),
    ];
    for (i, (img, mode, in_sync)) in cases.into_iter().enumerate() {
        let dev = device_file(tmp.path(), img, 4096);
        let mut h = Harness::memory();
        h.ctr(1, &format!("320 clustered-disk {} 8{mode}", dev.display())); // 40 regions
        h.ok(1, RequestType::Resume, &[]);
        assert_eq!(h.count(1), in_sync, "case {i}");
        let back = std::fs::read(&dev).unwrap();
        assert_eq!(
            DiskHeader::decode(&back).unwrap(),
            DiskHeader::current(40),
            "case {i}"
        );
        assert_eq!(h.text(1, RequestType::StatusInfo), "3 clustered-disk 0:0 A");
    }
}

#[test]
fn flush_makes_marks_durable_and_writes_clears_lazily() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &[], 1 << 20);
    let mut h = Harness::memory();
    h.ctr(
        1,
        &format!("80000 clustered-disk {} 8 nosync", dev.display()),
    ); // 10000 regions
    h.ok(1, RequestType::Resume, &[]);
    assert!(on_disk_clean(&dev, 5000));
    let writes = |h: &Harness| h.entry(1).counters.disk_writes;
    let syncs = |h: &Harness| h.entry(1).counters.disk_syncs;
    let (w0, s0) = (writes(&h), syncs(&h));

    h.ok(1, RequestType::MarkRegion, &regions(&[5000, 5001]));
    assert!(
        on_disk_clean(&dev, 5000),
        "a mark is written at FLUSH, not before"
    );
    h.ok(1, RequestType::Flush, &[]);
    assert!(!on_disk_clean(&dev, 5000) && !on_disk_clean(&dev, 5001));
    assert_eq!((writes(&h), syncs(&h)), (w0 + 1, s0 + 1));

    h.ok(1, RequestType::Flush, &[]);
    assert_eq!(
        (writes(&h), syncs(&h)),
        (w0 + 1, s0 + 1),
        "nothing new: no I/O"
    );

    h.ok(1, RequestType::ClearRegion, &regions(&[5000]));
    h.ok(1, RequestType::Flush, &[]);
    assert!(on_disk_clean(&dev, 5000));
    assert_eq!(
        (writes(&h), syncs(&h)),
        (w0 + 2, s0 + 1),
        "clears: written, not synced"
    );

    // integrated_flush: the marks ride in the FLUSH.
    h.ok(1, RequestType::Flush, &regions(&[7, 9999]));
    assert!(!on_disk_clean(&dev, 7) && !on_disk_clean(&dev, 9999));
    assert_eq!(syncs(&h), s0 + 2);
    assert_eq!(h.word(1, RequestType::IsClean, 9999), 0);

    // POSTSUSPEND flushes too.
    h.ok(1, RequestType::ClearRegion, &regions(&[7]));
    h.ok(1, RequestType::Postsuspend, &[]);
    assert!(on_disk_clean(&dev, 7));
}

#[test]
fn failed_device_writes_fail_the_flush_and_show_d() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let mut h = Harness::memory();
    h.ctr(1, &format!("800 clustered-disk {} 8 nosync", dev.display()));
    h.ok(1, RequestType::Resume, &[]);
    h.entry_mut(1)
        .local_mut()
        .device
        .as_mut()
        .unwrap()
        .fail_writes = true;
    h.ok(1, RequestType::MarkRegion, &regions(&[3]));
    assert_eq!(h.req(1, RequestType::Flush, &[]).0, -libc::EIO);
    assert_eq!(h.text(1, RequestType::StatusInfo), "3 clustered-disk 0:0 D");
    assert_eq!(
        h.req(1, RequestType::Flush, &[]).0,
        -libc::EIO,
        "still pending"
    );
    assert_eq!(h.entry(1).counters.disk_errors, 2);
    h.entry_mut(1)
        .local_mut()
        .device
        .as_mut()
        .unwrap()
        .fail_writes = false;
    h.ok(1, RequestType::Flush, &[]);
    assert!(
        !on_disk_clean(&dev, 3),
        "the mark got out once the device came back"
    );
    assert_eq!(
        h.text(1, RequestType::StatusInfo),
        "3 clustered-disk 0:0 D",
        "D is sticky"
    );
}

#[test]
fn resume_after_a_failed_postsuspend_keeps_unwritten_marks() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &clean_image(100), 1 << 16);
    let mut h = Harness::memory();
    h.ctr(1, &format!("800 clustered-disk {} 8", dev.display()));
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(h.count(1), 100);
    h.ok(1, RequestType::MarkRegion, &regions(&[3]));
    h.entry_mut(1)
        .local_mut()
        .device
        .as_mut()
        .unwrap()
        .fail_writes = true;
    assert_eq!(h.req(1, RequestType::Postsuspend, &[]).0, -libc::EIO);
    h.entry_mut(1)
        .local_mut()
        .device
        .as_mut()
        .unwrap()
        .fail_writes = false;
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(
        h.word(1, RequestType::IsClean, 3),
        0,
        "mark not lost to a re-read"
    );
    assert_eq!(h.word(1, RequestType::InSync, 3), 0, "and resynced");
    assert!(!on_disk_clean(&dev, 3));
}

#[test]
fn suspend_and_resume_reread_the_device() {
    // As in dm-log: regions dirty at resume come back out of sync; with
    // nosync every resume trusts nothing and calls everything in sync.
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &clean_image(100), 1 << 16);
    let mut h = Harness::memory();
    h.ctr(1, &format!("800 clustered-disk {} 8", dev.display()));
    h.ok(1, RequestType::Resume, &[]);
    h.ok(1, RequestType::Flush, &regions(&[10]));
    h.ok(1, RequestType::Postsuspend, &[]);
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(h.count(1), 99);
    assert_eq!(h.word(1, RequestType::InSync, 10), 0);
    assert_eq!(h.resync_work(1), Some(10));

    h.ctr(2, &format!("800 clustered-disk {} 8 nosync", dev.display()));
    h.ok(2, RequestType::Resume, &[]);
    assert_eq!(h.count(2), 100);
}

// ---- restarts ----

#[test]
fn core_log_survives_a_restart() {
    let tmp = TempDir::new();
    let mut h = Harness::persistent(tmp.path());
    h.ctr(5, "8000 clustered-core 8"); // 1000 regions
    h.ok(5, RequestType::Resume, &[]);
    h.ok(5, RequestType::MarkRegion, &regions(&[17, 900]));
    assert_eq!(h.resync_work(5), Some(0));
    h.set_sync(5, 0, true);
    assert_eq!(h.resync_work(5), Some(1)); // reply "lost" in the crash
    drop(h); // the server dies (the mapping is the state: no flush needed)

    let mut h = Harness::persistent(tmp.path());
    assert_eq!(h.store.len(), 1);
    assert_eq!(
        h.entry(5).origin,
        Origin::Reloaded {
            ctr_replayed: false
        }
    );
    // A request resent after the 15 s timeout reaches the new server first.
    assert_eq!(h.word(5, RequestType::IsClean, 17), 0);
    assert_eq!(h.word(5, RequestType::IsClean, 900), 0);
    assert_eq!(h.word(5, RequestType::IsClean, 18), 1);
    assert_eq!(h.count(5), 1);
    assert_eq!(h.entry(5).origin, Origin::Live);
    assert_eq!(
        h.resync_work(5),
        Some(1),
        "recovering bits do not strand region 1"
    );
    h.ok(5, RequestType::Dtr, &[]);
    let left = std::fs::read_dir(tmp.path().join("logs")).unwrap().count();
    assert_eq!(left, 0, "DTR removes the state file");
}

#[test]
fn replayed_ctr_and_resume_keep_the_state() {
    let tmp = TempDir::new();
    let mut h = Harness::persistent(tmp.path());
    h.ctr(5, "8000 clustered-core 8");
    h.ok(5, RequestType::Resume, &[]);
    h.ok(5, RequestType::MarkRegion, &regions(&[3]));
    h.set_sync(5, 3, true);
    drop(h);

    // The kernel found no listener: it replays CTR, RESUME, then its request.
    let mut h = Harness::persistent(tmp.path());
    assert_eq!(h.ctr(5, "8000 clustered-core 8").0, 0);
    assert_eq!(h.entry(5).origin, Origin::Reloaded { ctr_replayed: true });
    h.ok(5, RequestType::Resume, &[]);
    assert_eq!(h.word(5, RequestType::IsClean, 3), 0);
    assert_eq!(h.count(5), 1);
    assert_eq!(h.entry(5).origin, Origin::Live);
}

#[test]
fn a_new_instance_reusing_a_stale_luid_starts_fresh() {
    let tmp = TempDir::new();
    let mut h = Harness::persistent(tmp.path());
    h.ctr(5, "8000 clustered-core 8");
    h.ok(5, RequestType::Resume, &[]);
    h.set_sync(5, 3, true);
    drop(h); // ... and its DTR was sent while no server ran.

    let mut h = Harness::persistent(tmp.path());
    h.ctr(5, "8000 clustered-core 8");
    h.ok(5, RequestType::GetRegionSize, &[]); // only a constructing kernel asks
    assert_eq!(h.count(5), 0, "fresh state");
    assert_eq!(h.entry(5).local().log.lifecycle(), Lifecycle::Constructed);

    // A different constructor for a stale key replaces it outright.
    h.ok(5, RequestType::Resume, &[]);
    drop(h);
    let mut h = Harness::persistent(tmp.path());
    assert_eq!(h.ctr(5, "800 clustered-core 8 nosync").0, 0);
    assert_eq!(h.count(5), 100);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("logs")).unwrap().count(),
        1
    );
}

#[test]
fn disk_log_restart_writes_unflushed_marks() {
    let tmp = TempDir::new();
    let state = tmp.path().join("state");
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let ctr = format!("800 clustered-disk {} 8 nosync", dev.display());
    let mut h = Harness::persistent(&state);
    h.ctr(2, &ctr);
    h.ok(2, RequestType::Resume, &[]);
    h.ok(2, RequestType::MarkRegion, &regions(&[42]));
    assert!(on_disk_clean(&dev, 42));
    drop(h); // dies before the FLUSH

    let mut h = Harness::persistent(&state);
    assert!(on_disk_clean(&dev, 42), "the reload writes nothing");
    // The kernel resends the FLUSH (it writes no data before it succeeds):
    // the whole image goes out, durably, before the reply.
    h.ok(2, RequestType::Flush, &[]);
    assert!(!on_disk_clean(&dev, 42), "the mark is on the device");
    let c = &h.entry(2).counters;
    assert_eq!((c.disk_writes, c.disk_syncs), (1, 1));
    assert_eq!(h.entry(2).local().log.pending_commit(), None);
    assert_eq!(h.count(2), 100);
    assert_eq!(h.text(2, RequestType::StatusInfo), "3 clustered-disk 0:0 A");
}

#[test]
fn a_reloaded_disk_log_leaves_its_device_alone_until_the_kernel_asks() {
    // The mirror was removed while no server ran (its DTR was lost), and
    // the device number went to another device: the state file must not
    // make the server open or write it.
    let tmp = TempDir::new();
    let state = tmp.path().join("state");
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let ctr = format!("800 clustered-disk {} 8", dev.display());
    let mut h = Harness::persistent(&state);
    h.ctr(2, &ctr);
    h.ok(2, RequestType::Resume, &[]);
    h.ok(2, RequestType::Flush, &regions(&[7]));
    drop(h);
    let other = vec![0x5a_u8; 1 << 16];
    std::fs::write(&dev, &other).unwrap();

    let mut h = Harness::persistent(&state);
    assert_eq!(h.store.len(), 1);
    assert!(h.entry(2).local().device.is_none(), "not opened at start");
    h.store.commit_all(); // an orderly exit
    drop(h);
    assert_eq!(std::fs::read(&dev).unwrap(), other, "never written");

    // Once the kernel shows the log exists, the device is its own again.
    let mut h = Harness::persistent(&state);
    assert_eq!(h.word(2, RequestType::IsClean, 7), 0);
    assert!(
        h.entry(2).local().device.is_some(),
        "opened at the first request"
    );
    assert_eq!(h.entry(2).origin, Origin::Live);
    h.ok(2, RequestType::Flush, &[]);
    let img = std::fs::read(&dev).unwrap();
    assert_eq!(DiskHeader::decode(&img).unwrap(), DiskHeader::current(100));
    assert!(!on_disk_clean(&dev, 7));
}

#[test]
fn a_replayed_ctr_of_a_reloaded_disk_log_names_its_device() {
    let tmp = TempDir::new();
    let state = tmp.path().join("state");
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let ctr = format!("800 clustered-disk {} 8", dev.display());
    let mut h = Harness::persistent(&state);
    h.ctr(2, &ctr);
    drop(h); // died before answering: the kernel resends the CTR
    let mut h = Harness::persistent(&state);
    assert!(h.entry(2).local().device.is_none());
    assert_eq!(h.ctr(2, &ctr).0, 0);
    assert!(h.entry(2).local().device.is_some(), "opened for the reply");
}

#[test]
fn replayed_resume_does_not_reread_a_live_disk_log() {
    let tmp = TempDir::new();
    let state = tmp.path().join("state");
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let ctr = format!("800 clustered-disk {} 8", dev.display());
    let mut h = Harness::persistent(&state);
    h.ctr(2, &ctr);
    h.ok(2, RequestType::Resume, &[]);
    for r in 0..100 {
        h.set_sync(2, r, true);
    }
    h.ok(2, RequestType::Flush, &regions(&[1]));
    drop(h);
    let mut h = Harness::persistent(&state);
    h.ctr(2, &ctr);
    h.ok(2, RequestType::Resume, &[]);
    assert_eq!(
        h.count(2),
        100,
        "a re-read would have made region 1 out of sync"
    );
}

#[test]
fn corrupt_state_files_are_set_aside() {
    let tmp = TempDir::new();
    std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
    std::fs::write(tmp.path().join("logs/x.state"), b"garbage").unwrap();
    let h = Harness::persistent(tmp.path());
    assert!(h.store.is_empty());
    assert!(tmp.path().join("logs/x.bad").exists());
}

#[test]
fn version_1_requests_get_no_device_name() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let mut h = Harness::memory();
    h.version = 1;
    assert_eq!(
        h.ctr(1, &format!("80 disk {} 8", dev.display())),
        (0, vec![])
    );
}

/// Exercises a real block device (a loop device) when the test runs as
/// root with loop support; otherwise there is nothing to test and it
/// returns early.
#[test]
fn disk_log_on_a_loop_device() {
    let tmp = TempDir::new();
    let backing = device_file(tmp.path(), &[], 1 << 20);
    let Some(loopdev) = crate::test_util::LoopDevice::attach(&backing) else {
        eprintln!("skipped: no loop device");
        return;
    };
    let meta = std::fs::metadata(loopdev.path()).unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
    let name = format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let state = tmp.path().join("state");
    let mut h = Harness::persistent(&state);
    for (luid, spec) in [(1, name.clone()), (2, loopdev.path().display().to_string())] {
        let (e, reply) = h.ctr(luid, &format!("80000 clustered-disk {spec} 8 nosync"));
        assert_eq!(e, 0);
        assert_eq!(
            reply,
            format!("{name}\0").into_bytes(),
            "the kernel holds maj:min"
        );
    }
    h.ok(1, RequestType::Resume, &[]);
    h.ok(1, RequestType::Flush, &regions(&[1234]));
    assert_eq!(
        h.text(1, RequestType::StatusInfo),
        format!("3 clustered-disk {name} A")
    );
    h.ok(1, RequestType::Dtr, &[]);
    h.ok(2, RequestType::Dtr, &[]);
    drop(h);
    drop(loopdev);
    assert!(
        !on_disk_clean(&backing, 1234),
        "O_DIRECT write reached the device"
    );
    assert!(on_disk_clean(&backing, 1235));
    assert_eq!(
        DiskHeader::decode(&std::fs::read(&backing).unwrap()).unwrap(),
        DiskHeader::current(10_000)
    );
}

const CHILD_ENV: &str = "DM_ULOGD_TEST_CRASH_DIR";

/// The child half of `a_killed_server_loses_nothing`: applies requests, then
/// dies at once, without destructors. Does nothing when run normally.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let dev = dir.join("logdev");
    let mut h = Harness::persistent(&dir.join("state"));
    h.ctr(1, "8000 clustered-core 8");
    h.ok(1, RequestType::Resume, &[]);
    h.ok(1, RequestType::MarkRegion, &regions(&[11, 12]));
    h.ok(1, RequestType::ClearRegion, &regions(&[12]));
    h.set_sync(1, 500, true);
    h.ctr(2, &format!("8000 clustered-disk {} 8", dev.display()));
    h.ok(2, RequestType::Resume, &[]);
    h.ok(2, RequestType::ClearRegion, &regions(&[7, 8]));
    h.ok(2, RequestType::Flush, &[]);
    h.ok(2, RequestType::MarkRegion, &regions(&[7])); // no FLUSH before the crash
    std::process::abort();
}

#[test]
fn a_killed_server_loses_nothing() {
    let tmp = TempDir::new();
    let dev = device_file(tmp.path(), &[], 1 << 16);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["store::tests::crash_child", "--exact", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die");
    assert!(
        on_disk_clean(&dev, 7) && on_disk_clean(&dev, 8),
        "before the restart"
    );

    let mut h = Harness::persistent(&tmp.path().join("state"));
    assert_eq!(h.store.len(), 2);
    assert_eq!(h.word(1, RequestType::IsClean, 11), 0);
    assert_eq!(h.word(1, RequestType::IsClean, 12), 1);
    assert_eq!(h.word(1, RequestType::InSync, 500), 1);
    assert_eq!(h.count(1), 1);
    assert_eq!(h.word(2, RequestType::IsClean, 7), 0);
    // The kernel resends the FLUSH it got no answer to: the mark the dead
    // server applied reaches the device before the reply.
    h.ok(2, RequestType::Flush, &[]);
    assert!(
        !on_disk_clean(&dev, 7),
        "the unflushed mark reached the device"
    );
    assert!(on_disk_clean(&dev, 8));
}

#[test]
fn postsuspend_before_any_resume_leaves_the_device_alone() {
    let tmp = TempDir::new();
    let img = clean_image(100);
    let dev = device_file(tmp.path(), &img, 4096);
    let mut h = Harness::memory();
    h.ctr(1, &format!("800 clustered-disk {} 8", dev.display()));
    h.ok(1, RequestType::Postsuspend, &[]);
    h.ok(1, RequestType::Flush, &regions(&[3]));
    assert_eq!(&std::fs::read(&dev).unwrap()[..img.len()], &img[..]);
    h.ok(1, RequestType::Resume, &[]);
    assert_eq!(h.count(1), 100, "read from the untouched device");
}

#[test]
fn state_files_not_matching_their_log_are_set_aside() {
    let tmp = TempDir::new();
    let dir = StateDir::open(tmp.path()).unwrap();
    let id = Identity {
        uuid: b"LVM-x".to_vec(),
        luid: 3,
        ctr: "800 clustered-core 8".into(),
    };
    let mut f = dir.create(&id, 99).unwrap(); // 100 regions need 2 words
    f.publish().unwrap();
    drop(f);
    let h = Harness::persistent(tmp.path());
    assert!(h.store.is_empty());
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.len() == 1 && names[0].ends_with(".bad"), "{names:?}");
}
