//! Failure paths: a store that cannot write, a driver that panics, and the
//! time rules under a clock the test moves by hand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use whatan::clock::{Clock, MS_PER_DAY};
use whatan::delivery::EngineStats;
use whatan::domain::DriverKind;
use whatan::driver::{Accepted, OutgoingMessage, SendError, WhatsAppDriver};
use whatan::store::admin::Account;
use whatan::store::StoreError;

use crate::helpers::*;

fn long_text(to: &str, n: usize) -> serde_json::Value {
    json!({"to": to, "type": "text", "text": format!("{n} {}", "x".repeat(3000))})
}

#[tokio::test]
async fn a_full_disk_is_a_503_that_stores_nothing_and_heals_by_itself() {
    // One hand-off, then the pacer waits an hour: the test is about the API.
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
        c.pacing.daily_limit = 100_000;
    })
    .await;
    // The database may not grow past its size now, as on a full disk.
    // PostgreSQL's disk fills after a few sends (a trigger stands in for
    // the server's "could not extend file": SQLSTATE 53100, disk_full).
    let postgres = app.store.path().is_none();
    if !postgres {
        app.store
            .write(|c| {
                let pages: i64 = c.query_row("PRAGMA page_count", (), |r| r.get(0))?;
                c.sqlite()
                    .expect("a SQLite store")
                    .pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
            .await
            .unwrap();
    }

    let mut accepted = Vec::new();
    let full = loop {
        assert!(accepted.len() < 2000, "the database never filled up");
        if postgres && accepted.len() == 5 {
            postgres_fails(&app, "BEFORE INSERT ON send_attempts", "true").await;
        }
        let key = format!("k{}", accepted.len());
        let r = app
            .send(
                &app.owner.token,
                Some(&key),
                &long_text("+917999709798", accepted.len()),
            )
            .await;
        match r.status {
            202 => accepted.push(r.json()["sendAttemptId"].as_str().unwrap().to_string()),
            503 => break (key, r),
            other => panic!(
                "a full disk must answer 202 or 503, got {other}: {}",
                r.json()
            ),
        }
    };
    let (key, r) = full;
    assert_eq!(r.code(), "service_unavailable");
    let retry: i64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Nothing half-written: exactly the 202s are stored, nothing under the key.
    assert_eq!(
        app.count("SELECT count(*) FROM send_attempts").await,
        accepted.len() as i64
    );
    let k = key.clone();
    let under_key: i64 = app
        .store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM idempotency_keys WHERE key = ?1",
                [&k],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(under_key, 0, "nothing is stored under the refused key");
    // Reads keep working.
    let first = app.status(&app.owner.token, &accepted[0]).await;
    assert_eq!(first.status, 200);

    // Space comes back: the same request is accepted, without a restart.
    if postgres {
        postgres_heals(&app).await;
    }
    // The pacer's writes still hit the full file meanwhile: a batch this
    // write shares with one of them fails whole (SQLite ends the
    // transaction), so it is tried again, as an operator would.
    let mut healed = Err(StoreError::Closed);
    for _ in 0..100 {
        healed = app
            .store
            .write(move |c| {
                if postgres {
                    return Ok(());
                }
                c.sqlite().expect("a SQLite store").pragma_update(
                    None,
                    "max_page_count",
                    1_073_741_823i64,
                )?;
                Ok(())
            })
            .await;
        if healed.is_ok() {
            break;
        }
    }
    healed.unwrap();
    let again = app
        .send(
            &app.owner.token,
            Some(&key),
            &long_text("+917999709798", accepted.len()),
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.json());
    assert_eq!(again.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn a_store_that_cannot_write_makes_pacers_back_off_instead_of_spinning() {
    let stats = Arc::new(EngineStats::default());
    let (clock, hand) = Clock::manual(whatan::clock::now_ms());
    let app = spawn_app_with_hooks(
        |c| {
            c.pacing.min_delay = Duration::from_secs(60);
            c.pacing.max_delay = Duration::from_secs(60);
        },
        Hooks {
            clock,
            engine_stats: stats.clone(),
            ..Default::default()
        },
    )
    .await;
    let first = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let first_id = first.json()["sendAttemptId"].as_str().unwrap().to_string();
    // Receipts too, so that no driver event is still to be written.
    app.wait_for_status(&app.owner.token, &first_id, |b| b["status"] == "read")
        .await;
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let r = app
                .send(&app.owner.token, None, &text_to("+917999709798"))
                .await;
            assert_eq!(r.status, 202);
            ids.push(r.json()["sendAttemptId"].as_str().unwrap().to_string());
        }
        ids
    };
    // The pacer waits for its next slot; then every claim starts failing
    // (a trigger on the writer's connection stands in for the full disk,
    // which an UPDATE in place does not reliably hit).
    let slot = hand.now_ms() + 60_000;
    hand.sleeper_at(slot).await;
    let postgres = app.store.path().is_none();
    if postgres {
        postgres_fails(
            &app,
            "BEFORE UPDATE OF status ON send_attempts",
            "NEW.status = 'sending'",
        )
        .await;
    }
    app.store
        .write(move |c| {
            if postgres {
                return Ok(());
            }
            c.execute_batch(
                "CREATE TEMP TRIGGER claims_fail BEFORE UPDATE OF status ON send_attempts
                 WHEN NEW.status = 'sending'
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END",
            )?;
            Ok(())
        })
        .await
        .unwrap();

    let claims_before = stats.claims.load(Ordering::Relaxed);
    let errors_before = stats.store_errors.load(Ordering::Relaxed);
    hand.set(slot);
    // Measure the pacer's retry rate over a second and a half.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let claims = stats.claims.load(Ordering::Relaxed) - claims_before;
    let errors = stats.store_errors.load(Ordering::Relaxed) - errors_before;
    assert!(
        (1..=4).contains(&claims),
        "a pacer must back off on store errors; it tried {claims} claims in 1.5 s"
    );
    assert!(errors <= 6, "{errors} store errors (log lines) in 1.5 s");
    let still = app.status(&app.owner.token, &queued[0]).await.json();
    assert_eq!(still["status"], "queued");

    // The database takes writes again: the queue drains without a restart.
    if postgres {
        postgres_heals(&app).await;
    } else {
        app.store
            .write(|c| {
                c.execute_batch("DROP TRIGGER temp.claims_fail")?;
                Ok(())
            })
            .await
            .unwrap();
    }
    let body = app
        .wait_for_status(&app.owner.token, &queued[0], |b| b["status"] != "queued")
        .await;
    assert_ne!(body["status"], "failed", "{body}");
}

/// Wraps the sandbox driver and panics in its first send.
struct PanicsOnce {
    inner: Arc<dyn WhatsAppDriver>,
    panicked: AtomicBool,
}

#[async_trait]
impl WhatsAppDriver for PanicsOnce {
    fn kind(&self) -> DriverKind {
        self.inner.kind()
    }

    fn new_message_id(&self) -> String {
        self.inner.new_message_id()
    }

    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in the driver");
        }
        self.inner.send(account, message).await
    }
}

#[tokio::test]
async fn a_driver_that_panics_does_not_end_the_accounts_sends() {
    let stats = Arc::new(EngineStats::default());
    let app = spawn_app_with_hooks(
        |_| {},
        Hooks {
            engine_stats: stats.clone(),
            wrap_drivers: Some(Box::new(|drivers| {
                let sandbox = drivers.get(DriverKind::Sandbox).unwrap();
                drivers.with(Arc::new(PanicsOnce {
                    inner: sandbox,
                    panicked: AtomicBool::new(false),
                }))
            })),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = app
            .send(&app.owner.token, None, &text_to("+917999709798"))
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["sendAttemptId"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let body = app
            .wait_for_status(&app.owner.token, id, |b| b["status"] == "read")
            .await;
        assert_eq!(body["status"], "read");
    }
    assert_eq!(stats.pacer_panics.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.handoffs_in_flight.load(Ordering::SeqCst),
        0,
        "the panicked hand-off must not stay counted, or every shutdown waits its full timeout"
    );
    assert_eq!(app.count("SELECT count(*) FROM sandbox_outbox").await, 2);
}

#[tokio::test]
async fn the_daily_limit_rolls_over_at_midnight_utc_by_the_servers_clock() {
    let midnight = 20_600 * MS_PER_DAY;
    let (clock, hand) = Clock::manual(midnight - 100);
    let app = spawn_app_with_hooks(
        |c| c.pacing.daily_limit = 1,
        Hooks {
            clock,
            ..Default::default()
        },
    )
    .await;
    let to = text_to("+917999709798");
    assert_eq!(app.send(&app.owner.token, None, &to).await.status, 202);
    let limited = app.send(&app.owner.token, None, &to).await;
    assert_eq!(limited.status, 429);
    // 100 ms before midnight, from the same instant the count used.
    assert_eq!(limited.header("retry-after").as_deref(), Some("1"));

    hand.set(midnight + 100);
    assert_eq!(app.send(&app.owner.token, None, &to).await.status, 202);
    let days: Vec<(i64, i64)> = app
        .store
        .read(|c| {
            let mut s = c.prepare("SELECT day, count FROM daily_counters ORDER BY day")?;
            let rows = s
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(days, vec![(20_599, 1), (20_600, 1)]);
}

/// The app on a manual clock standing at `start`, with a fixed pacing gap.
async fn app_on_manual_clock(
    start: i64,
    gap: Duration,
    tweak: impl FnOnce(&mut whatan::config::Config),
) -> (TestApp, whatan::clock::ManualClock) {
    let (clock, hand) = Clock::manual(start);
    let app = spawn_app_with_hooks(
        |c| {
            c.pacing.min_delay = gap;
            c.pacing.max_delay = gap;
            tweak(c);
        },
        Hooks {
            clock,
            ..Default::default()
        },
    )
    .await;
    (app, hand)
}

/// Two sends from the owner; returns their ids once the first is handed off
/// (the second then waits for the next slot).
async fn two_sends_the_first_handed_off(app: &TestApp) -> (String, String) {
    let to = text_to("+917999709798");
    let first = app.send(&app.owner.token, None, &to).await.json();
    let second = app.send(&app.owner.token, None, &to).await.json();
    let (first, second) = (
        first["sendAttemptId"].as_str().unwrap().to_string(),
        second["sendAttemptId"].as_str().unwrap().to_string(),
    );
    app.wait_for_status(&app.owner.token, &first, |b| b["status"] != "queued")
        .await;
    (first, second)
}

#[tokio::test]
async fn pacing_gaps_are_kept_by_the_servers_clock() {
    let start = whatan::clock::now_ms();
    let (app, hand) = app_on_manual_clock(start, Duration::from_secs(90), |_| {}).await;
    let (first, second) = two_sends_the_first_handed_off(&app).await;
    let sent = app.status(&app.owner.token, &first).await.json();
    assert_eq!(sent["sentAt"], whatan::clock::rfc3339_ms(start));

    // The pacer parks on the next slot; a millisecond early sends nothing.
    hand.sleeper_at(start + 90_000).await;
    hand.set(start + 89_999);
    let waiting = app.status(&app.owner.token, &second).await.json();
    assert_eq!(waiting["status"], "queued");

    hand.set(start + 90_000);
    let sent = app
        .wait_for_status(&app.owner.token, &second, |b| b["status"] != "queued")
        .await;
    assert_eq!(sent["sentAt"], whatan::clock::rfc3339_ms(start + 90_000));
}

#[tokio::test]
async fn the_offline_grace_counts_from_leaving_connected_not_from_the_last_flap() {
    use whatan::domain::AccountStatus::*;
    let start = whatan::clock::now_ms();
    let (app, hand) = app_on_manual_clock(start, Duration::from_secs(3600), |c| {
        c.pacing.offline_grace = Duration::from_secs(600);
    })
    .await;
    let (_, waiting) = two_sends_the_first_handed_off(&app).await;
    hand.sleeper_at(start + 3_600_000).await;

    // The account drops at +1 min and flaps until +9 min.
    let account = app.owner.account.clone().unwrap();
    let left = start + 60_000;
    for (status, at) in [
        (Disconnected, left),
        (Connecting, start + 300_000),
        (Disconnected, start + 420_000),
        (Connecting, start + 540_000),
    ] {
        let id = account.clone();
        app.store
            .write(move |c| admin_status_at(c, &id, status, at))
            .await
            .unwrap();
    }
    // The grace (10 min) runs out at +11 min, counted from leaving connected.
    hand.set(left + 600_000);
    let failed = app
        .wait_for_status(&app.owner.token, &waiting, |b| b["status"] == "failed")
        .await;
    assert_eq!(failed["errorCode"], "whatsapp_not_connected");
}

fn admin_status_at(
    c: &whatan::store::Conn,
    id: &str,
    status: whatan::domain::AccountStatus,
    at: i64,
) -> Result<(), whatan::store::StoreError> {
    whatan::store::admin::set_account_status_at(c, id, status, None, at).map(|_| ())
}

/// On PostgreSQL: every write `when` (a trigger's timing and table) with
/// `condition` fails as PostgreSQL fails on a full disk (SQLSTATE 53100).
async fn postgres_fails(app: &TestApp, when: &'static str, condition: &'static str) {
    app.store
        .write(move |c| {
            c.execute_batch(&format!(
                "CREATE FUNCTION whatan_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'could not extend file (simulated)' USING ERRCODE = 'disk_full'; END $$;
                 CREATE TRIGGER whatan_test_disk_full {when} FOR EACH ROW
                 WHEN ({condition}) EXECUTE FUNCTION whatan_test_disk_full();"
            ))?;
            Ok(())
        })
        .await
        .unwrap();
}

/// Undoes [`postgres_fails`].
async fn postgres_heals(app: &TestApp) {
    app.store
        .write(|c| {
            c.execute_batch("DROP FUNCTION whatan_test_disk_full() CASCADE")?;
            Ok(())
        })
        .await
        .unwrap();
}
