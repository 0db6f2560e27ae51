// SPDX-License-Identifier: GPL-2.0

//! The signals the daemon handles, as events on a descriptor its poll waits
//! on: each sets a flag and writes a byte to a self-pipe (signal-hook), so a
//! signal wakes the loop like a request does and is acted on between
//! requests, never in the handler.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// A signal, as the daemon acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: exit cleanly.
    Terminate,
    /// SIGUSR1: log the counters.
    DumpStats,
    /// SIGHUP: nothing to reload; noted in the log.
    Hangup,
}

/// The handled signals and their self-pipe.
#[derive(Debug)]
pub struct Signals {
    wake: UnixStream,
    flags: [(Signal, Arc<AtomicBool>); 3],
}

impl Signals {
    /// Installs the handlers of SIGTERM, SIGINT, SIGUSR1 and SIGHUP.
    pub fn new() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let flags = [Signal::Terminate, Signal::DumpStats, Signal::Hangup]
            .map(|s| (s, Arc::new(AtomicBool::new(false))));
        for (signal, (_, flag)) in [
            (SIGTERM, &flags[0]),
            (SIGINT, &flags[0]),
            (SIGUSR1, &flags[1]),
            (SIGHUP, &flags[2]),
        ] {
            // The flag first, so a wake-up always finds it set.
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(Self { wake: read, flags })
    }

    /// The signals that arrived since the last call, in a fixed order.
    pub fn take(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|&(s, _)| s)
            .collect()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_wakes_the_descriptor_and_is_reported_once() {
        let s = Signals::new().unwrap();
        assert!(s.take().is_empty());
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(s.take(), [Signal::DumpStats, Signal::Hangup]);
        assert!(s.take().is_empty());
    }
}
