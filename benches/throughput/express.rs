//! Issue #18's comparison design, measured in the same run: Express and
//! better-sqlite3 with whatan's durability (`express/server.js`: WAL,
//! `synchronous=FULL`, a 202 only after its commit, the same token check,
//! Idempotency-Key claim and phone validation), driven by the same client
//! with 64 connections. `BENCH_EXPRESS` names the directory its packages
//! are installed in (`scripts/bench-express` installs them and runs the
//! benchmark with it); unset, the phase is not run.

use super::*;

/// The token its load sends; the server stores its SHA-256 at start.
const TOKEN: &str = "whatan-bench-express-token";

/// The Express server's send and status rows (label `express`).
pub struct Express {
    pub send: Row,
    pub status: Row,
}

pub async fn run(dir: &Path, s: &Settings, packages: &Path) -> Result<Express, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/throughput/express/server.js");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .env("NODE_PATH", packages.join("node_modules"))
        .env("BENCH_EXPRESS_DB", dir.join("express.db"))
        .env("BENCH_EXPRESS_TOKEN", TOKEN);
    let (server, _) = Server::spawn(cmd)?;
    let token: Arc<str> = Arc::from(TOKEN);
    let load = |kind| Load {
        kind,
        conns: 64,
        secs: s.secs,
        warmup: s.warmup,
        label: "express",
    };
    println!("\n  Express + better-sqlite3, same durability (64 connections)");
    header();
    let send = run_load(&server, load(Kind::Send), &token, &Arc::new(Vec::new())).await;
    print_row(&send.row);
    if send.ids.is_empty() {
        server.kill_hard();
        return Err("the Express server accepted no send; nothing to read back".into());
    }
    let status = run_load(&server, load(Kind::Status), &token, &Arc::new(send.ids)).await;
    print_row(&status.row);
    server.kill_hard();
    Ok(Express {
        send: send.row,
        status: status.row,
    })
}
