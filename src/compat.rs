// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernels this module builds against, Linux 6.12
//! and Linux 7.3: the one place that knows. The rest of the crate is written
//! once, against the items re-exported here.
//!
//! `Kbuild` passes `--cfg dmlu_kernel_7_3` when the target kernel is 7.3 or
//! later (from its `VERSION` and `PATCHLEVEL`); without it the target is 6.12.
//! Only this file reads that flag (and `helpers.c` its C twin,
//! `DMLU_KERNEL_7_3`, where a C API changed).
//!
//! | item | on 7.3 | on 6.12 |
//! |---|---|---|
//! | [`SpinLockIrq`], [`new_spinlock_irq`] | `kernel::sync` | ours, `spinlock_irq.rs` |
//! | [`try_ffi_init`] | `Opaque::try_ffi_init` | ours, as 7.3 writes it |
//! | [`EPROTO`], [`is_enobufs`] | `kernel::error::code` | from `bindings` |
//! | [`cstr_bytes`] | `CStr` is `core::ffi::CStr`: `to_bytes` | `kernel::str::CStr::as_bytes` |
//! | `kernel::fmt::Display` for our types | implemented here | (`core::fmt::Display` is enough) |
//! | KUnit suites, `kunit.rs` | built (they need `CONFIG_KUNIT=y`) | not built (no `#[kunit_tests]`) |
//! | workqueue flags (`helpers.c`, `DMLU_KERNEL_7_3`) | `WQ_MEM_RECLAIM \| WQ_PERCPU` | `WQ_MEM_RECLAIM` |
//!
//! Ours on both kernels, as 7.3's counterpart lacks what the log needs:
//! - `completion.rs`: 7.3's `sync::Completion` has `complete_all` and an
//!   untimed wait only; the transfer layer completes one waiter, re-arms the
//!   completion between requests and waits uninterruptibly with a timeout.
//! - `delayed_work.rs`: 7.3's `workqueue::DelayedWork` is queued by handing
//!   over an `Arc` or a `KBox` (the log is owned by device-mapper), and
//!   neither cancels, cancels synchronously nor flushes; and 7.3 cannot
//!   allocate a `WQ_MEM_RECLAIM` workqueue, which work on the writeback path
//!   needs.
//!
//! Differences absorbed without a flag, where both kernels accept one
//! spelling: `kernel::build_error!` (a function on 6.12, a macro on 7.3, the
//! macro exists on both); the module author is `MODULE_AUTHOR` in
//! `helpers.c` (6.12's `module!` has `author`, 7.3's `authors`);
//! `ForeignOwnable::into_foreign` returns `*const` on 6.12 and `*mut` on 7.3
//! (`dirty_log.rs` binds it to a `*const`); the pin-init macros of the
//! prelude (from the `pin_init` crate on 7.3) are used the same way.

use kernel::{prelude::*, types::Opaque};

#[cfg(not(dmlu_kernel_7_3))]
#[path = "spinlock_irq.rs"]
pub(crate) mod spinlock_irq;

#[cfg(dmlu_kernel_7_3)]
#[path = "kunit.rs"]
mod kunit;

#[cfg(dmlu_kernel_7_3)]
pub(crate) use kernel::sync::{new_spinlock_irq, SpinLockIrq};
#[cfg(not(dmlu_kernel_7_3))]
pub(crate) use spinlock_irq::{new_spinlock_irq, SpinLockIrq};

/// Load-time checks of what this file supplies in place of the kernel's: on
/// 6.12 lockdep kernels, that our `SpinLockIrq` keeps interrupts disabled
/// until its last guard goes.
pub(crate) fn self_test() -> Result {
    #[cfg(all(not(dmlu_kernel_7_3), CONFIG_PROVE_LOCKING))]
    spinlock_irq::self_test()?;
    Ok(())
}

/// An initialiser of an `Opaque<T>` that calls `init_func` with a pointer to
/// the uninitialised `T`, in its final, pinned place. On error the `T` is
/// left as `init_func` left it; `Opaque` drops nothing.
#[cfg(dmlu_kernel_7_3)]
pub(crate) fn try_ffi_init<T, E>(
    init_func: impl FnOnce(*mut T) -> Result<(), E>,
) -> impl PinInit<Opaque<T>, E> {
    Opaque::try_ffi_init(init_func)
}

/// An initialiser of an `Opaque<T>` that calls `init_func` with a pointer to
/// the uninitialised `T`, in its final, pinned place. On error the `T` is
/// left as `init_func` left it; `Opaque` drops nothing.
#[cfg(not(dmlu_kernel_7_3))]
pub(crate) fn try_ffi_init<T, E>(
    init_func: impl FnOnce(*mut T) -> Result<(), E>,
) -> impl PinInit<Opaque<T>, E> {
    // SAFETY: The closure never moves the slot, and whatever it returns, the
    // slot may be left as it is: an `Opaque<T>` may hold a `T` in any state,
    // initialised or not, and never drops it.
    unsafe {
        kernel::init::pin_init_from_closure(move |slot: *mut Opaque<T>| {
            init_func(Opaque::raw_get(slot))
        })
    }
}

/// `EPROTO`: a reply that breaks the protocol.
#[cfg(dmlu_kernel_7_3)]
#[allow(non_snake_case)]
pub(crate) fn EPROTO() -> Error {
    kernel::error::code::EPROTO
}

/// `EPROTO`: a reply that breaks the protocol.
#[cfg(not(dmlu_kernel_7_3))]
#[allow(non_snake_case)]
pub(crate) fn EPROTO() -> Error {
    Error::from_errno(-(crate::bindings::EPROTO as kernel::ffi::c_int))
}

/// Whether `e` is `ENOBUFS`: a netlink listener's queue was full.
#[cfg(dmlu_kernel_7_3)]
pub(crate) fn is_enobufs(e: Error) -> bool {
    e == ENOBUFS
}

/// Whether `e` is `ENOBUFS`: a netlink listener's queue was full.
#[cfg(not(dmlu_kernel_7_3))]
pub(crate) fn is_enobufs(e: Error) -> bool {
    e.to_errno() == -(crate::bindings::ENOBUFS as kernel::ffi::c_int)
}

/// The bytes of `s`, without the NUL.
#[cfg(dmlu_kernel_7_3)]
pub(crate) fn cstr_bytes(s: &CStr) -> &[u8] {
    s.to_bytes()
}

/// The bytes of `s`, without the NUL.
#[cfg(not(dmlu_kernel_7_3))]
pub(crate) fn cstr_bytes(s: &kernel::str::CStr) -> &[u8] {
    s.as_bytes()
}

/// 7.3's `pr_*!` format `{}` arguments with `kernel::fmt::Display`, which
/// forwards to `core::fmt::Display` only for the kernel's own types: these
/// are ours that the log prints.
#[cfg(dmlu_kernel_7_3)]
mod display {
    use core::fmt::{self, Formatter};

    macro_rules! display_as_core {
        ($($t:ty),* $(,)?) => {$(
            impl kernel::fmt::Display for $t {
                fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
                    fmt::Display::fmt(self, f)
                }
            }
        )*};
    }

    display_as_core!(
        crate::geometry::BadRegionSize,
        crate::table_args::ArgsError,
        crate::transfer::ShortUuid<'_>,
    );
}
