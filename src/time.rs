// SPDX-License-Identifier: GPL-2.0

//! Jiffies and sleeping.
//!
//! C header: [`include/linux/jiffies.h`](srctree/include/linux/jiffies.h)

use crate::bindings;

pub(crate) use kernel::time::{msecs_to_jiffies, Jiffies};

/// The current value of `jiffies`.
pub(crate) fn jiffies() -> Jiffies {
    // SAFETY: `dmlu_jiffies` only reads the global tick counter.
    unsafe { bindings::dmlu_jiffies() }
}

/// Sleeps for at least `ms` milliseconds. Must not be called in atomic context.
pub(crate) fn msleep(ms: u32) {
    // SAFETY: `msleep` may be called from any sleepable context, which the
    // caller guarantees as documented.
    unsafe { bindings::msleep(ms) }
}
