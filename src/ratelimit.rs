// SPDX-License-Identifier: GPL-2.0

//! A limit on how often a kind of message is logged: a bad or hostile
//! server must not be able to flood the kernel log.

use crate::time::{jiffies, msecs_to_jiffies};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Messages allowed per interval.
const BURST: u32 = 10;

/// Length of an interval, in milliseconds.
const INTERVAL_MS: u32 = 5000;

/// Allows [`BURST`] messages per [`INTERVAL_MS`]. Racy by design: an extra
/// line or a missed one under contention does not matter.
pub(crate) struct Ratelimit {
    start: AtomicUsize,
    count: AtomicU32,
}

impl Ratelimit {
    /// A limit with a full burst available.
    pub(crate) const fn new() -> Self {
        Self {
            start: AtomicUsize::new(0),
            count: AtomicU32::new(0),
        }
    }

    /// Whether one more message may be logged now.
    pub(crate) fn allow(&self) -> bool {
        let now = jiffies();
        let start = self.start.load(Ordering::Relaxed);
        if now.wrapping_sub(start) > msecs_to_jiffies(INTERVAL_MS)
            || self.count.load(Ordering::Relaxed) == 0
        {
            self.start.store(now, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < BURST
    }
}
