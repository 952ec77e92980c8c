//! `whatan serve` as a process, for the tests that kill or pause it: start
//! it and read what it prints, and send over a raw connection (one request,
//! `Connection: close`), so a server killed mid-request shows as `None`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `check` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `cmd` (a `whatan --json serve` command) with its stdout piped and
/// read up to its `{"listening": ...}` line: the child, its address, and
/// the first run's token if it printed one.
#[allow(clippy::zombie_processes)] // every caller kills and waits
pub fn spawn(mut cmd: Command) -> (Child, String, Option<String>) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = None;
    loop {
        let line = lines.next().expect("serve prints its address").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(t) = v["firstRun"]["token"].as_str() {
            token = Some(t.to_string());
        }
        if let Some(addr) = v["listening"].as_str() {
            return (child, addr.to_string(), token);
        }
    }
}

/// One POST of `body` to the send endpoint; `Some(id)` only for a 202
/// whose body arrived whole.
pub fn post_send(addr: &str, token: &str, key: &str, body: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let req = format!(
        "POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 202") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()?;
    Some(v["sendAttemptId"].as_str()?.to_string())
}
