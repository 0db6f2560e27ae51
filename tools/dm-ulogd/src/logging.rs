// SPDX-License-Identifier: GPL-2.0

//! The server's log: to stderr (optionally with UTC timestamps) or syslog.
//! Debug lines (per-request tracing) only appear with `--verbose`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys::{Priority, Syslog};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static TIMESTAMPS: AtomicBool = AtomicBool::new(false);
static SYSLOG: OnceLock<std::sync::Mutex<Syslog>> = OnceLock::new();

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

/// Sets up logging once, at start.
pub fn init(destination: Destination, verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    match destination {
        Destination::Stderr { timestamps } => TIMESTAMPS.store(timestamps, Ordering::Relaxed),
        Destination::Syslog => {
            let _ = SYSLOG.set(std::sync::Mutex::new(Syslog::open("dm-ulogd")));
        }
    }
}

/// Whether debug lines are wanted (check before formatting costly ones).
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Writes one line.
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if level == Level::Debug && !verbose() {
        return;
    }
    if let Some(syslog) = SYSLOG.get() {
        let prio = match level {
            Level::Error => Priority::Error,
            Level::Warning => Priority::Warning,
            Level::Info => Priority::Info,
            Level::Debug => Priority::Debug,
        };
        if let Ok(s) = syslog.lock() {
            s.send(prio, &args.to_string());
        }
        return;
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
}
