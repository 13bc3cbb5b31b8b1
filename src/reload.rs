//! Hot reload: when `watchtower.toml` changes on disk (checked twice a second) or Watchtower gets
//! SIGHUP, the file is read again. The switch and the routes apply at once, like an admin API
//! change; settings that need new sockets or a new CA (listeners, workers, TLS, the admin
//! address) are reported as needing a restart and left as they are. A file that does not
//! validate is refused with the same message as at start-up, and the running settings stay.
//!
//! It runs on a thread of its own that sleeps between checks; nothing here touches an event
//! loop except through [`Live`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::live::Live;

/// How often the file's modification time and size are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// Starts watching `config.source` (nothing to watch on built-in defaults).
pub fn start(config: &Config, live: Arc<Live>) -> std::io::Result<()> {
    let Some(path) = config.source.clone() else {
        return Ok(());
    };
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let mut current = config.clone();
    let mut seen = stamp(&path);
    thread::Builder::new()
        .name("watchtower-reload".into())
        .spawn(move || {
            loop {
                thread::sleep(POLL);
                let now = stamp(&path);
                let signalled = hup.swap(false, Ordering::SeqCst);
                if !signalled && now == seen {
                    continue;
                }
                seen = now;
                if signalled {
                    log::info!("SIGHUP: reading {} again", path.display());
                }
                reload(&path, &mut current, &live);
            }
        })?;
    Ok(())
}

type Stamp = Option<(SystemTime, u64)>;

/// The file's modification time and size, `None` while it cannot be read.
fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads the file and applies what can change live.
fn reload(path: &Path, current: &mut Config, live: &Live) {
    // The admin API writes the file and applies the change under this lock: reading the file
    // outside it could apply contents older than a change already acknowledged.
    let _editing = live.edit_lock();
    let new = match Config::load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            log::error!("config not reloaded, the running settings stay: {e}");
            return;
        }
    };
    let mut applied = Vec::new();
    if new.local_routing != live.routing() {
        live.set_routing(new.local_routing);
        applied.push(format!(
            "local routing {}",
            if new.local_routing { "on" } else { "off" }
        ));
    }
    if *live.routes() != *new.routes {
        let enabled = new.routes.iter().filter(|r| r.enabled).count();
        live.set_routes(new.routes.clone());
        applied.push(format!(
            "{} route{} ({enabled} enabled)",
            new.routes.len(),
            if new.routes.len() == 1 { "" } else { "s" }
        ));
    }
    let restart: Vec<&str> = [
        ("listen", current.listen != new.listen),
        ("proxy_port", current.proxy_port != new.proxy_port),
        (
            "reverse_http_port",
            current.reverse_http_port != new.reverse_http_port,
        ),
        (
            "reverse_https_port",
            current.reverse_https_port != new.reverse_https_port,
        ),
        ("workers", current.workers != new.workers),
        (
            "max_connections",
            current.max_connections != new.max_connections,
        ),
        ("dns_server", current.dns_server != new.dns_server),
        ("[tls]", current.tls != new.tls),
        ("[log]", current.api_log != new.api_log),
        ("[timeouts]", current.timeouts != new.timeouts),
        ("[upstream]", current.upstream_proxy != new.upstream_proxy),
        ("[admin]", current.admin != new.admin),
        ("[access]", current.access != new.access),
        (
            "log.capture_bodies",
            current.capture_bodies != new.capture_bodies,
        ),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect();
    if applied.is_empty() && restart.is_empty() {
        log::debug!("{} read again: nothing changed", path.display());
    }
    if !applied.is_empty() {
        log::info!(
            "config reloaded from {}: {}",
            path.display(),
            applied.join(", ")
        );
    }
    if !restart.is_empty() {
        log::warn!(
            "{} changed {}: restart Watchtower to apply (the running values stay until then)",
            path.display(),
            restart.join(", ")
        );
    }
    // Remember the file as read, so a later edit reports only what it changes itself.
    *current = new;
}
