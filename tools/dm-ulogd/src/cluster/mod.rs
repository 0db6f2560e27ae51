// SPDX-License-Identifier: GPL-2.0

//! Cluster mode (`dm-ulogd --cluster`): one log kept coherent across the
//! machines that share a mirror, over corosync's closed process groups.
//!
//! Layers, bottom up:
//! - [`wire`]: what the members of a group send each other;
//! - [`replica`]: the state every member holds a copy of (pure);
//! - [`node`]: one node's side of one log: kernel requests in, effects out
//!   (pure);
//! - [`transport`]: the totally ordered group service; [`cpg`] implements
//!   it over corosync (feature `cluster`), the tests over a simulated bus;
//! - [`store`]: the node's clustered logs, requests to effects to the
//!   transport; [`server`]: the daemon loop.

pub mod node;
pub mod replica;
pub mod server;
pub mod store;
pub mod transport;
pub mod wire;

#[cfg(feature = "cluster")]
pub mod cpg;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
