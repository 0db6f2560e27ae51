// SPDX-License-Identifier: GPL-2.0

//! Delayed work on a workqueue of one's own. Linux 6.12's `kernel::workqueue`
//! has neither delayed work nor workqueue creation.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use crate::bindings;
use crate::time::Jiffies;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{prelude::*, str::CStr, types::Opaque};

/// An owned `WQ_MEM_RECLAIM` workqueue: it has a rescuer thread, so work
/// queued on it makes progress under memory pressure, as writeback needs.
///
/// # Invariants
///
/// `wq` was returned by `alloc_workqueue` and is destroyed only by `drop`.
pub(crate) struct Workqueue {
    wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for Workqueue {}
// SAFETY: Queueing work is safe from any number of threads at once.
unsafe impl Sync for Workqueue {}

impl Workqueue {
    /// Allocates a workqueue named `name` (shown on its rescuer thread).
    pub(crate) fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is a valid C string; it is copied by the callee.
        let wq = unsafe { bindings::dmlu_alloc_reclaim_workqueue(name.as_char_ptr()) };
        Ok(Self {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // SAFETY: Per the type invariant `wq` is live; `destroy_workqueue`
        // drains it first.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}

/// An owner of a [`DelayedWork`] field, called back when the work runs.
///
/// # Safety
///
/// - `OFFSET` is the byte offset of a `DelayedWork<Self>` field of `Self`, and
///   `Self` is only ever used pinned.
/// - Dropping `Self` calls [`DelayedWork::cancel_sync`] before anything
///   `run` uses is dropped, and nothing queues the work after that.
pub(crate) unsafe trait DelayedWorkOwner: Sized + Sync {
    /// Offset of the `DelayedWork<Self>` field.
    const OFFSET: usize;

    /// Runs the work, in process context on the workqueue.
    fn run(&self);
}

/// A `struct delayed_work` embedded in a pinned `T`, which it runs with
/// [`DelayedWorkOwner::run`].
///
/// # Invariants
///
/// `work` was initialised by `INIT_DELAYED_WORK` with `run_work::<T>`, and
/// lives inside a `T` at offset `T::OFFSET`.
#[repr(transparent)]
#[pin_data]
pub(crate) struct DelayedWork<T: DelayedWorkOwner> {
    #[pin]
    work: Opaque<bindings::delayed_work>,
    _owner: PhantomData<T>,
}

// SAFETY: The work item is only touched through the workqueue API, which is
// safe from any thread.
unsafe impl<T: DelayedWorkOwner> Send for DelayedWork<T> {}
// SAFETY: As above: every method is a workqueue call that serialises itself.
unsafe impl<T: DelayedWorkOwner> Sync for DelayedWork<T> {}

impl<T: DelayedWorkOwner> DelayedWork<T> {
    /// Creates the initialiser of an idle work item. It must be placed in a
    /// `T` at `T::OFFSET`, as the safety contract of that trait says.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs.
            work <- Opaque::ffi_init(|slot| unsafe {
                bindings::dmlu_init_delayed_work(slot, Some(run_work::<T>))
            }),
            _owner: PhantomData,
        })
    }

    /// Queues the work to run on `wq` after `delay` jiffies, unless it is
    /// already pending. Returns whether it was queued now.
    pub(crate) fn queue(&self, wq: &Workqueue, delay: Jiffies) -> bool {
        // SAFETY: `wq` is live (borrowed) and `work` is initialised; the owner
        // cancels the work before either goes away (trait contract).
        unsafe { bindings::dmlu_queue_delayed_work(wq.wq.as_ptr(), self.work.get(), delay) }
    }

    /// Cancels the work if it is pending; does not wait for a running one.
    /// Returns whether it was pending.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: `work` is initialised, per the type invariant.
        unsafe { bindings::cancel_delayed_work(self.work.get()) }
    }

    /// Runs the work now if it is pending and waits for it to finish. Must not
    /// be called from the work itself. Returns whether it had to wait.
    pub(crate) fn flush(&self) -> bool {
        // SAFETY: `work` is initialised, per the type invariant.
        unsafe { bindings::flush_delayed_work(self.work.get()) }
    }

    /// Cancels the work and waits for a running instance to finish.
    pub(crate) fn cancel_sync(&self) -> bool {
        // SAFETY: `work` is initialised, per the type invariant.
        unsafe { bindings::cancel_delayed_work_sync(self.work.get()) }
    }
}

/// The `work_func_t` of every [`DelayedWork<T>`].
///
/// # Safety
///
/// Called by the workqueue with `work` inside a live `DelayedWork<T>`.
unsafe extern "C" fn run_work<T: DelayedWorkOwner>(work: *mut bindings::work_struct) {
    // `work` is the first member of `struct delayed_work`, which is at offset
    // 0 of the transparent `DelayedWork<T>`, which is at `T::OFFSET` in `T`.
    let offset = core::mem::offset_of!(bindings::delayed_work, work) + T::OFFSET;
    // SAFETY: Per the invariants above, subtracting `offset` gives the `T`
    // the work item is embedded in, which outlives the run: its drop cancels
    // the work synchronously first (trait contract).
    let owner = unsafe { &*work.cast::<u8>().sub(offset).cast::<T>() };
    owner.run();
}
