//! The process-wide `log::Log`: diagnostics (`log::warn!` and friends, from Watchtower and from
//! libraries such as rustls) as `LEVEL target: message` lines on stderr.
//!
//! It owns only the choice of level and the line format. The per-exchange access lines are not
//! diagnostics and do not pass through here: the log worker (`super::worker`) writes them itself.
//! Parsing `-v`/`--quiet` is `main`'s job; it calls [`init`] once at start-up.

use std::io::{self, Write as _};

use log::{LevelFilter, Log, Metadata, Record};

/// Writes every record `log`'s global max level lets through; the level is set once by [`init`].
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        // One write on the locked handle keeps the line whole among other threads' output; if
        // stderr itself fails there is nowhere left to report it.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the stderr logger. The level comes from `RUST_LOG` when it names one (`error`,
/// `warn`, `info`, `debug`, `trace`, `off`, any case; `watchtower=debug` counts as `debug`), else
/// `Warn` when `quiet`, else from the `-v` count: 0 -> Info, 1 -> Debug, 2 or more -> Trace.
/// A second call is a no-op.
pub fn init(verbosity: u8, quiet: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let level = choose_level(verbosity, quiet, rust_log.as_deref());
    // `set_logger` fails only when a logger is already installed (an earlier `init`, or a test
    // harness); keeping that logger and its level is what "idempotent" asks for.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

fn choose_level(verbosity: u8, quiet: bool, rust_log: Option<&str>) -> LevelFilter {
    if let Some(level) = rust_log.and_then(parse_rust_log) {
        return level;
    }
    if quiet {
        return LevelFilter::Warn;
    }
    match verbosity {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// The level a `RUST_LOG` value names, or `None` when it names none we understand. This logger
/// does not filter by target, so of several directives (`warn,watchtower=debug`) the most
/// verbose level wins: nothing the user asked to see is hidden.
fn parse_rust_log(value: &str) -> Option<LevelFilter> {
    value
        .split(',')
        .filter_map(|directive| {
            let level = match directive.split_once('=') {
                Some((_, level)) => level,
                None => directive,
            };
            level.trim().parse::<LevelFilter>().ok()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_from_verbosity_and_quiet() {
        assert_eq!(choose_level(0, false, None), LevelFilter::Info);
        assert_eq!(choose_level(1, false, None), LevelFilter::Debug);
        assert_eq!(choose_level(2, false, None), LevelFilter::Trace);
        assert_eq!(choose_level(9, false, None), LevelFilter::Trace);
        assert_eq!(choose_level(0, true, None), LevelFilter::Warn);
        assert_eq!(choose_level(2, true, None), LevelFilter::Warn);
    }

    #[test]
    fn rust_log_wins_when_it_names_a_level() {
        let cases = [
            ("error", LevelFilter::Error),
            ("WARN", LevelFilter::Warn),
            ("Info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("off", LevelFilter::Off),
            (" debug ", LevelFilter::Debug),
            ("watchtower=debug", LevelFilter::Debug),
            ("warn,watchtower=trace", LevelFilter::Trace),
        ];
        for (value, expected) in cases {
            assert_eq!(choose_level(0, false, Some(value)), expected, "{value}");
            assert_eq!(choose_level(2, true, Some(value)), expected, "{value}");
        }
    }

    #[test]
    fn unusable_rust_log_is_ignored() {
        for value in ["", "loud", "watchtower", "watchtower=", "=verbose"] {
            assert_eq!(
                choose_level(1, false, Some(value)),
                LevelFilter::Debug,
                "{value}"
            );
            assert_eq!(
                choose_level(1, true, Some(value)),
                LevelFilter::Warn,
                "{value}"
            );
        }
    }

    #[test]
    fn init_twice_is_a_no_op() {
        init(0, true);
        let level = log::max_level();
        init(2, false);
        assert_eq!(log::max_level(), level);
        log::warn!("stderr logger test line");
    }
}
