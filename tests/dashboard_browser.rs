//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! flips the switch and adds a route through the page, a validation message shows at the field,
//! and proxied requests prove that routing changed. Screenshots go to
//! `target/dashboard-screenshots/` as artefacts. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    addr: std::net::SocketAddr,
    session: String,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "chromedriver not found: install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver), as .ci/run does",
            );
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            thread::sleep(Duration::from_millis(50));
        }
        let profile = TempDir::new("chromium");
        let mut driver = Driver {
            child,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,1000",
                         format!("--user-data-dir={}", driver._profile.path().display())],
            },
        }}});
        let created = driver.call("POST", "/session", Some(capabilities));
        driver.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let resp = roundtrip(self.addr, &request);
        let value: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Waits for an element matching `css`; returns its id.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {found}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn clear_and_type(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.session_call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the text of `css` satisfies `pred`.
    fn wait_text(&self, css: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(css);
            if pred(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} says {text:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, name: &str) {
        let data = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(data.as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_switch_and_a_new_route_set_in_the_page_change_where_requests_go() {
    let app = Backend::named("app");
    let api = Backend::named("api");
    let w = Watchtower::with_routes(route("app", "app.test", app.port()));
    // One exchange already, so the list has a row.
    assert_eq!(w.get("app.test").body_text(), "app GET /");

    let driver = Driver::start();
    driver.open(&format!("http://{}/#token={}", w.admin, w.admin_token()));
    driver.find("#routes tbody tr[data-id=\"app\"]");
    driver.wait_text("#routing-state", |t| t == "on");
    driver.wait_text("#exchanges tbody", |t| t.contains("app.test"));
    driver.screenshot("1-loaded");

    // The switch.
    driver.click("#routing");
    driver.wait_text("#routing-state", |t| t == "off");
    assert_eq!(w.get("app.test").status, 502, "routing still on");
    driver.click("#routing");
    driver.wait_text("#routing-state", |t| t == "on");
    assert_eq!(w.get("app.test").body_text(), "app GET /");

    // A route with a mistake: the message shows at the form, nothing changes.
    driver.clear_and_type("input[name=id]", "api");
    driver.clear_and_type("input[name=domain]", "api.*.test");
    driver.clear_and_type("input[name=target_port]", &api.port().to_string());
    driver.click("#save");
    let error = driver.wait_text("#form-error", |t| !t.is_empty());
    assert!(error.contains("domain"), "{error}");
    driver.screenshot("2-validation");

    // Corrected, it is added and routes at once.
    driver.clear_and_type("input[name=domain]", "api.test");
    driver.click("#save");
    driver.find("#routes tbody tr[data-id=\"api\"]");
    assert_eq!(w.get("api.test").body_text(), "api GET /");
    driver.wait_text("#exchanges tbody", |t| t.contains("api.test"));
    driver.screenshot("3-route-added");
    // A phone-sized window: the same page, laid out for it.
    driver.session_call(
        "POST",
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    );
    driver.find("#qr");
    driver.screenshot("4-phone-width");
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    assert!(text.contains("id = \"api\""), "{text}");
}
