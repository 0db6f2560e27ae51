// SPDX-License-Identifier: GPL-2.0

//! Delayed work owned by the value it runs on, on a workqueue of the
//! module's own. Linux 6.12's `kernel::workqueue` has neither delayed work
//! nor workqueue allocation, and 7.3's cannot cancel (see `compat.rs`).
//!
//! The pattern is the kernel's (`rust/kernel/workqueue.rs`): work is queued
//! through its owner, and the abstraction finds the `work_struct` from the
//! owner and the owner from the `work_struct`, never from an offset a user
//! supplies. The owner differs: rather than an `Arc` or a `KBox` handed to
//! the workqueue, it is a pinned [`WithDelayedWork<T>`] that holds the work
//! item, the `T` it runs on and the workqueue, and whose drop cancels the
//! work synchronously before any of them goes.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use crate::bindings;
use crate::time::Jiffies;
use core::{mem::offset_of, ops::Deref, ptr::NonNull};
use kernel::{prelude::*, str::CStr, sync::Arc, types::Opaque};

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
        // INVARIANT: `wq` comes from `alloc_workqueue`.
        Ok(Self {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // SAFETY: Per the type invariant `wq` is live. No delayed work can be
        // pending on it: every `WithDelayedWork` that queues on it holds an
        // `Arc` to it, released only after cancelling its work.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}

/// What a [`WithDelayedWork<Self>`] runs.
pub(crate) trait DelayedWorkItem: Sized + Send + Sync {
    /// Runs the work, in process context on the workqueue. May queue the
    /// work again; must not [`flush`](WithDelayedWork::flush) it (that would
    /// wait for itself).
    fn run(this: &WithDelayedWork<Self>);
}

/// A `T` with a `struct delayed_work` that runs [`DelayedWorkItem::run`] on
/// it, on a workqueue it keeps alive. Dereferences to `T`.
///
/// ```ignore
/// struct Tick(AtomicU32);
///
/// impl DelayedWorkItem for Tick {
///     fn run(this: &WithDelayedWork<Self>) {
///         this.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let t = KBox::pin_init(WithDelayedWork::new(queue, Tick(AtomicU32::new(0))), GFP_KERNEL)?;
/// t.queue(msecs_to_jiffies(100));
/// drop(t); // Cancels the work, or waits for it to finish, before freeing.
/// ```
///
/// # Invariants
///
/// - `work` was initialised by `INIT_DELAYED_WORK` with `run_work::<T>`, and
///   is only ever queued on `queue`.
/// - `self` is pinned: it is only built in place, by [`Self::new`]. While the
///   work is pending or running, neither `work` nor `inner` moves.
/// - Once `drop` has begun, the work is neither pending nor running when any
///   field is dropped: `drop` cancels it synchronously first, and nothing
///   queues it again, as `drop` holds the only reference (the work's own
///   `run` holds one too, until `cancel_delayed_work_sync` has waited for it,
///   which also stops it from queueing itself again).
#[pin_data(PinnedDrop)]
pub(crate) struct WithDelayedWork<T: DelayedWorkItem> {
    #[pin]
    inner: T,
    #[pin]
    work: Opaque<bindings::delayed_work>,
    queue: Arc<Workqueue>,
}

// SAFETY: The work item is only touched through the workqueue API, which may
// be called from any thread; `T` and the workqueue are `Send`.
unsafe impl<T: DelayedWorkItem> Send for WithDelayedWork<T> {}
// SAFETY: Every method is a workqueue call that serialises itself, or gives
// out `&T`, and `T` is `Sync`.
unsafe impl<T: DelayedWorkItem> Sync for WithDelayedWork<T> {}

impl<T: DelayedWorkItem> WithDelayedWork<T> {
    /// Creates the initialiser of a `T` (from `inner`) with an idle work item
    /// that runs on `queue`.
    pub(crate) fn new(
        queue: Arc<Workqueue>,
        inner: impl PinInit<T, Error>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- inner,
            // INVARIANT: initialised with `run_work::<T>`, in place.
            // SAFETY: `slot` is valid for writes while the closure runs.
            work <- Opaque::ffi_init(|slot| unsafe {
                bindings::dmlu_init_delayed_work(slot, Some(run_work::<T>))
            }),
            queue,
        }? Error)
    }

    /// Queues the work to run after `delay` jiffies, unless it is already
    /// pending. Returns whether it was queued now.
    pub(crate) fn queue(&self, delay: Jiffies) -> bool {
        // SAFETY: `work` is initialised and pinned inside `self`, which is not
        // freed before the work is cancelled, and `self` keeps `queue` alive
        // as long (type invariants).
        unsafe { bindings::dmlu_queue_delayed_work(self.queue.wq.as_ptr(), self.work.get(), delay) }
    }

    /// Cancels the work if it is pending; does not wait for a running one.
    /// Returns whether it was pending.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: `work` is initialised, per the type invariants.
        unsafe { bindings::cancel_delayed_work(self.work.get()) }
    }

    /// Runs the work now if it is pending and waits for it to finish. Must
    /// not be called from the work itself (it would wait for itself).
    /// Returns whether it had to wait.
    pub(crate) fn flush(&self) -> bool {
        // SAFETY: `work` is initialised, per the type invariants.
        unsafe { bindings::flush_delayed_work(self.work.get()) }
    }
}

impl<T: DelayedWorkItem> Deref for WithDelayedWork<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

#[pinned_drop]
impl<T: DelayedWorkItem> PinnedDrop for WithDelayedWork<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `work` is initialised, per the type invariants. Once this
        // returns the work is neither pending nor running, and only `self`
        // could queue it again.
        unsafe { bindings::cancel_delayed_work_sync(self.work.get()) };
    }
}

/// The `work_func_t` of every [`WithDelayedWork<T>`].
///
/// # Safety
///
/// Called by the workqueue with `work` the `work` member of the
/// `delayed_work` of a live `WithDelayedWork<T>`.
unsafe extern "C" fn run_work<T: DelayedWorkItem>(work: *mut bindings::work_struct) {
    // `Opaque<delayed_work>` has the layout of a `delayed_work`.
    let offset = offset_of!(WithDelayedWork<T>, work) + offset_of!(bindings::delayed_work, work);
    // SAFETY: Only `WithDelayedWork::<T>::new` initialises a work item with
    // this function, in its own `work` field, so subtracting `offset` gives
    // the owner. The owner outlives the run: its drop cancels the work
    // synchronously before anything is dropped (type invariants).
    let this = unsafe { &*work.byte_sub(offset).cast::<WithDelayedWork<T>>() };
    T::run(this);
}
