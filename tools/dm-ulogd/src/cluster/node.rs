// SPDX-License-Identifier: GPL-2.0

//! One node's side of one clustered log: answers its kernel's requests and
//! applies the group's events to its [`Replica`].
//!
//! - Reads (IN_SYNC, IS_CLEAN, GET_SYNC_COUNT, IS_REMOTE_RECOVERING) are
//!   answered at once from the replica, overlaid with this node's own
//!   SET_REGION_SYNCs not yet delivered back (so the kernel never reads an
//!   older answer than the one it wrote).
//! - MARK, CLEAR and SET_REGION_SYNC are answered at once and collected; a
//!   FLUSH with marks, or GET_RESYNC_WORK, sends what was collected as one
//!   message and is answered when that message comes back in the total
//!   order: then every member has applied it. A FLUSH without marks sends
//!   its clears without waiting (a lost clear costs a resync, never data).
//! - RESUME joins the group and is answered once this node holds the state:
//!   from a checkpoint, or by taking it over when no holder is left.
//!
//! Pure: no I/O, no clock. Outputs are [`Effect`]s for the caller to carry
//! out (send, join, leave, reply).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::replica::Replica;
use super::wire::{Barrier, Batch, Checkpoint, Message, Op};
use crate::member::{ConfigChange, MemberId};

/// Identifies a request whose answer comes later.
pub type Ticket = u64;

/// A reply's payload words, or a positive errno.
pub type Answer = Result<Vec<u64>, i32>;

/// A kernel request to a clustered log (CTR, DTR, GET_REGION_SIZE and the
/// status requests are the caller's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// RESUME.
    Resume,
    /// PRESUSPEND.
    Presuspend,
    /// POSTSUSPEND.
    Postsuspend,
    /// IS_CLEAN.
    IsClean(u64),
    /// IN_SYNC.
    InSync(u64),
    /// FLUSH, with the marks of an integrated flush.
    Flush(Vec<u64>),
    /// MARK_REGION.
    Mark(Vec<u64>),
    /// CLEAR_REGION.
    Clear(Vec<u64>),
    /// GET_RESYNC_WORK.
    GetResyncWork,
    /// SET_REGION_SYNC.
    SetRegionSync(u64, bool),
    /// GET_SYNC_COUNT.
    GetSyncCount,
    /// IS_REMOTE_RECOVERING.
    IsRemoteRecovering(u64),
}

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
}

/// A group event, in the group's total order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message and its sender.
    Deliver(MemberId, Message),
    /// A membership change.
    Change(ConfigChange),
}

/// Counts for the figures: how many group messages, and how many waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    /// Batches sent.
    pub batches: u64,
    /// Batches whose sender waited for them (FLUSH with marks,
    /// GET_RESYNC_WORK): one group round each.
    pub rounds: u64,
    /// FLUSHes answered.
    pub flushes: u64,
    /// Operations sent in batches.
    pub ops: u64,
    /// Checkpoints sent.
    pub checkpoints_sent: u64,
    /// Checkpoints loaded (joins served by another member).
    pub checkpoints_loaded: u64,
    /// Times this node took the state over alone.
    pub takeovers: u64,
}

struct InFlight {
    /// Its operations, for our own copy should we leave before it is back.
    ops: Vec<Op>,
    barrier: Barrier,
    ticket: Option<Ticket>,
    /// Regions of this batch's SET_REGION_SYNCs, in the overlay until the
    /// batch comes back.
    synced: Vec<u64>,
}

#[derive(Default)]
struct Joining {
    /// Our own join was seen (events before it are not ours).
    seen_join: bool,
    /// Members that were in the group before us and may hold the state.
    possible_senders: BTreeSet<MemberId>,
    /// Members that joined with us.
    cohort: BTreeSet<MemberId>,
    members: Vec<MemberId>,
    /// Events since our join, replayed over the checkpoint.
    buffer: Vec<Event>,
    /// For each member that joined with or after us: buffer length at its
    /// join (what it has seen, should we have to send it the state).
    joined_at: BTreeMap<MemberId, usize>,
}

enum Phase {
    /// Not in the group (before RESUME, after POSTSUSPEND).
    Detached,
    /// In the group, waiting for the state.
    Joining(Joining),
    /// Serving.
    Joined,
}

/// One node's view of one clustered log.
pub struct ClusterLog {
    me: MemberId,
    replica: Replica,
    phase: Phase,
    resume_waiters: Vec<Ticket>,
    pending: Vec<Op>,
    /// `pending` holds what other members need soon (SET_REGION_SYNC, a
    /// priority request) even if no barrier follows.
    urgent: bool,
    inflight: VecDeque<InFlight>,
    /// This node's SET_REGION_SYNCs not yet delivered back: value and how
    /// many are in flight.
    overlay: BTreeMap<u64, (bool, u32)>,
    deferred: VecDeque<(Ticket, Request)>,
    /// Regions went out of sync behind the kernel's in-sync hint.
    kick: bool,
    /// Every region was in sync once since RESUME: IN_SYNC then says yes
    /// (as cmirrord: a write must keep going to every leg).
    synced_once: bool,
    counters: ClusterCounters,
}

fn regions_ok(count: u64, regions: &[u64]) -> Result<(), i32> {
    if regions.iter().all(|&r| r < count) {
        Ok(())
    } else {
        Err(libc::EINVAL)
    }
}

impl ClusterLog {
    /// A log just constructed on this node (`me`), not in its group yet.
    pub fn new(me: MemberId, region_count: u64, region_size: u32, all_in_sync: bool) -> Self {
        Self {
            me,
            replica: Replica::new(region_count, region_size, all_in_sync),
            phase: Phase::Detached,
            resume_waiters: Vec::new(),
            pending: Vec::new(),
            urgent: false,
            inflight: VecDeque::new(),
            overlay: BTreeMap::new(),
            deferred: VecDeque::new(),
            kick: false,
            synced_once: false,
            counters: ClusterCounters::default(),
        }
    }

    /// This node's member id.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Takes the state an instance of the same log left its group with on
    /// this node (a table reload, or this one's own last time), if it fits,
    /// before this one holds any: used only should it find the group empty.
    pub fn adopt(&mut self, replica: Replica) -> bool {
        let fits = replica.region_count() == self.replica.region_count()
            && replica.region_size() == self.replica.region_size();
        if fits && !self.is_joined() {
            self.replica = replica;
            true
        } else {
            false
        }
    }

    /// Whether this node serves the log (holds the state, in the group).
    pub fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Joined)
    }

    /// Whether this node is in the log's group (joined or joining).
    pub fn in_group(&self) -> bool {
        !matches!(self.phase, Phase::Detached)
    }

    /// The counters.
    pub fn counters(&self) -> ClusterCounters {
        self.counters
    }

    /// Whether regions went out of sync behind the kernel's in-sync hint
    /// since the last call: the kernel should restart its resync scan.
    pub fn take_kick(&mut self) -> bool {
        std::mem::take(&mut self.kick)
    }

    fn view_in_sync(&self, region: u64) -> bool {
        match self.overlay.get(&region) {
            Some(&(value, _)) => value,
            None => self.replica.in_sync(region),
        }
    }

    fn view_sync_count(&self) -> u64 {
        let mut count = self.replica.sync_count();
        for (&r, &(value, _)) in &self.overlay {
            match (value, self.replica.in_sync(r)) {
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
        let count = self.replica.region_count();
        if self.view_sync_count() >= count {
            return count;
        }
        let mut hint = self.replica.first_unsynced();
        for (&r, &(value, _)) in &self.overlay {
            if !value || r == hint {
                hint = hint.min(r);
            }
        }
        hint
    }

    fn note_sync(&mut self) {
        if self.view_sync_count() >= self.replica.region_count() {
            self.synced_once = true;
        }
    }

    /// Serves one request.
    pub fn request(&mut self, ticket: Ticket, req: Request, fx: &mut Vec<Effect>) -> Outcome {
        let ok = Outcome::Now(Ok(Vec::new()));
        let count = self.replica.region_count();
        let check = |regions: &[u64]| regions_ok(count, regions);
        match req {
            Request::Resume => match self.phase {
                Phase::Detached => {
                    self.phase = Phase::Joining(Joining::default());
                    self.resume_waiters.push(ticket);
                    fx.push(Effect::Join);
                    Outcome::Later
                }
                Phase::Joining(_) => {
                    self.resume_waiters.push(ticket);
                    Outcome::Later
                }
                Phase::Joined => {
                    // A replayed RESUME: the kernel restarts its scan.
                    self.synced_once = false;
                    self.note_sync();
                    ok
                }
            },
            Request::Presuspend => ok,
            Request::Postsuspend => {
                self.leave(fx);
                ok
            }
            Request::IsClean(r) => match check(&[r]) {
                Ok(()) => {
                    let mine = self.pending.contains(&Op::Mark(r));
                    let clean = !mine && !self.replica.is_marked(r);
                    Outcome::Now(Ok(vec![u64::from(clean)]))
                }
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::InSync(r) => match check(&[r]) {
                Ok(()) => {
                    let yes = self.synced_once || self.view_in_sync(r);
                    Outcome::Now(Ok(vec![u64::from(yes)]))
                }
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::GetSyncCount => Outcome::Now(Ok(vec![self.view_sync_count()])),
            Request::IsRemoteRecovering(r) => match check(&[r]) {
                Ok(()) => Outcome::Now(Ok(self.remote_recovering(r))),
                Err(e) => Outcome::Now(Err(e)),
            },
            Request::Mark(regions) | Request::Clear(regions) if check(&regions).is_err() => {
                Outcome::Now(Err(libc::EINVAL))
            }
            Request::Mark(regions) => {
                self.pending.extend(regions.into_iter().map(Op::Mark));
                ok
            }
            Request::Clear(regions) => {
                self.pending.extend(regions.into_iter().map(Op::Clear));
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
                if let Err(e) = check(&marks) {
                    return Outcome::Now(Err(e));
                }
                self.pending.extend(marks.into_iter().map(Op::Mark));
                let has_marks = self.pending.iter().any(|op| matches!(op, Op::Mark(_)));
                match self.phase {
                    Phase::Joined if has_marks => {
                        self.counters.flushes += 1;
                        self.send_batch(Barrier::Flush, Some(ticket), fx);
                        Outcome::Later
                    }
                    Phase::Joined => {
                        self.counters.flushes += 1;
                        if !self.pending.is_empty() {
                            self.send_batch(Barrier::None, None, fx);
                        }
                        ok
                    }
                    Phase::Joining(_) if has_marks => {
                        self.deferred
                            .push_back((ticket, Request::Flush(Vec::new())));
                        Outcome::Later
                    }
                    // The kernel writes nothing while suspended: the marks
                    // go with the first batch after RESUME.
                    Phase::Joining(_) | Phase::Detached => ok,
                }
            }
            Request::GetResyncWork => match self.phase {
                Phase::Joined => {
                    self.send_batch(Barrier::ResyncWork, Some(ticket), fx);
                    Outcome::Later
                }
                Phase::Joining(_) => {
                    self.deferred.push_back((ticket, Request::GetResyncWork));
                    Outcome::Later
                }
                Phase::Detached => Outcome::Now(Ok(vec![0, 0])),
            },
        }
    }

    /// IS_REMOTE_RECOVERING: yes while another member recovers the region;
    /// and while the region waits for recovery at all, if another member
    /// could start recovering it under this node's write (then it is
    /// queued for priority recovery).
    fn remote_recovering(&mut self, region: u64) -> Vec<u64> {
        let me = self.me;
        let others = self.replica.members().iter().any(|&m| m != me);
        let recovering = match self.replica.recoverer(region) {
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
        vec![u64::from(recovering), self.in_sync_hint()]
    }

    fn send_batch(&mut self, barrier: Barrier, ticket: Option<Ticket>, fx: &mut Vec<Effect>) {
        let ops = std::mem::take(&mut self.pending);
        self.urgent = false;
        let synced = ops
            .iter()
            .filter_map(|op| match op {
                Op::SetSync(r, _) => Some(*r),
                _ => None,
            })
            .collect();
        self.counters.batches += 1;
        self.counters.ops += ops.len() as u64;
        if ticket.is_some() {
            self.counters.rounds += 1;
        }
        self.inflight.push_back(InFlight {
            ops: ops.clone(),
            barrier,
            ticket,
            synced,
        });
        fx.push(Effect::Send(Message::Batch(Batch { ops, barrier })));
    }

    /// Sends what is collected if other members need it soon: called when
    /// the kernel has no request queued, so a burst still travels as one.
    pub fn send_urgent(&mut self, fx: &mut Vec<Effect>) {
        if self.urgent && !self.pending.is_empty() && self.is_joined() {
            self.send_batch(Barrier::None, None, fx);
        }
    }

    fn leave(&mut self, fx: &mut Vec<Effect>) {
        if !self.in_group() {
            return;
        }
        if self.is_joined() && !self.pending.is_empty() {
            self.send_batch(Barrier::None, None, fx);
        }
        // What we sent reaches the others before our departure; our copy
        // (kept for a lone comeback) gets our own last word too.
        let mut last_word = std::mem::take(&mut self.pending);
        for f in self.inflight.iter_mut().rev() {
            last_word.splice(0..0, std::mem::take(&mut f.ops));
        }
        let _ = self.replica.apply_batch(
            self.me,
            &Batch {
                ops: last_word,
                barrier: Barrier::None,
            },
        );
        self.overlay.clear();
        for f in self.inflight.drain(..) {
            if let Some(t) = f.ticket {
                let answer = match f.barrier {
                    Barrier::ResyncWork => vec![0, 0],
                    Barrier::Flush | Barrier::None => Vec::new(),
                };
                fx.push(Effect::Reply(t, Ok(answer)));
            }
        }
        for t in self.resume_waiters.drain(..) {
            fx.push(Effect::Reply(t, Err(libc::ECANCELED)));
        }
        for (t, _) in self.deferred.drain(..) {
            fx.push(Effect::Reply(t, Err(libc::ECANCELED)));
        }
        self.phase = Phase::Detached;
        fx.push(Effect::Leave);
    }

    /// Applies one group event.
    pub fn on_event(&mut self, event: Event, fx: &mut Vec<Effect>) {
        match &mut self.phase {
            Phase::Detached => {}
            Phase::Joined => self.apply_joined(event, fx),
            Phase::Joining(j) => {
                if !j.seen_join {
                    if let Event::Change(c) = &event {
                        if c.joined.contains(&self.me) {
                            j.seen_join = true;
                            j.members.clone_from(&c.members);
                            j.cohort = c.joined.iter().copied().collect();
                            j.possible_senders = c
                                .members
                                .iter()
                                .filter(|m| !j.cohort.contains(m))
                                .copied()
                                .collect();
                            for &m in c.joined.iter().filter(|&&m| m != self.me) {
                                j.joined_at.insert(m, 0);
                            }
                            self.maybe_take_over(fx);
                        }
                    }
                    return;
                }
                if let Event::Deliver(_, Message::Checkpoint(cp)) = &event {
                    if let Some(&(_, after)) = cp.targets.iter().find(|(m, _)| *m == self.me) {
                        let cp = cp.clone();
                        self.load_checkpoint(cp, after, fx);
                        return;
                    }
                }
                j.buffer.push(event);
                if let Some(Event::Change(c)) = j.buffer.last() {
                    j.members.clone_from(&c.members);
                    for m in &c.left {
                        j.possible_senders.remove(m);
                        j.cohort.remove(m);
                        j.joined_at.remove(m);
                    }
                    let at = j.buffer.len();
                    for &m in &c.joined {
                        j.joined_at.insert(m, at);
                    }
                    self.maybe_take_over(fx);
                }
            }
        }
    }

    /// Takes the state over when no member that could hold it is left and
    /// this node is the lowest of those that joined with it.
    fn maybe_take_over(&mut self, fx: &mut Vec<Effect>) {
        let Phase::Joining(j) = &mut self.phase else {
            return;
        };
        if !j.possible_senders.is_empty() || j.cohort.iter().next() != Some(&self.me) {
            return;
        }
        let seen = j.buffer.len();
        let awaiting: BTreeMap<MemberId, u64> = j
            .joined_at
            .iter()
            .filter(|(m, _)| j.members.contains(m))
            .map(|(&m, &at)| (m, (seen - at) as u64))
            .collect();
        let members = std::mem::take(&mut j.members);
        self.replica.restart_alone(self.me, &members, awaiting);
        self.counters.takeovers += 1;
        self.phase = Phase::Joined;
        fx.push(Effect::Notice(format!(
            "holds the log's state: {} of {} regions in sync, {} member(s)",
            self.replica.sync_count(),
            self.replica.region_count(),
            self.replica.members().len()
        )));
        self.send_checkpoint(fx);
        self.finish_join(fx);
    }

    fn send_checkpoint(&mut self, fx: &mut Vec<Effect>) {
        if self.replica.awaiting().is_empty() {
            return;
        }
        let targets = self
            .replica
            .awaiting()
            .iter()
            .map(|(&m, &seen)| (m, seen))
            .collect();
        self.counters.checkpoints_sent += 1;
        fx.push(Effect::Send(Message::Checkpoint(Checkpoint {
            targets,
            snapshot: self.replica.encode(),
        })));
    }

    fn load_checkpoint(&mut self, cp: Checkpoint, after: u64, fx: &mut Vec<Effect>) {
        let Phase::Joining(j) = std::mem::replace(&mut self.phase, Phase::Joined) else {
            return;
        };
        let snapshot = match Replica::decode(&cp.snapshot) {
            Ok(s) => s,
            Err(e) => {
                self.phase = Phase::Joining(j);
                fx.push(Effect::Notice(format!("ignoring a bad checkpoint: {e}")));
                return;
            }
        };
        if snapshot.region_count() != self.replica.region_count()
            || snapshot.region_size() != self.replica.region_size()
        {
            fx.push(Effect::Notice(format!(
                "the group's log has {} regions of {} sectors, this node's {} of {}: \
                 not joining (the tables differ)",
                snapshot.region_count(),
                snapshot.region_size(),
                self.replica.region_count(),
                self.replica.region_size()
            )));
            self.phase = Phase::Joining(j);
            for t in self.resume_waiters.drain(..) {
                fx.push(Effect::Reply(t, Err(libc::EINVAL)));
            }
            self.leave(fx);
            return;
        }
        self.replica = snapshot;
        self.counters.checkpoints_loaded += 1;
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        if skip > j.buffer.len() {
            fx.push(Effect::Notice(format!(
                "checkpoint covers {after} events, only {} were seen: state may be off",
                j.buffer.len()
            )));
        }
        for event in j.buffer.into_iter().skip(skip) {
            self.apply_joined(event, fx);
        }
        self.replica.apply_checkpoint(&cp.targets);
        fx.push(Effect::Notice(format!(
            "received the log's state: {} of {} regions in sync, {} member(s)",
            self.replica.sync_count(),
            self.replica.region_count(),
            self.replica.members().len()
        )));
        self.finish_join(fx);
    }

    fn finish_join(&mut self, fx: &mut Vec<Effect>) {
        self.synced_once = false;
        self.note_sync();
        for t in self.resume_waiters.drain(..) {
            fx.push(Effect::Reply(t, Ok(Vec::new())));
        }
        while let Some((t, req)) = self.deferred.pop_front() {
            if let Outcome::Now(answer) = self.request(t, req, fx) {
                fx.push(Effect::Reply(t, answer));
            }
        }
    }

    fn apply_joined(&mut self, event: Event, fx: &mut Vec<Effect>) {
        match event {
            Event::Deliver(from, Message::Batch(batch)) => {
                let assigned = self.replica.apply_batch(from, &batch);
                if from == self.me {
                    self.own_batch_back(assigned, fx);
                }
                self.note_sync();
            }
            Event::Deliver(_, Message::Checkpoint(cp)) => {
                self.replica.apply_checkpoint(&cp.targets);
            }
            Event::Change(change) => {
                let sender_before = self.replica.checkpoint_sender();
                let lost: Vec<(MemberId, usize)> = change
                    .left
                    .iter()
                    .map(|&m| (m, self.replica.marks_of(m)))
                    .collect();
                if self.replica.apply_change(&change) {
                    self.kick = true;
                    for (m, marks) in lost {
                        fx.push(Effect::Notice(format!(
                            "{m} left with {marks} region(s) marked: they resync"
                        )));
                    }
                }
                let me = Some(self.me);
                if self.replica.checkpoint_sender() == me
                    && (!change.joined.is_empty() || sender_before != me)
                {
                    self.send_checkpoint(fx);
                }
            }
        }
    }

    fn own_batch_back(&mut self, assigned: Option<u64>, fx: &mut Vec<Effect>) {
        let Some(f) = self.inflight.pop_front() else {
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
        if let Some(t) = f.ticket {
            let answer = match (f.barrier, assigned) {
                (Barrier::ResyncWork, Some(r)) => vec![1, r],
                (Barrier::ResyncWork, None) => vec![0, 0],
                (Barrier::Flush | Barrier::None, _) => Vec::new(),
            };
            fx.push(Effect::Reply(t, Ok(answer)));
        }
    }
}
