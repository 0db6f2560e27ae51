// SPDX-License-Identifier: GPL-2.0

//! Request counters: per request type, count, errors and latency (mean, max
//! and p99 from a log2 histogram), plus region and disk counters; kept per
//! log and in total, and rendered as text or JSON.
//!
//! Latency is measured from the moment a request is received to the moment
//! its reply has been sent, so it includes any disk write and sync.

use std::fmt::Write as _;

use ulog_proto::wire::RequestType;

use crate::cluster::group::GroupCounters;
use crate::cluster::transport::RingId;
use crate::member::MemberId;
use crate::store::cluster::ClusterTotals;

/// Counter slots: 0 for requests with no known type (type 0, unknown types,
/// malformed messages), then one per request type 1..=17.
pub const TYPE_SLOTS: usize = RequestType::ALL.len() + 1;

const BUCKETS: usize = 48;

/// The counter slot of a raw request type.
pub fn slot_of(request_type: u32) -> usize {
    RequestType::from_wire(request_type).map_or(0, |t| t as usize)
}

/// The name of a counter slot.
pub fn slot_name(slot: usize) -> &'static str {
    match slot.checked_sub(1).and_then(|i| RequestType::ALL.get(i)) {
        Some(t) => t.name(),
        None => "INVALID",
    }
}

/// Counters of one request type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpCounters {
    /// Requests answered.
    pub count: u64,
    /// Of which answered with an error.
    pub errors: u64,
    /// Sum of latencies, ns.
    pub total_ns: u64,
    /// Largest latency, ns.
    pub max_ns: u64,
    /// Bucket i counts latencies in [2^i, 2^(i+1)) ns.
    hist: [u64; BUCKETS],
}

impl Default for OpCounters {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            total_ns: 0,
            max_ns: 0,
            hist: [0; BUCKETS],
        }
    }
}

impl OpCounters {
    fn record(&mut self, error: bool, ns: u64) {
        self.count += 1;
        self.errors += u64::from(error);
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        let bucket = (63 - ns.max(1).leading_zeros()) as usize;
        self.hist[bucket.min(BUCKETS - 1)] += 1;
    }

    fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
    }

    /// Mean latency in µs.
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ns as f64 / self.count as f64 / 1000.0
        }
    }

    /// Largest latency in µs.
    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }

    /// 99th percentile latency in µs: the upper bound of the histogram
    /// bucket it falls in (so within a factor of two), capped at the max.
    pub fn p99_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = self.count - self.count / 100;
        let mut seen = 0;
        for (i, &n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = if i + 1 >= 64 {
                    u64::MAX
                } else {
                    1u64 << (i + 1)
                };
                return upper.min(self.max_ns) as f64 / 1000.0;
            }
        }
        self.max_us()
    }
}

/// All counters of one log, or of the whole server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per request type, indexed by [`slot_of`].
    pub ops: [OpCounters; TYPE_SLOTS],
    /// Regions carried by MARK_REGION requests and integrated FLUSHes.
    pub regions_marked: u64,
    /// Regions carried by CLEAR_REGION requests.
    pub regions_cleared: u64,
    /// Write system calls to log devices.
    pub disk_writes: u64,
    /// `fdatasync` calls on log devices.
    pub disk_syncs: u64,
    /// Bytes written to log devices.
    pub disk_bytes: u64,
    /// Failed log device reads, writes or syncs.
    pub disk_errors: u64,
}

impl Counters {
    /// Records one answered request.
    pub fn record(&mut self, slot: usize, error: bool, ns: u64) {
        if let Some(op) = self.ops.get_mut(slot) {
            op.record(error, ns);
        }
    }

    /// All request types together.
    pub fn all_ops(&self) -> OpCounters {
        let mut sum = OpCounters::default();
        for op in &self.ops {
            sum.add(op);
        }
        sum
    }

    /// Zeroes everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Counters of the netlink socket itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Datagrams received.
    pub received: u64,
    /// Receive queue overflows (requests lost; the kernel resends after 15 s).
    pub overruns: u64,
    /// Messages ignored: not from the kernel, not for the userspace log, or
    /// acks.
    pub ignored: u64,
    /// Malformed messages (answered with an error where possible).
    pub malformed: u64,
    /// Replies that could not be sent.
    pub send_errors: u64,
}

/// A clustered log's view of its group, for the stats output.
#[derive(Clone, Debug)]
pub struct ClusterSummary {
    /// "serving", "joining" or "not in its group".
    pub phase: &'static str,
    /// Members of the group.
    pub members: usize,
    /// Members holding the state.
    pub holders: usize,
    /// Whether this node writes the log device.
    pub writer: bool,
    /// Whether this node's partition is quorate in the group's ring.
    pub quorate: bool,
    /// Why FLUSHes wait, if they do: "no quorum", "joining",
    /// "membership round".
    pub blocked_by: Option<&'static str>,
    /// The state's epoch (rounds decided).
    pub epoch: u64,
    /// The state's generation (group events applied).
    pub generation: u64,
    /// The group's counters.
    pub counters: GroupCounters,
}

/// One log's description for the stats output.
#[derive(Clone, Debug)]
pub struct LogSummary<'a> {
    /// The uuid.
    pub uuid: String,
    /// The kernel's instance id.
    pub luid: u64,
    /// Type word of its constructor.
    pub type_name: &'static str,
    /// Lifecycle name.
    pub state: &'static str,
    /// Region size in sectors.
    pub region_size: u32,
    /// Regions.
    pub regions: u64,
    /// Regions in sync.
    pub in_sync: u64,
    /// Log device `major:minor`, for disk logs.
    pub device: Option<String>,
    /// Whether the log device failed.
    pub device_failed: bool,
    /// Its counters.
    pub counters: &'a Counters,
    /// Its group, in cluster mode.
    pub cluster: Option<ClusterSummary>,
}

/// The server's cluster side, for the stats output.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    /// This process as a member.
    pub member: MemberId,
    /// Whether this node's partition is quorate.
    pub quorate: bool,
    /// The latest ring.
    pub ring: RingId,
    /// Totals.
    pub totals: ClusterTotals,
    /// The groups' counters, summed.
    pub counters: GroupCounters,
}

/// Everything `dm-ulogd stats` prints.
#[derive(Clone, Debug)]
pub struct Snapshot<'a> {
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// Seconds since the counters were last reset.
    pub since_reset_s: f64,
    /// Socket counters.
    pub socket: SocketCounters,
    /// Totals over all logs (including logs since destroyed) and requests
    /// for no known log.
    pub total: &'a Counters,
    /// Each live log.
    pub logs: Vec<LogSummary<'a>>,
    /// Cluster mode.
    pub cluster: Option<ClusterInfo>,
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_op(out: &mut String, op: &OpCounters) {
    let _ = write!(
        out,
        "{{\"count\":{},\"errors\":{},\"mean_us\":{:.3},\"max_us\":{:.3},\"p99_us\":{:.3}}}",
        op.count,
        op.errors,
        op.mean_us(),
        op.max_us(),
        op.p99_us()
    );
}

fn json_group_counters(out: &mut String, c: &GroupCounters) {
    let _ = write!(
        out,
        "{{\"batches\":{},\"waited_rounds\":{},\"flushes\":{},\"ops\":{},\"send_failures\":{},\
         \"rounds_decided\":{},\"checkpoints_sent\":{},\"checkpoints_loaded\":{},\
         \"stale_checkpoints\":{},\"fresh_starts\":{},\"merges\":{},\"merge_resync\":{},\
         \"quorum_waits\":{}}}",
        c.batches,
        c.rounds,
        c.flushes,
        c.ops,
        c.send_failures,
        c.decided,
        c.checkpoints_sent,
        c.checkpoints_loaded,
        c.stale_checkpoints,
        c.fresh_starts,
        c.merges,
        c.merge_resync,
        c.quorum_waits
    );
}

fn json_log_cluster(out: &mut String, c: &ClusterSummary) {
    out.push_str("{\"phase\":");
    json_str(out, c.phase);
    let _ = write!(
        out,
        ",\"members\":{},\"holders\":{},\"writer\":{},\"quorate\":{},\"waiting_for\":",
        c.members, c.holders, c.writer, c.quorate
    );
    match c.blocked_by {
        Some(b) => json_str(out, b),
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"epoch\":{},\"generation\":{},\"counters\":",
        c.epoch, c.generation
    );
    json_group_counters(out, &c.counters);
    out.push('}');
}

fn json_counters(out: &mut String, c: &Counters) {
    let all = c.all_ops();
    let _ = write!(
        out,
        "{{\"requests\":{},\"errors\":{},\"latency_us\":{{\"mean\":{:.3},\"max\":{:.3},\"p99\":{:.3}}},\
         \"regions_marked\":{},\"regions_cleared\":{},\"disk_writes\":{},\"disk_syncs\":{},\
         \"disk_bytes\":{},\"disk_errors\":{},\"by_type\":{{",
        all.count,
        all.errors,
        all.mean_us(),
        all.max_us(),
        all.p99_us(),
        c.regions_marked,
        c.regions_cleared,
        c.disk_writes,
        c.disk_syncs,
        c.disk_bytes,
        c.disk_errors
    );
    for (i, op) in c.ops.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, slot_name(i));
        out.push(':');
        json_op(out, op);
    }
    out.push_str("}}");
}

impl Snapshot<'_> {
    /// Machine-readable form (one JSON object, stable keys; every request
    /// type is always present).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(4096);
        let s = &self.socket;
        let _ = write!(
            out,
            "{{\"version\":1,\"uptime_s\":{:.3},\"since_reset_s\":{:.3},\"logs_active\":{},\
             \"socket\":{{\"received\":{},\"overruns\":{},\"ignored\":{},\"malformed\":{},\"send_errors\":{}}},\
             \"total\":",
            self.uptime_s,
            self.since_reset_s,
            self.logs.len(),
            s.received,
            s.overruns,
            s.ignored,
            s.malformed,
            s.send_errors
        );
        json_counters(&mut out, self.total);
        out.push_str(",\"logs\":[");
        for (i, l) in self.logs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"uuid\":");
            json_str(&mut out, &l.uuid);
            let _ = write!(out, ",\"luid\":{},\"type\":", l.luid);
            json_str(&mut out, l.type_name);
            out.push_str(",\"state\":");
            json_str(&mut out, l.state);
            let _ = write!(
                out,
                ",\"region_size\":{},\"regions\":{},\"in_sync\":{},\"device\":",
                l.region_size, l.regions, l.in_sync
            );
            match &l.device {
                Some(d) => json_str(&mut out, d),
                None => out.push_str("null"),
            }
            let _ = write!(out, ",\"device_failed\":{},\"counters\":", l.device_failed);
            json_counters(&mut out, l.counters);
            if let Some(c) = &l.cluster {
                out.push_str(",\"cluster\":");
                json_log_cluster(&mut out, c);
            }
            out.push('}');
        }
        out.push(']');
        if let Some(c) = &self.cluster {
            let t = &c.totals;
            let _ = write!(
                out,
                ",\"cluster\":{{\"member\":\"{}:{}\",\"quorate\":{},\"ring\":\"{}/{}\",\
                 \"messages\":{},\"bytes\":{},\"deferred_sends\":{},\"failed_sends\":{},\
                 \"bad_messages\":{},\"counters\":",
                c.member.node,
                c.member.pid,
                c.quorate,
                c.ring.node,
                c.ring.seq,
                t.messages,
                t.bytes,
                t.deferred_sends,
                t.failed_sends,
                t.bad_messages
            );
            json_group_counters(&mut out, &c.counters);
            out.push('}');
        }
        out.push_str("}\n");
        out
    }

    /// Human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(4096);
        let s = &self.socket;
        let _ = writeln!(
            out,
            "uptime {:.0} s, counters over {:.0} s, {} live log(s)",
            self.uptime_s,
            self.since_reset_s,
            self.logs.len()
        );
        let _ = writeln!(
            out,
            "socket: {} received, {} overruns, {} ignored, {} malformed, {} send errors",
            s.received, s.overruns, s.ignored, s.malformed, s.send_errors
        );
        if let Some(c) = &self.cluster {
            let t = &c.totals;
            let _ = writeln!(
                out,
                "cluster: member {}, {}quorate (ring {}/{}); {} group messages ({} bytes), \
                 {} deferred and {} failed sends, {} bad messages",
                c.member,
                if c.quorate { "" } else { "NOT " },
                c.ring.node,
                c.ring.seq,
                t.messages,
                t.bytes,
                t.deferred_sends,
                t.failed_sends,
                t.bad_messages
            );
        }
        text_counters(&mut out, "total", self.total);
        for l in &self.logs {
            let dev = l.device.as_deref().map_or(String::new(), |d| {
                format!(" on {d}{}", if l.device_failed { " (FAILED)" } else { "" })
            });
            let title = format!(
                "log {} luid {} ({} {}, region size {}, {}/{} in sync{dev})",
                l.uuid, l.luid, l.type_name, l.state, l.region_size, l.in_sync, l.regions
            );
            text_counters(&mut out, &title, l.counters);
            if let Some(c) = &l.cluster {
                let g = &c.counters;
                let _ =
                    writeln!(
                    out,
                    "  cluster: {}{}, {} member(s), {} holding the state{}, {}quorate, epoch {}, \
                     generation {}; {} flushes, {} batches, {} waited rounds, {} merges",
                    c.phase,
                    c.blocked_by
                        .map_or(String::new(), |b| format!(" (waiting: {b})")),
                    c.members,
                    c.holders,
                    if c.writer { ", writing the log device" } else { "" },
                    if c.quorate { "" } else { "NOT " },
                    c.epoch,
                    c.generation,
                    g.flushes,
                    g.batches,
                    g.rounds,
                    g.merges
                );
            }
        }
        out
    }
}

fn text_counters(out: &mut String, title: &str, c: &Counters) {
    let all = c.all_ops();
    let _ = writeln!(
        out,
        "{title}: {} requests, {} errors, latency mean {:.1} us, p99 {:.1} us, max {:.1} us",
        all.count,
        all.errors,
        all.mean_us(),
        all.p99_us(),
        all.max_us()
    );
    let _ = writeln!(
        out,
        "  regions marked {}, cleared {}; disk: {} writes, {} syncs, {} bytes, {} errors",
        c.regions_marked,
        c.regions_cleared,
        c.disk_writes,
        c.disk_syncs,
        c.disk_bytes,
        c.disk_errors
    );
    for (i, op) in c.ops.iter().enumerate() {
        if op.count == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<21} {:>10} req {:>6} err  mean {:>8.1} us  p99 {:>8.1} us  max {:>9.1} us",
            slot_name(i),
            op.count,
            op.errors,
            op.mean_us(),
            op.p99_us(),
            op.max_us()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut c = Counters::default();
        for _ in 0..99 {
            c.record(RequestType::MarkRegion as usize, false, 1000);
        }
        c.record(RequestType::MarkRegion as usize, true, 1_000_000);
        let op = &c.ops[10];
        assert_eq!(op.count, 100);
        assert_eq!(op.errors, 1);
        assert!((op.mean_us() - 10.99).abs() < 0.01);
        assert_eq!(op.max_us(), 1000.0);
        assert_eq!(op.p99_us(), 1.024, "p99 falls in the 1 us bucket");
        c.record(0, true, 5);
        assert_eq!(c.all_ops().count, 101);
        assert_eq!(slot_name(0), "INVALID");
        assert_eq!(slot_name(10), "MARK_REGION");
        assert_eq!(slot_of(0), 0);
        assert_eq!(slot_of(99), 0);
        assert_eq!(slot_of(9 | 0x100), 9);
        c.reset();
        assert_eq!(c, Counters::default());
    }

    #[test]
    fn json_has_every_type_and_escapes_strings() {
        let mut total = Counters::default();
        total.record(9, false, 2000);
        let per_log = Counters::default();
        let snap = Snapshot {
            uptime_s: 1.0,
            since_reset_s: 1.0,
            socket: SocketCounters::default(),
            total: &total,
            logs: vec![LogSummary {
                uuid: "LVM-\"q\"\n".into(),
                luid: 5,
                type_name: "clustered-disk",
                state: "resumed",
                region_size: 1024,
                regions: 10,
                in_sync: 3,
                device: Some("7:1".into()),
                device_failed: false,
                counters: &per_log,
                cluster: None,
            }],
            cluster: None,
        };
        let j = snap.to_json();
        for t in RequestType::ALL {
            assert!(j.contains(&format!("\"{}\":{{", t.name())), "{}", t.name());
        }
        assert!(j.contains("\"FLUSH\":{\"count\":1,\"errors\":0,\"mean_us\":2.000"));
        assert!(j.contains("\"uuid\":\"LVM-\\\"q\\\"\\u000a\""));
        assert!(j.contains("\"device\":\"7:1\""));
        assert!(snap.to_text().contains("FLUSH"));
    }
}
