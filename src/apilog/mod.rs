//! The API log: one record per proxied exchange or tunnel, written as a JSON line to `api_log`
//! and as a human access line to stderr (SPEC §9 "api_log", §10 "api_log lines").
//!
//! The event loop builds an [`ApiRecord`] when an exchange ends and hands it to its
//! [`LogSender`], which never blocks and never allocates for the hand-off. All formatting and all
//! file I/O happen on the `watchtower-log` thread that [`LogWorker`] owns. This module does not
//! decide what a record contains (the session phases do) nor where `api_log` lives (the config
//! does); [`stderr`] is the process-wide `log::Log` for diagnostics, separate from access lines.

pub mod exchanges;
mod record;
pub mod stderr;
mod worker;

pub use exchanges::Exchanges;
pub use record::{ApiRecord, Capture, Kind, Text, write_rfc3339};
pub use worker::{LogError, LogOptions, LogSender, LogWorker, QUEUE_CAPACITY};
