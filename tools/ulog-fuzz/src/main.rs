// SPDX-License-Identifier: GPL-2.0

//! ulog-fuzz: sends hostile connector messages to the dm userspace log
//! module while real mirrors run, for the stress kselftests.
//!
//! It listens on the device-mapper group like a server, so it sees the
//! kernel's requests and can aim at live sequence numbers; what it may
//! forge as root and what only as an unprivileged user is explained in
//! `gen.rs`. At the end it prints its figures as `key=value` lines (and
//! writes them to `--report`): the test compares them with the module's
//! "messages ignored" counters.

mod gen;
mod rng;

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use gen::{Class, Frame, Mode, Tracker, Wire};
use rng::Rng;
use ulog_proto::socket::{
    encode_frame, ConnectorSocket, Received, SocketOptions, NLMSG_HDRLEN, RECV_BUFFER_SIZE,
};
use ulog_proto::wire::{Message, RequestType, CN_IDX_DM, CN_MSG_SIZE, CN_VAL_DM_USERSPACE_LOG};

const USAGE: &str = "\
Usage: ulog-fuzz [OPTIONS]

Sends hostile netlink connector messages to the dm userspace log module
(random bytes, truncated and oversized messages, lying lengths, replies to
live and dead sequence numbers naming other logs, odd acks), aiming at the
requests it sees the kernel send on group 7. As root it never forges a reply
a live request would accept (only EAGAIN acks to idempotent requests); with
--user every message must be ignored, so it forges those too.

Options:
  --messages N      messages to send (default 20000)
  --seed N          random seed (default: from the clock; printed)
  --user UID        drop to user and group UID after opening the socket
  --rate N          send at most N messages per second (default 0: no limit)
  --max-seconds N   stop after N seconds whatever was sent (default 600)
  --multicast PCT   root: percentage of messages multicast to the servers'
                    group as well (default 2)
  --report FILE     also write the figures to FILE
  --victim UUID     root: answer live requests of the log UUID with replies
                    whose sizes, error or identity lie, some carrying a
                    plausible answer (the module must drop them all: its
                    requests wait for the server's answer)
  --eagain TYPE     root: only send EAGAIN acks to live requests of TYPE
                    (e.g. GET_RESYNC_WORK), making the module resend them
                    as after a timeout; --messages counts the acks
  -h, --help        this help
";

struct Options {
    messages: u64,
    seed: u64,
    user: Option<u32>,
    rate: u64,
    max_seconds: u64,
    multicast: u64,
    report: Option<String>,
    victim: Option<String>,
    eagain: Option<RequestType>,
}

fn parse_args() -> Result<Options, String> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut o = Options {
        messages: 20_000,
        seed: clock ^ u64::from(std::process::id()),
        user: None,
        rate: 0,
        max_seconds: 600,
        multicast: 2,
        report: None,
        victim: None,
        eagain: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let mut number = || -> Result<u64, String> {
            let v = value()?;
            v.parse().map_err(|_| format!("bad number '{v}' for {a}"))
        };
        match a.as_str() {
            "--messages" => o.messages = number()?,
            "--seed" => o.seed = number()?,
            "--user" => o.user = Some(u32::try_from(number()?).map_err(|_| "bad uid")?),
            "--rate" => o.rate = number()?,
            "--max-seconds" => o.max_seconds = number()?,
            "--multicast" => o.multicast = number()?.min(100),
            "--report" => o.report = Some(value()?),
            "--victim" => o.victim = Some(value()?),
            "--eagain" => {
                let v = value()?;
                o.eagain = Some(
                    RequestType::ALL
                        .into_iter()
                        .find(|t| t.name().eq_ignore_ascii_case(&v))
                        .ok_or_else(|| format!("unknown request type '{v}'"))?,
                );
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {a} (see --help)")),
        }
    }
    Ok(o)
}

/// Sends the datagram `bytes` to the kernel, and to the members of netlink
/// group `group` if it is not 0.
fn send_datagram(sock: &ConnectorSocket, bytes: &[u8], group: u32) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = if group == 0 { 0 } else { 1 << (group - 1) };
    // SAFETY: `bytes` is readable for its length and `addr` is a valid
    // sockaddr_nl of the size passed; both outlive the call.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn send(sock: &ConnectorSocket, f: &Frame) -> io::Result<()> {
    match &f.wire {
        Wire::Kernel { cn, payload } => sock.send_raw(cn, payload),
        Wire::Raw(bytes) => send_datagram(sock, bytes, 0),
        Wire::Multicast { cn, payload } => {
            let mut buf = vec![0u8; NLMSG_HDRLEN + CN_MSG_SIZE + payload.len()];
            let n = encode_frame(sock.port_id(), cn, &[payload], &mut buf)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            send_datagram(sock, &buf[..n], CN_IDX_DM)
        }
    }
}

#[derive(Default)]
struct Figures {
    sent: u64,
    send_errors: u64,
    reached: u64,
    live: u64,
    live_eagain: u64,
    victim: u64,
    overruns: u64,
    by_class: [u64; Class::ALL.len()],
}

/// Reads every queued datagram; records the kernel's requests.
fn drain(sock: &ConnectorSocket, buf: &mut [u8], t: &mut Tracker, now_ms: u64, fig: &mut Figures) {
    loop {
        match sock.recv(buf) {
            Ok(Received::Message(m)) => {
                if !m.sender.is_kernel()
                    || m.cn.idx != CN_IDX_DM
                    || m.cn.val != CN_VAL_DM_USERSPACE_LOG
                {
                    continue;
                }
                if let Ok(Message::Request { header, .. }) = Message::parse(&m.cn, m.body) {
                    t.record(&header, now_ms);
                }
            }
            Ok(Received::Overrun) => fig.overruns += 1,
            Ok(Received::Invalid { .. }) => {}
            Err(_) => return,
        }
    }
}

fn run(o: &Options) -> io::Result<Figures> {
    let sock = ConnectorSocket::open(SocketOptions {
        nonblocking: true,
        rcvbuf: 4 << 20,
    })?;
    let mode = match o.user {
        Some(uid) => {
            ulog_proto::socket::drop_privileges(uid)?;
            Mode::Unprivileged
        }
        None => Mode::Root,
    };
    let mut rng = Rng::new(o.seed);
    let mut tracker = Tracker::default();
    let mut fig = Figures::default();
    let mut buf = vec![0u8; RECV_BUFFER_SIZE];
    let t0 = Instant::now();
    let limit = Duration::from_secs(o.max_seconds);
    while fig.sent < o.messages && t0.elapsed() < limit {
        if o.rate > 0 {
            let due = Duration::from_secs_f64(fig.sent as f64 / o.rate as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                // Keep listening while waiting, in slices.
                std::thread::sleep(wait.min(Duration::from_millis(5)));
            }
        }
        let now_ms = t0.elapsed().as_millis() as u64;
        drain(&sock, &mut buf, &mut tracker, now_ms, &mut fig);
        if o.rate > 0 && Duration::from_secs_f64(fig.sent as f64 / o.rate as f64) > t0.elapsed() {
            continue;
        }
        let frame = if let Some(kind) = o.eagain {
            match tracker.take_fresh_of(now_ms, kind) {
                Some(s) => gen::eagain_ack(&s),
                None => {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
            }
        } else {
            let victim = |s: &gen::Seen| {
                mode == Mode::Root && o.victim.as_deref().map(str::as_bytes) == Some(s.uuid_bytes())
            };
            match tracker.take_fresh(now_ms) {
                Some(s) if victim(&s) => gen::for_victim(&mut rng, &s),
                Some(s) if rng.chance(60) => gen::for_live(&mut rng, &tracker, mode, &s),
                _ => gen::generate(&mut rng, &tracker, mode, now_ms, o.multicast),
            }
        };
        fig.sent += 1;
        fig.by_class[frame.class.index()] += 1;
        match send(&sock, &frame) {
            Ok(()) => {
                fig.reached += u64::from(frame.reaches);
                fig.live += u64::from(frame.live);
                fig.live_eagain += u64::from(frame.live_eagain);
                fig.victim += u64::from(frame.victim);
            }
            Err(_) => fig.send_errors += 1,
        }
    }
    let now_ms = t0.elapsed().as_millis() as u64;
    drain(&sock, &mut buf, &mut tracker, now_ms, &mut fig);
    let mut text = format!(
        "seed={}\nmode={}\nsent={}\nsend_errors={}\nreached={}\nlive={}\nlive_eagain={}\n\
         victim={}\nrequests_seen={}\noverruns={}\nseconds={:.1}\n",
        o.seed,
        if mode == Mode::Root {
            "root"
        } else {
            "unprivileged"
        },
        fig.sent,
        fig.send_errors,
        fig.reached,
        fig.live,
        fig.live_eagain,
        fig.victim,
        tracker.requests_seen,
        fig.overruns,
        t0.elapsed().as_secs_f64()
    );
    for c in Class::ALL {
        text += &format!("class.{}={}\n", c.name(), fig.by_class[c.index()]);
    }
    print!("{text}");
    io::stdout().flush()?;
    if let Some(path) = &o.report {
        std::fs::write(path, &text)?;
    }
    Ok(fig)
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ulog-fuzz: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("ulog-fuzz: {e}");
        std::process::exit(1);
    }
}
