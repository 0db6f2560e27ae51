// SPDX-License-Identifier: GPL-2.0

//! Tests of the message path: framing, acks, malformed input and the
//! header echo, with a recorder in place of the socket.

use std::cell::RefCell;

use ulog_proto::socket::{encode_frame, parse_datagram, Sender};
use ulog_proto::wire::{CnHeader, RequestType, HEADER_SIZE, UUID_LEN};

use super::*;

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Reply(RequestHeader, Vec<u8>),
    Ack { seq: u32, errno: u32 },
}

#[derive(Default)]
struct Recorder(RefCell<Vec<Sent>>);

impl ReplySink for Recorder {
    fn send_reply(&self, header: &RequestHeader, data: &[u8]) -> io::Result<()> {
        let mut h = header.clone();
        h.data_size = data.len() as u32;
        self.0.borrow_mut().push(Sent::Reply(h, data.to_vec()));
        Ok(())
    }

    fn send_ack(&self, seq: u32, errno: u32) -> io::Result<()> {
        self.0.borrow_mut().push(Sent::Ack { seq, errno });
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

const KERNEL: Sender = Sender {
    port_id: 0,
    groups: 1 << 6,
};

fn header(luid: u64, seq: u32, request_type: u32, data_size: u32) -> RequestHeader {
    let mut uuid = [0u8; UUID_LEN];
    uuid[..8].copy_from_slice(b"LVM-test");
    RequestHeader {
        luid,
        uuid,
        version: 3,
        error: 0,
        seq,
        request_type,
        data_size,
    }
}

/// A kernel datagram carrying `body` (a request header and payload).
fn datagram(cn: CnHeader, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 64 + body.len()];
    let n = encode_frame(0, &cn, &[body], &mut out).unwrap();
    out.truncate(n);
    out
}

fn request(h: &RequestHeader, data: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8; HEADER_SIZE];
    h.encode(&mut body).unwrap();
    body.extend_from_slice(data);
    datagram(CnHeader::for_log(h.seq, 0, body.len() as u16), &body)
}

fn feed(d: &mut Dispatcher, sink: &Recorder, sender: Sender, frame: &[u8]) {
    let received = parse_datagram(sender, frame, frame.len());
    d.serve(sink, &received, Instant::now());
}

fn ctr(d: &mut Dispatcher, sink: &Recorder, luid: u64, seq: u32) {
    let s = b"800 clustered-core 8\0";
    feed(
        d,
        sink,
        KERNEL,
        &request(&header(luid, seq, 1, s.len() as u32), s),
    );
    assert!(matches!(&sink.take()[..], [Sent::Reply(h, _)] if h.error == 0));
}

#[test]
fn replies_echo_the_request_header() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    ctr(&mut d, &sink, 77, 5);
    let h = header(77, 6, RequestType::GetRegionSize as u32, 0);
    feed(&mut d, &sink, KERNEL, &request(&h, &[]));
    let mut want = h.clone();
    want.data_size = 8;
    assert_eq!(
        sink.take(),
        [Sent::Reply(want, 8u64.to_ne_bytes().to_vec())]
    );

    let h = header(78, 7, RequestType::InSync as u32, 8);
    feed(&mut d, &sink, KERNEL, &request(&h, &0u64.to_ne_bytes()));
    let mut want = h.clone();
    want.error = -libc::ESRCH;
    want.data_size = 0;
    assert_eq!(sink.take(), [Sent::Reply(want, vec![])], "unknown log");
    assert_eq!(d.counters().received, 3);
}

#[test]
fn type_zero_gets_an_eagain_ack() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    feed(&mut d, &sink, KERNEL, &request(&header(1, 9, 0, 0), &[]));
    assert_eq!(
        sink.take(),
        [Sent::Ack {
            seq: 9,
            errno: libc::EAGAIN as u32
        }]
    );
    assert_eq!(d.store().total().ops[0].count, 1);
}

#[test]
fn unknown_type_gets_einval() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    feed(&mut d, &sink, KERNEL, &request(&header(1, 9, 42, 0), &[]));
    assert!(
        matches!(&sink.take()[..], [Sent::Reply(h, d)] if h.error == -libc::EINVAL && d.is_empty())
    );
}

#[test]
fn malformed_requests_get_einval() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    // Shorter than a request header: only an ack can answer it.
    feed(
        &mut d,
        &sink,
        KERNEL,
        &datagram(CnHeader::for_log(31, 0, 100), &[1; 100]),
    );
    assert_eq!(
        sink.take(),
        [Sent::Ack {
            seq: 31,
            errno: libc::EINVAL as u32
        }]
    );
    // data_size beyond the message: the header can be echoed.
    let h = header(1, 32, RequestType::MarkRegion as u32, 64);
    let mut body = vec![0u8; HEADER_SIZE];
    h.encode(&mut body).unwrap();
    body.extend_from_slice(&[0; 8]);
    feed(
        &mut d,
        &sink,
        KERNEL,
        &datagram(CnHeader::for_log(32, 0, body.len() as u16), &body),
    );
    match &sink.take()[..] {
        [Sent::Reply(r, data)] => {
            assert_eq!((r.seq, r.error, data.len()), (32, -libc::EINVAL, 0));
        }
        other => panic!("unexpected {other:?}"),
    }
    // cn_msg.len beyond the datagram: ack on its seq.
    let mut frame = datagram(CnHeader::for_log(33, 0, 10), &[0; 10]);
    frame[16 + 16..16 + 18].copy_from_slice(&500u16.to_ne_bytes());
    feed(&mut d, &sink, KERNEL, &frame);
    assert_eq!(
        sink.take(),
        [Sent::Ack {
            seq: 33,
            errno: libc::EINVAL as u32
        }]
    );
    assert_eq!(d.counters().malformed, 3);
}

#[test]
fn foreign_traffic_is_ignored() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    let req = request(&header(1, 1, RequestType::GetSyncCount as u32, 0), &[]);
    let process = Sender {
        port_id: 4242,
        groups: 1 << 6,
    };
    feed(&mut d, &sink, process, &req);
    let mut other = req.clone();
    other[16..20].copy_from_slice(&1u32.to_ne_bytes()); // cn idx 1 (proc events)
    feed(&mut d, &sink, KERNEL, &other);
    feed(
        &mut d,
        &sink,
        KERNEL,
        &datagram(CnHeader::for_log(5, 11, 0), &[]),
    );
    feed(
        &mut d,
        &sink,
        process,
        &datagram(CnHeader::for_log(5, 0, 10), &[0; 4]),
    );
    assert!(sink.take().is_empty());
    assert_eq!(d.counters().ignored, 3);
    assert_eq!(
        d.counters().malformed,
        1,
        "counted, but not answered: not the kernel's"
    );
    d.serve(&sink, &Received::Overrun, Instant::now());
    assert_eq!(d.counters().overruns, 1);
    d.reset_counters();
    assert_eq!(d.counters(), SocketCounters::default());
}

#[test]
fn pipelined_requests_apply_in_arrival_order() {
    let mut d = Dispatcher::new(LogStore::new(None));
    let sink = Recorder::default();
    ctr(&mut d, &sink, 1, 1);
    let words = |v: &[u64]| v.iter().flat_map(|r| r.to_ne_bytes()).collect::<Vec<u8>>();
    let burst = [
        request(
            &header(1, 10, RequestType::MarkRegion as u32, 16),
            &words(&[4, 5]),
        ),
        request(
            &header(1, 11, RequestType::ClearRegion as u32, 8),
            &words(&[4]),
        ),
        request(
            &header(1, 12, RequestType::MarkRegion as u32, 8),
            &words(&[4]),
        ),
        request(&header(1, 13, RequestType::Flush as u32, 0), &[]),
        request(
            &header(1, 14, RequestType::ClearRegion as u32, 8),
            &words(&[5]),
        ),
        request(&header(1, 15, RequestType::IsClean as u32, 8), &words(&[4])),
        request(&header(1, 16, RequestType::IsClean as u32, 8), &words(&[5])),
    ];
    for f in &burst {
        feed(&mut d, &sink, KERNEL, f);
    }
    let sent = sink.take();
    let seqs: Vec<u32> = sent
        .iter()
        .map(|s| match s {
            Sent::Reply(h, _) => h.seq,
            Sent::Ack { seq, .. } => *seq,
        })
        .collect();
    assert_eq!(seqs, (10..=16).collect::<Vec<_>>());
    assert!(
        matches!(&sent[5], Sent::Reply(_, v) if v[..] == 0i64.to_ne_bytes()),
        "4 dirty"
    );
    assert!(
        matches!(&sent[6], Sent::Reply(_, v) if v[..] == 1i64.to_ne_bytes()),
        "5 clean"
    );
}

#[test]
fn random_input_never_crashes_and_always_gets_an_answer() {
    let tmp = crate::test_util::TempDir::new();
    let dev = tmp.path().join("dev");
    std::fs::write(&dev, vec![0u8; 1 << 16]).unwrap();
    let mut store = LogStore::new(Some(
        crate::state_file::StateDir::open(&tmp.path().join("state")).unwrap(),
    ));
    store.set_device_policy(crate::log_device::DevicePolicy::AlsoFiles);
    let mut d = Dispatcher::new(store);
    let sink = Recorder::default();
    let disk = format!("800 clustered-disk {} 8\0", dev.display());
    for (luid, s) in [(1u64, &b"800 clustered-core 8\0"[..]), (2, disk.as_bytes())] {
        feed(
            &mut d,
            &sink,
            KERNEL,
            &request(&header(luid, 1, 1, s.len() as u32), s),
        );
        feed(&mut d, &sink, KERNEL, &request(&header(luid, 2, 5, 0), &[]));
    }
    sink.take();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seq in 0..20_000u32 {
        let r = next();
        let request_type = (r % 20) as u32; // 0..=19: some unknown, no CTR/DTR below
        let request_type = if request_type == 1 || request_type == 2 {
            8
        } else {
            request_type
        };
        let luid = 1 + (r >> 8) % 3; // luid 3 is unknown
        let len = ((r >> 16) % 5) as usize * 8 + usize::from((r >> 24) % 7 == 0);
        let data: Vec<u8> = (0..len)
            .map(|i| if i % 8 == 0 { (next() % 120) as u8 } else { 0 })
            .collect();
        let junk = (r >> 32) % 50 == 0;
        let frame = if junk {
            // Garbage after a valid connector header.
            let junk: Vec<u8> = (0..(r >> 40) % 200).map(|_| next() as u8).collect();
            datagram(CnHeader::for_log(seq, 0, junk.len() as u16), &junk)
        } else {
            request(&header(luid, seq, request_type, len as u32), &data)
        };
        feed(&mut d, &sink, KERNEL, &frame);
        let sent = sink.take();
        let answered_seq = match &sent[..] {
            [Sent::Reply(h, _)] => h.seq,
            [Sent::Ack { seq, .. }] => *seq,
            [] if junk && frame.len() == 36 => seq, // an empty body is an ack
            other => panic!("request {seq} got {other:?}"),
        };
        if !junk {
            assert_eq!(answered_seq, seq);
        }
    }
    assert_eq!(d.store().len(), 2);
}
