// SPDX-License-Identifier: GPL-2.0

//! dm-ulogd: the single-node server for device-mapper userspace dirty logs.
//! See `dm-ulogd --help`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use dm_ulogd::cli::{self, Mode, USAGE};
use dm_ulogd::control::{self, Command};
use dm_ulogd::logging::{self, Destination};
use dm_ulogd::server::{Server, ServerOptions};
use dm_ulogd::{error, warning};

fn main() -> ExitCode {
    let mode = match cli::parse(std::env::args().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("dm-ulogd: {e}\nTry 'dm-ulogd --help'.");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Mode::Version => {
            println!("dm-ulogd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Mode::Stats(o) => {
            let path = o.state_dir.join(control::SOCKET_NAME);
            let command = Command::Stats {
                json: o.json,
                reset: o.reset,
            };
            match control::query(&path, command) {
                Ok(answer) if answer.starts_with("error:") => {
                    eprint!("dm-ulogd: {answer}");
                    ExitCode::FAILURE
                }
                Ok(answer) => {
                    print!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "dm-ulogd: cannot reach the server at {}: {e} (is it running? are you root?)",
                        path.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Mode::Serve(o) => {
            if !rustix::process::geteuid().is_root() {
                eprintln!(
                    "dm-ulogd: must run as root (it answers the kernel on the netlink connector and opens log devices)"
                );
                return ExitCode::FAILURE;
            }
            let destination = if o.syslog {
                Destination::Syslog
            } else {
                Destination::Stderr {
                    timestamps: o.timestamps,
                }
            };
            logging::init(destination, o.verbose);
            if o.mlock {
                let all = rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE;
                if let Err(e) = rustix::mm::mlockall(all) {
                    warning!("cannot lock memory ({e}): requests may wait for swap-in");
                }
            }
            let options = ServerOptions {
                state_dir: o.state_dir,
                rcvbuf: o.rcvbuf,
            };
            let mut server = match Server::start(&options, o.cluster) {
                Ok(s) => s,
                Err(e) => {
                    error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match server.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("stopping: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
