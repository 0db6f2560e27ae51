// SPDX-License-Identifier: GPL-2.0

//! A spinlock that also disables interrupts while held (`spin_lock_irqsave`),
//! as a [`Backend`] of the kernel crate's generic [`Lock`]. Linux 6.12's
//! `SpinLock` has no irq-safe variant; 7.3's `kernel::sync::SpinLockIrq` is
//! used there instead (see `compat.rs`, which builds this file for 6.12 only).
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h)

use crate::bindings;
use kernel::sync::lock::{Backend, Lock};

/// A spinlock taken with `spin_lock_irqsave`; see [`new_spinlock_irq`].
pub(crate) type SpinLockIrq<T> = Lock<T, SpinLockIrqBackend>;

/// Creates a [`SpinLockIrq`] initialiser with a lock class of its own.
macro_rules! new_spinlock_irq {
    ($inner:expr, $name:literal $(,)?) => {
        kernel::sync::lock::Lock::<_, $crate::compat::spinlock_irq::SpinLockIrqBackend>::new(
            $inner,
            kernel::c_str!($name),
            kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_spinlock_irq;

/// The [`Backend`] of [`SpinLockIrq`]: a `spinlock_t` whose guard keeps the
/// saved interrupt flags.
pub(crate) struct SpinLockIrqBackend;

// SAFETY: The underlying kernel `spinlock_t` object ensures mutual exclusion,
// and `relock` uses the default implementation, which calls `lock`.
unsafe impl Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = kernel::ffi::c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The safety requirements ensure that `ptr` is valid for writes,
        // and `name` and `key` are valid for reads indefinitely.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid, initialised `spinlock_t`.
        unsafe { bindings::dmlu_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // is a lock held by the caller, and `flags` are the ones its `lock`
        // returned.
        unsafe { bindings::dmlu_spin_unlock_irqrestore(ptr, *flags) }
    }

    // Required by the `Backend` of newer kernels (see `compat.rs`).
    #[cfg(dmlu_lock_try_lock)]
    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        let mut flags = 0;
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid, initialised `spinlock_t`; `flags` is ours.
        unsafe { bindings::dmlu_spin_trylock_irqsave(ptr, &mut flags) }.then_some(flags)
    }

    #[cfg(dmlu_lock_assert_is_held)]
    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid, initialised `spinlock_t`.
        unsafe { bindings::dmlu_spin_assert_is_held(ptr) }
    }
}
