// SPDX-License-Identifier: GPL-2.0

//! A typed mempool, and the queue whose nodes it provides.
//!
//! A mempool keeps a reserve of preallocated objects so that allocations can
//! still succeed, without sleeping, when the allocator itself fails. Here the
//! pool and the queue of its objects are one type: an object can only exist
//! inside the queue that owns the pool, so none outlives the pool.
//!
//! C header: [`include/linux/mempool.h`](srctree/include/linux/mempool.h)

use crate::bindings;
use crate::compat::{self, new_spinlock_irq, SpinLockIrq};
use core::{marker::PhantomData, mem, ptr};
use kernel::{alloc::AllocError, error::to_result, prelude::*, types::Opaque};

/// A queue node, allocated from the pool.
struct Node<T> {
    next: *mut Node<T>,
    value: T,
}

/// The linked nodes of a queue, oldest first.
struct Chain<T> {
    head: *mut Node<T>,
    tail: *mut Node<T>,
}

// SAFETY: A `Chain` owns its nodes, which hold `T` values; moving it to
// another thread moves the values.
unsafe impl<T: Send> Send for Chain<T> {}

/// A FIFO queue of `T` values whose nodes come from a mempool of its own.
///
/// # Invariants
///
/// - `pool` was initialised by `mempool_init_kmalloc_pool` for objects of
///   `size_of::<Node<T>>()` bytes and is exited only when the queue drops.
/// - Every node reachable from `chain` came from `pool`, holds an initialised
///   `T`, and is reachable from nowhere else.
#[pin_data(PinnedDrop)]
pub(crate) struct PooledQueue<T: Copy + Send + 'static> {
    #[pin]
    pool: Opaque<bindings::mempool_t>,
    #[pin]
    chain: SpinLockIrq<Chain<T>>,
}

// SAFETY: The queue owns `T` values (which are `Send`) behind a lock; the
// mempool serialises its own state.
unsafe impl<T: Copy + Send + 'static> Send for PooledQueue<T> {}
// SAFETY: All shared access goes through the spinlock or the mempool, both of
// which are safe to use concurrently.
unsafe impl<T: Copy + Send + 'static> Sync for PooledQueue<T> {}

impl<T: Copy + Send + 'static> PooledQueue<T> {
    /// Creates an empty queue whose pool keeps `reserve` nodes preallocated.
    pub(crate) fn new(reserve: i32) -> impl PinInit<Self, Error> {
        // kmalloc'ed objects are aligned to at least 8 bytes.
        build_assert!(mem::align_of::<Node<T>>() <= 8);
        try_pin_init!(Self {
            pool <- compat::try_ffi_init(move |pool: *mut bindings::mempool_t| {
                // SAFETY: `pool` is valid for writes. `mempool_init` expects a
                // zeroed pool (it leaves `curr_nr` alone); on failure it frees
                // what it allocated, and `Opaque` needs no drop.
                unsafe {
                    pool.write_bytes(0, 1);
                    to_result(bindings::dmlu_mempool_init_kmalloc(
                        pool,
                        reserve,
                        mem::size_of::<Node<T>>(),
                    ))
                }
            }),
            chain <- new_spinlock_irq!(
                Chain { head: ptr::null_mut(), tail: ptr::null_mut() },
                "dm_log_userspace:pooled_queue",
            ),
        })
    }

    /// Appends `value`, taking a node from the allocator or else from the
    /// reserve. Never sleeps, so it may be called in atomic context; fails
    /// when both are exhausted.
    pub(crate) fn try_push(&self, value: T) -> Result<(), AllocError> {
        // SAFETY: By the type invariant `pool` is initialised; a non-sleeping
        // allocation is valid in any context.
        let node = unsafe {
            bindings::dmlu_mempool_alloc(
                self.pool.get(),
                bindings::GFP_ATOMIC | bindings::__GFP_NOWARN,
            )
        }
        .cast::<Node<T>>();
        if node.is_null() {
            return Err(AllocError);
        }
        // SAFETY: `node` is a fresh pool object of `size_of::<Node<T>>()`
        // bytes, suitably aligned (checked in `new`).
        unsafe {
            node.write(Node {
                next: ptr::null_mut(),
                value,
            })
        };
        let mut chain = self.chain.lock();
        if chain.tail.is_null() {
            chain.head = node;
        } else {
            // SAFETY: `tail` is a node of this queue, per the type invariant,
            // and the lock is held.
            unsafe { (*chain.tail).next = node };
        }
        chain.tail = node;
        Ok(())
    }

    /// Whether no value is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.chain.lock().head.is_null()
    }

    /// Takes every queued value, oldest first. The nodes go back to the pool
    /// as the returned iterator advances (or drops).
    pub(crate) fn take_all(&self) -> Drain<'_, T> {
        let mut chain = self.chain.lock();
        let head = chain.head;
        chain.head = ptr::null_mut();
        chain.tail = ptr::null_mut();
        Drain {
            pool: self.pool.get(),
            next: head,
            _queue: PhantomData,
        }
    }
}

#[pinned_drop]
impl<T: Copy + Send + 'static> PinnedDrop for PooledQueue<T> {
    fn drop(self: Pin<&mut Self>) {
        drop(self.take_all());
        // SAFETY: The pool was initialised in `new` and every node is back in
        // it; nothing uses it after this.
        unsafe { bindings::mempool_exit(self.pool.get()) };
    }
}

/// The values taken from a [`PooledQueue`] by [`PooledQueue::take_all`].
///
/// # Invariants
///
/// `next` starts a chain of nodes of the queue's `pool` that only this
/// iterator reaches.
pub(crate) struct Drain<'a, T: Copy + Send + 'static> {
    pool: *mut bindings::mempool_t,
    next: *mut Node<T>,
    _queue: PhantomData<&'a PooledQueue<T>>,
}

impl<T: Copy + Send + 'static> Iterator for Drain<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next.is_null() {
            return None;
        }
        let node = self.next;
        // SAFETY: Per the type invariant, `node` is an initialised node that
        // only this iterator reaches; it is returned to its pool right after.
        let Node { next, value } = unsafe { node.read() };
        self.next = next;
        // SAFETY: `node` came from `pool`, which outlives `self` (borrowed
        // from the queue), and nothing refers to it any more.
        unsafe { bindings::mempool_free(node.cast(), self.pool) };
        Some(value)
    }
}

impl<T: Copy + Send + 'static> Drop for Drain<'_, T> {
    fn drop(&mut self) {
        for _ in self.by_ref() {}
    }
}
