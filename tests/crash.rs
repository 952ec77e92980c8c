//! Exactly once across crashes: load the real binary with sends, `kill -9`
//! it several times mid-run, restart, and check that every send that got a
//! 202 is delivered exactly once (sandbox outbox) and nothing else is, and
//! that the network saw each message handed off once, plus at most one
//! flagged redelivery per kill (sandbox hand-off log, no unique key).

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "support/serve.rs"]
mod serve;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "support/fake_graph.rs"]
mod fake_graph;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");
const ROUNDS: usize = 4;
const ACCEPTED_PER_ROUND: usize = 80;
const CLIENTS: usize = 6;

#[allow(clippy::zombie_processes)] // every caller kills and waits
fn start(db: &Path) -> (Child, String, Option<String>) {
    start_with(db, &[])
}

#[allow(clippy::zombie_processes)] // every caller kills and waits
fn start_with(db: &Path, env: &[(&str, &str)]) -> (Child, String, Option<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(database::cli_args(db))
        .envs(database::cli_env(db))
        .envs(env.iter().copied())
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .env("WHATAN_PACING_MIN_DELAY", "0ms")
        .env("WHATAN_PACING_MAX_DELAY", "3ms")
        .env("WHATAN_PACING_DAILY_LIMIT", "100000")
        .env("WHATAN_SANDBOX_RECEIPT_DELAY", "1h")
        // The network acknowledges after 4 ms: a kill often lands between a
        // delivery and the commit of its result.
        .env("WHATAN_SANDBOX_ACK_DELAY", "4ms")
        .current_dir(db.parent().unwrap())
        .stderr(Stdio::null());
    serve::spawn(cmd)
}

/// One POST; `Some(id)` only for a 202 whose body arrived whole.
fn send(addr: &str, token: &str, key: &str, n: usize) -> Option<String> {
    let body = format!(r#"{{"to":"+9179997{n:05}","type":"text","text":"crash test {n}"}}"#);
    serve::post_send(addr, token, key, &body)
}

/// `count` client threads, each sending until `stop` or `limit` sends; a
/// 202's attempt id goes to `accepted` and bumps `counter`. `key(client, n)`
/// gives the n-th send's Idempotency-Key and number.
#[allow(clippy::too_many_arguments)]
fn spawn_clients(
    count: usize,
    addr: &str,
    token: &str,
    stop: &Arc<AtomicBool>,
    accepted: &Arc<Mutex<Vec<String>>>,
    counter: &Arc<AtomicUsize>,
    key: impl Fn(usize, usize) -> (String, usize) + Copy + Send + 'static,
    limit: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..count)
        .map(|c| {
            let (addr, token, stop, accepted, counter) = (
                addr.to_string(),
                token.to_string(),
                stop.clone(),
                accepted.clone(),
                counter.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < limit {
                    n += 1;
                    let (key, number) = key(c, n);
                    match send(&addr, &token, &key, number) {
                        Some(id) => {
                            accepted.lock().unwrap().push(id);
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        None => return,
                    }
                }
            })
        })
        .collect()
}

fn pending(db: &Path) -> i64 {
    database::with_conn(db, |c| {
        c.query_row(
            "SELECT count(*) FROM send_attempts WHERE status IN ('queued', 'sending')",
            (),
            |r| r.get(0),
        )
        .unwrap()
    })
}

#[test]
fn every_accepted_send_is_delivered_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut token = String::new();

    for round in 0..ROUNDS {
        let (mut child, addr, first) = start(&db);
        if let Some(t) = first {
            token = t;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = spawn_clients(
            CLIENTS,
            &addr,
            &token,
            &stop,
            &accepted,
            &counter,
            move |c, n| {
                let seq = round * 100_000 + c * 10_000 + n;
                (format!("r{round}-c{c}-{n}"), seq % 100_000)
            },
            10_000,
        );
        // Kill -9 once this round's quota of 202s has arrived, mid-stream.
        let target = (round + 1) * ACCEPTED_PER_ROUND;
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
    }
    assert!(counter.load(Ordering::SeqCst) >= ROUNDS * ACCEPTED_PER_ROUND);

    // Restart and let everything drain.
    let (mut child, _addr, _) = start(&db);
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending(&db) > 0 {
        assert!(Instant::now() < deadline, "sends never drained");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let c = database::connect(&db);
    let accepted = accepted.lock().unwrap().clone();
    for id in &accepted {
        let (status, deliveries): (String, i64) = c
            .query_row(
                "SELECT a.status, (SELECT count(*) FROM sandbox_outbox o WHERE o.message_id = a.message_id)
                 FROM send_attempts a WHERE a.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("attempt {id} that got a 202 is missing: {e}"));
        assert_eq!(status, "accepted", "{id}");
        assert_eq!(deliveries, 1, "{id} delivered {deliveries} times");
    }
    // Nothing else reached the network: one outbox row per sent attempt.
    let sent: i64 = c
        .query_row(
            "SELECT count(*) FROM send_attempts WHERE status = 'accepted'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    let outbox: i64 = c
        .query_row("SELECT count(*) FROM sandbox_outbox", (), |r| r.get(0))
        .unwrap();
    let orphans: i64 = c
        .query_row(
            "SELECT count(*) FROM sandbox_outbox o WHERE NOT EXISTS
               (SELECT 1 FROM send_attempts a WHERE a.message_id = o.message_id)",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outbox, sent, "outbox rows vs sent attempts");
    assert_eq!(
        orphans, 0,
        "deliveries that belong to no attempt (a re-send with a new id)"
    );
    assert!(sent as usize >= accepted.len());

    // Hand-offs as the network received them, duplicates included: each
    // message is handed off once, plus at most one flagged redelivery for
    // the hand-off a kill interrupted (one account, so one per kill).
    let (handoffs, messages): (i64, i64) = c
        .query_row(
            "SELECT count(*), count(DISTINCT message_id) FROM sandbox_handoffs",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let twice: i64 = c
        .query_row(
            "SELECT count(*) FROM (SELECT message_id FROM sandbox_handoffs WHERE redelivery = 0
                                   GROUP BY message_id HAVING count(*) > 1) AS twice",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        twice, 0,
        "messages handed off twice without a crash between"
    );
    assert_eq!(messages, sent, "messages handed off vs sent attempts");
    assert!(
        handoffs - messages <= ROUNDS as i64,
        "{} second hand-offs for {ROUNDS} kills",
        handoffs - messages
    );
}

/// The same kill -9 rounds against the Cloud driver and a fake Graph API
/// (which outlives every kill), counting `/messages` calls per message:
/// the Cloud API cannot de-duplicate, so a message is never posted twice,
/// and at most one attempt per kill ends "outcome unknown".
#[test]
fn a_cloud_send_is_never_posted_twice_across_kill_9() {
    use fake_graph::{FakeGraph, MessageReply, ACCESS_TOKEN, PHONE_NUMBER_ID};
    use whatan::domain::token::{self, TokenKind};
    use whatan::domain::{AccountStatus, DriverKind, Role};
    use whatan::store::admin;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let graph = runtime.block_on(FakeGraph::start());
    // Each answer takes a few milliseconds, so kills land mid-request.
    graph.queue((0..5_000).map(|_| MessageReply::slow(Duration::from_millis(3))));

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let token = {
        let store = database::open_store(&db);
        store
            .write_blocking(|c| {
                let ws = admin::create_workspace(c, "Acme")?;
                let user = admin::add_user(c, &ws.id, "Ann", Role::Owner)?;
                let settings = serde_json::json!({
                    "phone_number_id": PHONE_NUMBER_ID,
                    "access_token": ACCESS_TOKEN,
                    "app_secret": "app-secret-for-the-crash-test",
                    "verify_token": "verify",
                });
                let account = admin::add_account(
                    c,
                    &ws.id,
                    &user.id,
                    "+917000000001",
                    DriverKind::Cloud,
                    &settings,
                )?;
                admin::set_account_status(c, &account.id, AccountStatus::Connected, None)?;
                let secret = token::generate(TokenKind::Send);
                admin::create_token(c, &user.id, TokenKind::Send, None, None, &secret)?;
                Ok(secret.secret)
            })
            .unwrap()
    };
    let env = [("WHATAN_CLOUD_GRAPH_BASE_URL", graph.base_url.as_str())];
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let counter = Arc::new(AtomicUsize::new(0));
    const CLOUD_ROUNDS: usize = 3;
    const CLOUD_PER_ROUND: usize = 40;
    for round in 0..CLOUD_ROUNDS {
        let (mut child, addr, _) = start_with(&db, &env);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = spawn_clients(
            2,
            &addr,
            &token,
            &stop,
            &accepted,
            &counter,
            move |c, n| {
                let seq = round * 10_000 + c * 1_000 + n;
                (format!("cloud-r{round}-c{c}-{n}"), seq)
            },
            1_000,
        );
        // Kill once this round's sends are in and the first are being posted.
        let target = (round + 1) * CLOUD_PER_ROUND;
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        let posted = graph.message_requests().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while graph.message_requests().len() < posted + 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let (mut child, _addr, _) = start_with(&db, &env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending(&db) > 0 {
        assert!(Instant::now() < deadline, "sends never drained");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Calls per message, by the message's unique text.
    let mut calls: std::collections::HashMap<String, usize> = Default::default();
    for request in graph.message_requests() {
        let text = request.json()["text"]["body"].as_str().unwrap().to_string();
        *calls.entry(text).or_default() += 1;
    }
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "messages posted more than once: {twice:?}"
    );

    let c = database::connect(&db);
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= CLOUD_ROUNDS * CLOUD_PER_ROUND);
    let mut unknown = 0;
    for id in &accepted {
        let (status, error): (String, Option<String>) = c
            .query_row(
                "SELECT status, error_message FROM send_attempts WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("attempt {id} that got a 202 is missing: {e}"));
        match status.as_str() {
            "accepted" => {}
            "failed" => {
                assert!(
                    error.as_deref().unwrap_or_default().contains("unknown"),
                    "{id} failed for another reason: {error:?}"
                );
                unknown += 1;
            }
            other => panic!("{id} ended {other}"),
        }
    }
    assert!(
        unknown <= CLOUD_ROUNDS,
        "{unknown} attempts ended 'outcome unknown' for {CLOUD_ROUNDS} kills"
    );
    let accepted_rows: i64 = c
        .query_row(
            "SELECT count(*) FROM send_attempts WHERE status = 'accepted'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert!(calls.len() as i64 >= accepted_rows);
}
