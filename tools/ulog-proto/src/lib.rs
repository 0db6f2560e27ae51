// SPDX-License-Identifier: GPL-2.0

//! The dm userspace log protocol, for userspace programs.
//!
//! [`wire`] is the kernel module's own `src/wire.rs`, compiled here too, so
//! the module and every tool encode one definition of the format.
//! [`socket`] is the netlink connector socket every userspace peer (log
//! server, test server, fuzzer, listener) talks to the kernel through.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[path = "../../../src/wire.rs"]
pub mod wire;

#[allow(unsafe_code)]
pub mod socket;
