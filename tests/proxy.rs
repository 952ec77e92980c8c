//! `contrib/nginx.conf` in real nginx, in front of a capture server (to see
//! the headers the recipe hands upstream) and in front of `whatan serve`
//! (a send goes through it and arrives).

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "support/external_tool.rs"]
mod external_tool;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const RECIPE: &str = include_str!("../contrib/nginx.conf");
const BIN: &str = env!("CARGO_BIN_EXE_whatan");

/// nginx running the recipe, in the foreground as one process, so killing
/// the child stops it.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped recipe with its upstream pointed at `upstream` and its
/// listener on a free loopback port, inside the main-context lines a full
/// nginx.conf needs.
fn start_nginx(nginx: &Path, upstream: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(RECIPE.contains("server 127.0.0.1:8080;"));
    assert!(RECIPE.contains("listen 80;"));
    let server = RECIPE
        .replace("server 127.0.0.1:8080;", &format!("server {upstream};"))
        .replace("listen 80;", &format!("listen {addr};"))
        .replace("listen [::]:80;", "");
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(nginx)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        // Before it reads the config nginx opens its built-in error log
        // (/var/log/nginx), which a non-root user cannot write.
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it accepts connections (or failed once it exited).
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}): {err}{log}");
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        addr,
        _dir: dir,
    }
}

/// One HTTP/1.1 request; the status, the lower-cased headers and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A one-shot upstream that hands back the head of the request it got.
fn capture_one_request() -> (SocketAddr, std::thread::JoinHandle<Vec<(String, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .unwrap();
        headers
    });
    (addr, handle)
}

#[test]
fn the_nginx_recipe_hands_whatan_the_request_id_and_the_client_address() {
    let Some(nginx) = external_tool::find_or_skip(
        "nginx",
        "contrib/nginx.conf in front of an upstream (X-Request-Id, X-Forwarded-For)",
    ) else {
        return;
    };
    let (upstream, captured) = capture_one_request();
    let proxy = start_nginx(&nginx, upstream);

    let (status, _, _) = http(
        proxy.addr,
        "GET",
        "/healthz",
        &[("X-Request-Id", "abc-123")],
        "",
    );

    assert_eq!(status, 200);
    let seen = captured.join().unwrap();
    assert_eq!(header(&seen, "x-request-id"), Some("abc-123"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&seen, "x-real-ip"), Some("127.0.0.1"));
}

/// `whatan serve` on a fresh database: its address and first-run token.
struct Whatan {
    child: Child,
    addr: SocketAddr,
    token: String,
    /// The first run's dashboard sign-in link.
    dashboard: String,
    _dir: tempfile::TempDir,
}

impl Drop for Whatan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_whatan(envs: &[(&str, &str)]) -> Whatan {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let mut child = Command::new(BIN)
        .args(database::cli_args(&db))
        .envs(database::cli_env(&db))
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        // The first send goes out at once; these only keep a slow machine
        // from pacing it behind nothing.
        .env("WHATAN_PACING_MIN_DELAY", "1ms")
        .env("WHATAN_PACING_MAX_DELAY", "5ms")
        .envs(envs.iter().copied())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut token, mut dashboard) = (String::new(), String::new());
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(t) = v["firstRun"]["token"].as_str() {
            token = t.to_string();
        }
        if let Some(d) = v["firstRun"]["dashboard"].as_str() {
            dashboard = d.to_string();
        }
        if let Some(a) = v["listening"].as_str() {
            break a.parse().unwrap();
        }
    };
    Whatan {
        child,
        addr,
        token,
        dashboard,
        _dir: dir,
    }
}

#[test]
fn a_send_through_nginx_is_queued_and_arrives() {
    let Some(nginx) =
        external_tool::find_or_skip("nginx", "a send through contrib/nginx.conf to whatan serve")
    else {
        return;
    };
    let whatan = start_whatan(&[]);
    let proxy = start_nginx(&nginx, whatan.addr);
    let bearer = format!("Bearer {}", whatan.token);
    let auth = ("Authorization", bearer.as_str());

    // Act: the page's personal text example, through the proxy.
    let (status, headers, body) = http(
        proxy.addr,
        "POST",
        "/api/v1/messages/send",
        &[
            auth,
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "invoice-123-reminder"),
            ("X-Request-Id", "abc-123"),
        ],
        r#"{"to": "+917999709798", "type": "text", "text": "Your invoice is ready."}"#,
    );

    // Assert: queued, and, polled through the proxy, handed to the sandbox
    // network.
    assert_eq!(status, 202, "{body}");
    let queued: Value = serde_json::from_str(&body).unwrap();
    let id = queued["sendAttemptId"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempt = loop {
        let (status, _, body) = http(
            proxy.addr,
            "GET",
            &format!("/api/v1/messages/{id}"),
            &[auth],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let attempt: Value = serde_json::from_str(&body).unwrap();
        if !matches!(attempt["status"].as_str(), Some("queued" | "sending")) {
            break attempt;
        }
        assert!(Instant::now() < deadline, "still {attempt} after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(attempt["to"], "+917999709798");
    assert!(
        matches!(
            attempt["status"].as_str(),
            Some("accepted" | "delivered" | "read")
        ),
        "{attempt}"
    );

    // whatan echoes the client's X-Request-Id (operations.md); it comes
    // back through the proxy unchanged.
    assert_eq!(header(&headers, "x-request-id"), Some("abc-123"));
}

#[test]
fn the_dashboard_works_through_nginx_at_its_public_url() {
    let Some(nginx) = external_tool::find_or_skip(
        "nginx",
        "the dashboard through contrib/nginx.conf with server.public_url",
    ) else {
        return;
    };
    let public = "https://api.example.com";
    let whatan = start_whatan(&[("WHATAN_SERVER_PUBLIC_URL", public)]);
    let proxy = start_nginx(&nginx, whatan.addr);
    let path = whatan
        .dashboard
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("{} is not under {public}", whatan.dashboard));

    let (status, _, page) = http(proxy.addr, "GET", path, &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Continue as Owner"));
    let (status, headers, _) = http(proxy.addr, "POST", path, &[("Origin", public)], "");
    assert_eq!(status, 303);
    let cookie = header(&headers, "set-cookie").unwrap().to_string();
    assert!(cookie.contains("; Secure"), "https public_url: {cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();

    let (status, _, page) = http(proxy.addr, "GET", "/tokens", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap();
    let form = format!("csrf={}&kind=send", &csrf[..csrf.find('"').unwrap()]);
    let form_headers = |origin: &'static str| {
        [
            ("Cookie", cookie.clone()),
            ("Origin", origin.to_string()),
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
        ]
    };
    let direct = form_headers("http://127.0.0.1");
    let direct: Vec<(&str, &str)> = direct.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, _) = http(proxy.addr, "POST", "/tokens", &direct, &form);
    assert_eq!(status, 403, "only the public origin may post");
    let proxied = form_headers(public);
    let proxied: Vec<(&str, &str)> = proxied.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, _) = http(proxy.addr, "POST", "/tokens", &proxied, &form);
    assert_eq!(status, 303);
    let (_, _, page) = http(proxy.addr, "GET", "/tokens", &[("Cookie", &cookie)], "");
    assert!(page.contains("whatan_send_"), "the new token is shown once");
}
