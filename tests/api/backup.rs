//! `whatan backup FILE` (the built binary) while the server takes sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::helpers::*;

#[tokio::test]
async fn a_backup_taken_under_load_is_whole_and_holds_every_send_answered_before_it() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.pacing.daily_limit = 1_000_000;
        })
        .await,
    );
    if crate::database::sqlite_only("whatan backup copies the SQLite file") {
        return postgres_is_backed_up_with_its_own_tools(&app);
    }
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (app, answered, stop) = (app.clone(), answered.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = app
                    .send(&app.owner.token, None, &text_to("+917999709798"))
                    .await;
                assert_eq!(r.status, 202);
                let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
                answered.lock().unwrap().push(id);
            }
        }));
    }
    // Under way: some sends answered, more coming.
    while answered.lock().unwrap().len() < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let before: Vec<String> = answered.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let (db, target) = (app.database_env(), copy.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_whatan"))
            .envs([db])
            .args(["--json", "backup"])
            .arg(&target)
            .env_remove("WHATAN_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let during = answered.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(during > before.len(), "sends went on while the backup ran");

    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = std::fs::metadata(&copy).unwrap().len();
    assert_eq!(printed["bytes"], size);
    assert_eq!(
        printed["path"],
        std::fs::canonicalize(&copy).unwrap().display().to_string()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", (), |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn
        .prepare("SELECT count(*) FROM send_attempts WHERE id = ?1")
        .unwrap();
    for id in &before {
        let n: i64 = stmt.query_row([id], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "send {id} answered 202 before the backup is missing");
    }

    // A second backup to the same file is refused, the first kept.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_whatan"))
        .envs([app.database_env()])
        .arg("backup")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
}

/// On PostgreSQL, `whatan backup` says what to use instead and writes nothing.
fn postgres_is_backed_up_with_its_own_tools(app: &TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whatan"))
        .envs([app.database_env()])
        .arg("backup")
        .arg(&copy)
        .env_remove("WHATAN_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!copy.exists());
}
