// SPDX-License-Identifier: GPL-2.0

//! The `userspace` dirty log: each operation is forwarded to a log server in
//! userspace, through the transfer layer.
//!
//! Marks wait in a per-log bitmap until a flush sends them: recording one
//! never allocates, so `mark_region` (called under the region hash's
//! read lock) neither sleeps nor fails, and a mark whose flush fails is put
//! back, not lost. Clears wait in a queue of mempool nodes and may be
//! dropped under memory pressure, which only costs a resync. A flush sends
//! all its requests at once (see `flush_plan.rs` for their order and
//! `flush_send.rs` for how they go out); a flush of clears alone sends no
//! FLUSH and leaves a lazy one for 3 s later (`lazy_flush.rs`). A request
//! made while no server listens waits for one (`replay.rs`).

use crate::compat::{cstr_bytes, new_spinlock_irq, SpinLockIrq, EPROTO};
use crate::dirty_log::{CtrContext, DirtyLog, Log, StatusType, StatusWriter};
use crate::flush_plan::{FlushPlan, FromIter, Stepwise};
use crate::flush_send::{self, GroupFailure, GroupLink, GroupWindow};
use crate::geometry::Geometry;
use crate::hints::{RecoveryHints, RemoteRecovering};
use crate::in_sync_memo::InSyncMemo;
use crate::lazy_flush::{Deferred, LazyFlush};
use crate::luid::Luids;
use crate::mempool::PooledQueue;
use crate::ratelimit::Ratelimit;
use crate::region_set::{words_for, RegionSet};
use crate::replay::{self, Event};
use crate::table_args::{ctr_server_args, write_printable, write_table_line, TableArgs};
use crate::time::{jiffies, msecs_to_jiffies, msleep};
use crate::transfer::{Channel, Lane, LogId, Transfer, MAX_REPLY_CAPACITY};
use crate::wire::{
    payload_i64, payload_u64, put_words, RequestType, MAX_DEVICE_NAME, MAX_GROUP_REGIONS,
    MAX_REQUEST_PAYLOAD,
};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{
    alloc::KVVec,
    new_spinlock,
    prelude::*,
    str::CStr,
    sync::{Arc, SpinLock},
};

/// The log type name, as tables and status lines spell it.
const TYPE: &str = "userspace";

/// [`TYPE`] for device-mapper, which registers it.
pub(crate) const TYPE_NAME: &CStr = kernel::c_str!("userspace");

/// Delay of the lazy FLUSH that commits clears sent without one.
const LAZY_FLUSH_MS: u32 = 3000;

/// Pause between attempts to reach a vanished server.
const RECONNECT_MS: u32 = 2000;

/// Minimum time between two IS_REMOTE_RECOVERING queries of a log (HZ/4).
const REMOTE_RECOVERING_MS: u32 = 250;

/// Clear nodes each log keeps in reserve.
const CLEAR_RESERVE: i32 = MAX_GROUP_REGIONS as i32;

/// Longest status line taken from a server.
const MAX_STATUS: usize = MAX_REPLY_CAPACITY;

/// First and longest pause between attempts at a question that must be
/// answered (see [`UserspaceLog::until_answered`]).
const ASK_AGAIN_MIN_MS: u32 = 100;
const ASK_AGAIN_MAX_MS: u32 = 5000;

/// What every userspace log shares: the transfer state, and the source of
/// local unique ids.
pub(crate) struct Shared {
    transfer: Arc<Transfer>,
    luids: Luids,
}

impl Shared {
    /// Shared state over `transfer`, with local ids counting up from `salt`.
    pub(crate) fn new(transfer: Arc<Transfer>, salt: u64) -> Self {
        Self {
            transfer,
            luids: Luids::new(salt),
        }
    }
}

type Bitmap = RegionSet<KVVec<u64>>;

/// The marks of a log: waiting for the next flush, and being flushed.
struct Marks {
    pending: Bitmap,
    in_flight: Bitmap,
}

impl Marks {
    /// Empty marks for `count` regions.
    fn new(count: u64) -> Result<Self> {
        Ok(Self {
            pending: bitmap(count)?,
            in_flight: bitmap(count)?,
        })
    }
}

fn bitmap(count: u64) -> Result<Bitmap> {
    let (main, summary) = words_for(count).ok_or(ENOMEM)?;
    // A server's region size can ask for more than kvmalloc allows: fail
    // with ENOMEM and our own message, not a warning.
    let flags = GFP_KERNEL | __GFP_NOWARN;
    RegionSet::new(
        count,
        KVVec::from_elem(0, main, flags)?,
        KVVec::from_elem(0, summary, flags)?,
    )
    .ok_or(EINVAL)
}

/// What a log did, reported when it is destroyed.
#[derive(Default)]
struct LogStats {
    /// Clears dropped for want of memory.
    dropped_clears: AtomicU64,
    /// Flushes that sent requests, and the round trips they waited for.
    flushes: AtomicU64,
    flush_round_trips: AtomicU64,
    /// Questions asked again after the server refused them.
    asked_again: AtomicU64,
}

/// A `userspace` dirty log.
#[pin_data]
pub(crate) struct UserspaceLog {
    #[pin]
    channel: Channel,
    /// Number of table arguments, repeated by status TABLE.
    argc: usize,
    integrated_flush: bool,
    /// The CTR payload, `"<sectors> <server args>"` (no NUL).
    ctr: KVec<u8>,
    region_size: AtomicU32,
    region_count: AtomicU64,
    #[pin]
    marks: SpinLockIrq<Marks>,
    #[pin]
    clears: PooledQueue<u64>,
    hints: RecoveryHints,
    /// IN_SYNC answers of the mirror thread's current pass.
    #[pin]
    in_sync_memo: SpinLock<InSyncMemo>,
    /// What the log did, for its destruction message.
    stats: LogStats,
    /// The server's last sync count, shown when it cannot be asked.
    last_sync_count: AtomicU64,
    /// Whether the lazy FLUSH has work; changed with the lane held.
    lazy_flush: LazyFlush,
    noisy: Ratelimit,
}

impl UserspaceLog {
    fn region_count(&self) -> u64 {
        self.region_count.load(Ordering::Relaxed)
    }

    /// Sends a request; while no server listens, waits for one and replays
    /// CTR and RESUME to it first, as the C module does.
    fn do_request(
        &self,
        lane: &mut Lane,
        kind: RequestType,
        data: &[u8],
        reply: &mut [u8],
    ) -> Result<usize> {
        replay::request(&mut LaneLink { log: self, lane }, kind, data, reply)
    }

    /// Asks a question about `region` whose answer is an `i64` 0 or 1 (the
    /// transfer layer takes no other).
    fn ask_flag(&self, kind: RequestType, region: u64) -> Result<bool> {
        let mut reply = [0u8; 8];
        let mut lane = self.channel.lane();
        self.do_request(&mut lane, kind, &region.to_ne_bytes(), &mut reply)?;
        Ok(payload_i64(&reply, 0) == Some(1))
    }

    /// Makes request `kind` about `region` through `ask` until the server
    /// grants it, pausing longer after each refusal. For the two questions
    /// whose failure dm-raid1 cannot take without losing redundancy: an
    /// IN_SYNC it cannot get sends a write to the default leg only, and a
    /// SET_REGION_SYNC to 0 it cannot make leaves a region that missed a
    /// write counted in sync. Writes wait instead, as they do while no
    /// server answers at all.
    fn until_answered<T>(
        &self,
        kind: RequestType,
        region: u64,
        mut ask: impl FnMut() -> Result<T>,
    ) -> T {
        let mut pause = ASK_AGAIN_MIN_MS;
        loop {
            match ask() {
                Ok(answer) => return answer,
                Err(e) => {
                    self.stats.asked_again.fetch_add(1, Ordering::Relaxed);
                    if self.noisy.allow() {
                        pr_err!(
                            "[{}] {} of region {} failed: {:?}; asking again in {} ms (the mirror waits)\n",
                            self.channel.id().short(),
                            kind.name(),
                            region,
                            e,
                            pause
                        );
                    }
                    msleep(pause);
                    pause = (pause * 2).min(ASK_AGAIN_MAX_MS);
                }
            }
        }
    }

    /// The second half of `start`, after the server accepted CTR: anything
    /// failing here is undone with DTR by the caller.
    fn configure(
        &self,
        log: &Log<Self>,
        ctr: &CtrContext<'_>,
        lane: &mut Lane,
        dev: &[u8],
    ) -> Result {
        let id = self.channel.id().short();
        let mut size = [0u8; 8];
        self.channel
            .request(lane, RequestType::GetRegionSize, &[], &mut size)
            .inspect_err(|e| {
                pr_err!("[{}] failed to get region size of dirty log: {:?}\n", id, e)
            })?;
        let region_size = u64::from_ne_bytes(size);
        let geometry = Geometry::new(log.target_len(), region_size).map_err(|e| {
            pr_err!("[{}] {}\n", id, e);
            EINVAL
        })?;
        if !dev.is_empty() {
            // The transfer layer checked the NUL.
            let name = CStr::from_bytes_with_nul(dev).map_err(|_| EPROTO())?;
            ctr.hold_device(name).inspect_err(|_| {
                pr_err!("[{}] failed to register {} with device-mapper\n", id, name)
            })?;
        }
        // Held device or not, a failure from here on is undone by the log's
        // drop, which puts the device (the C module leaked it).
        let marks = Marks::new(geometry.region_count).inspect_err(|_| {
            pr_err!("[{}] no memory for {} regions\n", id, geometry.region_count)
        })?;
        self.region_size
            .store(geometry.region_size, Ordering::Relaxed);
        self.region_count
            .store(geometry.region_count, Ordering::Relaxed);
        self.channel.set_region_count(geometry.region_count);
        // The empty bitmaps replaced own no memory: dropping them under the
        // spinlock frees nothing.
        *self.marks.lock() = marks;
        Ok(())
    }
}

/// A log's requests through its held lane: how flushes and replays reach
/// the server.
struct LaneLink<'a> {
    log: &'a UserspaceLog,
    lane: &'a mut Lane,
}

impl replay::Server for LaneLink<'_> {
    type Error = Error;

    fn request(&mut self, kind: RequestType, data: &[u8], reply: &mut [u8]) -> Result<usize> {
        self.log.channel.request(self.lane, kind, data, reply)
    }

    fn is_lost(&self, e: Error) -> bool {
        e == ESRCH
    }

    fn recreate(&mut self) -> Result {
        let mut dev = [0u8; MAX_DEVICE_NAME];
        self.log
            .channel
            .request(self.lane, RequestType::Ctr, &self.log.ctr, &mut dev)
            .map(|_| ())
    }

    fn pause(&mut self) {
        msleep(RECONNECT_MS);
    }

    fn forget_answers(&mut self) {
        // The C module keeps its hint, and the mirror then never asks for
        // resync work.
        self.log.hints.reset();
        self.log.in_sync_memo.lock().clear();
    }

    fn report(&mut self, event: Event<Error>) {
        let id = self.log.channel.id().short();
        match event {
            Event::Lost => pr_err!("[{}] userspace log server not found\n", id),
            Event::Trying => {
                pr_warn!("[{}] attempting to contact userspace log server...\n", id)
            }
            Event::Recreated => pr_info!(
                "[{}] reconnected to userspace log server: CTR complete\n",
                id
            ),
            Event::ResumeFailed(e) => {
                pr_err!("[{}] error trying to resume userspace log: {:?}\n", id, e)
            }
        }
    }
}

impl GroupLink for LaneLink<'_> {
    type Error = Error;

    fn window(&mut self) -> &mut GroupWindow {
        &mut self.lane.window
    }

    fn send_window(&mut self) -> core::result::Result<(), GroupFailure<Error>> {
        self.log.channel.send_groups(self.lane)
    }

    fn send_one(&mut self, kind: RequestType, regions: &[u64]) -> Result {
        let mut bytes = [0u8; MAX_GROUP_REGIONS * 8];
        let len = put_words(&mut bytes, regions).ok_or(EINVAL)?;
        self.log
            .do_request(self.lane, kind, &bytes[..len], &mut [])
            .map(|_| ())
    }
}

#[vtable]
impl DirtyLog for UserspaceLog {
    type Shared = Shared;

    fn new(
        shared: &Shared,
        target_sectors: u64,
        args: &[&CStr],
    ) -> Result<impl PinInit<Self, Error>> {
        let mut bytes = KVec::with_capacity(args.len(), GFP_KERNEL)?;
        for a in args {
            bytes.push(cstr_bytes(a), GFP_KERNEL)?;
        }
        let table = TableArgs::parse(&bytes).map_err(|e| {
            pr_warn!("userspace log: {}\n", e);
            EINVAL
        })?;
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let len = table
            .write_ctr_string(target_sectors, &mut buf)
            .map_err(|e| {
                pr_warn!("userspace log: {}\n", e);
                EINVAL
            })?;
        let mut ctr = KVec::with_capacity(len, GFP_KERNEL)?;
        ctr.extend_from_slice(&buf[..len], GFP_KERNEL)?;
        let id = LogId {
            uuid: table.uuid,
            luid: shared.luids.next(),
        };
        let channel = Channel::new(shared.transfer.clone(), id)?;
        let marks = Marks::new(0)?;
        Ok(try_pin_init!(Self {
            channel <- channel,
            argc: table.argc,
            integrated_flush: table.integrated_flush,
            ctr,
            region_size: AtomicU32::new(0),
            region_count: AtomicU64::new(0),
            marks <- new_spinlock_irq!(marks, "dm_log_userspace:marks"),
            clears <- PooledQueue::new(CLEAR_RESERVE),
            hints: RecoveryHints::new(),
            in_sync_memo <- new_spinlock!(InSyncMemo::new(), "dm_log_userspace:in_sync_memo"),
            stats: LogStats::default(),
            last_sync_count: AtomicU64::new(0),
            lazy_flush: LazyFlush::new(),
            noisy: Ratelimit::new(),
        }? Error))
    }

    fn start(log: &Log<Self>, ctr: &CtrContext<'_>) -> Result {
        let mut lane = log.channel.lane();
        let mut dev = [0u8; MAX_DEVICE_NAME];
        let len = log
            .channel
            .request(&mut lane, RequestType::Ctr, &log.ctr, &mut dev)
            .inspect_err(|&e| {
                let id = log.channel.id().short();
                if e == ESRCH {
                    pr_err!("[{}] userspace log server not found\n", id);
                } else {
                    pr_err!(
                        "[{}] userspace log server failed to create log: {:?}\n",
                        id,
                        e
                    );
                }
            })?;
        let r = log.configure(log, ctr, &mut lane, &dev[..len]);
        if r.is_err() {
            // The server holds the log: tell it to let go.
            let _ = log
                .channel
                .request(&mut lane, RequestType::Dtr, &[], &mut []);
        }
        r
    }

    fn dtr(log: &Log<Self>) {
        log.run_deferred_now();
        let mut lane = log.channel.lane();
        let _ = log
            .channel
            .request(&mut lane, RequestType::Dtr, &[], &mut []);
        let c = log.channel.counters();
        pr_info!(
            "[{}] destroyed: {} requests in {} round trips; {} flushes in {} round trips; {} timeouts, {} clears dropped, {} sends retried for memory, {} for buffer space, {} refused questions asked again\n",
            log.channel.id().short(),
            c.requests,
            c.round_trips,
            log.stats.flushes.load(Ordering::Relaxed),
            log.stats.flush_round_trips.load(Ordering::Relaxed),
            c.timeouts,
            log.stats.dropped_clears.load(Ordering::Relaxed),
            c.nomem_retries,
            c.nobufs_retries,
            log.stats.asked_again.load(Ordering::Relaxed)
        );
    }

    fn presuspend(log: &Log<Self>) -> Result {
        log.in_sync_memo.lock().clear();
        let mut lane = log.channel.lane();
        log.channel
            .request(&mut lane, RequestType::Presuspend, &[], &mut [])
            .map(|_| ())
    }

    fn postsuspend(log: &Log<Self>) -> Result {
        log.run_deferred_now();
        let mut lane = log.channel.lane();
        log.channel
            .request(&mut lane, RequestType::Postsuspend, &[], &mut [])
            .map(|_| ())
    }

    fn resume(log: &Log<Self>) -> Result {
        // With the lane held: an answer still in flight (the mirror's thread
        // asks the sync count while the table loads) cannot set a hint after
        // this reset, which would skip the resync a resume may start.
        let mut lane = log.channel.lane();
        log.hints.reset();
        log.in_sync_memo.lock().clear();
        log.channel
            .request(&mut lane, RequestType::Resume, &[], &mut [])
            .map(|_| ())
    }

    fn region_size(log: &Log<Self>) -> u32 {
        log.region_size.load(Ordering::Relaxed)
    }

    fn is_clean(log: &Log<Self>, region: u64) -> bool {
        log.ask_flag(RequestType::IsClean, region).unwrap_or(false)
    }

    fn in_sync(log: &Log<Self>, region: u64, can_block: bool) -> Result<bool> {
        // Never answered locally: another node may have found the region out
        // of sync since.
        if !can_block {
            // EWOULDBLOCK is EAGAIN.
            return Err(EAGAIN);
        }
        // Except for the question dm-raid1 asks again in the same pass.
        if let Some(in_sync) = log.in_sync_memo.lock().get(region) {
            return Ok(in_sync);
        }
        let in_sync = log.until_answered(RequestType::InSync, region, || {
            log.ask_flag(RequestType::InSync, region)
        });
        log.in_sync_memo.lock().put(region, in_sync);
        Ok(in_sync)
    }

    fn flush(log: &Log<Self>) -> Result {
        // The mirror's thread ends each pass with a flush (and starts the
        // next with one): its answers go with it.
        log.in_sync_memo.lock().clear();
        // The mirror's thread is the one that marks and clears: nothing can
        // be added behind this check. With nothing to send, do not wait for
        // the lane a slow status or lazy FLUSH may hold.
        if log.marks.lock().pending.is_empty() && log.clears.is_empty() {
            return Ok(());
        }
        let mut lane = log.channel.lane();
        {
            // `in_flight` is empty, as every flush ends by emptying it:
            // swapping moves the marks without a scan under the lock (and
            // would lose none if it were not).
            let mut marks = log.marks.lock();
            let Marks { pending, in_flight } = &mut *marks;
            core::mem::swap(pending, in_flight);
        }
        let clears = FromIter(log.clears.take_all());
        // One bounded step per lock hold: interrupts are off while held.
        let marks =
            Stepwise::new(|from, out: &mut [u64]| log.marks.lock().in_flight.fill_from(from, out));
        let mut plan = FlushPlan::new(clears, marks, log.integrated_flush);
        let before = log.channel.counters();
        let r = flush_send::send_plan(
            &mut LaneLink {
                log,
                lane: &mut lane,
            },
            &mut plan,
        );
        let after = log.channel.counters();
        if after.requests != before.requests {
            log.stats.flushes.fetch_add(1, Ordering::Relaxed);
            log.stats
                .flush_round_trips
                .fetch_add(after.round_trips - before.round_trips, Ordering::Relaxed);
        }
        // One bounded step per lock hold, as above.
        let mut step = Some(0);
        while let Some(from) = step {
            let mut marks = log.marks.lock();
            let Marks { pending, in_flight } = &mut *marks;
            step = match r {
                Ok(()) => in_flight.clear(from),
                // Not committed: they go out with the next flush.
                Err(_) => in_flight.move_into(pending, from),
            };
        }
        let deferred = r.is_ok().then(|| {
            log.lazy_flush
                .flushed(plan.needs_lazy_flush(), plan.sent_marks())
        });
        drop(lane);
        match (r, deferred) {
            (Ok(()), Some(Deferred::Schedule)) => {
                log.schedule_deferred(msecs_to_jiffies(LAZY_FLUSH_MS));
            }
            (Ok(()), Some(Deferred::Cancel)) => {
                log.cancel_deferred();
            }
            (Ok(()), _) => {}
            (Err(e), _) => {
                if log.noisy.allow() {
                    pr_err!("[{}] flush failed: {:?}\n", log.channel.id().short(), e);
                }
                log.raise_event();
            }
        }
        r
    }

    fn mark_region(log: &Log<Self>, region: u64) {
        let inserted = log.marks.lock().pending.insert(region);
        if !inserted && log.noisy.allow() {
            pr_err!(
                "[{}] mark of region {} beyond the log's {} regions\n",
                log.channel.id().short(),
                region,
                log.region_count()
            );
        }
    }

    fn clear_region(log: &Log<Self>, region: u64) {
        if log.clears.try_push(region).is_err() {
            // Costs only a resync of the region when the mirror restarts.
            log.stats.dropped_clears.fetch_add(1, Ordering::Relaxed);
            if log.noisy.allow() {
                pr_err!(
                    "[{}] failed to allocate memory to clear region\n",
                    log.channel.id().short()
                );
            }
        }
    }

    fn get_resync_work(log: &Log<Self>) -> Result<Option<u64>> {
        let count = log.region_count();
        if log.hints.all_in_sync(count) {
            return Ok(None);
        }
        let mut reply = [0u8; 16];
        let mut lane = log.channel.lane();
        log.do_request(&mut lane, RequestType::GetResyncWork, &[], &mut reply)?;
        // The transfer layer took only "none" or a region of this log.
        match (payload_i64(&reply, 0), payload_u64(&reply, 1)) {
            (Some(1), Some(r)) => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    fn set_region_sync(log: &Log<Self>, region: u64, in_sync: bool) {
        log.in_sync_memo.lock().forget(region);
        let mut data = [0u8; 16];
        let _ = put_words(&mut data, &[region, u64::from(in_sync)]);
        let set = || {
            let mut lane = log.channel.lane();
            log.do_request(&mut lane, RequestType::SetRegionSync, &data, &mut [])
        };
        if in_sync {
            // A lost update only costs the region another resync.
            let _ = set();
        } else {
            log.until_answered(RequestType::SetRegionSync, region, set);
        }
    }

    fn sync_count(log: &Log<Self>) -> u64 {
        let mut reply = [0u8; 8];
        let mut lane = log.channel.lane();
        if let Err(e) = log.do_request(&mut lane, RequestType::GetSyncCount, &[], &mut reply) {
            // The status line shows the last count the server gave, not 0:
            // a refused question says nothing about the regions.
            let last = log.last_sync_count.load(Ordering::Relaxed);
            if log.noisy.allow() {
                pr_warn!(
                    "[{}] GET_SYNC_COUNT failed: {:?}; the last count, {}, stands\n",
                    log.channel.id().short(),
                    e,
                    last
                );
            }
            return last;
        }
        // The transfer layer took no count above the log's regions. Noted
        // before the lane goes, so that a resume's reset comes after it.
        let synced = u64::from_ne_bytes(reply);
        log.last_sync_count.store(synced, Ordering::Relaxed);
        log.hints.note_sync_count(synced, log.region_count());
        drop(lane);
        synced
    }

    fn status(log: &Log<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        match kind {
            StatusType::Info => {
                let room = out.remaining().min(MAX_STATUS);
                let text = KVec::from_elem(0u8, room, GFP_KERNEL)
                    .ok()
                    .and_then(|mut buf| {
                        let mut lane = log.channel.lane();
                        let len = log
                            .do_request(&mut lane, RequestType::StatusInfo, &[], &mut buf)
                            .ok()?;
                        Some((buf, len))
                    });
                match text {
                    Some((buf, len)) => {
                        let _ = write_printable(out, &buf[..len]);
                    }
                    None => {
                        let _ = write!(out, "{} 1 COM_FAILURE", TYPE);
                    }
                }
            }
            StatusType::Table => {
                let _ = write_table_line(
                    out,
                    TYPE,
                    log.argc,
                    log.channel.id().uuid_bytes(),
                    log.integrated_flush,
                    ctr_server_args(&log.ctr),
                );
            }
            StatusType::Ima => {}
        }
    }

    fn is_remote_recovering(log: &Log<Self>, region: u64) -> bool {
        let interval = msecs_to_jiffies(REMOTE_RECOVERING_MS);
        match log.hints.remote_recovering(region, jiffies(), interval) {
            RemoteRecovering::No => false,
            RemoteRecovering::AssumeYes => true,
            RemoteRecovering::Ask => {
                let mut reply = [0u8; 16];
                let mut lane = log.channel.lane();
                if log
                    .do_request(
                        &mut lane,
                        RequestType::IsRemoteRecovering,
                        &region.to_ne_bytes(),
                        &mut reply,
                    )
                    .is_err()
                {
                    return true;
                }
                let (Some(recovering), Some(hint)) =
                    (payload_i64(&reply, 0), payload_u64(&reply, 1))
                else {
                    return true;
                };
                log.hints.set_in_sync_hint(hint.min(log.region_count()));
                recovering != 0
            }
        }
    }

    fn deferred(log: &Log<Self>) {
        let mut lane = log.channel.lane();
        if !log.lazy_flush.take() {
            return;
        }
        if let Err(e) = log.do_request(&mut lane, RequestType::Flush, &[], &mut []) {
            log.lazy_flush.failed();
            pr_err!(
                "[{}] lazy flush failed: {:?}\n",
                log.channel.id().short(),
                e
            );
            log.raise_event();
        }
    }
}
