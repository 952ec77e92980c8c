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
    database.path = path;
    database.url = postgres_server().map(|server| fresh_postgres(&server));
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
