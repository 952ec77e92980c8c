//! Which store an integration test runs against: a fresh SQLite file (the
//! default), or, with `WHATAN_TEST_POSTGRES` set to a PostgreSQL URL that
//! may create databases (`scripts/test-all` starts such a server on
//! loopback and runs the suite both ways), a fresh PostgreSQL database.

/// The PostgreSQL server the suite runs against, if it does.
pub fn postgres_server() -> Option<String> {
    std::env::var("WHATAN_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A new, empty database on the test server; its URL.
pub fn fresh_postgres(server: &str) -> String {
    let name = format!("whatan_test_{}", hex_id());
    let admin = server.to_string();
    let create = format!("CREATE DATABASE {name}");
    // The blocking client may not run on an async runtime's thread.
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("WHATAN_TEST_POSTGRES: cannot connect: {e}"));
        client.batch_execute(&create).unwrap();
    })
    .join()
    .unwrap();
    let mut url = url::Url::parse(server).expect("WHATAN_TEST_POSTGRES is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn hex_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where this test's data lives: the SQLite file at `path`, or a fresh
/// PostgreSQL database when the suite runs against PostgreSQL.
pub fn configure(database: &mut whatan::config::DatabaseConfig, path: std::path::PathBuf) {
    database.url = postgres_for(&path);
    database.path = path;
}

/// Whether the suite runs against PostgreSQL; a SQLite-only test prints
/// that it ran in the SQLite pass instead.
pub fn sqlite_only(what: &str) -> bool {
    let on_postgres = postgres_server().is_some();
    if on_postgres {
        eprintln!("SQLite only (checked in the SQLite pass): {what}");
    }
    on_postgres
}

/// The PostgreSQL server of the PostgreSQL pass, for a test that needs one
/// beside a SQLite file; in the SQLite pass it prints that it left the
/// test's PostgreSQL part out (`scripts/test-all` runs both passes).
pub fn postgres_only(what: &str) -> Option<String> {
    let server = postgres_server();
    if server.is_none() {
        eprintln!("PostgreSQL only (runs in the PostgreSQL pass of scripts/test-all): {what}");
    }
    server
}

/// The PostgreSQL databases made for the SQLite paths tests name.
static POSTGRES_OF: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// In the PostgreSQL pass, the database that stands for the SQLite file
/// `path` (made on first use); `None` in the SQLite pass.
pub fn postgres_for(path: &std::path::Path) -> Option<String> {
    let server = postgres_server()?;
    let mut known = POSTGRES_OF.lock().unwrap();
    if let Some((_, url)) = known.iter().find(|(p, _)| p == path) {
        return Some(url.clone());
    }
    let url = fresh_postgres(&server);
    known.push((path.to_path_buf(), url.clone()));
    Some(url)
}

/// The CLI's arguments that point it at the database of `path`: `--db
/// path`, or nothing in the PostgreSQL pass (see [`cli_env`]).
pub fn cli_args(path: &std::path::Path) -> Vec<std::ffi::OsString> {
    match postgres_for(path) {
        Some(_) => Vec::new(),
        None => vec!["--db".into(), path.as_os_str().to_owned()],
    }
}

/// The CLI's environment for the database of `path`: its PostgreSQL URL in
/// the PostgreSQL pass.
pub fn cli_env(path: &std::path::Path) -> Vec<(String, String)> {
    match postgres_for(path) {
        // One node that keeps its id across the restarts a test makes, as
        // an operator's configured `cluster.node_id` does: its leases come
        // back at once instead of after their TTL.
        Some(url) => vec![
            ("WHATAN_DATABASE_URL".into(), url),
            ("WHATAN_CLUSTER_NODE_ID".into(), "test-node".into()),
        ],
        None => Vec::new(),
    }
}

/// The store of `path` (or its PostgreSQL stand-in), opened in-process.
pub fn open_store(path: &std::path::Path) -> whatan::store::Store {
    match postgres_for(path) {
        Some(url) => whatan::store::Store::open_postgres(&url).unwrap(),
        None => whatan::store::Store::open(path).unwrap(),
    }
}

/// Runs `f` over a connection of its own to the database of `path`, on a
/// thread of its own (the blocking PostgreSQL client may not run on an
/// async runtime's thread).
pub fn with_conn<T: Send>(
    path: &std::path::Path,
    f: impl FnOnce(&whatan::store::Conn) -> T + Send,
) -> T {
    std::thread::scope(|s| s.spawn(|| f(&connect(path))).join().unwrap())
}

/// A connection to the database of `path`, for a test's own checks; only
/// outside an async runtime (see [`with_conn`]).
pub fn connect(path: &std::path::Path) -> whatan::store::Conn {
    match postgres_for(path) {
        Some(url) => {
            whatan::store::Conn::Pg(Box::new(whatan::store::db::PgConn::connect(&url).unwrap()))
        }
        None => {
            let c = rusqlite::Connection::open(path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            whatan::store::Conn::Sqlite(c)
        }
    }
}

/// Every row of every table of a PostgreSQL database, as text: what a
/// test searches for a secret that must not be stored (on SQLite, the
/// file's bytes).
pub fn stored_text(c: &whatan::store::Conn) -> String {
    let tables: Vec<String> = c
        .prepare("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut all = String::new();
    for t in tables {
        let rows: Option<String> = c
            .query_row(
                &format!("SELECT string_agg(t::text, ' ') FROM {t} t"),
                (),
                |r| r.get(0),
            )
            .unwrap();
        all.push_str(&rows.unwrap_or_default());
    }
    all
}
