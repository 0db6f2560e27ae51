// SPDX-License-Identifier: GPL-2.0

//! The table of live logs, keyed by (uuid, luid), and the dispatch of each
//! request to its log: payload checks, the log operation, the reply
//! payload, disk commits and state files.
//!
//! Transport-free: [`LogStore::handle`] takes a decoded request and fills a
//! reply buffer, so the netlink server, the tests and the benchmark all
//! drive the same code.
//!
//! # Unknown logs and server restarts
//!
//! A request naming a log this server does not know gets `-ESRCH`. The
//! kernel module treats a server-returned `-ESRCH` like a missing server:
//! it replays the log's CTR with the saved string, then RESUME, then the
//! original request (the in-tree C module does the same). So a log whose
//! state was lost is rebuilt as the kernel would build it at table load.
//!
//! State is normally not lost: every log is kept in a state file (see
//! [`crate::state_file`]) and reloaded at start. A reloaded log starts as
//! *reloaded*: a CTR with the same string is then the kernel replaying it
//! and is accepted keeping the state; a RESUME of a log already resumed is a
//! no-op; any request but CTR makes it *live*. Only if a replayed CTR is
//! followed by GET_REGION_SIZE (which the kernel sends only while
//! constructing a new log instance) was the match a coincidence (a new
//! instance that got the luid of a log destroyed while no server ran), and
//! the log is started afresh.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use ulog_proto::wire::{
    payload_i64, payload_u64, put_words, RequestHeader, RequestType, MAX_DEVICE_NAME,
    MAX_GROUP_REGIONS, UUID_LEN,
};

use crate::ctr_args::{self, LogConfig, LogKind, SyncMode};
use crate::log::{Backing, Lifecycle, Log, OutOfRange};
use crate::log_device::{errno_of, LogDevice};
use crate::state_file::{Identity, StateDir, StateFile, MAX_CTR_LEN};
use crate::stats::{slot_of, Counters, LogSummary};
use crate::{bitmap, error, info, warning};

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

struct Entry {
    key: LogKey,
    ctr: String,
    config: LogConfig,
    log: Log,
    device: Option<LogDevice>,
    origin: Origin,
    counters: Counters,
}

impl Entry {
    fn name(&self) -> String {
        format!("log '{}' (luid {})", self.key.uuid_text(), self.key.luid)
    }
}

/// The logs this server serves.
pub struct LogStore {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    index: HashMap<LogKey, usize, BuildHasherDefault<LuidHasher>>,
    state_dir: Option<StateDir>,
    scratch: PathBuf,
    total: Counters,
}

/// Result of loading the state directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Logs restored.
    pub loaded: usize,
    /// State files that could not be used.
    pub failed: usize,
}

impl LogStore {
    /// A store that keeps its logs in `state_dir` (or in memory only).
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
            total: Counters::default(),
        }
    }

    /// Number of live logs.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no log is live.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
        // log's first commit writes the whole image (`Log::restore`).
        let log = Log::restore(&config, Backing::File(file));
        let entry = Entry {
            key: key.clone(),
            ctr: id.ctr.clone(),
            config,
            log,
            device: None,
            origin: Origin::Reloaded {
                ctr_replayed: false,
            },
            counters: Counters::default(),
        };
        info!(
            "{name}: restored ({} {}, {}/{} regions in sync)",
            entry.config.type_name,
            entry.log.lifecycle().name(),
            entry.log.sync_count(),
            entry.log.region_count()
        );
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
            if let Some(file) = entry.log.into_backing().into_state_file() {
                let path = file.path().to_path_buf();
                if let Err(e) = file.remove() {
                    warning!("{name}: cannot remove state file {}: {e}", path.display());
                }
            }
        }
    }

    /// Serves one request: checks it, applies it, writes the reply payload
    /// into `out` (at least [`REPLY_CAPACITY`] bytes).
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

    fn construct(&mut self, key: LogKey, version: u32, data: &[u8], out: &mut [u8]) -> Reply {
        let uuid = key.uuid_text();
        let refuse = |why: String| {
            error!("log '{uuid}': {why}");
            Reply::failed(libc::EINVAL, None)
        };
        if key.uuid_bytes().is_empty() {
            return refuse("CTR with an empty uuid".into());
        }
        let text = match ctr_args::ctr_text(data) {
            Ok(t) => t,
            Err(e) => return refuse(e.to_string()),
        };
        if text.len() > MAX_CTR_LEN {
            return refuse(format!(
                "constructor string of {} bytes is too long",
                text.len()
            ));
        }
        let config = match ctr_args::parse(text) {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };

        if let Some(&slot) = self.index.get(&key) {
            let scratch = &self.scratch;
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
                    open_confirmed_device(entry, scratch);
                } else {
                    info!("{}: constructor repeated: state kept", entry.name());
                }
                let len = ctr_reply(entry, version, out);
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

        let device = match &config.device {
            Some(spec) => match LogDevice::open(spec, config.region_count, &self.scratch) {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("log '{uuid}': {}", e.message);
                    return Reply::failed(e.errno, None);
                }
            },
            None => None,
        };
        let backing = match &self.state_dir {
            Some(dir) => {
                let id = Identity {
                    uuid: key.uuid_bytes().to_vec(),
                    luid: key.luid,
                    ctr: text.to_string(),
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
        let mut log = Log::new(&config, backing);
        if let Backing::File(_) = log.backing() {
            if let Err(e) = log.publish_state_file() {
                error!("log '{uuid}': cannot publish its state file: {e}");
                if let Some(f) = log.into_backing().into_state_file() {
                    let _ = f.remove();
                }
                return Reply::failed(errno_of(&e), None);
            }
        }
        let entry = Entry {
            key: key.clone(),
            ctr: text.to_string(),
            config,
            log,
            device,
            origin: Origin::Live,
            counters: Counters::default(),
        };
        info!(
            "{}: created: {} regions of {} sectors, {}{}",
            entry.name(),
            entry.log.region_count(),
            entry.config.region_size,
            entry.config.type_name,
            entry
                .device
                .as_ref()
                .map_or(String::new(), |d| format!(" on {}", d.status_name()))
        );
        let len = ctr_reply(&entry, version, out);
        let slot = self.insert(key, entry);
        Reply {
            error: 0,
            len,
            slot: Some(slot),
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
            ..
        } = self;
        let entry = slots[slot].as_mut().expect("indexed slot is live");
        if entry.origin == (Origin::Reloaded { ctr_replayed: true })
            && kind == RequestType::GetRegionSize
        {
            warning!(
                "{}: constructed anew by a kernel log instance that reuses the id of one \
                 destroyed while no server ran: starting from a fresh state",
                entry.name()
            );
            entry.log.reset();
        }
        if entry.origin != Origin::Live {
            // The kernel has the log: its device is the one named.
            open_confirmed_device(entry, scratch);
            entry.origin = Origin::Live;
        }
        let log = &mut entry.log;
        let mut regions = [0u64; MAX_GROUP_REGIONS];

        match kind {
            RequestType::Ctr | RequestType::Dtr => Err(invalid("handled elsewhere".into())),
            RequestType::Presuspend => {
                expect_size(kind, data, 0)?;
                Ok(0)
            }
            RequestType::Postsuspend => {
                expect_size(kind, data, 0)?;
                log.suspend();
                commit(entry, total, scratch)?;
                Ok(0)
            }
            RequestType::Resume => {
                expect_size(kind, data, 0)?;
                resume(entry, total, scratch)?;
                Ok(0)
            }
            RequestType::GetRegionSize => {
                expect_size(kind, data, 0)?;
                Ok(put_u64s(out, &[u64::from(log.region_size())]))
            }
            RequestType::IsClean => {
                let r = region_arg(kind, data)?;
                Ok(put_u64s(out, &[u64::from(log.is_clean(r)?)]))
            }
            RequestType::InSync => {
                let r = region_arg(kind, data)?;
                Ok(put_u64s(out, &[u64::from(log.in_sync(r)?)]))
            }
            RequestType::Flush => {
                let marks = regions_arg(kind, data, &mut regions)?;
                log.mark(marks)?;
                count_regions(entry, total, marks.len(), 0);
                commit(entry, total, scratch)?;
                Ok(0)
            }
            RequestType::MarkRegion => {
                let marks = regions_arg(kind, data, &mut regions)?;
                log.mark(marks)?;
                count_regions(entry, total, marks.len(), 0);
                Ok(0)
            }
            RequestType::ClearRegion => {
                let clears = regions_arg(kind, data, &mut regions)?;
                log.clear(clears)?;
                count_regions(entry, total, 0, clears.len());
                Ok(0)
            }
            RequestType::GetResyncWork => {
                expect_size(kind, data, 0)?;
                let reply = match log.get_resync_work() {
                    Some(r) => [1, r],
                    None => [0, 0],
                };
                Ok(put_u64s(out, &reply))
            }
            RequestType::SetRegionSync => {
                expect_size(kind, data, 16)?;
                let region = payload_u64(data, 0).unwrap_or(u64::MAX);
                let in_sync = payload_i64(data, 1).unwrap_or(0) != 0;
                log.set_region_sync(region, in_sync)?;
                Ok(0)
            }
            RequestType::GetSyncCount => {
                expect_size(kind, data, 0)?;
                Ok(put_u64s(out, &[log.sync_count()]))
            }
            RequestType::StatusInfo => {
                expect_size(kind, data, 0)?;
                Ok(status_info(entry, out))
            }
            RequestType::StatusTable => {
                expect_size(kind, data, 0)?;
                Ok(status_table(entry, out))
            }
            RequestType::IsRemoteRecovering => {
                let r = region_arg(kind, data)?;
                let (recovering, hint) = log.is_remote_recovering(r)?;
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
    }

    /// A description of every live log, for the stats output.
    pub fn summaries(&self) -> Vec<LogSummary<'_>> {
        let mut v: Vec<LogSummary<'_>> = self
            .slots
            .iter()
            .flatten()
            .map(|e| LogSummary {
                uuid: e.key.uuid_text(),
                luid: e.key.luid,
                type_name: e.config.type_name,
                state: e.log.lifecycle().name(),
                region_size: e.config.region_size,
                regions: e.log.region_count(),
                in_sync: e.log.sync_count(),
                device: (e.config.kind == LogKind::Disk).then(|| device_name(e).to_string()),
                device_failed: e.log.device_failed(),
                counters: &e.counters,
            })
            .collect();
        v.sort_by(|a, b| (&a.uuid, a.luid).cmp(&(&b.uuid, b.luid)));
        v
    }

    /// Writes what disk logs have not committed yet (at exit; best effort).
    /// Logs only reloaded from their state files, not confirmed by the
    /// kernel since, are left alone (see [`Self::load_state`]).
    pub fn commit_all(&mut self) {
        let Self {
            slots,
            total,
            scratch,
            ..
        } = self;
        for entry in slots
            .iter_mut()
            .flatten()
            .filter(|e| e.origin == Origin::Live)
        {
            if let Err(f) = commit(entry, total, scratch) {
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

fn region_arg(kind: RequestType, data: &[u8]) -> Result<u64, Failure> {
    expect_size(kind, data, 8)?;
    Ok(payload_u64(data, 0).unwrap_or(u64::MAX))
}

/// A `u64[]` payload of at most [`MAX_GROUP_REGIONS`] regions.
fn regions_arg<'a>(
    kind: RequestType,
    data: &[u8],
    buf: &'a mut [u64; MAX_GROUP_REGIONS],
) -> Result<&'a [u64], Failure> {
    let n = data.len() / 8;
    if data.len() % 8 != 0 || n > MAX_GROUP_REGIONS {
        return Err(invalid(format!(
            "payload of {} bytes is not a list of up to {MAX_GROUP_REGIONS} regions ({})",
            data.len(),
            kind.name()
        )));
    }
    for (i, slot) in buf[..n].iter_mut().enumerate() {
        *slot = payload_u64(data, i).unwrap_or(u64::MAX);
    }
    Ok(&buf[..n])
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

fn device_name(entry: &Entry) -> String {
    match (&entry.device, &entry.config.device) {
        (Some(d), _) => d.status_name().to_string(),
        (None, Some(spec)) => spec.to_string(),
        (None, None) => String::new(),
    }
}

fn ctr_reply(entry: &Entry, version: u32, out: &mut [u8]) -> usize {
    // Version 1 kernels cannot take a device name.
    let Some(name) = entry.device.as_ref().and_then(LogDevice::reply_name) else {
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
fn status_info(entry: &Entry, out: &mut [u8]) -> usize {
    let mut w = Cursor::new(out);
    let _ = match entry.config.kind {
        LogKind::Core => write!(w, "1 {}", entry.config.type_name),
        LogKind::Disk => write!(
            w,
            "3 {} {} {}",
            entry.config.type_name,
            device_name(entry),
            if entry.log.device_failed() { 'D' } else { 'A' }
        ),
    };
    w.position() as usize
}

/// cmirrord's table line, trailing spaces included:
/// `clustered-core <size> [sync |nosync ][block_on_error] `.
fn status_table(entry: &Entry, out: &mut [u8]) -> usize {
    let c = &entry.config;
    let sync = match c.sync {
        SyncMode::Default => "",
        SyncMode::NoSync => "nosync ",
        SyncMode::Force => "sync ",
    };
    let boe = if c.block_on_error {
        "block_on_error"
    } else {
        ""
    };
    let mut w = Cursor::new(out);
    let _ = match c.kind {
        LogKind::Core => write!(w, "{} {} {sync}{boe} ", c.type_name, c.region_size),
        LogKind::Disk => write!(
            w,
            "{} {} {} {sync}{boe} ",
            c.type_name,
            device_name(entry),
            c.region_size
        ),
    };
    w.position() as usize
}

/// Opens the log device of a reloaded disk log once the kernel has shown
/// that the log exists. A failure is logged; the next commit retries.
fn open_confirmed_device(entry: &mut Entry, scratch: &Path) {
    let (None, Some(spec)) = (&entry.device, &entry.config.device) else {
        return;
    };
    match LogDevice::open(spec, entry.log.region_count(), scratch) {
        Ok(d) => entry.device = Some(d),
        Err(e) => error!(
            "{}: {} (will retry at the next flush)",
            entry.name(),
            e.message
        ),
    }
}

/// Commits a disk log's pending changes; a write failure marks the log
/// device failed (status `D`) and fails the request.
fn commit(entry: &mut Entry, total: &mut Counters, scratch: &Path) -> Result<(), Failure> {
    let Some(plan) = entry.log.pending_commit() else {
        return Ok(());
    };
    if entry.device.is_none() {
        if let Some(spec) = &entry.config.device {
            match LogDevice::open(spec, entry.log.region_count(), scratch) {
                Ok(d) => entry.device = Some(d),
                Err(e) => {
                    entry.log.set_device_failed();
                    entry.counters.disk_errors += 1;
                    total.disk_errors += 1;
                    return Err(Failure {
                        errno: e.errno,
                        why: e.message,
                        loud: true,
                    });
                }
            }
        }
    }
    let Some(device) = entry.device.as_mut() else {
        return Ok(());
    };
    match device.commit(&mut entry.log, plan) {
        Ok(s) => {
            for c in [&mut entry.counters, total] {
                c.disk_writes += u64::from(s.writes);
                c.disk_bytes += s.bytes;
                c.disk_syncs += u64::from(s.synced);
            }
            Ok(())
        }
        Err(e) => {
            let first = !entry.log.device_failed();
            entry.log.set_device_failed();
            entry.counters.disk_errors += 1;
            total.disk_errors += 1;
            let why = format!("cannot write log device {}: {e}", device.status_name());
            if first {
                error!("{}: {why}: log device marked failed", entry.name());
            }
            Err(Failure {
                errno: errno_of(&e),
                why,
                loud: false,
            })
        }
    }
}

/// RESUME. A log already resumed (the kernel replaying CTR and RESUME after
/// a server restart) is left alone, as cmirrord does. A core log restarts
/// its resync scan; a disk log reloads from its device (dm-log
/// `disk_resume`) and writes the result back.
fn resume(entry: &mut Entry, total: &mut Counters, scratch: &Path) -> Result<(), Failure> {
    if entry.log.lifecycle() == Lifecycle::Resumed {
        info!("{}: resumed already: nothing to do", entry.name());
        return Ok(());
    }
    if entry.config.kind == LogKind::Core {
        entry.log.resume_core();
        return Ok(());
    }
    let name = entry.name();
    let count = entry.log.region_count();
    // Changes a failed POSTSUSPEND could not write must not be lost to the
    // re-read: then resume from memory instead of from the device.
    let from_memory = commit(entry, total, scratch).is_err();
    if entry.device.is_none() {
        if let Some(spec) = &entry.config.device {
            match LogDevice::open(spec, count, scratch) {
                Ok(d) => entry.device = Some(d),
                Err(e) => {
                    entry.log.set_device_failed();
                    return Err(Failure {
                        errno: e.errno,
                        why: e.message,
                        loud: true,
                    });
                }
            }
        }
    }
    let Some(device) = entry.device.as_mut() else {
        return Err(invalid("disk log without a log device".into()));
    };
    let dev_name = device.status_name().to_string();
    let default_sync = entry.config.sync == SyncMode::Default;
    let trusted = if from_memory {
        device.stage(&entry.log);
        count
    } else {
        match device.read() {
            // `sync` and `nosync` ignore the device's bitmap, as in dm-log
            // (the read still tells whether the device works).
            Ok(_) if !default_sync => 0,
            Ok(header) => match header.trusted_regions() {
                Ok(0) => {
                    info!("{name}: no log state on {dev_name}: all regions resync");
                    0
                }
                Ok(n) => {
                    if n != count {
                        info!(
                            "{name}: {dev_name} describes {n} regions, the mirror has {count}: \
                             keeping the first {}, the rest resync",
                            n.min(count)
                        );
                    }
                    n
                }
                Err(v) => {
                    warning!(
                        "{name}: log device {dev_name} has on-disk version {v} (expected 2): \
                         reinitialising it, all regions resync"
                    );
                    0
                }
            },
            Err(e) => {
                error!("{name}: cannot read log device {dev_name}: {e}: all regions resync");
                entry.log.set_device_failed();
                entry.counters.disk_errors += 1;
                total.disk_errors += 1;
                0
            }
        }
    };
    let trusted = if default_sync { trusted } else { 0 };
    let on_disk = entry.device.as_ref().map_or(&[][..], LogDevice::bitmap);
    entry.log.resume_from_disk(trusted, on_disk);
    commit(entry, total, scratch)?;
    info!(
        "{name}: resumed from {dev_name}: {}/{count} regions in sync",
        entry.log.sync_count()
    );
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
