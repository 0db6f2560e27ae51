// SPDX-License-Identifier: GPL-2.0

//! The store in cluster mode: each log's [`Group`] holds its state and keeps
//! it coherent with the other nodes; the store hands it the kernel's
//! requests and the group's events, answers the requests it answers later
//! (by ticket, never by position), and queues what the group sends for the
//! transport.
//!
//! A log instance is keyed by (uuid, luid) as the kernel names it; its group
//! by the uuid. A table reload constructs the new instance before the old
//! one suspends, so two instances of one uuid can exist; they share the
//! group, which this node stays in from the first RESUME until the last
//! instance is destroyed (a suspended node keeps its place and its marks).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::time::Instant;

use ulog_proto::wire::{put_words, RequestHeader, RequestType, MAX_GROUP_REGIONS};

use super::{count_regions, status_info, status_table, Body, LogKey, LogStore, Reply};
use crate::cluster::group::{Answer, Effect, Event, Group, GroupCounters, Outcome, Ticket};
use crate::cluster::transport::{QuorumEvent, RingId, Transport, TransportEvent};
use crate::cluster::wire::Message;
use crate::ctr_args::LogConfig;
use crate::log_device::LogDevice;
use crate::member::MemberId;
use crate::request::Request;
use crate::server::ReplySink;
use crate::stats::ClusterSummary;
use crate::{error, info, warning};

/// What the transport is asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outgoing {
    Join,
    Leave,
    Message(Message),
}

/// A request answered later.
struct Waiting {
    header: RequestHeader,
    slot: Option<usize>,
    t0: Instant,
}

/// Totals of cluster mode, for the figures and `dm-ulogd stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterTotals {
    /// Group messages sent.
    pub messages: u64,
    /// Bytes of group messages sent.
    pub bytes: u64,
    /// Sends the transport deferred (flow control).
    pub deferred_sends: u64,
    /// Sends the transport refused.
    pub failed_sends: u64,
    /// Messages from the group that could not be decoded.
    pub bad_messages: u64,
}

/// What the quorum service said about each recent ring.
#[derive(Default)]
struct Quorum {
    rings: BTreeMap<RingId, bool>,
}

impl Quorum {
    /// Rings remembered (a group's events may lag a few rings behind).
    const KEEP: usize = 16;

    fn latest(&self) -> RingId {
        self.rings.keys().next_back().copied().unwrap_or_default()
    }

    fn quorate(&self, ring: RingId) -> bool {
        self.rings.get(&ring).copied().unwrap_or(false)
    }

    /// What the quorum service said about `ring`, if it spoke yet.
    fn verdict(&self, ring: RingId) -> Option<bool> {
        self.rings.get(&ring).copied()
    }

    fn insert(&mut self, ring: RingId, quorate: bool) {
        self.rings.insert(ring, quorate);
        while self.rings.len() > Self::KEEP {
            self.rings.pop_first();
        }
    }
}

/// The cluster side of the store.
pub struct Cluster {
    me: MemberId,
    groups: HashMap<String, Group>,
    waiting: HashMap<Ticket, Waiting>,
    next_ticket: Ticket,
    outbox: VecDeque<(String, Outgoing)>,
    quorum: Quorum,
    totals: ClusterTotals,
    /// Counters of groups since left.
    gone: GroupCounters,
}

/// Requests that may carry the news that regions went out of sync behind
/// the kernel's in-sync hint.
fn may_kick(kind: RequestType) -> bool {
    !matches!(
        kind,
        RequestType::Ctr
            | RequestType::Dtr
            | RequestType::Presuspend
            | RequestType::Postsuspend
            | RequestType::Resume
            | RequestType::GetRegionSize
            | RequestType::StatusInfo
            | RequestType::StatusTable
    )
}

fn add(sum: &mut GroupCounters, c: &GroupCounters) {
    sum.batches += c.batches;
    sum.rounds += c.rounds;
    sum.flushes += c.flushes;
    sum.ops += c.ops;
    sum.send_failures += c.send_failures;
    sum.decided += c.decided;
    sum.checkpoints_sent += c.checkpoints_sent;
    sum.checkpoints_loaded += c.checkpoints_loaded;
    sum.stale_checkpoints += c.stale_checkpoints;
    sum.fresh_starts += c.fresh_starts;
    sum.merges += c.merges;
    sum.merge_resync += c.merge_resync;
    sum.quorum_waits += c.quorum_waits;
}

impl Cluster {
    pub(super) fn new(me: MemberId) -> Self {
        Self {
            me,
            groups: HashMap::new(),
            waiting: HashMap::new(),
            next_ticket: 1,
            outbox: VecDeque::new(),
            quorum: Quorum::default(),
            totals: ClusterTotals::default(),
            gone: GroupCounters::default(),
        }
    }

    /// This process as a member.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// The group of log `uuid`, if any instance of it lives here.
    pub fn group(&self, uuid: &str) -> Option<&Group> {
        self.groups.get(uuid)
    }

    /// The totals.
    pub fn totals(&self) -> ClusterTotals {
        self.totals
    }

    /// The counters of every group, live and left, summed.
    pub fn counters(&self) -> GroupCounters {
        let mut sum = self.gone;
        for g in self.groups.values() {
            add(&mut sum, &g.counters());
        }
        sum
    }

    /// Whether this node's partition is quorate in the latest ring.
    pub fn quorate(&self) -> bool {
        self.quorum.quorate(self.quorum.latest())
    }

    /// The latest ring the quorum service told of.
    pub fn ring(&self) -> RingId {
        self.quorum.latest()
    }

    /// Whether messages wait for the transport.
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    pub(super) fn reset_counters(&mut self) {
        self.totals = ClusterTotals::default();
        self.gone = GroupCounters::default();
    }

    /// A new instance of log `uuid` was constructed.
    pub(super) fn instance_constructed(
        &mut self,
        uuid: &str,
        config: &LogConfig,
        device: Option<LogDevice>,
    ) {
        let replace = match self.groups.get(uuid) {
            None => true,
            Some(g) => {
                !g.in_group()
                    && (g.config().region_count, g.config().region_size)
                        != (config.region_count, config.region_size)
            }
        };
        if replace {
            let ring = self.quorum.latest();
            let mut group = Group::new(self.me, config, device, ring);
            let mut fx = Vec::new();
            group.set_quorate(self.quorum.verdict(ring), &mut fx);
            self.groups.insert(uuid.to_string(), group);
        }
    }

    /// State, regions in sync, device failure and the cluster's view of a
    /// log, for the stats.
    pub(super) fn summary(&self, uuid: &str) -> (&'static str, u64, bool, Option<ClusterSummary>) {
        let Some(g) = self.groups.get(uuid) else {
            return ("constructed", 0, false, None);
        };
        let shared = g.shared();
        let summary = ClusterSummary {
            phase: if g.is_joined() {
                "serving"
            } else if g.in_group() {
                "joining"
            } else {
                "not in its group"
            },
            members: shared.map_or(0, |s| s.members().len()),
            holders: shared.map_or(0, |s| s.stateful().len()),
            writer: shared
                .and_then(|s| s.writer())
                .map(|w| w == self.me)
                .unwrap_or(false),
            quorate: self.quorum.quorate(g.ring()),
            blocked_by: g.blocked_by(),
            epoch: shared.map_or(0, |s| s.lineage().epoch),
            generation: shared.map_or(0, |s| s.lineage().generation),
            counters: g.counters(),
        };
        (
            g.lifecycle().name(),
            g.sync_count(),
            g.device_failed(),
            Some(summary),
        )
    }

    /// One line per log and the totals, for the admin (SIGUSR1).
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut names: Vec<&String> = self.groups.keys().collect();
        names.sort();
        for name in names {
            let g = &self.groups[name];
            let c = g.counters();
            let (phase, members, epoch) = match g.shared() {
                Some(s) => ("serving", s.members().len(), s.lineage().epoch),
                None if g.in_group() => ("joining", 0, 0),
                None => ("not in its group", 0, 0),
            };
            lines.push(format!(
                "log '{name}': {phase}{}, {}/{} in sync, {members} member(s), epoch {epoch}; \
                 {} flushes, {} batches, {} waited rounds, {} ops, {} merges",
                g.blocked_by()
                    .map_or(String::new(), |b| format!(" (waiting: {b})")),
                g.sync_count(),
                g.config().region_count,
                c.flushes,
                c.batches,
                c.rounds,
                c.ops,
                c.merges
            ));
        }
        let c = self.counters();
        let t = self.totals;
        lines.push(format!(
            "cluster totals: {} flushes, {} group messages ({} bytes), {} waited rounds, \
             {} checkpoints sent, {} loaded, {} fresh starts, {} merges, {} failed sends; quorate: {}",
            c.flushes,
            t.messages,
            t.bytes,
            c.rounds,
            c.checkpoints_sent,
            c.checkpoints_loaded,
            c.fresh_starts,
            c.merges,
            t.failed_sends,
            if self.quorate() { "yes" } else { "no" }
        ));
        lines
    }
}

impl LogStore {
    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("cluster mode")
    }

    /// A request in cluster mode.
    pub(super) fn serve_clustered(
        &mut self,
        header: &RequestHeader,
        data: &[u8],
        sink: &impl ReplySink,
        t0: Instant,
    ) {
        let Some(kind) = header.kind() else {
            warning!(
                "request type {} (seq {}) is unknown: answering EINVAL",
                header.request_type,
                header.seq
            );
            return self.answer(sink, header, data, None, Err(libc::EINVAL), t0);
        };
        let key = LogKey::new(header.uuid_bytes(), header.luid);
        if kind == RequestType::Ctr {
            let mut out = std::mem::take(&mut self.reply_buf);
            let reply = self.construct(key, header.version, data, &mut out);
            self.send_reply(sink, header, data, &reply, &out, t0);
            self.reply_buf = out;
            return;
        }
        let Some(&slot) = self.index.get(&key) else {
            warning!(
                "{} for unknown log '{}' (luid {}): answering ESRCH so the kernel replays its constructor",
                kind.name(),
                key.uuid_text(),
                key.luid
            );
            return self.answer(sink, header, data, None, Err(libc::ESRCH), t0);
        };
        let uuid = key.uuid_text();
        let Some(entry) = self.slots[slot].as_ref() else {
            return;
        };
        let name = entry.name();
        let config = entry.config.clone();
        let fixed = match kind {
            RequestType::Dtr if data.is_empty() => {
                info!("{name}: destroyed");
                self.remove(slot);
                let last = !self
                    .slots
                    .iter()
                    .flatten()
                    .any(|e| e.key.uuid_bytes() == key.uuid_bytes());
                if last {
                    let mut fx = Vec::new();
                    if let Some(mut g) = self.cluster_mut().groups.remove(&uuid) {
                        g.leave(&mut fx);
                        let c = g.counters();
                        add(&mut self.cluster_mut().gone, &c);
                    }
                    self.run_effects(&uuid, fx, sink);
                }
                return self.answer(sink, header, data, None, Ok(Vec::new()), t0);
            }
            RequestType::GetRegionSize if data.is_empty() => {
                Some(Ok(vec![u64::from(config.region_size)]))
            }
            RequestType::StatusInfo | RequestType::StatusTable if data.is_empty() => {
                let mut out = std::mem::take(&mut self.reply_buf);
                let group = self.cluster.as_ref().and_then(|c| c.groups.get(&uuid));
                let device = group.and_then(|g| g.device());
                let failed = group.is_some_and(|g| g.device_failed());
                let len = if kind == RequestType::StatusInfo {
                    status_info(&config, device, failed, &mut out)
                } else {
                    status_table(&config, device, &mut out)
                };
                let reply = Reply {
                    error: 0,
                    len,
                    slot: Some(slot),
                };
                self.send_reply(sink, header, data, &reply, &out, t0);
                self.reply_buf = out;
                return;
            }
            _ => None,
        };
        if let Some(answer) = fixed {
            return self.answer(sink, header, data, Some(slot), answer, t0);
        }
        let mut buf = [0u64; MAX_GROUP_REGIONS];
        let req = match Request::decode(kind, data, &mut buf) {
            Some(Ok(req)) => req,
            Some(Err(e)) => {
                warning!("{name}: {}: {}", kind.name(), e.0);
                return self.answer(sink, header, data, Some(slot), Err(libc::EINVAL), t0);
            }
            None => {
                warning!(
                    "{name}: {} with a payload of {} bytes: answering EINVAL",
                    kind.name(),
                    data.len()
                );
                return self.answer(sink, header, data, Some(slot), Err(libc::EINVAL), t0);
            }
        };
        if req == Request::Resume && !self.fit_group(&uuid, &config) {
            return self.answer(sink, header, data, Some(slot), Err(libc::EINVAL), t0);
        }
        let Some(group) = self.cluster_mut().groups.get_mut(&uuid) else {
            return self.answer(sink, header, data, Some(slot), Err(libc::ESRCH), t0);
        };
        // Regions went out of sync behind the kernel's in-sync hint (a
        // member failed, or a merge): ESRCH makes the kernel replay CTR and
        // RESUME, which restarts its resync scan (the module forgets its
        // hint then), and resend this request.
        if may_kick(kind) && group.is_joined() && group.take_kick() {
            info!(
                "log '{uuid}': regions went out of sync: asking the kernel to restart its resync scan"
            );
            return self.answer(sink, header, data, Some(slot), Err(libc::ESRCH), t0);
        }
        let (marked, cleared) = match &req {
            Request::Mark(r) | Request::Flush(r) => (r.len(), 0),
            Request::Clear(r) => (0, r.len()),
            _ => (0, 0),
        };
        let cluster = self.cluster_mut();
        let ticket = cluster.next_ticket;
        cluster.next_ticket += 1;
        let mut fx = Vec::new();
        let outcome = cluster
            .groups
            .get_mut(&uuid)
            .map(|g| g.request(ticket, req, &mut fx));
        if let Some(entry) = self.slots[slot].as_mut() {
            count_regions(entry, &mut self.total, marked, cleared);
        }
        match outcome {
            Some(Outcome::Now(answer)) => self.answer(sink, header, data, Some(slot), answer, t0),
            Some(Outcome::Later) => {
                self.cluster_mut().waiting.insert(
                    ticket,
                    Waiting {
                        header: header.clone(),
                        slot: Some(slot),
                        t0,
                    },
                );
            }
            None => {}
        }
        self.run_effects(&uuid, fx, sink);
    }

    /// At RESUME: whether the instance's table fits its group. A group this
    /// node is alone in takes a new table (the state starts again from it);
    /// a group with other members keeps theirs.
    fn fit_group(&mut self, uuid: &str, config: &LogConfig) -> bool {
        let me = self.cluster_mut().me;
        let Some(g) = self.cluster_mut().groups.get_mut(uuid) else {
            return true;
        };
        let ours = (g.config().region_count, g.config().region_size);
        if ours == (config.region_count, config.region_size) {
            return true;
        }
        let alone = g
            .shared()
            .is_none_or(|s| s.members().iter().all(|&m| m == me));
        if g.in_group() && !alone {
            error!(
                "log '{uuid}': the group's log has {} regions of {} sectors, this table {} of {}: \
                 not resuming (resize the mirror on every node while it is inactive elsewhere)",
                ours.0, ours.1, config.region_count, config.region_size
            );
            return false;
        }
        let device = match &config.device {
            Some(spec) => {
                match LogDevice::open(spec, config.region_count, &self.scratch, self.devices) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        error!("log '{uuid}': {}", e.message);
                        return false;
                    }
                }
            }
            None => None,
        };
        let mut fx = Vec::new();
        let cluster = self.cluster_mut();
        if let Some(mut old) = cluster.groups.remove(uuid) {
            old.leave(&mut fx);
            let c = old.counters();
            add(&mut cluster.gone, &c);
        }
        for e in fx {
            if e == Effect::Leave {
                cluster
                    .outbox
                    .push_back((uuid.to_string(), Outgoing::Leave));
            }
        }
        info!("log '{uuid}': the table changed size: the state starts again from it");
        cluster.instance_constructed(uuid, config, device);
        true
    }

    fn answer(
        &mut self,
        sink: &impl ReplySink,
        header: &RequestHeader,
        data: &[u8],
        slot: Option<usize>,
        answer: Answer,
        t0: Instant,
    ) {
        let mut out = std::mem::take(&mut self.reply_buf);
        let reply = match answer {
            Ok(words) => Reply {
                error: 0,
                len: put_words(&mut out, &words).unwrap_or(0),
                slot,
            },
            Err(errno) => Reply::failed(errno, slot),
        };
        self.send_reply(sink, header, data, &reply, &out, t0);
        self.reply_buf = out;
    }

    fn run_effects(&mut self, uuid: &str, fx: Vec<Effect>, sink: &impl ReplySink) {
        for effect in fx {
            match effect {
                Effect::Reply(ticket, answer) => {
                    let Some(w) = self.cluster_mut().waiting.remove(&ticket) else {
                        continue;
                    };
                    let slot = w
                        .slot
                        .filter(|&s| self.slots.get(s).is_some_and(Option::is_some));
                    self.answer(sink, &w.header, &[], slot, answer, w.t0);
                }
                Effect::Send(message) => {
                    self.cluster_mut()
                        .outbox
                        .push_back((uuid.to_string(), Outgoing::Message(message)));
                }
                Effect::Join => {
                    info!("log '{uuid}': joining its group");
                    self.cluster_mut()
                        .outbox
                        .push_back((uuid.to_string(), Outgoing::Join));
                }
                Effect::Leave => {
                    info!("log '{uuid}': leaving its group");
                    self.cluster_mut()
                        .outbox
                        .push_back((uuid.to_string(), Outgoing::Leave));
                }
                Effect::Notice(text) => info!("log '{uuid}': {text}"),
                Effect::Warning(text) => warning!("log '{uuid}': {text}"),
                Effect::Disk(s) => {
                    let entry =
                        self.slots.iter_mut().flatten().find(|e| {
                            matches!(e.body, Body::Clustered) && e.key.uuid_text() == uuid
                        });
                    let counters = [Some(&mut self.total), entry.map(|e| &mut e.counters)];
                    for c in counters.into_iter().flatten() {
                        c.disk_writes += u64::from(s.writes);
                        c.disk_bytes += s.bytes;
                        c.disk_syncs += u64::from(s.synced);
                    }
                }
            }
        }
    }

    /// Applies one event of group `group` (cluster mode).
    pub fn group_event(&mut self, group: &str, event: TransportEvent, sink: &impl ReplySink) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let event = match event {
            TransportEvent::Change(c) => Event::Change(c),
            TransportEvent::Ring(r) => Event::Ring(r),
            TransportEvent::Deliver(from, bytes) => match Message::decode(&bytes) {
                Ok(m) => Event::Deliver(from, m),
                Err(e) => {
                    cluster.totals.bad_messages += 1;
                    warning!("log '{group}': dropping a message from {from}: {e}");
                    return;
                }
            },
        };
        let quorum = &cluster.quorum;
        let mut fx = Vec::new();
        if let Some(g) = cluster.groups.get_mut(group) {
            let ring = matches!(event, Event::Ring(_));
            g.on_event(event, &mut fx);
            if ring {
                g.set_quorate(quorum.verdict(g.ring()), &mut fx);
            }
        }
        self.run_effects(group, fx, sink);
    }

    /// The quorum service's news (cluster mode).
    pub fn quorum_event(&mut self, event: QuorumEvent, sink: &impl ReplySink) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let was = cluster.quorate();
        cluster.quorum.insert(event.ring, event.quorate);
        if cluster.quorate() != was || cluster.quorum.rings.len() == 1 {
            if event.quorate {
                info!(
                    "the cluster is quorate (ring {}/{})",
                    event.ring.node, event.ring.seq
                );
            } else {
                warning!(
                    "this node's partition has no quorum (ring {}/{}): the logs' shared state \
                     is frozen, FLUSHes with new marks wait",
                    event.ring.node,
                    event.ring.seq
                );
            }
        }
        let names: Vec<String> = cluster.groups.keys().cloned().collect();
        for name in names {
            let cluster = self.cluster_mut();
            let mut fx = Vec::new();
            if let Some(g) = cluster.groups.get_mut(&name) {
                let q = cluster.quorum.verdict(g.ring());
                g.set_quorate(q, &mut fx);
            }
            self.run_effects(&name, fx, sink);
        }
    }

    /// The kernel has nothing queued and the groups' events are applied:
    /// what other members need soon goes out, disk logs are written.
    pub fn end_of_burst(&mut self, sink: &impl ReplySink) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let names: Vec<String> = cluster.groups.keys().cloned().collect();
        for name in names {
            let mut fx = Vec::new();
            if let Some(g) = self.cluster_mut().groups.get_mut(&name) {
                g.end_of_burst(&mut fx);
            }
            self.run_effects(&name, fx, sink);
        }
    }

    /// Hands the transport what waits for it, in order. A message it
    /// refuses for now (flow control) waits with everything after it; a
    /// batch it refuses for good fails the requests it carried; another
    /// message waits for the next try.
    pub fn flush_outbox(&mut self, transport: &mut dyn Transport, sink: &impl ReplySink) {
        loop {
            let Some(cluster) = self.cluster.as_mut() else {
                return;
            };
            let Some((group, out)) = cluster.outbox.front() else {
                return;
            };
            let result = match out {
                Outgoing::Join => transport.join(group),
                Outgoing::Leave => transport.leave(group),
                Outgoing::Message(m) => {
                    let bytes = m.encode();
                    let r = transport.send(group, &bytes);
                    if r.is_ok() {
                        cluster.totals.messages += 1;
                        cluster.totals.bytes += bytes.len() as u64;
                    }
                    r
                }
            };
            let e = match result {
                Ok(()) => {
                    cluster.outbox.pop_front();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    cluster.totals.deferred_sends += 1;
                    return;
                }
                Err(e) => e,
            };
            let Some((group, out)) = cluster.outbox.pop_front() else {
                return;
            };
            cluster.totals.failed_sends += 1;
            let Outgoing::Message(m) = out else {
                error!("log '{group}': cannot join or leave its group: {e}");
                continue;
            };
            let mut fx = Vec::new();
            let batch = cluster
                .groups
                .get_mut(&group)
                .is_some_and(|g| g.send_failed(&m, &mut fx));
            if batch {
                warning!(
                    "log '{group}': cannot send to its group: {e}: the requests it carried \
                     fail with EAGAIN (the kernel resends them)"
                );
            } else if e.kind() != io::ErrorKind::NotConnected && cluster.groups.contains_key(&group)
            {
                warning!("log '{group}': cannot send to its group: {e}: will retry");
                cluster
                    .outbox
                    .push_front((group.clone(), Outgoing::Message(m)));
                self.run_effects(&group, fx, sink);
                return;
            }
            self.run_effects(&group, fx, sink);
        }
    }
}

#[cfg(test)]
impl Cluster {
    /// The groups (for checks).
    pub fn groups(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }
}
