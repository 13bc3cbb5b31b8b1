//! The admin API: the switch and the routes change at once for new requests, without dropping
//! open connections, and are written back to watchtower.toml; validation errors name the field;
//! Host/Origin checks; the CA and PAC downloads.

mod common;

use std::io::{BufReader, Write};

use common::*;

#[test]
fn the_switch_applies_at_once_keeps_open_tunnels_and_is_written_back() {
    let app = Backend::named("app");
    let echo = RawBackend::start();
    let w = Watchtower::with_routes(route("app", "app.test", app.port()));
    assert_eq!(
        json(&admin(&w, "GET", "/api/routing", None))["enabled"],
        true
    );
    assert_eq!(w.get("app.test").body_text(), "app GET /");

    // A tunnel opened before the switch flips keeps carrying bytes after it.
    let mut c = w.connect_proxy();
    c.write_all(connect_request(&format!("127.0.0.1:{}", echo.port())).as_bytes())
        .unwrap();
    let mut up = echo.accept();
    let established = read_head(&mut BufReader::new(c.try_clone().unwrap())).unwrap();
    assert_eq!(established.0, 200);

    let off = admin(&w, "PUT", "/api/routing", Some(r#"{"enabled": false}"#));
    assert_eq!(
        (off.status, json(&off)["enabled"].clone()),
        (200, false.into())
    );
    // Off: app.test passes through to the real (unresolvable) app.test.
    let resp = w.get("app.test");
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    pass_bytes(&mut c, &mut up, b"still open");
    pass_bytes(&mut up, &mut c, b"both ways");

    let text = std::fs::read_to_string(&w.config_path).unwrap();
    assert!(text.contains("local_routing = false"), "{text}");
    assert_eq!(
        json(&admin(&w, "GET", "/api/routing", None))["enabled"],
        false
    );
    admin(&w, "PUT", "/api/routing", Some(r#"{"enabled": true}"#));
    assert_eq!(w.get("app.test").body_text(), "app GET /");
}

#[test]
fn routes_are_added_changed_and_removed_with_the_config_files_validation() {
    let one = Backend::named("one");
    let two = Backend::named("two");
    let w = Watchtower::with_routes(route("app", "app.test", one.port()));
    // Comments in the file survive the edits.
    let mut text = std::fs::read_to_string(&w.config_path).unwrap();
    text = text.replace("[[route]]", "# my app, keep me\n[[route]]");
    std::fs::write(&w.config_path, &text).unwrap();

    let body = format!(
        r#"{{"id": "api", "domain": "API.test", "target_host": "127.0.0.1", "target_port": {}}}"#,
        two.port()
    );
    let created = admin(&w, "POST", "/api/routes", Some(&body));
    assert_eq!(created.status, 201, "{}", created.body_text());
    assert_eq!(json(&created)["domain"], "api.test");
    assert_eq!(json(&created)["enabled"], true);
    assert_eq!(w.get("api.test").body_text(), "two GET /");

    // The config file's messages, with the field named.
    let dup = admin(
        &w,
        "POST",
        "/api/routes",
        Some(&body.replace("\"api\"", "\"api2\"")),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(json(&dup)["field"], "domain");
    assert!(
        json(&dup)["error"]
            .as_str()
            .unwrap()
            .contains("is already routed by")
    );
    let bad = admin(
        &w,
        "POST",
        "/api/routes",
        Some(r#"{"id": "x", "domain": "a.*.test", "target_host": "127.0.0.1", "target_port": 1}"#),
    );
    assert_eq!(
        (bad.status, json(&bad)["field"].clone()),
        (400, "domain".into())
    );
    let port = admin(
        &w,
        "POST",
        "/api/routes",
        Some(
            r#"{"id": "x", "domain": "x.test", "target_host": "127.0.0.1", "target_port": 70000}"#,
        ),
    );
    assert_eq!(
        (port.status, json(&port)["field"].clone()),
        (400, "target_port".into())
    );
    let missing = admin(&w, "POST", "/api/routes", Some(r#"{"id": "x"}"#));
    assert_eq!(missing.status, 400);

    // Point app.test at the second backend, then remove it.
    let changed = admin(
        &w,
        "PUT",
        "/api/routes/app",
        Some(&format!(
            r#"{{"domain": "app.test", "target_host": "127.0.0.1", "target_port": {}, "enabled": true}}"#,
            two.port()
        )),
    );
    assert_eq!(changed.status, 200, "{}", changed.body_text());
    assert_eq!(w.get("app.test").body_text(), "two GET /");
    assert_eq!(admin(&w, "DELETE", "/api/routes/app", None).status, 204);
    assert_eq!(admin(&w, "DELETE", "/api/routes/app", None).status, 404);
    assert_eq!(w.get("app.test").status, 502, "app.test still routed");
    let listed = json(&admin(&w, "GET", "/api/routes", None));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], "api");

    // What a restart would read: the file has the change, and the untouched comment.
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let out = run_cli(
        w.dir.path(),
        &["check", "--config", w.config_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text);
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        described.contains("api.test") && !described.contains("app.test"),
        "{described}"
    );
    assert!(
        !text.contains("# my app, keep me"),
        "the comment of a deleted route stays: {text}"
    );
}

#[test]
fn comments_and_layout_survive_an_edit() {
    let one = Backend::named("one");
    let w = Watchtower::with_routes(route("app", "app.test", one.port()));
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let commented = text
        .replace("[[route]]", "# the web app\n[[route]]")
        .replace("[tls]", "# where the CA lives\n[tls]");
    std::fs::write(&w.config_path, &commented).unwrap();
    let resp = admin(
        &w,
        "PUT",
        "/api/routes/app",
        Some(&format!(
            r#"{{"domain": "app.test", "target_host": "127.0.0.1", "target_port": {}, "enabled": false}}"#,
            one.port()
        )),
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let after = std::fs::read_to_string(&w.config_path).unwrap();
    assert!(after.contains("# the web app\n[[route]]"), "{after}");
    assert!(after.contains("# where the CA lives\n[tls]"), "{after}");
    assert!(after.contains("enabled = false"), "{after}");
}

#[test]
fn requests_from_other_sites_or_names_are_refused() {
    let w = Watchtower::with_routes(String::new());
    let rebinding = admin_with(
        &w,
        "GET",
        "/api/routes",
        None,
        &[("Host", "evil.test:8889")],
    );
    assert_eq!(rebinding.status, 403);
    let cross_site = admin_with(
        &w,
        "PUT",
        "/api/routing",
        Some(r#"{"enabled": false}"#),
        &[("Origin", "https://evil.test")],
    );
    assert_eq!(cross_site.status, 403);
    let form = admin_with(
        &w,
        "PUT",
        "/api/routing",
        Some("enabled=false"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(form.status, 415);
    assert_eq!(
        json(&admin(&w, "GET", "/api/routing", None))["enabled"],
        true
    );
    // The same origin, and localhost by name, are fine.
    let origin = format!("http://{}", w.admin);
    let same = admin_with(&w, "GET", "/api/routing", None, &[("Origin", &origin)]);
    assert_eq!(same.status, 200);
    let by_name = format!("localhost:{}", w.admin.port());
    let named = admin_with(&w, "GET", "/healthz", None, &[("Host", &by_name)]);
    assert_eq!(
        (named.status, json(&named)["status"].clone()),
        (200, "ok".into())
    );
    assert_eq!(admin(&w, "GET", "/nope", None).status, 404);
    assert_eq!(admin(&w, "DELETE", "/api/routing", None).status, 405);
}

#[test]
fn other_users_without_the_token_can_neither_read_nor_change_anything() {
    let w = Watchtower::with_routes(route("web", "app.example.test", 3100));
    let token = w.admin_token();
    assert_eq!(token.len(), 64, "{token}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(w.dir.path().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin.token is readable by others");
    let none = ("X-Watchtower-Token", "");
    for (method, path, body) in [
        ("GET", "/api/routes", None),
        ("GET", "/api/routing", None),
        ("GET", "/api/exchanges", None),
        ("GET", "/api/exchanges.har", None),
        ("GET", "/api/exchanges/stream", None),
        ("GET", "/api/stats", None),
        ("PUT", "/api/routing", Some(r#"{"enabled": false}"#)),
        ("DELETE", "/api/routes/web", None),
        (
            "POST",
            "/api/routes",
            Some(r#"{"id":"x","domain":"bank.test","target_host":"127.0.0.1","target_port":4444}"#),
        ),
    ] {
        let missing = admin_with(&w, method, path, body, &[none]);
        assert_eq!(missing.status, 403, "{method} {path} without the token");
        assert!(
            missing.body_text().contains("token"),
            "{}",
            missing.body_text()
        );
        let wrong = "0".repeat(64);
        let bad = admin_with(&w, method, path, body, &[("X-Watchtower-Token", &wrong)]);
        assert_eq!(bad.status, 403, "{method} {path} with a wrong token");
    }
    // Nothing changed.
    let routes = json(&admin(&w, "GET", "/api/routes", None));
    assert_eq!(routes.as_array().unwrap().len(), 1);
    assert_eq!(
        json(&admin(&w, "GET", "/api/routing", None))["enabled"],
        true
    );
    // Bearer and, for GET only, ?token= work too.
    let bearer = format!("Bearer {token}");
    let via_bearer = admin_with(
        &w,
        "GET",
        "/api/routing",
        None,
        &[none, ("Authorization", &bearer)],
    );
    assert_eq!(via_bearer.status, 200);
    let query = format!("/api/routing?token={token}");
    assert_eq!(admin_with(&w, "GET", &query, None, &[none]).status, 200);
    let put = admin_with(&w, "PUT", &query, Some(r#"{"enabled": false}"#), &[none]);
    assert_eq!(
        put.status, 403,
        "a token in the URL must not authorise a change"
    );
    // What a phone or a browser needs without the token stays public.
    for path in [
        "/",
        "/app.js",
        "/healthz",
        "/ca.pem",
        "/ca.crt",
        "/proxy.pac",
        "/api/phone",
        "/qr.svg",
    ] {
        assert_eq!(
            admin_with(&w, "GET", path, None, &[none]).status,
            200,
            "{path}"
        );
    }
    // The token survives a restart (a bookmarked dashboard link keeps working).
    let mut w = w;
    w.restart();
    assert_eq!(w.admin_token(), token);
}

#[test]
fn the_ca_and_a_pac_file_can_be_downloaded() {
    let w = Watchtower::with_routes(String::new());
    let pem = admin(&w, "GET", "/ca.pem", None);
    assert_eq!(pem.status, 200);
    assert_eq!(pem.body_text(), w.ca_pem());
    let der = admin(&w, "GET", "/ca.crt", None);
    assert_eq!(
        der.header("content-type"),
        Some("application/x-x509-ca-cert")
    );
    assert_eq!(der.body[0], 0x30, "DER starts with a SEQUENCE");
    let pac = admin(&w, "GET", "/proxy.pac", None);
    assert!(
        pac.body_text().contains(&format!("PROXY {}", w.proxy)),
        "{}",
        pac.body_text()
    );
}

#[test]
fn recent_exchanges_a_live_stream_a_har_file_and_statistics() {
    use std::io::BufRead;
    let app = Backend::named("app");
    // One event loop: records from different connections are then logged in the order the
    // requests were answered (two loops may hand theirs to the log a moment apart).
    let w = Watchtower::start(Opts {
        routes: route("app", "app.test", app.port()),
        workers: Some(1),
        ..Default::default()
    });

    // A stream opened now sees the exchanges that follow.
    let mut sse = connect(w.admin);
    write!(
        sse,
        "GET /api/exchanges/stream?token={} HTTP/1.1\r\nHost: {}\r\n\r\n",
        w.admin_token(),
        w.admin
    )
    .unwrap();
    let mut events = BufReader::new(sse.try_clone().unwrap());
    let mut status_line = String::new();
    events.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");

    for path in ["/one", "/two", "/three"] {
        let resp = roundtrip(
            w.proxy,
            &format!("GET http://app.test{path} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        );
        assert_eq!(resp.status, 200);
    }
    let missing = w.get("nowhere.invalid");
    assert_eq!(missing.status, 502);

    // The stream: an `exchange` event per request, in order.
    let mut seen = Vec::new();
    let mut line = String::new();
    while seen.len() < 4 {
        line.clear();
        assert!(events.read_line(&mut line).unwrap() > 0, "stream closed");
        if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            seen.push(v["path"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(seen, ["/one", "/two", "/three", "/"]);

    // The recent list, and `since`/`limit`.
    let all = json(&admin(&w, "GET", "/api/exchanges", None));
    let list = all["exchanges"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["path"], "/one");
    assert_eq!(list[0]["route"], "app");
    let first = list[0]["seq"].as_u64().unwrap();
    let later = json(&admin(
        &w,
        "GET",
        &format!("/api/exchanges?since={first}&limit=2"),
        None,
    ));
    let paths: Vec<&str> = later["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/three", "/"]);
    assert_eq!(admin(&w, "GET", "/api/exchanges?since=x", None).status, 400);

    // HAR 1.2.
    let har = json(&admin(&w, "GET", "/api/exchanges.har", None));
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["request"]["url"], "http://app.test/one");
    assert_eq!(entries[0]["response"]["status"], 200);
    assert_eq!(entries[3]["response"]["status"], 502);

    // Statistics, with one client connection held open on the forward port.
    let _held = w.connect_proxy();
    let deadline = std::time::Instant::now() + WAIT;
    let stats = loop {
        let stats = json(&admin(&w, "GET", "/api/stats", None));
        if stats["open_connections"]["proxy"] == 1 {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(stats["exchanges"], 4);
    assert_eq!(stats["status_classes"]["2xx"], 3);
    assert_eq!(stats["status_classes"]["5xx"], 1);
    assert_eq!(stats["routes"], 1);
    assert_eq!(stats["certificates_minted"], 0);
    assert_eq!(stats["log_records_dropped"], 0);
}

#[test]
fn the_dashboard_is_served_from_the_binary_with_a_strict_content_policy() {
    let w = Watchtower::with_routes(String::new());
    let page = admin(&w, "GET", "/", None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.body_text();
    for part in [
        "id=\"routing\"",
        "id=\"routes\"",
        "id=\"exchanges\"",
        "/app.js",
        "/ca.crt",
    ] {
        assert!(html.contains(part), "the page lacks {part}");
    }
    // No asset from elsewhere: every src/href is a path on this server.
    for attr in ["src=\"", "href=\""] {
        for at in html.match_indices(attr) {
            let value = &html[at.0 + attr.len()..];
            assert!(
                value.starts_with('/'),
                "{attr}{}",
                &value[..value.len().min(40)]
            );
        }
    }
    let js = admin(&w, "GET", "/app.js", None);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body_text().contains("/api/exchanges/stream"));
    let css = admin(&w, "GET", "/app.css", None);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
}

#[test]
fn a_device_gets_the_ca_from_the_forward_port_and_the_dashboard_shows_a_qr_code_for_it() {
    let w = Watchtower::with_routes(String::new());
    let admin_der = admin(&w, "GET", "/ca.crt", None).body;
    // A browser opening the proxy port directly.
    let direct = roundtrip(
        w.proxy,
        &format!("GET /ca.crt HTTP/1.1\r\nHost: {}\r\n\r\n", w.proxy),
    );
    assert_eq!(direct.status, 200);
    assert_eq!(
        direct.header("content-type"),
        Some("application/x-x509-ca-cert")
    );
    assert_eq!(direct.body, admin_der);
    let pem = roundtrip(
        w.proxy,
        &format!("GET /ca.pem HTTP/1.1\r\nHost: {}\r\n\r\n", w.proxy),
    );
    assert_eq!(pem.body_text(), w.ca_pem());
    // Anything else there is still the "use me as a proxy" answer.
    let other = roundtrip(
        w.proxy,
        &format!("GET /x HTTP/1.1\r\nHost: {}\r\n\r\n", w.proxy),
    );
    assert_eq!(other.status, 400);

    let phone = json(&admin(&w, "GET", "/api/phone", None));
    assert_eq!(phone["proxy"], w.proxy.to_string());
    let url = format!("http://{}/ca.crt", w.proxy);
    assert_eq!(phone["ca_url"], url.as_str());
    let qr = admin(&w, "GET", "/qr.svg", None);
    assert_eq!(qr.header("content-type"), Some("image/svg+xml"));
    let svg = qr.body_text();
    assert!(svg.contains(&format!("<title>{url}</title>")), "{svg}");
    // A QR code is 17 + 4k modules square (k = version), drawn with a 4-module margin.
    let dim: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    let size = dim - 8;
    assert!(size >= 21 && (size - 17).is_multiple_of(4), "{size}");
    assert!(
        svg.matches("h1v1h-1z").count() > size,
        "too few dark modules"
    );
}

#[test]
fn concurrent_changes_all_land_and_the_file_stays_whole() {
    let w = Watchtower::with_routes(String::new());
    let admin_addr = w.admin;
    let token = w.admin_token();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    let body = format!(
                        r#"{{"id": "r{i}-{j}", "domain": "r{i}-{j}.test", "target_host": "127.0.0.1", "target_port": {}}}"#,
                        3000 + i * 10 + j
                    );
                    let request = format!(
                        "POST /api/routes HTTP/1.1\r\nHost: {admin_addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    assert_eq!(roundtrip(admin_addr, &request).status, 201);
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let listed = json(&admin(&w, "GET", "/api/routes", None));
    assert_eq!(listed.as_array().unwrap().len(), 40);
    // The file a restart would read has every one of them.
    let on_disk = watchtower::Config::load(Some(&w.config_path)).unwrap();
    assert_eq!(on_disk.routes.len(), 40);
}

#[test]
fn with_capture_bodies_the_har_has_heads_and_bodies_cut_at_the_limit() {
    let app = Backend::start(|req| Reply {
        status: 201,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!("{{\"got\": {}}}", req.body.len()).into_bytes(),
    });
    let w = Watchtower::start(Opts {
        routes: route("app", "app.test", app.port()),
        capture_bodies: Some("16"),
        ..Default::default()
    });
    let body = "x".repeat(40);
    let resp = roundtrip(
        w.proxy,
        &format!(
            "POST http://app.test/upload?id=7 HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(resp.status, 201);
    let deadline = std::time::Instant::now() + WAIT;
    let har = loop {
        let har = json(&admin(&w, "GET", "/api/exchanges.har", None));
        if !har["log"]["entries"].as_array().unwrap().is_empty() {
            break har;
        }
        assert!(std::time::Instant::now() < deadline, "no entry");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let entry = &har["log"]["entries"][0];
    let request = &entry["request"];
    assert_eq!(request["url"], "http://app.test/upload?id=7");
    let names: Vec<&str> = request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Host") && names.contains(&"Via"),
        "{names:?}"
    );
    assert_eq!(request["postData"]["mimeType"], "text/plain");
    assert_eq!(
        request["postData"]["text"],
        "x".repeat(16),
        "cut at 16 bytes"
    );
    let response = &entry["response"];
    assert_eq!(response["status"], 201);
    assert_eq!(response["content"]["mimeType"], "application/json");
    assert_eq!(response["content"]["text"], "{\"got\": 40}");
    assert!(
        entry["comment"].as_str().unwrap().contains("cut"),
        "{entry}"
    );
    // The API log lines stay as they were: no bodies there.
    let line = w.wait_log_lines(1).remove(0);
    assert!(!line.contains("xxxx"), "{line}");
}

#[test]
fn changes_survive_a_restart() {
    let app = Backend::named("app");
    let api = Backend::named("api");
    let mut w = Watchtower::with_routes(route("app", "app.test", app.port()));
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(&w.config_path, format!("# kept across edits\n{text}")).unwrap();
    admin(&w, "PUT", "/api/routing", Some(r#"{"enabled": false}"#));
    let body = format!(
        r#"{{"id": "api", "domain": "api.test", "target_host": "127.0.0.1", "target_port": {}}}"#,
        api.port()
    );
    assert_eq!(admin(&w, "POST", "/api/routes", Some(&body)).status, 201);

    w.restart();
    assert_eq!(
        json(&admin(&w, "GET", "/api/routing", None))["enabled"],
        false
    );
    admin(&w, "PUT", "/api/routing", Some(r#"{"enabled": true}"#));
    assert_eq!(w.get("api.test").body_text(), "api GET /");
    assert_eq!(w.get("app.test").body_text(), "app GET /");
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    assert!(text.starts_with("# kept across edits\n"), "{text}");
}

#[test]
fn a_download_in_progress_finishes_where_it_started_when_routing_changes() {
    let raw = RawBackend::start();
    let w = Watchtower::with_routes(route("app", "app.test", raw.port()));
    let mut c = w.connect_proxy();
    c.write_all(b"GET http://app.test/big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let mut up = raw.accept();
    read_raw_head(&mut up);
    let total = 3 * 1024 * 1024;
    write!(up, "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").unwrap();
    let chunk = vec![b'd'; 1024 * 1024];
    up.write_all(&chunk).unwrap();
    // Halfway through, routing goes off and the route is removed.
    admin(&w, "PUT", "/api/routing", Some(r#"{"enabled": false}"#));
    assert_eq!(admin(&w, "DELETE", "/api/routes/app", None).status, 204);
    let writer = std::thread::spawn(move || {
        up.write_all(&chunk).unwrap();
        up.write_all(&chunk).unwrap();
        up
    });
    let mut r = BufReader::new(c);
    let resp = read_response(&mut r).unwrap();
    let _up = writer.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), total);
    assert!(resp.body.iter().all(|b| *b == b'd'));
}
