// SPDX-License-Identifier: GPL-2.0

//! Cluster mode (`dm-ulogd --cluster`): one log kept coherent across the
//! machines that share a mirror, over corosync's closed process groups,
//! with corosync's quorum deciding which partition may change it.
//!
//! Layers, bottom up:
//! - [`wire`]: what the members of a group send each other;
//! - [`group`]: one log's group on this node: the shared state, the rounds
//!   that keep every copy equal across joins, departures and partitions,
//!   the quorum gate, and the kernel's requests in, effects out (pure but
//!   for the log device);
//! - [`transport`]: the totally ordered group service and the quorum;
//!   [`cpg`] implements it over corosync (feature `cluster`), the tests
//!   over a simulated bus;
//! - the store ([`crate::store::cluster`]) routes requests and events to
//!   the groups; the server ([`crate::server`]) runs both modes.

pub mod group;
pub mod transport;
pub mod wire;

#[cfg(feature = "cluster")]
#[allow(unsafe_code)]
pub mod cpg;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
