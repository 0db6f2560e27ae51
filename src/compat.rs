// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernels this module builds against (Linux 6.12
//! and every release after it): the one place that knows. The rest of the
//! crate is written once, against the items re-exported here.
//!
//! `Kbuild` probes the target kernel's own sources for each API below and
//! passes `--cfg dmlu_<probe>` when it is there (`-DDMLU_<PROBE>` to
//! `helpers.c`). No version number is involved, so a release between two
//! that were tested gets the spelling that matches what it has. Only this
//! file and `helpers.c` read these flags.
//!
//! | item | probe | with it | without it (6.12) |
//! |---|---|---|---|
//! | [`SpinLockIrq`], [`new_spinlock_irq`] | `spinlock_irq` | `kernel::sync` | ours, `spinlock_irq.rs` |
//! | `try_lock` of our lock's `Backend` | `lock_try_lock` | implemented (the trait requires it) | absent |
//! | `assert_is_held` of our lock's `Backend` | `lock_assert_is_held` | implemented (likewise) | absent |
//! | [`try_ffi_init`] | `try_ffi_init` | `Opaque::try_ffi_init` | ours, as the kernel writes it |
//! | [`EPROTO`] | `errno_eproto` | `kernel::error::code` | from `bindings` |
//! | [`is_enobufs`] | `errno_enobufs` | `kernel::error::code` | from `bindings` |
//! | [`cstr_bytes`] | `core_cstr` | `CStr` is `core::ffi::CStr`: `to_bytes` | `kernel::str::CStr::as_bytes` |
//! | `kernel::fmt::Display` for our types | `kernel_fmt` | implemented here | (`core::fmt::Display` is enough) |
//! | KUnit suites, `kunit.rs` (test builds, `DMLU_KUNIT=1`) | `kunit_tests` | built (they need `CONFIG_KUNIT=y`) | not built |
//! | workqueue flags (`helpers.c`) | `wq_percpu` | `WQ_MEM_RECLAIM \| WQ_PERCPU` | `WQ_MEM_RECLAIM` |
//!
//! Ours on every kernel, as the kernel's counterparts lack what the log needs:
//! - `completion.rs`: 7.3's `sync::Completion` has `complete_all` and an
//!   untimed wait only; the transfer layer completes one waiter, re-arms the
//!   completion between requests and waits uninterruptibly with a timeout.
//! - `delayed_work.rs`: 7.3's `workqueue::DelayedWork` is queued by handing
//!   over an `Arc` or a `KBox` (the log is owned by device-mapper), and
//!   neither cancels, cancels synchronously nor flushes; and 7.3 cannot
//!   allocate a `WQ_MEM_RECLAIM` workqueue, which work on the writeback path
//!   needs.
//!
//! Differences absorbed without a flag, where every kernel accepts one
//! spelling: `kernel::build_error!` (a function on 6.12, a macro later, the
//! macro exists on all); the module author is `MODULE_AUTHOR` in
//! `helpers.c` (6.12's `module!` has `author`, later ones `authors`);
//! `ForeignOwnable::into_foreign` returns `*const` on 6.12 and `*mut` later
//! (`dirty_log.rs` binds it to a `*const`); the pin-init macros of the
//! prelude (from the `pin_init` crate since 7.x) are used the same way.

use kernel::{prelude::*, types::Opaque};

#[cfg(not(dmlu_spinlock_irq))]
#[path = "spinlock_irq.rs"]
pub(crate) mod spinlock_irq;

#[cfg(all(dmlu_kunit, dmlu_kunit_tests))]
#[path = "kunit.rs"]
mod kunit;

#[cfg(dmlu_spinlock_irq)]
pub(crate) use kernel::sync::{new_spinlock_irq, SpinLockIrq};
#[cfg(not(dmlu_spinlock_irq))]
pub(crate) use spinlock_irq::{new_spinlock_irq, SpinLockIrq};

/// Load-time checks of what this file supplies in place of the kernel's: on
/// lockdep kernels without the kernel's `SpinLockIrq` (6.12), that ours keeps
/// interrupts disabled until its last guard goes.
pub(crate) fn self_test() -> Result {
    #[cfg(all(not(dmlu_spinlock_irq), CONFIG_PROVE_LOCKING))]
    spinlock_irq::self_test()?;
    Ok(())
}

/// An initialiser of an `Opaque<T>` that calls `init_func` with a pointer to
/// the uninitialised `T`, in its final, pinned place. On error the `T` is
/// left as `init_func` left it; `Opaque` drops nothing.
#[cfg(dmlu_try_ffi_init)]
pub(crate) fn try_ffi_init<T, E>(
    init_func: impl FnOnce(*mut T) -> Result<(), E>,
) -> impl PinInit<Opaque<T>, E> {
    Opaque::try_ffi_init(init_func)
}

/// An initialiser of an `Opaque<T>` that calls `init_func` with a pointer to
/// the uninitialised `T`, in its final, pinned place. On error the `T` is
/// left as `init_func` left it; `Opaque` drops nothing.
#[cfg(not(dmlu_try_ffi_init))]
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
#[cfg(dmlu_errno_eproto)]
#[allow(non_snake_case)]
pub(crate) fn EPROTO() -> Error {
    kernel::error::code::EPROTO
}

/// `EPROTO`: a reply that breaks the protocol.
#[cfg(not(dmlu_errno_eproto))]
#[allow(non_snake_case)]
pub(crate) fn EPROTO() -> Error {
    Error::from_errno(-(crate::bindings::EPROTO as kernel::ffi::c_int))
}

/// Whether `e` is `ENOBUFS`: a netlink listener's queue was full.
#[cfg(dmlu_errno_enobufs)]
pub(crate) fn is_enobufs(e: Error) -> bool {
    e == ENOBUFS
}

/// Whether `e` is `ENOBUFS`: a netlink listener's queue was full.
#[cfg(not(dmlu_errno_enobufs))]
pub(crate) fn is_enobufs(e: Error) -> bool {
    e.to_errno() == -(crate::bindings::ENOBUFS as kernel::ffi::c_int)
}

/// The bytes of `s`, without the NUL.
#[cfg(dmlu_core_cstr)]
pub(crate) fn cstr_bytes(s: &CStr) -> &[u8] {
    s.to_bytes()
}

/// The bytes of `s`, without the NUL.
#[cfg(not(dmlu_core_cstr))]
pub(crate) fn cstr_bytes(s: &kernel::str::CStr) -> &[u8] {
    s.as_bytes()
}

/// Since 7.x, `pr_*!` format `{}` arguments with `kernel::fmt::Display`, which
/// forwards to `core::fmt::Display` only for the kernel's own types: these
/// are ours that the log prints.
#[cfg(dmlu_kernel_fmt)]
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
        crate::reply::Fault,
        crate::table_args::ArgsError,
        crate::transfer::ShortUuid<'_>,
        crate::wire::ParseError,
    );
}
