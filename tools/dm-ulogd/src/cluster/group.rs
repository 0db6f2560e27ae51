// SPDX-License-Identifier: GPL-2.0

//! One log's group, as one node sees it: the state every member holds a
//! copy of ([`Shared`]), and this node's side of the protocol that keeps the
//! copies equal and answers this node's kernel.
//!
//! # Requests
//!
//! - Reads (IN_SYNC, IS_CLEAN, GET_SYNC_COUNT, IS_REMOTE_RECOVERING) are
//!   answered at once from the local copy, overlaid with this node's own
//!   SET_REGION_SYNCs not yet delivered back (so the kernel never reads an
//!   older answer than the one it wrote).
//! - MARK, CLEAR and SET_REGION_SYNC are answered at once and collected. A
//!   FLUSH with marks, or GET_RESYNC_WORK, sends what was collected as one
//!   [`Batch`] and is answered when that batch comes back in the total
//!   order (matched by its id): then every member has applied it. A FLUSH
//!   is never answered before every mark this node sent earlier is known to
//!   the group (and, for a disk log, written to the log device).
//! - A send that fails puts the batch's operations back and answers the
//!   request it carried `EAGAIN`, which the kernel resends.
//!
//! # Rounds
//!
//! After every change of the group's membership or of the cluster's ring,
//! the lowest member runs a round: it asks ([`Message::Round`]), every
//! member answers what state it holds ([`Offer`]), and once every answer is
//! in and its partition is quorate it closes the round
//! ([`Message::Decide`]). Every member then applies the same decision,
//! computed from the same offers: the state of the newest [`Lineage`] wins
//! (a partition that was quorate has decided rounds the other has not);
//! every region a losing member marked, or any member marked while a node
//! was away, goes out of sync; the members without the winning state load
//! it from a [`Checkpoint`] that names the round (an older checkpoint is
//! stale and ignored). With nobody holding state, the decider starts from
//! the table (or, for a disk log, from the log device), never from a copy
//! kept from earlier.
//!
//! # Quorum
//!
//! Only a quorate partition changes the shared state: this node sends
//! nothing, answers no FLUSH and hands out no resync work unless its ring
//! is quorate and a round was decided in it. Meanwhile its kernel waits
//! (requests are held, never failed) and reads are answered from the local
//! copy; IS_REMOTE_RECOVERING says "yes" so writes to regions above the
//! kernel's hint wait too.
//!
//! # Disk logs
//!
//! The lowest member holding the state writes the log device, in dm-log's
//! format, after each burst of events, and tells the group
//! ([`Message::Committed`]); a FLUSH is answered once the batch with its
//! marks is written.
//!
//! Pure but for the log device: no clock, no sockets. Outputs are
//! [`Effect`]s for the caller to carry out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::transport::{ConfigChange, RingId};
use super::wire::{Barrier, Batch, Checkpoint, Claim, Lineage, Message, Offer, Op, RoundId};
use crate::bitmap;
use crate::ctr_args::{LogConfig, LogKind, SyncMode};
use crate::log_device::{self, LogDevice};
use crate::log_state::{Backing, Lifecycle, LogState, Sharing};
use crate::member::MemberId;
use crate::request::Request;
use crate::wire_codec::{DecodeError, Reader, Writer};

/// Identifies a request whose answer comes later.
pub type Ticket = u64;

/// A reply's payload words, or a positive errno.
pub type Answer = Result<Vec<u64>, i32>;

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered now.
    Now(Answer),
    /// Answered later by an [`Effect::Reply`] with its ticket.
    Later,
}

/// Something the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answer the request of this ticket.
    Reply(Ticket, Answer),
    /// Multicast this message to the log's group.
    Send(Message),
    /// Join the log's group.
    Join,
    /// Leave the log's group.
    Leave,
    /// Tell the admin.
    Notice(String),
    /// Tell the admin about a problem.
    Warning(String),
    /// A log device commit happened (for the counters).
    Disk(log_device::CommitStats),
}

/// A group event, in the group's total order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message and its sender.
    Deliver(MemberId, Message),
    /// A membership change.
    Change(ConfigChange),
    /// The cluster moved to a new ring.
    Ring(RingId),
}

/// What the group did, for the figures and `dm-ulogd stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Batches sent.
    pub batches: u64,
    /// Batches whose sender waited for them (FLUSH with marks,
    /// GET_RESYNC_WORK): one group round trip each.
    pub rounds: u64,
    /// FLUSHes answered.
    pub flushes: u64,
    /// Operations sent in batches.
    pub ops: u64,
    /// Sends the transport refused (their requests failed with `EAGAIN`).
    pub send_failures: u64,
    /// Membership rounds decided.
    pub decided: u64,
    /// Checkpoints sent.
    pub checkpoints_sent: u64,
    /// Checkpoints loaded.
    pub checkpoints_loaded: u64,
    /// Stale checkpoints ignored.
    pub stale_checkpoints: u64,
    /// Times this node started the state from the table or the device.
    pub fresh_starts: u64,
    /// Rounds that merged two histories (after a partition).
    pub merges: u64,
    /// Regions a merge put out of sync.
    pub merge_resync: u64,
    /// Requests that waited for quorum.
    pub quorum_waits: u64,
}

/// The state every member of the group holds a copy of. Every change comes
/// from a group event, in the group's total order, and is deterministic:
/// members that applied the same events hold the same copy.
#[derive(Debug)]
pub struct Shared {
    log: LogState,
    members: BTreeSet<MemberId>,
    /// Members that hold the state.
    stateful: BTreeSet<MemberId>,
    lineage: Lineage,
    /// Nodes that left the group and have not come back, each with the
    /// regions its member had marked when it left: without fencing, it may
    /// have gone on writing them after the others resynced them, so they
    /// resync again when it comes back (in any form).
    away: BTreeMap<u32, BTreeSet<u64>>,
    /// Regions marked or recovered since a node went away (a bitmap; empty
    /// while nobody is away).
    apart: Vec<u64>,
    /// The round whose decision this state applied last.
    decided: Option<RoundId>,
}

impl Shared {
    fn fresh(log: LogState, me: MemberId, members: &[MemberId], round: RoundId) -> Self {
        Self {
            log,
            members: members.iter().copied().collect(),
            stateful: [me].into_iter().collect(),
            lineage: Lineage {
                epoch: 1,
                generation: 0,
                origin: round.decider,
            },
            away: BTreeMap::new(),
            apart: Vec::new(),
            decided: Some(round),
        }
    }

    /// The log's state.
    pub fn log(&self) -> &LogState {
        &self.log
    }

    /// The group's members.
    pub fn members(&self) -> &BTreeSet<MemberId> {
        &self.members
    }

    /// The members holding the state.
    pub fn stateful(&self) -> &BTreeSet<MemberId> {
        &self.stateful
    }

    /// Which history this state is.
    pub fn lineage(&self) -> Lineage {
        self.lineage
    }

    /// The member that writes the log device: the lowest holding the state.
    pub fn writer(&self) -> Option<MemberId> {
        self.stateful.iter().next().copied()
    }

    /// Regions marked or recovered while a node was away.
    pub fn apart(&self) -> Vec<u64> {
        ones(&self.apart, self.log.region_count())
    }

    fn note_apart(&mut self, region: u64) {
        if self.away.is_empty() || region >= self.log.region_count() {
            return;
        }
        if self.apart.is_empty() {
            self.apart = vec![0; bitmap::words_for(self.log.region_count())];
        }
        bitmap::set(&mut self.apart, region);
    }

    fn tick(&mut self) {
        self.lineage.generation += 1;
    }

    /// A batch from `from`: its operations in order, then its barrier.
    /// Returns the region a GET_RESYNC_WORK barrier assigned, and whether a
    /// report of a region in sync did not count (the region was taken from
    /// the sender, whose kernel now believes it in sync).
    fn apply_batch(&mut self, from: MemberId, batch: &Batch) -> (Option<u64>, bool) {
        let mut refused = false;
        for &op in &batch.ops {
            // Regions were checked by the sender; a bad one changes nothing.
            match op {
                Op::Mark(r) => {
                    if self.log.mark(from, &[r]).is_ok() {
                        self.note_apart(r);
                    }
                }
                Op::Clear(r) => {
                    let _ = self.log.clear(from, &[r]);
                }
                Op::SetSync(r, value) => {
                    refused |= self.log.set_region_sync(from, r, value) == Ok(false);
                }
                Op::Prioritize(r) => self.log.prioritize(r),
            }
        }
        let assigned = match batch.barrier {
            Barrier::ResyncWork => self.log.get_resync_work(from),
            Barrier::None | Barrier::Flush => None,
        };
        if let Some(r) = assigned {
            self.note_apart(r);
        }
        self.tick();
        (assigned, refused)
    }

    /// A membership change. Returns the members that left with regions
    /// marked, and whether regions went out of sync.
    fn apply_change(&mut self, change: &ConfigChange) -> (Vec<(MemberId, usize)>, bool) {
        self.tick();
        self.members = change.members.iter().copied().collect();
        let mut lost = Vec::new();
        let mut restarted = false;
        let gone: Vec<MemberId> = change
            .left
            .iter()
            .copied()
            .chain(
                self.log
                    .marking_members()
                    .filter(|m| !self.members.contains(m)),
            )
            .collect();
        for m in gone {
            let marks: Vec<u64> = self.log.marks_of(m).collect();
            if self.log.member_departed(m) {
                restarted = true;
            }
            if !marks.is_empty() {
                lost.push((m, marks.len()));
            }
            if !self.members.iter().any(|x| x.node == m.node) {
                self.away.entry(m.node).or_default().extend(marks);
            }
        }
        // Nodes coming back: what their members had marked when they left
        // resyncs again (what was marked meanwhile is kept until the round
        // decides whether two histories met: see `apply_decision`).
        let mut back = Vec::new();
        for m in &change.joined {
            back.extend(self.away.remove(&m.node).into_iter().flatten());
        }
        restarted |= self.log.set_out_of_sync(back);
        self.pin_away();
        let members = &self.members;
        self.stateful.retain(|m| members.contains(m));
        lost.dedup_by_key(|(m, _)| *m);
        (lost, restarted)
    }

    /// What an away node's member had marked stays dirty (on the log
    /// device too) until it comes back, whatever the resync meanwhile.
    fn pin_away(&mut self) {
        let pinned = self.away.values().flatten().copied().collect();
        self.log.set_pinned(pinned);
    }

    /// Encodes everything but the log device's commit bookkeeping.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.log.encode(&mut w);
        w.u64s(self.members.iter().map(|m| m.to_u64()));
        w.u64s(self.stateful.iter().map(|m| m.to_u64()));
        w.u64(self.lineage.epoch);
        w.u64(self.lineage.generation);
        w.u64(self.lineage.origin.to_u64());
        w.u64(self.away.len() as u64);
        for (&node, regions) in &self.away {
            w.u32(node);
            w.u64s(regions.iter().copied());
        }
        w.u64s(self.apart().into_iter());
        w.0
    }

    fn decode(config: &LogConfig, bytes: &[u8], round: RoundId) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let log = LogState::decode(config, &mut r)?;
        let members = r.u64s()?.into_iter().map(MemberId::from_u64).collect();
        let stateful = r.u64s()?.into_iter().map(MemberId::from_u64).collect();
        let lineage = Lineage {
            epoch: r.u64()?,
            generation: r.u64()?,
            origin: MemberId::from_u64(r.u64()?),
        };
        let mut away = BTreeMap::new();
        for _ in 0..r.count(12)? {
            let node = r.u32()?;
            away.insert(node, r.u64s()?.into_iter().collect());
        }
        let mut shared = Self {
            log,
            members,
            stateful,
            lineage,
            away,
            apart: Vec::new(),
            decided: Some(round),
        };
        for region in r.u64s()? {
            shared.note_apart(region);
        }
        shared.pin_away();
        if !r.is_empty() {
            return Err(DecodeError("snapshot with trailing bytes"));
        }
        Ok(shared)
    }

    /// A digest of the copy: two members of one lineage hold equal copies,
    /// so equal digests; two partitions that applied different events the
    /// same number of times do not (FNV-1a over the encoding, the same on
    /// every build).
    fn digest(&self) -> u64 {
        self.encode().iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Whether two copies are the same (for checks).
    pub fn same_as(&self, other: &Self) -> bool {
        self.log.same_contents(&other.log)
            && self.members == other.members
            && self.stateful == other.stateful
            && self.lineage == other.lineage
            && self.away == other.away
            && self.apart() == other.apart()
    }
}

fn ones(words: &[u64], count: u64) -> Vec<u64> {
    if words.is_empty() {
        return Vec::new();
    }
    (0..count).filter(|&r| bitmap::test(words, r)).collect()
}

struct InFlight {
    /// Its operations, put back should the send fail.
    ops: Vec<Op>,
    /// FLUSHes it answers (once its marks are known, and written).
    tickets: Vec<Ticket>,
    /// The GET_RESYNC_WORK it answers.
    work: Option<Ticket>,
    /// Regions of its SET_REGION_SYNCs, in the overlay until it comes back.
    synced: Vec<u64>,
    /// Whether it carries marks.
    marks: bool,
}

/// A FLUSH whose marks are known to the group, answered once this node
/// may answer (quorum) and, for a disk log, once the writer has written the
/// generation that applied them.
struct Held {
    ticket: Ticket,
    generation: u64,
}

enum Phase {
    /// Not in the group.
    Detached,
    /// In the group, without the state. Once a round decided to send it,
    /// the events after that decision are kept to replay over the
    /// checkpoint.
    Joining(Option<(RoundId, Vec<Event>)>),
    /// Holding the state.
    Joined(Box<Shared>),
}

#[derive(Default)]
struct Rounds {
    /// Members after the last change seen.
    view: Vec<MemberId>,
    /// The round under way, if its opening was seen.
    current: Option<RoundId>,
    offers: BTreeMap<MemberId, Offer>,
    /// Rounds this node opened.
    opened: u64,
    /// Whether this node closed the current round already.
    closed: bool,
    /// A round is due: membership or ring changed since the last decision.
    due: bool,
    /// The ring in which this node applied its last decision.
    decided_ring: Option<RingId>,
}

/// One log's group on this node.
pub struct Group {
    me: MemberId,
    config: LogConfig,
    phase: Phase,
    rounds: Rounds,
    ring: RingId,
    quorate: bool,
    pending: Vec<Op>,
    /// `pending` holds what other members need soon (SET_REGION_SYNC, a
    /// priority request) even if no barrier follows.
    urgent: bool,
    next_batch: u64,
    inflight: BTreeMap<u64, InFlight>,
    /// This node's SET_REGION_SYNCs not yet delivered back: value and how
    /// many are in flight.
    overlay: BTreeMap<u64, (bool, u32)>,
    resume_waiters: Vec<Ticket>,
    /// FLUSHes waiting for the state or for quorum before their marks go
    /// out.
    deferred: VecDeque<Ticket>,
    held: Vec<Held>,
    /// Regions this node's kernel has marked and not cleared since.
    kernel_marks: BTreeSet<u64>,
    /// Regions went out of sync behind the kernel's in-sync hint.
    kick: bool,
    /// Every region was in sync once since RESUME: IN_SYNC then says yes
    /// (as cmirrord: a write must keep going to every leg).
    synced_once: bool,
    /// PRESUSPEND stopped this node's recovery (cmirrord's
    /// `recovery_halted`).
    recovery_halted: bool,
    /// This node held the state while its partition had no quorum, and no
    /// round has confirmed it since: a quorate partition elsewhere may have
    /// changed the state meanwhile.
    tainted: bool,
    lifecycle: Lifecycle,
    device: Option<LogDevice>,
    /// Whether this node wrote the log device after the last event burst.
    writing: bool,
    /// The writer owes the group a commit notice: it applied marks or a
    /// decision since its last one.
    commit_due: bool,
    /// The generation of this lineage known to be on the log device.
    committed: u64,
    counters: GroupCounters,
}

fn regions_ok(count: u64, regions: &[u64]) -> Result<(), i32> {
    if regions.iter().all(|&r| r < count) {
        Ok(())
    } else {
        Err(libc::EINVAL)
    }
}

fn words(values: &[u64]) -> Answer {
    Ok(values.to_vec())
}

impl Group {
    /// The group of a log of `config` on this node (`me`), not joined yet;
    /// `device` is its log device, for a disk log.
    pub fn new(me: MemberId, config: &LogConfig, device: Option<LogDevice>, ring: RingId) -> Self {
        Self {
            me,
            config: config.clone(),
            phase: Phase::Detached,
            rounds: Rounds::default(),
            ring,
            quorate: false,
            pending: Vec::new(),
            urgent: false,
            next_batch: 1,
            inflight: BTreeMap::new(),
            overlay: BTreeMap::new(),
            resume_waiters: Vec::new(),
            deferred: VecDeque::new(),
            held: Vec::new(),
            kernel_marks: BTreeSet::new(),
            kick: false,
            synced_once: false,
            recovery_halted: false,
            tainted: false,
            lifecycle: Lifecycle::Constructed,
            device,
            writing: false,
            commit_due: false,
            committed: 0,
            counters: GroupCounters::default(),
        }
    }

    /// This node's member id.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The table the group serves.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The shared state, if this node holds it.
    pub fn shared(&self) -> Option<&Shared> {
        match &self.phase {
            Phase::Joined(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this node holds the state.
    pub fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Joined(_))
    }

    /// Whether this node is in the group (holding the state or not).
    pub fn in_group(&self) -> bool {
        !matches!(self.phase, Phase::Detached)
    }

    /// The counters.
    pub fn counters(&self) -> GroupCounters {
        self.counters
    }

    /// The log device, for a disk log.
    pub fn device(&self) -> Option<&LogDevice> {
        self.device.as_ref()
    }

    /// The kernel-side lifecycle.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The ring this group's events belong to.
    pub fn ring(&self) -> RingId {
        self.ring
    }

    /// Whether the log device failed.
    pub fn device_failed(&self) -> bool {
        self.shared().is_some_and(|s| s.log.device_failed())
    }

    /// Why this node does not answer FLUSHes now, if it does not.
    pub fn blocked_by(&self) -> Option<&'static str> {
        if !self.in_group() {
            None
        } else if !self.quorate {
            Some("no quorum")
        } else if !self.is_joined() {
            Some("joining")
        } else if self.rounds.due || self.rounds.decided_ring != Some(self.ring) {
            Some("membership round")
        } else {
            None
        }
    }

    /// Whether this node may change the shared state and answer FLUSHes.
    pub fn is_open(&self) -> bool {
        self.open()
    }

    /// Whether `region` is in sync as this node's kernel is told (its own
    /// SET_REGION_SYNCs in flight included; without cmirrord's "all in sync
    /// once" rule of IN_SYNC).
    pub fn reports_in_sync(&self, region: u64) -> bool {
        self.view_in_sync(region)
    }

    /// Regions in sync, as this node's kernel sees them.
    pub fn sync_count(&self) -> u64 {
        self.view_sync_count()
    }

    /// Whether regions went out of sync behind the kernel's in-sync hint
    /// since the last call: the kernel should restart its resync scan.
    pub fn take_kick(&mut self) -> bool {
        std::mem::take(&mut self.kick)
    }

    /// Whether this node may change the shared state and answer FLUSHes:
    /// its partition is quorate and a round was decided in its ring.
    fn open(&self) -> bool {
        self.quorate
            && self.is_joined()
            && !self.rounds.due
            && self.rounds.decided_ring == Some(self.ring)
    }

    /// Whether `region` is in sync as this node's kernel should be told:
    /// the shared state, overlaid with this node's own SET_REGION_SYNCs on
    /// their way; a report of a region in sync only counts while the
    /// region is still this node's to recover.
    fn view_in_sync(&self, region: u64) -> bool {
        let shared = self.shared();
        let mine = shared.is_none_or(|s| s.log.recoverer(region) == Some(self.me));
        match (self.overlay.get(&region), shared) {
            (Some(&(value, _)), _) if !value || mine => value,
            (_, Some(s)) => s.log.in_sync(region).unwrap_or(false),
            (_, None) => self.config.sync == SyncMode::NoSync,
        }
    }

    fn view_sync_count(&self) -> u64 {
        let Some(s) = self.shared() else {
            return if self.config.sync == SyncMode::NoSync {
                self.config.region_count
            } else {
                0
            };
        };
        let mut count = s.log.sync_count();
        for &r in self.overlay.keys() {
            match (self.view_in_sync(r), s.log.in_sync(r).unwrap_or(false)) {
                (true, false) => count += 1,
                (false, true) => count -= 1,
                _ => {}
            }
        }
        count
    }

    /// Below it, every region is in sync: the kernel then writes without
    /// asking IS_REMOTE_RECOVERING.
    fn in_sync_hint(&self) -> u64 {
        let count = self.config.region_count;
        if self.view_sync_count() >= count {
            return count;
        }
        let mut hint = self.shared().map_or(0, |s| s.log.first_unsynced());
        for &r in self.overlay.keys() {
            if !self.view_in_sync(r) || r == hint {
                hint = hint.min(r);
            }
        }
        hint
    }

    fn note_sync(&mut self) {
        if self.view_sync_count() >= self.config.region_count {
            self.synced_once = true;
        }
    }

    /// Serves one request.
    pub fn request(&mut self, ticket: Ticket, req: Request<'_>, fx: &mut Vec<Effect>) -> Outcome {
        let ok = Outcome::Now(Ok(Vec::new()));
        let count = self.config.region_count;
        let check = |regions: &[u64]| regions_ok(count, regions);
        match req {
            Request::Resume => {
                self.recovery_halted = false;
                self.lifecycle = Lifecycle::Resumed;
                match self.phase {
                    Phase::Detached => {
                        self.phase = Phase::Joining(None);
                        self.rounds = Rounds {
                            opened: self.rounds.opened,
                            ..Rounds::default()
                        };
                        self.resume_waiters.push(ticket);
                        fx.push(Effect::Join);
                        Outcome::Later
                    }
                    Phase::Joining(_) => {
                        self.resume_waiters.push(ticket);
                        Outcome::Later
                    }
                    Phase::Joined(_) if self.open() => {
                        // A replayed RESUME, or a resume after a suspend:
                        // the kernel restarts its scan.
                        self.synced_once = false;
                        self.note_sync();
                        ok
                    }
                    Phase::Joined(_) => {
                        // Without quorum (or during a round): the kernel
                        // waits, and with it the mirror's I/O.
                        self.counters.quorum_waits += 1;
                        self.resume_waiters.push(ticket);
                        Outcome::Later
                    }
                }
            }
            Request::Presuspend => {
                self.recovery_halted = true;
                ok
            }
            Request::Postsuspend => {
                if self.lifecycle == Lifecycle::Resumed {
                    self.lifecycle = Lifecycle::Suspended;
                }
                self.send_pending(fx);
                ok
            }
            Request::IsClean(r) => match check(&[r]) {
                Ok(()) => {
                    let mine = self.pending.contains(&Op::Mark(r));
                    let clean = match self.shared() {
                        Some(s) => s.log.is_clean(r).unwrap_or(false),
                        None => true,
                    };
                    Outcome::Now(words(&[u64::from(clean && !mine)]))
                }
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::InSync(r) => match check(&[r]) {
                Ok(()) => {
                    let yes = self.synced_once || self.view_in_sync(r);
                    Outcome::Now(words(&[u64::from(yes)]))
                }
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::GetSyncCount => Outcome::Now(words(&[self.view_sync_count()])),
            Request::IsRemoteRecovering(r) => match check(&[r]) {
                Ok(()) => Outcome::Now(Ok(self.remote_recovering(r))),
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::Mark(regions) | Request::Clear(regions) if check(regions).is_err() => {
                Outcome::Now(Err(libc::EINVAL))
            }
            Request::Mark(regions) => {
                self.kernel_marks.extend(regions.iter());
                self.pending.extend(regions.iter().map(|&r| Op::Mark(r)));
                ok
            }
            Request::Clear(regions) => {
                for r in regions.iter() {
                    self.kernel_marks.remove(r);
                }
                self.pending.extend(regions.iter().map(|&r| Op::Clear(r)));
                ok
            }
            Request::SetRegionSync(r, _) if r >= count => Outcome::Now(Err(libc::EINVAL)),
            Request::SetRegionSync(r, value) => {
                self.pending.push(Op::SetSync(r, value));
                let entry = self.overlay.entry(r).or_insert((value, 0));
                *entry = (value, entry.1 + 1);
                self.urgent = true;
                self.note_sync();
                ok
            }
            Request::Flush(marks) => {
                if let Err(e) = check(marks) {
                    return Outcome::Now(Err(e));
                }
                self.kernel_marks.extend(marks.iter());
                self.pending.extend(marks.iter().map(|&r| Op::Mark(r)));
                self.flush(ticket, fx)
            }
            Request::GetResyncWork => {
                if self.open() && !self.recovery_halted {
                    self.send_batch(Barrier::ResyncWork, Vec::new(), Some(ticket), fx);
                    Outcome::Later
                } else {
                    // No recovery without quorum (or while suspending): the
                    // kernel asks again later.
                    Outcome::Now(words(&[0, 0]))
                }
            }
        }
    }

    /// A FLUSH: answered only once every mark this node sent is known to
    /// the group (and written, for a disk log).
    fn flush(&mut self, ticket: Ticket, fx: &mut Vec<Effect>) -> Outcome {
        let new_marks = self.pending.iter().any(|op| matches!(op, Op::Mark(_)));
        if new_marks || !self.deferred.is_empty() {
            if self.open() && self.deferred.is_empty() {
                self.send_batch(Barrier::Flush, vec![ticket], None, fx);
            } else {
                self.counters.quorum_waits += 1;
                self.deferred.push_back(ticket);
            }
            return Outcome::Later;
        }
        if let Some(f) = self.inflight.values_mut().rev().find(|f| f.marks) {
            // Marks sent earlier (by a FLUSH whose answer the kernel gave
            // up on) are still on their way.
            f.tickets.push(ticket);
            return Outcome::Later;
        }
        if let Some(last) = self.held.last() {
            let generation = last.generation;
            self.held.push(Held { ticket, generation });
            self.release_held(fx);
            return Outcome::Later;
        }
        self.counters.flushes += 1;
        if self.open() && !self.pending.is_empty() {
            // Clears never wait: a lost clear costs a resync, never data.
            self.send_batch(Barrier::None, Vec::new(), None, fx);
        }
        Outcome::Now(Ok(Vec::new()))
    }

    /// IS_REMOTE_RECOVERING: yes while another member recovers the region;
    /// and while the region waits for recovery at all, if another member
    /// could start recovering it under this node's write (then it is
    /// queued for priority recovery). After PRESUSPEND never, as cmirrord:
    /// suspending every node at once must not wait on recoveries that
    /// stopped. Without quorum always (above the hint).
    fn remote_recovering(&mut self, region: u64) -> Vec<u64> {
        let count = self.config.region_count;
        if self.recovery_halted {
            return vec![0, count];
        }
        let hint = self.in_sync_hint();
        if !self.open() {
            return vec![1, hint];
        }
        let me = self.me;
        let Some(s) = self.shared() else {
            return vec![1, hint];
        };
        let others = s.members.iter().any(|&m| m != me);
        let recovering = match s.log.recoverer(region) {
            Some(m) => m != me,
            None => {
                let waits = others && !self.view_in_sync(region);
                if waits && !self.pending.contains(&Op::Prioritize(region)) {
                    self.pending.push(Op::Prioritize(region));
                    self.urgent = true;
                }
                waits
            }
        };
        vec![u64::from(recovering), hint]
    }

    fn send_batch(
        &mut self,
        barrier: Barrier,
        tickets: Vec<Ticket>,
        work: Option<Ticket>,
        fx: &mut Vec<Effect>,
    ) {
        let ops = std::mem::take(&mut self.pending);
        self.urgent = false;
        let synced = ops
            .iter()
            .filter_map(|op| match op {
                Op::SetSync(r, _) => Some(*r),
                _ => None,
            })
            .collect();
        let marks = ops.iter().any(|op| matches!(op, Op::Mark(_)));
        let id = self.next_batch;
        self.next_batch += 1;
        self.counters.batches += 1;
        self.counters.ops += ops.len() as u64;
        if !tickets.is_empty() || work.is_some() {
            self.counters.rounds += 1;
        }
        fx.push(Effect::Send(Message::Batch(Batch {
            id,
            ops: ops.clone(),
            barrier,
        })));
        self.inflight.insert(
            id,
            InFlight {
                ops,
                tickets,
                work,
                synced,
                marks,
            },
        );
    }

    /// Sends what is collected, if this node may.
    fn send_pending(&mut self, fx: &mut Vec<Effect>) {
        if self.open() && !self.pending.is_empty() {
            self.send_batch(Barrier::None, Vec::new(), None, fx);
        }
    }

    /// The transport could not send `message`. A batch's operations go back
    /// in front of what was collected since, and the requests it carried
    /// fail with `EAGAIN`, which the kernel resends (with the marks still
    /// collected, a resent FLUSH sends them again). Returns whether the
    /// message was a batch (the rest are the caller's to retry).
    pub fn send_failed(&mut self, message: &Message, fx: &mut Vec<Effect>) -> bool {
        let Message::Batch(b) = message else {
            return false;
        };
        self.counters.send_failures += 1;
        if let Some(f) = self.inflight.remove(&b.id) {
            let mut ops = f.ops;
            self.urgent |= ops
                .iter()
                .any(|op| matches!(op, Op::SetSync(..) | Op::Prioritize(_)));
            ops.append(&mut self.pending);
            self.pending = ops;
            for t in f.tickets.into_iter().chain(f.work) {
                fx.push(Effect::Reply(t, Err(libc::EAGAIN)));
            }
        }
        true
    }

    /// Called when the kernel has no request queued and the group's events
    /// are applied: sends what other members need soon; the writer of a
    /// disk log writes it.
    pub fn end_of_burst(&mut self, fx: &mut Vec<Effect>) {
        if self.urgent && self.open() && !self.pending.is_empty() {
            self.send_batch(Barrier::None, Vec::new(), None, fx);
        }
        self.commit(fx);
        self.release_held(fx);
    }

    /// The writer of a disk log writes what changed and tells the group;
    /// only while this node may change the shared state (a partition
    /// without quorum must never overwrite what the quorate one wrote). The
    /// other members forget what changed (the writer writes it).
    fn commit(&mut self, fx: &mut Vec<Effect>) {
        let me = self.me;
        let open = self.open();
        let Phase::Joined(s) = &mut self.phase else {
            self.writing = false;
            return;
        };
        if s.log.kind() != LogKind::Disk {
            return;
        }
        if s.writer() != Some(me) {
            s.log.commit_done();
            self.writing = false;
            return;
        }
        if !open {
            return;
        }
        if !self.writing {
            // Taking over from another writer: its last writes are unknown.
            s.log.mark_all_dirty();
            self.writing = true;
        }
        let plan = s.log.pending_commit();
        if plan.is_none() && !self.commit_due {
            return;
        }
        self.commit_due = false;
        let lineage = s.lineage;
        let result = match (plan, self.device.as_mut()) {
            (None, _) => Ok(None),
            (Some(plan), Some(d)) => d.commit(&mut s.log, plan).map(Some).map_err(|e| {
                let why = format!(
                    "cannot write log device {}: {e}: log device marked failed",
                    d.status_name()
                );
                (log_device::errno_of(&e), why)
            }),
            (Some(_), None) => Err((libc::ENODEV, "the log device is not open".to_string())),
        };
        let errno = match result {
            Ok(stats) => {
                self.committed = self.committed.max(lineage.generation);
                if let Some(stats) = stats {
                    fx.push(Effect::Disk(stats));
                }
                0
            }
            Err((errno, why)) => {
                if !s.log.device_failed() {
                    fx.push(Effect::Warning(why));
                }
                s.log.set_device_failed();
                self.fail_held(lineage.generation, errno, fx);
                errno
            }
        };
        fx.push(Effect::Send(Message::Committed {
            lineage,
            errno: errno as u32,
        }));
    }

    fn fail_held(&mut self, generation: u64, errno: i32, fx: &mut Vec<Effect>) {
        let (failed, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.generation <= generation);
        self.held = kept;
        for h in failed {
            fx.push(Effect::Reply(h.ticket, Err(errno)));
        }
    }

    /// Answers the FLUSHes whose marks are known (and written).
    fn release_held(&mut self, fx: &mut Vec<Effect>) {
        if !self.open() || self.held.is_empty() {
            return;
        }
        let durable = match self.shared() {
            Some(s) if s.log.kind() == LogKind::Disk => self.committed,
            _ => u64::MAX,
        };
        let (ready, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.generation <= durable);
        self.held = kept;
        for h in ready {
            self.counters.flushes += 1;
            fx.push(Effect::Reply(h.ticket, Ok(Vec::new())));
        }
    }

    /// Sends the FLUSHes that waited for quorum or for the state.
    fn send_deferred(&mut self, fx: &mut Vec<Effect>) {
        if !self.open() || self.deferred.is_empty() {
            return;
        }
        let tickets: Vec<Ticket> = self.deferred.drain(..).collect();
        self.send_batch(Barrier::Flush, tickets, None, fx);
    }

    /// What the quorum service says about the group's ring: quorate, not,
    /// or nothing yet.
    pub fn set_quorate(&mut self, verdict: Option<bool>, fx: &mut Vec<Effect>) {
        if verdict == Some(false) && self.is_joined() && !self.tainted {
            // A quorate partition may exist elsewhere and change the state
            // meanwhile: this copy can no longer be trusted on its own.
            self.tainted = true;
            // The kernel writes regions it has marked without asking; its
            // next request is told to replay CTR and RESUME, and the RESUME
            // waits for quorum: the mirror's I/O on this node stops.
            self.kick = true;
        }
        let quorate = verdict == Some(true);
        if self.quorate == quorate {
            return;
        }
        self.quorate = quorate;
        fx.push(if quorate {
            Effect::Notice("quorate: serving".into())
        } else {
            Effect::Warning(
                "no quorum: FLUSHes with new marks and resync wait until the cluster is \
                 quorate again"
                    .into(),
            )
        });
        if quorate {
            self.maybe_decide(fx);
            self.after_change(fx);
        }
    }

    /// Sends what waited for the group to open.
    fn after_change(&mut self, fx: &mut Vec<Effect>) {
        if !self.open() {
            return;
        }
        if !self.resume_waiters.is_empty() {
            self.synced_once = false;
            self.note_sync();
            for t in self.resume_waiters.drain(..) {
                fx.push(Effect::Reply(t, Ok(Vec::new())));
            }
        }
        self.send_deferred(fx);
        self.release_held(fx);
    }

    /// Leaves the group (the last instance of the log on this node is
    /// destroyed): what was collected goes out first.
    pub fn leave(&mut self, fx: &mut Vec<Effect>) {
        if !self.in_group() {
            return;
        }
        self.send_pending(fx);
        for t in self.resume_waiters.drain(..) {
            fx.push(Effect::Reply(t, Err(libc::ECANCELED)));
        }
        for t in self.deferred.drain(..) {
            fx.push(Effect::Reply(t, Err(libc::ECANCELED)));
        }
        for f in std::mem::take(&mut self.inflight).into_values() {
            for t in f.tickets.into_iter().chain(f.work) {
                fx.push(Effect::Reply(t, Err(libc::ECANCELED)));
            }
        }
        for h in self.held.drain(..) {
            fx.push(Effect::Reply(h.ticket, Err(libc::ECANCELED)));
        }
        self.overlay.clear();
        self.phase = Phase::Detached;
        fx.push(Effect::Leave);
    }

    fn decider(&self) -> Option<MemberId> {
        self.rounds.view.iter().min().copied()
    }

    fn open_round(&mut self, fx: &mut Vec<Effect>) {
        if self.decider() == Some(self.me) {
            self.rounds.opened += 1;
            fx.push(Effect::Send(Message::Round(RoundId {
                decider: self.me,
                number: self.rounds.opened,
            })));
        }
    }

    /// Applies one group event.
    pub fn on_event(&mut self, event: Event, fx: &mut Vec<Effect>) {
        if !self.in_group() {
            return;
        }
        match event {
            Event::Ring(ring) => {
                self.ring = ring;
                self.rounds.due = true;
                self.open_round(fx);
            }
            Event::Change(c) => self.on_change(c, fx),
            Event::Deliver(_, Message::Round(id)) => self.on_round(id, fx),
            Event::Deliver(from, Message::Offer(o)) => self.on_offer(from, o, fx),
            Event::Deliver(_, Message::Decide(id)) => self.on_decide(id, fx),
            Event::Deliver(_, Message::Checkpoint(cp)) => self.on_checkpoint(cp, fx),
            Event::Deliver(from, message @ (Message::Batch(_) | Message::Committed { .. })) => {
                match &mut self.phase {
                    Phase::Joined(_) => self.apply(from, message, fx),
                    Phase::Joining(Some((_, buffer))) => {
                        buffer.push(Event::Deliver(from, message));
                    }
                    Phase::Joining(None) | Phase::Detached => {}
                }
            }
        }
    }

    /// A batch or a commit notice, on the state.
    fn apply(&mut self, from: MemberId, message: Message, fx: &mut Vec<Effect>) {
        let Phase::Joined(s) = &mut self.phase else {
            return;
        };
        match message {
            Message::Batch(b) => {
                let (assigned, refused) = s.apply_batch(from, &b);
                if refused && from == self.me {
                    self.kick = true;
                }
                self.commit_due |=
                    b.barrier == Barrier::Flush || b.ops.iter().any(|op| matches!(op, Op::Mark(_)));
                if from == self.me {
                    self.own_batch_back(b.id, assigned, fx);
                }
                self.note_sync();
            }
            Message::Committed { lineage, errno } => {
                s.tick();
                let ours = lineage.epoch == s.lineage.epoch && lineage.origin == s.lineage.origin;
                if from == self.me || !ours {
                    return;
                }
                if errno != 0 {
                    s.log.set_device_failed();
                    self.fail_held(lineage.generation, errno as i32, fx);
                } else {
                    self.committed = self.committed.max(lineage.generation);
                    self.release_held(fx);
                }
            }
            _ => {}
        }
    }

    fn own_batch_back(&mut self, id: u64, assigned: Option<u64>, fx: &mut Vec<Effect>) {
        let Some(f) = self.inflight.remove(&id) else {
            return;
        };
        for r in f.synced {
            if let Some(entry) = self.overlay.get_mut(&r) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.overlay.remove(&r);
                }
            }
        }
        let generation = self.shared().map_or(0, |s| s.lineage.generation);
        if let Some(t) = f.work {
            let answer = match assigned {
                Some(r) if self.open() && !self.recovery_halted => vec![1, r],
                _ => vec![0, 0],
            };
            fx.push(Effect::Reply(t, Ok(answer)));
        }
        for ticket in f.tickets {
            self.held.push(Held { ticket, generation });
        }
        self.release_held(fx);
    }

    fn on_change(&mut self, c: ConfigChange, fx: &mut Vec<Effect>) {
        let mut view = c.members.clone();
        view.sort();
        self.rounds.view = view;
        self.rounds.due = true;
        self.rounds.current = None;
        self.rounds.offers.clear();
        match &mut self.phase {
            Phase::Joined(s) => {
                let (lost, restarted) = s.apply_change(&c);
                if restarted {
                    self.kick = true;
                }
                for (m, marks) in lost {
                    fx.push(Effect::Notice(format!(
                        "{m} left with {marks} region(s) marked: they resync"
                    )));
                }
            }
            Phase::Joining(Some((_, buffer))) => buffer.push(Event::Change(c)),
            Phase::Joining(None) | Phase::Detached => {}
        }
        self.open_round(fx);
    }

    fn on_round(&mut self, id: RoundId, fx: &mut Vec<Effect>) {
        if Some(id.decider) != self.decider() {
            return; // opened before a later change: another round follows
        }
        self.rounds.current = Some(id);
        self.rounds.offers.clear();
        self.rounds.closed = false;
        let me = self.me;
        let claim = self.shared().map(|s| {
            let mut apart: BTreeSet<u64> = s.apart().into_iter().collect();
            apart.extend(s.log.recovered_by(me));
            Claim {
                lineage: s.lineage,
                digest: s.digest(),
                tainted: self.tainted,
                marks: s.log.marks_of(me).collect(),
                apart: apart.into_iter().collect(),
            }
        });
        fx.push(Effect::Send(Message::Offer(Offer {
            round: id,
            region_count: self.config.region_count,
            region_size: self.config.region_size,
            claim,
        })));
    }

    fn on_offer(&mut self, from: MemberId, offer: Offer, fx: &mut Vec<Effect>) {
        if Some(offer.round) != self.rounds.current || !self.rounds.view.contains(&from) {
            return;
        }
        self.rounds.offers.insert(from, offer);
        self.maybe_decide(fx);
    }

    /// The decider closes the round once every member answered and its
    /// partition is quorate.
    fn maybe_decide(&mut self, fx: &mut Vec<Effect>) {
        let Some(id) = self.rounds.current else {
            return;
        };
        if id.decider != self.me
            || self.rounds.closed
            || !self.quorate
            || self.rounds.offers.len() != self.rounds.view.len()
        {
            return;
        }
        self.rounds.closed = true;
        fx.push(Effect::Send(Message::Decide(id)));
    }

    fn on_decide(&mut self, id: RoundId, fx: &mut Vec<Effect>) {
        if Some(id) != self.rounds.current || self.rounds.offers.len() != self.rounds.view.len() {
            return;
        }
        let offers = std::mem::take(&mut self.rounds.offers);
        let Some(decision) = Decision::make(id, &offers) else {
            return;
        };
        self.rounds.due = false;
        self.rounds.decided_ring = Some(self.ring);
        self.counters.decided += 1;
        if decision.misfits.contains(&self.me) {
            let (count, size) = decision.geometry;
            fx.push(Effect::Warning(format!(
                "the group's log has {count} regions of {size} sectors, this node's {} of {}: \
                 not joining (the tables differ)",
                self.config.region_count, self.config.region_size
            )));
            for t in self.resume_waiters.drain(..) {
                fx.push(Effect::Reply(t, Err(libc::EINVAL)));
            }
            self.leave(fx);
            return;
        }
        let winner = self.is_joined() && decision.winners.contains(&self.me);
        if winner {
            self.apply_decision(id, &decision, &offers, fx);
        } else if decision.history.is_none() && id.decider == self.me {
            self.start_fresh(id, &decision, &offers, fx);
        } else {
            if let Phase::Joined(s) = &self.phase {
                fx.push(Effect::Warning(format!(
                    "this node's state (epoch {}, generation {}) lost to the group's newer \
                     history: taking the group's",
                    s.lineage.epoch, s.lineage.generation
                )));
            }
            self.phase = Phase::Joining(Some((id, Vec::new())));
        }
    }

    /// A winner applies the round's decision to its state: what the losing
    /// members may have written goes out of sync, and the lineage moves on.
    fn apply_decision(
        &mut self,
        id: RoundId,
        decision: &Decision,
        offers: &BTreeMap<MemberId, Offer>,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.me;
        let Phase::Joined(s) = &mut self.phase else {
            return;
        };
        // When two histories meet, every region either side marked (its
        // kernels may have written it while the other side recovered or
        // wrote it) or recovered while apart may differ between the legs.
        let mut resync: BTreeSet<u64> = BTreeSet::new();
        for (&m, offer) in offers {
            let Some(claim) = &offer.claim else {
                continue;
            };
            if Some((claim.lineage, claim.digest)) == decision.history {
                if decision.merged {
                    resync.extend(claim.marks.iter().copied());
                }
                continue;
            }
            resync.extend(claim.marks.iter().chain(&claim.apart).copied());
            // Its kernel still has these marked.
            let marks: Vec<u64> = claim
                .marks
                .iter()
                .copied()
                .filter(|&r| r < s.log.region_count())
                .collect();
            let _ = s.log.mark(m, &marks);
        }
        if decision.merged {
            resync.extend(s.apart());
            self.counters.merges += 1;
            self.counters.merge_resync += resync.len() as u64;
            fx.push(Effect::Warning(format!(
                "merged after a partition: {} region(s) either side may have written \
                 while apart resync",
                resync.len()
            )));
        }
        if !resync.is_empty() {
            s.log.set_out_of_sync(resync.iter().copied());
            self.kick = true;
        }
        if s.away.is_empty() {
            s.apart.clear();
        }
        s.lineage.epoch += 1;
        s.lineage.origin = id.decider;
        s.tick();
        s.stateful = decision.winners.iter().copied().collect();
        s.decided = Some(id);
        self.commit_due = true;
        self.tainted = false;
        if decision.sender == me && !decision.targets.is_empty() {
            self.send_checkpoint(id, decision.targets.clone(), fx);
        }
        self.after_change(fx);
    }

    fn send_checkpoint(&mut self, id: RoundId, targets: Vec<MemberId>, fx: &mut Vec<Effect>) {
        let Phase::Joined(s) = &self.phase else {
            return;
        };
        self.counters.checkpoints_sent += 1;
        fx.push(Effect::Send(Message::Checkpoint(Checkpoint {
            round: id,
            lineage: s.lineage,
            targets,
            snapshot: s.encode(),
        })));
    }

    /// Nobody holds the state: the decider starts it from the table, or a
    /// disk log from its device, and sends it to the others.
    ///
    /// If copies existed but none can be trusted (every one was kept
    /// through a time without quorum), the table's `sync`/`nosync` no
    /// longer describes the legs: a core log starts all out of sync, a disk
    /// log from its device's bitmap.
    fn start_fresh(
        &mut self,
        id: RoundId,
        decision: &Decision,
        offers: &BTreeMap<MemberId, Offer>,
        fx: &mut Vec<Effect>,
    ) {
        let mut config = self.config.clone();
        if decision.lost {
            config.sync = SyncMode::Default;
            fx.push(Effect::Warning(
                "every copy of the log's state was kept through a time without quorum (a \
                 quorate partition may have changed it meanwhile): starting it again"
                    .into(),
            ));
        }
        let mut log = LogState::new(
            &config,
            Sharing::Shared,
            Backing::memory(config.region_count),
        );
        let from = if config.kind == LogKind::Disk {
            match self.device.as_mut() {
                Some(d) => {
                    let dev = d.status_name().to_string();
                    match log_device::load(&mut log, d, config.sync) {
                        Ok(note) => {
                            if let Some(note) = note {
                                let (loud, text) =
                                    crate::store::note_text(note, &dev, self.config.region_count);
                                fx.push(if loud {
                                    Effect::Warning(text)
                                } else {
                                    Effect::Notice(text)
                                });
                            }
                            format!("log device {dev}")
                        }
                        Err(e) => {
                            log.resume_from_disk(0, &[]);
                            log.set_device_failed();
                            fx.push(Effect::Warning(format!(
                                "cannot read log device {dev}: {e}: all regions resync"
                            )));
                            format!("an unreadable log device {dev}")
                        }
                    }
                }
                None => {
                    log.resume_from_disk(0, &[]);
                    log.set_device_failed();
                    "no log device (all regions resync)".to_string()
                }
            }
        } else {
            log.resume_core();
            if decision.lost {
                log.set_out_of_sync(0..config.region_count);
            }
            "the table".to_string()
        };
        // Copies kept without quorum are not trusted, but their members'
        // kernels still have their marks: marked, and out of sync with
        // what they recovered while apart.
        for (&m, offer) in offers {
            let Some(claim) = &offer.claim else {
                continue;
            };
            let count = log.region_count();
            let marks: Vec<u64> = claim.marks.iter().copied().filter(|&r| r < count).collect();
            let _ = log.mark(m, &marks);
            log.set_out_of_sync(
                claim
                    .marks
                    .iter()
                    .chain(&claim.apart)
                    .copied()
                    .filter(|&r| r < count),
            );
        }
        self.counters.fresh_starts += 1;
        let shared = Shared::fresh(log, self.me, &self.rounds.view, id);
        fx.push(Effect::Notice(format!(
            "nobody holds the log's state: starting it from {from}: {} of {} regions in sync",
            shared.log.sync_count(),
            shared.log.region_count()
        )));
        self.phase = Phase::Joined(Box::new(shared));
        self.writing = false;
        self.commit_due = true;
        self.committed = 0;
        self.tainted = false;
        if !decision.targets.is_empty() {
            self.send_checkpoint(id, decision.targets.clone(), fx);
        }
        self.finish_join(fx);
    }

    fn on_checkpoint(&mut self, cp: Checkpoint, fx: &mut Vec<Effect>) {
        match &mut self.phase {
            Phase::Joined(s) => {
                if s.decided == Some(cp.round) {
                    let members = &s.members;
                    s.stateful
                        .extend(cp.targets.iter().filter(|m| members.contains(m)));
                    s.tick();
                }
            }
            Phase::Joining(Some((awaited, _))) if *awaited == cp.round => {
                if cp.targets.contains(&self.me) {
                    self.load_checkpoint(cp, fx);
                }
            }
            Phase::Joining(_) if cp.targets.contains(&self.me) => {
                self.counters.stale_checkpoints += 1;
                fx.push(Effect::Notice(format!(
                    "ignoring a stale checkpoint (round {} of {}, epoch {})",
                    cp.round.number, cp.round.decider, cp.lineage.epoch
                )));
            }
            Phase::Joining(_) | Phase::Detached => {}
        }
    }

    /// Whether this member waits for the checkpoint of a decided round.
    #[cfg(test)]
    pub fn awaits_checkpoint(&self) -> bool {
        matches!(self.phase, Phase::Joining(Some(_)))
    }

    fn load_checkpoint(&mut self, cp: Checkpoint, fx: &mut Vec<Effect>) {
        let Phase::Joining(Some((_, buffer))) = std::mem::replace(&mut self.phase, Phase::Detached)
        else {
            return;
        };
        let mut shared = match Shared::decode(&self.config, &cp.snapshot, cp.round) {
            Ok(s) if s.lineage == cp.lineage => s,
            Ok(_) | Err(_) => {
                self.phase = Phase::Joining(Some((cp.round, buffer)));
                fx.push(Effect::Warning(
                    "ignoring a checkpoint that does not decode as its round announced".into(),
                ));
                return;
            }
        };
        shared.log.mark_all_dirty();
        self.counters.checkpoints_loaded += 1;
        self.tainted = false;
        self.phase = Phase::Joined(Box::new(shared));
        self.writing = false;
        self.committed = 0;
        for event in buffer {
            match event {
                Event::Deliver(from, m) => self.apply(from, m, fx),
                Event::Change(c) => {
                    if let Phase::Joined(s) = &mut self.phase {
                        let (_, restarted) = s.apply_change(&c);
                        self.kick |= restarted;
                    }
                }
                Event::Ring(_) => {}
            }
        }
        if let Phase::Joined(s) = &mut self.phase {
            let members = &s.members;
            s.stateful
                .extend(cp.targets.iter().filter(|m| members.contains(m)));
            s.tick();
            fx.push(Effect::Notice(format!(
                "received the log's state: {} of {} regions in sync, {} member(s)",
                s.log.sync_count(),
                s.log.region_count(),
                s.members.len()
            )));
        }
        self.finish_join(fx);
    }

    /// This node holds the state now.
    fn finish_join(&mut self, fx: &mut Vec<Effect>) {
        self.synced_once = false;
        self.note_sync();
        // The state may lack marks this node's kernel holds (its history
        // lost a merge, or nobody was left holding the state): they go out
        // again, and the FLUSHes waiting on them wait for that batch.
        let me = self.me;
        if let Some(s) = self.shared() {
            let missing: Vec<Op> = self
                .kernel_marks
                .iter()
                .filter(|&&r| !s.log.marked_by(me, r) && !self.pending.contains(&Op::Mark(r)))
                .map(|&r| Op::Mark(r))
                .collect();
            self.pending.splice(0..0, missing);
        }
        for h in std::mem::take(&mut self.held) {
            self.deferred.push_back(h.ticket);
        }
        self.after_change(fx);
    }
}

/// What a round decided, computed by every member from the same offers.
struct Decision {
    /// The winning history (lineage and digest); `None`: nobody holds the
    /// state.
    history: Option<(Lineage, u64)>,
    /// Members holding the winning state.
    winners: Vec<MemberId>,
    /// Who sends the checkpoint.
    sender: MemberId,
    /// Members that load it.
    targets: Vec<MemberId>,
    /// Members whose table does not fit the state.
    misfits: Vec<MemberId>,
    /// The state's geometry.
    geometry: (u64, u32),
    /// Whether two histories met (the losers' writes resync).
    merged: bool,
    /// Whether copies existed but none can be trusted.
    lost: bool,
}

impl Decision {
    fn make(id: RoundId, offers: &BTreeMap<MemberId, Offer>) -> Option<Self> {
        let geometry_of = |o: &Offer| (o.region_count, o.region_size);
        // A copy kept through a time without quorum may lack what a quorate
        // partition did meanwhile: it only counts if no other copy does,
        // and then not at all (the state starts again, all out of sync).
        let trusted = offers
            .values()
            .any(|o| o.claim.as_ref().is_some_and(|c| !c.tainted));
        let history = |o: &Offer| {
            o.claim
                .as_ref()
                .filter(|c| trusted && !c.tainted)
                .map(|c| (c.lineage, c.digest))
        };
        let best = offers
            .values()
            .filter_map(|o| history(o).map(|h| (h, geometry_of(o))))
            .max();
        let geometry = match best {
            Some((_, g)) => g,
            None => geometry_of(offers.get(&id.decider)?),
        };
        let winning = best.map(|(h, _)| h);
        let misfits: Vec<MemberId> = offers
            .iter()
            .filter(|(_, o)| geometry_of(o) != geometry)
            .map(|(&m, _)| m)
            .collect();
        let winners: Vec<MemberId> = offers
            .iter()
            .filter(|(_, o)| winning.is_some() && history(o) == winning)
            .map(|(&m, _)| m)
            .collect();
        let merged = offers.values().any(|o| {
            o.claim
                .as_ref()
                .is_some_and(|c| Some((c.lineage, c.digest)) != winning)
                && geometry_of(o) == geometry
        });
        let targets = offers
            .keys()
            .filter(|m| {
                !winners.contains(m)
                    && !misfits.contains(m)
                    && (winning.is_some() || **m != id.decider)
            })
            .copied()
            .collect();
        let sender = winners.first().copied().unwrap_or(id.decider);
        let lost = !trusted && offers.values().any(|o| o.claim.is_some());
        Some(Self {
            lost,
            history: winning,
            winners,
            sender,
            targets,
            misfits,
            geometry,
            merged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(round: RoundId, claim: Option<Lineage>) -> Offer {
        Offer {
            round,
            region_count: 10,
            region_size: 8,
            claim: claim.map(|lineage| Claim {
                lineage,
                digest: lineage.generation,
                tainted: false,
                marks: vec![],
                apart: vec![],
            }),
        }
    }

    #[test]
    fn the_newest_lineage_wins_and_the_rest_load_it() {
        let (a, b, c) = (
            MemberId::new(1, 1),
            MemberId::new(2, 2),
            MemberId::new(3, 3),
        );
        let id = RoundId {
            decider: a,
            number: 1,
        };
        let old = Lineage {
            epoch: 4,
            generation: 90,
            origin: a,
        };
        let new = Lineage {
            epoch: 5,
            generation: 10,
            origin: b,
        };
        let offers = [
            (a, offer(id, Some(old))),
            (b, offer(id, Some(new))),
            (c, offer(id, None)),
        ]
        .into_iter()
        .collect();
        let d = Decision::make(id, &offers).unwrap();
        assert_eq!(d.history.map(|h| h.0), Some(new));
        assert_eq!(d.winners, [b]);
        assert_eq!(d.sender, b);
        assert_eq!(d.targets, [a, c]);
        assert!(d.merged);
        let fresh = [(a, offer(id, None)), (c, offer(id, None))]
            .into_iter()
            .collect();
        let d = Decision::make(id, &fresh).unwrap();
        assert_eq!((d.history, d.sender, d.merged), (None, a, false));
        assert_eq!(d.targets, [c], "the decider starts the state itself");
    }
}
