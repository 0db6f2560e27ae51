// SPDX-License-Identifier: GPL-2.0

//! The control socket (`<state dir>/control`, a unix stream socket, mode
//! 0600): `dm-ulogd stats` connects, sends one command line, and reads the
//! answer until the server closes the connection.
//!
//! Commands: `stats [json] [reset]`. `reset` zeroes the counters after
//! taking the snapshot it answers with.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the socket in the state directory.
pub const SOCKET_NAME: &str = "control";

/// A parsed control command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the counters.
    Stats {
        /// As JSON rather than text.
        json: bool,
        /// Zero the counters afterwards.
        reset: bool,
    },
}

impl Command {
    /// The command line a client sends.
    pub fn to_line(self) -> String {
        match self {
            Self::Stats { json, reset } => format!(
                "stats{}{}\n",
                if json { " json" } else { "" },
                if reset { " reset" } else { "" }
            ),
        }
    }

    /// Parses a command line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("stats") => {
                let (mut json, mut reset) = (false, false);
                for w in words {
                    match w {
                        "json" => json = true,
                        "reset" => reset = true,
                        other => return Err(format!("unknown stats option '{other}'")),
                    }
                }
                Ok(Self::Stats { json, reset })
            }
            Some(other) => Err(format!("unknown command '{other}'")),
            None => Err("empty command".into()),
        }
    }
}

/// The listening side, in the server.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Listens at `path` (replacing a stale socket; the caller holds the
    /// state directory lock, so no live server owns it).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The descriptor, for poll.
    pub fn raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Accepts one pending client and reads its command; `None` when no
    /// client is waiting. A client gets one second to send its line.
    pub fn accept(&self) -> Option<(UnixStream, Result<Command, String>)> {
        let (stream, _) = self.listener.accept().ok()?;
        let command = read_command(&stream);
        Some((stream, command))
    }
}

impl AsFd for ControlServer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_command(stream: &UnixStream) -> Result<Command, String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(1))))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(1))))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream.take(256))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Command::parse(&line)
}

/// Sends `answer` and closes the connection.
pub fn answer(mut stream: UnixStream, answer: &str) {
    let _ = stream.write_all(answer.as_bytes());
}

/// The client side: sends `command` to the server at `path`, returns its
/// answer.
pub fn query(path: &Path, command: Command) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(command.to_line().as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn commands_round_trip() {
        for c in [
            Command::Stats {
                json: false,
                reset: false,
            },
            Command::Stats {
                json: true,
                reset: true,
            },
        ] {
            assert_eq!(Command::parse(&c.to_line()), Ok(c));
        }
        assert!(Command::parse("stop").is_err());
        assert!(Command::parse("stats fast").is_err());
        assert!(Command::parse("").is_err());
    }

    #[test]
    fn query_and_answer_over_the_socket() {
        let tmp = TempDir::new();
        let path = tmp.path().join(SOCKET_NAME);
        let server = ControlServer::bind(&path).unwrap();
        assert!(server.accept().is_none(), "nobody waiting");
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                query(
                    &path,
                    Command::Stats {
                        json: true,
                        reset: false,
                    },
                )
            }
        });
        let (stream, cmd) = loop {
            if let Some(c) = server.accept() {
                break c;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            cmd,
            Ok(Command::Stats {
                json: true,
                reset: false
            })
        );
        answer(stream, "{}\n");
        assert_eq!(client.join().unwrap().unwrap(), "{}\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(server);
        assert!(!path.exists());
    }
}
