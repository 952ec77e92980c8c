//! The stores side by side (`BENCH_POSTGRES`: a PostgreSQL URL that may
//! create databases; `scripts/bench-stores` starts a durable one and runs
//! the whole benchmark with it): the SQLite file, PostgreSQL with one node,
//! and PostgreSQL with three nodes (the load spread over all three), each
//! on a fresh database, 64-connection sends then status reads, alternated
//! round by round so that drift on a shared machine hits all alike.

use super::*;

/// Median figures of one store.
pub struct StoreRow {
    pub label: &'static str,
    pub send: f64,
    pub status: f64,
    pub send_p99_ms: f64,
    pub server_cpu: f64,
}

/// A new database on the server at `server_url`; its URL.
fn create_database(server_url: &str, name: &str) -> Result<String, String> {
    let (admin, create) = (server_url.to_string(), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || -> Result<(), String> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .map_err(|e| format!("BENCH_POSTGRES: cannot connect: {e}"))?;
        client
            .batch_execute(&create)
            .map_err(|e| format!("BENCH_POSTGRES: {e}"))
    })
    .join()
    .map_err(|_| "creating a database panicked".to_string())??;
    let mut url = url::Url::parse(server_url).map_err(|e| format!("BENCH_POSTGRES: {e}"))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

fn drop_database(server_url: &str, name: &str) {
    let (admin, drop) = (
        server_url.to_string(),
        format!("DROP DATABASE IF EXISTS {name}"),
    );
    let _ = std::thread::spawn(move || {
        if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
            let _ = client.batch_execute(&drop);
        }
    })
    .join();
}

pub async fn run(dir: &Path, s: &Settings, server_url: &str) -> Result<Vec<StoreRow>, String> {
    let stamp = unix_ms();
    let (one, three) = (
        format!("whatan_bench_{stamp}_1"),
        format!("whatan_bench_{stamp}_3"),
    );
    let url1 = create_database(server_url, &one)?;
    let url3 = create_database(server_url, &three)?;
    let db = dir.join("stores.db");
    let (sqlite, first) = Server::start(dir, &db)?;
    let first = first.ok_or("the SQLite server did not bootstrap")?;
    let (pg1, first1) = Server::start_postgres(dir, &url1, "bench-1")?;
    let first1 = first1.ok_or("the PostgreSQL server did not bootstrap")?;
    let (pg3a, first3) = Server::start_postgres(dir, &url3, "bench-a")?;
    let first3 = first3.ok_or("the first of three nodes did not bootstrap")?;
    let (pg3b, _) = Server::start_postgres(dir, &url3, "bench-b")?;
    let (pg3c, _) = Server::start_postgres(dir, &url3, "bench-c")?;
    let mut sides = vec![
        Side::new(sqlite, &first.token, "sqlite"),
        Side::new(pg1, &first1.token, "pg-1"),
        Side::new(pg3a, &first3.token, "pg-3").with_more(vec![pg3b, pg3c]),
    ];
    let rounds = s.growth_rounds;
    println!("\n  stores: SQLite, PostgreSQL with 1 node, PostgreSQL with 3 nodes ({rounds} rounds, 64 connections)");
    header();
    for _ in 0..rounds {
        alternate(&mut sides, Kind::Send, s).await;
        alternate(&mut sides, Kind::Status, s).await;
    }
    let rows = sides
        .iter()
        .map(|side| StoreRow {
            label: side.label,
            send: median(&side.send),
            status: median(&side.status),
            send_p99_ms: side.send.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
            server_cpu: side.send.iter().map(|r| r.server_cpu).sum::<f64>()
                / side.send.len().max(1) as f64,
        })
        .collect();
    for side in sides {
        side.server.kill_hard();
        for more in side.more {
            more.kill_hard();
        }
    }
    drop_database(server_url, &one);
    drop_database(server_url, &three);
    Ok(rows)
}
