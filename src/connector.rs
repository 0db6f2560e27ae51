// SPDX-License-Identifier: GPL-2.0

//! The netlink connector: a callback for the messages userspace sends to one
//! connector id, and multicasting messages to the listeners of a group.
//!
//! C header: [`include/linux/connector.h`](srctree/include/linux/connector.h)

use crate::bindings;
use crate::wire::{CnHeader, CN_MSG_SIZE, HEADER_SIZE, MAX_REQUEST_PAYLOAD};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use kernel::{error::to_result, prelude::*, str::CStr};

/// Receives the messages userspace sends to a registered connector id.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Called once per message, in the context of the task that sent it
    /// (which may sleep in `sendmsg`, but the handler should not).
    fn receive(&self, msg: &Received<'_>);
}

/// One message from userspace, with `body` exactly `header.len` bytes long
/// (the connector core checks that length against the netlink message).
pub(crate) struct Received<'a> {
    /// The `struct cn_msg` header.
    pub(crate) header: CnHeader,
    /// The payload after the header.
    pub(crate) body: &'a [u8],
    /// Whether the sender has `CAP_SYS_ADMIN` as netlink decides it
    /// (`netlink_capable`): the sending task has it, and so did the task that
    /// opened the sending socket, unless the message was sent to an address
    /// the sender named (`write(2)` names none). A privileged program tricked
    /// into writing on an unprivileged process's socket (CVE-2014-0181) is
    /// not privileged.
    pub(crate) privileged: bool,
}

/// The handler of the live [`Registration`], or null. The connector callback
/// has no context argument, so this is how it finds its handler; it is also
/// why a module can hold only one registration at a time.
static ACTIVE: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(ptr::null_mut());

/// Number of callbacks currently executing the handler; `drop` waits for
/// zero after clearing [`ACTIVE`].
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// A registered connector callback delivering messages for one id to `H`.
///
/// # Invariants
///
/// While `self` lives, `callback::<H>` is registered with the connector for
/// `id`, and [`ACTIVE`] points to `*handler`, which is not moved (it is boxed)
/// nor freed until `drop` has unregistered the callback, cleared [`ACTIVE`]
/// and waited for [`RUNNING`] to reach zero.
pub(crate) struct Registration<H: Handler> {
    id: bindings::cb_id,
    handler: KBox<H>,
}

impl<H: Handler> Registration<H> {
    /// Registers `handler` for connector id `idx`:`val` under `name` (shown
    /// in `/proc/net/connector`). Fails with `EBUSY` if this module already
    /// holds a registration.
    pub(crate) fn new(idx: u32, val: u32, name: &'static CStr, handler: H) -> Result<Self> {
        let handler = KBox::new(handler, GFP_KERNEL)?;
        let data = ptr::from_ref::<H>(&handler).cast_mut().cast();
        ACTIVE
            .compare_exchange(ptr::null_mut(), data, Ordering::SeqCst, Ordering::SeqCst)
            .map_err(|_| EBUSY)?;
        let id = bindings::cb_id { idx, val };
        // SAFETY: `id` and `name` are valid for reads during the call (the
        // connector copies both), and `callback::<H>` finds its handler
        // through `ACTIVE`, just set to the live, boxed handler.
        let ret =
            unsafe { bindings::cn_add_callback(&id, name.as_char_ptr(), Some(callback::<H>)) };
        if let Err(e) = to_result(ret) {
            ACTIVE.store(ptr::null_mut(), Ordering::SeqCst);
            return Err(e);
        }
        // INVARIANT: the callback is registered and `ACTIVE` points to the box.
        Ok(Self { id, handler })
    }

    /// The registered handler.
    pub(crate) fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: Handler> Drop for Registration<H> {
    fn drop(&mut self) {
        // SAFETY: `id` is the id registered in `new`, per the type invariant.
        unsafe { bindings::cn_del_callback(&self.id) };
        // A sender may already be past the connector's lookup: make it find
        // no handler, then wait out those that got one before `handler` goes.
        ACTIVE.store(ptr::null_mut(), Ordering::SeqCst);
        while RUNNING.load(Ordering::SeqCst) != 0 {
            crate::time::msleep(1);
        }
    }
}

/// The `extern "C"` callback registered by [`Registration::new`].
///
/// # Safety
///
/// Called by the connector core with `msg` pointing to a `struct cn_msg`
/// followed by at least `msg->len` bytes, and `nsp` to the netlink
/// parameters of the message, from its sender, both valid for the duration
/// of the call.
unsafe extern "C" fn callback<H: Handler>(
    msg: *mut bindings::cn_msg,
    nsp: *mut bindings::netlink_skb_parms,
) {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let data = ACTIVE.load(Ordering::SeqCst);
    if !data.is_null() {
        // SAFETY: Only `Registration::<H>::new` registers `callback::<H>` and
        // it stores its `H` in `ACTIVE`; `drop` clears `ACTIVE` before waiting
        // for `RUNNING`, which we incremented before loading `ACTIVE`, so the
        // handler outlives this call.
        let handler = unsafe { &*data.cast::<H>().cast_const() };
        // SAFETY: The caller guarantees `msg` is valid for reads of its
        // header and of `len` payload bytes.
        let (header, body) = unsafe {
            let len = usize::from((*msg).len);
            let raw = core::slice::from_raw_parts(msg.cast::<u8>().cast_const(), CN_MSG_SIZE + len);
            (CnHeader::decode(raw), &raw[CN_MSG_SIZE..])
        };
        // SAFETY: `nsp` is valid (safety requirements). The connector runs
        // callbacks synchronously in the sender's `sendmsg`, which holds the
        // sending socket and its file, and the current task is the sender.
        let privileged = unsafe { bindings::dmlu_netlink_capable(nsp) };
        if let Some(header) = header {
            handler.receive(&Received {
                header,
                body,
                privileged,
            });
        }
    }
    RUNNING.fetch_sub(1, Ordering::SeqCst);
}

/// Size of the largest message [`send`] accepts, headers included.
const SEND_BUFFER_SIZE: usize = CN_MSG_SIZE + HEADER_SIZE + MAX_REQUEST_PAYLOAD;

/// A send buffer aligned for `struct cn_msg`.
#[repr(C, align(8))]
struct SendBuffer([u8; SEND_BUFFER_SIZE]);

/// Multicasts a connector message `header` + `payload` to the listeners of
/// netlink group `header.idx`. Returns `ESRCH` when nobody listens and
/// `EINVAL` for a payload over [`SEND_BUFFER_SIZE`]. Allocates with
/// `GFP_NOIO`: it may sleep, and never recurses into block I/O.
pub(crate) fn send(header: CnHeader, payload: &[u8]) -> Result {
    let mut buf = SendBuffer([0; SEND_BUFFER_SIZE]);
    let body = buf
        .0
        .get_mut(CN_MSG_SIZE..CN_MSG_SIZE + payload.len())
        .ok_or(EINVAL)?;
    body.copy_from_slice(payload);
    let len = u16::try_from(payload.len()).map_err(|_| EINVAL)?;
    CnHeader { len, ..header }
        .encode(&mut buf.0)
        .ok_or(EINVAL)?;
    // SAFETY: `buf` is 8-byte aligned and holds a `struct cn_msg` followed by
    // its `len` payload bytes; `cn_netlink_send` copies them into an skb.
    let ret = unsafe {
        bindings::cn_netlink_send(
            buf.0.as_mut_ptr().cast(),
            0,
            header.idx,
            bindings::DMLU_GFP_NOIO,
        )
    };
    to_result(ret)
}
