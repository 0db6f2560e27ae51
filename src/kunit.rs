// SPDX-License-Identifier: GPL-2.0

//! KUnit suites for the module's pure helpers, run in the kernel they are
//! built for: each time the module loads on a kernel with `CONFIG_KUNIT=y`
//! (their KTAP goes to the kernel log, which `scripts/guest.sh` checks).
//! Linux 7.3 and later only (`#[kunit_tests]`); `compat.rs` builds this file.
//!
//! The same helpers have host tests (`cd tools && cargo test`); these check
//! the request numbers against the uapi header as bindgen sees it, and the
//! helpers as compiled for the kernel. (The wire layout is checked when the
//! module is built, on every series: see `bindings.rs`.)

use kernel::prelude::kunit_tests;

#[kunit_tests(dm_log_userspace_wire)]
mod wire {
    use crate::bindings;
    use crate::wire::*;

    fn uuid(s: &[u8]) -> [u8; UUID_LEN] {
        let mut u = [0u8; UUID_LEN];
        u[..s.len()].copy_from_slice(s);
        u
    }

    #[test]
    fn request_types_are_numbered_as_in_the_header() {
        let c = [
            bindings::DM_ULOG_CTR,
            bindings::DM_ULOG_DTR,
            bindings::DM_ULOG_PRESUSPEND,
            bindings::DM_ULOG_POSTSUSPEND,
            bindings::DM_ULOG_RESUME,
            bindings::DM_ULOG_GET_REGION_SIZE,
            bindings::DM_ULOG_IS_CLEAN,
            bindings::DM_ULOG_IN_SYNC,
            bindings::DM_ULOG_FLUSH,
            bindings::DM_ULOG_MARK_REGION,
            bindings::DM_ULOG_CLEAR_REGION,
            bindings::DM_ULOG_GET_RESYNC_WORK,
            bindings::DM_ULOG_SET_REGION_SYNC,
            bindings::DM_ULOG_GET_SYNC_COUNT,
            bindings::DM_ULOG_STATUS_INFO,
            bindings::DM_ULOG_STATUS_TABLE,
            bindings::DM_ULOG_IS_REMOTE_RECOVERING,
        ];
        assert_eq!(c.len(), RequestType::ALL.len());
        for (t, n) in RequestType::ALL.iter().zip(c) {
            assert_eq!(*t as u32, n);
            assert_eq!(RequestType::from_wire(n), Some(*t));
            assert_eq!(RequestType::from_wire(n | 0x100), Some(*t));
        }
        assert_eq!(RequestType::from_wire(0), None);
        assert_eq!(RequestType::from_wire(18), None);
    }

    #[test]
    fn header_round_trips_at_c_offsets() {
        let mut h = RequestHeader::new(
            0x1122_3344_5566_7788,
            &uuid(b"LVM-abc"),
            42,
            RequestType::Flush,
        );
        h.error = -11;
        h.data_size = 16;
        let mut buf = [0xffu8; HEADER_SIZE];
        assert_eq!(h.encode(&mut buf), Some(()));
        assert_eq!(buf[0..8], 0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&buf[8..15], b"LVM-abc");
        assert!(buf[15..140].iter().all(|&b| b == 0));
        assert_eq!(buf[140..144], 3u32.to_ne_bytes());
        assert_eq!(buf[144..148], (-11i32).to_ne_bytes());
        assert_eq!(buf[148..152], 42u32.to_ne_bytes());
        assert_eq!(buf[152..156], 9u32.to_ne_bytes());
        assert_eq!(buf[156..160], 16u32.to_ne_bytes());
        assert_eq!(RequestHeader::decode(&buf), Some(h.clone()));
        assert_eq!(h.uuid_bytes(), b"LVM-abc");
        assert_eq!(h.encode(&mut buf[..HEADER_SIZE - 1]), None);

        let cn = CnHeader::for_log(7, 11, 176);
        let mut b = [0u8; CN_MSG_SIZE];
        assert_eq!(cn.encode(&mut b), Some(()));
        assert_eq!(CnHeader::decode(&b), Some(cn));
        assert_eq!(b[16..18], 176u16.to_ne_bytes());
    }

    #[test]
    fn parse_checks_data_size_against_length() {
        let cn = CnHeader::for_log(3, 5, 0);
        assert_eq!(
            Message::parse(&cn, &[]),
            Ok(Message::Ack { seq: 3, ack: 5 })
        );
        assert_eq!(
            Message::parse(&cn, &[0u8; 100]),
            Err(ParseError::Truncated { len: 100 })
        );
        let mut buf = [0u8; HEADER_SIZE + 8];
        let mut h = RequestHeader::new(1, &uuid(b"u"), 5, RequestType::GetSyncCount);
        h.data_size = 9;
        assert_eq!(h.encode(&mut buf), Some(()));
        assert_eq!(
            Message::parse(&cn, &buf),
            Err(ParseError::DataSizeMismatch {
                data_size: 9,
                present: 8
            })
        );
        h.data_size = u32::MAX;
        assert_eq!(h.encode(&mut buf), Some(()));
        assert!(Message::parse(&cn, &buf).is_err());
        h.data_size = 8;
        assert_eq!(h.encode(&mut buf), Some(()));
        buf[HEADER_SIZE..].copy_from_slice(&77u64.to_ne_bytes());
        let data = match Message::parse(&cn, &buf) {
            Ok(Message::Request { header, data }) if header.seq == 5 => data,
            _ => &[],
        };
        assert_eq!(payload_u64(data, 0), Some(77));
        assert_eq!(payload_u64(data, 1), None);
        assert_eq!(payload_i64(&(-1i64).to_ne_bytes(), 0), Some(-1));
    }

    #[test]
    fn reply_sizes_are_strict() {
        assert!(RequestType::GetSyncCount.reply_size().accepts(8, 8));
        assert!(!RequestType::GetSyncCount.reply_size().accepts(4, 8));
        assert!(!RequestType::GetSyncCount.reply_size().accepts(16, 16));
        assert!(RequestType::GetResyncWork.reply_size().accepts(16, 16));
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
        let mut got = [0u64; 3];
        let mut n = 0;
        // A plain loop: zipping the iterator makes objtool warn (it does
        // not know `panic_const_div_by_zero` never returns).
        if let Some(it) = payload_regions(&buf) {
            for r in it {
                if let Some(slot) = got.get_mut(n) {
                    *slot = r;
                }
                n += 1;
            }
        }
        assert_eq!(n, 3);
        assert_eq!(got, [1, 2, u64::MAX]);
        assert!(payload_regions(&buf[..7]).is_none());
        assert_eq!(put_words(&mut buf[..8], &[1, 2]), None);
    }
}

#[kunit_tests(dm_log_userspace_table_args)]
mod table_args {
    use crate::table_args::*;
    use crate::wire::{MAX_REQUEST_PAYLOAD, UUID_LEN};

    /// A `fmt::Write` into a fixed buffer, for the table line.
    struct Text {
        buf: [u8; 256],
        len: usize,
    }

    impl Text {
        fn new() -> Self {
            Self {
                buf: [0; 256],
                len: 0,
            }
        }

        fn bytes(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }

    impl core::fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let dst = self
                .buf
                .get_mut(self.len..self.len + s.len())
                .ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len += s.len();
            Ok(())
        }
    }

    /// The CTR string of `args`, or the error, with its length.
    fn ctr(
        args: &[&[u8]],
        sectors: u64,
        out: &mut [u8; MAX_REQUEST_PAYLOAD],
    ) -> Result<usize, ArgsError> {
        TableArgs::parse(args)?.write_ctr_string(sectors, out)
    }

    #[test]
    fn ctr_string_puts_the_length_first_and_strips_the_uuid() {
        let mut out = [0u8; MAX_REQUEST_PAYLOAD];
        let args: &[&[u8]] = &[b"LVM-x", b"clustered-core", b"1024"];
        let n = ctr(args, 131072, &mut out).unwrap_or(0);
        assert_eq!(&out[..n], b"131072 clustered-core 1024");
    }

    #[test]
    fn integrated_flush_is_stripped_and_case_insensitive() {
        let args: &[&[u8]] = &[b"u", b"Integrated_Flush", b"clustered-core", b"1024"];
        let t = TableArgs::parse(args);
        assert!(t.as_ref().is_ok_and(|t| t.integrated_flush && t.argc == 4));
        assert!(t.is_ok_and(|t| t.server_args == [&b"clustered-core"[..], b"1024"]));
        let mut out = [0u8; MAX_REQUEST_PAYLOAD];
        let n = ctr(args, 8, &mut out).unwrap_or(0);
        assert_eq!(&out[..n], b"8 clustered-core 1024");
        let plain: &[&[u8]] = &[b"u", b"clustered-core", b"integrated_flush"];
        assert!(TableArgs::parse(plain).is_ok_and(|t| !t.integrated_flush));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(TableArgs::parse(&[]), Err(ArgsError::TooFew(0)));
        assert_eq!(
            TableArgs::parse(&[b"u".as_slice(), b"core"]),
            Err(ArgsError::TooFew(2))
        );
        let long = [b'a'; UUID_LEN];
        assert_eq!(
            TableArgs::parse(&[&long[..], b"a", b"b"]),
            Err(ArgsError::UuidTooLong(UUID_LEN))
        );
        let ok = [b'a'; UUID_LEN - 1];
        assert!(TableArgs::parse(&[&ok[..], b"a", b"b"])
            .is_ok_and(|t| t.uuid[..UUID_LEN - 1] == ok && t.uuid[UUID_LEN - 1] == 0));
        let big = [b'x'; 400];
        let mut out = [0u8; MAX_REQUEST_PAYLOAD];
        assert_eq!(
            ctr(&[b"u", b"core", &big[..]], 1, &mut out),
            Err(ArgsError::CtrTooLong(407))
        );
    }

    #[test]
    fn table_line_matches_the_c_module() {
        let mut out = [0u8; MAX_REQUEST_PAYLOAD];
        let args: &[&[u8]] = &[b"UUID", b"integrated_flush", b"clustered-core", b"1024"];
        let n = ctr(args, 4096, &mut out).unwrap_or(0);
        let mut line = Text::new();
        let r = write_table_line(
            &mut line,
            "userspace",
            args.len(),
            b"UUID",
            true,
            ctr_server_args(&out[..n]),
        );
        assert!(r.is_ok());
        assert_eq!(
            line.bytes(),
            b"userspace 4 UUID integrated_flush clustered-core 1024 "
        );
        assert_eq!(ctr_server_args(b"12 a b"), b"a b");
        assert_eq!(ctr_server_args(b"12"), b"");
    }
}

#[kunit_tests(dm_log_userspace_geometry)]
mod geometry {
    use crate::geometry::*;

    #[test]
    fn valid_sizes_give_a_rounded_up_count() {
        assert_eq!(
            Geometry::new(131072, 1024),
            Ok(Geometry {
                region_size: 1024,
                region_count: 128
            })
        );
        assert_eq!(Geometry::new(1025, 1024).map(|g| g.region_count), Ok(2));
        assert_eq!(Geometry::new(0, 8).map(|g| g.region_count), Ok(0));
        assert_eq!(
            Geometry::new(u64::MAX, 1).map(|g| g.region_count),
            Ok(u64::MAX)
        );
        assert_eq!(Geometry::new(7, 1 << 31).map(|g| g.region_count), Ok(1));
    }

    #[test]
    fn invalid_sizes_are_refused() {
        for bad in [0, 3, 1000, 1 << 32, u64::MAX] {
            assert_eq!(Geometry::new(100, bad), Err(BadRegionSize(bad)));
        }
    }
}

#[kunit_tests(dm_log_userspace_flush_plan)]
mod flush_plan {
    use crate::flush_plan::*;
    use crate::wire::RequestType::{self, ClearRegion as C, Flush as F, MarkRegion as M};

    /// The requests of a plan over `clears` regions from 100 and `marks`
    /// from 0: (type, region count, first region), how many, and whether it
    /// asks for a lazy flush.
    fn plan(
        clears: u64,
        marks: u64,
        integrated: bool,
    ) -> ([(RequestType, usize, u64); 8], usize, bool) {
        let mut p = FlushPlan::new(FromIter(100..100 + clears), FromIter(0..marks), integrated);
        let mut reqs = [(F, 0, 0); 8];
        let mut n = 0;
        for (slot, g) in reqs.iter_mut().zip(p.by_ref()) {
            *slot = (
                g.kind,
                g.regions().len(),
                g.regions().first().copied().unwrap_or(0),
            );
            n += 1;
        }
        (reqs, n, p.needs_lazy_flush())
    }

    #[test]
    fn nothing_pending_sends_nothing() {
        assert_eq!(plan(0, 0, false).1, 0);
        assert_eq!(plan(0, 0, true).1, 0);
        assert!(!plan(0, 0, false).2);
    }

    #[test]
    fn clears_come_first_in_groups_of_32_then_marks_then_flush() {
        let (reqs, n, lazy) = plan(33, 65, false);
        assert_eq!(n, 6);
        assert_eq!(
            reqs[..6],
            [
                (C, 32, 100),
                (C, 1, 132),
                (M, 32, 0),
                (M, 32, 32),
                (M, 1, 64),
                (F, 0, 0)
            ]
        );
        assert!(!lazy);
    }

    #[test]
    fn clears_only_send_no_flush_and_ask_for_a_lazy_one() {
        for integrated in [false, true] {
            let (reqs, n, lazy) = plan(3, 0, integrated);
            assert_eq!(n, 1);
            assert_eq!(reqs[0], (C, 3, 100));
            assert!(lazy);
        }
    }

    #[test]
    fn integrated_flush_carries_the_marks() {
        let (reqs, n, lazy) = plan(1, 40, true);
        assert_eq!(n, 3);
        assert_eq!(reqs[..3], [(C, 1, 100), (F, 32, 0), (F, 8, 32)]);
        assert!(!lazy);
    }

    #[test]
    fn marks_only_send_one_flush() {
        let (reqs, n, lazy) = plan(0, 1, false);
        assert_eq!(n, 2);
        assert_eq!(reqs[..2], [(M, 1, 0), (F, 0, 0)]);
        assert!(!lazy);
    }
}

#[kunit_tests(dm_log_userspace_region_set)]
mod region_set {
    use crate::region_set::*;
    use kernel::prelude::*;

    type Set = RegionSet<KVec<u64>>;

    fn set(count: u64) -> Result<Set> {
        let (m, s) = words_for(count).ok_or(ENOMEM)?;
        RegionSet::new(
            count,
            KVec::from_elem(0, m, GFP_KERNEL)?,
            KVec::from_elem(0, s, GFP_KERNEL)?,
        )
        .ok_or(EINVAL)
    }

    /// Whether the regions of `s` are exactly `want`, in order.
    fn holds(s: &Set, want: &[u64]) -> bool {
        let mut out = [0u64; 16];
        let mut n = 0;
        let mut next = Some(0);
        while let Some(from) = next {
            let mut spare = [0u64; 1];
            let (k, resume) = match out.get_mut(n..).filter(|rest| !rest.is_empty()) {
                Some(rest) => s.fill_from(from, rest),
                None => s.fill_from(from, &mut spare),
            };
            if n == out.len() && k > 0 {
                return false;
            }
            n += k;
            next = resume;
        }
        out[..n] == *want
    }

    /// Runs a stepped operation to the end.
    fn run_steps(mut step: impl FnMut(usize) -> Option<usize>) {
        let mut next = Some(0);
        while let Some(from) = next {
            next = step(from);
        }
    }

    #[test]
    fn storage_must_match_the_count() -> Result {
        let v = |n| KVec::from_elem(0u64, n, GFP_KERNEL);
        assert!(RegionSet::new(65, v(2)?, v(1)?).is_some());
        assert!(RegionSet::new(65, v(1)?, v(1)?).is_none());
        let mut dirty = v(2)?;
        dirty[1] = 1;
        assert!(RegionSet::new(65, dirty, v(1)?).is_none());
        assert_eq!(words_for(0), Some((0, 0)));
        assert_eq!(words_for(4097), Some((65, 2)));
        Ok(())
    }

    #[test]
    fn insert_dedups_and_rejects_out_of_range() -> Result {
        let mut s = set(200)?;
        assert!(holds(&s, &[]));
        assert!(s.insert(5));
        assert!(s.insert(5));
        assert!(s.insert(199));
        assert!(!s.insert(200));
        assert!(holds(&s, &[5, 199]));
        Ok(())
    }

    #[test]
    fn fill_from_resumes_in_order_across_words_and_summaries() -> Result {
        let mut s = set(10_000)?;
        let regions = [0, 1, 63, 64, 127, 4095, 4096, 4097, 9999];
        for r in regions.iter().rev() {
            s.insert(*r);
        }
        let mut got = [0u64; 9];
        let mut n = 0;
        let mut next = Some(0);
        while let Some(from) = next {
            let mut out = [0u64; 2];
            let (k, resume) = s.fill_from(from, &mut out);
            if n + k > got.len() {
                break;
            }
            got[n..n + k].copy_from_slice(&out[..k]);
            n += k;
            next = resume;
        }
        assert_eq!(n, regions.len());
        assert_eq!(got, regions);
        let mut out = [0u64; 4];
        assert_eq!(s.fill_from(4096, &mut out), (3, None));
        assert_eq!(out[..3], [4096, 4097, 9999]);
        Ok(())
    }

    #[test]
    fn move_into_merges_and_empties() -> Result {
        let mut a = set(5000)?;
        let mut b = set(5000)?;
        a.insert(1);
        a.insert(4999);
        b.insert(1);
        b.insert(70);
        run_steps(|from| a.move_into(&mut b, from));
        assert!(holds(&a, &[]));
        assert!(holds(&b, &[1, 70, 4999]));
        run_steps(|from| b.clear(from));
        assert!(holds(&b, &[]));
        b.insert(3);
        assert!(holds(&b, &[3]));
        Ok(())
    }

    #[test]
    fn matches_a_model_under_random_operations() -> Result {
        const COUNT: u64 = 3000;
        let mut s = set(COUNT)?;
        let mut model = KVec::from_elem(false, COUNT as usize, GFP_KERNEL)?;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % (COUNT + 100);
            assert_eq!(s.insert(r), r < COUNT);
            if let Some(m) = model.get_mut(r as usize) {
                *m = true;
            }
            if i % 997 == 0 {
                run_steps(|from| s.clear(from));
                model.iter_mut().for_each(|m| *m = false);
            }
        }
        let mut mismatches = 0;
        let mut next = Some(0);
        let mut out = [0u64; 32];
        let mut expect = model
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(r, _)| r as u64);
        while let Some(from) = next {
            let (n, resume) = s.fill_from(from, &mut out);
            for r in &out[..n] {
                if expect.next() != Some(*r) {
                    mismatches += 1;
                }
            }
            next = resume;
        }
        assert_eq!(mismatches, 0);
        assert_eq!(expect.next(), None);
        Ok(())
    }
}

#[kunit_tests(dm_log_userspace_hints)]
mod hints {
    use crate::hints::{RecoveryHints, RemoteRecovering::*};

    #[test]
    fn below_the_hint_never_asks() {
        let h = RecoveryHints::new();
        h.set_in_sync_hint(10);
        assert_eq!(h.remote_recovering(9, 1000, 25), No);
        assert_eq!(h.remote_recovering(0, 1000, 25), No);
        assert_eq!(h.remote_recovering(10, 1000, 25), Ask);
    }

    #[test]
    fn asks_at_most_once_per_interval_per_log() {
        let h = RecoveryHints::new();
        let other = RecoveryHints::new();
        assert_eq!(h.remote_recovering(5, 1000, 25), Ask);
        assert_eq!(other.remote_recovering(5, 1000, 25), Ask);
        assert_eq!(h.remote_recovering(5, 1001, 25), AssumeYes);
        assert_eq!(h.remote_recovering(6, 1024, 25), AssumeYes);
        assert_eq!(h.remote_recovering(6, 1025, 25), Ask);
    }

    #[test]
    fn jiffies_wrap_around() {
        let h = RecoveryHints::new();
        let near_end = usize::MAX - 5;
        assert_eq!(h.remote_recovering(1, near_end, 25), Ask);
        assert_eq!(h.remote_recovering(1, 10, 25), AssumeYes);
        assert_eq!(h.remote_recovering(1, 20, 25), Ask);
    }

    #[test]
    fn sync_count_and_reset() {
        let h = RecoveryHints::new();
        assert!(!h.all_in_sync(100));
        h.note_sync_count(99, 100);
        assert!(!h.all_in_sync(100));
        h.note_sync_count(100, 100);
        assert!(h.all_in_sync(100));
        assert_eq!(h.remote_recovering(99, 0, 25), No);
        h.reset();
        assert!(!h.all_in_sync(100));
    }
}

#[kunit_tests(dm_log_userspace_in_sync_memo)]
mod in_sync_memo {
    use crate::in_sync_memo::{InSyncMemo, MEMO_SIZE};

    #[test]
    fn keeps_answers_until_forgotten() {
        let mut m = InSyncMemo::new();
        assert_eq!(m.get(7), None);
        m.put(7, false);
        m.put(9, true);
        assert_eq!((m.get(7), m.get(9)), (Some(false), Some(true)));
        m.forget(7);
        assert_eq!((m.get(7), m.get(9)), (None, Some(true)));
        m.clear();
        assert_eq!(m.get(9), None);
    }

    #[test]
    fn a_full_memo_keeps_what_it_has() {
        let mut m = InSyncMemo::new();
        for r in 0..MEMO_SIZE as u64 {
            m.put(r, r % 2 == 0);
        }
        m.put(1000, true);
        assert_eq!(m.get(1000), None);
        assert_eq!(m.get(4), Some(true));
    }
}
