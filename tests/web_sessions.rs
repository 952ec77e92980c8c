//! Linked-device sessions in the database: the storage conformance suite
//! the library's file store passes (in whatan-web's own tests) run against
//! whatan's rows (`driver::web::DbRows`) on the store: the SQLite file in
//! the SQLite pass, PostgreSQL in the PostgreSQL pass. And the fence: a
//! device started under a lease that moved on can no longer write.
#![cfg(feature = "web")]

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use whatan::driver::web::DbRows;
use whatan::store::Store;
use whatan_web::conformance::{self, Subject};
use whatan_web::{Kind, Op, RowBackend, SessionRows};

/// Each fresh backend is a new account's rows in one store; reopening
/// opens the store again (a new connection, as after a restart) on the
/// last account made.
struct OnStore {
    path: std::path::PathBuf,
    store: Store,
    accounts: AtomicU64,
}

#[async_trait::async_trait]
impl Subject for OnStore {
    type Backend = RowBackend;

    async fn fresh(&self) -> RowBackend {
        let n = self.accounts.fetch_add(1, Ordering::Relaxed);
        let rows = DbRows::new(self.store.clone(), &format!("acc_{n}"), None);
        RowBackend::new(Arc::new(rows))
    }

    async fn reopen(&self, _backend: &RowBackend) -> RowBackend {
        let last = self.accounts.load(Ordering::Relaxed) - 1;
        let store = database::open_store(&self.path);
        RowBackend::new(Arc::new(DbRows::new(store, &format!("acc_{last}"), None)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_the_database_pass_the_file_stores_tests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whatan.db");
    let subject = OnStore {
        store: database::open_store(&path),
        path,
        accounts: AtomicU64::new(0),
    };
    conformance::run(&subject).await;
    assert!(
        subject.accounts.load(Ordering::Relaxed) > 10,
        "the suite ran its checks"
    );
}

fn put(key: &[u8]) -> Op {
    Op::Put {
        kind: Kind::Session,
        key: key.to_vec(),
        value: b"ratchet".to_vec(),
        ts: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_lease_moved_on_cannot_write_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whatan.db");
    let store = database::open_store(&path);
    // The account's lease, taken by another node: fence 7.
    store
        .write(|c| {
            c.execute(
                "INSERT INTO leases (account_id, node_id, expires_at, fence, acquired_at)
                 VALUES ('acc_1', 'other-node', 9999999999999, 7, 0)",
                (),
            )?;
            Ok(())
        })
        .await
        .unwrap();

    let stale = DbRows::new(store.clone(), "acc_1", Some(6));
    let refused = stale.apply(vec![put(b"a@s.whatsapp.net")]).await;
    assert!(
        matches!(&refused, Err(e) if e.contains("moved on from fence 6")),
        "{refused:?}"
    );
    assert!(stale.clear().await.is_err(), "nor remove it");
    assert_eq!(
        stale.get(Kind::Session, b"a@s.whatsapp.net").await.unwrap(),
        None,
        "nothing of the refused batch was written"
    );

    let current = DbRows::new(store.clone(), "acc_1", Some(7));
    current.apply(vec![put(b"a@s.whatsapp.net")]).await.unwrap();
    // Pairing writes without a lease (no device runs anywhere yet).
    let pairing = DbRows::new(store.clone(), "acc_1", None);
    pairing.apply(vec![put(b"b@s.whatsapp.net")]).await.unwrap();
    let rows = current.scan(Kind::Session, b"").await.unwrap();
    assert_eq!(rows.len(), 2);
}
