// SPDX-License-Identifier: GPL-2.0

//! A spinlock that also disables interrupts while held, as a [`Backend`] of
//! the kernel crate's generic [`Lock`], for kernels whose crate has none
//! (Linux 6.12's `SpinLock` has no irq-safe variant). Where the kernel has
//! `kernel::sync::SpinLockIrq` (7.3) it is used instead: `compat.rs` builds
//! this file only without it (the `spinlock_irq` probe). This one behaves
//! as the kernel's does: interrupt disabling is counted per CPU, so guards
//! may be dropped in any order.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h)

use crate::bindings;
use kernel::sync::lock::{Backend, Lock};

/// A spinlock that keeps local interrupts disabled while held; see
/// [`new_spinlock_irq`].
///
/// The first guard taken on a CPU saves the interrupt state and the last one
/// dropped restores it, so interrupts stay disabled as long as any guard
/// lives, whatever the order the guards are dropped in (with
/// `spin_unlock_irqrestore`, dropping an outer guard first would enable
/// interrupts while the inner lock is still held).
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

/// The [`Backend`] of [`SpinLockIrq`]: a `spinlock_t` taken with 7.3's
/// `spin_lock_irq_disable` semantics (`helpers.c`).
pub(crate) struct SpinLockIrqBackend;

// SAFETY: The underlying kernel `spinlock_t` object ensures mutual exclusion,
// and `relock` uses the default implementation, which calls `lock`.
unsafe impl Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = ();

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
        unsafe { bindings::dmlu_spin_lock_irq_disable(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // is a lock held by the caller. The guard is not `Send`, so this is
        // the CPU that took the lock (interrupts stayed disabled since), whose
        // count `lock` raised.
        unsafe { bindings::dmlu_spin_unlock_irq_enable(ptr) }
    }

    // Required by the `Backend` of newer kernels (see `compat.rs`).
    #[cfg(dmlu_lock_try_lock)]
    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid, initialised `spinlock_t`. On success the count
        // is raised as by `lock`, which `unlock` lowers; on failure the
        // helper has lowered it again.
        unsafe { bindings::dmlu_spin_trylock_irq_disable(ptr) }.then_some(())
    }

    #[cfg(dmlu_lock_assert_is_held)]
    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid, initialised `spinlock_t`.
        unsafe { bindings::dmlu_spin_assert_is_held(ptr) }
    }
}

/// Checks on a lockdep kernel, when the module loads, that interrupts stay
/// disabled until the last guard is dropped, in either order.
#[cfg(CONFIG_PROVE_LOCKING)]
pub(crate) fn self_test() -> kernel::error::Result {
    use kernel::prelude::*;

    fn irqs_disabled() -> bool {
        // SAFETY: Reads the current CPU's interrupt state; no preconditions.
        unsafe { bindings::dmlu_irqs_disabled() }
    }

    let a = KBox::pin_init(
        new_spinlock_irq!((), "dm_log_userspace:self_test_a"),
        GFP_KERNEL,
    )?;
    let b = KBox::pin_init(
        new_spinlock_irq!((), "dm_log_userspace:self_test_b"),
        GFP_KERNEL,
    )?;
    let before = irqs_disabled();
    let outer = a.lock();
    let inner = b.lock();
    drop(outer);
    let under_inner = irqs_disabled();
    drop(inner);
    let after = irqs_disabled();
    if !under_inner || after != before {
        pr_err!(
            "SpinLockIrq self-test: interrupts {} under the inner lock once the outer guard went, {} after both (before: {})\n",
            if under_inner { "disabled" } else { "enabled" },
            if after { "disabled" } else { "enabled" },
            if before { "disabled" } else { "enabled" },
        );
        return Err(EINVAL);
    }
    Ok(())
}
