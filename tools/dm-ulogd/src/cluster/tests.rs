// SPDX-License-Identifier: GPL-2.0

//! Two and three nodes sharing a log, over the simulated bus: the request
//! stream each kernel would send, and what every node must then agree on;
//! failures, partitions, merges, lost sends, stale state and quorum.

use ulog_proto::wire::RequestType as T;

use super::sim::{settle, Bus, Node, SharedBus, UUID};
use crate::test_util::TempDir;

/// 100 regions of 8 sectors.
const CTR: &str = "800 clustered-core 8";

/// CTR, GET_REGION_SIZE and RESUME, as a kernel activating the mirror;
/// returns the RESUME's sequence number (answered once the node joined).
fn activate(n: &mut Node, ctr: &str) -> u32 {
    assert_eq!(n.construct(ctr), Ok(vec![]));
    assert_eq!(n.ask(T::GetRegionSize, &[]), Ok(vec![8]));
    n.send(T::Resume, &[])
}

fn started(bus: &SharedBus, nodes: &mut [&mut Node], ctr: &str) {
    let seqs: Vec<u32> = nodes.iter_mut().map(|n| activate(n, ctr)).collect();
    settle(bus, nodes);
    for (n, seq) in nodes.iter().zip(seqs) {
        assert_eq!(n.answer(seq), Some(Ok(vec![])), "{} resumed", n.me);
    }
}

/// Marks `regions` and flushes, as dm-raid1 before a write: the FLUSH is
/// answered only once the group has the marks.
fn mark_and_flush(bus: &SharedBus, nodes: &mut [&mut Node], who: usize, regions: &[u64]) {
    assert_eq!(nodes[who].ask(T::MarkRegion, regions), Ok(vec![]));
    let seq = nodes[who].send(T::Flush, &[]);
    assert_eq!(nodes[who].answer(seq), None, "a FLUSH with marks waits");
    settle(bus, nodes);
    assert_eq!(nodes[who].answer(seq), Some(Ok(vec![])));
}

fn clear_and_flush(bus: &SharedBus, nodes: &mut [&mut Node], who: usize, regions: &[u64]) {
    assert_eq!(nodes[who].ask(T::ClearRegion, regions), Ok(vec![]));
    assert_eq!(
        nodes[who].ask(T::Flush, &[]),
        Ok(vec![]),
        "clears never wait"
    );
    settle(bus, nodes);
}

fn sync_count(n: &mut Node) -> u64 {
    n.ask(T::GetSyncCount, &[]).unwrap()[0]
}

fn flag(n: &mut Node, kind: T, region: u64) -> u64 {
    n.ask(kind, &[region]).unwrap()[0]
}

/// Every node recovers what it is handed until no work is left, taking
/// turns, as their kernels would (a recovered region is then cleared, as
/// dm-raid1 does).
fn resync(bus: &SharedBus, nodes: &mut [&mut Node]) -> Vec<u64> {
    let mut done = Vec::new();
    loop {
        let mut any = false;
        for i in 0..nodes.len() {
            let seq = nodes[i].send(T::GetResyncWork, &[]);
            settle(bus, nodes);
            match nodes[i].answer(seq) {
                Some(Ok(w)) if w == [1, w[1]] => {
                    any = true;
                    done.push(w[1]);
                    nodes[i].send_words(T::SetRegionSync, &[w[1], 1]);
                    let me = nodes[i].me;
                    let writing = nodes[i]
                        .shared()
                        .is_some_and(|s| s.log().marked_by(me, w[1]));
                    if !writing {
                        nodes[i].send_words(T::ClearRegion, &[w[1]]);
                    }
                }
                Some(Ok(w)) => assert_eq!(w, [0, 0]),
                // The kernel restarts its scan (it replays CTR, then RESUME).
                Some(Err(libc::ESRCH)) => {
                    any = true;
                    assert_eq!(nodes[i].ask(T::Resume, &[]), Ok(vec![]));
                }
                other => panic!("GET_RESYNC_WORK answered {other:?}"),
            }
        }
        settle(bus, nodes);
        if !any {
            return done;
        }
    }
}

fn same_state(a: &Node, b: &Node) -> bool {
    match (a.shared(), b.shared()) {
        (Some(x), Some(y)) => x.same_as(y),
        _ => false,
    }
}

#[test]
fn two_nodes_reach_sync_together_and_agree() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], CTR);
    let (ca, cb) = (a.store.cluster().unwrap(), b.store.cluster().unwrap());
    assert_eq!(
        ca.counters().fresh_starts + cb.counters().fresh_starts,
        1,
        "one starts the state"
    );
    assert_eq!(
        ca.counters().checkpoints_loaded + cb.counters().checkpoints_loaded,
        1,
        "the other loads it"
    );
    assert_eq!(sync_count(&mut a), 0);
    let mut recovered = resync(&bus, &mut [&mut a, &mut b]);
    recovered.sort_unstable();
    assert_eq!(
        recovered,
        (0..100).collect::<Vec<u64>>(),
        "each region once"
    );
    for n in [&mut a, &mut b] {
        assert_eq!(sync_count(n), 100);
        assert_eq!(n.ask(T::IsRemoteRecovering, &[5]), Ok(vec![0, 100]));
        let seq = n.send(T::StatusInfo, &[]);
        assert_eq!(n.raw(seq), Some(Ok(b"1 clustered-core".to_vec())));
    }
    assert!(same_state(&a, &b));
}

#[test]
fn a_region_is_clean_only_when_no_node_marks_it() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[7]);
    assert_eq!(flag(&mut b, T::IsClean, 7), 0, "b sees a's mark");
    mark_and_flush(&bus, &mut [&mut a, &mut b], 1, &[7]);
    clear_and_flush(&bus, &mut [&mut a, &mut b], 0, &[7]);
    assert_eq!(flag(&mut a, T::IsClean, 7), 0, "b still writes region 7");
    assert_eq!(flag(&mut b, T::IsClean, 7), 0);
    clear_and_flush(&bus, &mut [&mut a, &mut b], 1, &[7]);
    assert_eq!(flag(&mut a, T::IsClean, 7), 1);
    assert_eq!(flag(&mut b, T::IsClean, 7), 1);
    assert_eq!(a.ask(T::MarkRegion, &[100]), Err(libc::EINVAL));
    assert_eq!(a.ask(T::InSync, &[100]), Err(libc::EINVAL));
}

#[test]
fn a_whole_flush_travels_as_one_message() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[1, 2]);
    let before = bus.borrow().delivered;
    // What the module sends for one flush, back to back before waiting.
    assert_eq!(a.ask(T::ClearRegion, &[1, 2]), Ok(vec![]));
    assert_eq!(a.ask(T::MarkRegion, &[3, 4]), Ok(vec![]));
    assert_eq!(a.ask(T::MarkRegion, &[5]), Ok(vec![]));
    let flush = a.send(T::Flush, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(flush), Some(Ok(vec![])));
    assert_eq!(bus.borrow().delivered - before, 1, "one group message");
    let s = b.shared().unwrap().log();
    assert!(!s.marked_by(a.me, 1) && s.marked_by(a.me, 3) && s.marked_by(a.me, 5));
}

#[test]
fn integrated_flush_marks_are_applied() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    let seq = a.send_words(T::Flush, &[20, 21]);
    assert_eq!(a.answer(seq), None);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])));
    assert!(b.shared().unwrap().log().marked_by(a.me, 21));
    assert_eq!(flag(&mut b, T::IsClean, 20), 0);
    assert_eq!(a.ask(T::Flush, &[100]), Err(libc::EINVAL), "checked first");
}

#[test]
fn one_node_recovers_a_region_and_the_other_waits_for_it() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], CTR);
    let seq = a.send(T::GetResyncWork, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(seq), Some(Ok(vec![1, 0])));
    assert_eq!(b.ask(T::IsRemoteRecovering, &[0]), Ok(vec![1, 0]));
    assert_eq!(
        a.ask(T::IsRemoteRecovering, &[0]),
        Ok(vec![0, 0]),
        "its own"
    );
    // Region 50 waits for recovery: b must not write it under a recovery
    // the other node may start; it is recovered next, out of scan order.
    assert_eq!(b.ask(T::IsRemoteRecovering, &[50]), Ok(vec![1, 0]));
    settle(&bus, &mut [&mut a, &mut b]);
    a.send_words(T::SetRegionSync, &[0, 1]);
    assert_eq!(a.ask(T::InSync, &[0]), Ok(vec![1]), "a reads its own write");
    assert_eq!(a.ask(T::GetSyncCount, &[]), Ok(vec![1]));
    let seq = a.send(T::GetResyncWork, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(seq), Some(Ok(vec![1, 50])), "priority first");
    assert_eq!(b.ask(T::IsRemoteRecovering, &[0]), Ok(vec![0, 1]));
    assert_eq!(b.ask(T::InSync, &[0]), Ok(vec![1]));
    assert_eq!(b.ask(T::IsRemoteRecovering, &[50]), Ok(vec![1, 1]));
}

#[test]
fn a_failed_nodes_marked_regions_resync_on_the_survivors() {
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a, &mut b, &mut c], CTR);
    resync(&bus, &mut [&mut a, &mut b, &mut c]);
    mark_and_flush(&bus, &mut [&mut a, &mut b, &mut c], 0, &[10, 11, 12]);
    mark_and_flush(&bus, &mut [&mut a, &mut b, &mut c], 1, &[12, 40]);
    // a's kernel has more marks on the way when its machine dies: they
    // were never answered, so never written.
    assert_eq!(a.ask(T::MarkRegion, &[13]), Ok(vec![]));
    a.send(T::Flush, &[]);
    bus.borrow_mut().fail_node(1);
    settle(&bus, &mut [&mut b, &mut c]);
    let s = b.shared().unwrap();
    assert_eq!(s.members().len(), 2);
    assert_eq!(s.log().sync_count(), 97, "10, 11 and 12 are out of sync");
    assert!(s.log().in_sync(13).unwrap() && s.log().in_sync(40).unwrap());
    assert!(s.log().marked_by(b.me, 12), "b's own mark stays");
    assert!(same_state(&b, &c));
    // The survivor's kernel believes everything in sync and would never
    // ask for resync work: its next request tells it to start over.
    assert_eq!(b.ask(T::InSync, &[10]), Err(libc::ESRCH));
    assert_eq!(b.construct(CTR), Ok(vec![]), "replayed: state kept");
    assert_eq!(b.ask(T::Resume, &[]), Ok(vec![]));
    assert_eq!(b.ask(T::InSync, &[10]), Ok(vec![0]));
    assert_eq!(b.ask(T::GetSyncCount, &[]), Ok(vec![97]));
    assert_eq!(c.ask(T::InSync, &[10]), Err(libc::ESRCH));
    assert_eq!(c.ask(T::Resume, &[]), Ok(vec![]));
    let mut done = resync(&bus, &mut [&mut b, &mut c]);
    done.sort_unstable();
    assert_eq!(done, vec![10, 11, 12]);
    assert_eq!(sync_count(&mut b), 100);
    // The dead node restarts (a new process) and rejoins.
    bus.borrow_mut().revive_node(1);
    bus.borrow_mut().heal();
    let mut a2 = Node::new(1, 101, &bus);
    let seq = activate(&mut a2, CTR);
    settle(&bus, &mut [&mut a2, &mut b, &mut c]);
    assert_eq!(a2.answer(seq), Some(Ok(vec![])));
    assert!(same_state(&a2, &b));
    // Nothing tells a crash from a cut: node 1 may have written 10-12 until
    // now. Back in any form, its old marks resync again.
    assert_eq!(sync_count(&mut a2), 97);
    assert_eq!(b.ask(T::InSync, &[10]), Err(libc::ESRCH), "kicked again");
    b.ask(T::Resume, &[]).unwrap();
    c.ask(T::InSync, &[10]).unwrap_err();
    c.ask(T::Resume, &[]).unwrap();
    let mut done = resync(&bus, &mut [&mut a2, &mut b, &mut c]);
    done.sort_unstable();
    assert_eq!(done, vec![10, 11, 12]);
    assert_eq!(sync_count(&mut a2), 100);
    assert_eq!(flag(&mut a2, T::IsClean, 12), 0, "b still has 12 marked");
    assert_eq!(flag(&mut a2, T::IsClean, 10), 1, "recovered and cleared");
}

#[test]
fn a_joiner_replays_what_happened_while_its_state_was_on_the_way() {
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a, &mut b], CTR);
    let seq = activate(&mut c, CTR);
    // c's join, the round, then traffic before the checkpoint arrives.
    for _ in 0..8 {
        bus.borrow_mut().step();
        for n in [&mut a, &mut b, &mut c] {
            n.pump();
        }
    }
    assert_eq!(a.ask(T::MarkRegion, &[30]), Ok(vec![]));
    let fa = a.send(T::Flush, &[]);
    b.send_words(T::SetRegionSync, &[31, 1]);
    let gb = b.send(T::GetResyncWork, &[]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.answer(seq), Some(Ok(vec![])));
    assert_eq!(a.answer(fa), Some(Ok(vec![])));
    assert_eq!(b.answer(gb), Some(Ok(vec![1, 0])));
    assert!(same_state(&a, &c) && same_state(&b, &c));
    let s = c.shared().unwrap().log();
    assert!(s.marked_by(a.me, 30));
    assert!(!s.in_sync(31).unwrap(), "b was not handed region 31");
    assert_eq!(s.recoverer(0), Some(b.me));
    assert_eq!(c.ask(T::IsRemoteRecovering, &[0]), Ok(vec![1, 0]));
    let mut done = resync(&bus, &mut [&mut a, &mut b, &mut c]);
    done.sort_unstable();
    assert_eq!(done.len(), 100, "0 handed to b again, as it asks");
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(sync_count(n), 100);
    }
}

#[test]
fn joiners_get_the_state_when_the_holder_dies_before_sending_it() {
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a], "800 clustered-core 8 nosync");
    mark_and_flush(&bus, &mut [&mut a], 0, &[5]);
    let sb = activate(&mut b, CTR);
    let sc = activate(&mut c, CTR);
    // Both joins and the round's opening reach everyone; a dies.
    for _ in 0..3 {
        bus.borrow_mut().step();
        for n in [&mut a, &mut b, &mut c] {
            n.pump();
        }
    }
    bus.borrow_mut().fail_node(1);
    settle(&bus, &mut [&mut b, &mut c]);
    assert_eq!(b.answer(sb), Some(Ok(vec![])));
    assert_eq!(c.answer(sc), Some(Ok(vec![])));
    assert!(same_state(&b, &c));
    // Nobody holds the state: it starts from the table, never from a copy.
    assert_eq!(sync_count(&mut c), 0, "CTR has no nosync: all out of sync");
}

#[test]
fn an_empty_group_starts_from_the_table_not_from_a_stale_copy() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], CTR);
    resync(&bus, &mut [&mut a, &mut b]);
    // a leaves with everything in sync...
    a.send(T::Postsuspend, &[]);
    a.send(T::Dtr, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    // ...b goes on: a failure puts region 3 out of sync, then b leaves too.
    b.send_words(T::SetRegionSync, &[3, 0]);
    settle(&bus, &mut [&mut a, &mut b]);
    b.send(T::Dtr, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    // a comes back to an empty group: what it knew is stale (region 3).
    let seq = activate(&mut a, CTR);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])));
    assert_eq!(flag(&mut a, T::InSync, 3), 0);
    assert_eq!(sync_count(&mut a), 0, "the table's state: nothing in sync");
}

#[test]
fn different_tables_do_not_join() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a], CTR);
    let seq = activate(&mut b, "1600 clustered-core 8");
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(b.answer(seq), Some(Err(libc::EINVAL)));
    assert_eq!(a.shared().unwrap().members().len(), 1, "b left again");
}

#[test]
fn a_node_keeps_its_state_and_place_across_suspend_and_reload() {
    let bus = Bus::new(2);
    let mut a = Node::new(1, 100, &bus);
    started(&bus, &mut [&mut a], CTR);
    resync(&bus, &mut [&mut a]);
    mark_and_flush(&bus, &mut [&mut a], 0, &[3]);
    // A clear still collected when the log suspends counts too.
    assert_eq!(a.ask(T::ClearRegion, &[3]), Ok(vec![]));
    // A table reload: the new instance is constructed before the old one
    // suspends, and resumes after.
    let mut data = CTR.as_bytes().to_vec();
    data.push(0);
    let new = 7;
    a.send_for(new, T::Ctr, &data);
    a.send(T::Presuspend, &[]);
    a.send(T::Postsuspend, &[]);
    settle(&bus, &mut [&mut a]);
    let seq = a.send_for(new, T::Resume, &[]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])), "still in the group");
    let seq = a.send_for(new, T::GetSyncCount, &[]);
    assert_eq!(
        a.answer(seq),
        Some(Ok(vec![100])),
        "no resync after a reload"
    );
    assert_eq!(a.shared().unwrap().log().is_clean(3), Ok(true));
    a.send(T::Dtr, &[]);
    assert_eq!(a.store.len(), 1);
    assert!(a.store.cluster().unwrap().group(UUID).unwrap().in_group());
}

#[test]
fn requests_for_unknown_logs_and_bad_payloads() {
    let bus = Bus::new(2);
    let mut a = Node::new(1, 100, &bus);
    assert_eq!(a.ask(T::GetSyncCount, &[]), Err(libc::ESRCH));
    assert_eq!(a.construct("800 clustered-core 7"), Err(libc::EINVAL));
    assert_eq!(a.construct(CTR), Ok(vec![]));
    assert_eq!(a.construct("800 clustered-core 16"), Err(libc::EEXIST));
    assert_eq!(a.ask(T::SetRegionSync, &[1]), Err(libc::EINVAL));
    assert_eq!(a.ask(T::GetResyncWork, &[]), Ok(vec![0, 0]), "not resumed");
    let seq = a.send(T::StatusTable, &[]);
    assert_eq!(
        a.raw(seq),
        Some(Ok(b"clustered-core 8  ".to_vec())),
        "as cmirrord"
    );
}

#[test]
fn presuspend_stops_recovery_so_suspending_every_node_completes() {
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a, &mut b, &mut c], CTR);
    let seq = a.send(T::GetResyncWork, &[]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(a.answer(seq), Some(Ok(vec![1, 0])));
    // dm-raid1 would hold writes to regions another node recovers, or may
    // recover: suspending waits for those writes.
    assert_eq!(b.ask(T::IsRemoteRecovering, &[0]), Ok(vec![1, 0]));
    assert_eq!(c.ask(T::IsRemoteRecovering, &[9]), Ok(vec![1, 0]));
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(n.ask(T::Presuspend, &[]), Ok(vec![]));
        assert_eq!(
            n.ask(T::IsRemoteRecovering, &[0]),
            Ok(vec![0, 100]),
            "recovery halted: nothing waits"
        );
        assert_eq!(n.ask(T::GetResyncWork, &[]), Ok(vec![0, 0]));
    }
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(n.ask(T::Postsuspend, &[]), Ok(vec![]));
    }
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(n.ask(T::Resume, &[]), Ok(vec![]), "still in the group");
    }
    assert_eq!(b.ask(T::IsRemoteRecovering, &[0]), Ok(vec![1, 0]));
}

#[test]
fn the_minority_blocks_the_majority_goes_on_and_the_merge_resyncs_what_both_wrote() {
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(
        &bus,
        &mut [&mut a, &mut b, &mut c],
        "800 clustered-core 8 nosync",
    );
    mark_and_flush(&bus, &mut [&mut a, &mut b, &mut c], 2, &[50]);
    bus.borrow_mut().partition(&[&[1, 2], &[3]]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    // The majority goes on: c's marked region 50 resyncs there.
    assert_eq!(a.ask(T::InSync, &[1]), Err(libc::ESRCH), "kicked");
    a.ask(T::Resume, &[]).unwrap();
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[60]);
    assert!(!a.shared().unwrap().log().in_sync(50).unwrap());
    // The minority blocks: its kernel's next request is told to replay its
    // RESUME, which waits for quorum, and with it the mirror's I/O there.
    assert_eq!(c.ask(T::InSync, &[1]), Err(libc::ESRCH));
    assert_eq!(c.construct("800 clustered-core 8 nosync"), Ok(vec![]));
    let rc = c.send(T::Resume, &[]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.answer(rc), None, "no quorum: the kernel waits");
    // A FLUSH with new marks waits too; it is not failed.
    assert_eq!(c.ask(T::MarkRegion, &[70]), Ok(vec![]));
    let fc = c.send(T::Flush, &[]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.answer(fc), None, "no quorum: the kernel waits");
    assert_eq!(c.ask(T::GetResyncWork, &[]), Ok(vec![0, 0]));
    assert_eq!(
        c.ask(T::IsRemoteRecovering, &[80]),
        Ok(vec![1, 100]),
        "writes above the hint wait"
    );
    let stats = c.store.cluster().unwrap().group(UUID).unwrap().blocked_by();
    assert_eq!(stats, Some("no quorum"));
    // The partition heals: one history wins, the other's writes resync.
    bus.borrow_mut().heal();
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.answer(rc), Some(Ok(vec![])), "answered after the merge");
    assert_eq!(c.answer(fc), Some(Ok(vec![])));
    assert!(same_state(&a, &c) && same_state(&b, &c));
    let s = c.shared().unwrap().log();
    assert!(s.marked_by(c.me, 70), "its marks came along");
    assert!(s.marked_by(c.me, 50) && s.marked_by(a.me, 60));
    for r in [50, 60] {
        assert!(
            !s.in_sync(r).unwrap(),
            "region {r} may differ between the legs"
        );
    }
    assert!(s.in_sync(70).unwrap(), "never written: c's FLUSH waited");
    assert_eq!(s.sync_count(), 98);
    assert_eq!(
        c.store.cluster().unwrap().counters().merges + a.store.cluster().unwrap().counters().merges,
        1
    );
}

#[test]
fn a_failed_send_fails_its_flush_with_eagain_and_the_resent_flush_carries_the_marks() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    assert_eq!(a.ask(T::MarkRegion, &[9]), Ok(vec![]));
    bus.borrow_mut().failing.insert(a.me, 1);
    let f1 = a.send(T::Flush, &[]);
    assert_eq!(a.answer(f1), Some(Err(libc::EAGAIN)), "the kernel resends");
    settle(&bus, &mut [&mut a, &mut b]);
    assert!(!b.shared().unwrap().log().marked_by(a.me, 9));
    // Replies are matched by batch, never by position: the next FLUSH's
    // batch answers the next FLUSH.
    let f2 = a.send(T::Flush, &[]);
    assert_eq!(a.answer(f2), None, "the marks go out again");
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(f2), Some(Ok(vec![])));
    assert!(b.shared().unwrap().log().marked_by(a.me, 9));
}

#[test]
fn a_resent_flush_waits_for_the_marks_still_on_their_way() {
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    assert_eq!(a.ask(T::MarkRegion, &[9]), Ok(vec![]));
    let f1 = a.send(T::Flush, &[]);
    // The kernel gave up on f1 (a timeout) and sends the FLUSH again: no
    // new marks, but the old ones are not delivered yet.
    let f2 = a.send(T::Flush, &[]);
    assert_eq!(a.answer(f2), None, "never answered before its marks");
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(f1), Some(Ok(vec![])));
    assert_eq!(a.answer(f2), Some(Ok(vec![])));
    let f3 = a.send(T::Flush, &[]);
    assert_eq!(a.answer(f3), Some(Ok(vec![])), "nothing pending: at once");
}

#[test]
fn a_stale_checkpoint_is_detected_and_ignored() {
    use super::wire::Message;
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a, &mut b], CTR);
    let old_checkpoint = bus
        .borrow()
        .history
        .iter()
        .find(|(_, _, m)| matches!(Message::decode(m), Ok(Message::Checkpoint(_))))
        .cloned()
        .expect("b got a checkpoint");
    resync(&bus, &mut [&mut a, &mut b]);
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[5]);
    // b leaves and comes back (the same process: the same member id); the
    // old checkpoint, which names b, arrives again while b waits for the
    // new one. Loading it would lose region 5's mark and every resync.
    b.send(T::Dtr, &[]);
    settle(&bus, &mut [&mut a, &mut b]);
    let sb = activate(&mut b, CTR);
    // Once b waits for the round's checkpoint, the old one comes first.
    let awaits = |b: &Node| {
        b.store
            .cluster()
            .and_then(|c| c.group(super::sim::UUID))
            .is_some_and(|g| g.awaits_checkpoint())
    };
    while !awaits(&b) {
        assert!(bus.borrow_mut().step(), "b never waits for a checkpoint");
        a.pump();
        b.pump();
    }
    let (group, from, bytes) = old_checkpoint;
    bus.borrow_mut().inject(&group, from, bytes);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(b.answer(sb), Some(Ok(vec![])));
    assert!(same_state(&a, &b), "b took the current state");
    assert!(b.shared().unwrap().log().marked_by(a.me, 5));
    assert_eq!(sync_count(&mut b), 100);
    let stale = b.store.cluster().unwrap().counters().stale_checkpoints;
    assert_eq!(stale, 1, "the old checkpoint was recognised as stale");
}

#[test]
fn quorum_news_before_or_after_the_ring_change_never_lets_the_minority_flush() {
    use super::transport::Transport as _;
    for quorum_first in [true, false] {
        let bus = Bus::shared();
        let (mut a, mut b, mut c) = (
            Node::new(1, 100, &bus),
            Node::new(2, 200, &bus),
            Node::new(3, 300, &bus),
        );
        started(
            &bus,
            &mut [&mut a, &mut b, &mut c],
            "800 clustered-core 8 nosync",
        );
        bus.borrow_mut().partition(&[&[1, 2], &[3]]);
        // c has not heard of the partition yet: its FLUSH goes out, in the
        // new ring, where c has no quorum. Whichever news c learns first,
        // the FLUSH stays unanswered.
        assert_eq!(c.ask(T::MarkRegion, &[4]), Ok(vec![]));
        let fc = c.send(T::Flush, &[]);
        assert_eq!(c.answer(fc), None);
        bus.borrow_mut().step_all();
        let mut events = Vec::new();
        let mut quorum = Vec::new();
        c.transport
            .dispatch(None, &mut events, &mut quorum)
            .unwrap();
        if quorum_first {
            for q in quorum.drain(..) {
                c.store.quorum_event(q, &c.replies);
            }
        }
        for (g, e) in events {
            c.store.group_event(&g, e, &c.replies);
            c.store.end_of_burst(&c.replies);
            assert_eq!(c.answer(fc), None, "quorum first: {quorum_first}");
        }
        for q in quorum {
            c.store.quorum_event(q, &c.replies);
        }
        settle(&bus, &mut [&mut a, &mut b, &mut c]);
        assert_eq!(c.answer(fc), None);
        bus.borrow_mut().heal();
        settle(&bus, &mut [&mut a, &mut b, &mut c]);
        assert_eq!(c.answer(fc), Some(Ok(vec![])), "after the merge");
        assert!(same_state(&a, &c));
    }
}

#[test]
fn two_node_split_brain_both_sides_go_on_and_the_merge_resyncs_both() {
    let bus = Bus::new(2);
    bus.borrow_mut().two_node = true;
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    bus.borrow_mut().partition(&[&[1], &[2]]);
    settle(&bus, &mut [&mut a, &mut b]);
    let _ = a.send(T::GetSyncCount, &[]);
    let _ = b.send(T::GetSyncCount, &[]);
    mark_and_flush(&bus, &mut [&mut a], 0, &[1]);
    mark_and_flush(&bus, &mut [&mut b], 0, &[2]);
    bus.borrow_mut().heal();
    settle(&bus, &mut [&mut a, &mut b]);
    assert!(same_state(&a, &b));
    let s = a.shared().unwrap().log();
    assert!(!s.in_sync(1).unwrap() && !s.in_sync(2).unwrap());
}

/// A clustered-disk log on a shared file: `regions` clean bits as the
/// device holds them (bit set = clean).
fn disk_clean(path: &std::path::Path, regions: u64) -> Vec<bool> {
    let img = std::fs::read(path).unwrap();
    (0..regions)
        .map(|r| img[1024 + (r / 8) as usize] & (1 << (r % 8)) != 0)
        .collect()
}

#[test]
fn clustered_disk_marks_are_on_the_device_before_the_flush_is_answered() {
    let tmp = TempDir::new();
    let dev = tmp.path().join("log");
    std::fs::write(&dev, vec![0u8; 1 << 16]).unwrap();
    let ctr = format!("800 clustered-disk {} 8 nosync", dev.display());
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], &ctr);
    assert!(
        disk_clean(&dev, 100).iter().all(|&c| c),
        "nosync: all clean"
    );
    // b's mark: a (the lowest holder) writes it, then b's FLUSH is answered.
    assert_eq!(b.ask(T::MarkRegion, &[33]), Ok(vec![]));
    let f = b.send(T::Flush, &[]);
    // Looked at after every event either node takes in, in both orders.
    let mut answered_before_written = false;
    for i in 0..1000 {
        bus.borrow_mut().step();
        for first_b in [i % 2 == 0, i % 2 != 0] {
            if first_b {
                b.pump();
            } else {
                a.pump();
            }
            let written = !disk_clean(&dev, 100)[33];
            answered_before_written |= b.answer(f).is_some() && !written;
        }
    }
    assert!(!answered_before_written);
    assert_eq!(b.answer(f), Some(Ok(vec![])));
    assert!(!disk_clean(&dev, 100)[33]);
    let seq = b.send(T::StatusInfo, &[]);
    assert_eq!(b.raw(seq), Some(Ok(b"3 clustered-disk 0:0 A".to_vec())));
}

#[test]
fn after_every_node_dies_the_first_back_resyncs_exactly_the_marked_regions() {
    let tmp = TempDir::new();
    let dev = tmp.path().join("log");
    std::fs::write(&dev, vec![0u8; 1 << 16]).unwrap();
    let ctr = format!("800 clustered-disk {} 8", dev.display());
    let bus = Bus::new(2);
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], &ctr);
    resync(&bus, &mut [&mut a, &mut b]);
    settle(&bus, &mut [&mut a, &mut b]);
    assert!(disk_clean(&dev, 100).iter().all(|&c| c));
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[3, 4]);
    mark_and_flush(&bus, &mut [&mut a, &mut b], 1, &[4, 90]);
    clear_and_flush(&bus, &mut [&mut a, &mut b], 0, &[3]);
    // Power cut.
    bus.borrow_mut().fail_node(1);
    bus.borrow_mut().fail_node(2);
    drop((a, b));
    bus.borrow_mut().revive_node(1);
    bus.borrow_mut().revive_node(2);
    bus.borrow_mut().heal();
    let mut a = Node::new(1, 101, &bus);
    let seq = activate(&mut a, &ctr);
    settle(&bus, &mut [&mut a]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])));
    assert_eq!(sync_count(&mut a), 98, "regions 4 and 90 resync");
    for r in [4, 90] {
        assert_eq!(flag(&mut a, T::InSync, r), 0);
    }
    assert_eq!(flag(&mut a, T::InSync, 3), 1, "marked, written, cleared");
}

#[test]
fn a_copy_kept_without_quorum_is_not_trusted_once_the_quorate_copies_are_gone() {
    const NOSYNC: &str = "800 clustered-core 8 nosync";
    let bus = Bus::shared();
    let (mut a, mut b, mut c) = (
        Node::new(1, 100, &bus),
        Node::new(2, 200, &bus),
        Node::new(3, 300, &bus),
    );
    started(&bus, &mut [&mut a, &mut b, &mut c], NOSYNC);
    // a's kernel writes region 7 through all that follows.
    mark_and_flush(&bus, &mut [&mut a, &mut b, &mut c], 0, &[7]);
    bus.borrow_mut().partition(&[&[1], &[2, 3]]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    // The quorate side writes region 5; a, cut off, never hears of it.
    assert_eq!(b.ask(T::InSync, &[1]), Err(libc::ESRCH), "a's region 7");
    b.ask(T::Resume, &[]).unwrap();
    mark_and_flush(&bus, &mut [&mut b, &mut c], 0, &[5]);
    assert!(a.shared().unwrap().log().in_sync(5).unwrap());
    // Both die before the partition heals; they boot with nothing.
    bus.borrow_mut().fail_node(2);
    bus.borrow_mut().fail_node(3);
    drop((b, c));
    bus.borrow_mut().revive_node(2);
    bus.borrow_mut().revive_node(3);
    bus.borrow_mut().heal();
    let (mut b, mut c) = (Node::new(2, 201, &bus), Node::new(3, 301, &bus));
    let (sb, sc) = (activate(&mut b, NOSYNC), activate(&mut c, NOSYNC));
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(b.answer(sb), Some(Ok(vec![])));
    assert_eq!(c.answer(sc), Some(Ok(vec![])));
    // a's copy went through a time without quorum: it may lack region 5's
    // mark, and no trusted copy is left. The state starts again, every
    // region out of sync (the table's nosync no longer holds).
    if a.ask(T::InSync, &[1]) == Err(libc::ESRCH) {
        assert_eq!(a.construct(NOSYNC), Ok(vec![]));
        let ra = a.send(T::Resume, &[]);
        settle(&bus, &mut [&mut a, &mut b, &mut c]);
        assert_eq!(a.answer(ra), Some(Ok(vec![])));
    }
    assert!(same_state(&a, &b) && same_state(&b, &c));
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(flag(n, T::InSync, 5), 0, "{}: region 5 resyncs", n.me);
        assert_eq!(sync_count(n), 0);
    }
    // Its copy is not trusted, but a's kernel still has region 7 marked:
    // the new state has it so (no recovery under a's writes).
    assert!(b.shared().unwrap().log().marked_by(a.me, 7));
}
