// SPDX-License-Identifier: GPL-2.0

//! Completions: one task waits until another signals that something is done.
//!
//! C header: [`include/linux/completion.h`](srctree/include/linux/completion.h)

use crate::bindings;
use crate::time::Jiffies;
use kernel::{prelude::*, types::Opaque};

/// A `struct completion`.
///
/// # Invariants
///
/// `inner` was initialised by `init_completion` and is pinned for the life of
/// the object, as its wait queue links into itself.
#[pin_data]
pub(crate) struct Completion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: A completion is meant to be signalled from one task and waited on
// from another; its state is protected by its internal wait-queue lock.
unsafe impl Send for Completion {}
// SAFETY: All methods take `&self` and are safe to call concurrently (the C
// functions serialise on the wait-queue lock).
unsafe impl Sync for Completion {}

impl Completion {
    /// Creates an initialiser of a completion that is not done.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs, and
            // `init_completion` fully initialises it.
            inner <- Opaque::ffi_init(|slot| unsafe { bindings::dmlu_init_completion(slot) }),
        })
    }

    /// Marks the completion done, waking one waiter (or the next one to wait).
    /// May be called in any context, including with spinlocks held.
    pub(crate) fn complete(&self) {
        // SAFETY: By the type invariant, `inner` is an initialised completion.
        unsafe { bindings::complete(self.inner.get()) }
    }

    /// Forgets an earlier `complete` that no waiter consumed.
    pub(crate) fn reinit(&self) {
        // SAFETY: By the type invariant, `inner` is an initialised completion.
        unsafe { bindings::dmlu_reinit_completion(self.inner.get()) }
    }

    /// Waits, uninterruptibly, until the completion is done or `timeout`
    /// jiffies pass. Returns whether it was completed. Sleeps: process context
    /// only.
    pub(crate) fn wait_timeout(&self, timeout: Jiffies) -> bool {
        // SAFETY: By the type invariant, `inner` is an initialised completion;
        // the caller is in process context as documented.
        unsafe { bindings::wait_for_completion_timeout(self.inner.get(), timeout) != 0 }
    }
}
