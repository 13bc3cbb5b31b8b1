//! The log's two ends: [`LogSender`], one per event loop (worker), and [`LogWorker`], the
//! `watchtower-log` thread that formats records and writes `api_log` and the stderr access lines.
//!
//! The loop must never wait on a disk, so the hand-off is a bounded channel and `send` uses
//! `try_send`: a full queue drops the record and counts it, and the worker turns the count into a
//! line in `api_log` and a warning, so losses are never silent. Dropping the sender is the
//! shutdown signal (as in mini-redis `server.rs`): the worker drains what is queued, flushes and
//! exits, and [`LogWorker::join`] waits for that. What a record says is `super::record`'s
//! business; when to build one is the session's.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::exchanges::Exchanges;
use super::record::{ApiRecord, write_rfc3339};

/// Records the queue holds before `send` starts dropping: about two seconds of a busy
/// developer's traffic, and well under a megabyte of preallocated slots.
pub const QUEUE_CAPACITY: usize = 1024;

/// Longest a written line may sit in the file buffer while the queue never runs empty (SPEC §10:
/// on disk within a second). An idle queue flushes at once.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Where the log goes.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// The JSONL file to append to; `None` writes no file.
    pub api_log: Option<PathBuf>,
    /// Whether each record also prints an access line on stderr (off with `--quiet`).
    pub access_lines: bool,
    /// Where the admin API finds recent records; `None` keeps none.
    pub exchanges: Option<Arc<Exchanges>>,
}

/// `api_log` could not be opened, or the log thread could not start. The message names the
/// file and says why: `cannot open api_log /x/api.jsonl: Permission denied`.
#[derive(Debug)]
pub struct LogError {
    message: String,
    source: io::Error,
}

impl LogError {
    fn open(path: &Path, source: io::Error) -> LogError {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let reason = match parent {
            Some(parent) if source.kind() == io::ErrorKind::NotFound && !parent.is_dir() => {
                format!("folder {} does not exist", parent.display())
            }
            _ => io_reason(&source),
        };
        LogError {
            message: format!("cannot open api_log {}: {reason}", path.display()),
            source,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// An `io::Error` as a user reads it: "Permission denied", without " (os error 13)".
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// An event loop's end of the log: each worker holds a clone; dropping the last one tells the
/// log thread to drain and exit. `send` never blocks and never allocates.
#[derive(Debug, Clone)]
pub struct LogSender {
    /// `None` for [`LogSender::disabled`], which discards records.
    tx: Option<Sender<ApiRecord>>,
    /// Records dropped because the queue was full or the worker was gone; shared with the worker,
    /// which reports growth.
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    fn with_channel(tx: Sender<ApiRecord>, dropped: Arc<AtomicU64>) -> LogSender {
        LogSender {
            tx: Some(tx),
            dropped,
        }
    }

    /// Queues `record` for the worker, or drops and counts it when the queue is full (or the
    /// worker has died): the loop never waits for the log.
    pub fn send(&self, record: ApiRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped so far because the queue was full (or the worker had died).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop counter itself, for a reader that must not keep the log open (a sender does:
    /// the log thread runs until the last one is gone).
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// A sender whose records go nowhere (for unit tests of other modules); sends count as not
    /// dropped.
    pub fn disabled() -> LogSender {
        LogSender {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The `watchtower-log` thread. Join it after dropping the [`LogSender`].
#[derive(Debug)]
pub struct LogWorker {
    /// `None` when there is nothing to write (no `api_log`, no access lines), so no thread runs.
    handle: Option<JoinHandle<()>>,
}

impl LogWorker {
    /// Opens `api_log` for append, creating the file but not missing folders (a missing parent
    /// folder is an error naming it), *before* spawning, so a bad path is a start-up error. Then
    /// spawns the `watchtower-log` thread.
    pub fn spawn(opts: LogOptions) -> Result<(LogSender, LogWorker), LogError> {
        let file = match &opts.api_log {
            Some(path) => {
                // The log holds the URLs (and query strings) of the user's traffic: a new file
                // is readable by its owner only.
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| LogError::open(path, e))?;
                Some((path.clone(), BufWriter::new(file)))
            }
            None => None,
        };
        if file.is_none() && !opts.access_lines && opts.exchanges.is_none() {
            return Ok((LogSender::disabled(), LogWorker { handle: None }));
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut worker = Worker::new(file, opts.access_lines, Arc::clone(&dropped));
        worker.exchanges = opts.exchanges;
        let handle = thread::Builder::new()
            .name("watchtower-log".to_owned())
            .spawn(move || worker.run(&rx))
            .map_err(|source| LogError {
                message: format!("cannot start the log thread: {}", io_reason(&source)),
                source,
            })?;
        Ok((
            LogSender::with_channel(tx, dropped),
            LogWorker {
                handle: Some(handle),
            },
        ))
    }

    /// Waits for the worker to write everything sent so far and exit. Drop the [`LogSender`]
    /// first: that is what tells the worker to finish (otherwise this waits forever).
    pub fn join(self) {
        if let Some(handle) = self.handle
            && handle.join().is_err()
        {
            log::warn!("the log thread panicked; recent api_log lines may be missing");
        }
    }
}

/// The worker thread's state. Generic over the file so tests can write into a `Vec<u8>`.
struct Worker<W: Write> {
    /// The `api_log` path (for messages) and its buffered writer; `None` without `api_log`.
    file: Option<(PathBuf, W)>,
    access_lines: bool,
    /// Shared with [`LogSender`]; `reported` is the value already turned into a drop line.
    dropped: Arc<AtomicU64>,
    reported: u64,
    /// Set by the first failed file write and cleared by the next successful flush, so a
    /// failing disk produces one warning per outage rather than one per record.
    failing: bool,
    last_flush: Instant,
    /// Reused for every formatted line: the worker allocates only while lines grow.
    line: String,
    /// Recent records for the admin API.
    exchanges: Option<Arc<Exchanges>>,
}

impl<W: Write> Worker<W> {
    fn new(file: Option<(PathBuf, W)>, access_lines: bool, dropped: Arc<AtomicU64>) -> Worker<W> {
        Worker {
            file,
            access_lines,
            dropped,
            reported: 0,
            failing: false,
            last_flush: Instant::now(),
            line: String::with_capacity(512),
            exchanges: None,
        }
    }

    /// Writes records until every sender is gone. Lines are batched in the file buffer while
    /// records keep coming and flushed as soon as the queue is momentarily empty, or after
    /// `FLUSH_INTERVAL` of uninterrupted load.
    fn run(mut self, rx: &Receiver<ApiRecord>) {
        loop {
            match rx.try_recv() {
                Ok(record) => {
                    self.write_record(&record);
                    if self.last_flush.elapsed() >= FLUSH_INTERVAL {
                        self.report_drops();
                        self.flush();
                    }
                }
                Err(TryRecvError::Empty) => {
                    self.report_drops();
                    self.flush();
                    // Nothing is buffered now, so blocking costs no latency.
                    match rx.recv() {
                        Ok(record) => self.write_record(&record),
                        Err(_) => break,
                    }
                }
                // The queue is empty too: crossbeam reports Disconnected only once drained.
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.report_drops();
        self.flush();
    }

    fn write_record(&mut self, record: &ApiRecord) {
        if let Some(exchanges) = &self.exchanges {
            exchanges.push(record);
        }
        if self.file.is_some() {
            self.line.clear();
            record.write_json(&mut self.line);
            self.line.push('\n');
            self.write_line();
        }
        if self.access_lines {
            self.line.clear();
            record.write_access_line(&mut self.line);
            self.line.push('\n');
            // One write on the locked handle keeps the line whole among other threads' output.
            // A failing stderr is not reported: the report would go to the same stderr.
            let _ = io::stderr().lock().write_all(self.line.as_bytes());
        }
    }

    /// If more records were dropped since the last look, says so in `api_log` and as a warning.
    fn report_drops(&mut self) {
        let total = self.dropped.load(Ordering::Relaxed);
        let newly = total.saturating_sub(self.reported);
        if newly == 0 {
            return;
        }
        self.reported = total;
        log::warn!("log queue full: {newly} api_log records dropped ({total} since start)");
        if self.file.is_some() {
            self.line.clear();
            self.line.push_str("{\"ts\":\"");
            write_rfc3339(SystemTime::now(), &mut self.line);
            self.line.push_str("\",\"dropped\":");
            self.line.push_str(&newly.to_string());
            self.line.push_str(",\"error\":\"log queue full: ");
            self.line.push_str(&newly.to_string());
            self.line.push_str(" records dropped\"}\n");
            self.write_line();
        }
    }

    /// Appends `self.line` to the file buffer.
    fn write_line(&mut self) {
        let Some((path, file)) = &mut self.file else {
            return;
        };
        if let Err(error) = file.write_all(self.line.as_bytes())
            && !self.failing
        {
            self.failing = true;
            log::warn!(
                "cannot write api_log {}: {}; records are being lost until writes succeed again",
                path.display(),
                io_reason(&error)
            );
        }
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        let Some((path, file)) = &mut self.file else {
            return;
        };
        match file.flush() {
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("api_log {} is writable again", path.display());
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                log::warn!(
                    "cannot write api_log {}: {}; records are being lost until writes succeed again",
                    path.display(),
                    io_reason(&error)
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Kind, Text};
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::UNIX_EPOCH;

    fn record(n: u64) -> ApiRecord {
        ApiRecord {
            ts: UNIX_EPOCH + Duration::from_millis(1_795_747_267_000 + n),
            client: "127.0.0.1:51234".parse().unwrap(),
            method: Text::from("GET"),
            host: Text::from("app.example.test"),
            path: Some(Text::from_fmt(format_args!("/item/{n}"))),
            status: Some(200),
            route: Some(Text::from("web")),
            upstream: Some(Text::from("127.0.0.1:3100")),
            kind: Kind::Http,
            duration: Duration::from_micros(1_250),
            bytes_in: 100 + n,
            bytes_out: 800,
            error: None,
            capture: None,
        }
    }

    fn json_line(record: &ApiRecord) -> String {
        let mut line = String::new();
        record.write_json(&mut line);
        line.push('\n');
        line
    }

    /// A path in the temp folder no other test (or test run) uses.
    fn temp_path(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "watchtower-apilog-{}-{n}-{name}",
            std::process::id()
        ))
    }

    #[test]
    fn end_to_end_writes_every_record() {
        let path = temp_path("api.jsonl");
        let (sender, worker) = LogWorker::spawn(LogOptions {
            api_log: Some(path.clone()),
            access_lines: false,
            ..Default::default()
        })
        .unwrap();
        let records: Vec<ApiRecord> = (0..3).map(record).collect();
        for r in &records {
            sender.send(r.clone());
        }
        assert_eq!(sender.dropped(), 0);
        drop(sender);
        worker.join();

        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let expected: String = records.iter().map(json_line).collect();
        assert_eq!(written, expected);
        assert_eq!(written.lines().count(), 3);
        for line in written.lines() {
            assert!(line.starts_with("{\"ts\":\"2026-11-27T02:41:07.") && line.ends_with('}'));
        }
    }

    #[test]
    fn end_to_end_appends_to_an_existing_file() {
        let path = temp_path("existing.jsonl");
        std::fs::write(&path, "earlier\n").unwrap();
        let (sender, worker) = LogWorker::spawn(LogOptions {
            api_log: Some(path.clone()),
            access_lines: false,
            ..Default::default()
        })
        .unwrap();
        sender.send(record(7));
        drop(sender);
        worker.join();
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(written, format!("earlier\n{}", json_line(&record(7))));
    }

    #[test]
    fn line_reaches_the_disk_while_the_sender_lives() {
        let path = temp_path("live.jsonl");
        let (sender, worker) = LogWorker::spawn(LogOptions {
            api_log: Some(path.clone()),
            access_lines: false,
            ..Default::default()
        })
        .unwrap();
        sender.send(record(1));
        let expected = json_line(&record(1));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut written = String::new();
        while Instant::now() < deadline {
            written = std::fs::read_to_string(&path).unwrap();
            if written == expected {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        drop(sender);
        worker.join();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            written, expected,
            "the line was not flushed within a second"
        );
    }

    #[test]
    fn missing_folder_is_a_start_up_error_naming_it() {
        let folder = temp_path("no-such-folder");
        let path = folder.join("api.jsonl");
        let error = LogWorker::spawn(LogOptions {
            api_log: Some(path.clone()),
            access_lines: false,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot open api_log {}: folder {} does not exist",
                path.display(),
                folder.display()
            )
        );
        assert!(std::error::Error::source(&error).is_some());
        assert!(!folder.exists());
    }

    #[test]
    fn unopenable_file_error_drops_the_os_error_code() {
        // A folder cannot be opened for append.
        let path = std::env::temp_dir();
        let error = LogWorker::spawn(LogOptions {
            api_log: Some(path.clone()),
            access_lines: false,
            ..Default::default()
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot open api_log {}: ", path.display())),
            "{message}"
        );
        assert!(!message.contains("os error"), "{message}");
    }

    #[test]
    fn nothing_to_write_spawns_no_thread() {
        let (sender, worker) = LogWorker::spawn(LogOptions::default()).unwrap();
        assert!(worker.handle.is_none());
        sender.send(record(0));
        assert_eq!(sender.dropped(), 0);
        drop(sender);
        worker.join();
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = LogSender::with_channel(tx, Arc::clone(&dropped));
        for n in 0..5 {
            sender.send(record(n));
        }
        assert_eq!(sender.dropped(), 3);
        assert_eq!(rx.len(), 2);
        // A vanished worker counts as dropping too.
        drop(rx);
        sender.send(record(5));
        assert_eq!(sender.dropped(), 4);
        assert_eq!(dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn disabled_sender_discards_without_counting() {
        let sender = LogSender::disabled();
        for n in 0..(QUEUE_CAPACITY as u64 + 10) {
            sender.send(record(n));
        }
        assert_eq!(sender.dropped(), 0);
    }

    fn vec_worker(dropped: &Arc<AtomicU64>) -> Worker<Vec<u8>> {
        Worker::new(
            Some((PathBuf::from("api.jsonl"), Vec::new())),
            false,
            Arc::clone(dropped),
        )
    }

    fn written(worker: &Worker<Vec<u8>>) -> String {
        let (_, out) = worker.file.as_ref().unwrap();
        String::from_utf8(out.clone()).unwrap()
    }

    #[test]
    fn drop_growth_becomes_one_line_per_look() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut worker = vec_worker(&dropped);
        worker.report_drops();
        assert_eq!(written(&worker), "");

        dropped.store(5, Ordering::Relaxed);
        worker.report_drops();
        worker.report_drops();
        dropped.store(7, Ordering::Relaxed);
        worker.report_drops();

        let out = written(&worker);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let tail = |line: &str| line.split_once("\",").map(|(_, t)| t.to_owned());
        assert!(lines[0].starts_with("{\"ts\":\"20"), "{}", lines[0]);
        assert_eq!(
            tail(lines[0]).as_deref(),
            Some("\"dropped\":5,\"error\":\"log queue full: 5 records dropped\"}")
        );
        assert_eq!(
            tail(lines[1]).as_deref(),
            Some("\"dropped\":2,\"error\":\"log queue full: 2 records dropped\"}")
        );
    }

    /// A file the test can read while the worker owns the writer.
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn run_drains_then_reports_drops_on_disconnect() {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = LogSender::with_channel(tx, Arc::clone(&dropped));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let worker = Worker::new(
            Some((PathBuf::from("api.jsonl"), Shared(Arc::clone(&out)))),
            false,
            dropped,
        );
        sender.send(record(1));
        sender.send(record(2));
        sender.dropped.store(3, Ordering::Relaxed);
        drop(sender);

        // The channel is already closed, so `run` drains it on this thread and returns.
        worker.run(&rx);

        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(format!("{}\n", lines[0]), json_line(&record(1)));
        assert_eq!(format!("{}\n", lines[1]), json_line(&record(2)));
        assert!(
            lines[2].ends_with("\"dropped\":3,\"error\":\"log queue full: 3 records dropped\"}"),
            "{}",
            lines[2]
        );
    }

    /// A file that fails every write, counting how often it was asked to.
    struct Broken(Arc<AtomicUsize>);

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    #[test]
    fn write_errors_do_not_stop_the_worker() {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let attempts = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let worker = Worker::new(
            Some((PathBuf::from("api.jsonl"), Broken(Arc::clone(&attempts)))),
            false,
            Arc::clone(&dropped),
        );
        let sender = LogSender::with_channel(tx, dropped);
        for n in 0..4 {
            sender.send(record(n));
        }
        drop(sender);
        worker.run(&rx);
        assert_eq!(attempts.load(Ordering::Relaxed), 4);
    }
}
