// SPDX-License-Identifier: GPL-2.0

//! The transfer layer: requests to the userspace log server and the replies
//! matched back to them.
//!
//! Every request gets a fresh sequence number and a waiter: a [`Slot`] with a
//! completion and a reply buffer, entered in the module-wide waiting list.
//! The connector callback ([`Transfer::receive`]) looks a reply up by
//! sequence number, checks that it answers that request (same log, same
//! type, sizes consistent), copies it into the slot and completes it. A
//! request unanswered after 15 s is sent again with a new sequence number,
//! forever; a late reply to the old number then finds no waiter. An `EAGAIN`
//! answer resends too.
//!
//! Each log has a [`Channel`] whose lane (a mutex) serialises its requests and
//! holds [`WINDOW`] slots, so that a flush can have all its requests in
//! flight at once: the server handles them in order, and the flush waits for
//! one round trip instead of one per request.

use crate::compat::{is_enobufs, EPROTO};
use crate::completion::Completion;
use crate::connector::{self, Handler, Received};
use crate::flush_plan::Group;
use crate::ratelimit::Ratelimit;
use crate::time::{jiffies, msecs_to_jiffies, msleep, Jiffies};
use crate::wire::{
    put_words, CnHeader, Message, ParseError, RequestHeader, RequestType, HEADER_SIZE,
    MAX_DEVICE_NAME, MAX_GROUP_REGIONS, MAX_REQUEST_PAYLOAD, UUID_LEN,
};
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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

/// Requests one log may have in flight at once.
pub(crate) const WINDOW: usize = 8;

/// How long to wait for a reply before sending the request again. Netlink
/// may drop messages, and a server may die holding a request.
const RETRY_TIMEOUT_MS: u32 = 15_000;

/// Largest `errno` a reply may carry (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// Reply bytes a slot holds unless a caller asks for more (status lines).
const SLOT_CAPACITY: usize = MAX_DEVICE_NAME;

/// Largest reply a caller may ask room for.
const MAX_REPLY_CAPACITY: usize = 4096;

/// A message that cannot be allocated is tried again this many times, this
/// many milliseconds apart (1 s in all), before its request fails.
const SEND_NOMEM_RETRIES: u32 = 100;
const SEND_NOMEM_DELAY_MS: u32 = 10;

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
    /// A full reply: the server's `error` and `len` payload bytes.
    Reply { error: i32, len: usize },
    /// An ack-only reply with a positive errno (0: success, no data).
    Ack(u32),
    /// A reply to this request whose `data_size` disagrees with its length.
    Malformed { data_size: u32, present: usize },
}

/// A slot's reply state.
///
/// # Invariants
///
/// `buf.len()` is the slot's capacity, fixed between requests.
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
    fn new(id: &LogId) -> Result<Arc<Self>> {
        let buf = KVec::from_elem(0u8, SLOT_CAPACITY, GFP_KERNEL)?;
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

    /// Makes room for replies of `capacity` bytes.
    fn ensure_capacity(&self, capacity: usize) -> Result {
        if self.state.lock().buf.len() >= capacity {
            return Ok(());
        }
        let bigger = KVec::from_elem(0u8, capacity, GFP_KERNEL)?;
        self.state.lock().buf = bigger;
        Ok(())
    }
}

/// A request waiting for its reply.
#[derive(Clone)]
struct Waiting {
    seq: u32,
    kind: RequestType,
    slot: Arc<Slot>,
}

/// The waiting list: a table with an entry for every request in flight of
/// every live channel, so that entering a request never allocates.
///
/// # Invariants
///
/// `entries.len() >= reserved`, the sum of the live channels' windows.
struct WaitingList {
    entries: KVec<Option<Waiting>>,
    reserved: usize,
}

impl WaitingList {
    /// Enters `w` in a free entry; `None` only if the invariant is broken.
    fn enter(&mut self, w: Waiting) -> Option<()> {
        *self.entries.iter_mut().find(|e| e.is_none())? = Some(w);
        Some(())
    }

    /// The entry waiting for `seq`.
    fn find(&mut self, seq: u32) -> Option<&mut Option<Waiting>> {
        self.entries
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|w| w.seq == seq))
    }
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
    next_seq: AtomicU32,
    #[pin]
    waiting: Mutex<WaitingList>,
    refused: Refused,
    noisy: Ratelimit,
}

impl Transfer {
    /// Creates the transfer state.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            next_seq: AtomicU32::new(0),
            waiting <- new_mutex!(
                WaitingList { entries: KVec::new(), reserved: 0 },
                "dm_log_userspace:waiting"
            ),
            refused: Refused::default(),
            noisy: Ratelimit::new(),
        })
    }

    /// One line on what the callback refused, for the unload message.
    pub(crate) fn refused_summary(&self) -> (u64, u64, u64) {
        (
            self.refused.unprivileged.load(Ordering::Relaxed),
            self.refused.malformed.load(Ordering::Relaxed),
            self.refused.unmatched.load(Ordering::Relaxed),
        )
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
            Ok(Message::Ack { seq, ack }) => self.deliver(seq, None, Outcome::Ack(ack), &[]),
            Ok(Message::Request { header, data }) => {
                let outcome = Outcome::Reply {
                    error: header.error,
                    len: data.len(),
                };
                self.deliver(header.seq, Some(&header), outcome, data);
            }
            Err(ParseError::DataSizeMismatch { data_size, present }) => {
                // The header is whole; fail the request it answers, if any.
                if let Some(header) = RequestHeader::decode(msg.body) {
                    let outcome = Outcome::Malformed { data_size, present };
                    self.deliver(header.seq, Some(&header), outcome, &[]);
                }
            }
            Err(ParseError::Truncated { len }) => {
                self.refused.malformed.fetch_add(1, Ordering::Relaxed);
                if self.noisy.allow() {
                    pr_err!(
                        "incomplete message received (expected {}, got {}): [{}]\n",
                        HEADER_SIZE,
                        len,
                        msg.header.seq
                    );
                }
            }
        }
    }

    /// Completes the request waiting for `seq` with `outcome` and `data`, if
    /// the reply (when it has a header) answers that very request.
    fn deliver(&self, seq: u32, header: Option<&RequestHeader>, outcome: Outcome, data: &[u8]) {
        let mut waiting = self.waiting.lock();
        let Some(entry) = waiting.find(seq) else {
            // A late reply to a request already resent, or noise.
            self.refused.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(w) = entry.as_ref() else { return };
        if let Some(h) = header {
            if h.luid != w.slot.luid || h.uuid != w.slot.uuid || h.kind() != Some(w.kind) {
                self.refused.malformed.fetch_add(1, Ordering::Relaxed);
                if self.noisy.allow() {
                    pr_err!(
                        "ignoring a reply to request {} that names another log or request type\n",
                        seq
                    );
                }
                return;
            }
        }
        let Some(w) = entry.take() else { return };
        {
            let mut st = w.slot.state.lock();
            st.outcome = outcome;
            if let Some(dst) = st.buf.get_mut(..data.len()) {
                dst.copy_from_slice(data);
            }
        }
        w.slot.done.complete();
    }

    fn next_seq(&self) -> u32 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }
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
        {
            let mut waiting = transfer.waiting.lock();
            let want = waiting.reserved + WINDOW;
            let len = waiting.entries.len();
            if len < want {
                waiting.entries.extend_with(want - len, None, GFP_KERNEL)?;
            }
            waiting.reserved = want;
        }
        // INVARIANT: the table grew by a window this value now owns.
        Ok(Self { transfer })
    }
}

impl Drop for WindowReservation {
    fn drop(&mut self) {
        let mut waiting = self.transfer.waiting.lock();
        waiting.reserved = waiting.reserved.saturating_sub(WINDOW);
    }
}

/// Why the groups sent by [`Channel::send_groups`] did not all succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupFailure {
    /// Group `index` got no usable answer (a timeout, `EAGAIN`, or it was
    /// never sent): it must be sent again, and every group after it.
    Unanswered(usize),
    /// The server answered group `index` with this error.
    Refused(usize, Error),
}

/// How waiting for a reply ended.
enum Wait {
    Done(Outcome),
    TimedOut,
}

/// The requests of one log: its identity and its lane.
#[pin_data]
pub(crate) struct Channel {
    transfer: Arc<Transfer>,
    _window: WindowReservation,
    id: LogId,
    #[pin]
    lane: Mutex<Lane>,
    requests: AtomicU64,
    round_trips: AtomicU64,
    timeouts: AtomicU64,
    nomem_retries: AtomicU64,
}

/// A log's slots and the flush groups about to be sent; held while a
/// request is in flight.
pub(crate) struct Lane {
    slots: KVec<Arc<Slot>>,
    groups: [Group; WINDOW],
    ngroups: usize,
}

impl Lane {
    /// Forgets the groups queued for [`Channel::send_groups`].
    pub(crate) fn clear_groups(&mut self) {
        self.ngroups = 0;
    }

    /// Queues `g` for [`Channel::send_groups`]; returns `false`, queueing
    /// nothing, if the window is full.
    pub(crate) fn push_group(&mut self, g: Group) -> bool {
        match self.groups.get_mut(self.ngroups) {
            Some(slot) => {
                *slot = g;
                self.ngroups += 1;
                true
            }
            None => false,
        }
    }

    /// The queued groups.
    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups[..self.ngroups]
    }
}

impl Channel {
    /// The channel of log `id`, with its window reserved.
    pub(crate) fn new(transfer: Arc<Transfer>, id: LogId) -> Result<impl PinInit<Self, Error>> {
        let mut slots = KVec::with_capacity(WINDOW, GFP_KERNEL)?;
        for _ in 0..WINDOW {
            slots.push(Slot::new(&id)?, GFP_KERNEL)?;
        }
        let window = WindowReservation::new(transfer.clone())?;
        Ok(try_pin_init!(Self {
            transfer,
            _window: window,
            id,
            lane <- new_mutex!(
                Lane {
                    slots,
                    groups: [Group::empty(RequestType::Flush); WINDOW],
                    ngroups: 0,
                },
                "dm_log_userspace:lane"
            ),
            requests: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            nomem_retries: AtomicU64::new(0),
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

    /// Requests sent, round trips waited for, timeouts, and sends tried
    /// again for want of memory, since creation.
    pub(crate) fn counters(&self) -> (u64, u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.round_trips.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            self.nomem_retries.load(Ordering::Relaxed),
        )
    }

    /// Sends one request with payload `data` and waits for its reply, which
    /// must fit `reply` (and have the size the request type calls for);
    /// returns the reply's length. Resends after a timeout or `EAGAIN`.
    /// `ESRCH`: no server listens (or the server says it lost the log).
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
        slot.ensure_capacity(reply.len())?;
        let mut eagain = 0u32;
        loop {
            let seq = self.send(slot, kind, data)?;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            match self.wait(slot, seq) {
                Wait::TimedOut => self.report_timeout(kind, seq),
                Wait::Done(outcome) if is_eagain(outcome) => {
                    // The server asks for a resend; do not spin on it.
                    eagain += 1;
                    if eagain > 3 {
                        msleep(10);
                    }
                }
                Wait::Done(outcome) => return self.result(slot, kind, outcome, reply),
            }
        }
    }

    /// Sends `lane.groups` back to back and waits for all their replies.
    /// `Ok` if every group succeeded at its first attempt; otherwise the
    /// first that did not and why. Every later group was waited for too, so
    /// the caller may go on from there as if it had sent them one by one.
    pub(crate) fn send_groups(&self, lane: &mut Lane) -> core::result::Result<(), GroupFailure> {
        let n = lane.ngroups;
        let mut seqs = [0u32; WINDOW];
        let mut sent = 0;
        let mut bytes = [0u8; MAX_GROUP_REGIONS * 8];
        for ((g, slot), seq) in lane.groups[..n].iter().zip(&lane.slots).zip(&mut seqs) {
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
        let mut first_failed = (sent < n).then_some(GroupFailure::Unanswered(sent));
        let in_flight = lane.groups[..sent].iter().zip(&lane.slots).zip(&seqs);
        for (i, ((g, slot), &seq)) in in_flight.enumerate() {
            let failure = match self.wait_until(slot, seq, deadline) {
                Wait::Done(outcome) if is_eagain(outcome) => Some(GroupFailure::Unanswered(i)),
                Wait::Done(outcome) => self
                    .result(slot, g.kind, outcome, &mut [])
                    .err()
                    .map(|e| GroupFailure::Refused(i, e)),
                Wait::TimedOut => {
                    self.report_timeout(g.kind, seq);
                    Some(GroupFailure::Unanswered(i))
                }
            };
            if first_failed.is_none() {
                first_failed = failure;
            }
        }
        first_failed.map_or(Ok(()), Err)
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
        let seq = self.transfer.next_seq();
        let mut header = RequestHeader::new(self.id.luid, &self.id.uuid, seq, kind);
        header.data_size = data.len() as u32;
        let mut msg = [0u8; HEADER_SIZE + MAX_REQUEST_PAYLOAD];
        header.encode(&mut msg).ok_or(EINVAL)?;
        msg[HEADER_SIZE..HEADER_SIZE + data.len()].copy_from_slice(data);

        slot.done.reinit();
        slot.state.lock().outcome = Outcome::Pending;
        self.transfer
            .waiting
            .lock()
            .enter(Waiting {
                seq,
                kind,
                slot: slot.clone(),
            })
            .ok_or(ENOMEM)?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut nomem = 0;
        loop {
            match connector::send(
                CnHeader::for_log(seq, 0, 0),
                &msg[..HEADER_SIZE + data.len()],
            ) {
                // ENOBUFS: some listener's queue was full; the server may still
                // have it. Waiting (and resending on timeout) covers both cases.
                Ok(()) => return Ok(seq),
                Err(e) if is_enobufs(e) => return Ok(seq),
                // No memory for the message, for now: try again rather than
                // fail the request. A failed IN_SYNC sends a write to the
                // default leg only; a failed SET_REGION_SYNC leaves the
                // region out of sync at the server until the next resume.
                Err(e) if e == ENOMEM && nomem < SEND_NOMEM_RETRIES => {
                    nomem += 1;
                    self.nomem_retries.fetch_add(1, Ordering::Relaxed);
                    msleep(SEND_NOMEM_DELAY_MS);
                }
                Err(e) => {
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
        // Completed, possibly just as the wait timed out.
        Wait::Done(slot.state.lock().outcome)
    }

    /// Takes `seq` off the waiting list; returns whether it was still there
    /// (no reply delivered).
    fn forget(&self, seq: u32) -> bool {
        let mut waiting = self.transfer.waiting.lock();
        waiting.find(seq).map(Option::take).is_some()
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

    /// Turns a request's outcome into its result, copying the reply payload
    /// into `reply` when everything about it is as the request calls for.
    fn result(
        &self,
        slot: &Slot,
        kind: RequestType,
        outcome: Outcome,
        reply: &mut [u8],
    ) -> Result<usize> {
        let (error, len) = match outcome {
            Outcome::Pending => return Err(EIO),
            Outcome::Ack(0) => (0, 0),
            Outcome::Ack(errno) if errno <= MAX_ERRNO => return Err(errno_error(errno)),
            Outcome::Ack(errno) => {
                return self.protocol_error(kind, format_args!("ack with errno {errno}"))
            }
            Outcome::Malformed { data_size, present } => {
                return self.protocol_error(
                    kind,
                    format_args!("data_size {data_size} but {present} bytes of data"),
                )
            }
            Outcome::Reply { error, len } => (error, len),
        };
        match error {
            0 => {}
            e if e < 0 && e.unsigned_abs() <= MAX_ERRNO => {
                return Err(errno_error(e.unsigned_abs()))
            }
            e => return self.protocol_error(kind, format_args!("error field {e}")),
        }
        let size = kind.reply_size();
        if !size.accepts(len, reply.len()) {
            if len > reply.len() {
                if self.transfer.noisy.allow() {
                    pr_err!(
                        "[{}] insufficient space to receive package [{}] ({} vs {})\n",
                        self.id.short(),
                        kind.name(),
                        len,
                        reply.len()
                    );
                }
                return Err(ENOSPC);
            }
            return self
                .protocol_error(kind, format_args!("{len} bytes of data, expected {size:?}"));
        }
        let st = slot.state.lock();
        let src = st.buf.get(..len).ok_or(ENOSPC)?;
        reply[..len].copy_from_slice(src);
        if kind == RequestType::Ctr && len > 0 && src[len - 1] != 0 {
            drop(st);
            return self.protocol_error(kind, format_args!("device name not NUL-terminated"));
        }
        Ok(len)
    }

    fn protocol_error(&self, kind: RequestType, what: fmt::Arguments<'_>) -> Result<usize> {
        if self.transfer.noisy.allow() {
            pr_err!(
                "[{}] bad reply to {}: {}\n",
                self.id.short(),
                kind.name(),
                what
            );
        }
        Err(EPROTO())
    }
}

/// Whether an outcome asks for the request to be sent again.
fn is_eagain(outcome: Outcome) -> bool {
    let eagain = EAGAIN.to_errno().unsigned_abs();
    match outcome {
        Outcome::Ack(errno) => errno == eagain,
        Outcome::Reply { error, .. } => error < 0 && error.unsigned_abs() == eagain,
        _ => false,
    }
}

/// The error for a positive errno already checked to be at most `MAX_ERRNO`.
fn errno_error(errno: u32) -> Error {
    Error::from_errno(-(errno as i32))
}
