// SPDX-License-Identifier: GPL-2.0

//! Two and three nodes sharing a log, over the simulated bus: the request
//! stream each kernel would send, and what every node must then agree on.

use ulog_proto::wire::RequestType as T;

use super::sim::{settle, Bus, Node, SharedBus};

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
/// turns, as their kernels would.
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
                }
                Some(Ok(w)) => assert_eq!(w, [0, 0]),
                other => panic!("GET_RESYNC_WORK answered {other:?}"),
            }
        }
        settle(bus, nodes);
        if !any {
            return done;
        }
    }
}

#[test]
fn two_nodes_reach_sync_together_and_agree() {
    let bus = Bus::shared();
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], CTR);
    let c = a.store.counters();
    assert_eq!(
        (c.takeovers, c.checkpoints_sent),
        (1, 1),
        "a holds, b is sent"
    );
    assert_eq!(b.store.counters().checkpoints_loaded, 1);
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
    assert_eq!(
        a.store.log_in_group(super::sim::UUID).unwrap().replica(),
        b.store.log_in_group(super::sim::UUID).unwrap().replica()
    );
}

fn replica_of(n: &Node) -> super::replica::Replica {
    n.store
        .log_in_group(super::sim::UUID)
        .expect("in the group")
        .replica()
        .clone()
}

#[test]
fn a_region_is_clean_only_when_no_node_marks_it() {
    let bus = Bus::shared();
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
    let bus = Bus::shared();
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
    let r = replica_of(&b);
    assert!(!r.marked_by(a.me, 1) && r.marked_by(a.me, 3) && r.marked_by(a.me, 5));
    let c = a.store.counters();
    assert_eq!(
        (c.flushes, c.rounds),
        (2, 2),
        "one round per flush with marks"
    );
}

#[test]
fn integrated_flush_marks_are_applied() {
    let bus = Bus::shared();
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], "800 clustered-core 8 nosync");
    let seq = a.send_words(T::Flush, &[20, 21]);
    assert_eq!(a.answer(seq), None);
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])));
    assert!(replica_of(&b).marked_by(a.me, 21));
    assert_eq!(flag(&mut b, T::IsClean, 20), 0);
    assert_eq!(a.ask(T::Flush, &[100]), Err(libc::EINVAL), "checked first");
}

#[test]
fn one_node_recovers_a_region_and_the_other_waits_for_it() {
    let bus = Bus::shared();
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
fn a_failed_nodes_marked_regions_resync_on_the_survivor() {
    let bus = Bus::shared();
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a, &mut b], CTR);
    resync(&bus, &mut [&mut a, &mut b]);
    mark_and_flush(&bus, &mut [&mut a, &mut b], 0, &[10, 11, 12]);
    mark_and_flush(&bus, &mut [&mut a, &mut b], 1, &[12, 40]);
    // a's kernel has more marks on the way when its machine dies: they
    // were never answered, so never written.
    assert_eq!(a.ask(T::MarkRegion, &[13]), Ok(vec![]));
    a.send(T::Flush, &[]);
    bus.borrow_mut().fail(a.me);
    settle(&bus, &mut [&mut b]);
    let r = replica_of(&b);
    assert_eq!(r.members().len(), 1);
    assert_eq!(r.sync_count(), 97, "10, 11 and 12 are out of sync");
    assert!(r.in_sync(13) && r.in_sync(40));
    assert!(r.marked_by(b.me, 12), "b's own mark stays");
    // The survivor's kernel believes everything in sync and would never
    // ask for resync work: its next request tells it to start over.
    assert_eq!(b.ask(T::InSync, &[10]), Err(libc::ESRCH));
    assert_eq!(b.construct(CTR), Ok(vec![]), "replayed: state kept");
    assert_eq!(b.ask(T::Resume, &[]), Ok(vec![]));
    assert_eq!(b.ask(T::InSync, &[10]), Ok(vec![0]));
    assert_eq!(b.ask(T::GetSyncCount, &[]), Ok(vec![97]));
    assert_eq!(
        b.ask(T::IsRemoteRecovering, &[10]),
        Ok(vec![0, 10]),
        "alone"
    );
    assert_eq!(resync(&bus, &mut [&mut b]), vec![10, 11, 12]);
    assert_eq!(sync_count(&mut b), 100);
    // The dead node restarts (a new process) and rejoins.
    let mut a2 = Node::new(1, 101, &bus);
    let seq = activate(&mut a2, CTR);
    settle(&bus, &mut [&mut a2, &mut b]);
    assert_eq!(a2.answer(seq), Some(Ok(vec![])));
    assert_eq!(replica_of(&a2), replica_of(&b));
    assert_eq!(sync_count(&mut a2), 100);
    assert_eq!(flag(&mut a2, T::IsClean, 12), 0, "b still has 12 marked");
    assert_eq!(flag(&mut a2, T::IsClean, 10), 1);
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
    // Traffic queued behind c's join, before its checkpoint.
    assert_eq!(a.ask(T::MarkRegion, &[30]), Ok(vec![]));
    let fa = a.send(T::Flush, &[]);
    b.send_words(T::SetRegionSync, &[31, 1]);
    let gb = b.send(T::GetResyncWork, &[]);
    settle(&bus, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.answer(seq), Some(Ok(vec![])));
    assert_eq!(a.answer(fa), Some(Ok(vec![])));
    assert_eq!(b.answer(gb), Some(Ok(vec![1, 0])));
    let (ra, rc) = (replica_of(&a), replica_of(&c));
    assert_eq!(ra, rc);
    assert!(rc.marked_by(a.me, 30) && rc.in_sync(31));
    assert_eq!(rc.recoverer(0), Some(b.me));
    assert_eq!(c.ask(T::IsRemoteRecovering, &[0]), Ok(vec![1, 0]));
    // All three share the rest of the resync.
    let mut done = resync(&bus, &mut [&mut a, &mut b, &mut c]);
    done.sort_unstable();
    assert_eq!(
        done.len(),
        99,
        "all but 31; 0 handed to b again, as it asks"
    );
    for n in [&mut a, &mut b, &mut c] {
        assert_eq!(sync_count(n), 100);
    }
}

#[test]
fn a_joiner_takes_over_when_the_holder_dies_before_sending_the_state() {
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
    // Both joins reach everyone; a queues its checkpoint and dies.
    bus.borrow_mut().step();
    bus.borrow_mut().step();
    a.pump();
    assert_eq!(a.store.counters().checkpoints_sent, 2);
    bus.borrow_mut().fail(a.me);
    settle(&bus, &mut [&mut b, &mut c]);
    assert_eq!(b.answer(sb), Some(Ok(vec![])));
    assert_eq!(c.answer(sc), Some(Ok(vec![])));
    assert_eq!(b.store.counters().takeovers, 1, "b joined first: it holds");
    assert_eq!(c.store.counters().checkpoints_loaded, 1, "c gets b's state");
    assert_eq!(replica_of(&b), replica_of(&c));
    // b started from its own table (nosync ignored: 'CTR' has none).
    assert_eq!(sync_count(&mut c), 0);
}

#[test]
fn different_tables_do_not_join() {
    let bus = Bus::shared();
    let (mut a, mut b) = (Node::new(1, 100, &bus), Node::new(2, 200, &bus));
    started(&bus, &mut [&mut a], CTR);
    let seq = activate(&mut b, "1600 clustered-core 8");
    settle(&bus, &mut [&mut a, &mut b]);
    assert_eq!(b.answer(seq), Some(Err(libc::EINVAL)));
    assert_eq!(replica_of(&a).members().len(), 1, "b left again");
}

#[test]
fn a_lone_node_keeps_its_state_across_suspend_and_reload() {
    let bus = Bus::shared();
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
    settle(&bus, &mut [&mut a]);
    assert_eq!(a.answer(seq), Some(Ok(vec![])));
    let seq = a.send_for(new, T::GetSyncCount, &[]);
    assert_eq!(
        a.answer(seq),
        Some(Ok(vec![100])),
        "no resync after a reload"
    );
    a.send(T::Dtr, &[]);
    assert_eq!(a.store.len(), 1);
}

#[test]
fn requests_for_unknown_logs_and_bad_payloads() {
    let bus = Bus::shared();
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
