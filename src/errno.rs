// SPDX-License-Identifier: GPL-2.0

//! Error codes that `kernel::error::code` of Linux 6.12 does not declare.

use crate::bindings;
use kernel::{error::Error, ffi::c_int};

/// `EPROTO`: a reply that breaks the protocol.
#[allow(non_snake_case)]
pub(crate) fn EPROTO() -> Error {
    Error::from_errno(-(bindings::EPROTO as c_int))
}

/// Whether `e` is `ENOBUFS`: a netlink listener's queue was full.
pub(crate) fn is_enobufs(e: Error) -> bool {
    e.to_errno() == -(bindings::ENOBUFS as c_int)
}
