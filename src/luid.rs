// SPDX-License-Identifier: GPL-2.0

//! Local unique ids: the `luid` every request of a log instance carries,
//! which tells a server two instances of one uuid apart (a table reload
//! makes a new one before the old one goes). They count up from a random
//! salt, below 2^63: unique per instance, and never equal to a canonical
//! kernel address (whose top bit is set), unlike the C module's. Uses
//! `core` only; compiled on the host too.

use core::sync::atomic::{AtomicU64, Ordering};

/// Hands out local unique ids, module-wide.
pub(crate) struct Luids {
    next: AtomicU64,
}

impl Luids {
    /// Ids counting up from `salt` (its top bit dropped).
    pub(crate) const fn new(salt: u64) -> Self {
        Self {
            next: AtomicU64::new(salt >> 1),
        }
    }

    /// A fresh id below 2^63, never 0: a reply naming `luid` 0 may answer
    /// any instance (see `reply.rs`).
    pub(crate) fn next(&self) -> u64 {
        loop {
            let luid = self.next.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> 1);
            if luid != 0 {
                return luid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_below_2_63() {
        for salt in [2, 12345, 1 << 63, u64::MAX] {
            let ids = Luids::new(salt);
            let (a, b) = (ids.next(), ids.next());
            assert_ne!(a, b, "salt {salt}");
            assert!(a < 1 << 63 && b < 1 << 63, "salt {salt}: {a} {b}");
        }
    }

    #[test]
    fn ids_wrap_below_2_63_and_skip_0() {
        // Salt u64::MAX starts at 2^63 - 1, the last id below 2^63.
        let ids = Luids::new(u64::MAX);
        assert_eq!(ids.next(), (1 << 63) - 1);
        assert_eq!(ids.next(), 1);
        assert_eq!(ids.next(), 2);
    }
}
