// SPDX-License-Identifier: GPL-2.0

//! The userspace log's table arguments, `<uuid> [integrated_flush] <server
//! args...>`: parsing, the CTR string sent to the server, and the table line
//! given back by status. Uses `core` only; compiled on the host too.

use crate::wire::{MAX_REQUEST_PAYLOAD, UUID_LEN};
use core::fmt;

/// The keyword asking for marks to travel inside FLUSH requests.
pub(crate) const INTEGRATED_FLUSH: &[u8] = b"integrated_flush";

/// Why a table's log arguments are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArgsError {
    /// Fewer than three arguments.
    TooFew(usize),
    /// The uuid does not fit `DM_UUID_LEN` with its NUL.
    UuidTooLong(usize),
    /// The CTR string would not fit in one request.
    CtrTooLong(usize),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFew(n) => write!(
                f,
                "too few arguments ({n}): need <uuid> [integrated_flush] <server args...>, at least 3"
            ),
            Self::UuidTooLong(n) => {
                write!(f, "uuid is {n} bytes long, at most {} allowed", UUID_LEN - 1)
            }
            Self::CtrTooLong(n) => write!(
                f,
                "server arguments make a {n}-byte constructor string, at most {} fit in a request",
                MAX_REQUEST_PAYLOAD
            ),
        }
    }
}

/// Parsed log arguments, borrowing the table's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TableArgs<'a> {
    /// The log's uuid, NUL padded as on the wire.
    pub(crate) uuid: [u8; UUID_LEN],
    /// Whether marks travel inside FLUSH requests.
    pub(crate) integrated_flush: bool,
    /// The arguments for the server, after the uuid and the keyword.
    pub(crate) server_args: &'a [&'a [u8]],
    /// Number of table arguments, all of them, as status TABLE repeats it.
    pub(crate) argc: usize,
}

impl<'a> TableArgs<'a> {
    /// Parses the log arguments of a mirror table.
    pub(crate) fn parse(args: &'a [&'a [u8]]) -> Result<Self, ArgsError> {
        let [uuid_arg, rest @ ..] = args else {
            return Err(ArgsError::TooFew(0));
        };
        if args.len() < 3 {
            return Err(ArgsError::TooFew(args.len()));
        }
        if uuid_arg.len() >= UUID_LEN {
            return Err(ArgsError::UuidTooLong(uuid_arg.len()));
        }
        let mut uuid = [0u8; UUID_LEN];
        uuid[..uuid_arg.len()].copy_from_slice(uuid_arg);
        let integrated_flush = rest[0].eq_ignore_ascii_case(INTEGRATED_FLUSH);
        let server_args = if integrated_flush { &rest[1..] } else { rest };
        Ok(Self {
            uuid,
            integrated_flush,
            server_args,
            argc: args.len(),
        })
    }

    /// Writes the CTR payload, `"<target sectors> <server args>"`, into
    /// `out`; returns its length. No NUL follows, as from the C module
    /// (servers take the payload's length as the string's).
    pub(crate) fn write_ctr_string(
        &self,
        target_sectors: u64,
        out: &mut [u8; MAX_REQUEST_PAYLOAD],
    ) -> Result<usize, ArgsError> {
        let mut w = ByteWriter {
            out,
            len: 0,
            overflow: 0,
        };
        // `ByteWriter` never fails; it counts what does not fit.
        let _ = fmt::Write::write_fmt(&mut w, format_args!("{target_sectors}"));
        for arg in self.server_args {
            w.push(b" ");
            w.push(arg);
        }
        match w.overflow {
            0 => Ok(w.len),
            extra => Err(ArgsError::CtrTooLong(w.len + extra)),
        }
    }
}

/// The server arguments inside a CTR string: everything after the first
/// space (the target length comes first).
pub(crate) fn ctr_server_args(ctr: &[u8]) -> &[u8] {
    match ctr.iter().position(|&b| b == b' ') {
        Some(i) => &ctr[i + 1..],
        None => &[],
    }
}

/// Writes the status TABLE line of a log as the C module does, trailing space
/// included (the mirror target appends its own fields right after it):
/// `userspace <argc> <uuid> [integrated_flush ]<server args> `.
pub(crate) fn write_table_line(
    out: &mut impl fmt::Write,
    type_name: impl fmt::Display,
    argc: usize,
    uuid: &[u8],
    integrated_flush: bool,
    server_args: &[u8],
) -> fmt::Result {
    write!(out, "{type_name} {argc} ")?;
    write_printable(out, uuid)?;
    out.write_str(" ")?;
    if integrated_flush {
        out.write_str("integrated_flush ")?;
    }
    write_printable(out, server_args)?;
    out.write_str(" ")
}

/// Writes bytes from a table or a server as one line of text: printable
/// ASCII and spaces as they are, anything else (a NUL, a newline, garbage
/// from a broken server) as `?`.
pub(crate) fn write_printable(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        let c = if b == b' ' || b.is_ascii_graphic() {
            char::from(b)
        } else {
            '?'
        };
        out.write_char(c)?;
    }
    Ok(())
}

/// Appends to a fixed buffer, counting what does not fit.
struct ByteWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: usize,
}

impl ByteWriter<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.out.len() - self.len;
        let n = bytes.len().min(room);
        self.out[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self.overflow += bytes.len() - n;
    }
}

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(args: &[&[u8]], sectors: u64) -> Result<Vec<u8>, ArgsError> {
        let t = TableArgs::parse(args)?;
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let n = t.write_ctr_string(sectors, &mut buf)?;
        Ok(buf[..n].to_vec())
    }

    #[test]
    fn ctr_string_puts_the_length_first_and_strips_the_uuid() {
        let args: &[&[u8]] = &[b"LVM-x", b"clustered-core", b"1024"];
        assert_eq!(ctr(args, 131072).unwrap(), b"131072 clustered-core 1024");
    }

    #[test]
    fn integrated_flush_is_stripped_and_case_insensitive() {
        let args: &[&[u8]] = &[b"u", b"Integrated_Flush", b"clustered-core", b"1024"];
        let t = TableArgs::parse(args).unwrap();
        assert!(t.integrated_flush);
        assert_eq!(t.argc, 4);
        assert_eq!(t.server_args, &[&b"clustered-core"[..], b"1024"]);
        assert_eq!(ctr(args, 8).unwrap(), b"8 clustered-core 1024");
        let plain: &[&[u8]] = &[b"u", b"clustered-core", b"integrated_flush"];
        assert!(!TableArgs::parse(plain).unwrap().integrated_flush);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(TableArgs::parse(&[]), Err(ArgsError::TooFew(0)));
        assert_eq!(
            TableArgs::parse(&[b"u".as_slice(), b"core"]),
            Err(ArgsError::TooFew(2))
        );
        let long = [b'a'; UUID_LEN];
        assert_eq!(
            TableArgs::parse(&[&long[..], b"a", b"b"]),
            Err(ArgsError::UuidTooLong(UUID_LEN))
        );
        let ok = [b'a'; UUID_LEN - 1];
        assert_eq!(
            &TableArgs::parse(&[&ok[..], b"a", b"b"]).unwrap().uuid[..UUID_LEN - 1],
            &ok[..]
        );
        let big = [b'x'; 400];
        assert!(matches!(
            ctr(&[b"u", b"core", &big[..]], 1),
            Err(ArgsError::CtrTooLong(407))
        ));
    }

    /// Upstream's "reserve space for NUL-terminator in
    /// build_constructor_string()": the string that just fits, and one byte
    /// more, whatever the width of the target length.
    #[test]
    fn a_ctr_string_of_exactly_the_limit_fits_and_one_byte_more_does_not() {
        for sectors in [1u64, 131072, u64::MAX] {
            let head = format!("{sectors} core ").len();
            let fill = vec![b'y'; MAX_REQUEST_PAYLOAD - head];
            let s = ctr(&[b"u", b"core", &fill[..]], sectors).unwrap();
            assert_eq!(s.len(), MAX_REQUEST_PAYLOAD);
            assert_eq!(s.last(), Some(&b'y'));
            let over = vec![b'y'; MAX_REQUEST_PAYLOAD - head + 1];
            assert_eq!(
                ctr(&[b"u", b"core", &over[..]], sectors),
                Err(ArgsError::CtrTooLong(MAX_REQUEST_PAYLOAD + 1))
            );
        }
    }

    #[test]
    fn table_line_matches_the_c_module() {
        let args: &[&[u8]] = &[b"UUID", b"integrated_flush", b"clustered-core", b"1024"];
        let t = TableArgs::parse(args).unwrap();
        let c = ctr(args, 4096).unwrap();
        let mut s = String::new();
        write_table_line(
            &mut s,
            "userspace",
            t.argc,
            b"UUID",
            true,
            ctr_server_args(&c),
        )
        .unwrap();
        assert_eq!(s, "userspace 4 UUID integrated_flush clustered-core 1024 ");
        assert_eq!(ctr_server_args(b"12 a b"), b"a b");
        assert_eq!(ctr_server_args(b"12"), b"");
    }
}
