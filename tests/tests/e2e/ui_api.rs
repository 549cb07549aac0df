//! The web UI's loopback API, against a real daemon: the token is needed,
//! a wrong `Host` (DNS rebinding) and a foreign `Origin` (CSRF) are refused
//! even with the token, a login link works once and sets an HttpOnly,
//! SameSite=Strict cookie, and the event stream starts with the status.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use coffer_e2e::ui::http;
use coffer_e2e::{Client, Server};

const STATUS: &str = r#"{"type":"get_status"}"#;

#[test]
fn the_api_needs_the_token_the_right_host_and_no_foreign_origin() {
    let server = Server::start();
    let a = Client::new();
    a.signup(&server, "ui@example.org");
    a.write("hello.txt", b"hello");
    let mut ui = a.ui_daemon();
    let host = ui.host.as_str();
    let token = a.ui_token();
    let mode = std::fs::metadata(a.home.join("ui-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let bearer = format!("Bearer {token}");
    let json = ("Content-Type", "application/json");

    // No token: 401, with a stable error code.
    let r = http(host, "POST", "/api", &[("Host", host), json], Some(STATUS), None);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains(r#""code":"unauthorized""#), "{}", r.body);
    let r = http(host, "GET", "/api/events", &[("Host", host)], None, None);
    assert_eq!(r.status, 401);
    let wrong = format!("Bearer {}", "0".repeat(64));
    let r =
        http(host, "POST", "/api", &[("Host", host), json, ("Authorization", &wrong)], Some(STATUS), None);
    assert_eq!(r.status, 401);

    // The token: the status comes back.
    let r =
        http(host, "POST", "/api", &[("Host", host), json, ("Authorization", &bearer)], Some(STATUS), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""type":"status""#), "{}", r.body);

    // Wrong Host, even with the token: refused (DNS rebinding).
    let port = host.rsplit(':').next().unwrap();
    for bad in [format!("evil.example:{port}"), "127.0.0.1:1".to_string(), String::new()] {
        let r = http(
            host,
            "POST",
            "/api",
            &[("Host", &bad), json, ("Authorization", &bearer)],
            Some(STATUS),
            None,
        );
        assert_eq!(r.status, 403, "Host {bad:?}: {r:?}");
        assert!(r.body.contains(r#""code":"forbidden""#));
    }
    let r = http(host, "GET", "/", &[("Host", &format!("evil.example:{port}"))], None, None);
    assert_eq!(r.status, 403, "the UI itself is not served to a rebound name");
    let localhost = format!("localhost:{port}");
    let r = http(
        host,
        "POST",
        "/api",
        &[("Host", &localhost), json, ("Authorization", &bearer)],
        Some(STATUS),
        None,
    );
    assert_eq!(r.status, 200, "localhost:PORT is this origin too");

    // Foreign Origin, even with the token: refused (CSRF).
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let h = [("Host", host), json, ("Authorization", bearer.as_str()), ("Origin", origin)];
        let r = http(host, "POST", "/api", &h, Some(STATUS), None);
        assert_eq!(r.status, 403, "Origin {origin}: {r:?}");
    }
    let same = format!("http://{host}");
    let h = [("Host", host), json, ("Authorization", bearer.as_str()), ("Origin", same.as_str())];
    assert_eq!(http(host, "POST", "/api", &h, Some(STATUS), None).status, 200, "same origin is fine");
    let h = [("Host", host), json, ("Authorization", bearer.as_str()), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(http(host, "POST", "/api", &h, Some(STATUS), None).status, 403);
    // Another port of this host is "same-site": the cookie would go along.
    let h = [("Host", host), json, ("Authorization", bearer.as_str()), ("Sec-Fetch-Site", "same-site")];
    assert_eq!(http(host, "POST", "/api", &h, Some(STATUS), None).status, 403);
    // A form post (no JSON content type) is refused even with the token.
    let h = [("Host", host), ("Content-Type", "text/plain"), ("Authorization", bearer.as_str())];
    assert_eq!(http(host, "POST", "/api", &h, Some(STATUS), None).status, 400);

    // A login link works once and sets a strict, HttpOnly cookie.
    let path = &ui.login[ui.url.len() - 1..];
    let r = http(host, "GET", path, &[("Host", host)], None, None);
    assert_eq!(r.status, 303, "{r:?}");
    let cookie = r.header("set-cookie").expect("a cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(http(host, "GET", path, &[("Host", host)], None, None).status, 401, "used up");
    let r = http(host, "POST", "/api", &[("Host", host), json, ("Cookie", &pair)], Some(STATUS), None);
    assert_eq!(r.status, 200, "the cookie signs in");

    // `coffer ui` mints a fresh link to the same daemon.
    let out = a.run(&["ui", "--dir", a.root.to_str().unwrap()]).ok().stdout;
    let link = out.trim();
    assert!(link.starts_with(&ui.url), "{link}");
    assert_eq!(http(host, "GET", &link[ui.url.len() - 1..], &[("Host", host)], None, None).status, 303);

    // The event stream starts with the status.
    let r = http(host, "GET", "/api/events", &[("Host", host), ("Cookie", &pair)], None, Some("\n\n"));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")));
    assert!(r.body.contains(r#""type":"status""#), "{}", r.body);

    // A file of the folder, only with the token, as a sandboxed download.
    let r = http(host, "GET", "/api/file?path=hello.txt", &[("Host", host)], None, None);
    assert_eq!(r.status, 401);
    let r = http(host, "GET", "/api/file?path=hello.txt", &[("Host", host), ("Cookie", &pair)], None, None);
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    assert!(r.header("content-disposition").is_some_and(|d| d.starts_with("attachment")));
    let r =
        http(host, "GET", "/api/file?path=.coffer/ui.json", &[("Host", host), ("Cookie", &pair)], None, None);
    assert_eq!(r.status, 400, "the state folder is not served");

    // A bad request has a stable code too.
    let h = [("Host", host), json, ("Authorization", bearer.as_str())];
    let r = http(host, "POST", "/api", &h, Some(r#"{"type":"list_versions","path":"../x"}"#), None);
    assert_eq!(r.status, 400);
    assert!(r.body.contains(r#""code":"bad_request""#), "{}", r.body);

    // The "serve the web UI" setting: a plain `coffer sync` serves it too.
    let h = [("Host", host), json, ("Authorization", bearer.as_str())];
    let r = http(host, "POST", "/api", &h, Some(r#"{"type":"update_settings","serve_ui":true}"#), None);
    assert!(r.status == 200 && r.body.contains(r#""serve_ui":true"#), "{r:?}");
    ui.proc.terminate();
    let address = a.root.join(".coffer/ui.json");
    assert!(!address.exists(), "a daemon that stops forgets its address");
    let _daemon = a.daemon();
    coffer_e2e::wait_until("the plain daemon to serve the UI", Duration::from_secs(20), || address.exists());
    let link = a.run(&["ui", "--dir", a.root.to_str().unwrap()]).ok().stdout;
    let new_host = link.trim().trim_start_matches("http://").split('/').next().unwrap().to_string();
    assert_ne!(new_host, host);
    let r = http(
        &new_host,
        "POST",
        "/api",
        &[("Host", &new_host), json, ("Authorization", &bearer)],
        Some(STATUS),
        None,
    );
    assert_eq!(r.status, 200, "the same token works: it is per install");
}
