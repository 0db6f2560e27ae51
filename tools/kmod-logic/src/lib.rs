// SPDX-License-Identifier: GPL-2.0

//! The kernel module's pure logic, compiled on the host so `cargo test` can
//! run the unit tests written inside those files. They use `core` only; the
//! module compiles the very same files.

// Items used by the module but not by these tests.
#![allow(dead_code)]

pub use ulog_proto::wire;

#[path = "../../../src/flush_plan.rs"]
mod flush_plan;
#[path = "../../../src/flush_send.rs"]
mod flush_send;
#[path = "../../../src/geometry.rs"]
mod geometry;
#[path = "../../../src/hints.rs"]
mod hints;
#[path = "../../../src/in_sync_memo.rs"]
mod in_sync_memo;
#[path = "../../../src/lazy_flush.rs"]
mod lazy_flush;
#[path = "../../../src/luid.rs"]
mod luid;
#[path = "../../../src/region_set.rs"]
mod region_set;
#[path = "../../../src/replay.rs"]
mod replay;
#[path = "../../../src/reply.rs"]
mod reply;
#[path = "../../../src/resend.rs"]
mod resend;
#[path = "../../../src/table_args.rs"]
mod table_args;
#[path = "../../../src/waiting.rs"]
mod waiting;
