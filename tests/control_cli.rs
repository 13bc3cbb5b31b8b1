//! `watchtower routing …` and `watchtower routes …` against a running instance (through its
//! admin API), without one (a clear message), and with `--edit` (the file instead).

mod common;

use common::*;

fn cli(w: &Watchtower, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    let config = w.config_path.to_str().unwrap().to_string();
    all.extend(["--config", &config]);
    let out = run_cli(w.dir.path(), &all);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn the_switch_and_routes_of_the_running_instance() {
    let app = Backend::named("app");
    let api = Backend::named("api");
    let w = Watchtower::with_routes(route("app", "app.test", app.port()));
    assert_eq!(cli(&w, &["routing", "status"]).1, "local routing on\n");
    assert_eq!(cli(&w, &["routing", "off"]).1, "local routing off\n");
    assert_eq!(w.get("app.test").status, 502, "routing still on");
    assert_eq!(cli(&w, &["routing", "on"]).1, "local routing on\n");

    let target = format!("127.0.0.1:{}", api.port());
    let (code, out, err) = cli(&w, &["routes", "add", "api", "api.test", &target]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("added api: api.test -> {target}\n"));
    assert_eq!(w.get("api.test").body_text(), "api GET /");
    let (code, _, err) = cli(&w, &["routes", "add", "again", "api.test", &target]);
    assert_eq!(code, 1);
    assert!(err.contains("is already routed by"), "{err}");

    assert!(
        cli(&w, &["routes", "disable", "api"])
            .1
            .ends_with("(disabled)\n")
    );
    assert_eq!(w.get("api.test").status, 502);
    let listed = cli(&w, &["routes", "list"]).1;
    assert_eq!(
        listed,
        format!(
            "app: app.test -> 127.0.0.1:{}\napi: api.test -> {target} (disabled)\n",
            app.port()
        )
    );
    assert_eq!(cli(&w, &["routes", "rm", "api"]).1, "removed api\n");
    let (code, _, err) = cli(&w, &["routes", "rm", "api"]);
    assert_eq!(code, 1);
    assert!(err.contains("no route with id"), "{err}");
}

#[test]
fn without_a_running_instance_it_says_so_and_edit_changes_the_file() {
    let dir = TempDir::new("cli-control");
    let admin = free_port();
    let path = dir.path().join("watchtower.toml");
    std::fs::write(
        &path,
        format!(
            "# mine\n[proxy]\nproxy_port = {}\n\n[admin]\nport = {admin}\n\n{}",
            free_port(),
            route("app", "app.test", 3100)
        ),
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let out = run_cli(dir.path(), &["routing", "off", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("no Watchtower answers on 127.0.0.1:{admin}"))
            && err.contains("--edit"),
        "{err}"
    );

    let out = run_cli(
        dir.path(),
        &["routing", "off", "--edit", "--config", config],
    );
    assert_eq!(
        text(&out.stdout),
        "local routing off\n",
        "{}",
        text(&out.stderr)
    );
    let out = run_cli(
        dir.path(),
        &[
            "routes",
            "add",
            "api",
            "api.test",
            "[::1]:3200",
            "--edit",
            "--config",
            config,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.starts_with("# mine\n"), "{file}");
    let checked = text(&run_cli(dir.path(), &["check", "--config", config]).stdout);
    assert!(checked.contains("local routing: off"), "{checked}");
    assert!(checked.contains("api.test"), "{checked}");
    let out = run_cli(dir.path(), &["routes", "frobnicate", "--config", config]);
    assert_eq!(out.status.code(), Some(2));
}
