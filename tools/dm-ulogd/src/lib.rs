// SPDX-License-Identifier: GPL-2.0

//! dm-ulogd: serves device-mapper `userspace` dirty logs, on one machine
//! or (with `--cluster`) coherently across the machines of a corosync
//! cluster, speaking request version 3 over the netlink connector, with
//! cmirrord's constructor arguments (`clustered-core`, `clustered-disk`).
//!
//! Layers, bottom up:
//! - [`bitmap`], [`ctr_args`], [`disk_format`], [`request`]: pure building
//!   blocks;
//! - [`log_state`]: one log's state, for one node or shared by a cluster
//!   (pure);
//! - [`log_device`], [`state_file`]: the log device and the restart state;
//! - [`cluster`]: each log's group across the nodes (the protocol, the
//!   transport over corosync);
//! - [`store`]: the (uuid, luid) table and request dispatch, in both modes;
//! - [`server`], [`control`], [`stats`], [`logging`], [`cli`]: the daemon.
//!
//! The only `unsafe`: mapping a state file (memmap2 cannot promise that no
//! other process truncates it: the state directory's lock does), lending
//! corosync's descriptors to poll (`cluster::cpg`), and the netlink socket
//! in `ulog_proto::socket`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bitmap;
pub mod cli;
pub mod cluster;
mod compat;
pub mod control;
pub mod ctr_args;
pub mod disk_format;
pub mod log_device;
pub mod log_state;
pub mod logging;
pub mod member;
pub mod request;
pub mod server;
pub mod signals;
pub mod state_file;
pub mod stats;
pub mod store;
pub mod wire_codec;

#[cfg(test)]
mod test_util;
