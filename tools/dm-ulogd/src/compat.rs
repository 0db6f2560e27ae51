// SPDX-License-Identifier: GPL-2.0

//! The calls that Debian 13's packaged crates spell differently from the
//! versions in `Cargo.lock`: rustix 0.38 (`cfg(rustix_0_38)`) and sd-notify
//! 0.4 (`cfg(sd_notify_0_4)`). `debian/rules` sets both cfgs when it builds
//! against `/usr/share/cargo/registry`; the locked build sets neither.

use std::io;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::PollFd;
use sd_notify::NotifyState;

/// Waits until one of `fds` is ready, or `timeout` passes (`None`: no limit).
#[cfg(not(rustix_0_38))]
pub(crate) fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> rustix::io::Result<usize> {
    let timeout = timeout.map(|d| rustix::event::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    rustix::event::poll(fds, timeout.as_ref())
}

/// Waits until one of `fds` is ready, or `timeout` passes (`None`: no limit).
#[cfg(rustix_0_38)]
pub(crate) fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> rustix::io::Result<usize> {
    // Milliseconds, rounded up: a wait of less than 1 ms must not spin.
    let timeout = timeout.map_or(-1, |d| {
        i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    rustix::event::poll(fds, timeout)
}

/// The process id at the other end of a unix stream (`SO_PEERCRED`).
pub(crate) fn peer_pid(stream: &UnixStream) -> io::Result<i32> {
    #[cfg(not(rustix_0_38))]
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    #[cfg(rustix_0_38)]
    let cred = rustix::net::sockopt::get_socket_peercred(stream)?;
    Ok(cred.pid.as_raw_nonzero().get())
}

/// Tells systemd (`Type=notify`) the service's state; does nothing when
/// systemd did not start it.
#[cfg(not(sd_notify_0_4))]
pub(crate) fn notify(state: &[NotifyState<'_>]) -> io::Result<()> {
    sd_notify::notify(state)
}

/// Tells systemd (`Type=notify`) the service's state; does nothing when
/// systemd did not start it.
#[cfg(sd_notify_0_4)]
pub(crate) fn notify(state: &[NotifyState<'_>]) -> io::Result<()> {
    sd_notify::notify(false, state)
}
