// SPDX-License-Identifier: GPL-2.0

//! Command line parsing (lexopt).

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

/// A command line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An option this program does not have.
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    /// A word that is no option.
    #[error("unexpected argument '{0}'")]
    UnexpectedArgument(String),
    /// An option without its value.
    #[error("{option} needs {what}")]
    MissingValue {
        /// The option.
        option: String,
        /// What it needs.
        what: &'static str,
    },
    /// A server option given to `stats`.
    #[error("{0} is not an option of 'stats'")]
    NotAStatsOption(&'static str),
    /// A receive buffer size that is no size or too small.
    #[error("--rcvbuf '{0}' is not a size of at least 65536 bytes")]
    BadRcvbuf(String),
    /// What lexopt itself refused.
    #[error("{0}")]
    Other(String),
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Mode, CliError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_iter(std::iter::once(String::new()).chain(args));
    let mut serve = ServeOptions {
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        syslog: false,
        timestamps: false,
        verbose: false,
        rcvbuf: DEFAULT_RCVBUF,
        mlock: true,
        cluster: false,
    };
    let (mut stats, mut json, mut reset, mut first) = (false, false, false, true);
    let serve_only = |stats: bool, name: &'static str| {
        if stats {
            Err(CliError::NotAStatsOption(name))
        } else {
            Ok(())
        }
    };
    while let Some(arg) = p.next().map_err(|e| CliError::Other(e.to_string()))? {
        let is_first = std::mem::take(&mut first);
        let name = arg_name(&arg);
        match arg {
            Value(v) if is_first && v == "stats" => stats = true,
            Short('h') | Long("help") => return Ok(Mode::Help),
            Short('V') | Long("version") => return Ok(Mode::Version),
            Short('s') | Long("state-dir") => {
                serve.state_dir = p
                    .value()
                    .map_err(|_| CliError::MissingValue {
                        option: name,
                        what: "a directory",
                    })?
                    .into()
            }
            Long("json") if stats => json = true,
            Long("reset") if stats => reset = true,
            Long("syslog") => {
                serve_only(stats, "--syslog")?;
                serve.syslog = true;
            }
            Short('t') | Long("timestamps") => {
                serve_only(stats, "--timestamps")?;
                serve.timestamps = true;
            }
            Short('v') | Long("verbose") => {
                serve_only(stats, "--verbose")?;
                serve.verbose = true;
            }
            Long("no-mlock") => {
                serve_only(stats, "--no-mlock")?;
                serve.mlock = false;
            }
            Long("cluster") => {
                serve_only(stats, "--cluster")?;
                serve.cluster = true;
            }
            Long("rcvbuf") => {
                serve_only(stats, "--rcvbuf")?;
                let v = p.value().map_err(|_| CliError::MissingValue {
                    option: name,
                    what: "a size in bytes",
                })?;
                let v = v.to_string_lossy();
                serve.rcvbuf = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 65536)
                    .ok_or_else(|| CliError::BadRcvbuf(v.into_owned()))?;
            }
            Value(v) => return Err(CliError::UnexpectedArgument(v.to_string_lossy().into())),
            _ => return Err(CliError::UnknownOption(name)),
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

fn arg_name(arg: &lexopt::Arg<'_>) -> String {
    match arg {
        lexopt::Arg::Short(c) => format!("-{c}"),
        lexopt::Arg::Long(l) => format!("--{l}"),
        lexopt::Arg::Value(v) => v.to_string_lossy().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, String> {
        parse(args.iter().map(|s| s.to_string())).map_err(|e| e.to_string())
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
