// SPDX-License-Identifier: GPL-2.0

//! ulog-test-server: a scriptable userspace log server for the kselftests.
//!
//! It serves a small in-memory core log, can answer chosen requests badly
//! (late, EAGAIN, ack only, too much data, a wrong `data_size`, not at all,
//! from an unprivileged process, or on a socket an unprivileged process
//! opened), and traces every request it receives, one line each, for the
//! tests to check the stream the kernel sends.

mod faults;
mod model;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use faults::{Action, Fault, Rule};
use model::{Model, Settings};
use ulog_proto::socket::{
    encode_frame, ConnectorSocket, Received, SocketOptions, NLMSG_HDRLEN, RECV_BUFFER_SIZE,
};
use ulog_proto::wire::{CnHeader, Message, RequestHeader, RequestType, CN_MSG_SIZE, HEADER_SIZE};

const USAGE: &str = "\
Usage: ulog-test-server [OPTIONS]

A scriptable dm userspace log server for tests: serves an in-memory core log
('core' or 'clustered-core' arguments, 'clustered-disk'/'disk' accepted with
the device ignored) and answers chosen requests badly.

Options:
  --trace FILE        append a line per request received:
                        t=<ms> seq=<n> luid=<n> type=<NAME> size=<bytes>
                        pending=<0|1> [ctr=\"...\"] [regions=a,b,...] [fault=<action>]
                      pending=1: another request was queued before this one
                      was answered (with late=MS: after the delay), so the
                      kernel did not wait for this reply to send it
  --fault RULE        TYPE[@N]:ACTION[+good][:COUNT[:SKIP]] (repeatable);
                      TYPE is a request name (IN_SYNC, FLUSH, ...) or 'any',
                      @N only requests carrying N regions or more; ACTION is
                      late=MS, eagain, eagain-reply, ack-only, ack-error=N,
                      error=N, too-much, short, value=N (the first 8 bytes
                      of data), value2=N (the next 8), bad-data-size,
                      short-cn-len (cn_msg.len covers the header only),
                      truncated, wrong-luid, wrong-uuid, wrong-type,
                      duplicate, luid-zero and type-flag (as cmirrord
                      answers), garbage (non-text bytes in the answer),
                      drop or exit; +good: the normal answer follows at
                      once; COUNT 0: every time
  --region-size N     answer GET_REGION_SIZE with N whatever the CTR says
  --ctr-device NAME   answer CTR with the device name NAME, as a disk log's
                      server does (the kernel then holds that device)
  --remote-hint N     answer IS_REMOTE_RECOVERING with 'not recovering, in
                      sync below region N'
  --status TEXT       STATUS_INFO answer (default '1 ulog-test-server')
  --stall-resync      never hand out resync work (a 'sync' mirror stays out
                      of sync, so the kernel keeps asking IS_REMOTE_RECOVERING)
  --user UID          drop to user and group UID once listening (its replies
                      then come from an unprivileged sender)
  --open-as UID       create the socket with effective user UID, then set it
                      up and serve as root (an unprivileged opener's socket
                      in a privileged writer's hands)
  --write             send full replies with write(2), which names no
                      destination, rather than sendmsg(2) to the kernel's
                      address (as a program tricked into writing on a
                      socket would)
  --listen-only       trace the requests, never answer (beside another
                      server, cmirrord say, to see what the kernel sends)
  --ready FILE        create FILE once listening
  -h, --help          this help
";

struct Options {
    trace: Option<String>,
    rules: Vec<Rule>,
    settings: Settings,
    user: Option<u32>,
    open_as: Option<u32>,
    write: bool,
    ready: Option<String>,
    listen_only: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        trace: None,
        rules: Vec::new(),
        settings: Settings {
            status: "1 ulog-test-server".into(),
            ..Settings::default()
        },
        user: None,
        open_as: None,
        write: false,
        ready: None,
        listen_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--trace" => o.trace = Some(value()?),
            "--fault" => o.rules.push(Rule::parse(&value()?)?),
            "--region-size" => {
                o.settings.region_size_override = Some(value()?.parse().map_err(|_| "bad size")?)
            }
            "--status" => o.settings.status = value()?,
            "--stall-resync" => o.settings.stall_resync = true,
            "--ctr-device" => o.settings.ctr_device = Some(value()?),
            "--remote-hint" => {
                o.settings.remote_hint = Some(value()?.parse().map_err(|_| "bad region")?)
            }
            "--user" => o.user = Some(value()?.parse().map_err(|_| "bad uid")?),
            "--open-as" => o.open_as = Some(value()?.parse().map_err(|_| "bad uid")?),
            "--write" => o.write = true,
            "--ready" => o.ready = Some(value()?),
            "--listen-only" => o.listen_only = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {a} (see --help)")),
        }
    }
    Ok(o)
}

/// Whether another datagram is already queued on `sock`.
fn pending(sock: &ConnectorSocket) -> bool {
    let mut byte = 0u8;
    // SAFETY: `byte` is writable for the one byte passed; MSG_PEEK leaves the
    // queue as it is.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    n >= 0
}

/// One trace line for a request.
fn trace_line(received: Duration, h: &RequestHeader, data: &[u8], pending: bool) -> String {
    let name = h.kind().map_or("UNKNOWN", RequestType::name);
    let mut line = format!(
        "t={} seq={} luid={} type={} size={} pending={}",
        received.as_millis(),
        h.seq,
        h.luid,
        name,
        h.data_size,
        u8::from(pending)
    );
    match h.kind() {
        Some(RequestType::Ctr) => {
            let text = String::from_utf8_lossy(data);
            line += &format!(" ctr=\"{}\"", text.trim_end_matches('\0'));
        }
        Some(
            RequestType::MarkRegion
            | RequestType::ClearRegion
            | RequestType::Flush
            | RequestType::IsClean
            | RequestType::InSync
            | RequestType::SetRegionSync
            | RequestType::IsRemoteRecovering,
        ) => {
            let regions: Vec<String> = ulog_proto::wire::payload_regions(data)
                .into_iter()
                .flatten()
                .map(|r| r.to_string())
                .collect();
            line += &format!(" regions={}", regions.join(","));
        }
        _ => {}
    }
    line
}

/// Opens the socket; with `open_as`, creates it with that effective user
/// (the kernel keeps the creator's credentials with the socket), then sets
/// it up as root.
fn open_socket(open_as: Option<u32>) -> io::Result<ConnectorSocket> {
    fn set_euid(uid: u32) -> io::Result<()> {
        // SAFETY: seteuid takes a plain integer.
        if unsafe { libc::seteuid(uid) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    let options = SocketOptions::default();
    let fd = match open_as {
        None => ConnectorSocket::socket(options)?,
        Some(uid) => {
            set_euid(uid)?;
            let fd = ConnectorSocket::socket(options);
            set_euid(0)?;
            fd?
        }
    };
    ConnectorSocket::from_socket(fd, options)
}

/// Sends a full reply as `ConnectorSocket::send_reply` does, but with
/// write(2): no destination address, so the kernel checks the credentials
/// of the socket's opener as well as the writer's.
fn write_reply(sock: &ConnectorSocket, h: &RequestHeader, data: &[u8]) -> io::Result<()> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let mut out = h.clone();
    out.data_size = u32::try_from(data.len()).map_err(|_| invalid())?;
    let mut head = [0u8; HEADER_SIZE];
    out.encode(&mut head).ok_or_else(invalid)?;
    let cn_len = u16::try_from(HEADER_SIZE + data.len()).map_err(|_| invalid())?;
    let cn = CnHeader::for_log(h.seq, 0, cn_len);
    let mut frame = vec![0u8; NLMSG_HDRLEN + CN_MSG_SIZE + HEADER_SIZE + data.len()];
    let n = encode_frame(sock.port_id(), &cn, &[&head, data], &mut frame).ok_or_else(invalid)?;
    // SAFETY: `frame` is readable for `n` bytes for the whole call.
    let w = unsafe { libc::write(sock.as_raw_fd(), frame.as_ptr().cast(), n) };
    if w < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends the reply to `h`, normal or spoilt by `fault` (and then, if the
/// fault says so, the normal one too); a normal one with write(2) when
/// `by_write`.
fn reply(
    sock: &ConnectorSocket,
    h: &RequestHeader,
    answer: (i32, Vec<u8>),
    fault: Option<Fault>,
    by_write: bool,
) -> io::Result<()> {
    let Some(fault) = fault else {
        return send_answer(sock, h, answer, None, by_write);
    };
    send_answer(sock, h, answer.clone(), Some(fault.action), by_write)?;
    if fault.then_good {
        send_answer(sock, h, answer, None, by_write)?;
    }
    Ok(())
}

/// Sends one answer to `h`, spoilt by `action` if given; a normal one with
/// write(2) when `by_write`.
fn send_answer(
    sock: &ConnectorSocket,
    h: &RequestHeader,
    answer: (i32, Vec<u8>),
    action: Option<Action>,
    by_write: bool,
) -> io::Result<()> {
    let (error, mut data) = answer;
    let mut out = h.clone();
    out.error = error;
    // A raw message: `header` and `data` with `cn_msg.len` = `len` bytes.
    let raw = |header: &RequestHeader, data: &[u8], len: usize| {
        let mut buf = vec![0u8; HEADER_SIZE];
        header.encode(&mut buf);
        buf.extend_from_slice(data);
        buf.truncate(len);
        let cn = ulog_proto::wire::CnHeader::for_log(h.seq, 0, buf.len() as u16);
        sock.send_raw(&cn, &buf)
    };
    match action {
        None | Some(Action::Late(_)) => {}
        Some(Action::Eagain) => return sock.send_ack(h.seq, libc::EAGAIN as u32),
        Some(Action::EagainReply) => {
            out.error = -libc::EAGAIN;
            data.clear();
        }
        Some(Action::AckOnly) => return sock.send_ack(h.seq, 0),
        Some(Action::AckError(errno)) => return sock.send_ack(h.seq, errno),
        Some(Action::Error(errno)) => {
            out.error = -errno;
            data.clear();
        }
        Some(Action::TooMuch) => data.extend_from_slice(&[0x5a; 64]),
        Some(Action::Short) => data.truncate(data.len().saturating_sub(4)),
        Some(Action::Value(v)) => {
            if let Some(first) = data.get_mut(..8) {
                first.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Some(Action::Value2(v)) => {
            if let Some(second) = data.get_mut(8..16) {
                second.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Some(Action::BadDataSize) => {
            out.data_size = data.len() as u32 + 100;
            return raw(&out, &data, usize::MAX);
        }
        Some(Action::ShortCnLen) => {
            out.data_size = data.len() as u32;
            return raw(&out, &data, HEADER_SIZE);
        }
        Some(Action::Truncated) => return raw(&out, &data, 100),
        Some(Action::WrongLuid) => out.luid = out.luid.wrapping_add(1),
        Some(Action::WrongUuid) => out.uuid[0] ^= 0x20,
        Some(Action::WrongType) => out.request_type = if out.request_type == 8 { 7 } else { 8 },
        Some(Action::Duplicate) => sock.send_reply(&out, &data)?,
        Some(Action::LuidZero) => out.luid = 0,
        Some(Action::TypeFlag) => out.request_type |= 0x1000,
        Some(Action::Garbage) => data.extend_from_slice(b"\n\0\xff\x01 tail"),
        Some(Action::Drop) => return Ok(()),
        Some(Action::Exit) => std::process::exit(3),
    }
    if by_write {
        write_reply(sock, &out, &data)
    } else {
        sock.send_reply(&out, &data)
    }
}

fn run(mut o: Options) -> io::Result<()> {
    let sock = open_socket(o.open_as)?;
    let mut trace = match &o.trace {
        Some(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    // Files first, as an unprivileged server may not create them; the
    // socket already listens, and no request comes before the caller sees
    // the ready file.
    if let Some(path) = &o.ready {
        std::fs::write(path, b"")?;
    }
    if let Some(uid) = o.user {
        ulog_proto::socket::drop_privileges(uid)?;
    }
    let mut model = Model::new(std::mem::take(&mut o.settings));
    let t0 = Instant::now();
    let mut buf = vec![0u8; RECV_BUFFER_SIZE];
    loop {
        let Received::Message(m) = sock.recv(&mut buf)? else {
            continue;
        };
        if !m.sender.is_kernel() {
            continue;
        }
        let (h, data) = match Message::parse(&m.cn, m.body) {
            Ok(Message::Request { header, data }) => (header, data.to_vec()),
            _ => continue,
        };
        let received = t0.elapsed();
        let regions = ulog_proto::wire::payload_regions(&data)
            .into_iter()
            .flatten()
            .count();
        let fault = faults::pick(&mut o.rules, h.kind(), regions);
        if let Some(Fault {
            action: Action::Late(ms),
            ..
        }) = fault
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(t) = trace.as_mut() {
            let mut line = trace_line(received, &h, &data, pending(&sock));
            if let Some(f) = fault {
                line += &format!(" fault={:?}", f.action);
            }
            // One write per line: tests append their own lines to the file.
            line.push('\n');
            t.write_all(line.as_bytes())?;
        }
        if o.listen_only {
            continue;
        }
        let answer = match h.kind() {
            Some(kind) => model.answer(&h.uuid, h.luid, kind, &data),
            None => (model::EINVAL, Vec::new()),
        };
        if let Err(e) = reply(&sock, &h, answer, fault, o.write) {
            eprintln!("ulog-test-server: reply to seq {} failed: {e}", h.seq);
        }
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ulog-test-server: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o) {
        eprintln!("ulog-test-server: {e}");
        std::process::exit(1);
    }
}
