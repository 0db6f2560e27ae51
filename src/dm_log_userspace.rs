// SPDX-License-Identifier: GPL-2.0

//! dm-log-userspace: the device-mapper `userspace` dirty log, in Rust.
//!
//! A mirror table with a `userspace` log hands every log operation to a
//! server in userspace (`dm-ulogd`, or LVM2's `cmirrord`) over the netlink
//! connector, speaking the request protocol version 3 of
//! `include/uapi/linux/dm-log-userspace.h`, byte for byte.
//!
//! Layers, bottom up:
//! - abstractions, the only files with `unsafe`: [`bindings`],
//!   [`dirty_log`] (the log type and its instances), [`connector`],
//!   [`completion`], [`mempool`], [`delayed_work`], [`time`], [`random`],
//!   and [`compat`], what differs between Linux 6.12 and 7.3 (an irq-safe
//!   spinlock, error codes, C strings; the KUnit suites of the helpers);
//! - the transfer layer, [`transfer`]: requests, waiters and replies, over
//!   pure helpers usable on the host too: [`waiting`], [`reply`], [`resend`];
//! - the log, [`log`], over pure helpers usable on the host too: [`wire`],
//!   [`table_args`], [`geometry`], [`flush_plan`], [`flush_send`],
//!   [`lazy_flush`], [`replay`], [`luid`], [`region_set`], [`hints`],
//!   [`in_sync_memo`].

use kernel::{c_str, prelude::*, sync::Arc};

mod bindings;
mod compat;
mod completion;
mod connector;
mod delayed_work;
mod dirty_log;
mod flush_plan;
mod flush_send;
mod geometry;
mod hints;
mod in_sync_memo;
mod lazy_flush;
mod log;
mod luid;
mod mempool;
mod random;
mod ratelimit;
mod region_set;
mod replay;
mod reply;
mod resend;
mod table_args;
mod time;
mod transfer;
mod waiting;
pub mod wire;

/// The module's version, from the `VERSION` file (via `Kbuild`).
const VERSION: &str = env!("DMLU_VERSION");

module! {
    type: DmLogUserspace,
    name: "dm_log_userspace",
    description: "device-mapper userspace dirty log link (Rust)",
    license: "GPL",
    alias: ["dm-log-userspace"],
}

/// The loaded module: the connector callback and the registered log type.
struct DmLogUserspace {
    // Dropped first: unregisters the log type before the callback goes.
    _log_type: Pin<KBox<dirty_log::Registration<log::UserspaceLog>>>,
    connector: connector::Registration<Arc<transfer::Transfer>>,
}

impl kernel::Module for DmLogUserspace {
    fn init(module: &'static ThisModule) -> Result<Self> {
        compat::self_test()?;
        let transfer = Arc::pin_init(transfer::Transfer::new(), GFP_KERNEL)?;
        let connector = connector::Registration::new(
            wire::CN_IDX_DM,
            wire::CN_VAL_DM_USERSPACE_LOG,
            c_str!("dmlogusr"),
            transfer.clone(),
        )
        .inspect_err(|e| {
            pr_warn!(
                "unable to initialize userspace log communications: {:?}\n",
                e
            )
        })?;
        let shared = log::Shared::new(transfer, random::random_u64());
        let log_type = KBox::pin_init(
            dirty_log::Registration::new(log::TYPE_NAME, module, shared),
            GFP_KERNEL,
        )
        .inspect_err(|e| pr_warn!("couldn't register userspace dirty log type: {:?}\n", e))?;
        pr_info!(
            "version {} loaded (request protocol version {})\n",
            VERSION,
            wire::REQUEST_VERSION
        );
        Ok(Self {
            _log_type: log_type,
            connector,
        })
    }
}

impl Drop for DmLogUserspace {
    fn drop(&mut self) {
        let refused = self.connector.handler().refused_summary();
        pr_info!(
            "version {} unloaded; messages ignored: {} unprivileged, {} malformed, {} unmatched\n",
            VERSION,
            refused.unprivileged,
            refused.malformed,
            refused.unmatched
        );
    }
}
