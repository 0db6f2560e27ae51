// SPDX-License-Identifier: GPL-2.0

//! Tests of [`LogState`] on one node (dm-log's rules) and shared
//! (cmirrord's rules).

use super::*;
use crate::ctr_args;

const ME: MemberId = MemberId::LOCAL;
const A: MemberId = MemberId::new(1, 10);
const B: MemberId = MemberId::new(2, 20);

fn log(ctr: &str) -> LogState {
    let c = ctr_args::parse(ctr).unwrap();
    LogState::new(&c, Sharing::Single, Backing::memory(c.region_count))
}

fn shared(ctr: &str) -> LogState {
    let c = ctr_args::parse(ctr).unwrap();
    LogState::new(&c, Sharing::Shared, Backing::memory(c.region_count))
}

#[test]
fn core_default_starts_clean_and_out_of_sync() {
    let l = log("1000 clustered-core 8"); // 125 regions
    assert_eq!(l.region_count(), 125);
    assert_eq!(l.is_clean(0), Ok(true));
    assert_eq!(l.is_clean(124), Ok(true));
    assert_eq!(l.in_sync(0), Ok(false));
    assert_eq!(l.sync_count(), 0);
    assert_eq!(
        l.is_clean(125),
        Err(OutOfRange {
            region: 125,
            count: 125
        })
    );
    assert!(l.in_sync(u64::MAX).is_err());
    let l = log("1000 clustered-core 8 nosync");
    assert_eq!(l.in_sync(124), Ok(true));
    assert_eq!(l.sync_count(), 125);
    assert_eq!(l.count_sync_bits(), 125, "no bits past the end");
    let l = log("1000 clustered-core 8 sync");
    assert_eq!(l.sync_count(), 0);
}

#[test]
fn mark_and_clear_are_checked_first() {
    let mut l = log("80 core 8"); // 10 regions
    l.mark(ME, &[1, 3]).unwrap();
    assert_eq!(l.is_clean(1), Ok(false));
    assert_eq!(l.is_clean(3), Ok(false));
    assert!(l.mark(ME, &[2, 10]).is_err());
    assert_eq!(l.is_clean(2), Ok(true), "nothing applied on error");
    l.clear(ME, &[1]).unwrap();
    assert_eq!(l.is_clean(1), Ok(true));
    assert!(l.clear(ME, &[3, 99]).is_err());
    assert_eq!(l.is_clean(3), Ok(false));
}

#[test]
fn resync_work_hands_out_each_region_once() {
    let mut l = log("40 core 8"); // 5 regions, none in sync
    l.set_region_sync(ME, 1, true).unwrap();
    assert_eq!(l.get_resync_work(ME), Some(0));
    assert_eq!(l.in_sync_hint(), 0);
    l.set_region_sync(ME, 0, true).unwrap();
    assert_eq!(l.get_resync_work(ME), Some(2));
    assert_eq!(l.in_sync_hint(), 2);
    l.set_region_sync(ME, 2, false).unwrap(); // recovery failed
    assert_eq!(l.get_resync_work(ME), Some(3));
    l.set_region_sync(ME, 3, true).unwrap();
    assert_eq!(l.get_resync_work(ME), Some(4));
    assert_eq!(l.in_sync_hint(), 4, "region 4 is being recovered");
    l.set_region_sync(ME, 4, true).unwrap();
    assert_eq!(l.get_resync_work(ME), None);
    assert_eq!(l.get_resync_work(ME), None, "scan stays done until resume");
    l.resume_core();
    assert_eq!(l.get_resync_work(ME), Some(2));
    l.set_region_sync(ME, 2, true).unwrap();
    assert_eq!(l.get_resync_work(ME), None);
    assert_eq!(l.sync_count(), 5);
    assert_eq!(l.in_sync_hint(), 5);
    assert_eq!(l.is_remote_recovering(4), Ok((false, 5)));
    assert!(l.is_remote_recovering(5).is_err());
}

#[test]
fn resync_work_asked_again_gets_the_same_region() {
    // dm-raid1 asks again only if it never got the answer.
    let mut l = log("40 core 8");
    assert_eq!(l.get_resync_work(ME), Some(0));
    assert_eq!(l.get_resync_work(ME), Some(0), "the answer was lost: again");
    l.set_region_sync(ME, 0, true).unwrap();
    assert_eq!(l.get_resync_work(ME), Some(1));
    l.set_region_sync(ME, 1, false).unwrap();
    assert_eq!(
        l.get_resync_work(ME),
        Some(2),
        "a failed region waits for the next pass"
    );
}

#[test]
fn sync_count_never_double_counts() {
    let mut l = log("40 core 8");
    l.set_region_sync(ME, 1, true).unwrap();
    l.set_region_sync(ME, 1, true).unwrap();
    assert_eq!(l.sync_count(), 1);
    l.set_region_sync(ME, 1, false).unwrap();
    l.set_region_sync(ME, 1, false).unwrap();
    assert_eq!(l.sync_count(), 0);
    assert!(l.set_region_sync(ME, 5, true).is_err());
}

#[test]
fn disk_dirty_tracking_separates_marks_from_clears() {
    let mut l = log("100000000 disk /dev/null 8"); // 12.5M regions
    assert_eq!(l.pending_commit(), None, "never resumed: nothing to write");
    l.resume_from_disk(0, &[]);
    assert_eq!(
        l.pending_commit(),
        Some(CommitPlan {
            full: true,
            needs_sync: true
        })
    );
    l.commit_done();
    assert_eq!(l.pending_commit(), None);
    l.mark(ME, &[5000]).unwrap();
    assert_eq!(l.pending_commit(), None, "already dirty after a resync");
    l.clear(ME, &[5000, 9000]).unwrap();
    assert_eq!(
        l.pending_commit(),
        Some(CommitPlan {
            full: false,
            needs_sync: false
        })
    );
    assert_eq!(l.dirty_chunks().collect::<Vec<_>>(), [1, 2]);
    l.commit_done();
    l.mark(ME, &[9000]).unwrap();
    assert_eq!(
        l.pending_commit(),
        Some(CommitPlan {
            full: false,
            needs_sync: true
        })
    );
    assert_eq!(l.dirty_chunks().collect::<Vec<_>>(), [2]);
}

#[test]
fn disk_resume_trusts_the_valid_prefix() {
    let c = ctr_args::parse("80 disk /dev/null 8").unwrap(); // 10 regions
    let mut l = LogState::new(&c, Sharing::Single, Backing::memory(10));
    let on_disk = [0b1111_0101u8, 0xff, 0, 0, 0, 0, 0, 0];
    l.resume_from_disk(8, &on_disk);
    let clean: Vec<bool> = (0..10).map(|r| l.is_clean(r).unwrap()).collect();
    assert_eq!(
        clean,
        [true, false, true, false, true, true, true, true, false, false],
        "regions 8 and 9 are new: dirty and out of sync"
    );
    assert_eq!(l.sync_count(), 6);
    assert_eq!(l.in_sync(0), Ok(true));
    assert_eq!(l.in_sync(1), Ok(false));

    let c = ctr_args::parse("80 disk /dev/null 8 nosync").unwrap();
    let mut l = LogState::new(&c, Sharing::Single, Backing::memory(10));
    l.resume_from_disk(0, &on_disk);
    assert_eq!(l.sync_count(), 10);
    assert_eq!(l.count_sync_bits(), 10);
}

#[test]
fn shared_clean_only_when_no_member_marks_and_in_sync() {
    let mut s = shared("80 clustered-core 8 nosync");
    s.mark(A, &[3]).unwrap();
    s.mark(B, &[3, 4]).unwrap();
    s.clear(A, &[3]).unwrap();
    assert_eq!(s.is_clean(3), Ok(false), "B still writes region 3");
    s.clear(B, &[3, 4]).unwrap();
    assert_eq!(s.is_clean(3), Ok(true));
    assert!(!s.is_marked(3) && !s.is_marked(4));
    s.mark(A, &[5]).unwrap();
    s.set_region_sync(B, 5, false).unwrap();
    s.clear(A, &[5]).unwrap();
    assert_eq!(
        s.is_clean(5),
        Ok(false),
        "out of sync stays dirty, so a disk log keeps it for resync"
    );
    assert!(s.mark(A, &[10]).is_err());
}

#[test]
fn shared_one_recoverer_per_region() {
    let mut s = shared("32 clustered-core 8"); // 4 regions
    assert_eq!(s.get_resync_work(A), Some(0));
    assert_eq!(s.get_resync_work(B), Some(1));
    assert_eq!(s.get_resync_work(A), Some(0), "asking again: the same");
    assert_eq!(s.recoverer(1), Some(B));
    s.set_region_sync(A, 1, true).unwrap();
    assert_eq!(s.in_sync(1), Ok(false), "only B may call region 1 in sync");
    s.set_region_sync(B, 1, true).unwrap();
    s.prioritize(3);
    assert!(s.is_prioritized(3));
    assert_eq!(s.get_resync_work(B), Some(3), "priority request first");
    assert_eq!(s.sync_count(), 1);
    s.set_region_sync(A, 0, true).unwrap();
    s.set_region_sync(B, 3, true).unwrap();
    assert_eq!(s.get_resync_work(A), Some(2));
    assert_eq!(s.get_resync_work(B), None);
    s.set_region_sync(A, 2, true).unwrap();
    assert_eq!(s.sync_count(), 4);
    assert_eq!(s.first_unsynced(), 4);
}

#[test]
fn shared_departed_members_marks_go_out_of_sync() {
    let mut s = shared("800 clustered-core 8 nosync"); // 100 regions
    s.mark(A, &[5, 6]).unwrap();
    s.mark(B, &[6, 70]).unwrap();
    assert_eq!(s.get_resync_work(B), None, "all in sync");
    assert!(s.member_departed(A));
    assert!(!s.in_sync(5).unwrap() && !s.in_sync(6).unwrap() && s.in_sync(70).unwrap());
    assert_eq!(s.sync_count(), 98);
    assert!(s.marked_by(B, 6), "B's own mark stays");
    assert_eq!(s.get_resync_work(B), Some(5));
    assert!(s.member_departed(B), "its recovery is abandoned");
    assert_eq!(s.recoverer(5), None);
    assert!(!s.member_departed(B));
}

#[test]
fn snapshots_round_trip() {
    let c = ctr_args::parse("8000 clustered-disk /dev/null 8").unwrap(); // 1000
    let mut s = LogState::new(&c, Sharing::Shared, Backing::memory(1000));
    s.resume_from_disk(0, &[]);
    for i in (0..1000).filter(|i| i % 7 != 0 && *i != 999) {
        s.set_sync(i, true);
        s.set_clean(i, true);
    }
    s.mark(A, &[1, 998]).unwrap();
    s.prioritize(14);
    assert_eq!(s.get_resync_work(B), Some(14));
    s.prioritize(21);
    let mut w = Writer::default();
    s.encode(&mut w);
    let copy = LogState::decode(&c, &mut Reader(&w.0)).unwrap();
    assert!(copy.same_contents(&s));
    assert_eq!(copy.is_clean(1), Ok(false));
    assert_eq!(copy.is_clean(2), Ok(true));
    let full = shared("134217728 clustered-core 8 nosync"); // 2^24 regions
    let mut w = Writer::default();
    full.encode(&mut w);
    assert!(w.0.len() < 200, "one run for a log all in sync and clean");
    let other = ctr_args::parse("8008 clustered-disk /dev/null 8").unwrap();
    let mut w = Writer::default();
    s.encode(&mut w);
    assert!(LogState::decode(&other, &mut Reader(&w.0)).is_err());
    for n in 0..w.0.len() {
        assert!(LogState::decode(&c, &mut Reader(&w.0[..n])).is_err());
    }
}
