//! Configuration: reads `watchtower.toml` (SPEC §9) and turns it into a validated [`Config`].
//!
//! This happens in two steps. The `Raw*` structs mirror the file exactly (every table is
//! `deny_unknown_fields`, so a misspelt key is an error rather than a silently ignored setting);
//! `check_*` functions then validate them once into [`Config`], which holds `IpAddr`s,
//! `SocketAddr`s, `Duration`s and absolute paths. No other module sees a raw string from the file.
//! Every rejection is one [`ConfigError`] naming the file, the key and, when known, the line.
//!
//! Paths (`tls.ca_cert`, `tls.ca_key`, `log.api_log`) are resolved against the folder of the
//! config file. Without a `[tls]` section (or with an empty one) the CA pair lives in the user's
//! data directory: `$XDG_DATA_HOME/watchtower/` when that variable holds an absolute path, else
//! `$HOME/Library/Application Support/watchtower/` on macOS and `$HOME/.local/share/watchtower/`
//! elsewhere; with neither variable set it falls back to `./.watchtower/`, made absolute against
//! the working directory at start-up. When `[tls]` names only one of the two files, the other is
//! its sibling in the same folder (`ca.pem` or `ca-key.pem`).
//!
//! Route domains are stored lowercased and without a trailing dot; the wildcard form
//! `*.example.test` is kept as written. Matching requests against routes belongs to
//! `crate::route`; creating the CA files belongs to the TLS module.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use toml::Spanned;

use crate::access::Access;
use crate::upstream_proxy::{NoProxy, UpstreamProxy};

/// The file `Config::load(None)` looks for in the working directory.
const DEFAULT_CONFIG_FILE: &str = "watchtower.toml";
const DEFAULT_PROXY_PORT: u16 = 8888;
const DEFAULT_DNS_PORT: u16 = 53;
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const DATA_DIR_NAME: &str = "watchtower";
/// Fallback CA folder when neither `XDG_DATA_HOME` nor `HOME` is set.
const FALLBACK_DATA_DIR: &str = ".watchtower";

const DEFAULT_CONNECT_SECS: u64 = 10;
const DEFAULT_REQUEST_HEADER_SECS: u64 = 15;
const DEFAULT_UPSTREAM_HEADER_SECS: u64 = 60;
const DEFAULT_IDLE_SECS: u64 = 60;
/// Longest route id.
pub const MAX_ROUTE_ID_BYTES: usize = 128;
/// Highest `[proxy] max_connections` accepted.
pub const MAX_CONNECTIONS: u32 = 1 << 20;
/// `max_connections` when the file leaves it out and the open-file limit is generous.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Descriptors kept back from client connections for listeners, pollers, the log, the admin
/// API, DNS and certificate files.
pub const RESERVED_FDS: u64 = 64;

/// The connection limit when `[proxy] max_connections` is left out: what the open-file limit
/// allows at two descriptors per connection (client and upstream) after [`RESERVED_FDS`], at
/// least 8 and at most [`DEFAULT_MAX_CONNECTIONS`].
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let fit = open_file_limit.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(8, DEFAULT_MAX_CONNECTIONS)
}

/// Most event-loop threads `[proxy] workers` may ask for.
pub const MAX_WORKERS: u16 = 256;
/// The admin API's port when `[admin] port` is absent.
pub const DEFAULT_ADMIN_PORT: u16 = 8889;
/// Upper bound for any timeout: a year. Larger values are almost certainly a unit mistake.
const MAX_TIMEOUT_SECS: f64 = 86_400.0 * 365.0;

/// Longest host name DNS allows, in bytes, without the trailing dot (RFC 1035 §2.3.4).
pub(crate) const MAX_DOMAIN_BYTES: usize = 253;
/// Longest single DNS label, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL_BYTES: usize = 63;

const WILDCARD_RULE: &str =
    "`*.` must be a whole leading label followed by at least one label, as in \"*.example.test\"";

/// The validated configuration every other module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address every listener binds to.
    pub listen: IpAddr,
    /// Forward proxy port (HTTP_PROXY / HTTPS_PROXY target).
    pub proxy_port: u16,
    /// Reverse HTTP listener; `None` means the listener is off.
    pub reverse_http_port: Option<u16>,
    /// Reverse HTTPS listener; `None` means the listener is off.
    pub reverse_https_port: Option<u16>,
    /// DNS server for pass-through lookups; `None` means the system resolver.
    pub dns_server: Option<SocketAddr>,
    /// The on/off switch for local routing, as read at start-up.
    pub local_routing: bool,
    /// Event-loop threads as configured; `None` means one per core ([`Config::worker_count`]).
    pub workers: Option<u16>,
    /// `[proxy] max_connections`: client connections served at once over all workers; `None`
    /// derives it from the open-file limit ([`default_max_connections`]).
    pub max_connections: Option<u32>,
    pub tls: TlsPaths,
    /// Where API log lines go (absolute); `None` means no API log.
    pub api_log: Option<PathBuf>,
    pub timeouts: Timeouts,
    /// `[log] capture_bodies`: bytes of each body (and the heads) kept with the recent exchanges
    /// for the admin API's HAR export; 0 keeps none.
    pub capture_bodies: usize,
    /// `[access]`: who may use listeners bound beyond loopback.
    pub access: Access,
    /// The admin API's address (`[admin]`); `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// `[admin] port` was left out: the admin API is optional there, and when its default port
    /// is taken (another instance, or one of this config's listeners) Watchtower runs without
    /// it rather than refusing to start.
    pub admin_port_is_default: bool,
    /// `[upstream] proxy`: where pass-through traffic goes; `None` = straight to real servers.
    pub upstream_proxy: Option<UpstreamProxy>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// The file this came from, None for built-in defaults.
    pub source: Option<PathBuf>,
}

/// Where the local CA lives. Both paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Extra root certificates (PEM) trusted, besides the Mozilla roots, when Watchtower
    /// speaks TLS to real servers: a corporate CA, or a test origin's.
    pub extra_roots: Option<PathBuf>,
}

/// Deadlines, see SPEC §9 and §10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Upstream TCP connect.
    pub connect: Duration,
    /// Whole client request head, from its first byte.
    pub request_header: Duration,
    /// Upstream must start its response within this.
    pub upstream_header: Duration,
    /// Idle keep-alive connection or idle tunnel.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(DEFAULT_CONNECT_SECS),
            request_header: Duration::from_secs(DEFAULT_REQUEST_HEADER_SECS),
            upstream_header: Duration::from_secs(DEFAULT_UPSTREAM_HEADER_SECS),
            idle: Duration::from_secs(DEFAULT_IDLE_SECS),
        }
    }
}

/// One local route: requests for `domain` go to `target_host:target_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    /// Lowercased, no trailing dot; `*.example.test` for a wildcard.
    pub domain: String,
    /// Host name or IP address; an IPv6 literal is stored without brackets.
    pub target_host: String,
    pub target_port: u16,
    pub enabled: bool,
}

/// A configuration that cannot be used, with a message a user can act on.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn new(message: String) -> ConfigError {
        ConfigError { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// `--config PATH` given -> that file (missing file is an error naming it); None ->
    /// `./watchtower.toml` if it exists, else `Config::defaults()`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load_file(path),
            None => {
                let path = Path::new(DEFAULT_CONFIG_FILE);
                if path.exists() {
                    Config::load_file(path)
                } else {
                    log::info!(
                        "no --config and no ./{DEFAULT_CONFIG_FILE}: using built-in defaults"
                    );
                    Ok(Config::defaults())
                }
            }
        }
    }

    fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|err| {
            ConfigError::new(match err.kind() {
                io::ErrorKind::NotFound => {
                    format!("config file {} does not exist", path.display())
                }
                _ => format!("cannot read config file {}: {err}", path.display()),
            })
        })?;
        let file = absolute(path);
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::from_toml_str(&text, &base_dir, &path.display().to_string())?;
        log::info!("config loaded from {}", file.display());
        config.source = Some(file);
        Ok(config)
    }

    /// Parses and validates TOML text; relative paths (ca_cert, ca_key, api_log) resolve against
    /// `base_dir` (the config file's folder). `origin` names the file in messages.
    ///
    /// `source` is left `None`; [`Config::load`] fills it in.
    pub fn from_toml_str(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
        let file = SourceText { text, origin };
        let raw: RawFile = toml::from_str(text).map_err(|err| file.toml_error(&err))?;
        let base_dir = absolute(base_dir);

        let proxy = check_proxy(&file, raw.proxy)?;
        let tls = check_tls(&file, raw.tls, &base_dir)?;
        let capture_bodies = match &raw.log.capture_bodies {
            None => 0,
            Some(size) => parse_size(size.get_ref())
                .map_err(|problem| file.error(Some(size.span()), "log.capture_bodies", problem))?,
        };
        let api_log = raw
            .log
            .api_log
            .map(|path| check_path(&file, "log.api_log", &path, &base_dir))
            .transpose()?;
        let timeouts = check_timeouts(&file, &raw.timeouts)?;
        let upstream_proxy = check_upstream(&file, raw.upstream)?;
        let access = check_access(&file, raw.access, proxy.listen, proxy.listen_span.clone())?;
        let admin_port_is_default = raw.admin.port.is_none();
        let admin = check_admin(&file, raw.admin, &proxy, &access)?;
        let routes = check_routes(&file, raw.route)?;

        Ok(Config {
            listen: proxy.listen,
            proxy_port: proxy.proxy_port,
            reverse_http_port: proxy.reverse_http_port,
            reverse_https_port: proxy.reverse_https_port,
            dns_server: proxy.dns_server,
            local_routing: proxy.local_routing,
            workers: proxy.workers,
            max_connections: proxy.max_connections,
            tls,
            api_log,
            timeouts,
            capture_bodies,
            access,
            admin,
            admin_port_is_default,
            upstream_proxy,
            routes,
            source: None,
        })
    }

    /// Built-in defaults: forward proxy on 127.0.0.1:8888, no reverse listeners, routing on, no
    /// routes, no api_log, the CA pair in the user's data directory (see the module doc).
    pub fn defaults() -> Config {
        Config {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            proxy_port: DEFAULT_PROXY_PORT,
            reverse_http_port: None,
            reverse_https_port: None,
            dns_server: None,
            local_routing: true,
            workers: None,
            max_connections: None,
            tls: default_tls_paths(),
            api_log: None,
            timeouts: Timeouts::default(),
            capture_bodies: 0,
            access: Access::default(),
            admin: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_ADMIN_PORT,
            )),
            admin_port_is_default: true,
            upstream_proxy: None,
            routes: Vec::new(),
            source: None,
        }
    }

    /// Every listener as (name, SocketAddr): ("proxy", ..), ("reverse_http", ..),
    /// ("reverse_https", ..) for those configured.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut listeners = vec![("proxy", SocketAddr::new(self.listen, self.proxy_port))];
        if let Some(port) = self.reverse_http_port {
            listeners.push(("reverse_http", SocketAddr::new(self.listen, port)));
        }
        if let Some(port) = self.reverse_https_port {
            listeners.push(("reverse_https", SocketAddr::new(self.listen, port)));
        }
        listeners
    }

    /// How many event loops run: `[proxy] workers`, else one per core the process may use.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(usize::from(MAX_WORKERS)),
        }
    }

    /// Human-readable summary for `watchtower check`: listeners, switch, dns, api_log, timeouts,
    /// then the routing table in lookup precedence order and what the reverse ports use for
    /// 127.0.0.1 / localhost / ::1.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> fmt::Result {
        use std::fmt::Write;

        match &self.source {
            Some(path) => writeln!(out, "config: {}", path.display())?,
            None => writeln!(out, "config: built-in defaults")?,
        }
        writeln!(out, "listeners:")?;
        for (name, addr) in self.listeners() {
            writeln!(out, "  {name:<14} {addr}")?;
        }
        for (name, port) in [
            ("reverse_http", self.reverse_http_port),
            ("reverse_https", self.reverse_https_port),
        ] {
            if port.is_none() {
                writeln!(out, "  {name:<14} off")?;
            }
        }
        if self.local_routing {
            writeln!(out, "local routing: on")?;
        } else {
            writeln!(out, "local routing: off (every request passes through)")?;
        }
        match self.workers {
            Some(n) => writeln!(out, "workers: {n}")?,
            None => writeln!(out, "workers: {} (one per core)", self.worker_count())?,
        }
        match self.max_connections {
            Some(n) => writeln!(out, "max connections: {n}")?,
            None => writeln!(out, "max connections: from the open-file limit")?,
        }
        match self.dns_server {
            Some(addr) => writeln!(out, "dns server: {addr}")?,
            None => writeln!(out, "dns server: system resolver")?,
        }
        if !self.access.is_empty() {
            let blocks: Vec<String> = self
                .access
                .allow
                .iter()
                .map(|(net, bits)| format!("{net}/{bits}"))
                .collect();
            writeln!(
                out,
                "access: loopback, {}; {} user{} with a password",
                if blocks.is_empty() {
                    "no address block".to_owned()
                } else {
                    blocks.join(", ")
                },
                self.access.users.len(),
                if self.access.users.len() == 1 {
                    ""
                } else {
                    "s"
                }
            )?;
        }
        match self.admin {
            Some(addr) => writeln!(out, "admin API: http://{addr}/")?,
            None => writeln!(out, "admin API: off")?,
        }
        match &self.upstream_proxy {
            Some(proxy) if proxy.no_proxy.is_empty() => {
                writeln!(out, "upstream proxy: {proxy} (for pass-through traffic)")?
            }
            Some(proxy) => writeln!(
                out,
                "upstream proxy: {proxy} (for pass-through traffic; {} no_proxy entr{})",
                proxy.no_proxy.len(),
                if proxy.no_proxy.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            )?,
            None => writeln!(
                out,
                "upstream proxy: none (pass-through goes straight to real servers)"
            )?,
        }
        match &self.api_log {
            Some(path) => writeln!(out, "api log: {}", path.display())?,
            None => writeln!(out, "api log: off")?,
        }
        writeln!(
            out,
            "tls: ca_cert {}, ca_key {}",
            self.tls.ca_cert.display(),
            self.tls.ca_key.display()
        )?;
        let t = &self.timeouts;
        writeln!(
            out,
            "timeouts: connect {:?}, request_header {:?}, upstream_header {:?}, idle {:?}",
            t.connect, t.request_header, t.upstream_header, t.idle
        )?;

        writeln!(out, "routes (in lookup precedence order):")?;
        if self.routes.is_empty() {
            writeln!(out, "  (none)")?;
        } else {
            let mut rows = vec![[
                "ID".to_owned(),
                "DOMAIN".to_owned(),
                "TARGET".to_owned(),
                "ENABLED".to_owned(),
                "MATCH".to_owned(),
            ]];
            for route in routes_by_precedence(&self.routes) {
                let is_wildcard = route.domain.starts_with("*.");
                rows.push([
                    route.id.clone(),
                    route.domain.clone(),
                    target_text(route),
                    if route.enabled { "yes" } else { "no" }.to_owned(),
                    if is_wildcard {
                        "wildcard (any subdomain, not the apex)"
                    } else {
                        "exact"
                    }
                    .to_owned(),
                ]);
            }
            write_columns(out, &rows)?;
        }

        match self.routes.iter().find(|route| route.enabled) {
            Some(route) => writeln!(
                out,
                "reverse ports send 127.0.0.1 / localhost / ::1 to route \"{}\" ({}), \
                 the first enabled route in file order",
                route.id,
                target_text(route)
            )?,
            None => writeln!(
                out,
                "reverse ports: no enabled route, so 127.0.0.1 / localhost / ::1 are not routed locally"
            )?,
        }
        Ok(())
    }
}

/// Routes ordered as `RouteTable::lookup` prefers them: exact domains first (file order), then
/// wildcards with the longest suffix first.
fn routes_by_precedence(routes: &[Route]) -> Vec<&Route> {
    let mut ordered: Vec<&Route> = routes.iter().collect();
    // Stable sort: ties keep file order.
    ordered.sort_by_key(|route| match route.domain.strip_prefix("*.") {
        None => (0, 0, 0),
        Some(suffix) => (
            1,
            usize::MAX - suffix.split('.').count(),
            usize::MAX - suffix.len(),
        ),
    });
    ordered
}

fn target_text(route: &Route) -> String {
    SocketAddrText(&route.target_host, route.target_port).to_string()
}

/// `host:port`, with brackets around an IPv6 literal.
struct SocketAddrText<'a>(&'a str, u16);

impl fmt::Display for SocketAddrText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]:{}", self.0, self.1)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

/// Writes rows as left-aligned columns separated by two spaces, indented by two.
fn write_columns<const N: usize>(out: &mut String, rows: &[[String; N]]) -> fmt::Result {
    use std::fmt::Write;

    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::from(" ");
        for (width, cell) in widths.iter().zip(row) {
            write!(line, " {cell:<width$} ")?;
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn default_tls_paths() -> TlsPaths {
    let dir = data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"));
    TlsPaths {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        extra_roots: None,
    }
}

/// The folder for Watchtower's own data (the CA pair), from the two environment variables.
/// Relative or empty values are ignored, as the XDG base directory spec asks.
fn data_dir_from(xdg_data_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    let usable = |value: Option<OsString>| value.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = usable(xdg_data_home) {
        return dir.join(DATA_DIR_NAME);
    }
    if let Some(home) = usable(home) {
        let base = if cfg!(target_os = "macos") {
            home.join("Library").join("Application Support")
        } else {
            home.join(".local").join("share")
        };
        return base.join(DATA_DIR_NAME);
    }
    absolute(Path::new(FALLBACK_DATA_DIR))
}

/// `path` made absolute against the working directory, without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// Step one: the file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    allow: Option<Spanned<Vec<String>>>,
    users: Option<Spanned<Vec<RawUser>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    user: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    port: Option<Spanned<i64>>,
    listen: Option<Spanned<String>>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    proxy: Option<Spanned<String>>,
    no_proxy: Option<Spanned<RawNoProxy>>,
}

/// `no_proxy` as a list, or one comma-separated string as in the `NO_PROXY` variable.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawNoProxy {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: Option<Spanned<String>>,
    // Ports are read as i64 so that 70000 or -1 get our own message, not a serde overflow.
    proxy_port: Option<Spanned<i64>>,
    reverse_http_port: Option<Spanned<i64>>,
    reverse_https_port: Option<Spanned<i64>>,
    dns_server: Option<Spanned<String>>,
    local_routing: Option<bool>,
    workers: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: Option<Spanned<String>>,
    ca_key: Option<Spanned<String>>,
    extra_roots: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    api_log: Option<Spanned<String>>,
    capture_bodies: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<Seconds>>,
    request_header: Option<Spanned<Seconds>>,
    upstream_header: Option<Spanned<Seconds>>,
    idle: Option<Spanned<Seconds>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: Spanned<String>,
    domain: Spanned<String>,
    target_host: Spanned<String>,
    target_port: Spanned<i64>,
    enabled: Option<bool>,
}

/// A number of seconds as written: TOML integer or float.
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        struct SecondsVisitor;

        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds, such as 10 or 2.5")
            }

            fn visit_i64<E>(self, value: i64) -> Result<Seconds, E> {
                Ok(Seconds(value as f64))
            }

            fn visit_u64<E>(self, value: u64) -> Result<Seconds, E> {
                Ok(Seconds(value as f64))
            }

            fn visit_f64<E>(self, value: f64) -> Result<Seconds, E> {
                Ok(Seconds(value))
            }
        }

        deserializer.deserialize_any(SecondsVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Step two: validation into the runtime types.

/// The text being parsed and its name, so errors can point at a line.
struct SourceText<'a> {
    text: &'a str,
    origin: &'a str,
}

impl SourceText<'_> {
    /// `origin, line N: key: problem` (the line when `span` is known).
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        problem: impl fmt::Display,
    ) -> ConfigError {
        let origin = self.origin;
        ConfigError::new(match span {
            Some(span) => {
                let (line, _) = self.position(span.start);
                format!("{origin}, line {line}: {key}: {problem}")
            }
            None => format!("{origin}: {key}: {problem}"),
        })
    }

    /// One line with position, toml's message and the offending source line, instead of
    /// toml's multi-line rendering.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let origin = self.origin;
        // Serde names the Rust type ("i64"); a user wrote an integer.
        let message = err
            .message()
            .trim()
            .replace('\n', "; ")
            .replace("expected i64", "expected an integer");
        ConfigError::new(match err.span() {
            Some(span) => {
                let (line, column) = self.position(span.start);
                let source_line = self.text.lines().nth(line - 1).unwrap_or("").trim();
                if source_line.is_empty() {
                    format!("{origin}, line {line}, column {column}: {message}")
                } else {
                    format!(
                        "{origin}, line {line}, column {column}: {message} (in `{source_line}`)"
                    )
                }
            }
            None => format!("{origin}: {message}"),
        })
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

struct ProxySettings {
    listen: IpAddr,
    listen_span: Option<Range<usize>>,
    proxy_port: u16,
    reverse_http_port: Option<u16>,
    reverse_https_port: Option<u16>,
    dns_server: Option<SocketAddr>,
    local_routing: bool,
    workers: Option<u16>,
    max_connections: Option<u32>,
}

fn check_proxy(file: &SourceText<'_>, raw: RawProxy) -> Result<ProxySettings, ConfigError> {
    let listen = match &raw.listen {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(value) => value.get_ref().parse().map_err(|_| {
            file.error(
                Some(value.span()),
                "proxy.listen",
                format_args!(
                    "{:?} is not an IP address (e.g. \"127.0.0.1\" or \"::1\")",
                    value.get_ref()
                ),
            )
        })?,
    };

    let ports = [
        ("proxy.proxy_port", &raw.proxy_port),
        ("proxy.reverse_http_port", &raw.reverse_http_port),
        ("proxy.reverse_https_port", &raw.reverse_https_port),
    ];
    let mut checked: Vec<(&str, u16, Option<Range<usize>>)> = Vec::new();
    for (key, value) in ports {
        let (port, span) = match value {
            Some(value) => (check_port(file, key, value)?, Some(value.span())),
            // Only the forward proxy has a default; the reverse listeners are off when absent.
            None if key == "proxy.proxy_port" => (DEFAULT_PROXY_PORT, None),
            None => continue,
        };
        if let Some((other, _, other_span)) = checked.iter().find(|(_, p, _)| *p == port) {
            let default = if other_span.is_none() {
                " (its default)"
            } else {
                ""
            };
            return Err(file.error(
                span,
                key,
                format_args!(
                    "port {port} is also used by {other}{default}; each listener needs its own port"
                ),
            ));
        }
        checked.push((key, port, span));
    }
    let port_of = |key: &str| {
        checked
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, p, _)| *p)
    };

    let dns_server = raw
        .dns_server
        .as_ref()
        .map(|value| {
            parse_dns_server(value.get_ref())
                .map_err(|problem| file.error(Some(value.span()), "proxy.dns_server", problem))
        })
        .transpose()?;

    let workers = check_count(
        file,
        "proxy.workers",
        raw.workers.as_ref(),
        MAX_WORKERS,
        "a usable number of workers",
        "for one per core",
    )?;
    let max_connections = check_count(
        file,
        "proxy.max_connections",
        raw.max_connections.as_ref(),
        MAX_CONNECTIONS,
        "a usable connection limit",
        "to derive it from the open-file limit",
    )?;

    Ok(ProxySettings {
        listen,
        listen_span: raw.listen.as_ref().map(Spanned::span),
        proxy_port: port_of("proxy.proxy_port").unwrap_or(DEFAULT_PROXY_PORT),
        reverse_http_port: port_of("proxy.reverse_http_port"),
        reverse_https_port: port_of("proxy.reverse_https_port"),
        dns_server,
        local_routing: raw.local_routing.unwrap_or(true),
        workers,
        max_connections,
    })
}

/// An optional count in `1..=max`; the error reads "{value} is not {what} (1-{max}; leave it
/// out {default})".
fn check_count<T>(
    file: &SourceText<'_>,
    key: &str,
    value: Option<&Spanned<i64>>,
    max: T,
    what: &str,
    default: &str,
) -> Result<Option<T>, ConfigError>
where
    T: TryFrom<i64> + PartialOrd + From<u8> + fmt::Display + Copy,
{
    let Some(value) = value else {
        return Ok(None);
    };
    match T::try_from(*value.get_ref()) {
        Ok(n) if n >= T::from(1) && n <= max => Ok(Some(n)),
        _ => Err(file.error(
            Some(value.span()),
            key,
            format_args!(
                "{} is not {what} (1-{max}; leave it out {default})",
                value.get_ref()
            ),
        )),
    }
}

fn check_port(file: &SourceText<'_>, key: &str, value: &Spanned<i64>) -> Result<u16, ConfigError> {
    let number = *value.get_ref();
    match u16::try_from(number) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(file.error(
            Some(value.span()),
            key,
            format_args!("{number} is not a usable port (1-65535)"),
        )),
    }
}

/// `"ip"`, `"ip:port"` or `"[v6]:port"`; the port defaults to 53.
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let addr = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, DEFAULT_DNS_PORT)
    } else if let Some(ip) = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
    {
        SocketAddr::new(IpAddr::V6(ip), DEFAULT_DNS_PORT)
    } else {
        return Err(format!(
            "{text:?} is not an IP address with an optional port \
             (e.g. \"127.0.0.1\", \"127.0.0.1:5353\" or \"[::1]:53\")"
        ));
    };
    if addr.port() == 0 {
        return Err(format!("{text:?}: 0 is not a usable port (1-65535)"));
    }
    Ok(addr)
}

/// Largest `capture_bodies`: 64 MiB of each body, at most 1000 exchanges kept.
const MAX_CAPTURE_BYTES: usize = 64 << 20;

/// `"1MiB"`, `"512KiB"`, `"4096"` (bytes), `"0"` (off).
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" | "k" | "kB" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        _ => {
            return Err(format!(
                "{text:?} is not a size like \"1MiB\", \"512KiB\" or \"0\""
            ));
        }
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"1MiB\", \"512KiB\" or \"0\""))?;
    match n.checked_mul(scale) {
        Some(bytes) if bytes <= MAX_CAPTURE_BYTES => Ok(bytes),
        _ => Err(format!("{text:?} is more than the 64MiB allowed")),
    }
}

fn check_access(
    file: &SourceText<'_>,
    raw: RawAccess,
    listen: IpAddr,
    listen_span: Option<Range<usize>>,
) -> Result<Access, ConfigError> {
    let mut access = Access::default();
    if let Some(allow) = raw.allow {
        let span = allow.span();
        for block in allow.into_inner() {
            let parsed = Access::parse_block(&block)
                .map_err(|problem| file.error(Some(span.clone()), "access.allow", problem))?;
            access.allow.push(parsed);
        }
    }
    if let Some(users) = raw.users {
        let span = users.span();
        for u in users.into_inner() {
            if u.user.is_empty() || u.user.contains(':') || u.password.is_empty() {
                return Err(file.error(
                    Some(span),
                    "access.users",
                    "each user needs a name without ':' and a non-empty password",
                ));
            }
            access.users.push((u.user, u.password));
        }
    }
    if !listen.is_loopback() && access.is_empty() {
        return Err(file.error(
            listen_span,
            "proxy.listen",
            format_args!(
                "{listen} lets other machines use the proxy; say who may: [access] allow = \
                 [\"192.168.1.0/24\"] and/or users = [{{ user = \"...\", password = \"...\" }}]"
            ),
        ));
    }
    Ok(access)
}

fn check_admin(
    file: &SourceText<'_>,
    raw: RawAdmin,
    proxy: &ProxySettings,
    access: &Access,
) -> Result<Option<SocketAddr>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let listen = match &raw.listen {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(value) => {
            let ip: IpAddr = value.get_ref().parse().map_err(|_| {
                file.error(
                    Some(value.span()),
                    "admin.listen",
                    format_args!("{:?} is not an IP address", value.get_ref()),
                )
            })?;
            if !ip.is_loopback() && access.is_empty() {
                return Err(file.error(
                    Some(value.span()),
                    "admin.listen",
                    format_args!(
                        "{ip} lets other machines change routing for everyone who uses the \
                         proxy; say who may first: [access] allow and/or users"
                    ),
                ));
            }
            ip
        }
    };
    let port = match &raw.port {
        None => DEFAULT_ADMIN_PORT,
        Some(value) => check_port(file, "admin.port", value)?,
    };
    let taken = [
        ("proxy.proxy_port", Some(proxy.proxy_port)),
        ("proxy.reverse_http_port", proxy.reverse_http_port),
        ("proxy.reverse_https_port", proxy.reverse_https_port),
    ];
    if let Some((key, _)) = taken.iter().find(|(_, p)| *p == Some(port)) {
        // A listener on the default admin port: run without the admin API (said at start)
        // rather than refuse a file that never asked for it.
        if raw.port.is_some() {
            return Err(file.error(
                raw.port.as_ref().map(Spanned::span),
                "admin.port",
                format_args!("port {port} is also used by {key}; each listener needs its own port"),
            ));
        }
    }
    Ok(Some(SocketAddr::new(listen, port)))
}

fn check_upstream(
    file: &SourceText<'_>,
    raw: RawUpstream,
) -> Result<Option<UpstreamProxy>, ConfigError> {
    let Some(url) = raw.proxy else {
        if let Some(no_proxy) = raw.no_proxy {
            return Err(file.error(
                Some(no_proxy.span()),
                "upstream.no_proxy",
                "has no effect without upstream.proxy",
            ));
        }
        return Ok(None);
    };
    let mut proxy = UpstreamProxy::parse(url.get_ref())
        .map_err(|problem| file.error(Some(url.span()), "upstream.proxy", problem))?;
    if let Some(no_proxy) = raw.no_proxy {
        let span = no_proxy.span();
        let entries: Vec<String> = match no_proxy.into_inner() {
            RawNoProxy::List(list) => list,
            RawNoProxy::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        for entry in entries {
            let rule = NoProxy::parse(&entry)
                .map_err(|problem| file.error(Some(span.clone()), "upstream.no_proxy", problem))?;
            proxy.no_proxy.push(rule);
        }
    }
    Ok(Some(proxy))
}

fn check_tls(file: &SourceText<'_>, raw: RawTls, base_dir: &Path) -> Result<TlsPaths, ConfigError> {
    let ca_cert = raw
        .ca_cert
        .as_ref()
        .map(|path| check_path(file, "tls.ca_cert", path, base_dir))
        .transpose()?;
    let ca_key = raw
        .ca_key
        .as_ref()
        .map(|path| check_path(file, "tls.ca_key", path, base_dir))
        .transpose()?;
    let extra_roots = raw
        .extra_roots
        .as_ref()
        .map(|path| check_path(file, "tls.extra_roots", path, base_dir))
        .transpose()?;
    let sibling = |path: &Path, name: &str| path.parent().unwrap_or(base_dir).join(name);
    let paths = match (ca_cert, ca_key) {
        (None, None) => {
            return Ok(TlsPaths {
                extra_roots,
                ..default_tls_paths()
            });
        }
        (Some(ca_cert), Some(ca_key)) => TlsPaths {
            ca_cert,
            ca_key,
            extra_roots,
        },
        (Some(ca_cert), None) => TlsPaths {
            ca_key: sibling(&ca_cert, CA_KEY_FILE),
            ca_cert,
            extra_roots,
        },
        (None, Some(ca_key)) => TlsPaths {
            ca_cert: sibling(&ca_key, CA_CERT_FILE),
            ca_key,
            extra_roots,
        },
    };
    if paths.ca_cert == paths.ca_key {
        let span = raw.ca_key.or(raw.ca_cert).map(|value| value.span());
        return Err(file.error(
            span,
            "tls.ca_key",
            format_args!(
                "{} is also tls.ca_cert; the certificate and the key need two files",
                paths.ca_key.display()
            ),
        ));
    }
    Ok(paths)
}

/// A non-empty path, resolved against `base_dir` when relative.
fn check_path(
    file: &SourceText<'_>,
    key: &str,
    value: &Spanned<String>,
    base_dir: &Path,
) -> Result<PathBuf, ConfigError> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        return Err(file.error(Some(value.span()), key, "the path is empty"));
    }
    Ok(base_dir.join(text))
}

fn check_timeouts(file: &SourceText<'_>, raw: &RawTimeouts) -> Result<Timeouts, ConfigError> {
    let defaults = Timeouts::default();
    let check = |key: &str, value: &Option<Spanned<Seconds>>, default: Duration| {
        let Some(value) = value else {
            return Ok(default);
        };
        let seconds = value.get_ref().0;
        let problem = if !seconds.is_finite() {
            Some(format!("{seconds} is not a number of seconds"))
        } else if seconds <= 0.0 {
            Some(format!("{seconds} must be more than 0 seconds"))
        } else if seconds > MAX_TIMEOUT_SECS {
            Some(format!(
                "{seconds} is more than a year ({MAX_TIMEOUT_SECS} seconds)"
            ))
        } else {
            None
        };
        let duration = match problem {
            Some(problem) => Err(problem),
            // A positive value below a nanosecond would round to zero: treat it as zero.
            None => Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{seconds} must be more than 0 seconds")),
        };
        duration.map_err(|problem| file.error(Some(value.span()), key, problem))
    };
    Ok(Timeouts {
        connect: check("timeouts.connect", &raw.connect, defaults.connect)?,
        request_header: check(
            "timeouts.request_header",
            &raw.request_header,
            defaults.request_header,
        )?,
        upstream_header: check(
            "timeouts.upstream_header",
            &raw.upstream_header,
            defaults.upstream_header,
        )?,
        idle: check("timeouts.idle", &raw.idle, defaults.idle)?,
    })
}

fn check_routes(file: &SourceText<'_>, raw: Vec<RawRoute>) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let id = raw.id.get_ref();
        let route = check_route(
            id,
            raw.domain.get_ref(),
            raw.target_host.get_ref(),
            *raw.target_port.get_ref(),
            raw.enabled.unwrap_or(true),
            &routes,
        )
        .map_err(|e| {
            let span = match e.field {
                "id" => raw.id.span(),
                "domain" => raw.domain.span(),
                "target_host" => raw.target_host.span(),
                _ => raw.target_port.span(),
            };
            file.error(
                Some(span),
                &format!("route[{index}] (id {id:?})"),
                e.message,
            )
        })?;
        routes.push(route);
    }
    Ok(routes)
}

/// Why a route was refused: the field, and the sentence `watchtower.toml` would get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Validates one route to sit beside `others` (the rest of the table, in order), exactly as the
/// config file's routes are validated; the admin API uses it too.
pub fn check_route(
    id: &str,
    domain: &str,
    target_host: &str,
    target_port: i64,
    enabled: bool,
    others: &[Route],
) -> Result<Route, RouteError> {
    let fail = |field: &'static str, message: String| RouteError { field, message };
    if id.trim().is_empty() {
        return Err(fail("id", "id must not be empty".to_owned()));
    }
    // Ids go into log lines, URLs and the file: no line breaks or other control characters.
    if id.chars().any(char::is_control) {
        return Err(fail(
            "id",
            format!("id {id:?} contains a control character (line break, tab, NUL, ...)"),
        ));
    }
    if id.len() > MAX_ROUTE_ID_BYTES {
        return Err(fail(
            "id",
            format!("id is longer than {MAX_ROUTE_ID_BYTES} bytes"),
        ));
    }
    let checked_domain = check_domain(domain)
        .map_err(|problem| fail("domain", format!("domain {domain:?} {problem}")))?;
    let checked_host = check_target_host(target_host).map_err(|problem| {
        fail(
            "target_host",
            format!("target_host {target_host:?} {problem}"),
        )
    })?;
    let port = match u16::try_from(target_port) {
        Ok(port) if port != 0 => port,
        _ => {
            return Err(fail(
                "target_port",
                format!("target_port: {target_port} is not a usable port (1-65535)"),
            ));
        }
    };
    if let Some((other, route)) = others.iter().enumerate().find(|(_, r)| r.id == id) {
        return Err(fail(
            "id",
            format!(
                "id {id:?} is already used by route[{other}] (domain {:?})",
                route.domain
            ),
        ));
    }
    if let Some((other, route)) = others
        .iter()
        .enumerate()
        .find(|(_, r)| r.domain == checked_domain)
    {
        return Err(fail(
            "domain",
            format!(
                "domain {checked_domain:?} is already routed by route[{other}] (id {:?}); \
                 one domain has one local target",
                route.id
            ),
        ));
    }
    Ok(Route {
        id: id.to_owned(),
        domain: checked_domain,
        target_host: checked_host,
        target_port: port,
        enabled,
    })
}

/// Checks a route domain and returns it lowercased without a trailing dot. The error text
/// completes a sentence that starts with the domain.
fn check_domain(domain: &str) -> Result<String, String> {
    let lower = domain.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("is empty; give a host name such as \"app.example.test\"".to_owned());
    }
    // An IPv6 literal is a host a client can ask for; it is stored without brackets, the way
    // `route::split_authority` hands hosts to the table.
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    if unbracketed.parse::<Ipv6Addr>().is_ok() {
        return Ok(unbracketed.to_owned());
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.is_empty() || rest.contains('*') {
        return Err(format!("is not valid: {WILDCARD_RULE}"));
    }
    if name.len() > MAX_DOMAIN_BYTES {
        return Err(format!("is longer than {MAX_DOMAIN_BYTES} bytes"));
    }
    check_labels(rest)?;
    Ok(name.to_owned())
}

/// Checks the dot-separated labels of a host name (no wildcard).
fn check_labels(name: &str) -> Result<(), String> {
    if name.len() > MAX_DOMAIN_BYTES {
        return Err(format!("is longer than {MAX_DOMAIN_BYTES} bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading dot or two dots in a row)".to_owned());
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(format!("has a label longer than {MAX_LABEL_BYTES} bytes"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(if c.is_ascii() {
                format!("contains {c:?}; labels may hold only letters, digits, '-' and '_'")
            } else {
                format!("contains {c:?}; write an international name in its xn-- (punycode) form")
            });
        }
    }
    Ok(())
}

/// Checks a route target host and returns it as stored (IPv6 without brackets). The error
/// text completes a sentence that starts with the host.
fn check_target_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("is empty; give a host name or IP address such as \"127.0.0.1\"".to_owned());
    }
    if host.chars().any(char::is_whitespace) {
        return Err("contains whitespace".to_owned());
    }
    if host.contains("://") || host.contains('/') {
        return Err("looks like a URL; give a host name or IP address, not a URL".to_owned());
    }
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.strip_suffix(']') {
            Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => Ok(inner.to_owned()),
            Some(_) => Err("is not an IPv6 address inside its brackets".to_owned()),
            None if rest.contains("]:") => {
                Err("contains a port; put the port in target_port".to_owned())
            }
            None => Err("has an unclosed '['".to_owned()),
        };
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    if host.contains(':') {
        return Err("contains a port; put the port in target_port".to_owned());
    }
    check_labels(host.strip_suffix('.').unwrap_or(host))?;
    Ok(host.to_owned())
}

/// Fuzz entry (cargo-fuzz target `config` and the corpus-replay test): any bytes given as a
/// config file are accepted or rejected with a message, never a panic.
pub fn fuzz_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml_str(text, Path::new("/"), "fuzz.toml");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/etc/watchtower";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new(BASE), "test.toml")
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error for\n{text}\ngot {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    /// Asserts that `text` is rejected with a message holding every one of `needles`.
    fn assert_error(text: &str, needles: &[&str]) {
        let message = error(text);
        for needle in needles {
            assert!(
                message.contains(needle),
                "message {message:?} lacks {needle:?} (input:\n{text})"
            );
        }
        assert!(
            !message.contains('\n'),
            "message is not one line: {message:?}"
        );
    }

    fn route_toml(id: &str, domain: &str, target_host: &str, target_port: i64) -> String {
        format!(
            "[[route]]\nid = {id:?}\ndomain = {domain:?}\ntarget_host = {target_host:?}\n\
             target_port = {target_port}\n"
        )
    }

    fn route(id: &str, domain: &str, port: u16, enabled: bool) -> Route {
        Route {
            id: id.to_owned(),
            domain: domain.to_owned(),
            target_host: "127.0.0.1".to_owned(),
            target_port: port,
            enabled,
        }
    }

    const SAMPLE: &str = r#"
[proxy]
listen = "127.0.0.1"
proxy_port = 8888
reverse_http_port = 8080
reverse_https_port = 8443
dns_server = "127.0.0.1:5353"
local_routing = false
workers = 3
max_connections = 2000

[tls]
ca_cert = "ca.pem"
ca_key = "/var/lib/wt/ca-key.pem"

[log]
api_log = "logs/api.jsonl"

[timeouts]
connect = 10
request_header = 1.5
upstream_header = 60
idle = 0.25

[[route]]
id = "web"
domain = "App.Example.Test"
target_host = "127.0.0.1"
target_port = 3100
enabled = true

[[route]]
id = "api"
domain = "*.api.example.test"
target_host = "[::1]"
target_port = 3200
enabled = false
"#;

    #[test]
    fn full_sample_parses_into_expected_values() {
        let config = parse(SAMPLE).unwrap();
        assert_eq!(
            config,
            Config {
                listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
                proxy_port: 8888,
                reverse_http_port: Some(8080),
                reverse_https_port: Some(8443),
                dns_server: Some("127.0.0.1:5353".parse().unwrap()),
                local_routing: false,
                workers: Some(3),
                max_connections: Some(2000),
                tls: TlsPaths {
                    ca_cert: PathBuf::from("/etc/watchtower/ca.pem"),
                    ca_key: PathBuf::from("/var/lib/wt/ca-key.pem"),
                    extra_roots: None,
                },
                api_log: Some(PathBuf::from("/etc/watchtower/logs/api.jsonl")),
                timeouts: Timeouts {
                    connect: Duration::from_secs(10),
                    request_header: Duration::from_millis(1500),
                    upstream_header: Duration::from_secs(60),
                    idle: Duration::from_millis(250),
                },
                capture_bodies: 0,
                access: Access::default(),
                admin: Some("127.0.0.1:8889".parse().unwrap()),
                admin_port_is_default: true,
                upstream_proxy: None,
                routes: vec![
                    Route {
                        id: "web".into(),
                        domain: "app.example.test".into(),
                        target_host: "127.0.0.1".into(),
                        target_port: 3100,
                        enabled: true,
                    },
                    Route {
                        id: "api".into(),
                        domain: "*.api.example.test".into(),
                        target_host: "::1".into(),
                        target_port: 3200,
                        enabled: false,
                    },
                ],
                source: None,
            }
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::defaults());
        assert_eq!(
            parse("[proxy]\n[tls]\n[log]\n[timeouts]\n").unwrap(),
            Config::defaults()
        );
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = Config::defaults();
        assert_eq!(config.listen, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.proxy_port, 8888);
        assert_eq!(config.reverse_http_port, None);
        assert_eq!(config.reverse_https_port, None);
        assert_eq!(config.dns_server, None);
        assert!(config.local_routing);
        assert_eq!(config.api_log, None);
        assert!(config.routes.is_empty());
        assert_eq!(config.source, None);
        assert_eq!(
            config.timeouts,
            Timeouts {
                connect: Duration::from_secs(10),
                request_header: Duration::from_secs(15),
                upstream_header: Duration::from_secs(60),
                idle: Duration::from_secs(60),
            }
        );
        assert!(config.tls.ca_cert.is_absolute());
        assert!(config.tls.ca_cert.ends_with("watchtower/ca.pem"));
        assert!(config.tls.ca_key.ends_with("watchtower/ca-key.pem"));
        assert_eq!(
            config.listeners(),
            vec![("proxy", "127.0.0.1:8888".parse().unwrap())]
        );
    }

    #[test]
    fn data_dir_prefers_xdg_then_home_then_working_directory() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            data_dir_from(os("/xdg"), os("/home/u")),
            PathBuf::from("/xdg/watchtower")
        );
        let home_dir = if cfg!(target_os = "macos") {
            "/home/u/Library/Application Support/watchtower"
        } else {
            "/home/u/.local/share/watchtower"
        };
        assert_eq!(data_dir_from(None, os("/home/u")), PathBuf::from(home_dir));
        // Relative or empty XDG_DATA_HOME is ignored, per the XDG spec.
        assert_eq!(
            data_dir_from(os("rel"), os("/home/u")),
            PathBuf::from(home_dir)
        );
        assert_eq!(
            data_dir_from(os(""), os("/home/u")),
            PathBuf::from(home_dir)
        );
        let fallback = data_dir_from(None, None);
        assert!(fallback.is_absolute());
        assert!(fallback.ends_with(".watchtower"));
    }

    #[test]
    fn relative_paths_resolve_against_base_dir() {
        let config = parse("[tls]\nca_cert = \"certs/ca.pem\"\nca_key = \"../k.pem\"\n[log]\napi_log = \"api.jsonl\"\n").unwrap();
        assert_eq!(
            config.tls.ca_cert,
            PathBuf::from("/etc/watchtower/certs/ca.pem")
        );
        assert_eq!(config.tls.ca_key, PathBuf::from("/etc/watchtower/../k.pem"));
        assert_eq!(
            config.api_log,
            Some(PathBuf::from("/etc/watchtower/api.jsonl"))
        );

        let config = parse("[log]\napi_log = \"/tmp/api.jsonl\"\n").unwrap();
        assert_eq!(config.api_log, Some(PathBuf::from("/tmp/api.jsonl")));

        // A relative base_dir is made absolute against the working directory.
        let config =
            Config::from_toml_str("[log]\napi_log = \"a.jsonl\"\n", Path::new("conf"), "x")
                .unwrap();
        let api_log = config.api_log.unwrap();
        assert!(api_log.is_absolute());
        assert!(api_log.ends_with("conf/a.jsonl"));
    }

    #[test]
    fn tls_with_one_key_defaults_the_other_to_its_sibling() {
        let config = parse("[tls]\nca_cert = \"pki/root.pem\"\n").unwrap();
        assert_eq!(
            config.tls.ca_cert,
            PathBuf::from("/etc/watchtower/pki/root.pem")
        );
        assert_eq!(
            config.tls.ca_key,
            PathBuf::from("/etc/watchtower/pki/ca-key.pem")
        );

        let config = parse("[tls]\nca_key = \"/k/secret.pem\"\n").unwrap();
        assert_eq!(config.tls.ca_cert, PathBuf::from("/k/ca.pem"));
        assert_eq!(config.tls.ca_key, PathBuf::from("/k/secret.pem"));
    }

    #[test]
    fn tls_cert_and_key_in_one_file_is_rejected() {
        assert_error(
            "[tls]\nca_cert = \"x.pem\"\nca_key = \"x.pem\"\n",
            &["test.toml, line 3", "tls.ca_key", "two files"],
        );
        assert_error(
            "[tls]\nca_cert = \"ca-key.pem\"\n",
            &["tls.ca_key", "two files"],
        );
    }

    #[test]
    fn empty_paths_are_rejected() {
        assert_error(
            "[tls]\nca_cert = \"\"\n",
            &["line 2", "tls.ca_cert", "empty"],
        );
        assert_error(
            "[log]\napi_log = \"\"\n",
            &["line 2", "log.api_log", "empty"],
        );
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_table() {
        let cases = [
            ("proxy_port = 1\n", "proxy_port"),
            ("[proxy]\nbogus = 1\n", "bogus"),
            ("[tls]\nca_crt = \"a\"\n", "ca_crt"),
            ("[log]\npath = \"a\"\n", "path"),
            ("[timeouts]\nread = 1\n", "read"),
            ("[metrics]\nx = 1\n", "metrics"),
        ];
        for (text, key) in cases {
            assert_error(text, &["test.toml", "unknown field", key, "line"]);
        }
        let text = format!(
            "{}colour = \"red\"\n",
            route_toml("a", "a.test", "127.0.0.1", 1)
        );
        assert_error(&text, &["unknown field", "colour", "line 6"]);
    }

    #[test]
    fn wrong_types_are_rejected_with_line_and_key() {
        assert_error(
            "[proxy]\n\nproxy_port = \"8888\"\n",
            &[
                "test.toml, line 3, column 14",
                "invalid type",
                "expected an integer",
                "proxy_port = \"8888\"",
            ],
        );
        assert_error(
            "[proxy]\nlocal_routing = \"yes\"\n",
            &["line 2", "local_routing"],
        );
        assert_error(
            "[timeouts]\nidle = \"60\"\n",
            &["line 2", "a number of seconds", "idle"],
        );
        assert_error("[proxy\n", &["line 1", "test.toml"]);
        assert_error("route = 3\n", &["route", "invalid type"]);
    }

    #[test]
    fn missing_route_fields_are_named() {
        for field in ["id", "domain", "target_host", "target_port"] {
            let full = route_toml("a", "a.test", "127.0.0.1", 3000);
            let text: String = full
                .lines()
                .filter(|line| !line.starts_with(&format!("{field} =")))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_error(&text, &["missing field", field]);
        }
    }

    #[test]
    fn listener_ports_out_of_range_are_rejected() {
        for key in ["proxy_port", "reverse_http_port", "reverse_https_port"] {
            for value in ["0", "70000", "-1"] {
                let text = format!("[proxy]\n{key} = {value}\n");
                assert_error(
                    &text,
                    &[
                        "test.toml, line 2",
                        &format!("proxy.{key}"),
                        &format!("{value} is not a usable port (1-65535)"),
                    ],
                );
            }
        }
    }

    #[test]
    fn listeners_sharing_a_port_are_rejected_naming_both() {
        assert_error(
            "[proxy]\nreverse_http_port = 8888\n",
            &[
                "proxy.reverse_http_port",
                "proxy.proxy_port (its default)",
                "8888",
            ],
        );
        assert_error(
            "[proxy]\nproxy_port = 1\nreverse_http_port = 2\nreverse_https_port = 2\n",
            &[
                "line 4",
                "proxy.reverse_https_port",
                "proxy.reverse_http_port",
            ],
        );
    }

    #[test]
    fn listen_must_be_an_ip_address() {
        assert_error(
            "[proxy]\nlisten = \"localhost\"\n",
            &[
                "line 2",
                "proxy.listen",
                "\"localhost\" is not an IP address",
            ],
        );
        let config = parse("[proxy]\nlisten = \"::1\"\nreverse_http_port = 8080\n").unwrap();
        assert_eq!(
            config.listeners(),
            vec![
                ("proxy", "[::1]:8888".parse().unwrap()),
                ("reverse_http", "[::1]:8080".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn max_connections_is_checked_and_otherwise_follows_the_open_file_limit() {
        assert_eq!(parse("").unwrap().max_connections, None);
        let config = parse("[proxy]\nmax_connections = 500\n").unwrap();
        assert_eq!(config.max_connections, Some(500));
        assert!(config.describe().contains("max connections: 500\n"));
        for bad in ["0", "-3", "2000000"] {
            assert_error(
                &format!("[proxy]\nmax_connections = {bad}\n"),
                &[
                    "line 2",
                    "proxy.max_connections",
                    &format!("{bad} is not a usable connection limit"),
                ],
            );
        }
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(default_max_connections(20), 8);
        assert_eq!(default_max_connections(1 << 20), DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn workers_are_counted_from_one_and_default_to_the_cores() {
        assert_eq!(parse("").unwrap().workers, None);
        assert!(parse("").unwrap().worker_count() >= 1);
        let config = parse("[proxy]\nworkers = 1\n").unwrap();
        assert_eq!((config.workers, config.worker_count()), (Some(1), 1));
        assert!(config.describe().contains("workers: 1\n"));
        for bad in ["0", "-2", "257", "100000"] {
            assert_error(
                &format!("[proxy]\nworkers = {bad}\n"),
                &[
                    "line 2",
                    "proxy.workers",
                    &format!("{bad} is not a usable number of workers"),
                ],
            );
        }
        assert_error(
            "[proxy]\nworkers = \"4\"\n",
            &["line 2", "expected an integer"],
        );
    }

    #[test]
    fn the_admin_api_reaches_beyond_loopback_only_with_access_rules() {
        assert_error(
            "[admin]\nlisten = \"0.0.0.0\"\n",
            &["line 2", "admin.listen", "[access] allow"],
        );
        let config =
            parse("[admin]\nlisten = \"0.0.0.0\"\n[access]\nallow = [\"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(config.admin, Some("0.0.0.0:8889".parse().unwrap()));
        assert_eq!(config.access.allow.len(), 1);
        assert_error(
            "[admin]\nport = 8888\n",
            &["admin.port", "also used by proxy.proxy_port"],
        );
        assert_eq!(parse("[admin]\nenabled = false\n").unwrap().admin, None);
        // A file that never mentions the admin API is not refused for its default port: a
        // listener there wins and Watchtower runs without the admin API.
        let config = parse("[proxy]\nproxy_port = 8889\n").unwrap();
        assert!(config.admin_port_is_default);
        assert!(
            !parse("[admin]\nport = 9000\n")
                .unwrap()
                .admin_port_is_default
        );
    }

    #[test]
    fn capture_sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("512KiB", 512 << 10),
            ("1MiB", 1 << 20),
            ("2 MB", 2 << 20),
        ] {
            let config = parse(&format!("[log]\ncapture_bodies = {text:?}\n")).unwrap();
            assert_eq!(config.capture_bodies, bytes, "{text}");
        }
        assert_error(
            "[log]\ncapture_bodies = \"lots\"\n",
            &["line 2", "log.capture_bodies", "not a size"],
        );
        assert_error(
            "[log]\ncapture_bodies = \"1GiB\"\n",
            &["log.capture_bodies"],
        );
        assert_error("[log]\ncapture_bodies = \"65MiB\"\n", &["64MiB"]);
    }

    #[test]
    fn upstream_proxy_and_no_proxy() {
        let config = parse(
            "[upstream]\nproxy = \"http://u:p@corp:3128\"\nno_proxy = \"localhost, .corp.test,10.0.0.0/8\"\n",
        )
        .unwrap();
        let proxy = config.upstream_proxy.as_ref().unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("corp", 3128));
        assert_eq!(proxy.no_proxy.len(), 3);
        assert!(proxy.bypasses("a.corp.test", 80) && !proxy.bypasses("example.com", 80));
        let described = config.describe();
        assert!(
            described.contains("upstream proxy: http://u:***@corp:3128"),
            "{described}"
        );
        assert!(
            !described.contains(":p@"),
            "the password is shown: {described}"
        );
        let list =
            parse("[upstream]\nproxy = \"http://corp:3128\"\nno_proxy = [\"a.test\", \"::1\"]\n");
        assert_eq!(list.unwrap().upstream_proxy.unwrap().no_proxy.len(), 2);
        assert_error(
            "[upstream]\nproxy = \"https://corp\"\n",
            &[
                "line 2",
                "upstream.proxy",
                "https:// proxies are not supported",
            ],
        );
        assert_error(
            "[upstream]\nproxy = \"http://corp:1\"\nno_proxy = [\"10.0.0.0/40\"]\n",
            &["line 3", "upstream.no_proxy", "0-32"],
        );
        assert_error(
            "[upstream]\nno_proxy = \"a.test\"\n",
            &["line 2", "upstream.no_proxy", "without upstream.proxy"],
        );
        assert_error(
            "[upstream]\nproxi = \"http://corp\"\n",
            &["line 2", "proxi"],
        );
    }

    #[test]
    fn dns_server_forms() {
        let cases = [
            ("127.0.0.1", "127.0.0.1:53"),
            ("127.0.0.1:5353", "127.0.0.1:5353"),
            ("::1", "[::1]:53"),
            ("[::1]", "[::1]:53"),
            ("[::1]:5353", "[::1]:5353"),
        ];
        for (written, expected) in cases {
            let config = parse(&format!("[proxy]\ndns_server = {written:?}\n")).unwrap();
            assert_eq!(
                config.dns_server,
                Some(expected.parse().unwrap()),
                "{written}"
            );
        }
        for bad in ["dns.google", "1.2.3.4:x", "1.2.3.4:70000", "", "1.2.3.4:0"] {
            assert_error(
                &format!("[proxy]\ndns_server = {bad:?}\n"),
                &["line 2", "proxy.dns_server"],
            );
        }
    }

    #[test]
    fn duplicate_route_ids_are_rejected() {
        let text = format!(
            "{}{}",
            route_toml("web", "a.test", "127.0.0.1", 1),
            route_toml("web", "b.test", "127.0.0.1", 2)
        );
        assert_error(
            &text,
            &[
                "line 7",
                "route[1] (id \"web\")",
                "already used by route[0]",
            ],
        );
    }

    #[test]
    fn duplicate_domains_are_rejected_ignoring_case_and_trailing_dot() {
        let text = format!(
            "{}{}",
            route_toml("a", "App.Test.", "127.0.0.1", 1),
            route_toml("b", "app.test", "127.0.0.1", 2)
        );
        assert_error(
            &text,
            &[
                "route[1] (id \"b\")",
                "route[0] (id \"a\")",
                "\"app.test\"",
                "line 8",
            ],
        );
    }

    #[test]
    fn route_domains_are_validated() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abc"; 64].join(".");
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            ("*example.test".into(), "`*.` must be a whole leading label"),
            ("a.*.test".into(), "`*.` must be a whole leading label"),
            ("*".into(), "`*.` must be a whole leading label"),
            ("*.".into(), "`*.` must be a whole leading label"),
            ("**.x".into(), "`*.` must be a whole leading label"),
            ("*.*.x".into(), "`*.` must be a whole leading label"),
            ("a..test".into(), "empty label"),
            (".a.test".into(), "empty label"),
            ("*..test".into(), "empty label"),
            ("a b.test".into(), "' '"),
            ("a:80".into(), "':'"),
            ("http://a.test".into(), "':'"),
            ("bücher.test".into(), "punycode"),
            (format!("{long_label}.test"), "longer than 63"),
            (long_name, "longer than 253"),
        ];
        for (domain, needle) in cases {
            let text = route_toml("r", &domain, "127.0.0.1", 1);
            assert_error(&text, &["line 3", "route[0] (id \"r\")", "domain", needle]);
        }
    }

    #[test]
    fn valid_route_domains_are_normalised() {
        let cases = [
            ("*.Example.Test", "*.example.test"),
            ("App.Test.", "app.test"),
            ("127.0.0.2", "127.0.0.2"),
            ("_dmarc.mail-1.test", "_dmarc.mail-1.test"),
            ("localhost", "localhost"),
            ("*.test", "*.test"),
            ("[::2]", "::2"),
        ];
        for (written, stored) in cases {
            let config = parse(&route_toml("r", written, "127.0.0.1", 1)).unwrap();
            assert_eq!(config.routes[0].domain, stored, "{written}");
            assert!(config.routes[0].enabled, "enabled defaults to true");
        }
    }

    #[test]
    fn route_target_hosts_are_validated() {
        let cases = [
            ("", "empty"),
            ("http://127.0.0.1", "not a URL"),
            ("localhost/app", "not a URL"),
            ("127.0.0.1:3000", "put the port in target_port"),
            ("[::1]:3000", "put the port in target_port"),
            ("local host", "whitespace"),
            ("[nope]", "IPv6"),
            ("a..b", "empty label"),
        ];
        for (host, needle) in cases {
            let text = route_toml("r", "a.test", host, 1);
            assert_error(
                &text,
                &["line 4", "route[0] (id \"r\")", "target_host", needle],
            );
        }
        for (written, stored) in [
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("Backend.Local", "Backend.Local"),
            ("10.0.0.5", "10.0.0.5"),
        ] {
            let config = parse(&route_toml("r", "a.test", written, 1)).unwrap();
            assert_eq!(config.routes[0].target_host, stored);
        }
    }

    #[test]
    fn route_target_port_is_validated() {
        for port in [0, 65536, -5] {
            let text = route_toml("r", "a.test", "127.0.0.1", port);
            assert_error(
                &text,
                &[
                    "line 5",
                    "route[0] (id \"r\")",
                    "target_port",
                    "not a usable port",
                ],
            );
        }
    }

    #[test]
    fn empty_route_id_is_rejected() {
        assert_error(
            &route_toml("  ", "a.test", "127.0.0.1", 1),
            &["line 2", "route[0]", "id must not be empty"],
        );
    }

    #[test]
    fn timeouts_must_be_positive_finite_and_sane() {
        for (value, needle) in [
            ("0", "more than 0"),
            ("-1", "more than 0"),
            ("0.0", "more than 0"),
            ("1e-12", "more than 0"),
            ("inf", "not a number of seconds"),
            ("nan", "not a number of seconds"),
            ("31536001", "more than a year"),
        ] {
            for key in ["connect", "request_header", "upstream_header", "idle"] {
                assert_error(
                    &format!("[timeouts]\n{key} = {value}\n"),
                    &["line 2", &format!("timeouts.{key}"), needle],
                );
            }
        }
        let config = parse("[timeouts]\nconnect = 31536000\n").unwrap();
        assert_eq!(config.timeouts.connect, Duration::from_secs(31_536_000));
    }

    #[test]
    fn describe_lists_settings_and_the_routing_table() {
        let mut config = parse(SAMPLE).unwrap();
        config.routes = vec![
            route("deep", "*.a.b.test", 3001, true),
            route("off", "off.test", 3002, false),
            route("shallow", "*.b.test", 3003, true),
            route("exact", "x.b.test", 3004, true),
        ];
        let text = config.describe();
        for needle in [
            "proxy          127.0.0.1:8888",
            "reverse_http   127.0.0.1:8080",
            "reverse_https  127.0.0.1:8443",
            "local routing: off",
            "dns server: 127.0.0.1:5353",
            "api log: /etc/watchtower/logs/api.jsonl",
            "timeouts: connect 10s, request_header 1.5s, upstream_header 60s, idle 250ms",
            "  ID       DOMAIN      TARGET          ENABLED  MATCH",
            "  off      off.test    127.0.0.1:3002  no       exact",
            "  deep     *.a.b.test  127.0.0.1:3001  yes      wildcard (any subdomain, not the apex)",
            "route \"deep\" (127.0.0.1:3001), the first enabled route in file order",
        ] {
            assert!(
                text.contains(needle),
                "describe() lacks {needle:?}:\n{text}"
            );
        }
        // Precedence order: exact (file order), then wildcards longest first.
        let order: Vec<usize> = ["  off ", "  exact ", "  deep ", "  shallow "]
            .iter()
            .map(|id| text.find(id).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");

        let config = parse(&route_toml("v6", "a.test", "::1", 9)).unwrap();
        assert!(config.describe().contains("[::1]:9"));

        let mut config = Config::defaults();
        config.routes = vec![route("off", "off.test", 1, false)];
        let text = config.describe();
        assert!(text.contains("config: built-in defaults"), "{text}");
        assert!(text.contains("reverse_http   off"), "{text}");
        assert!(text.contains("no enabled route"), "{text}");
    }

    fn temp_path(name: &str) -> PathBuf {
        let unique = format!(
            "watchtower-config-test-{}-{}-{name}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        std::env::temp_dir().join(unique)
    }

    #[test]
    fn load_reads_a_file_and_resolves_paths_against_its_folder() {
        let dir = temp_path("dir");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("watchtower.toml");
        fs::write(&file, SAMPLE).unwrap();

        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.source.as_deref(), Some(file.as_path()));
        assert_eq!(config.tls.ca_cert, dir.join("ca.pem"));
        assert_eq!(config.api_log, Some(dir.join("logs/api.jsonl")));
        assert_eq!(config.routes.len(), 2);
        assert!(config.describe().contains(&file.display().to_string()));

        fs::write(&file, "[proxy]\nproxy_port = 0\n").unwrap();
        let message = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");

        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_of_a_missing_file_names_it() {
        let missing = temp_path("missing.toml");
        let message = Config::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("does not exist"), "{message}");
    }

    #[test]
    fn load_without_a_path_falls_back_to_defaults() {
        if !Path::new(DEFAULT_CONFIG_FILE).exists() {
            assert_eq!(Config::load(None).unwrap(), Config::defaults());
        }
    }
}
