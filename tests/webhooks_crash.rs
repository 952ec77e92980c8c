//! Durable webhook events across `kill -9`: the real binary sends while its
//! endpoint fails every delivery, is killed, and after a restart (the
//! endpoint healthy again) every event of every accepted send arrives.
//! The endpoint is added with the CLI, beside the running server.

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "support/serve.rs"]
mod serve;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[allow(dead_code)]
#[path = "support/receiver.rs"]
mod receiver;

use receiver::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");
const SENDS: usize = 20;
const EVENTS: [&str; 3] = ["message.accepted", "message.delivered", "message.read"];

/// Loopback endpoints allowed, sends and receipts in milliseconds, and ten
/// seconds of retries 50 ms apart: the kill lands while they go on.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("WHATAN_WEBHOOKS_ALLOW_NETWORKS", "127.0.0.1/32".into()),
        (
            "WHATAN_WEBHOOKS_RETRY_SCHEDULE",
            vec!["50ms"; 200].join(","),
        ),
        ("WHATAN_WEBHOOKS_POLL_INTERVAL", "10ms".into()),
        ("WHATAN_PACING_MIN_DELAY", "0ms".into()),
        ("WHATAN_PACING_MAX_DELAY", "2ms".into()),
        ("WHATAN_SANDBOX_RECEIPT_DELAY", "5ms".into()),
    ]
}

fn start(db: &Path) -> (Child, String, Option<String>) {
    start_with(db, &[], Stdio::null())
}

/// `serve` with more settings and its stderr where the test wants it.
#[allow(clippy::zombie_processes)] // the caller kills and waits
fn start_with(db: &Path, more: &[(&str, &str)], stderr: Stdio) -> (Child, String, Option<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(database::cli_args(db))
        .envs(database::cli_env(db))
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .envs(env())
        .envs(more.iter().copied())
        .current_dir(db.parent().unwrap())
        .stderr(stderr);
    serve::spawn(cmd)
}

fn cli(db: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(database::cli_args(db))
        .envs(database::cli_env(db))
        .arg("--json")
        .args(args)
        .envs(env())
        .current_dir(db.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "whatan {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `webhook add` for the first-run workspace, with the CLI.
fn add_endpoint(db: &Path, url: &str) -> Value {
    let workspace = cli(db, &["workspace", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    cli(
        db,
        &["webhook", "add", "--workspace", &workspace, "--url", url],
    )
}

fn count(db: &Path, sql: &str) -> i64 {
    database::with_conn(db, |c| c.query_row(sql, (), |r| r.get(0)).unwrap())
}

#[tokio::test]
async fn every_event_arrives_after_kill_9_while_deliveries_fail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let receiver = Receiver::start(500).await;
    let (mut server, addr, token) = start(&db);
    let token = token.expect("first run prints a token");
    let added = add_endpoint(&db, &receiver.url());
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));

    // Act: sends whose events all fail to deliver, then kill -9.
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..SENDS {
        let r = client
            .post(format!("http://{addr}/api/v1/messages/send"))
            .bearer_auth(&token)
            .body(format!(
                r#"{{"to":"+9179997{n:05}","type":"text","text":"hi {n}"}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        accepted.push(v["sendAttemptId"].as_str().unwrap().to_string());
    }
    // Every event is written (read is the last) and deliveries are failing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT COUNT(*) FROM webhook_deliveries") < (SENDS * EVENTS.len()) as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events were not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver
        .wait_for("failed tries", |all| all.len() >= 10)
        .await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(receiver.received().iter().all(|r| r.answered == 500));

    // The endpoint recovers; the server restarts.
    receiver.set_status(200);
    let (mut server, _, _) = start(&db);

    // Assert: every (attempt, event) arrives with a 2xx, under the
    // webhook-id it had before the kill.
    let expected: HashSet<(String, String)> = accepted
        .iter()
        .flat_map(|id| EVENTS.iter().map(move |e| (id.clone(), e.to_string())))
        .collect();
    let arrived_of = |all: &[receiver::Received]| -> HashSet<(String, String)> {
        all.iter()
            .filter(|r| r.answered == 200)
            .map(|r| {
                let v = r.json();
                (
                    v["data"]["sendAttemptId"].as_str().unwrap().to_string(),
                    v["type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let all = receiver
        .wait_for("every event after the restart", |all| {
            arrived_of(all) == expected
        })
        .await;
    for before in all.iter().filter(|r| r.answered == 500) {
        let id = before.header("webhook-id");
        assert!(
            all.iter()
                .any(|r| r.answered == 200 && r.header("webhook-id") == id),
            "{id} was tried before the kill but never arrived after it"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// An endpoint that fails for `webhooks.disable_after` is disabled, and the
/// operator hears of it in the log.
#[tokio::test]
async fn disabling_a_failing_endpoint_logs_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let log = dir.path().join("stderr.log");
    let receiver = Receiver::start(500).await;
    let (mut server, addr, token) = start_with(
        &db,
        &[
            ("WHATAN_WEBHOOKS_DISABLE_AFTER", "1ms"),
            ("WHATAN_LOG", "warn"),
        ],
        std::fs::File::create(&log).unwrap().into(),
    );
    let token = token.expect("first run prints a token");
    let added = add_endpoint(&db, &receiver.url());
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/messages/send"))
        .bearer_auth(&token)
        .body(r#"{"to":"+917999709798","type":"text","text":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("webhook endpoint disabled"))
        {
            break line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warning; log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(added["id"].as_str().unwrap()),
        "names the endpoint: {warning}"
    );
    assert_eq!(
        cli(&db, &["webhook", "list"])[0]["status"],
        "disabled",
        "the endpoint is disabled"
    );
}
