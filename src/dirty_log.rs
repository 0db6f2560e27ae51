// SPDX-License-Identifier: GPL-2.0

//! Device-mapper dirty log types.
//!
//! A log type implements [`DirtyLog`]; [`Registration`] registers a
//! `struct dm_dirty_log_type` whose operations call it. Each log the mirror
//! target constructs is a [`Log<T>`]: the implementation's state plus what
//! the abstraction owns for it (the target it serves, a device it holds, a
//! delayed work item on the type's workqueue). The implementation never
//! holds a raw kernel handle, so none can outlive what it refers to.
//!
//! C header: [`include/linux/dm-dirty-log.h`](srctree/include/linux/dm-dirty-log.h)

use crate::bindings;
use crate::compat;
use crate::delayed_work::{DelayedWorkItem, WithDelayedWork, Workqueue};
use crate::time::Jiffies;
use core::{
    fmt,
    marker::PhantomData,
    ops::Deref,
    ptr::{self, NonNull},
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    error::{from_result, to_result},
    ffi::{c_char, c_int, c_uint},
    prelude::*,
    str::CStr,
    sync::Arc,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// What a status call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusType {
    /// Runtime state (`dmsetup status`).
    Info,
    /// The constructor line (`dmsetup table`).
    Table,
    /// The measurement line for IMA.
    Ima,
}

/// The operations of a dirty log type. Methods run in process context and
/// may sleep, except where noted; see `include/linux/dm-dirty-log.h`.
#[vtable]
pub(crate) trait DirtyLog: Sized + Send + Sync + 'static {
    /// State shared by every log of the type, given to [`DirtyLog::new`].
    type Shared: Send + Sync + 'static;

    /// Parses the table arguments (after the log type and count) of a log
    /// for a target of `target_sectors`, and returns the initialiser of the
    /// log. Must not contact anything yet: the log may still fail to be
    /// created without [`DirtyLog::start`] being called.
    fn new(
        shared: &Self::Shared,
        target_sectors: u64,
        args: &[&CStr],
    ) -> Result<impl PinInit<Self, Error>>;

    /// Starts the log once constructed; an error undoes the table load.
    fn start(log: &Log<Self>, ctr: &CtrContext<'_>) -> Result;

    /// Called before the log is destroyed (its deferred work still usable).
    fn dtr(_log: &Log<Self>) {}

    /// The mirror is about to suspend.
    fn presuspend(_log: &Log<Self>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The mirror has suspended: no more I/O.
    fn postsuspend(_log: &Log<Self>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The mirror resumes.
    fn resume(_log: &Log<Self>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Region size in sectors.
    fn region_size(log: &Log<Self>) -> u32;

    /// Whether `region` is clean (not being written).
    fn is_clean(log: &Log<Self>, region: u64) -> bool;

    /// Whether `region` is in sync; `EWOULDBLOCK` when it cannot tell without
    /// blocking and `can_block` is false (`can_block == false` callers may be
    /// in atomic context).
    fn in_sync(log: &Log<Self>, region: u64, can_block: bool) -> Result<bool>;

    /// Commits the marks and clears made since the last flush.
    fn flush(log: &Log<Self>) -> Result;

    /// Marks `region` dirty. Called in atomic context: must not sleep, and
    /// cannot fail.
    fn mark_region(log: &Log<Self>, region: u64);

    /// Marks `region` clean. Must not sleep; may be dropped (costs a resync).
    fn clear_region(log: &Log<Self>, region: u64);

    /// A region this node should recover, if any.
    fn get_resync_work(log: &Log<Self>) -> Result<Option<u64>>;

    /// Records whether `region` was recovered.
    fn set_region_sync(log: &Log<Self>, region: u64, in_sync: bool);

    /// Number of regions in sync.
    fn sync_count(log: &Log<Self>) -> u64;

    /// Writes the status line of kind `kind`.
    fn status(log: &Log<Self>, kind: StatusType, out: &mut StatusWriter<'_>);

    /// Whether another node is recovering `region` (cluster logs).
    fn is_remote_recovering(_log: &Log<Self>, _region: u64) -> bool {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Runs the work scheduled with [`Log::schedule_deferred`], in process
    /// context on the type's workqueue.
    fn deferred(_log: &Log<Self>) {}
}

/// A registered dirty log type.
///
/// # Invariants
///
/// `ty` is registered with device-mapper from the end of `new` until `drop`,
/// and its operations are those of `T`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: DirtyLog> {
    shared: T::Shared,
    /// The workqueue the deferred work of every log of the type runs on.
    ///
    /// `WQ_MEM_RECLAIM`: `postsuspend` and `dtr` wait for a log's deferred
    /// work to run, and reclaim may wait on writeback to that mirror, so the
    /// work must not depend on creating a worker; the system workqueues have
    /// no rescuer and cannot promise that. One for all logs, not one per log
    /// as the C module has: a rescuer only steps in when no worker can be
    /// created, and then runs the logs' work one at a time, which costs
    /// little as every log's deferred work waits on the same thing, the one
    /// log server; per-log queues would cost a rescuer thread per mirror.
    queue: Arc<Workqueue>,
    #[pin]
    ty: Opaque<bindings::dm_dirty_log_type>,
}

// SAFETY: After registration device-mapper only reads `ty`, under its own
// lock; `shared` is `Send`.
unsafe impl<T: DirtyLog> Send for Registration<T> {}
// SAFETY: As above; `shared` is `Sync`.
unsafe impl<T: DirtyLog> Sync for Registration<T> {}

impl<T: DirtyLog> Registration<T> {
    /// Registers log type `name` of `module`, handing `shared` to every log.
    pub(crate) fn new(
        name: &'static CStr,
        module: &'static ThisModule,
        shared: T::Shared,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            shared,
            queue: Arc::new(Workqueue::new(kernel::c_str!("dmlogd"))?, GFP_KERNEL)?,
            ty <- compat::try_ffi_init(move |ty: *mut bindings::dm_dirty_log_type| {
                // SAFETY: `ty` is the final, pinned location of the type. It is
                // fully written before being registered; on failure it is left
                // unregistered and needs no drop (`Opaque` drops nothing).
                unsafe {
                    ty.write(Self::vtable(name, module));
                    to_result(bindings::dm_dirty_log_type_register(ty))
                }
            }),
        })
    }

    /// The `struct dm_dirty_log_type` for `T`.
    fn vtable(name: &'static CStr, module: &'static ThisModule) -> bindings::dm_dirty_log_type {
        bindings::dm_dirty_log_type {
            name: name.as_char_ptr(),
            module: module.as_ptr(),
            ctr: Some(Self::ctr_callback),
            dtr: Some(Self::dtr_callback),
            presuspend: if T::HAS_PRESUSPEND {
                Some(Self::presuspend_callback)
            } else {
                None
            },
            postsuspend: if T::HAS_POSTSUSPEND {
                Some(Self::postsuspend_callback)
            } else {
                None
            },
            resume: if T::HAS_RESUME {
                Some(Self::resume_callback)
            } else {
                None
            },
            get_region_size: Some(Self::get_region_size_callback),
            is_clean: Some(Self::is_clean_callback),
            in_sync: Some(Self::in_sync_callback),
            flush: Some(Self::flush_callback),
            mark_region: Some(Self::mark_region_callback),
            clear_region: Some(Self::clear_region_callback),
            get_resync_work: Some(Self::get_resync_work_callback),
            set_region_sync: Some(Self::set_region_sync_callback),
            get_sync_count: Some(Self::get_sync_count_callback),
            status: Some(Self::status_callback),
            is_remote_recovering: if T::HAS_IS_REMOTE_RECOVERING {
                Some(Self::is_remote_recovering_callback)
            } else {
                None
            },
            ..Default::default()
        }
    }

    /// The log behind `dm_log`.
    ///
    /// # Safety
    ///
    /// `dm_log` is a log of this type that `ctr_callback` constructed and
    /// `dtr_callback` has not destroyed; the result is not used after that.
    unsafe fn log<'a>(dm_log: *mut bindings::dm_dirty_log) -> Pin<&'a Log<T>> {
        // SAFETY: `ctr_callback` set `context` with `into_foreign`, and the
        // caller guarantees `dtr_callback` has not taken it back yet.
        unsafe { <Pin<KBox<Log<T>>> as ForeignOwnable>::borrow((*dm_log).context) }
    }

    /// # Safety
    ///
    /// Called by device-mapper with `dm_log->type` pointing to the `ty` of a
    /// live `Registration<T>`, `ti` a live target and `argv` holding `argc`
    /// valid C strings, all valid for the duration of the call.
    unsafe extern "C" fn ctr_callback(
        dm_log: *mut bindings::dm_dirty_log,
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> c_int {
        from_result(|| {
            // SAFETY: `type` points into a live `Registration<T>`, which it
            // reaches by subtracting the offset of `ty`.
            let reg = unsafe {
                &*(*dm_log)
                    .type_
                    .cast::<u8>()
                    .sub(core::mem::offset_of!(Self, ty))
                    .cast::<Self>()
            };
            let argc = usize::try_from(argc)?;
            let mut args = KVec::with_capacity(argc, GFP_KERNEL)?;
            for i in 0..argc {
                // SAFETY: `argv` holds `argc` valid C strings.
                args.push(unsafe { CStr::from_char_ptr(*argv.add(i)) }, GFP_KERNEL)?;
            }
            let target = NonNull::new(ti).ok_or(EINVAL)?;
            // SAFETY: `ti` is a live target, per the safety requirements.
            let target_sectors = unsafe { bindings::dmlu_target_len(ti) };
            let inner = T::new(&reg.shared, target_sectors, &args)?;
            let log = KBox::pin_init(
                WithDelayedWork::new(
                    reg.queue.clone(),
                    try_pin_init!(Instance {
                        target,
                        device: AtomicPtr::new(ptr::null_mut()),
                        inner <- inner,
                    }? Error),
                ),
                GFP_KERNEL,
            )?;
            T::start(
                &log,
                &CtrContext {
                    target,
                    device: &log.device,
                },
            )?;
            // `*const` on 6.12, `*mut` on 7.3: bound to the former.
            let context: *const core::ffi::c_void = log.into_foreign();
            // SAFETY: `dm_log` is valid for writes; device-mapper keeps the
            // context until it calls `dtr_callback`, which takes it back.
            unsafe { (*dm_log).context = context.cast_mut() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// As for [`Self::log`]; called once, last, for each constructed log.
    unsafe extern "C" fn dtr_callback(dm_log: *mut bindings::dm_dirty_log) {
        // SAFETY: Per the safety requirements the log is live.
        T::dtr(unsafe { &Self::log(dm_log) });
        // SAFETY: `context` came from `into_foreign` in `ctr_callback`, and
        // device-mapper makes no other call for this log after this one.
        drop(unsafe { <Pin<KBox<Log<T>>> as ForeignOwnable>::from_foreign((*dm_log).context) });
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn presuspend_callback(dm_log: *mut bindings::dm_dirty_log) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        from_result(|| T::presuspend(unsafe { &Self::log(dm_log) }).map(|()| 0))
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn postsuspend_callback(dm_log: *mut bindings::dm_dirty_log) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        from_result(|| T::postsuspend(unsafe { &Self::log(dm_log) }).map(|()| 0))
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn resume_callback(dm_log: *mut bindings::dm_dirty_log) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        from_result(|| T::resume(unsafe { &Self::log(dm_log) }).map(|()| 0))
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn get_region_size_callback(dm_log: *mut bindings::dm_dirty_log) -> u32 {
        // SAFETY: Per the safety requirements the log is live.
        T::region_size(unsafe { &Self::log(dm_log) })
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn is_clean_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
    ) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        T::is_clean(unsafe { &Self::log(dm_log) }, region).into()
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn in_sync_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
        can_block: c_int,
    ) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        let log = unsafe { Self::log(dm_log) };
        from_result(|| T::in_sync(&log, region, can_block != 0).map(c_int::from))
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn flush_callback(dm_log: *mut bindings::dm_dirty_log) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        from_result(|| T::flush(unsafe { &Self::log(dm_log) }).map(|()| 0))
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn mark_region_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
    ) {
        // SAFETY: Per the safety requirements the log is live.
        T::mark_region(unsafe { &Self::log(dm_log) }, region)
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn clear_region_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
    ) {
        // SAFETY: Per the safety requirements the log is live.
        T::clear_region(unsafe { &Self::log(dm_log) }, region)
    }

    /// # Safety
    ///
    /// As for [`Self::log`]; `region` is valid for writes.
    unsafe extern "C" fn get_resync_work_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: *mut bindings::sector_t,
    ) -> c_int {
        from_result(|| {
            // SAFETY: Per the safety requirements the log is live.
            match T::get_resync_work(unsafe { &Self::log(dm_log) })? {
                Some(r) => {
                    // SAFETY: The caller guarantees `region` is writable.
                    unsafe { region.write(r) };
                    Ok(1)
                }
                None => Ok(0),
            }
        })
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn set_region_sync_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
        in_sync: c_int,
    ) {
        // SAFETY: Per the safety requirements the log is live.
        T::set_region_sync(unsafe { &Self::log(dm_log) }, region, in_sync != 0)
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn get_sync_count_callback(
        dm_log: *mut bindings::dm_dirty_log,
    ) -> bindings::sector_t {
        // SAFETY: Per the safety requirements the log is live.
        T::sync_count(unsafe { &Self::log(dm_log) })
    }

    /// # Safety
    ///
    /// As for [`Self::log`]; `result` is valid for writes of `maxlen` bytes.
    unsafe extern "C" fn status_callback(
        dm_log: *mut bindings::dm_dirty_log,
        status_type: bindings::status_type_t,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        let kind = match status_type {
            bindings::status_type_t_STATUSTYPE_INFO => StatusType::Info,
            bindings::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
            _ => StatusType::Ima,
        };
        let Ok(maxlen) = usize::try_from(maxlen) else {
            return 0;
        };
        // SAFETY: The caller guarantees `result` is writable for `maxlen`
        // bytes for the duration of the call.
        let mut out = unsafe { StatusWriter::new(result.cast(), maxlen) };
        // SAFETY: Per the safety requirements the log is live.
        T::status(unsafe { &Self::log(dm_log) }, kind, &mut out);
        c_int::try_from(out.len).unwrap_or(c_int::MAX)
    }

    /// # Safety
    ///
    /// As for [`Self::log`].
    unsafe extern "C" fn is_remote_recovering_callback(
        dm_log: *mut bindings::dm_dirty_log,
        region: bindings::sector_t,
    ) -> c_int {
        // SAFETY: Per the safety requirements the log is live.
        T::is_remote_recovering(unsafe { &Self::log(dm_log) }, region).into()
    }
}

#[pinned_drop]
impl<T: DirtyLog> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `ty` was registered in `new` (type invariant). No log of it
        // exists: each holds a reference on the module, which is being
        // unloaded or was never loaded.
        unsafe { bindings::dm_dirty_log_type_unregister(self.ty.get()) };
    }
}

/// One log instance, as device-mapper holds it: the implementation's state
/// `T`, what the abstraction holds for it, and its deferred work, which the
/// log's drop cancels (waiting for it if it runs) before anything else goes.
/// Dereferences to `T`.
pub(crate) type Log<T> = WithDelayedWork<Instance<T>>;

/// The state of a [`Log<T>`] its deferred work runs on. Dereferences to `T`.
///
/// # Invariants
///
/// - `target` is the target the log was constructed for; device-mapper
///   destroys the log before the target.
/// - `device` is null or a device obtained with `dm_get_device` for `target`
///   and not yet put.
#[pin_data(PinnedDrop)]
pub(crate) struct Instance<T: DirtyLog> {
    target: NonNull<bindings::dm_target>,
    device: AtomicPtr<bindings::dm_dev>,
    #[pin]
    inner: T,
}

// SAFETY: `T` is `Send`; the target and the device are only used through
// functions that may be called from any thread.
unsafe impl<T: DirtyLog> Send for Instance<T> {}
// SAFETY: `T` is `Sync`; the methods using the target and the device are
// safe to call concurrently.
unsafe impl<T: DirtyLog> Sync for Instance<T> {}

impl<T: DirtyLog> Deref for Instance<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: DirtyLog> Instance<T> {
    /// Length of the mirror target, in sectors.
    pub(crate) fn target_len(&self) -> u64 {
        // SAFETY: `target` is live while the log is (type invariant).
        unsafe { bindings::dmlu_target_len(self.target.as_ptr()) }
    }

    /// Raises a table event, so userspace (dmeventd) looks at the status.
    ///
    /// May sleep (device-mapper takes a mutex and calls the target's event
    /// function): process context only, with no spinlock held.
    pub(crate) fn raise_event(&self) {
        // SAFETY: `target` is live while the log is (type invariant).
        unsafe { bindings::dmlu_target_event(self.target.as_ptr()) }
    }
}

impl<T: DirtyLog> Log<T> {
    /// Schedules [`DirtyLog::deferred`] to run after `delay` jiffies, unless
    /// it is already scheduled. Returns whether it was scheduled now.
    pub(crate) fn schedule_deferred(&self, delay: Jiffies) -> bool {
        self.queue(delay)
    }

    /// Cancels a scheduled [`DirtyLog::deferred`] that has not started.
    pub(crate) fn cancel_deferred(&self) -> bool {
        self.cancel()
    }

    /// Runs a scheduled [`DirtyLog::deferred`] now and waits for it. Must not
    /// be called from [`DirtyLog::deferred`] itself.
    pub(crate) fn run_deferred_now(&self) {
        self.flush();
    }
}

impl<T: DirtyLog> DelayedWorkItem for Instance<T> {
    fn run(this: &Log<T>) {
        T::deferred(this)
    }
}

#[pinned_drop]
impl<T: DirtyLog> PinnedDrop for Instance<T> {
    fn drop(self: Pin<&mut Self>) {
        let dev = self.device.swap(ptr::null_mut(), Ordering::AcqRel);
        if !dev.is_null() {
            // SAFETY: `dev` was obtained for `target` by `dm_get_device` and
            // not put (type invariant); the target is still live.
            unsafe { bindings::dm_put_device(self.target.as_ptr(), dev) };
        }
    }
}

/// What a log may do only while it is being constructed.
pub(crate) struct CtrContext<'a> {
    target: NonNull<bindings::dm_target>,
    device: &'a AtomicPtr<bindings::dm_dev>,
}

impl CtrContext<'_> {
    /// Opens the device `path` (e.g. `"253:4"`) for the table, with the
    /// table's mode, and keeps it until the log is destroyed.
    pub(crate) fn hold_device(&self, path: &CStr) -> Result {
        let mut dev = ptr::null_mut();
        // SAFETY: `target` is the live target of the table being constructed,
        // `path` a valid C string, and `dev` valid for writes.
        to_result(unsafe {
            bindings::dmlu_target_get_device(self.target.as_ptr(), path.as_char_ptr(), &mut dev)
        })?;
        let old = self.device.swap(dev, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` was obtained for this target and is no longer held.
            unsafe { bindings::dm_put_device(self.target.as_ptr(), old) };
        }
        Ok(())
    }
}

/// The buffer a status line is written to, as `DMEMIT` does: output past the
/// end is cut, and the text is always NUL-terminated.
///
/// # Invariants
///
/// `buf` is valid for writes of `cap` bytes for `'a`, and `len < cap` unless
/// `cap == 0`; `buf[len]` is NUL when `cap > 0`.
pub(crate) struct StatusWriter<'a> {
    buf: *mut u8,
    cap: usize,
    len: usize,
    _buf: PhantomData<&'a mut [u8]>,
}

impl StatusWriter<'_> {
    /// # Safety
    ///
    /// `buf` must be valid for writes of `cap` bytes for the writer's life.
    unsafe fn new(buf: *mut u8, cap: usize) -> Self {
        if cap > 0 {
            // SAFETY: `buf` is writable for `cap > 0` bytes.
            unsafe { buf.write(0) };
        }
        Self {
            buf,
            cap,
            len: 0,
            _buf: PhantomData,
        }
    }

    /// Bytes that can still be written.
    pub(crate) fn remaining(&self) -> usize {
        self.cap.saturating_sub(self.len + 1)
    }

    /// Appends `bytes`, up to the first NUL, cut to what fits.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) {
        let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
        let n = text.len().min(self.remaining());
        if n == 0 {
            return;
        }
        // SAFETY: `len + n + 1 <= cap`, so the copy and the NUL stay inside
        // the buffer (type invariant), which `text` cannot overlap.
        unsafe {
            ptr::copy_nonoverlapping(text.as_ptr(), self.buf.add(self.len), n);
            self.len += n;
            self.buf.add(self.len).write(0);
        }
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
