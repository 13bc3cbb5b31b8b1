//! The `watchtower` command: arguments -> `Config::load` -> `Proxy::bind` -> `run`.
//! Start-up errors become one sentence on stderr and a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use watchtower::Config;
use watchtower::admin::{self, AdminState};
use watchtower::apilog::{Exchanges, LogOptions, LogWorker, exchanges, stderr};
use watchtower::event_loop::{Proxy, StartError};

const USAGE: &str = "\
Watchtower: a local developer proxy. Routes chosen domains to local builds,
passes everything else through to the real servers, and logs every exchange.

Usage:
  watchtower [--config PATH] [--quiet] [-v...]   run the proxy
  watchtower check [--config PATH]               validate the config, print the routing table
  watchtower ca path|export|install|uninstall|regenerate [--yes] [--config PATH]
                                                 the local CA (see `watchtower ca --help`)
  watchtower routing on|off|status               the running instance's switch (admin API)
  watchtower routes list|add|rm|enable|disable   its routes (`watchtower routes --help`)
  watchtower --help | --version

Options:
  -c, --config PATH   config file (default: ./watchtower.toml if present, else built-in
                      defaults: forward proxy on 127.0.0.1:8888, no routes)
  -q, --quiet         no access lines on stderr, warnings only
  -v, --verbose       more log output (-vv for trace); RUST_LOG=level also works
  -h, --help          this text
  -V, --version       the version
";

enum Command {
    Run,
    Check,
    Help,
    Version,
}

struct Args {
    command: Command,
    config: Option<PathBuf>,
    quiet: bool,
    verbosity: u8,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        command: Command::Run,
        config: None,
        quiet: false,
        verbosity: 0,
    };
    let mut saw_command = false;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => args.command = Command::Help,
            "-V" | "--version" => args.command = Command::Version,
            "-q" | "--quiet" => args.quiet = true,
            "-v" | "--verbose" => args.verbosity = args.verbosity.saturating_add(1),
            "-vv" => args.verbosity = args.verbosity.saturating_add(2),
            "-c" | "--config" => {
                let path = it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a file path"))?;
                args.config = Some(PathBuf::from(path));
            }
            s if s.starts_with("--config=") => {
                args.config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            "check" if !saw_command => {
                saw_command = true;
                args.command = Command::Check;
            }
            "run" if !saw_command => saw_command = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    match raw.first().map(String::as_str) {
        Some("ca") => return watchtower::ca_command::run(&raw[1..]),
        Some("routing" | "routes") => return watchtower::control_command::run(&raw),
        _ => {}
    }
    let args = match parse_args(raw.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("watchtower: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("watchtower {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check => match Config::load(args.config.as_deref()) {
            Ok(config) => {
                print!("{}", config.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("watchtower: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run => run(&args),
    }
}

fn run(args: &Args) -> ExitCode {
    stderr::init(args.verbosity, args.quiet);
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watchtower: {e}");
            return ExitCode::from(2);
        }
    };
    // The admin API shows the recent exchanges; the log thread keeps them.
    let exchanges = config
        .admin
        .map(|_| Exchanges::new(exchanges::DEFAULT_CAPACITY));
    let (log, worker) = match LogWorker::spawn(LogOptions {
        api_log: config.api_log.clone(),
        access_lines: !args.quiet,
        exchanges: exchanges.clone(),
    }) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("watchtower: {e}");
            return ExitCode::from(1);
        }
    };
    let proxy = match Proxy::bind(&config, log) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("watchtower: {e}");
            return ExitCode::from(1);
        }
    };
    let forward = proxy
        .local_addrs()
        .iter()
        .find(|(name, _)| *name == "proxy")
        .map(|(_, addr)| *addr)
        .unwrap_or_else(|| std::net::SocketAddr::new(config.listen, config.proxy_port));
    let admin = match config.admin {
        Some(addr) => {
            let token_path = admin::token_path(&config.tls.ca_key);
            let token = match admin::load_or_create_token(&token_path) {
                Ok(token) => token,
                Err(e) => {
                    eprintln!(
                        "watchtower: cannot read or create the admin token {}: {e}",
                        token_path.display()
                    );
                    return ExitCode::from(1);
                }
            };
            let state = AdminState::new(
                proxy.live(),
                config.source.clone(),
                proxy.ca_certificate(),
                forward,
                exchanges.clone().unwrap_or_else(|| Exchanges::new(1)),
                proxy.gauges(),
                config.access.clone(),
            );
            match admin::start(addr, state, token.clone()) {
                Ok(bound) => Some((bound, token)),
                // The file never asked for the admin API on this port: the proxy is what
                // matters, so it runs without the admin API (a second instance, or a listener
                // on 8889).
                Err(source)
                    if config.admin_port_is_default
                        && source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    log::warn!(
                        "admin API not started: its default port {} is in use; set [admin] port to have it",
                        addr.port()
                    );
                    None
                }
                Err(source) => {
                    eprintln!(
                        "watchtower: {}",
                        StartError::Bind {
                            name: "admin",
                            addr,
                            source
                        }
                    );
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    if let Err(e) = watchtower::reload::start(&config, proxy.live()) {
        log::warn!("the config file will not be reloaded on change or SIGHUP: {e}");
    }
    let mut listening: Vec<String> = proxy
        .local_addrs()
        .iter()
        .map(|(name, addr)| {
            let scheme = if *name == "reverse_https" {
                "https"
            } else {
                "http"
            };
            format!("{name} {scheme}://{addr}")
        })
        .collect();
    if let Some((addr, _)) = &admin {
        listening.push(format!("admin http://{addr}/"));
    }
    let enabled = config.routes.iter().filter(|r| r.enabled).count();
    let workers = proxy.workers();
    eprintln!(
        "watchtower {} ready: {}; {workers} worker{}; local routing {} ({enabled} route{} enabled){}",
        env!("CARGO_PKG_VERSION"),
        listening.join(", "),
        if workers == 1 { "" } else { "s" },
        if config.local_routing { "on" } else { "off" },
        if enabled == 1 { "" } else { "s" },
        match &config.source {
            Some(p) => format!("; config {}", p.display()),
            None => "; built-in defaults".to_string(),
        }
    );
    if let Some((addr, token)) = &admin {
        // The fragment never reaches a server or a log; the page keeps it for the tab.
        eprintln!("watchtower: dashboard http://{addr}/#token={token}");
    }
    let result = proxy.run();
    worker.join();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchtower: event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
