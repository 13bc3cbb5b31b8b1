//! The security review's checks (SECURITY.md), end to end: the CA key and the admin token stay
//! private (file modes, never in a response, a log line or stderr); route values cannot carry
//! line breaks into heads, logs or the file; no endpoint serves a file by path.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_ca_key_and_the_admin_token_never_leave_their_files() {
    let app = Backend::named("app");
    let w = Watchtower::start(Opts {
        routes: route("web", "app.example.test", app.port()),
        capture_bodies: Some("4KiB"),
        ..Default::default()
    });
    let key_path = w.dir.path().join("ca-key.pem");
    assert_eq!(mode(&key_path), 0o600, "ca-key.pem");
    assert_eq!(
        mode(&w.dir.path().join("admin.token")),
        0o600,
        "admin.token"
    );
    assert_eq!(mode(&w.api_log_path()), 0o600, "api.jsonl");
    let key = std::fs::read_to_string(&key_path).unwrap();
    // A distinctive piece of the key's base64 body, and the token.
    let key_piece: String = key.lines().nth(1).unwrap().chars().take(40).collect();
    let token = w.admin_token();

    // Traffic that exercises the log, the exchanges and the HAR.
    assert_eq!(w.get("app.example.test").status, 200);
    let mut c = w.connect_proxy();
    c.write_all(
        b"POST http://app.example.test/form HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let mut r = std::io::BufReader::new(c);
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    w.wait_log_lines(2);

    let mut seen = Vec::new();
    for path in [
        "/",
        "/app.js",
        "/app.css",
        "/healthz",
        "/api/routing",
        "/api/routes",
        "/api/exchanges",
        "/api/exchanges.har",
        "/api/stats",
        "/api/phone",
        "/qr.svg",
        "/ca.pem",
        "/ca.crt",
        "/proxy.pac",
    ] {
        let resp = admin(&w, "GET", path, None);
        assert_eq!(resp.status, 200, "{path}");
        seen.push((path.to_string(), resp.body));
    }
    let forward_ca = roundtrip(w.proxy, "GET /ca.crt HTTP/1.1\r\nHost: x\r\n\r\n");
    seen.push(("forward /ca.crt".into(), forward_ca.body));
    seen.push(("api.jsonl".into(), std::fs::read(w.api_log_path()).unwrap()));
    for (what, bytes) in &seen {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("PRIVATE KEY"), "{what} holds a private key");
        assert!(!text.contains(&key_piece), "{what} holds the CA key");
        assert!(!text.contains(&token), "{what} holds the admin token");
    }
    // stderr: the key never; the token only in the one dashboard link printed at start.
    let stderr = w.stderr_text();
    assert!(!stderr.contains("PRIVATE KEY") && !stderr.contains(&key_piece));
    let with_token: Vec<&str> = stderr.lines().filter(|l| l.contains(&token)).collect();
    assert_eq!(with_token.len(), 1, "{stderr}");
    assert!(
        with_token[0].contains("dashboard http://"),
        "{}",
        with_token[0]
    );
}

#[test]
fn a_ca_key_readable_by_others_is_reported_at_start() {
    let w = Watchtower::start(Opts::default());
    let key_path = w.dir.path().join("ca-key.pem");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut w = w;
    w.restart();
    let line = w.wait_for_stderr(|l| l.contains("accessible to other users"), WAIT);
    let line = line.expect("no warning about a world-readable CA key");
    assert!(line.contains("chmod 600"), "{line}");
}

#[test]
fn line_breaks_and_control_characters_in_routes_are_refused_everywhere() {
    let w = Watchtower::start(Opts::default());
    let bad = [
        (
            "id",
            r#"{"id":"a\r\nX-Injected: 1","domain":"a.test","target_host":"127.0.0.1","target_port":3000}"#,
        ),
        (
            "id",
            r#"{"id":"a\u0000b","domain":"a.test","target_host":"127.0.0.1","target_port":3000}"#,
        ),
        (
            "domain",
            r#"{"id":"a","domain":"a.test\r\nX-Injected: 1","target_host":"127.0.0.1","target_port":3000}"#,
        ),
        (
            "domain",
            r#"{"id":"a","domain":"a.test\u0000","target_host":"127.0.0.1","target_port":3000}"#,
        ),
        (
            "target_host",
            r#"{"id":"a","domain":"a.test","target_host":"127.0.0.1\r\nX-Injected: 1","target_port":3000}"#,
        ),
        (
            "target_host",
            r#"{"id":"a","domain":"a.test","target_host":"evil.test/..","target_port":3000}"#,
        ),
    ];
    for (field, body) in bad {
        let resp = admin(&w, "POST", "/api/routes", Some(body));
        assert_eq!(resp.status, 400, "{body}: {}", resp.body_text());
        let v: serde_json::Value = serde_json::from_str(&resp.body_text()).unwrap();
        assert_eq!(v["field"], field, "{body}");
    }
    let routes = admin(&w, "GET", "/api/routes", None).body_text();
    assert_eq!(routes.trim(), "[]");
    // The same values in the file are refused at start, naming the key.
    let dir = TempDir::new("sec");
    for (key, value) in [
        ("id", "\"a\\r\\nb\""),
        ("domain", "\"a.test\\nX: y\""),
        ("target_host", "\"h\\r\\nost\""),
    ] {
        let mut fields = [
            ("id", "\"a\"".to_string()),
            ("domain", "\"a.test\"".to_string()),
            ("target_host", "\"127.0.0.1\"".to_string()),
        ];
        for f in &mut fields {
            if f.0 == key {
                f.1 = value.to_string();
            }
        }
        let toml: String = fields.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let path = dir.path().join("watchtower.toml");
        std::fs::write(&path, format!("[[route]]\n{toml}target_port = 3000\n")).unwrap();
        let out = run_cli(dir.path(), &["check", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key} = {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn no_endpoint_serves_a_file_by_path() {
    let w = Watchtower::start(Opts::default());
    let attempts = [
        "/../ca-key.pem",
        "/%2e%2e/ca-key.pem",
        "/..%2fca-key.pem",
        "/ca.pem/../ca-key.pem",
        "//ca-key.pem",
        "/ca-key.pem",
        "/admin.token",
        "/watchtower.toml",
        "/api/../../../../etc/passwd",
        "/app.js/../../admin.token",
    ];
    for path in attempts {
        for (name, addr) in [
            ("admin", w.admin),
            ("forward", w.proxy),
            ("reverse", w.reverse.unwrap()),
        ] {
            let resp = roundtrip(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                    w.admin,
                    w.admin_token()
                ),
            );
            assert_ne!(resp.status, 200, "{name} {path}: {}", resp.body_text());
            let body = resp.body_text();
            assert!(
                !body.contains("PRIVATE KEY")
                    && !body.contains("[proxy]")
                    && !body.contains("root:"),
                "{name} {path} served a file: {body}"
            );
        }
    }
}
