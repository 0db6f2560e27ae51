// SPDX-License-Identifier: GPL-2.0

//! Command line parsing (hand-rolled, to keep the static binary small).

use std::path::PathBuf;

use ulog_proto::socket::DEFAULT_RCVBUF;

/// Default state directory: on tmpfs, so it survives a restart of the
/// server but not a reboot.
pub const DEFAULT_STATE_DIR: &str = "/run/dm-ulogd";

/// `--help` text.
pub const USAGE: &str = "\
Usage: dm-ulogd [OPTIONS]
       dm-ulogd stats [--json] [--reset] [--state-dir DIR]

Serves device-mapper 'userspace' dirty logs on this machine (with --cluster,
coherently across the machines sharing a mirror), speaking the kernel's
request version 3 over the netlink connector. Accepts
cmirrord's log arguments, so LVM tables work unchanged:
  clustered-core <region_size> [sync|nosync] [block_on_error]
  clustered-disk <log dev> <region_size> [sync|nosync] [block_on_error]
('core' and 'disk' are accepted too). Disk logs use the on-disk format of
the kernel's 'disk' log. Runs in the foreground, as root.

Options:
  -s, --state-dir DIR  keep per-log state, the lock and the control socket
                       in DIR (default /run/dm-ulogd); logs found there are
                       restored at start, so mirrors survive a server restart
      --syslog         log to syslog (facility daemon) instead of stderr
  -t, --timestamps     prefix stderr lines with a UTC timestamp
  -v, --verbose        log every request and its answer
      --rcvbuf BYTES   netlink receive buffer (default 8388608)
      --no-mlock       do not lock the server's memory (by default it is
                       locked, so serving a request never waits for swap)
      --cluster        keep each log coherent across the nodes sharing the
                       mirror, over corosync (one CPG group per log, named
                       after its uuid; cmirrord's role). Needs a build with
                       the 'cluster' feature and corosync running
  -h, --help           show this help
  -V, --version        show the version

stats: print the running server's counters (requests, errors and latency
per request type, per log and in total; disk writes and syncs)
      --json           machine-readable output
      --reset          zero the counters after printing them
  -s, --state-dir DIR  the server's state directory

Signals: SIGTERM/SIGINT exit (logs stay in the state directory), SIGUSR1
logs the counters.
";

/// Options of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Log to syslog.
    pub syslog: bool,
    /// Timestamps on stderr lines.
    pub timestamps: bool,
    /// Per-request tracing.
    pub verbose: bool,
    /// Netlink receive buffer bytes.
    pub rcvbuf: usize,
    /// Lock memory.
    pub mlock: bool,
    /// Cluster mode (over corosync).
    pub cluster: bool,
}

/// Options of `dm-ulogd stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsOptions {
    /// State directory of the server to ask.
    pub state_dir: PathBuf,
    /// JSON output.
    pub json: bool,
    /// Reset after printing.
    pub reset: bool,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run the server.
    Serve(ServeOptions),
    /// Query a running server.
    Stats(StatsOptions),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Mode, String> {
    let mut args = args.into_iter().peekable();
    let stats = args.peek().is_some_and(|a| a == "stats");
    if stats {
        args.next();
    }
    let mut serve = ServeOptions {
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        syslog: false,
        timestamps: false,
        verbose: false,
        rcvbuf: DEFAULT_RCVBUF,
        mlock: true,
        cluster: false,
    };
    let (mut json, mut reset) = (false, false);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        let serve_only = |name: &str| {
            if stats {
                Err(format!("{name} is not an option of 'stats'"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Mode::Help),
            "-V" | "--version" => return Ok(Mode::Version),
            "-s" | "--state-dir" => serve.state_dir = PathBuf::from(value("a directory")?),
            "--json" if stats => json = true,
            "--reset" if stats => reset = true,
            "--syslog" => {
                serve_only(&name)?;
                serve.syslog = true;
            }
            "-t" | "--timestamps" => {
                serve_only(&name)?;
                serve.timestamps = true;
            }
            "-v" | "--verbose" => {
                serve_only(&name)?;
                serve.verbose = true;
            }
            "--no-mlock" => {
                serve_only(&name)?;
                serve.mlock = false;
            }
            "--cluster" => {
                serve_only(&name)?;
                serve.cluster = true;
            }
            "--rcvbuf" => {
                serve_only(&name)?;
                let v = value("a size in bytes")?;
                serve.rcvbuf = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 65536)
                    .ok_or_else(|| {
                        format!("--rcvbuf '{v}' is not a size of at least 65536 bytes")
                    })?;
            }
            _ if inline.is_some() || name.starts_with('-') => {
                return Err(format!("unknown option '{name}'"))
            }
            _ => return Err(format!("unexpected argument '{arg}'")),
        }
    }
    if stats {
        Ok(Mode::Stats(StatsOptions {
            state_dir: serve.state_dir,
            json,
            reset,
        }))
    } else {
        Ok(Mode::Serve(serve))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn serve_defaults_and_options() {
        let Mode::Serve(o) = p(&[]).unwrap() else {
            panic!()
        };
        assert_eq!(o.state_dir, PathBuf::from("/run/dm-ulogd"));
        assert!(o.mlock && !o.verbose && !o.syslog && !o.timestamps && !o.cluster);
        assert_eq!(o.rcvbuf, DEFAULT_RCVBUF);
        let Mode::Serve(o) = p(&[
            "-v",
            "--syslog",
            "-s",
            "/tmp/x",
            "--rcvbuf=1048576",
            "--no-mlock",
            "-t",
            "--cluster",
        ])
        .unwrap() else {
            panic!()
        };
        assert!(o.verbose && o.syslog && o.timestamps && !o.mlock && o.cluster);
        assert_eq!(o.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(o.rcvbuf, 1 << 20);
        assert_eq!(p(&["--help"]), Ok(Mode::Help));
        assert_eq!(p(&["-V"]), Ok(Mode::Version));
    }

    #[test]
    fn stats_mode() {
        assert_eq!(
            p(&["stats", "--json", "--reset", "--state-dir=/s"]),
            Ok(Mode::Stats(StatsOptions {
                state_dir: PathBuf::from("/s"),
                json: true,
                reset: true
            }))
        );
        assert!(p(&["stats", "--syslog"])
            .unwrap_err()
            .contains("not an option of 'stats'"));
    }

    #[test]
    fn bad_arguments() {
        assert!(p(&["--bogus"])
            .unwrap_err()
            .contains("unknown option '--bogus'"));
        assert!(p(&["--json"]).unwrap_err().contains("unknown option"));
        assert!(p(&["extra"]).unwrap_err().contains("unexpected argument"));
        assert!(p(&["-s"]).unwrap_err().contains("needs a directory"));
        assert!(p(&["--rcvbuf", "12"])
            .unwrap_err()
            .contains("at least 65536"));
        assert!(p(&["--rcvbuf=x"]).unwrap_err().contains("'x'"));
    }

    #[test]
    fn usage_mentions_every_option() {
        for opt in [
            "--state-dir",
            "--syslog",
            "--timestamps",
            "--verbose",
            "--rcvbuf",
            "--no-mlock",
            "--cluster",
            "--help",
            "--version",
            "--json",
            "--reset",
        ] {
            assert!(USAGE.contains(opt), "{opt}");
        }
    }
}
