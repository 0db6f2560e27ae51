// SPDX-License-Identifier: GPL-2.0

//! The clustered logs of this node: decodes the kernel's requests, hands
//! them to each log's [`ClusterLog`], carries out its effects on the
//! [`Transport`], and routes the groups' events back.
//!
//! A log instance is keyed by (uuid, luid) as the kernel names it; its group
//! by the uuid. A table reload constructs the new instance before the old
//! one suspends, so two instances of one uuid can exist, but only one is in
//! the group at a time (the old one leaves at POSTSUSPEND, the new one joins
//! at RESUME). What the old one held is kept for the new one, should it find
//! the group empty.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};

use ulog_proto::wire::{
    payload_i64, payload_u64, put_words, RequestHeader, RequestType, MAX_GROUP_REGIONS,
};

use super::member::MemberId;
use super::node::{Answer, ClusterCounters, ClusterLog, Effect, Event, Outcome, Request, Ticket};
use super::replica::Replica;
use super::transport::{Transport, TransportEvent};
use super::wire::Message;
use crate::ctr_args::{self, LogConfig, LogKind, SyncMode};
use crate::server::ReplySink;
use crate::{error, info, warning};

/// (uuid, luid).
type Key = (Vec<u8>, u64);

struct Entry {
    ctr: String,
    config: LogConfig,
    group: String,
    log: ClusterLog,
    requests: u64,
}

/// What the server counts, for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreTotals {
    /// Requests answered (CTR and the rest).
    pub requests: u64,
    /// Group messages sent (batches and checkpoints).
    pub messages: u64,
    /// Bytes of group messages sent.
    pub bytes: u64,
    /// Sends the transport deferred (flow control).
    pub deferred_sends: u64,
    /// Messages from the group that could not be decoded.
    pub bad_messages: u64,
}

/// The clustered logs, over a transport.
pub struct ClusterStore<T: Transport> {
    transport: T,
    me: MemberId,
    logs: HashMap<Key, Entry>,
    /// Which instance is in each group.
    groups: HashMap<String, Key>,
    /// The state an instance left its group with, by group.
    retained: HashMap<String, Replica>,
    waiting: HashMap<Ticket, RequestHeader>,
    next_ticket: Ticket,
    /// Messages the transport could not take yet, in order.
    outbox: VecDeque<(String, Vec<u8>)>,
    totals: StoreTotals,
    /// Counters of logs since destroyed.
    gone: ClusterCounters,
    events: Vec<(String, TransportEvent)>,
}

fn group_name(uuid: &[u8]) -> String {
    String::from_utf8_lossy(uuid).into_owned()
}

fn answer_words(out: &mut Vec<u8>, words: &[u64]) {
    out.resize(words.len() * 8, 0);
    let _ = put_words(out, words);
}

fn regions(data: &[u8]) -> Option<Vec<u64>> {
    if data.len() % 8 != 0 || data.len() / 8 > MAX_GROUP_REGIONS {
        return None;
    }
    (0..data.len() / 8).map(|i| payload_u64(data, i)).collect()
}

fn one_region(data: &[u8]) -> Option<u64> {
    (data.len() == 8).then(|| payload_u64(data, 0)).flatten()
}

/// The node request for a kernel request, or `None` if its payload is bad.
fn node_request(kind: RequestType, data: &[u8]) -> Option<Request> {
    let empty = data.is_empty();
    Some(match kind {
        RequestType::Resume if empty => Request::Resume,
        RequestType::Presuspend if empty => Request::Presuspend,
        RequestType::Postsuspend if empty => Request::Postsuspend,
        RequestType::IsClean => Request::IsClean(one_region(data)?),
        RequestType::InSync => Request::InSync(one_region(data)?),
        RequestType::Flush => Request::Flush(regions(data)?),
        RequestType::MarkRegion => Request::Mark(regions(data)?),
        RequestType::ClearRegion => Request::Clear(regions(data)?),
        RequestType::GetResyncWork if empty => Request::GetResyncWork,
        RequestType::SetRegionSync if data.len() == 16 => {
            Request::SetRegionSync(payload_u64(data, 0)?, payload_i64(data, 1)? != 0)
        }
        RequestType::GetSyncCount if empty => Request::GetSyncCount,
        RequestType::IsRemoteRecovering => Request::IsRemoteRecovering(one_region(data)?),
        _ => return None,
    })
}

/// Requests that may carry the news that regions went out of sync behind
/// the kernel's in-sync hint (see [`ClusterStore::handle`]).
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

impl<T: Transport> ClusterStore<T> {
    /// An empty store over `transport`.
    pub fn new(transport: T) -> Self {
        let me = transport.local_id();
        Self {
            transport,
            me,
            logs: HashMap::new(),
            groups: HashMap::new(),
            retained: HashMap::new(),
            waiting: HashMap::new(),
            next_ticket: 1,
            outbox: VecDeque::new(),
            totals: StoreTotals::default(),
            gone: ClusterCounters::default(),
            events: Vec::new(),
        }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Number of logs.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether there is no log.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The log instance in `group`, if any.
    pub fn log_in_group(&self, group: &str) -> Option<&ClusterLog> {
        self.groups
            .get(group)
            .and_then(|k| self.logs.get(k))
            .map(|e| &e.log)
    }

    /// The totals.
    pub fn totals(&self) -> StoreTotals {
        self.totals
    }

    /// The counters of every log, live and destroyed, summed.
    pub fn counters(&self) -> ClusterCounters {
        let mut sum = self.gone;
        for e in self.logs.values() {
            add(&mut sum, &e.log.counters());
        }
        sum
    }

    /// Whether messages wait for the transport.
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// One line per log and the totals, for the admin.
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut keys: Vec<&Key> = self.logs.keys().collect();
        keys.sort();
        for k in keys {
            let e = &self.logs[k];
            let c = e.log.counters();
            let r = e.log.replica();
            lines.push(format!(
                "log '{}' (luid {}): {}, {}/{} in sync, {} member(s); {} requests, {} flushes, \
                 {} batches, {} waited rounds, {} ops",
                e.group,
                k.1,
                if e.log.is_joined() {
                    "serving"
                } else if e.log.in_group() {
                    "joining"
                } else {
                    "not in its group"
                },
                r.sync_count(),
                r.region_count(),
                r.members().len(),
                e.requests,
                c.flushes,
                c.batches,
                c.rounds,
                c.ops
            ));
        }
        let c = self.counters();
        let t = self.totals;
        lines.push(format!(
            "cluster totals: {} requests, {} flushes, {} group messages ({} bytes), {} waited rounds, \
             {} checkpoints sent, {} loaded, {} takeovers",
            t.requests, c.flushes, t.messages, t.bytes, c.rounds, c.checkpoints_sent,
            c.checkpoints_loaded, c.takeovers
        ));
        lines
    }

    fn reply(&mut self, sink: &impl ReplySink, header: &RequestHeader, answer: Answer) {
        let mut h = header.clone();
        let mut payload = Vec::new();
        match answer {
            Ok(words) => answer_words(&mut payload, &words),
            Err(errno) => h.error = -errno,
        }
        self.reply_bytes(sink, &h, &payload);
    }

    fn reply_bytes(&mut self, sink: &impl ReplySink, header: &RequestHeader, payload: &[u8]) {
        self.totals.requests += 1;
        if let Err(e) = sink.send_reply(header, payload) {
            warning!("cannot send reply for seq {}: {e}", header.seq);
        }
    }

    /// Serves one kernel request; its reply goes to `sink` now or later.
    pub fn handle(&mut self, header: &RequestHeader, data: &[u8], sink: &impl ReplySink) {
        let Some(kind) = header.kind() else {
            return self.reply(sink, header, Err(libc::EINVAL));
        };
        let key: Key = (header.uuid_bytes().to_vec(), header.luid);
        if kind == RequestType::Ctr {
            let answer = self.construct(key, data);
            return self.reply(sink, header, answer);
        }
        let Some(entry) = self.logs.get_mut(&key) else {
            warning!(
                "{} for unknown log '{}' (luid {}): answering ESRCH so the kernel replays its constructor",
                kind.name(),
                group_name(&key.0),
                key.1
            );
            return self.reply(sink, header, Err(libc::ESRCH));
        };
        entry.requests += 1;
        match kind {
            RequestType::Dtr => {
                let mut fx = Vec::new();
                if let Some(e) = self.logs.get_mut(&key) {
                    e.log.request(0, Request::Postsuspend, &mut fx);
                }
                self.run_effects(&key, fx, sink);
                if let Some(e) = self.logs.remove(&key) {
                    info!("log '{}' (luid {}): destroyed", e.group, key.1);
                    add(&mut self.gone, &e.log.counters());
                    if !self.logs.values().any(|o| o.group == e.group) {
                        self.retained.remove(&e.group);
                    }
                }
                self.reply(sink, header, Ok(Vec::new()))
            }
            RequestType::GetRegionSize => {
                let size = u64::from(entry.config.region_size);
                self.reply(sink, header, Ok(vec![size]))
            }
            RequestType::StatusInfo => {
                let text = status_info(&entry.config);
                self.reply_bytes(sink, header, text.as_bytes())
            }
            RequestType::StatusTable => {
                let text = status_table(&entry.config);
                self.reply_bytes(sink, header, text.as_bytes())
            }
            _ => {
                // Regions went out of sync behind the kernel's in-sync hint
                // (a member failed): ESRCH makes the kernel replay CTR and
                // RESUME, which restarts its resync scan (the Rust module
                // forgets its hint then), and resend this request.
                if may_kick(kind) && entry.log.is_joined() && entry.log.take_kick() {
                    info!(
                        "log '{}': a member left with regions marked: asking the kernel to \
                         restart its resync scan",
                        entry.group
                    );
                    return self.reply(sink, header, Err(libc::ESRCH));
                }
                let Some(req) = node_request(kind, data) else {
                    warning!(
                        "log '{}': {} with a payload of {} bytes: answering EINVAL",
                        entry.group,
                        kind.name(),
                        data.len()
                    );
                    return self.reply(sink, header, Err(libc::EINVAL));
                };
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let mut fx = Vec::new();
                match entry.log.request(ticket, req, &mut fx) {
                    Outcome::Now(answer) => self.reply(sink, header, answer),
                    Outcome::Later => {
                        self.waiting.insert(ticket, header.clone());
                    }
                }
                self.run_effects(&key, fx, sink);
            }
        }
    }

    fn construct(&mut self, key: Key, data: &[u8]) -> Answer {
        let uuid = group_name(&key.0);
        let refuse = |why: String| {
            error!("log '{uuid}': {why}");
            Err(libc::EINVAL)
        };
        if key.0.is_empty() {
            return refuse("CTR with an empty uuid".into());
        }
        let text = match ctr_args::ctr_text(data) {
            Ok(t) => t.to_string(),
            Err(e) => return refuse(e.to_string()),
        };
        let config = match ctr_args::parse(&text) {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };
        if let Some(e) = self.logs.get(&key) {
            if e.ctr == text {
                info!(
                    "log '{uuid}' (luid {}): constructor repeated: state kept",
                    key.1
                );
                return Ok(Vec::new());
            }
            error!(
                "log '{uuid}' (luid {}): exists already with constructor '{}'; refusing '{text}'",
                key.1, e.ctr
            );
            return Err(libc::EEXIST);
        }
        let log = ClusterLog::new(
            self.me,
            config.region_count,
            config.region_size,
            config.sync == SyncMode::NoSync,
        );
        info!(
            "log '{uuid}' (luid {}): created: {} regions of {} sectors, {} (clustered)",
            key.1, config.region_count, config.region_size, config.type_name
        );
        if config.kind == LogKind::Disk {
            warning!(
                "log '{uuid}': in cluster mode the state lives in the members' memory; \
                 the log device is not used"
            );
        }
        self.logs.insert(
            key,
            Entry {
                ctr: text,
                config,
                group: uuid,
                log,
                requests: 0,
            },
        );
        Ok(Vec::new())
    }

    fn run_effects(&mut self, key: &Key, fx: Vec<Effect>, sink: &impl ReplySink) {
        for effect in fx {
            let Some(group) = self.logs.get(key).map(|e| e.group.clone()) else {
                return;
            };
            match effect {
                Effect::Reply(ticket, answer) => {
                    if let Some(header) = self.waiting.remove(&ticket) {
                        self.reply(sink, &header, answer);
                    }
                }
                Effect::Send(message) => {
                    let bytes = message.encode();
                    self.totals.messages += 1;
                    self.totals.bytes += bytes.len() as u64;
                    self.outbox.push_back((group, bytes));
                    self.flush_outbox();
                }
                Effect::Join => {
                    // Should the group be empty, start from what the last
                    // instance on this node left it with (a table reload).
                    if let (Some(r), Some(e)) = (self.retained.get(&group), self.logs.get_mut(key))
                    {
                        if e.log.adopt(r.clone()) {
                            info!(
                                "log '{group}': starts from the state its previous instance left"
                            );
                        }
                    }
                    if let Some(old) = self.groups.insert(group.clone(), key.clone()) {
                        if old != *key {
                            warning!("log '{group}': instance {} still in the group", old.1);
                        }
                    }
                    info!("log '{group}' (luid {}): joining its group", key.1);
                    if let Err(e) = self.transport.join(&group) {
                        error!("log '{group}': cannot join its group: {e}");
                    }
                }
                Effect::Leave => {
                    if let Some(e) = self.logs.get(key) {
                        self.retained.insert(group.clone(), e.log.replica().clone());
                    }
                    if self.groups.get(&group) == Some(key) {
                        self.groups.remove(&group);
                    }
                    self.flush_outbox();
                    info!("log '{group}' (luid {}): leaving its group", key.1);
                    if let Err(e) = self.transport.leave(&group) {
                        error!("log '{group}': cannot leave its group: {e}");
                    }
                }
                Effect::Notice(text) => info!("log '{group}': {text}"),
            }
        }
    }

    /// Hands the transport what it could not take before, in order.
    pub fn flush_outbox(&mut self) {
        while let Some((group, bytes)) = self.outbox.front() {
            match self.transport.send(group, bytes) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.totals.deferred_sends += 1;
                    return;
                }
                Err(e) => {
                    // The group is gone (we left it): nobody needs it.
                    error!("log '{group}': cannot send to its group: {e}");
                    self.outbox.pop_front();
                }
            }
        }
    }

    /// Applies the groups' waiting events.
    pub fn pump(&mut self, sink: &impl ReplySink) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.transport.dispatch(&mut events);
        for (group, event) in events.drain(..) {
            let Some(key) = self.groups.get(&group).cloned() else {
                continue;
            };
            let event = match event {
                TransportEvent::Change(c) => Event::Change(c),
                TransportEvent::Deliver(from, bytes) => match Message::decode(&bytes) {
                    Ok(m) => Event::Deliver(from, m),
                    Err(e) => {
                        self.totals.bad_messages += 1;
                        warning!("log '{group}': dropping a message from {from}: {e}");
                        continue;
                    }
                },
            };
            let mut fx = Vec::new();
            if let Some(e) = self.logs.get_mut(&key) {
                e.log.on_event(event, &mut fx);
            }
            self.run_effects(&key, fx, sink);
        }
        self.events = events;
        result
    }

    /// The kernel has nothing queued: send what other members need soon.
    pub fn end_of_burst(&mut self, sink: &impl ReplySink) {
        let keys: Vec<Key> = self.logs.keys().cloned().collect();
        for key in keys {
            let mut fx = Vec::new();
            if let Some(e) = self.logs.get_mut(&key) {
                e.log.send_urgent(&mut fx);
            }
            self.run_effects(&key, fx, sink);
        }
        self.flush_outbox();
    }
}

fn add(sum: &mut ClusterCounters, c: &ClusterCounters) {
    sum.batches += c.batches;
    sum.rounds += c.rounds;
    sum.flushes += c.flushes;
    sum.ops += c.ops;
    sum.checkpoints_sent += c.checkpoints_sent;
    sum.checkpoints_loaded += c.checkpoints_loaded;
    sum.takeovers += c.takeovers;
}

fn device_name(config: &LogConfig) -> String {
    config
        .device
        .as_ref()
        .map_or_else(String::new, ToString::to_string)
}

/// `1 clustered-core` or `3 clustered-disk <dev> A`, as cmirrord prints them.
fn status_info(config: &LogConfig) -> String {
    match config.kind {
        LogKind::Core => format!("1 {}", config.type_name),
        LogKind::Disk => format!("3 {} {} A", config.type_name, device_name(config)),
    }
}

/// cmirrord's table line, trailing spaces included.
fn status_table(config: &LogConfig) -> String {
    let sync = match config.sync {
        SyncMode::Default => "",
        SyncMode::NoSync => "nosync ",
        SyncMode::Force => "sync ",
    };
    let boe = if config.block_on_error {
        "block_on_error"
    } else {
        ""
    };
    let mut out = Vec::new();
    let _ = match config.kind {
        LogKind::Core => write!(
            out,
            "{} {} {sync}{boe} ",
            config.type_name, config.region_size
        ),
        LogKind::Disk => write!(
            out,
            "{} {} {} {sync}{boe} ",
            config.type_name,
            device_name(config),
            config.region_size
        ),
    };
    String::from_utf8_lossy(&out).into_owned()
}
