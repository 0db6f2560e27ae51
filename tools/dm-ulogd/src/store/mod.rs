// SPDX-License-Identifier: GPL-2.0

//! The table of live logs, keyed by (uuid, luid), and the dispatch of each
//! request to its log: payload checks, the log operation, the reply
//! payload, disk commits, state files and counters; for one node and for a
//! cluster alike. Each log's state is a [`LogState`]: on one node the store
//! applies requests to it directly; in cluster mode ([`cluster`]) each log's
//! [`Group`](crate::cluster::group::Group) keeps it coherent with the other nodes and may answer later.
//!
//! Transport-free: [`LogStore::serve`] takes a decoded request and answers
//! it through a [`ReplySink`] (now, or once the group has applied it), so
//! the netlink server, the tests and the benchmark all drive the same code.
//!
//! # Unknown logs and server restarts
//!
//! A request naming a log this server does not know gets `-ESRCH`. The
//! kernel module treats a server-returned `-ESRCH` like a missing server:
//! it replays the log's CTR with the saved string, then RESUME, then the
//! original request (the in-tree C module does the same). So a log whose
//! state was lost is rebuilt as the kernel would build it at table load.
//!
//! On one node, state is normally not lost: every log is kept in a state
//! file (see [`crate::state_file`]) and reloaded at start. A reloaded log
//! starts as *reloaded*: a CTR with the same string is then the kernel
//! replaying it and is accepted keeping the state; a RESUME of a log already
//! resumed is a no-op; any request but CTR makes it *live*. Only if a
//! replayed CTR is followed by GET_REGION_SIZE (which the kernel sends only
//! while constructing a new log instance) was the match a coincidence (a new
//! instance that got the luid of a log destroyed while no server ran), and
//! the log is started afresh.

pub mod cluster;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ulog_proto::wire::{
    payload_u64, put_words, RequestHeader, RequestType, MAX_DEVICE_NAME, MAX_GROUP_REGIONS,
    UUID_LEN,
};

use crate::ctr_args::{self, LogConfig, LogKind, SyncMode};
use crate::log_device::{self, errno_of, DevicePolicy, LoadNote, LogDevice};
use crate::log_state::{Backing, Lifecycle, LogState, OutOfRange, Sharing};
use crate::member::MemberId;
use crate::request::{BadPayload, Request};
use crate::server::ReplySink;
use crate::state_file::{Identity, StateDir, StateFile, MAX_CTR_LEN};
use crate::stats::{slot_of, Counters, LogSummary};
use crate::{bitmap, error, info, warning};

pub use cluster::Cluster;

/// Room for the largest reply payload (status strings, device names).
pub const REPLY_CAPACITY: usize = 1024;

/// The outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// 0, or a negative errno for the reply's `error` field.
    pub error: i32,
    /// Reply payload bytes written to the output buffer.
    pub len: usize,
    /// The log the request went to (for per-log counters).
    pub slot: Option<usize>,
}

impl Reply {
    fn failed(errno: i32, slot: Option<usize>) -> Self {
        Self {
            error: -errno,
            len: 0,
            slot,
        }
    }
}

/// A failed request: the errno, and what to tell the admin.
struct Failure {
    errno: i32,
    why: String,
    /// Whether to log it (repeats of a known device failure are not).
    loud: bool,
}

fn invalid(why: String) -> Failure {
    Failure {
        errno: libc::EINVAL,
        why,
        loud: true,
    }
}

impl From<OutOfRange> for Failure {
    fn from(e: OutOfRange) -> Self {
        invalid(e.to_string())
    }
}

impl From<BadPayload> for Failure {
    fn from(e: BadPayload) -> Self {
        invalid(e.0)
    }
}

/// A log's key: the kernel's uuid (NUL padded) and instance id.
#[derive(Clone, PartialEq, Eq)]
struct LogKey {
    luid: u64,
    uuid: [u8; UUID_LEN],
}

impl LogKey {
    fn new(uuid: &[u8], luid: u64) -> Self {
        let mut key = Self {
            luid,
            uuid: [0; UUID_LEN],
        };
        let uuid = &uuid[..uuid.len().min(UUID_LEN - 1)];
        key.uuid[..uuid.len()].copy_from_slice(uuid);
        key
    }

    fn uuid_bytes(&self) -> &[u8] {
        let end = self.uuid.iter().position(|&b| b == 0).unwrap_or(UUID_LEN);
        &self.uuid[..end]
    }

    fn uuid_text(&self) -> String {
        String::from_utf8_lossy(self.uuid_bytes()).into_owned()
    }
}

// Only the luid is hashed: it is unique per live log on its own, and
// hashing 129 uuid bytes per request would cost more than the lookup.
impl Hash for LogKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.luid);
    }
}

/// A multiplicative hash for the luid key.
#[derive(Default)]
struct LuidHasher(u64);

impl Hasher for LuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// How this server came to know a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Constructed by, or confirmed through, a request in this run.
    Live,
    /// Loaded from its state file at start, not confirmed yet.
    Reloaded {
        /// A matching CTR was accepted since.
        ctr_replayed: bool,
    },
}

/// A single-node log: its state and its device.
struct Local {
    log: LogState,
    device: Option<LogDevice>,
}

/// Where a log's state lives.
// Unboxed: a single-node request then reaches its log without another
// indirection; a clustered entry wastes the size of one `Local`.
#[allow(clippy::large_enum_variant)]
enum Body {
    /// Here, for this node alone.
    Local(Local),
    /// In its group (cluster mode), shared by the instances of its uuid.
    Clustered,
}

struct Entry {
    key: LogKey,
    ctr: String,
    config: LogConfig,
    body: Body,
    origin: Origin,
    counters: Counters,
}

impl Entry {
    fn name(&self) -> String {
        format!("log '{}' (luid {})", self.key.uuid_text(), self.key.luid)
    }

    #[cfg(test)]
    fn local(&self) -> &Local {
        match &self.body {
            Body::Local(l) => l,
            Body::Clustered => panic!("a clustered log"),
        }
    }

    #[cfg(test)]
    fn local_mut(&mut self) -> &mut Local {
        match &mut self.body {
            Body::Local(l) => l,
            Body::Clustered => panic!("a clustered log"),
        }
    }
}

/// The logs this server serves.
pub struct LogStore {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    index: HashMap<LogKey, usize, BuildHasherDefault<LuidHasher>>,
    state_dir: Option<StateDir>,
    scratch: PathBuf,
    devices: DevicePolicy,
    total: Counters,
    reply_buf: Vec<u8>,
    /// Cluster mode: the groups, and the requests they answer later.
    cluster: Option<Cluster>,
}

/// Result of loading the state directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Logs restored.
    pub loaded: usize,
    /// State files that could not be used.
    pub failed: usize,
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl LogStore {
    /// A single-node store that keeps its logs in `state_dir` (or in memory
    /// only).
    pub fn new(state_dir: Option<StateDir>) -> Self {
        let scratch = state_dir
            .as_ref()
            .map_or_else(std::env::temp_dir, |d| d.root().to_path_buf());
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            state_dir,
            scratch,
            devices: DevicePolicy::BlockDevices,
            total: Counters::default(),
            reply_buf: vec![0; REPLY_CAPACITY],
            cluster: None,
        }
    }

    /// A cluster-mode store: this process is `me` in the logs' groups; its
    /// logs live in memory (their groups hold them), disk logs also on
    /// their device. `scratch` is where a device node may be made.
    pub fn clustered(me: MemberId, scratch: &Path) -> Self {
        let mut store = Self::new(None);
        store.scratch = scratch.to_path_buf();
        store.cluster = Some(Cluster::new(me));
        store
    }

    /// Which files may be log devices (tests and the benchmark use regular
    /// files; the server only block devices).
    pub fn set_device_policy(&mut self, policy: DevicePolicy) {
        self.devices = policy;
    }

    /// Number of live logs.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no log is live.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The cluster side, in cluster mode.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Restores the logs of the state directory (at start). A disk log's
    /// device is only opened, and written, once the kernel sends a request
    /// for the log: it may have been destroyed while no server ran.
    pub fn load_state(&mut self) -> LoadReport {
        let mut report = LoadReport::default();
        let Some(dir) = &self.state_dir else {
            return report;
        };
        let (files, bad) = match dir.load_all() {
            Ok(r) => r,
            Err(e) => {
                error!("cannot read state directory {}: {e}", dir.root().display());
                return report;
            }
        };
        for b in bad {
            error!(
                "state file {} is unusable ({}): renamed *.bad; its log resyncs when the kernel replays it",
                b.path.display(),
                b.error
            );
            report.failed += 1;
        }
        for file in files {
            if self.restore(file) {
                report.loaded += 1;
            } else {
                report.failed += 1;
            }
        }
        report
    }

    /// Restores one log; sets its file aside when it cannot be used.
    fn restore(&mut self, file: StateFile) -> bool {
        let id = file.identity().clone();
        let key = LogKey::new(&id.uuid, id.luid);
        let name = format!("log '{}' (luid {})", id.uuid_lossy(), id.luid);
        let config = match ctr_args::parse(&id.ctr) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "{name}: state file {} has a bad constructor: {e}; renamed *.bad",
                    file.path().display()
                );
                file.set_aside();
                return false;
            }
        };
        if file.words_per_map() != bitmap::words_for(config.region_count) {
            error!(
                "{name}: state file {} does not match its constructor; renamed *.bad",
                file.path().display()
            );
            file.set_aside();
            return false;
        }
        if self.index.contains_key(&key) {
            error!(
                "{name}: duplicate state file {}; renamed *.bad",
                file.path().display()
            );
            file.set_aside();
            return false;
        }
        // The log device is neither opened nor written until the kernel
        // confirms the log with a request: the log may have been destroyed
        // while no server ran, and its device number given to another
        // device since. Marks the previous server applied but had not
        // flushed need no write now: the kernel dispatches no write before
        // its FLUSH succeeds, so it resends (or replays) that FLUSH, and the
        // log's first commit writes the whole image (`LogState::restore`).
        let log = LogState::restore(&config, Backing::File(file));
        let entry = Entry {
            key: key.clone(),
            ctr: id.ctr.clone(),
            config,
            body: Body::Local(Local { log, device: None }),
            origin: Origin::Reloaded {
                ctr_replayed: false,
            },
            counters: Counters::default(),
        };
        if let Body::Local(l) = &entry.body {
            info!(
                "{name}: restored ({} {}, {}/{} regions in sync)",
                entry.config.type_name,
                l.log.lifecycle().name(),
                l.log.sync_count(),
                l.log.region_count()
            );
        }
        self.insert(key, entry);
        true
    }

    fn insert(&mut self, key: LogKey, entry: Entry) -> usize {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(entry);
                s
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, slot);
        slot
    }

    fn remove(&mut self, slot: usize) -> Option<Entry> {
        let entry = self.slots.get_mut(slot)?.take()?;
        self.index.remove(&entry.key);
        self.free.push(slot);
        Some(entry)
    }

    fn discard(&mut self, slot: usize) {
        if let Some(entry) = self.remove(slot) {
            let name = entry.name();
            if let Body::Local(l) = entry.body {
                if let Some(file) = l.log.into_backing().into_state_file() {
                    let path = file.path().to_path_buf();
                    if let Err(e) = file.remove() {
                        warning!("{name}: cannot remove state file {}: {e}", path.display());
                    }
                }
            }
        }
    }

    /// Serves one request and answers it through `sink`, now or (cluster
    /// mode) once its group has applied it; counts it from `t0`, when it
    /// was received.
    pub fn serve(
        &mut self,
        header: &RequestHeader,
        data: &[u8],
        sink: &impl ReplySink,
        t0: Instant,
    ) {
        if self.cluster.is_some() {
            return self.serve_clustered(header, data, sink, t0);
        }
        let mut out = std::mem::take(&mut self.reply_buf);
        let reply = self.handle(header, data, &mut out);
        self.send_reply(sink, header, data, &reply, &out, t0);
        self.reply_buf = out;
    }

    fn send_reply(
        &mut self,
        sink: &impl ReplySink,
        header: &RequestHeader,
        data: &[u8],
        reply: &Reply,
        payload: &[u8],
        t0: Instant,
    ) -> bool {
        let mut h = header.clone();
        h.error = reply.error;
        let payload = &payload[..reply.len];
        let sent = sink.send_reply(&h, payload);
        let ns = elapsed_ns(t0);
        self.record(reply.slot, header.request_type, reply.error != 0, ns);
        if crate::logging::verbose() {
            trace(header, data, reply.error, payload, ns);
        }
        match sent {
            Ok(()) => true,
            Err(e) => {
                warning!("cannot send reply for seq {}: {e}", header.seq);
                false
            }
        }
    }

    /// Serves one single-node request: checks it, applies it, writes the
    /// reply payload into `out` (at least [`REPLY_CAPACITY`] bytes).
    pub fn handle(&mut self, header: &RequestHeader, data: &[u8], out: &mut [u8]) -> Reply {
        let Some(kind) = header.kind() else {
            warning!(
                "request type {} (seq {}) is unknown: answering EINVAL",
                header.request_type,
                header.seq
            );
            return Reply::failed(libc::EINVAL, None);
        };
        let key = LogKey::new(header.uuid_bytes(), header.luid);
        if kind == RequestType::Ctr {
            return self.construct(key, header.version, data, out);
        }
        let Some(&slot) = self.index.get(&key) else {
            warning!(
                "{} for unknown log '{}' (luid {}): answering ESRCH so the kernel replays its constructor",
                kind.name(),
                key.uuid_text(),
                key.luid
            );
            return Reply::failed(libc::ESRCH, None);
        };
        if kind == RequestType::Dtr {
            if !data.is_empty() {
                return self.fail(slot, kind, invalid(payload_size_error(kind, data.len())));
            }
            if let Some(entry) = &self.slots[slot] {
                info!("{}: destroyed", entry.name());
            }
            self.discard(slot);
            return Reply {
                error: 0,
                len: 0,
                slot: None,
            };
        }
        match self.dispatch(slot, kind, data, out) {
            Ok(len) => Reply {
                error: 0,
                len,
                slot: Some(slot),
            },
            Err(f) => self.fail(slot, kind, f),
        }
    }

    fn fail(&self, slot: usize, kind: RequestType, f: Failure) -> Reply {
        if let Some(entry) = self.slots[slot].as_ref().filter(|_| f.loud) {
            warning!("{}: {}: {}", entry.name(), kind.name(), f.why);
        }
        Reply::failed(f.errno, Some(slot))
    }

    /// Parses and checks a CTR string; `Err` answers it.
    fn ctr_config(uuid: &str, key: &LogKey, data: &[u8]) -> Result<(String, LogConfig), Reply> {
        let refuse = |why: String| {
            error!("log '{uuid}': {why}");
            Reply::failed(libc::EINVAL, None)
        };
        if key.uuid_bytes().is_empty() {
            return Err(refuse("CTR with an empty uuid".into()));
        }
        let text = ctr_args::ctr_text(data).map_err(|e| refuse(e.to_string()))?;
        if text.len() > MAX_CTR_LEN {
            return Err(refuse(format!(
                "constructor string of {} bytes is too long",
                text.len()
            )));
        }
        let config = ctr_args::parse(text).map_err(|e| refuse(e.to_string()))?;
        Ok((text.to_string(), config))
    }

    fn open_device(&self, uuid: &str, config: &LogConfig) -> Result<Option<LogDevice>, Reply> {
        match &config.device {
            Some(spec) => {
                match LogDevice::open(spec, config.region_count, &self.scratch, self.devices) {
                    Ok(d) => Ok(Some(d)),
                    Err(e) => {
                        error!("log '{uuid}': {}", e.message);
                        Err(Reply::failed(e.errno, None))
                    }
                }
            }
            None => Ok(None),
        }
    }

    fn construct(&mut self, key: LogKey, version: u32, data: &[u8], out: &mut [u8]) -> Reply {
        let uuid = key.uuid_text();
        let (text, config) = match Self::ctr_config(&uuid, &key, data) {
            Ok(c) => c,
            Err(reply) => return reply,
        };

        if let Some(&slot) = self.index.get(&key) {
            let (scratch, devices) = (&self.scratch, self.devices);
            let entry = self.slots[slot].as_mut().expect("indexed slot is live");
            if entry.ctr == text {
                if let Origin::Reloaded { .. } = entry.origin {
                    entry.origin = Origin::Reloaded { ctr_replayed: true };
                    info!(
                        "{}: constructor replayed after a restart: state kept",
                        entry.name()
                    );
                    // The reply names the device (a CTR resent after a
                    // timeout may be the kernel constructing the log).
                    open_confirmed_device(entry, scratch, devices);
                } else {
                    info!("{}: constructor repeated: state kept", entry.name());
                }
                let len = match &self.slots[slot] {
                    Some(entry) => ctr_reply(self.device_of(entry), version, out),
                    None => 0,
                };
                return Reply {
                    error: 0,
                    len,
                    slot: Some(slot),
                };
            }
            if entry.origin == Origin::Live {
                let why = format!(
                    "exists already with constructor '{}'; refusing '{text}'",
                    entry.ctr
                );
                error!("{}: {why}", entry.name());
                return Reply::failed(libc::EEXIST, None);
            }
            warning!(
                "{}: state left by an earlier instance (constructor '{}') is discarded",
                entry.name(),
                entry.ctr
            );
            self.discard(slot);
        }

        let device = match self.open_device(&uuid, &config) {
            Ok(d) => d,
            Err(reply) => return reply,
        };
        let body = if let Some(cluster) = &mut self.cluster {
            cluster.instance_constructed(&uuid, &config, device);
            Body::Clustered
        } else {
            let backing = match &self.state_dir {
                Some(dir) => {
                    let id = Identity {
                        uuid: key.uuid_bytes().to_vec(),
                        luid: key.luid,
                        ctr: text.clone(),
                    };
                    match dir.create(&id, bitmap::words_for(config.region_count)) {
                        Ok(f) => Backing::File(f),
                        Err(e) => {
                            error!(
                                "log '{uuid}': cannot create its state file in {}: {e} (it would not survive a restart)",
                                dir.root().display()
                            );
                            return Reply::failed(errno_of(&e), None);
                        }
                    }
                }
                None => Backing::memory(config.region_count),
            };
            let mut log = LogState::new(&config, Sharing::Single, backing);
            if let Backing::File(_) = log.backing() {
                if let Err(e) = log.publish_state_file() {
                    error!("log '{uuid}': cannot publish its state file: {e}");
                    if let Some(f) = log.into_backing().into_state_file() {
                        let _ = f.remove();
                    }
                    return Reply::failed(errno_of(&e), None);
                }
            }
            Body::Local(Local { log, device })
        };
        let entry = Entry {
            key: key.clone(),
            ctr: text,
            config,
            body,
            origin: Origin::Live,
            counters: Counters::default(),
        };
        let device = self.device_of(&entry);
        info!(
            "{}: created: {} regions of {} sectors, {}{}{}",
            entry.name(),
            entry.config.region_count,
            entry.config.region_size,
            entry.config.type_name,
            device.map_or(String::new(), |d| format!(" on {}", d.status_name())),
            if self.cluster.is_some() {
                " (clustered)"
            } else {
                ""
            }
        );
        let len = ctr_reply(device, version, out);
        let slot = self.insert(key, entry);
        Reply {
            error: 0,
            len,
            slot: Some(slot),
        }
    }

    /// The log device of a log, wherever it lives.
    fn device_of<'a>(&'a self, entry: &'a Entry) -> Option<&'a LogDevice> {
        match &entry.body {
            Body::Local(l) => l.device.as_ref(),
            Body::Clustered => self
                .cluster
                .as_ref()
                .and_then(|c| c.group(&entry.key.uuid_text()))
                .and_then(|g| g.device()),
        }
    }

    fn dispatch(
        &mut self,
        slot: usize,
        kind: RequestType,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Failure> {
        let Self {
            slots,
            total,
            scratch,
            devices,
            ..
        } = self;
        let entry = slots[slot].as_mut().expect("indexed slot is live");
        if !matches!(entry.body, Body::Local(_)) {
            return Err(invalid("a clustered log on a single-node store".into()));
        }
        if entry.origin == (Origin::Reloaded { ctr_replayed: true })
            && kind == RequestType::GetRegionSize
        {
            warning!(
                "{}: constructed anew by a kernel log instance that reuses the id of one \
                 destroyed while no server ran: starting from a fresh state",
                entry.name()
            );
            if let Body::Local(l) = &mut entry.body {
                l.log.reset();
            }
        }
        if entry.origin != Origin::Live {
            // The kernel has the log: its device is the one named.
            open_confirmed_device(entry, scratch, *devices);
            entry.origin = Origin::Live;
        }
        let Body::Local(local) = &mut entry.body else {
            return Err(invalid("a clustered log on a single-node store".into()));
        };
        match kind {
            RequestType::Ctr | RequestType::Dtr => return Err(invalid("handled elsewhere".into())),
            RequestType::GetRegionSize => {
                expect_size(kind, data, 0)?;
                return Ok(put_u64s(out, &[u64::from(entry.config.region_size)]));
            }
            RequestType::StatusInfo => {
                expect_size(kind, data, 0)?;
                let failed = local.log.device_failed();
                return Ok(status_info(
                    &entry.config,
                    local.device.as_ref(),
                    failed,
                    out,
                ));
            }
            RequestType::StatusTable => {
                expect_size(kind, data, 0)?;
                return Ok(status_table(&entry.config, local.device.as_ref(), out));
            }
            _ => {}
        }
        let mut buf = [0u64; MAX_GROUP_REGIONS];
        let Some(req) = Request::decode(kind, data, &mut buf) else {
            return Err(invalid("not a request to the log".into()));
        };
        let me = MemberId::LOCAL;
        match req? {
            Request::Presuspend => Ok(0),
            Request::Postsuspend => {
                local.log.suspend();
                commit(entry, total, scratch, *devices)?;
                Ok(0)
            }
            Request::Resume => {
                resume(entry, total, scratch, *devices)?;
                Ok(0)
            }
            Request::IsClean(r) => Ok(put_u64s(out, &[u64::from(local.log.is_clean(r)?)])),
            Request::InSync(r) => Ok(put_u64s(out, &[u64::from(local.log.in_sync(r)?)])),
            Request::Flush(marks) => {
                local.log.mark(me, marks)?;
                count_regions(entry, total, marks.len(), 0);
                commit(entry, total, scratch, *devices)?;
                Ok(0)
            }
            Request::Mark(marks) => {
                local.log.mark(me, marks)?;
                count_regions(entry, total, marks.len(), 0);
                Ok(0)
            }
            Request::Clear(clears) => {
                local.log.clear(me, clears)?;
                count_regions(entry, total, 0, clears.len());
                Ok(0)
            }
            Request::GetResyncWork => {
                let reply = match local.log.get_resync_work(me) {
                    Some(r) => [1, r],
                    None => [0, 0],
                };
                Ok(put_u64s(out, &reply))
            }
            Request::SetRegionSync(region, in_sync) => {
                local.log.set_region_sync(me, region, in_sync)?;
                Ok(0)
            }
            Request::GetSyncCount => Ok(put_u64s(out, &[local.log.sync_count()])),
            Request::IsRemoteRecovering(r) => {
                let (recovering, hint) = local.log.is_remote_recovering(r)?;
                Ok(put_u64s(out, &[u64::from(recovering), hint]))
            }
        }
    }

    /// Records one answered request in the total and per-log counters.
    pub fn record(&mut self, slot: Option<usize>, request_type: u32, error: bool, ns: u64) {
        let s = slot_of(request_type);
        self.total.record(s, error, ns);
        if let Some(entry) = slot
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
        {
            entry.counters.record(s, error, ns);
        }
    }

    /// The total counters.
    pub fn total(&self) -> &Counters {
        &self.total
    }

    /// Zeroes all counters.
    pub fn reset_counters(&mut self) {
        self.total.reset();
        for entry in self.slots.iter_mut().flatten() {
            entry.counters.reset();
        }
        if let Some(c) = &mut self.cluster {
            c.reset_counters();
        }
    }

    /// A description of every live log, for the stats output.
    pub fn summaries(&self) -> Vec<LogSummary<'_>> {
        let mut v: Vec<LogSummary<'_>> = self
            .slots
            .iter()
            .flatten()
            .map(|e| {
                let device = (e.config.kind == LogKind::Disk).then(|| self.device_name(e));
                let (state, in_sync, device_failed, cluster) = match &e.body {
                    Body::Local(l) => (
                        l.log.lifecycle().name(),
                        l.log.sync_count(),
                        l.log.device_failed(),
                        None,
                    ),
                    Body::Clustered => {
                        let c = self
                            .cluster
                            .as_ref()
                            .expect("clustered logs have a cluster");
                        c.summary(&e.key.uuid_text())
                    }
                };
                LogSummary {
                    uuid: e.key.uuid_text(),
                    luid: e.key.luid,
                    type_name: e.config.type_name,
                    state,
                    region_size: e.config.region_size,
                    regions: e.config.region_count,
                    in_sync,
                    device,
                    device_failed,
                    counters: &e.counters,
                    cluster,
                }
            })
            .collect();
        v.sort_by(|a, b| (&a.uuid, a.luid).cmp(&(&b.uuid, b.luid)));
        v
    }

    fn device_name(&self, entry: &Entry) -> String {
        match (self.device_of(entry), &entry.config.device) {
            (Some(d), _) => d.status_name().to_string(),
            (None, Some(spec)) => spec.to_string(),
            (None, None) => String::new(),
        }
    }

    /// Writes what disk logs have not committed yet (at exit; best effort).
    /// Logs only reloaded from their state files, not confirmed by the
    /// kernel since, are left alone (see [`Self::load_state`]).
    pub fn commit_all(&mut self) {
        let Self {
            slots,
            total,
            scratch,
            devices,
            ..
        } = self;
        for entry in slots
            .iter_mut()
            .flatten()
            .filter(|e| e.origin == Origin::Live)
        {
            if let Err(f) = commit(entry, total, scratch, *devices) {
                error!("{}: {}", entry.name(), f.why);
            }
        }
    }
}

fn payload_size_error(kind: RequestType, len: usize) -> String {
    format!(
        "payload of {len} bytes does not fit a {} request",
        kind.name()
    )
}

fn expect_size(kind: RequestType, data: &[u8], size: usize) -> Result<(), Failure> {
    if data.len() == size {
        Ok(())
    } else {
        Err(invalid(payload_size_error(kind, data.len())))
    }
}

fn count_regions(entry: &mut Entry, total: &mut Counters, marked: usize, cleared: usize) {
    entry.counters.regions_marked += marked as u64;
    entry.counters.regions_cleared += cleared as u64;
    total.regions_marked += marked as u64;
    total.regions_cleared += cleared as u64;
}

fn put_u64s(out: &mut [u8], values: &[u64]) -> usize {
    put_words(out, values).unwrap_or(0)
}

fn device_text(config: &LogConfig, device: Option<&LogDevice>) -> String {
    match (device, &config.device) {
        (Some(d), _) => d.status_name().to_string(),
        (None, Some(spec)) => spec.to_string(),
        (None, None) => String::new(),
    }
}

fn ctr_reply(device: Option<&LogDevice>, version: u32, out: &mut [u8]) -> usize {
    // Version 1 kernels cannot take a device name.
    let Some(name) = device.and_then(LogDevice::reply_name) else {
        return 0;
    };
    if version < 2 || name.len() + 1 > MAX_DEVICE_NAME || name.len() + 1 > out.len() {
        return 0;
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    out[name.len()] = 0;
    name.len() + 1
}

/// `1 clustered-core` or `3 clustered-disk <maj:min> A|D`, as cmirrord
/// prints them (with the type word as the table spelled it).
fn status_info(
    config: &LogConfig,
    device: Option<&LogDevice>,
    failed: bool,
    out: &mut [u8],
) -> usize {
    let mut w = Cursor::new(out);
    let _ = match config.kind {
        LogKind::Core => write!(w, "1 {}", config.type_name),
        LogKind::Disk => write!(
            w,
            "3 {} {} {}",
            config.type_name,
            device_text(config, device),
            if failed { 'D' } else { 'A' }
        ),
    };
    w.position() as usize
}

/// cmirrord's table line, trailing spaces included:
/// `clustered-core <size> [sync |nosync ][block_on_error] `.
fn status_table(config: &LogConfig, device: Option<&LogDevice>, out: &mut [u8]) -> usize {
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
    let mut w = Cursor::new(out);
    let _ = match config.kind {
        LogKind::Core => write!(
            w,
            "{} {} {sync}{boe} ",
            config.type_name, config.region_size
        ),
        LogKind::Disk => write!(
            w,
            "{} {} {} {sync}{boe} ",
            config.type_name,
            device_text(config, device),
            config.region_size
        ),
    };
    w.position() as usize
}

/// Opens the log device of a reloaded disk log once the kernel has shown
/// that the log exists. A failure is logged; the next commit retries.
fn open_confirmed_device(entry: &mut Entry, scratch: &Path, devices: DevicePolicy) {
    let name = entry.name();
    let Body::Local(local) = &mut entry.body else {
        return;
    };
    let (None, Some(spec)) = (&local.device, &entry.config.device) else {
        return;
    };
    match LogDevice::open(spec, local.log.region_count(), scratch, devices) {
        Ok(d) => local.device = Some(d),
        Err(e) => error!("{name}: {} (will retry at the next flush)", e.message),
    }
}

/// Opens a single-node log's device if it is not open; a failure marks the
/// log device failed.
fn ensure_device(
    entry: &mut Entry,
    total: &mut Counters,
    scratch: &Path,
    devices: DevicePolicy,
    count_error: bool,
) -> Result<(), Failure> {
    let Body::Local(local) = &mut entry.body else {
        return Ok(());
    };
    if local.device.is_some() {
        return Ok(());
    }
    let Some(spec) = &entry.config.device else {
        return Ok(());
    };
    match LogDevice::open(spec, local.log.region_count(), scratch, devices) {
        Ok(d) => {
            local.device = Some(d);
            Ok(())
        }
        Err(e) => {
            local.log.set_device_failed();
            if count_error {
                entry.counters.disk_errors += 1;
                total.disk_errors += 1;
            }
            Err(Failure {
                errno: e.errno,
                why: e.message,
                loud: true,
            })
        }
    }
}

/// Commits a single-node disk log's pending changes; a write failure marks
/// the log device failed (status `D`) and fails the request.
fn commit(
    entry: &mut Entry,
    total: &mut Counters,
    scratch: &Path,
    devices: DevicePolicy,
) -> Result<(), Failure> {
    let Body::Local(local) = &entry.body else {
        return Ok(());
    };
    let Some(plan) = local.log.pending_commit() else {
        return Ok(());
    };
    ensure_device(entry, total, scratch, devices, true)?;
    let key = &entry.key;
    let Body::Local(local) = &mut entry.body else {
        return Ok(());
    };
    let Some(device) = local.device.as_mut() else {
        return Ok(());
    };
    match device.commit(&mut local.log, plan) {
        Ok(s) => {
            for c in [&mut entry.counters, total] {
                c.disk_writes += u64::from(s.writes);
                c.disk_bytes += s.bytes;
                c.disk_syncs += u64::from(s.synced);
            }
            Ok(())
        }
        Err(e) => {
            let first = !local.log.device_failed();
            local.log.set_device_failed();
            entry.counters.disk_errors += 1;
            total.disk_errors += 1;
            let why = format!("cannot write log device {}: {e}", device.status_name());
            if first {
                error!(
                    "log '{}' (luid {}): {why}: log device marked failed",
                    key.uuid_text(),
                    key.luid
                );
            }
            Err(Failure {
                errno: errno_of(&e),
                why,
                loud: false,
            })
        }
    }
}

/// What loading a disk log from its device found, for the admin.
pub fn note_text(note: LoadNote, dev: &str, count: u64) -> (bool, String) {
    match note {
        LoadNote::Blank => (false, format!("no log state on {dev}: all regions resync")),
        LoadNote::Resized { on_disk } => (
            false,
            format!(
                "{dev} describes {on_disk} regions, the mirror has {count}: \
                 keeping the first {}, the rest resync",
                on_disk.min(count)
            ),
        ),
        LoadNote::OtherVersion(v) => (
            true,
            format!(
                "log device {dev} has on-disk version {v} (expected 2): \
                 reinitialising it, all regions resync"
            ),
        ),
    }
}

/// RESUME of a single-node log. A log already resumed (the kernel replaying
/// CTR and RESUME after a server restart) is left alone, as cmirrord does.
/// A core log restarts its resync scan; a disk log reloads from its device
/// (dm-log `disk_resume`) and writes the result back.
fn resume(
    entry: &mut Entry,
    total: &mut Counters,
    scratch: &Path,
    devices: DevicePolicy,
) -> Result<(), Failure> {
    let name = entry.name();
    let Body::Local(local) = &mut entry.body else {
        return Ok(());
    };
    if local.log.lifecycle() == Lifecycle::Resumed {
        info!("{name}: resumed already: nothing to do");
        return Ok(());
    }
    if entry.config.kind == LogKind::Core {
        local.log.resume_core();
        return Ok(());
    }
    let count = local.log.region_count();
    // Changes a failed POSTSUSPEND could not write must not be lost to the
    // re-read: then resume from memory instead of from the device.
    let from_memory = commit(entry, total, scratch, devices).is_err();
    ensure_device(entry, total, scratch, devices, false)?;
    let sync = entry.config.sync;
    let Body::Local(local) = &mut entry.body else {
        return Ok(());
    };
    let Some(device) = local.device.as_mut() else {
        return Err(invalid("disk log without a log device".into()));
    };
    let dev_name = device.status_name().to_string();
    if from_memory {
        device.stage(&local.log);
        // `sync` and `nosync` ignore the bitmap, as in dm-log.
        let trusted = if sync == SyncMode::Default { count } else { 0 };
        let on_disk = device.bitmap().to_vec();
        local.log.resume_from_disk(trusted, &on_disk);
    } else {
        match log_device::load(&mut local.log, device, sync) {
            Ok(None) => {}
            Ok(Some(note)) => match note_text(note, &dev_name, count) {
                (true, text) => warning!("{name}: {text}"),
                (false, text) => info!("{name}: {text}"),
            },
            Err(e) => {
                error!("{name}: cannot read log device {dev_name}: {e}: all regions resync");
                local.log.resume_from_disk(0, &[]);
                local.log.set_device_failed();
                entry.counters.disk_errors += 1;
                total.disk_errors += 1;
            }
        }
    }
    commit(entry, total, scratch, devices)?;
    if let Body::Local(local) = &entry.body {
        info!(
            "{name}: resumed from {dev_name}: {}/{count} regions in sync",
            local.log.sync_count()
        );
    }
    Ok(())
}

/// One `--verbose` line per request.
fn trace(header: &RequestHeader, data: &[u8], error: i32, payload: &[u8], ns: u64) {
    let kind = header.kind().map_or("?", RequestType::name);
    let uuid = String::from_utf8_lossy(header.uuid_bytes());
    let args: Vec<String> = match header.kind() {
        Some(RequestType::Ctr) => vec![format!(
            "'{}'",
            String::from_utf8_lossy(data).trim_end_matches('\0')
        )],
        _ if data.len() % 8 == 0 => (0..data.len() / 8)
            .filter_map(|i| payload_u64(data, i))
            .map(|v| v.to_string())
            .collect(),
        _ => vec![format!("{} bytes", data.len())],
    };
    let answer: Vec<String> = match header.kind() {
        Some(RequestType::StatusInfo | RequestType::StatusTable | RequestType::Ctr) => {
            vec![format!(
                "'{}'",
                String::from_utf8_lossy(payload).trim_end_matches('\0')
            )]
        }
        _ => (0..payload.len() / 8)
            .filter_map(|i| payload_u64(payload, i))
            .map(|v| (v as i64).to_string())
            .collect(),
    };
    crate::logging::emit(
        crate::logging::Level::Debug,
        format_args!(
            "seq {} {kind} '{uuid}'/{} [{}] -> {error} [{}] in {:.1} us",
            header.seq,
            header.luid,
            args.join(" "),
            answer.join(" "),
            ns as f64 / 1000.0
        ),
    );
}

#[cfg(test)]
mod tests;
