// SPDX-License-Identifier: GPL-2.0

//! The server's log: to stderr (optionally with UTC timestamps) or syslog
//! (the `/dev/log` socket, facility daemon). Debug lines (per-request
//! tracing) only appear with `--verbose`. Warnings and errors are
//! rate-limited per call site, as the kernel's printk is: a flood of bad
//! requests or a failing device costs a few lines and a count, never the
//! server's time.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::net::UnixDatagram;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static TIMESTAMPS: AtomicBool = AtomicBool::new(false);
static SYSLOG: OnceLock<UnixDatagram> = OnceLock::new();
static LIMITS: OnceLock<Mutex<HashMap<&'static Location<'static>, Window>>> = OnceLock::new();

/// Lines per call site and interval before the rest are only counted.
const BURST: u32 = 10;
const INTERVAL: Duration = Duration::from_secs(5);

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is off but handled.
    Warning,
    /// Normal events.
    Info,
    /// Per-request tracing (`--verbose`).
    Debug,
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard error.
    Stderr {
        /// Prefix lines with a UTC timestamp.
        timestamps: bool,
    },
    /// syslog, facility daemon.
    Syslog,
}

/// Sets up logging once, at start. Without a syslog socket, lines go to
/// stderr.
pub fn init(destination: Destination, verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    match destination {
        Destination::Stderr { timestamps } => TIMESTAMPS.store(timestamps, Ordering::Relaxed),
        Destination::Syslog => {
            let socket = UnixDatagram::unbound().and_then(|s| s.connect("/dev/log").map(|()| s));
            match socket {
                Ok(s) => {
                    let _ = SYSLOG.set(s);
                }
                Err(e) => eprintln!("dm-ulogd: no syslog at /dev/log ({e}): logging to stderr"),
            }
        }
    }
}

/// Whether debug lines are wanted (check before formatting costly ones).
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// One call site's rate-limit window.
struct Window {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

/// Whether a line from `site` may go out now, and how many were suppressed
/// before it.
fn admit(site: &'static Location<'static>) -> Option<u64> {
    let limits = LIMITS.get_or_init(|| Mutex::new(HashMap::new()));
    let Ok(mut limits) = limits.lock() else {
        return Some(0);
    };
    let now = Instant::now();
    let w = limits.entry(site).or_insert(Window {
        start: now,
        lines: 0,
        suppressed: 0,
    });
    if now.duration_since(w.start) >= INTERVAL {
        w.start = now;
        w.lines = 0;
    }
    if w.lines >= BURST {
        w.suppressed += 1;
        return None;
    }
    w.lines += 1;
    Some(std::mem::take(&mut w.suppressed))
}

/// Writes one line (warnings and errors rate-limited by call site).
#[track_caller]
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if level == Level::Debug && !verbose() {
        return;
    }
    if matches!(level, Level::Error | Level::Warning) {
        match admit(Location::caller()) {
            None => return,
            Some(0) => {}
            Some(n) => write_line(
                Level::Warning,
                format_args!(
                    "{n} similar messages suppressed (from {})",
                    Location::caller()
                ),
            ),
        }
    }
    write_line(level, args);
}

fn write_line(level: Level, args: fmt::Arguments<'_>) {
    if let Some(syslog) = SYSLOG.get() {
        // RFC 3164 as syslog(3) sends it: facility daemon (3).
        let severity = match level {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Info => 6,
            Level::Debug => 7,
        };
        let line = format!(
            "<{}>dm-ulogd[{}]: {args}",
            3 * 8 + severity,
            std::process::id()
        );
        if syslog.send(line.as_bytes()).is_ok() {
            return;
        }
    }
    let tag = match level {
        Level::Error => "error: ",
        Level::Warning => "warning: ",
        Level::Info | Level::Debug => "",
    };
    if TIMESTAMPS.load(Ordering::Relaxed) {
        eprintln!("{} dm-ulogd: {tag}{args}", utc_now());
    } else {
        eprintln!("dm-ulogd: {tag}{args}");
    }
}

/// Logs an error line.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Error, format_args!($($t)*)) };
}

/// Logs a warning line.
#[macro_export]
macro_rules! warning {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Warning, format_args!($($t)*)) };
}

/// Logs an informational line.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Info, format_args!($($t)*)) };
}

/// Logs a debug line (only with `--verbose`).
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::logging::verbose() {
            $crate::logging::emit($crate::logging::Level::Debug, format_args!($($t)*))
        }
    };
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for now.
pub fn utc_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs(), d.subsec_millis())
}

/// Formats a UNIX time as ISO 8601 UTC.
pub fn format_utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_747_742_096, 123), "2025-05-20T11:54:56.123Z");
    }

    #[test]
    fn a_flood_from_one_call_site_is_cut_to_a_burst_and_counted() {
        let site = Location::caller();
        let admitted = (0..100).filter(|_| admit(site).is_some()).count();
        assert_eq!(admitted, BURST as usize);
        let other = Location::caller();
        assert_eq!(admit(other), Some(0), "another call site is not limited");
    }
}
