//! Sends beside a webhook backlog (`BENCH_WEBHOOKS=0` skips it): two
//! servers side by side, one without webhook endpoints (`wh-none`) and one
//! whose endpoint answers after 100 ms and has thousands of deliveries due
//! (`wh-backlog`), measured in alternation at 64 connections. Deliveries
//! run on their own tasks, at most 4 in flight per endpoint, so the send
//! rate must not drop.

use super::*;

/// How many deliveries are due when the runs start.
const BACKLOG: usize = 5_000;
/// How long the slow endpoint takes to answer.
const SLOW: Duration = Duration::from_millis(100);

pub struct WebhookFigures {
    pub send_none: f64,
    pub send_backlog: f64,
    pub pending_before: i64,
    pub pending_after: i64,
    pub delivered: i64,
    pub rows: Vec<Row>,
}

/// A consumer on loopback that answers every POST with 204 after [`SLOW`].
async fn slow_endpoint() -> Result<SocketAddr, String> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    tokio::time::sleep(SLOW).await;
                    let mut response =
                        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn count(db: &Path, sql: &str) -> Result<i64, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    conn.query_row(sql, [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

/// Add the endpoint with the CLI and write [`BACKLOG`] due deliveries for
/// it (as many events would), beside the running server.
fn build_backlog(dir: &Path, db: &Path, url: &str) -> Result<(), String> {
    let conn = Connection::open(db).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let workspace: String = conn
        .query_row("SELECT id FROM workspaces LIMIT 1", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let out = Command::new(BIN)
        .current_dir(dir)
        .arg("--db")
        .arg(db)
        .args([
            "--json",
            "webhook",
            "add",
            "--workspace",
            &workspace,
            "--url",
            url,
        ])
        .env("WHATAN_WEBHOOKS_ALLOW_NETWORKS", "127.0.0.1/32")
        .output()
        .map_err(|e| format!("webhook add: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "webhook add: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let endpoint: String = conn
        .query_row("SELECT id FROM webhook_endpoints LIMIT 1", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let now = unix_ms() as i64;
    let body = r#"{"type":"message.read","timestamp":"2026-01-01T00:00:00.000Z","data":{}}"#;
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO webhook_deliveries
                     (id, endpoint_id, event_id, type, body, status, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'message.read', ?4, 'pending', ?5, ?5, ?5)",
            )
            .map_err(|e| e.to_string())?;
        for n in 0..BACKLOG {
            insert
                .execute(params![
                    format!("dlv_bench{n}"),
                    endpoint,
                    format!("evt_bench{n}"),
                    body,
                    now
                ])
                .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

pub async fn run_phase(s: &Settings, dir: &Path) -> Result<WebhookFigures, String> {
    let slow = slow_endpoint().await?;
    let env = [
        ("WHATAN_WEBHOOKS_ALLOW_NETWORKS", "127.0.0.1/32"),
        ("WHATAN_WEBHOOKS_POLL_INTERVAL", "50ms"),
    ];
    let (none_db, backlog_db) = (dir.join("wh-none.db"), dir.join("wh-backlog.db"));
    let (none, none_first) = Server::start_with(dir, &none_db, &env)?;
    let (backlog, backlog_first) = Server::start_with(dir, &backlog_db, &env)?;
    let (none_first, backlog_first) = (
        none_first.ok_or("no first run")?,
        backlog_first.ok_or("no first run")?,
    );
    build_backlog(dir, &backlog_db, &format!("http://{slow}/hook"))?;
    let pending = "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'";
    let pending_before = count(&backlog_db, pending)?;
    println!(
        "\n  webhooks: {pending_before} deliveries due to an endpoint that answers in {} ms (4 in flight), beside sends; {} alternating rounds at 64 connections\n",
        SLOW.as_millis(),
        s.growth_rounds
    );
    let mut sides = [
        Side::new(none, &none_first.token, "wh-none"),
        Side::new(backlog, &backlog_first.token, "wh-backlog"),
    ];
    header();
    for _ in 0..s.growth_rounds {
        alternate(&mut sides, Kind::Send, s).await;
    }
    let pending_after = count(&backlog_db, pending)?;
    let delivered = count(
        &backlog_db,
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'",
    )?;
    let [none, backlog] = sides;
    let (send_none, send_backlog) = (median(&none.send), median(&backlog.send));
    let mut rows = Vec::new();
    for (side, db, user) in [
        (none, &none_db, &none_first.user),
        (backlog, &backlog_db, &backlog_first.user),
    ] {
        side.server.kill_hard();
        let (_, missing) = verify_durable(db, user, &side.ids)?;
        if !missing.is_empty() {
            return Err(format!(
                "{} of the {} server's 202s are missing",
                missing.len(),
                side.label
            ));
        }
        rows.extend(side.send);
    }
    println!(
        "\n  medians at 64 connections: sends/s without webhooks {send_none:.0}, beside the backlog {send_backlog:.0} ({:.0}%); {delivered} delivered meanwhile, {pending_after} still due",
        send_backlog / send_none.max(1e-9) * 100.0
    );
    Ok(WebhookFigures {
        send_none,
        send_backlog,
        pending_before,
        pending_after,
        delivered,
        rows,
    })
}
