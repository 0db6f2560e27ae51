// SPDX-License-Identifier: GPL-2.0

//! The transfer layer: requests to the userspace log server and the replies
//! matched back to them.
//!
//! Every request gets a fresh sequence number and a waiter: a [`Slot`] with a
//! completion and a reply buffer, entered in the module-wide waiting list.
//! The connector callback ([`Transfer::receive`]) looks a reply up by
//! sequence number and completes the request only with a well-formed answer
//! to it (`waiting.rs`, `reply.rs`); anything else is dropped, counted and
//! logged, and the request goes on waiting. A request unanswered after 15 s
//! is sent again with a new sequence number, forever; a late reply to the
//! old number then finds no waiter. An `EAGAIN` answer resends too
//! (`resend.rs`).
//!
//! Each log has a [`Channel`] whose lane (a mutex) serialises its requests and
//! holds [`WINDOW`] slots, so that a flush can have all its requests in
//! flight at once (`flush_send.rs`): the server handles them in order, and
//! the flush waits for one round trip instead of one per request.

use crate::compat::is_enobufs;
use crate::completion::Completion;
use crate::connector::{self, Handler, Received};
use crate::flush_send::{GroupFailure, GroupWindow, WindowResult, WINDOW};
use crate::ratelimit::Ratelimit;
use crate::reply::{self, Answer, Expected};
use crate::resend::{AfterSendError, Next, Retries, SendError, SendRetries, Wait};
use crate::time::{jiffies, msecs_to_jiffies, msleep, Jiffies};
use crate::waiting::{self, Delivery, Sequence};
use crate::wire::{
    put_words, CnHeader, Message, RequestHeader, RequestType, HEADER_SIZE, MAX_GROUP_REGIONS,
    MAX_REQUEST_PAYLOAD, UUID_LEN,
};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    new_mutex, new_spinlock,
    prelude::*,
    sync::{
        lock::{mutex::MutexBackend, Guard},
        Arc, Mutex, SpinLock,
    },
};

/// A held lane: see [`Channel::lane`].
pub(crate) type LaneGuard<'a> = Guard<'a, Lane, MutexBackend>;

/// How long to wait for a reply before sending the request again. Netlink
/// may drop messages, and a server may die holding a request.
const RETRY_TIMEOUT_MS: u32 = 15_000;

/// Reply bytes the slot of single requests holds: the longest reply kept
/// (a status line; a CTR reply's device name is at most 128). Allocated with
/// the slot, so that no request allocates while the log's lane is held.
pub(crate) const MAX_REPLY_CAPACITY: usize = 1024;

// `reply.rs` spells the errno values it checks for itself (it is compiled
// on the host too): they must be the kernel's.
const _: () = assert!(reply::EAGAIN == crate::bindings::EAGAIN);
const _: () = assert!(reply::MAX_ERRNO as u64 == crate::bindings::DMLU_MAX_ERRNO as u64);

/// When a request sent now times out.
fn retry_deadline() -> Jiffies {
    jiffies().wrapping_add(msecs_to_jiffies(RETRY_TIMEOUT_MS))
}

/// The identity of a log on the wire.
pub(crate) struct LogId {
    /// The uuid from the table, NUL padded.
    pub(crate) uuid: [u8; UUID_LEN],
    /// The local unique id of this instance.
    pub(crate) luid: u64,
}

impl LogId {
    /// The uuid without its padding.
    pub(crate) fn uuid_bytes(&self) -> &[u8] {
        let len = self.uuid.iter().position(|&b| b == 0).unwrap_or(UUID_LEN);
        &self.uuid[..len]
    }

    /// The last 8 characters of the uuid, as the C module names logs in its
    /// messages.
    pub(crate) fn short(&self) -> ShortUuid<'_> {
        let uuid = self.uuid_bytes();
        ShortUuid(&uuid[uuid.len().saturating_sub(8)..])
    }
}

/// Displays the end of a uuid.
pub(crate) struct ShortUuid<'a>(&'a [u8]);

impl fmt::Display for ShortUuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            let c = if b.is_ascii_graphic() { b as char } else { '?' };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// What came back for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Nothing yet.
    Pending,
    /// A well-formed answer; for [`Answer::Data`], the bytes kept in the
    /// slot (a longer status line is cut to the slot's capacity).
    Answered(Answer),
}

/// A slot's reply state.
///
/// # Invariants
///
/// `buf.len()` is the slot's capacity, fixed when the slot is made.
struct SlotState {
    outcome: Outcome,
    buf: KVec<u8>,
}

/// One waiter: a completion and a reply buffer, reused request after request.
#[pin_data]
pub(crate) struct Slot {
    /// The log whose requests use this slot.
    luid: u64,
    uuid: [u8; UUID_LEN],
    #[pin]
    done: Completion,
    #[pin]
    state: SpinLock<SlotState>,
}

impl Slot {
    /// A slot for the requests of log `id` whose replies carry at most
    /// `capacity` bytes.
    fn new(id: &LogId, capacity: usize) -> Result<Arc<Self>> {
        let buf = KVec::from_elem(0u8, capacity, GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                luid: id.luid,
                uuid: id.uuid,
                done <- Completion::new(),
                state <- new_spinlock!(SlotState { outcome: Outcome::Pending, buf }, "dm_log_userspace:slot"),
            }),
            GFP_KERNEL,
        )
    }
}

/// A request waiting for its reply.
#[derive(Clone)]
struct Request {
    kind: RequestType,
    /// The log's region count when the request was sent, which bounds the
    /// regions and counts an answer may name.
    region_count: u64,
    slot: Arc<Slot>,
}

/// The waiting list: a table with an entry for every request in flight of
/// every live channel, so that entering a request never allocates.
///
/// # Invariants
///
/// `entries.len() >= reserved`, the sum of the live channels' windows.
struct WaitingList {
    entries: KVec<Option<waiting::Waiting<Request>>>,
    reserved: usize,
}

/// Counters of what the connector callback refused, module-wide.
#[derive(Default)]
struct Refused {
    unprivileged: AtomicU64,
    malformed: AtomicU64,
    unmatched: AtomicU64,
}

/// The module-wide transfer state, shared by every log and the connector
/// callback.
#[pin_data]
pub(crate) struct Transfer {
    seq: Sequence,
    #[pin]
    waiting: Mutex<WaitingList>,
    refused: Refused,
    noisy: Ratelimit,
}

impl Transfer {
    /// Creates the transfer state.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            seq: Sequence::new(),
            waiting <- new_mutex!(
                WaitingList { entries: KVec::new(), reserved: 0 },
                "dm_log_userspace:waiting"
            ),
            refused: Refused::default(),
            noisy: Ratelimit::new(),
        })
    }

    /// What the callback refused so far, for the unload message.
    pub(crate) fn refused_summary(&self) -> RefusedCounts {
        RefusedCounts {
            unprivileged: self.refused.unprivileged.load(Ordering::Relaxed),
            malformed: self.refused.malformed.load(Ordering::Relaxed),
            unmatched: self.refused.unmatched.load(Ordering::Relaxed),
        }
    }

    /// Handles one message from userspace (the connector callback).
    fn receive(&self, msg: &Received<'_>) {
        if !msg.privileged {
            self.refused.unprivileged.fetch_add(1, Ordering::Relaxed);
            if self.noisy.allow() {
                pr_warn!("ignoring a message from a sender without CAP_SYS_ADMIN\n");
            }
            return;
        }
        match Message::parse(&msg.header, msg.body) {
            Ok(m) => self.deliver(&m),
            Err(e) => {
                // Sizes that disagree: whatever request it names, it does not
                // answer it.
                self.refused.malformed.fetch_add(1, Ordering::Relaxed);
                if self.noisy.allow() {
                    let seq = RequestHeader::decode(msg.body).map_or(msg.header.seq, |h| h.seq);
                    pr_err!("dropped a malformed message for request {}: {}\n", seq, e);
                }
            }
        }
    }

    /// Completes the request `msg` answers, if it is a well-formed answer to
    /// that very request; drops it otherwise.
    fn deliver(&self, msg: &Message<'_>) {
        let (seq, data) = match *msg {
            Message::Ack { seq, .. } => (seq, &[][..]),
            Message::Request { ref header, data } => (header.seq, data),
        };
        let mut waiting = self.waiting.lock();
        let delivery = waiting::deliver(&mut waiting.entries, seq, |w: &Request| {
            let expected = Expected {
                luid: w.slot.luid,
                uuid: &w.slot.uuid,
                kind: w.kind,
                region_count: w.region_count,
            };
            reply::check(&expected, msg).map_err(|fault| (w.kind, fault))
        });
        let (w, answer) = match delivery {
            Delivery::Completed(w, answer) => (w, answer),
            Delivery::Unmatched => {
                // A late reply to a request already resent, or noise.
                self.refused.unmatched.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Delivery::Dropped((kind, fault)) => {
                self.refused.malformed.fetch_add(1, Ordering::Relaxed);
                if self.noisy.allow() {
                    pr_err!(
                        "dropped a reply to {} request {}: {}; waiting for a well-formed one\n",
                        kind.name(),
                        seq,
                        fault
                    );
                }
                return;
            }
        };
        {
            let mut st = w.slot.state.lock();
            let answer = match answer {
                Answer::Data(len) => {
                    let kept = len.min(st.buf.len());
                    st.buf[..kept].copy_from_slice(&data[..kept]);
                    Answer::Data(kept)
                }
                other => other,
            };
            st.outcome = Outcome::Answered(answer);
        }
        w.slot.done.complete();
    }
}

/// Messages the connector callback refused, by reason.
pub(crate) struct RefusedCounts {
    /// From a sender without `CAP_SYS_ADMIN`.
    pub(crate) unprivileged: u64,
    /// Malformed, or not a possible answer to the request they name.
    pub(crate) malformed: u64,
    /// Naming no request in flight (late, duplicate, or noise).
    pub(crate) unmatched: u64,
}

impl Handler for Arc<Transfer> {
    fn receive(&self, msg: &Received<'_>) {
        Transfer::receive(self, msg)
    }
}

/// A channel's share of the waiting list: [`WINDOW`] entries, given back
/// when dropped (also when the channel is never built).
///
/// # Invariants
///
/// `WINDOW` of `transfer`'s `reserved` entries belong to this value.
struct WindowReservation {
    transfer: Arc<Transfer>,
}

impl WindowReservation {
    fn new(transfer: Arc<Transfer>) -> Result<Self> {
        loop {
            let want = transfer.waiting.lock().reserved + WINDOW;
            // Allocated with the list unlocked: requests of live logs, on the
            // writeback path, take that lock, and reclaim may wait for them.
            let mut bigger: KVec<Option<waiting::Waiting<Request>>> =
                KVec::with_capacity(want, GFP_KERNEL)?;
            let mut waiting = transfer.waiting.lock();
            if waiting.reserved + WINDOW > want {
                // Another log reserved its window meanwhile: allocate again.
                continue;
            }
            if waiting.entries.len() < want {
                // Within the capacity allocated above: these allocate nothing.
                for e in waiting.entries.iter_mut() {
                    bigger.push(e.take(), GFP_NOWAIT)?;
                }
                let len = bigger.len();
                bigger.extend_with(want - len, None, GFP_NOWAIT)?;
                waiting.entries = bigger;
            }
            waiting.reserved = want;
            drop(waiting);
            // INVARIANT: the table holds a window more, which this value owns.
            return Ok(Self { transfer });
        }
    }
}

impl Drop for WindowReservation {
    fn drop(&mut self) {
        let mut waiting = self.transfer.waiting.lock();
        waiting.reserved = waiting.reserved.saturating_sub(WINDOW);
    }
}

/// The requests of one log: its identity and its lane.
#[pin_data]
pub(crate) struct Channel {
    transfer: Arc<Transfer>,
    _window: WindowReservation,
    id: LogId,
    /// The log's regions, once known: bounds what answers may name.
    region_count: AtomicU64,
    #[pin]
    lane: Mutex<Lane>,
    requests: AtomicU64,
    round_trips: AtomicU64,
    timeouts: AtomicU64,
    nomem_retries: AtomicU64,
    nobufs_retries: AtomicU64,
}

/// What a channel did since it was made.
#[derive(Clone, Copy)]
pub(crate) struct ChannelCounters {
    /// Requests sent, resends included.
    pub(crate) requests: u64,
    /// Round trips waited for (a window of requests sent together is one).
    pub(crate) round_trips: u64,
    /// Requests that timed out and were sent again.
    pub(crate) timeouts: u64,
    /// Sends tried again for want of memory.
    pub(crate) nomem_retries: u64,
    /// Sends tried again because a listener had no room (`ENOBUFS`).
    pub(crate) nobufs_retries: u64,
}

/// A log's slots and the flush groups about to be sent; held while a
/// request is in flight.
pub(crate) struct Lane {
    slots: KVec<Arc<Slot>>,
    /// The groups [`Channel::send_groups`] sends.
    pub(crate) window: GroupWindow,
}

impl Channel {
    /// The channel of log `id`, with its window reserved.
    pub(crate) fn new(transfer: Arc<Transfer>, id: LogId) -> Result<impl PinInit<Self, Error>> {
        let mut slots = KVec::with_capacity(WINDOW, GFP_KERNEL)?;
        // The first slot carries single requests and their replies; the
        // others only groups of marks and clears, whose replies are empty.
        slots.push(Slot::new(&id, MAX_REPLY_CAPACITY)?, GFP_KERNEL)?;
        for _ in 1..WINDOW {
            slots.push(Slot::new(&id, 0)?, GFP_KERNEL)?;
        }
        let window = WindowReservation::new(transfer.clone())?;
        Ok(try_pin_init!(Self {
            transfer,
            _window: window,
            id,
            region_count: AtomicU64::new(0),
            lane <- new_mutex!(
                Lane {
                    slots,
                    window: GroupWindow::new(),
                },
                "dm_log_userspace:lane"
            ),
            requests: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            nomem_retries: AtomicU64::new(0),
            nobufs_retries: AtomicU64::new(0),
        }? Error))
    }

    /// The log's identity.
    pub(crate) fn id(&self) -> &LogId {
        &self.id
    }

    /// Takes the lane: requests of this log are made one holder at a time.
    pub(crate) fn lane(&self) -> LaneGuard<'_> {
        self.lane.lock()
    }

    /// Tells the channel how many regions the log has: answers naming a
    /// region or count beyond it are dropped.
    pub(crate) fn set_region_count(&self, count: u64) {
        self.region_count.store(count, Ordering::Relaxed);
    }

    /// What the channel did since it was made.
    pub(crate) fn counters(&self) -> ChannelCounters {
        ChannelCounters {
            requests: self.requests.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            nomem_retries: self.nomem_retries.load(Ordering::Relaxed),
            nobufs_retries: self.nobufs_retries.load(Ordering::Relaxed),
        }
    }

    /// Sends one request with payload `data` and waits for a well-formed
    /// answer; copies its payload into `reply` (a status line longer than
    /// `reply` is cut) and returns its length. Resends after a timeout or
    /// `EAGAIN`. `ESRCH`: no server listens (or the server says it lost the
    /// log); another error: the server refused the request.
    pub(crate) fn request(
        &self,
        lane: &mut Lane,
        kind: RequestType,
        data: &[u8],
        reply: &mut [u8],
    ) -> Result<usize> {
        if reply.len() > MAX_REPLY_CAPACITY {
            return Err(EINVAL);
        }
        let slot = lane.slots.first().ok_or(EINVAL)?;
        let mut retries = Retries::default();
        loop {
            let seq = self.send(slot, kind, data)?;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            match retries.after(self.wait(slot, seq)) {
                Next::Finish(answer) => return result(slot, answer, reply),
                Next::ResendTimedOut => self.report_timeout(kind, seq),
                Next::Resend { pause_ms } => {
                    if pause_ms > 0 {
                        msleep(pause_ms);
                    }
                }
            }
        }
    }

    /// Sends `lane.window` back to back and waits for all their replies.
    /// `Ok` if every group succeeded at its first attempt; otherwise the
    /// first that did not and why. Every later group was waited for too, so
    /// the caller may go on from there as if it had sent them one by one.
    pub(crate) fn send_groups(
        &self,
        lane: &mut Lane,
    ) -> core::result::Result<(), GroupFailure<Error>> {
        let groups = lane.window.groups();
        let n = groups.len();
        let mut seqs = [0u32; WINDOW];
        let mut sent = 0;
        let mut bytes = [0u8; MAX_GROUP_REGIONS * 8];
        for ((g, slot), seq) in groups.iter().zip(&lane.slots).zip(&mut seqs) {
            let Some(len) = put_words(&mut bytes, g.regions()) else {
                break;
            };
            match self.send(slot, g.kind, &bytes[..len]) {
                Ok(s) => *seq = s,
                Err(_) => break,
            }
            sent += 1;
        }
        if sent > 0 {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
        }
        // The groups went out together: they time out together, so a window
        // of lost requests costs one resend timeout, not one per request.
        let deadline = retry_deadline();
        let mut window = WindowResult::new(n, sent);
        let in_flight = groups[..sent].iter().zip(&lane.slots).zip(&seqs);
        for (i, ((g, slot), &seq)) in in_flight.enumerate() {
            let wait = self.wait_until(slot, seq, deadline);
            if wait == Wait::TimedOut {
                self.report_timeout(g.kind, seq);
            }
            window.note(i, wait);
        }
        window.finish().map_err(|f| match f {
            GroupFailure::Refused(i, errno) => GroupFailure::Refused(i, errno_error(errno)),
            GroupFailure::Unanswered(i) => GroupFailure::Unanswered(i),
        })
    }

    /// Enters a request in the waiting list and sends it; returns its
    /// sequence number.
    fn send(&self, slot: &Arc<Slot>, kind: RequestType, data: &[u8]) -> Result<u32> {
        if data.len() > MAX_REQUEST_PAYLOAD {
            pr_info!(
                "[{}] size of request {} exceeds the maximum\n",
                self.id.short(),
                kind.name()
            );
            return Err(EINVAL);
        }
        let seq = self.transfer.seq.next();
        let region_count = self.region_count.load(Ordering::Relaxed);
        let mut header = RequestHeader::new(self.id.luid, &self.id.uuid, seq, kind);
        header.data_size = data.len() as u32;
        let mut msg = [0u8; HEADER_SIZE + MAX_REQUEST_PAYLOAD];
        header.encode(&mut msg).ok_or(EINVAL)?;
        msg[HEADER_SIZE..HEADER_SIZE + data.len()].copy_from_slice(data);

        slot.done.reinit();
        slot.state.lock().outcome = Outcome::Pending;
        let request = Request {
            kind,
            region_count,
            slot: slot.clone(),
        };
        waiting::enter(&mut self.transfer.waiting.lock().entries, seq, request)
            .map_err(|_| ENOMEM)?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut retries = SendRetries::default();
        loop {
            let Err(e) = connector::send(
                CnHeader::for_log(seq, 0, 0),
                &msg[..HEADER_SIZE + data.len()],
            ) else {
                return Ok(seq);
            };
            let error = if is_enobufs(e) {
                SendError::NoBufs
            } else if e == ENOMEM {
                SendError::NoMem
            } else {
                SendError::Other
            };
            match retries.after(error) {
                AfterSendError::Again { pause_ms } => {
                    let counter = match error {
                        SendError::NoBufs => &self.nobufs_retries,
                        _ => &self.nomem_retries,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    msleep(pause_ms);
                }
                AfterSendError::LeaveToTimeout => return Ok(seq),
                AfterSendError::Fail => {
                    self.forget(seq);
                    if e != ESRCH {
                        pr_err!(
                            "[{}] unable to send log request {} to userspace: {:?}\n",
                            self.id.short(),
                            kind.name(),
                            e
                        );
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Waits for the reply to `seq` in `slot`, for up to the retry timeout.
    fn wait(&self, slot: &Slot, seq: u32) -> Wait {
        self.wait_until(slot, seq, retry_deadline())
    }

    /// Waits for the reply to `seq` in `slot` until `deadline` (jiffies).
    fn wait_until(&self, slot: &Slot, seq: u32, deadline: Jiffies) -> Wait {
        // Wrapping difference: how far `deadline` is ahead, if it is.
        let left = deadline.wrapping_sub(jiffies()) as isize;
        if !slot.done.wait_timeout(left.max(0) as Jiffies) && self.forget(seq) {
            return Wait::TimedOut;
        }
        // Completed, possibly just as the wait timed out: only an answer
        // completes a slot.
        match slot.state.lock().outcome {
            Outcome::Answered(answer) => Wait::Done(answer),
            Outcome::Pending => Wait::TimedOut,
        }
    }

    /// Takes `seq` off the waiting list; returns whether it was still there
    /// (no reply delivered).
    fn forget(&self, seq: u32) -> bool {
        waiting::forget(&mut self.transfer.waiting.lock().entries, seq)
    }

    fn report_timeout(&self, kind: RequestType, seq: u32) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        pr_warn!(
            "[{}] request timed out: [{}/{}] - retrying\n",
            self.id.short(),
            kind.name(),
            seq
        );
    }
}

/// Turns an answer into the request's result, copying the reply payload
/// kept in `slot` into `reply` (as much as fits: status lines are cut).
fn result(slot: &Slot, answer: Answer, reply: &mut [u8]) -> Result<usize> {
    match answer {
        Answer::Data(len) => {
            let st = slot.state.lock();
            let n = len.min(reply.len()).min(st.buf.len());
            reply[..n].copy_from_slice(&st.buf[..n]);
            Ok(n)
        }
        Answer::Refused(errno) => Err(errno_error(errno)),
        // The caller sends the request again.
        Answer::Resend => Err(EAGAIN),
    }
}

/// The error for a positive errno already checked to be at most `MAX_ERRNO`.
fn errno_error(errno: u32) -> Error {
    Error::from_errno(-(errno as i32))
}
