// SPDX-License-Identifier: GPL-2.0

//! dm-ulogd: serves device-mapper `userspace` dirty logs on one machine,
//! speaking request version 3 over the netlink connector, with cmirrord's
//! constructor arguments (`clustered-core`, `clustered-disk`).
//!
//! Layers, bottom up:
//! - [`bitmap`], [`ctr_args`], [`disk_format`]: pure building blocks;
//! - [`log`]: one log's state machine (pure, transport-free, so cluster mode
//!   can later drive it from totally ordered messages);
//! - [`log_device`], [`state_file`]: the log device and the restart state;
//! - [`store`]: the (uuid, luid) table and request dispatch;
//! - [`server`], [`control`], [`stats`], [`logging`], [`cli`]: the daemon;
//! - [`cluster`]: `--cluster`, logs kept coherent across nodes (corosync).
//!
//! All `unsafe` is in [`sys`] (and in `ulog_proto::socket`).

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bitmap;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod ctr_args;
pub mod disk_format;
pub mod log_device;
pub mod log_state;
pub mod logging;
pub mod member;
pub mod server;
pub mod state_file;
pub mod stats;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod wire_codec;

#[cfg(test)]
mod test_util;
