//! What drivers report, applied by the real delivery engine to the real
//! store: news about a message moves only the attempt of the account whose
//! connection reported it, and a connection coming back does not undo an
//! administrator's `account disconnect`. The events are pushed into the
//! engine's channel by the test, standing in for a driver.

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use whatan::config::Config;
use whatan::delivery::{Engine, EngineParts};
use whatan::domain::{AccountStatus, AttemptStatus, DriverKind, Role};
use whatan::driver::sandbox::SandboxDriver;
use whatan::driver::{DriverEvent, Drivers};
use whatan::media::MediaGuard;
use whatan::store::admin::{self, Account};
use whatan::store::attempts::{self, AttemptKey, EnqueueOutcome, NewAttempt, TransitionFields};
use whatan::store::Store;

struct Harness {
    store: Store,
    /// The engine's event channel, as a driver holds it.
    events: mpsc::UnboundedSender<DriverEvent>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A store, a sandbox driver (receipts far in the future, so only the
/// test's events move attempts) and the engine, with no pacing delay.
fn start_engine() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WHATAN_PACING_MIN_DELAY", "0ms"),
        ("WHATAN_PACING_MAX_DELAY", "1ms"),
        ("WHATAN_SANDBOX_RECEIPT_DELAY", "1h"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut config = Config::load(None, env).unwrap();
    database::configure(&mut config.database, dir.path().join("whatan.db"));
    let store = Store::open_config(&config.database).unwrap();
    let (events, events_rx) = mpsc::unbounded_channel();
    let drivers = Drivers::default().with(Arc::new(SandboxDriver::new(
        store.clone(),
        &config.sandbox,
        events.clone(),
    )));
    let media = MediaGuard::new(config.media.clone()).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    Engine::start(
        EngineParts {
            store: store.clone(),
            drivers,
            media,
            pacing: config.pacing.clone(),
            clock: Default::default(),
            stats: Default::default(),
            leases: whatan::delivery::Leases::of(&config),
        },
        events_rx,
        stop_rx,
    );
    Harness {
        store,
        events,
        stop,
        _dir: dir,
    }
}

/// Sandbox accounts, one per phone, in one workspace.
async fn accounts(store: &Store, phones: &'static [&'static str]) -> Vec<Account> {
    store
        .write(move |c| {
            let ws = admin::create_workspace(c, "Acme")?;
            let mut made = Vec::new();
            for (n, phone) in phones.iter().enumerate() {
                let user = admin::add_user(c, &ws.id, &format!("user {n}"), Role::Owner)?;
                made.push(admin::add_account(
                    c,
                    &ws.id,
                    &user.id,
                    phone,
                    DriverKind::Sandbox,
                    &serde_json::json!({}),
                )?);
            }
            Ok(made)
        })
        .await
        .unwrap()
}

fn text_attempt(account: &Account, id: &str) -> NewAttempt {
    NewAttempt {
        id: id.to_string(),
        workspace_id: account.workspace.clone(),
        account_id: account.id.clone(),
        user_id: account.user.clone(),
        mode: whatan::domain::SenderMode::Personal,
        from_phone: account.phone.clone(),
        to_phone: "+917999709798".into(),
        type_name: "text",
        payload: r#"{"text":"Your invoice is ready."}"#.into(),
        idempotency: None,
        daily_limit: 100,
        now: whatan::clock::now_ms(),
    }
}

async fn status_of(store: &Store, attempt_id: &str) -> AttemptStatus {
    let id = attempt_id.to_string();
    store
        .read(move |c| attempts::get_attempt(c, &id))
        .await
        .unwrap()
        .unwrap()
        .status
}

/// Poll the store until `attempt_id` has `wanted` (bounded; no fixed sleeps).
async fn wait_for_status(store: &Store, attempt_id: &str, wanted: AttemptStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = status_of(store, attempt_id).await;
        if now == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{attempt_id} never became {wanted:?}; it is {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_receipt_from_one_account_leaves_the_same_message_id_of_another_alone() {
    let app = start_engine();
    let made = accounts(&app.store, &["+917000000001", "+917000000002"]).await;
    // Both accounts hold an accepted attempt under the same message id
    // (ids are only unique per account), written directly to the store.
    let rows = made.clone();
    app.store
        .write(move |c| {
            for (n, account) in rows.iter().enumerate() {
                let attempt = text_attempt(account, &format!("attempt-{n}"));
                assert_eq!(attempts::enqueue(c, &attempt)?, EnqueueOutcome::Queued);
                attempts::claim(
                    c,
                    &attempt.id,
                    &account.id,
                    "3EB0SAME",
                    0,
                    None,
                    attempt.now,
                )?;
                let fields = TransitionFields::default();
                let key = AttemptKey::Id(&attempt.id);
                attempts::transition(c, key, AttemptStatus::Accepted, &fields, attempt.now)?;
            }
            Ok(())
        })
        .await
        .unwrap();

    app.events
        .send(DriverEvent::Delivered {
            account_id: made[0].id.clone(),
            message_id: "3EB0SAME".into(),
        })
        .unwrap();

    wait_for_status(&app.store, "attempt-0", AttemptStatus::Delivered).await;
    assert_eq!(
        status_of(&app.store, "attempt-1").await,
        AttemptStatus::Accepted
    );

    app.events
        .send(DriverEvent::Read {
            account_id: made[1].id.clone(),
            message_id: "3EB0SAME".into(),
        })
        .unwrap();
    wait_for_status(&app.store, "attempt-1", AttemptStatus::Read).await;
    assert_eq!(
        status_of(&app.store, "attempt-0").await,
        AttemptStatus::Delivered
    );
}

async fn account(store: &Store, id: &str) -> Account {
    let id = id.to_string();
    store
        .read(move |c| admin::get_account(c, &id))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_device_that_reconnects_does_not_undo_an_administrators_disconnect() {
    let app = start_engine();
    let made = accounts(&app.store, &["+917000000001", "+917000000002"]).await;
    let (held, other) = (made[0].clone(), made[1].id.clone());
    // A send is queued, then the administrator disconnects the account
    // (one write, so the pacer cannot send in between).
    let queued = held.clone();
    app.store
        .write(move |c| {
            let attempt = text_attempt(&queued, "attempt-held");
            assert_eq!(attempts::enqueue(c, &attempt)?, EnqueueOutcome::Queued);
            admin::disconnect_by_operator(c, &queued.id)
        })
        .await
        .unwrap();

    // The account's connection comes back by itself and says so; a second
    // event, for another account, marks when the engine has applied it.
    app.events
        .send(DriverEvent::Connection {
            account_id: held.id.clone(),
            status: AccountStatus::Connected,
            detail: None,
        })
        .unwrap();
    app.events
        .send(DriverEvent::Connection {
            account_id: other.clone(),
            status: AccountStatus::Disconnected,
            detail: Some("marker".into()),
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while account(&app.store, &other).await.status_detail.as_deref() != Some("marker") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let after = account(&app.store, &held.id).await;
    assert_eq!(after.status(), AccountStatus::Disconnected);
    assert!(after.held_by_operator);
    assert_eq!(
        status_of(&app.store, "attempt-held").await,
        AttemptStatus::Queued
    );

    // `account connect` releases it, and the queued send goes out.
    let id = held.id.clone();
    app.store
        .write(move |c| admin::connect_by_operator(c, &id, None))
        .await
        .unwrap();
    wait_for_status(&app.store, "attempt-held", AttemptStatus::Accepted).await;
}
