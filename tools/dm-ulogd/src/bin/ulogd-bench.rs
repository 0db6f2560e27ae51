// SPDX-License-Identifier: GPL-2.0

//! Requests served per second by dm-ulogd's request path, without the
//! socket: encoded kernel datagrams go through the same framing check,
//! decode, dispatch and reply encoding as in the daemon, with a sink that
//! builds the reply frame the socket would send.
//!
//! The mix follows what the C module sends per mirror write (measured in
//! shared/reference/performance.md): 2 IN_SYNC, 1 MARK_REGION, 2 FLUSH,
//! 1 CLEAR_REGION; plus, every 64 writes, GET_RESYNC_WORK, GET_SYNC_COUNT,
//! IS_REMOTE_RECOVERING and STATUS_INFO.
//!
//! Usage: `cargo run --release -p dm-ulogd --bin ulogd-bench [-- SECONDS]`

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dm_ulogd::log_device::DevicePolicy;
use dm_ulogd::server::{Dispatcher, ReplySink};
use dm_ulogd::state_file::StateDir;
use dm_ulogd::store::LogStore;
use ulog_proto::socket::{encode_frame, parse_datagram, Sender, RECV_BUFFER_SIZE};
use ulog_proto::wire::{CnHeader, RequestHeader, RequestType, HEADER_SIZE, UUID_LEN};

const REGIONS: u64 = 1 << 16;
const UUID: &[u8] = b"LVM-benchbenchbenchbenchbenchbenchbenchbenchbenchbenchbenchbench01";

/// Builds each reply frame into a buffer, as the socket's send would.
struct FrameSink {
    buf: RefCell<Vec<u8>>,
}

impl ReplySink for FrameSink {
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        let mut h = header.clone();
        h.data_size = data.len() as u32;
        let mut head = [0u8; HEADER_SIZE];
        h.encode(&mut head).ok_or(io::ErrorKind::InvalidInput)?;
        let cn = CnHeader::for_log(h.seq, 0, (HEADER_SIZE + data.len()) as u16);
        encode_frame(1, &cn, &[&head, data], &mut self.buf.borrow_mut())
            .ok_or(io::ErrorKind::InvalidInput)?;
        Ok(())
    }

    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        encode_frame(
            1,
            &CnHeader::for_log(seq, errno, 0),
            &[],
            &mut self.buf.borrow_mut(),
        )
        .ok_or(io::ErrorKind::InvalidInput)?;
        Ok(())
    }
}

struct Encoder {
    seq: u32,
    luid: u64,
}

impl Encoder {
    fn frame(&mut self, kind: RequestType, data: &[u8]) -> Vec<u8> {
        let mut uuid = [0u8; UUID_LEN];
        uuid[..UUID.len()].copy_from_slice(UUID);
        self.seq = self.seq.wrapping_add(1);
        let mut h = RequestHeader::new(self.luid, &uuid, self.seq, kind);
        h.data_size = data.len() as u32;
        let mut head = [0u8; HEADER_SIZE];
        h.encode(&mut head).unwrap();
        let cn = CnHeader::for_log(self.seq, 0, (HEADER_SIZE + data.len()) as u16);
        let mut out = vec![0u8; RECV_BUFFER_SIZE];
        let n = encode_frame(0, &cn, &[&head, data], &mut out).unwrap();
        out.truncate(n);
        out
    }
}

/// The frames of `writes` simulated mirror writes to pseudo-random regions.
fn workload(enc: &mut Encoder, writes: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut prev = 0u64;
    for i in 0..writes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = x % REGIONS;
        let w = r.to_ne_bytes();
        frames.push(enc.frame(RequestType::InSync, &w));
        frames.push(enc.frame(RequestType::InSync, &w));
        frames.push(enc.frame(RequestType::MarkRegion, &w));
        frames.push(enc.frame(RequestType::Flush, &[]));
        frames.push(enc.frame(RequestType::ClearRegion, &prev.to_ne_bytes()));
        frames.push(enc.frame(RequestType::Flush, &[]));
        if i % 64 == 0 {
            frames.push(enc.frame(RequestType::GetResyncWork, &[]));
            frames.push(enc.frame(RequestType::GetSyncCount, &[]));
            frames.push(enc.frame(RequestType::IsRemoteRecovering, &w));
            frames.push(enc.frame(RequestType::StatusInfo, &[]));
        }
        prev = r;
    }
    frames
}

fn run(name: &str, mut store: LogStore, ctr: &str, seconds: f64) {
    // The disk log runs on a file on tmpfs, which the server itself refuses.
    store.set_device_policy(DevicePolicy::AlsoFiles);
    let mut d = Dispatcher::new(store);
    let sink = FrameSink {
        buf: RefCell::new(vec![0; RECV_BUFFER_SIZE]),
    };
    let mut enc = Encoder { seq: 0, luid: 1 };
    let kernel = Sender {
        port_id: 0,
        groups: 1 << 6,
    };
    let mut setup = vec![enc.frame(RequestType::Ctr, format!("{ctr}\0").as_bytes())];
    setup.push(enc.frame(RequestType::GetRegionSize, &[]));
    setup.push(enc.frame(RequestType::Resume, &[]));
    for f in &setup {
        d.serve(&sink, &parse_datagram(kernel, f, f.len()), Instant::now());
    }
    let frames = workload(&mut enc, 4096);
    let mut served: u64 = 0;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    while start.elapsed() < limit {
        for f in &frames {
            let t0 = Instant::now();
            d.serve(&sink, &parse_datagram(kernel, f, f.len()), t0);
        }
        served += frames.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = d.store().total();
    let errors = total.all_ops().errors;
    println!(
        "{name:<40} {:>12.0} requests/s  ({served} requests, {:.0} ns each, {errors} errors, \
         {} disk writes, {} syncs)",
        served as f64 / secs,
        secs * 1e9 / served as f64,
        total.disk_writes,
        total.disk_syncs
    );
}

fn scratch() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("ulogd-bench-{}", std::process::id()))
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = scratch();
    std::fs::create_dir_all(&dir).unwrap();
    let sectors = REGIONS * 1024;
    println!(
        "mix per write: 2 IN_SYNC, MARK, FLUSH, CLEAR, FLUSH (+4 rarer requests every 64 writes); \
         {REGIONS} regions"
    );
    run(
        "core log, in memory",
        LogStore::new(None),
        &format!("{sectors} clustered-core 1024"),
        seconds,
    );
    run(
        "core log, state file (as the daemon)",
        LogStore::new(Some(StateDir::open(&dir.join("a")).unwrap())),
        &format!("{sectors} clustered-core 1024"),
        seconds,
    );
    let dev = dir.join("logdev");
    std::fs::write(&dev, vec![0u8; 1 << 20]).unwrap();
    run(
        "disk log on tmpfs file, state file",
        LogStore::new(Some(StateDir::open(&dir.join("b")).unwrap())),
        &format!("{sectors} clustered-disk {} 1024 nosync", dev.display()),
        seconds,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
