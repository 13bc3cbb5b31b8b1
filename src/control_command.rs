//! `watchtower routing …` and `watchtower routes …`: the switch and the routes of the running
//! instance, through its admin API (the address comes from the config's `[admin]`, or
//! `--admin HOST:PORT`). With `--edit`, the config file is changed instead (a running instance
//! picks the change up by itself, see `reload`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{self, Config, Route};

const USAGE: &str = "\
Usage:
  watchtower routing on|off|status                the local-routing switch
  watchtower routes list                          the routes
  watchtower routes add ID DOMAIN HOST:PORT [--disabled]
  watchtower routes rm ID
  watchtower routes enable|disable ID

Options:
  -c, --config PATH     the config (default: ./watchtower.toml, else built-in defaults); its
                        [admin] section says where the running instance listens
  --admin HOST:PORT     the running instance's admin API, overriding the config
  --edit                change the config file instead of the running instance
";

/// Runs `args` (without the program name; the first is `routing` or `routes`).
pub fn run(args: &[String]) -> ExitCode {
    match dispatch(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) if message == "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("watchtower: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(message)) => {
            eprintln!("watchtower: {message}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Refused(String),
}

struct Options {
    words: Vec<String>,
    config: Option<PathBuf>,
    admin: Option<SocketAddr>,
    edit: bool,
    disabled: bool,
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut o = Options {
        words: Vec::new(),
        config: None,
        admin: None,
        edit: false,
        disabled: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                let path = it
                    .next()
                    .ok_or_else(|| Failure::Usage(format!("{arg} needs a file path")))?;
                o.config = Some(PathBuf::from(path));
            }
            "--admin" => {
                let addr = it
                    .next()
                    .ok_or_else(|| Failure::Usage("--admin needs HOST:PORT".into()))?;
                o.admin = Some(addr.parse().map_err(|_| {
                    Failure::Usage(format!(
                        "--admin {addr:?} is not an address like 127.0.0.1:8889"
                    ))
                })?);
            }
            "--edit" => o.edit = true,
            "--disabled" => o.disabled = true,
            "-h" | "--help" => return Err(Failure::Usage("help".into())),
            other if other.starts_with('-') => {
                return Err(Failure::Usage(format!("unknown option {other:?}")));
            }
            word => o.words.push(word.to_owned()),
        }
    }
    Ok(o)
}

/// What to do, in admin API terms.
enum Action {
    RoutingStatus,
    SetRouting(bool),
    List,
    Add(Value),
    Remove(String),
    Enable(String, bool),
}

fn dispatch(args: &[String]) -> Result<String, Failure> {
    let o = parse(args)?;
    let words: Vec<&str> = o.words.iter().map(String::as_str).collect();
    let action = match words.as_slice() {
        ["routing", "status"] => Action::RoutingStatus,
        ["routing", "on"] => Action::SetRouting(true),
        ["routing", "off"] => Action::SetRouting(false),
        ["routes", "list"] | ["routes"] => Action::List,
        ["routes", "add", id, domain, target] => {
            let (host, port) = target.rsplit_once(':').ok_or_else(|| {
                Failure::Usage(format!("{target:?} is not HOST:PORT, e.g. 127.0.0.1:3100"))
            })?;
            let port: i64 = port
                .parse()
                .map_err(|_| Failure::Usage(format!("{port:?} is not a port number")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Action::Add(json!({
                "id": id, "domain": domain, "target_host": host, "target_port": port,
                "enabled": !o.disabled,
            }))
        }
        ["routes", "rm" | "remove", id] => Action::Remove((*id).to_owned()),
        ["routes", "enable", id] => Action::Enable((*id).to_owned(), true),
        ["routes", "disable", id] => Action::Enable((*id).to_owned(), false),
        _ => {
            return Err(Failure::Usage(format!(
                "cannot make sense of {:?}",
                words.join(" ")
            )));
        }
    };
    let config = Config::load(o.config.as_deref()).map_err(|e| Failure::Refused(e.to_string()))?;
    if o.edit {
        return edit_file(&config, action);
    }
    let addr = o.admin.or(config.admin).ok_or_else(|| {
        Failure::Refused(
            "the admin API is off in this config ([admin] enabled = false); pass --admin \
             HOST:PORT, or --edit to change the file"
                .into(),
        )
    })?;
    // The running instance wrote its token beside the CA key; only its user can read it.
    let token_path = crate::admin::token_path(&config.tls.ca_key);
    let token = crate::admin::read_token(&token_path).map_err(|e| {
        format!(
            "cannot read the admin token {} ({e}); is Watchtower running as this user with this config?",
            token_path.display()
        )
    });
    let api = Api { addr, token };
    match action {
        Action::RoutingStatus => api
            .call("GET", "/api/routing", None)
            .map(|v| routing_line(&v)),
        Action::SetRouting(on) => api
            .call("PUT", "/api/routing", Some(json!({ "enabled": on })))
            .map(|v| routing_line(&v)),
        Action::List => api
            .call("GET", "/api/routes", None)
            .map(|v| routes_table(&v)),
        Action::Add(route) => api
            .call("POST", "/api/routes", Some(route))
            .map(|v| format!("added {}\n", route_line(&v))),
        Action::Remove(id) => api
            .call("DELETE", &format!("/api/routes/{}", encode(&id)), None)
            .map(|_| format!("removed {id}\n")),
        Action::Enable(id, on) => {
            let routes = api.call("GET", "/api/routes", None)?;
            let mut route = routes
                .as_array()
                .and_then(|list| list.iter().find(|r| r["id"] == id.as_str()))
                .cloned()
                .ok_or_else(|| Failure::Refused(format!("no route with id {id:?}")))?;
            route["enabled"] = on.into();
            api.call("PUT", &format!("/api/routes/{}", encode(&id)), Some(route))
                .map(|v| format!("{}\n", route_line(&v)))
        }
    }
}

fn routing_line(v: &Value) -> String {
    let on = v["enabled"].as_bool().unwrap_or(false);
    format!("local routing {}\n", if on { "on" } else { "off" })
}

fn route_line(r: &Value) -> String {
    format!(
        "{}: {} -> {}:{}{}",
        r["id"].as_str().unwrap_or("?"),
        r["domain"].as_str().unwrap_or("?"),
        r["target_host"].as_str().unwrap_or("?"),
        r["target_port"],
        if r["enabled"].as_bool() == Some(false) {
            " (disabled)"
        } else {
            ""
        }
    )
}

fn routes_table(v: &Value) -> String {
    let routes = v.as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        return "no routes\n".into();
    }
    routes.iter().map(|r| route_line(r) + "\n").collect()
}

fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The running instance's admin API.
struct Api {
    addr: SocketAddr,
    /// The token, or why it could not be read (said once an instance is found running).
    token: Result<String, String>,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let not_running = |e: io::Error| {
            Failure::Refused(format!(
                "no Watchtower answers on {} ({e}); start it, or pass --edit to change the \
                 config file instead",
                self.addr
            ))
        };
        let mut conn =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(3)).map_err(not_running)?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let token = self
            .token
            .as_ref()
            .map_err(|e| Failure::Refused(e.clone()))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.addr, token
        );
        if !body.is_empty() {
            request += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request += "\r\n";
        request += &body;
        conn.write_all(request.as_bytes()).map_err(not_running)?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response).map_err(not_running)?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let why = value["error"].as_str().unwrap_or(head).to_owned();
            Err(Failure::Refused(why))
        }
    }
}

/// `--edit`: the same change, made to the config file.
fn edit_file(config: &Config, action: Action) -> Result<String, Failure> {
    let path = config.source.clone().ok_or_else(|| {
        Failure::Refused("no config file to edit (built-in defaults); pass --config PATH".into())
    })?;
    let refuse = |e: String| Failure::Refused(e);
    let mut routes: Vec<Route> = config.routes.clone();
    let (routing, output) = match action {
        Action::RoutingStatus => {
            return Ok(routing_line(&json!({"enabled": config.local_routing})));
        }
        Action::List => {
            let list = Value::Array(routes.iter().map(route_value).collect());
            return Ok(routes_table(&list));
        }
        Action::SetRouting(on) => (Some(on), routing_line(&json!({ "enabled": on }))),
        Action::Add(v) => {
            let route = config::check_route(
                v["id"].as_str().unwrap_or(""),
                v["domain"].as_str().unwrap_or(""),
                v["target_host"].as_str().unwrap_or(""),
                v["target_port"].as_i64().unwrap_or(0),
                v["enabled"].as_bool().unwrap_or(true),
                &routes,
            )
            .map_err(|e| refuse(e.message))?;
            let line = format!("added {}\n", route_line(&route_value(&route)));
            routes.push(route);
            (None, line)
        }
        Action::Remove(id) => {
            let before = routes.len();
            routes.retain(|r| r.id != id);
            if routes.len() == before {
                return Err(refuse(format!("no route with id {id:?}")));
            }
            (None, format!("removed {id}\n"))
        }
        Action::Enable(id, on) => {
            let route = routes
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| refuse(format!("no route with id {id:?}")))?;
            route.enabled = on;
            let line = format!("{}\n", route_line(&route_value(route)));
            (None, line)
        }
    };
    let route_change = routing.is_none().then_some(routes.as_slice());
    crate::admin::persist_to(&path, routing, route_change).map_err(refuse)?;
    Ok(output)
}

fn route_value(r: &Route) -> Value {
    json!({
        "id": r.id, "domain": r.domain, "target_host": r.target_host,
        "target_port": r.target_port, "enabled": r.enabled,
    })
}
