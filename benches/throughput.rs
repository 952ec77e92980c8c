//! `cargo bench --bench throughput`: durable accepted sends and status reads
//! per second, measured the way a CRM sees them.
//!
//! Why a process-level benchmark and not a micro-benchmark: the promise of
//! issue 6 is about what crosses the wire. A 202 means "committed and
//! fsync'd", so the only honest measure starts the real release binary on a
//! real (temporary) SQLite file with `synchronous=FULL`, drives it over
//! loopback with keep-alive clients, and afterwards checks the database for
//! every attempt it was told about.
//!
//! What it does, in order (all traffic is loopback, every loop is bounded by
//! time or by a count):
//! 1. starts `whatan serve` on a temp database (first-run bootstrap gives a
//!    workspace, an owner, a connected sandbox account and a send token),
//!    with a huge daily limit and 1 h pacing gaps so the pacer stays out of
//!    the way, and prints its idle RSS;
//!    Before it, the same 64-connection send load against the benchmark's
//!    own bare hyper server (`throughput/ceiling.rs`, row `ceiling`): the
//!    summary gives sends and status reads as shares of that HTTP ceiling;
//! 2. for N in 1, 16, 64, 256 keep-alive connections: text sends, each with a
//!    fresh `Idempotency-Key`, then `GET` status over the ids it got back;
//!    one table row per run (req/s, p50/p99/max latency, errors, server CPU,
//!    RSS and peak RSS);
//! 3. optionally (`BENCH_SOAK_SECS=300`) a long 64-connection send run that
//!    samples the server's RSS every 10 s;
//! 4. kills the server with SIGKILL and checks that every 202 it answered is
//!    a row in `send_attempts` (exit code 1 if one is missing);
//! 5. cost growth (`BENCH_GROWTH=0` skips it): seeds 1,000,000 attempts
//!    (with their idempotency keys) over 1,000 other accounts, then runs a
//!    server on that database and one on a fresh empty database side by
//!    side, alternating 64-connection send and status runs between them
//!    (rows `g-1M` and `g-empty`, 3 rounds, medians compared: a drift in
//!    background load hits both alike), and times `next_pending` with its
//!    query plan;
//!    Then, still on the seeded database, a 64-connection send run beside
//!    `whatan prune --older-than 1d` deleting the seeded final attempts in
//!    batches (row `g-prune`): retention must not stall sends;
//!    Also per round: `GET /api/v1/messages?limit=50` on both (rows
//!    `list`): a page costs the same beside a million attempts;
//! 6. sends beside a webhook backlog (`BENCH_WEBHOOKS=0` skips it; see
//!    `throughput/webhooks.rs`): rows `wh-none` and `wh-backlog`;
//! 7. the stores side by side (`BENCH_POSTGRES` set; see
//!    `throughput/stores.rs`): rows `sqlite`, `pg-1` and `pg-3`;
//! 8. Express + better-sqlite3 with the same durability, the comparison
//!    design of #18 (`BENCH_EXPRESS` set; see `throughput/express.rs`):
//!    rows `express`;
//! 9. a summary with each target next to its figure.
//!
//! Knobs (environment): `BENCH_SECS` (measured seconds per run, default 5),
//! `BENCH_WARMUP_SECS` (default 1), `BENCH_CONNS` (default `1,16,64,256`),
//! `BENCH_GROWTH` (default 1), `BENCH_GROWTH_ROWS` (default 1000000),
//! `BENCH_WEBHOOKS` (default 1), `BENCH_BIN` (another whatan binary to
//! serve, for an A/B against an older build),
//! `BENCH_GROWTH_ROUNDS` (default 3),
//! `BENCH_SOAK_SECS` (default 0 = off), `BENCH_CLIENT_THREADS` (default 2),
//! `BENCH_POSTGRES` (a PostgreSQL URL that may create databases; unset: the
//! stores phase is not run; `scripts/bench-stores` sets it),
//! `BENCH_EXPRESS` (the directory holding the Express server's packages;
//! unset: not run; `scripts/bench-express` installs them and sets it).
//!
//! The load generator is a minimal HTTP/1.1 client (one request in flight
//! per connection, `Content-Length` bodies only, which is all `whatan`
//! sends): on a 2-core machine client and server share the CPU, and a lean
//! client leaves more of it to the server.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "throughput/ceiling.rs"]
mod ceiling;
#[path = "throughput/express.rs"]
mod express;
#[path = "throughput/stores.rs"]
mod stores;
#[path = "throughput/webhooks.rs"]
mod webhook_backlog;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");
const RECIPIENT: &str = "+917999709798";
/// A request that takes longer than this counts as an error (and the
/// connection is replaced), so a stalled server cannot hang the benchmark.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Accounts the growth phase spreads its seeded attempts over.
const SEED_ACCOUNTS: usize = 1000;
const MB: f64 = 1024.0;

// Targets of issue 6, on the 2-core reference machine.
const TARGET_SENDS_PER_S: f64 = 10_000.0;
const TARGET_SEND_P99_MS: f64 = 20.0;
const TARGET_STATUS_PER_S: f64 = 25_000.0;
const TARGET_IDLE_RSS_MB: f64 = 30.0;
const TARGET_SOAK_SPREAD_MB: f64 = 5.0;
const TARGET_GROWTH_RATIO: f64 = 0.8;

struct Settings {
    secs: f64,
    warmup: f64,
    conns: Vec<usize>,
    growth: bool,
    webhooks: bool,
    growth_rows: usize,
    growth_rounds: usize,
    soak_secs: u64,
    client_threads: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let conns = std::env::var("BENCH_CONNS")
            .ok()
            .map(|s| {
                s.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|&n| n > 0)
                    .collect()
            })
            .filter(|v: &Vec<usize>| !v.is_empty())
            .unwrap_or_else(|| vec![1, 16, 64, 256]);
        Settings {
            secs: env_num("BENCH_SECS", 5.0f64).max(0.5),
            warmup: env_num("BENCH_WARMUP_SECS", 1.0f64).max(0.0),
            conns,
            growth: env_num("BENCH_GROWTH", 1u8) != 0,
            webhooks: env_num("BENCH_WEBHOOKS", 1u8) != 0,
            growth_rows: env_num("BENCH_GROWTH_ROWS", 1_000_000usize),
            growth_rounds: env_num("BENCH_GROWTH_ROUNDS", 3usize).clamp(1, 20),
            soak_secs: env_num("BENCH_SOAK_SECS", 0u64),
            client_threads: env_num("BENCH_CLIENT_THREADS", 2usize).max(1),
        }
    }
}

fn env_num<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and gets a no-op instead of minutes of load.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: skipped (run it with `cargo bench --bench throughput`)");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os(ceiling::MODE).is_some() {
        return ceiling::serve();
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("throughput bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- server --

/// What the first-run bootstrap printed.
struct FirstRun {
    user: String,
    account: String,
    token: String,
}

/// The `whatan serve` child process.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, db: &Path) -> Result<(Server, Option<FirstRun>), String> {
        Server::start_with(dir, db, &[])
    }

    /// [`Server::start`] with more `WHATAN_*` settings.
    fn start_with(
        dir: &Path,
        db: &Path,
        env: &[(&str, &str)],
    ) -> Result<(Server, Option<FirstRun>), String> {
        let mut cmd = Server::command(dir);
        cmd.arg("--db").arg(db).envs(env.iter().copied());
        Server::spawn(cmd)
    }

    /// A node on the PostgreSQL database at `url`.
    fn start_postgres(
        dir: &Path,
        url: &str,
        node_id: &str,
    ) -> Result<(Server, Option<FirstRun>), String> {
        let mut cmd = Server::command(dir);
        cmd.env("WHATAN_DATABASE_URL", url)
            .env("WHATAN_CLUSTER_NODE_ID", node_id);
        Server::spawn(cmd)
    }

    /// `whatan serve` in `dir` with the benchmark's settings (daily limit
    /// lifted, pacing out of the way) and none of the caller's `WHATAN_*`.
    fn command(dir: &Path) -> Command {
        // `BENCH_BIN`: another build of whatan to measure with this same
        // client (an A/B against an older commit).
        let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut cmd = Command::new(bin);
        for (name, _) in std::env::vars() {
            if name.starts_with("WHATAN_") {
                cmd.env_remove(name);
            }
        }
        cmd.current_dir(dir)
            .arg("--json")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("WHATAN_PACING_DAILY_LIMIT", "100000000")
            .env("WHATAN_PACING_MIN_DELAY", "1h")
            .env("WHATAN_PACING_MAX_DELAY", "1h")
            .env("WHATAN_LOG", "warn");
        cmd
    }

    /// The ceiling: this benchmark's own bare hyper server
    /// (`throughput/ceiling.rs`), in a process of its own like whatan.
    fn start_ceiling() -> Result<Server, String> {
        let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        cmd.arg("--bench").env(ceiling::MODE, "1");
        Server::spawn(cmd).map(|(server, _)| server)
    }

    /// Start `cmd` and wait for its `{"listening": ...}` line (and the
    /// first-run line before it, if any) on its standard output; its errors
    /// go to ours.
    fn spawn(mut cmd: Command) -> Result<(Server, Option<FirstRun>), String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Read stdout on a thread so a silent server cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut first_run = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                return Err("the server did not print its listening address".into());
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(fr) = v.get("firstRun") {
                let field = |k: &str| {
                    fr.get(k)
                        .and_then(|x| x.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                first_run = Some(FirstRun {
                    user: field("user"),
                    account: field("account"),
                    token: field("token"),
                });
            }
            if let Some(a) = v.get("listening").and_then(|a| a.as_str()) {
                break a
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("bad address {a:?}: {e}"))?;
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Ok((Server { child, pid, addr }, first_run))
    }

    fn mem(&self) -> Mem {
        Mem::of(self.pid)
    }

    /// User + system CPU time of the server so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name, which is in parentheses: state is
        // the first, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }

    /// SIGKILL: no graceful anything. What was answered 202 must be on disk.
    fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Resident memory of a process, in KiB: now and peak (high-water mark).
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Mem {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
        }
    }
}

// ---------------------------------------------------------------- client --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Status,
    /// `GET /api/v1/messages?limit=50`: the newest page of the token's sends.
    List,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Status => "status",
            Kind::List => "list",
        }
    }

    fn expected(self) -> u16 {
        match self {
            Kind::Send => 202,
            Kind::Status | Kind::List => 200,
        }
    }
}

/// One request over a keep-alive connection: write it, read the response
/// head, then exactly `Content-Length` bytes of body. Returns the status and
/// the offset of the body in `buf`.
async fn roundtrip(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, usize)> {
    use std::io::{Error, ErrorKind};
    stream.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "response head too large",
            ));
        }
    };
    let head = &buf[..head_end];
    let status = std::str::from_utf8(head.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "bad status line"))?;
    let mut length = 0usize;
    for line in head.split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            length = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| Error::new(ErrorKind::InvalidData, "bad content-length"))?;
        } else if line.len() > 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:") {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "chunked responses are not expected",
            ));
        }
    }
    while buf.len() < head_end + length {
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed mid-body",
            ));
        }
    }
    Ok((status, head_end))
}

/// The `sendAttemptId` of a queued response body.
fn attempt_id(body: &[u8]) -> Option<String> {
    const FIELD: &[u8] = b"\"sendAttemptId\":\"";
    let start = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    String::from_utf8(body[start..start + len].to_vec()).ok()
}

#[derive(Default)]
struct TaskResult {
    /// Latency in microseconds of every request started in the measured window.
    latencies: Vec<u32>,
    measured_ok: u64,
    measured_errors: u64,
    warmup_errors: u64,
    /// Every id answered 202, warm-up included (for the durability check).
    ids: Vec<String>,
    last_done: Option<Instant>,
    samples: Vec<String>,
}

struct Job {
    /// Connection `task` goes to `addrs[task % addrs.len()]`.
    addrs: Vec<SocketAddr>,
    kind: Kind,
    token: Arc<str>,
    /// Status runs read these; send runs use the tag in their keys.
    ids: Arc<Vec<String>>,
    tag: String,
    measure_from: Instant,
    until: Instant,
}

async fn client_task(job: Arc<Job>, task: usize) -> TaskResult {
    let mut result = TaskResult::default();
    let mut stream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(512);
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut seq = 0u64;
    let mut next_id = task.wrapping_mul(7919);
    let send_body = format!(
        r#"{{"to":"{RECIPIENT}","type":"text","text":"Benchmark message from task {task}"}}"#
    );
    while Instant::now() < job.until {
        if stream.is_none() {
            match TcpStream::connect(job.addrs[task % job.addrs.len()]).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    note_error(
                        &mut result,
                        Instant::now() >= job.measure_from,
                        format!("connect: {e}"),
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        request.clear();
        match job.kind {
            Kind::Send => {
                use std::io::Write;
                seq += 1;
                let _ = write!(
                    request,
                    "POST /api/v1/messages/send HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nIdempotency-Key: {}-{task}-{seq}\r\nContent-Length: {}\r\n\r\n{}",
                    job.token,
                    job.tag,
                    send_body.len(),
                    send_body
                );
            }
            Kind::List => {
                use std::io::Write;
                let _ = write!(
                    request,
                    "GET /api/v1/messages?limit=50 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
                    job.token
                );
            }
            Kind::Status => {
                use std::io::Write;
                next_id = (next_id + 1) % job.ids.len();
                let _ = write!(
                    request,
                    "GET /api/v1/messages/{} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
                    job.ids[next_id], job.token
                );
            }
        }
        let started = Instant::now();
        let measured = started >= job.measure_from;
        let outcome =
            tokio::time::timeout(REQUEST_TIMEOUT, roundtrip(conn, &request, &mut buf)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok((status, body_at))) => {
                if job.kind == Kind::Send && status == 202 {
                    match attempt_id(&buf[body_at..]) {
                        Some(id) => result.ids.push(id),
                        None => {
                            note_error(&mut result, measured, "202 without a sendAttemptId".into())
                        }
                    }
                }
                if status == job.kind.expected() {
                    if measured {
                        result.measured_ok += 1;
                    }
                } else {
                    let body = String::from_utf8_lossy(&buf[body_at..]).into_owned();
                    note_error(&mut result, measured, format!("HTTP {status}: {body}"));
                }
            }
            Ok(Err(e)) => {
                note_error(&mut result, measured, format!("io: {e}"));
                stream = None;
            }
            Err(_) => {
                note_error(&mut result, measured, "timed out".into());
                stream = None;
            }
        }
        if measured {
            result.latencies.push(
                done.duration_since(started)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            );
            result.last_done = Some(done);
        }
    }
    result
}

fn note_error(result: &mut TaskResult, measured: bool, what: String) {
    if measured {
        result.measured_errors += 1;
    } else {
        result.warmup_errors += 1;
    }
    if result.samples.len() < 3 {
        result.samples.push(what);
    }
}

/// The figures of one run: one table row.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    kind: Kind,
    conns: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    server_cpu: f64,
    mem: Mem,
}

struct RunOutput {
    row: Row,
    ids: Vec<String>,
}

/// One run: what, how many connections, how long, and its row label.
struct Load<'a> {
    kind: Kind,
    conns: usize,
    secs: f64,
    warmup: f64,
    label: &'a str,
}

async fn run_load(
    server: &Server,
    load: Load<'_>,
    token: &Arc<str>,
    ids: &Arc<Vec<String>>,
) -> RunOutput {
    run_load_on(&[server], load, token, ids).await
}

/// [`run_load`] with the connections spread over several nodes; the server
/// CPU column sums theirs, the memory columns are the first node's.
async fn run_load_on(
    servers: &[&Server],
    load: Load<'_>,
    token: &Arc<str>,
    ids: &Arc<Vec<String>>,
) -> RunOutput {
    let server = servers[0];
    let cpu = || -> Duration { servers.iter().map(|s| s.cpu()).sum() };
    let Load {
        kind,
        conns,
        secs,
        warmup,
        label,
    } = load;
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run_no = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let job = Arc::new(Job {
        addrs: servers.iter().map(|s| s.addr).collect(),
        kind,
        token: token.clone(),
        ids: ids.clone(),
        tag: format!("bench-{}-{run_no}", unix_ms()),
        measure_from,
        until: measure_from + Duration::from_secs_f64(secs),
    });
    let mut cpu_before = cpu();
    let mut handles = Vec::with_capacity(conns);
    for task in 0..conns {
        handles.push(tokio::spawn(client_task(job.clone(), task)));
    }
    // Server CPU over the measured window only.
    tokio::time::sleep_until(measure_from.into()).await;
    cpu_before = cpu_before.max(cpu());
    let mut latencies = Vec::new();
    let (mut ok, mut errors, mut warm_errors) = (0u64, 0u64, 0u64);
    let mut all_ids = Vec::new();
    let mut last_done = measure_from;
    let mut samples = Vec::new();
    for h in handles {
        let Ok(r) = h.await else {
            errors += 1;
            continue;
        };
        latencies.extend_from_slice(&r.latencies);
        ok += r.measured_ok;
        errors += r.measured_errors;
        warm_errors += r.warmup_errors;
        all_ids.extend(r.ids);
        last_done = last_done.max(r.last_done.unwrap_or(measure_from));
        samples.extend(r.samples);
    }
    let wall = last_done
        .duration_since(measure_from)
        .as_secs_f64()
        .max(1e-6);
    let server_cpu = cpu().saturating_sub(cpu_before).as_secs_f64() / wall;
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    if errors + warm_errors > 0 {
        samples.sort();
        samples.dedup();
        samples.truncate(5);
        eprintln!(
            "  {label} {} x{conns}: {errors} errors (+{warm_errors} in warm-up), e.g. {samples:?}",
            kind.name()
        );
    }
    RunOutput {
        row: Row {
            label: label.to_string(),
            kind,
            conns,
            per_sec: ok as f64 / wall,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: latencies.last().map_or(0.0, |&m| m as f64 / 1000.0),
            errors: errors + warm_errors,
            server_cpu,
            mem: server.mem(),
        },
        ids: all_ids,
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

// ----------------------------------------------------------------- table --

fn header() {
    println!(
        "{:<8} {:<7} {:>5} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "db",
        "kind",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv cpu",
        "rss MB",
        "peak MB"
    );
}

fn print_row(r: &Row) {
    println!(
        "{:<8} {:<7} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7.0}% {:>8.1} {:>8.1}",
        r.label,
        r.kind.name(),
        r.conns,
        r.per_sec,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.errors,
        r.server_cpu * 100.0,
        r.mem.rss_kb as f64 / MB,
        r.mem.hwm_kb as f64 / MB
    );
}

// ------------------------------------------------------------ durability --

/// Every id answered 202 must be a row; returns (rows of the user, missing).
fn verify_durable(db: &Path, user: &str, ids: &[String]) -> Result<(u64, Vec<String>), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT id FROM send_attempts WHERE user_id = ?1")
        .map_err(|e| e.to_string())?;
    let stored: HashSet<String> = stmt
        .query_map([user], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !stored.contains(*id))
        .cloned()
        .collect();
    Ok((stored.len() as u64, missing))
}

// ---------------------------------------------------------------- growth --

/// Seed `rows` attempts (with their idempotency keys) over
/// [`SEED_ACCOUNTS`] accounts of another workspace, in one transaction.
/// The last tenth is still queued, so other accounts have pending work
/// next to the bench account's; their pacers wait a day (`next_send_at`).
fn seed(db: &Path, rows: usize) -> rusqlite::Result<Vec<String>> {
    let mut conn = Connection::open(db)?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576;",
    )?;
    let now = unix_ms() as i64;
    let day_ms = 86_400_000i64;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_seed', 'Seeded', ?1)",
        [now - 31 * day_ms],
    )?;
    let mut accounts = Vec::with_capacity(SEED_ACCOUNTS);
    {
        let mut user = tx.prepare(
            "INSERT INTO users (id, workspace_id, name, role, created_at) VALUES (?1, 'ws_seed', ?2, 'member', ?3)",
        )?;
        let mut account = tx.prepare(
            "INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, status_changed_at, next_send_at, created_at)
             VALUES (?1, 'ws_seed', ?2, ?3, 'sandbox', 'connected', ?4, ?5, ?4)",
        )?;
        let mut counter =
            tx.prepare("INSERT INTO daily_counters (account_id, day, count) VALUES (?1, ?2, 100)")?;
        for a in 0..SEED_ACCOUNTS {
            let (user_id, account_id) = (format!("usr_seed{a:04}"), format!("acc_seed{a:04}"));
            user.execute(params![
                user_id,
                format!("Seeded user {a}"),
                now - 31 * day_ms
            ])?;
            account.execute(params![
                account_id,
                user_id,
                format!("+9171000{a:05}"),
                now - 31 * day_ms,
                now + day_ms
            ])?;
            for d in 0..30 {
                counter.execute(params![account_id, now / day_ms - d])?;
            }
            accounts.push(account_id);
        }
        let mut attempt = tx.prepare(
            "INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload,
                 status, message_id, remote_jid, tries, created_at, updated_at)
             VALUES (?1, 'ws_seed', ?2, ?3, 'personal', ?4, ?5, 'text', ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
        )?;
        let mut key = tx.prepare(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, attempt_id, http_status, response_body, created_at)
             VALUES (?1, ?2, ?3, ?4, 202, ?5, ?6)",
        )?;
        let queued_from = rows - rows / 10;
        let span = 30 * day_ms;
        for i in 0..rows {
            let a = i % SEED_ACCOUNTS;
            let (user_id, account_id) = (format!("usr_seed{a:04}"), &accounts[a]);
            let id = uuid::Uuid::new_v4().to_string();
            let from = format!("+9171000{a:05}");
            let to = format!("+9179{:08}", i % 100_000_000);
            let created = now - span + (i as i64 * span / rows as i64);
            let status = if i >= queued_from {
                "queued"
            } else {
                ["read", "read", "delivered", "accepted", "failed"][i % 5]
            };
            let (message_id, jid) = if status == "queued" {
                (None, None)
            } else {
                (
                    Some(format!("SEED{i:016X}")),
                    Some(format!("{}@s.whatsapp.net", &to[1..])),
                )
            };
            attempt.execute(params![
                id,
                account_id,
                user_id,
                from,
                to,
                format!(r#"{{"text":"Seeded message number {i}"}}"#),
                status,
                message_id,
                jid,
                i64::from(status != "queued"),
                created
            ])?;
            let body = format!(
                r#"{{"accepted":true,"sendAttemptId":"{id}","messageId":null,"remoteJid":null,"from":"{from}","to":"{to}","normalizedPhone":"{}","status":"queued"}}"#,
                &to[1..]
            );
            let fingerprint: [u8; 32] = Sha256::digest(body.as_bytes()).into();
            key.execute(params![
                user_id,
                format!("seed-{i}"),
                &fingerprint[..],
                id,
                body,
                created
            ])?;
        }
    }
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(accounts)
}

/// The query `next_pending` runs (kept in step with src/store/attempts.rs;
/// used only to show its plan).
const NEXT_PENDING_SQL: &str = "SELECT seq, id FROM send_attempts INDEXED BY send_attempts_pending
     WHERE account_id = ?1 AND status IN ('queued', 'sending') ORDER BY seq LIMIT 1";

/// Mean time of `whatan::store::attempts::next_pending` for one account, in µs.
fn time_next_pending(db: &Path, account: &str) -> Result<(f64, bool), String> {
    let conn = whatan::store::Conn::Sqlite(
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?,
    );
    let found = whatan::store::attempts::next_pending(&conn, account)
        .map_err(|e| e.to_string())?
        .is_some();
    const ROUNDS: u32 = 2000;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        let _ = whatan::store::attempts::next_pending(&conn, account).map_err(|e| e.to_string())?;
    }
    Ok((start.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64, found))
}

fn query_plan(db: &Path) -> Result<Vec<String>, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {NEXT_PENDING_SQL}"))
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map(["acc_seed0500"], |r| r.get::<_, String>(3))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    Ok(rows)
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64 / MB / MB)
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------- run --

struct Check {
    name: String,
    figure: String,
    target: String,
    pass: Option<bool>,
}

fn check(name: &str, figure: String, target: &str, pass: Option<bool>) -> Check {
    Check {
        name: name.into(),
        figure,
        target: target.into(),
        pass,
    }
}

async fn run(s: Settings) -> Result<bool, String> {
    let dir = tempfile::Builder::new()
        .prefix("whatan-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let db: PathBuf = dir.path().join("bench.db");
    println!("whatan throughput benchmark");
    println!(
        "  binary {BIN}\n  database {} (WAL, synchronous=FULL)\n  {} s measured + {} s warm-up per run, connections {:?}, {} client threads, {} CPUs",
        db.display(),
        s.secs,
        s.warmup,
        s.conns,
        s.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (server, first) = Server::start(dir.path(), &db)?;
    let first = first.ok_or("the server did not bootstrap a first-run token")?;
    let token: Arc<str> = Arc::from(first.token.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.mem();
    println!(
        "  server pid {} on {}; idle RSS {:.1} MB\n",
        server.pid,
        server.addr,
        idle.rss_kb as f64 / MB
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut sent_ids: Vec<String> = Vec::new();
    header();
    // The HTTP ceiling on this machine, now: every figure below is also
    // shown as a share of it.
    let ceiling_server = Server::start_ceiling()?;
    let ceiling = run_load(
        &ceiling_server,
        Load {
            kind: Kind::Send,
            conns: 64,
            secs: s.secs,
            warmup: s.warmup,
            label: "ceiling",
        },
        &token,
        &Arc::new(Vec::new()),
    )
    .await;
    print_row(&ceiling.row);
    ceiling_server.kill_hard();
    let ceiling = ceiling.row.per_sec.max(1e-9);
    for &n in &s.conns {
        let out = run_load(
            &server,
            Load {
                kind: Kind::Send,
                conns: n,
                secs: s.secs,
                warmup: s.warmup,
                label: "empty",
            },
            &token,
            &Arc::new(Vec::new()),
        )
        .await;
        print_row(&out.row);
        rows.push(out.row);
        sent_ids.extend(out.ids);
    }
    if sent_ids.is_empty() {
        server.kill_hard();
        return Err("no send was accepted; nothing to read back".into());
    }
    let read_ids = Arc::new(sent_ids.clone());
    for &n in &s.conns {
        let out = run_load(
            &server,
            Load {
                kind: Kind::Status,
                conns: n,
                secs: s.secs,
                warmup: s.warmup,
                label: "empty",
            },
            &token,
            &read_ids,
        )
        .await;
        print_row(&out.row);
        rows.push(out.row);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_load = server.mem();
    println!(
        "\n  server RSS 2 s after the load: {:.1} MB (peak {:.1} MB)",
        after_load.rss_kb as f64 / MB,
        after_load.hwm_kb as f64 / MB
    );

    // Soak: memory over a long run.
    let mut soak: Option<Vec<f64>> = None;
    if s.soak_secs > 0 {
        println!(
            "\n  soak: 64 connections of sends for {} s, RSS every 10 s",
            s.soak_secs
        );
        let pid = server.pid;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop_rx => return samples,
                }
                let rss = Mem::of(pid).rss_kb as f64 / MB;
                println!("    t={:>4} s  RSS {rss:.1} MB", samples.len() * 10 + 10);
                samples.push(rss);
            }
        });
        let out = run_load(
            &server,
            Load {
                kind: Kind::Send,
                conns: 64,
                secs: s.soak_secs as f64,
                warmup: 0.0,
                label: "soak",
            },
            &token,
            &Arc::new(Vec::new()),
        )
        .await;
        let _ = stop_tx.send(());
        let samples = sampler.await.unwrap_or_default();
        header();
        print_row(&out.row);
        rows.push(out.row);
        sent_ids.extend(out.ids);
        soak = Some(samples);
    }

    // Durability: kill -9, then every 202 must be a row.
    server.kill_hard();
    let (stored, missing) = verify_durable(&db, &first.user, &sent_ids)?;
    println!(
        "\n  durability (after SIGKILL): {} sends answered 202, {} rows stored for the bench user, {} missing",
        sent_ids.len(),
        stored,
        missing.len()
    );
    for id in missing.iter().take(5) {
        println!("    missing: {id}");
    }
    let mut durable_ok = missing.is_empty();

    // Cost growth.
    let mut growth: Option<GrowthFigures> = None;
    if s.growth {
        let (np_empty, _) = time_next_pending(&db, &first.account)?;
        println!(
            "\n  growth: seeding {} attempts (with idempotency keys) over {SEED_ACCOUNTS} accounts...",
            s.growth_rows
        );
        let started = Instant::now();
        let accounts = seed(&db, s.growth_rows).map_err(|e| format!("seeding: {e}"))?;
        println!(
            "  seeded in {:.1} s; database {:.0} MB",
            started.elapsed().as_secs_f64(),
            file_mb(&db)
        );
        let (np_big_bench, _) = time_next_pending(&db, &first.account)?;
        let other = &accounts[accounts.len() / 2];
        let (np_big_other, found) = time_next_pending(&db, other)?;
        let plan = query_plan(&db)?;
        let rounds = s.growth_rounds;
        // Two servers side by side, the seeded database and a fresh empty
        // one, measured in alternation: background load that drifts during
        // the phase (a shared machine) then hits both alike.
        let (big_server, _) = Server::start(dir.path(), &db)?;
        let empty_db = dir.path().join("empty.db");
        let (empty_server, empty_first) = Server::start(dir.path(), &empty_db)?;
        let empty_first = empty_first.ok_or("the empty server did not bootstrap")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "  seeded server idle RSS {:.1} MB; empty server idle RSS {:.1} MB; {rounds} alternating rounds at 64 connections\n",
            big_server.mem().rss_kb as f64 / MB,
            empty_server.mem().rss_kb as f64 / MB
        );
        let mut sides = [
            Side::new(empty_server, &empty_first.token, "g-empty"),
            Side::new(big_server, &first.token, "g-1M"),
        ];
        header();
        for _ in 0..rounds {
            for kind in [Kind::Send, Kind::Status, Kind::List] {
                alternate(&mut sides, kind, &s).await;
            }
        }
        // Retention beside sends: `whatan prune` deletes the seeded final
        // attempts (500 per write) while the seeded server takes sends.
        let prune_started = Instant::now();
        let mut prune = Command::new(BIN);
        for (name, _) in std::env::vars() {
            if name.starts_with("WHATAN_") {
                prune.env_remove(name);
            }
        }
        let prune = prune
            .current_dir(dir.path())
            .arg("--db")
            .arg(&db)
            .args(["--json", "prune", "--older-than", "1d"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start prune: {e}"))?;
        let load = Load {
            kind: Kind::Send,
            conns: 64,
            secs: s.secs,
            warmup: s.warmup,
            label: "g-prune",
        };
        let beside = run_load(
            &sides[1].server,
            load,
            &sides[1].token,
            &Arc::new(Vec::new()),
        )
        .await;
        print_row(&beside.row);
        sides[1].ids.extend(beside.ids);
        let pruned = prune
            .wait_with_output()
            .map_err(|e| format!("prune: {e}"))?;
        let deleted = serde_json::from_slice::<serde_json::Value>(&pruned.stdout)
            .ok()
            .and_then(|v| v["deleted"].as_u64());
        let prune_secs = prune_started.elapsed().as_secs_f64();
        let [empty, big] = sides;
        let figures = |side: &Side| (median(&side.send), median(&side.status));
        let ((send_empty, status_empty), (send_big, status_big)) = (figures(&empty), figures(&big));
        let (list_empty, list_big) = (median(&empty.list), median(&big.list));
        for (side, db, user) in [
            (empty, &empty_db, &empty_first.user),
            (big, &db, &first.user),
        ] {
            side.server.kill_hard();
            let (_, missing) = verify_durable(db, user, &side.ids)?;
            if !missing.is_empty() {
                println!(
                    "  durability: {} of the {} server's 202s are missing",
                    missing.len(),
                    side.label
                );
                durable_ok = false;
            }
            rows.extend(side.send.into_iter().chain(side.status).chain(side.list));
        }
        println!("\n  medians of {rounds} rounds at 64 connections (req/s):");
        println!(
            "    send    empty {send_empty:>8.0}   1M {send_big:>8.0}   {:>4.0}%",
            send_big / send_empty.max(1e-9) * 100.0
        );
        println!(
            "    status  empty {status_empty:>8.0}   1M {status_big:>8.0}   {:>4.0}%",
            status_big / status_empty.max(1e-9) * 100.0
        );
        println!(
            "    list    empty {list_empty:>8.0}   1M {list_big:>8.0}   {:>4.0}%   (GET /api/v1/messages?limit=50)",
            list_big / list_empty.max(1e-9) * 100.0
        );
        println!(
            "    send beside a prune of {} attempts ({prune_secs:.1} s): {:>8.0}   {:>4.0}% of the 1M median",
            deleted.map_or("?".to_string(), |n| n.to_string()),
            beside.row.per_sec,
            beside.row.per_sec / send_big.max(1e-9) * 100.0
        );
        rows.push(beside.row);
        println!("\n  next_pending (one account's next due send):");
        println!("    before seeding, bench account:           {np_empty:>7.1} µs");
        println!(
            "    {} rows, bench account:           {np_big_bench:>7.1} µs",
            s.growth_rows
        );
        println!(
            "    {} rows, seeded account {other}: {np_big_other:>7.1} µs (found: {found})",
            s.growth_rows
        );
        println!("    EXPLAIN QUERY PLAN: {}", plan.join(" | "));
        growth = Some(GrowthFigures {
            send_empty,
            send_big,
            status_empty,
            status_big,
            list_empty,
            list_big,
            next_pending_empty: np_empty,
            next_pending_big: np_big_other.max(np_big_bench),
            plan,
        });
    }

    // Sends beside a webhook backlog.
    let webhooks = if s.webhooks {
        let w = webhook_backlog::run_phase(&s, dir.path()).await?;
        rows.extend(w.rows.iter().cloned());
        Some(w)
    } else {
        None
    };

    // The stores side by side.
    let stores = match std::env::var("BENCH_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(stores::run(dir.path(), &s, &url).await?),
        _ => None,
    };

    // The comparison design of #18 (Express + better-sqlite3).
    let express = match std::env::var_os("BENCH_EXPRESS") {
        Some(packages) if !packages.is_empty() => {
            Some(express::run(dir.path(), &s, Path::new(&packages)).await?)
        }
        _ => None,
    };

    // Summary.
    let at = |kind: Kind, conns: usize, label: &str| {
        rows.iter()
            .find(|r| r.kind == kind && r.conns == conns && r.label == label)
            .cloned()
    };
    let mut checks = Vec::new();
    let send64 = at(Kind::Send, 64, "empty");
    let status64 = at(Kind::Status, 64, "empty");
    let best_status = rows
        .iter()
        .filter(|r| r.kind == Kind::Status && r.label == "empty")
        .map(|r| r.per_sec)
        .fold(0.0, f64::max);
    checks.push(match &send64 {
        Some(r) => check(
            "accepted sends/s, 64 conns",
            format!("{:.0}", r.per_sec),
            ">= 10000",
            Some(r.per_sec >= TARGET_SENDS_PER_S),
        ),
        None => check(
            "accepted sends/s, 64 conns",
            "not run".into(),
            ">= 10000",
            None,
        ),
    });
    checks.push(match &send64 {
        Some(r) => check(
            "send p99, 64 conns",
            format!("{:.2} ms", r.p99_ms),
            "< 20 ms",
            Some(r.p99_ms < TARGET_SEND_P99_MS),
        ),
        None => check("send p99, 64 conns", "not run".into(), "< 20 ms", None),
    });
    checks.push(match &status64 {
        Some(r) => check(
            "status reads/s, 64 conns",
            format!("{:.0} (best {best_status:.0})", r.per_sec),
            ">= 25000",
            Some(r.per_sec >= TARGET_STATUS_PER_S),
        ),
        None => check(
            "status reads/s",
            format!("best {best_status:.0}"),
            ">= 25000",
            Some(best_status >= TARGET_STATUS_PER_S),
        ),
    });
    let idle_mb = idle.rss_kb as f64 / MB;
    checks.push(check(
        "idle RSS",
        format!("{idle_mb:.1} MB"),
        "< 30 MB",
        Some(idle_mb < TARGET_IDLE_RSS_MB),
    ));
    checks.push(check(
        "errors (all runs)",
        rows.iter().map(|r| r.errors).sum::<u64>().to_string(),
        "0",
        Some(rows.iter().all(|r| r.errors == 0)),
    ));
    checks.push(check(
        "every 202 durable (after SIGKILL)",
        if durable_ok {
            "all present".into()
        } else {
            "MISSING ROWS".into()
        },
        "all present",
        Some(durable_ok),
    ));
    checks.push(match soak.as_deref() {
        Some(samples) if samples.len() >= 2 => {
            // The first sample still includes the ramp-up; flat means no
            // growth after it.
            let steady = &samples[1..];
            let min = steady.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = steady.iter().cloned().fold(0.0, f64::max);
            check(
                "memory flat over the soak",
                format!("{min:.1}..{max:.1} MB, spread {:.1} MB", max - min),
                "spread <= 5 MB",
                Some(max - min <= TARGET_SOAK_SPREAD_MB),
            )
        }
        Some(_) => check(
            "memory flat over the soak",
            "too short to sample".into(),
            "spread <= 5 MB",
            None,
        ),
        None => check(
            "memory flat over the soak",
            "not run (BENCH_SOAK_SECS=300)".into(),
            "spread <= 5 MB",
            None,
        ),
    });
    match &growth {
        Some(g) => {
            for (name, big, empty) in [
                ("send/s with 1M rows vs empty", g.send_big, g.send_empty),
                (
                    "status/s with 1M rows vs empty",
                    g.status_big,
                    g.status_empty,
                ),
                (
                    "list pages/s with 1M rows vs empty",
                    g.list_big,
                    g.list_empty,
                ),
            ] {
                let ratio = big / empty.max(1e-9);
                checks.push(check(
                    name,
                    format!("{big:.0} vs {empty:.0} ({:.0}%, medians)", ratio * 100.0),
                    ">= 80%",
                    Some(ratio >= TARGET_GROWTH_RATIO),
                ));
            }
            let uses_index = g.plan.iter().any(|p| p.contains("send_attempts_pending"));
            checks.push(check(
                "next_pending with 1M rows",
                format!(
                    "{:.1} µs (empty {:.1} µs), {}",
                    g.next_pending_big,
                    g.next_pending_empty,
                    if uses_index {
                        "index range"
                    } else {
                        "NO INDEX"
                    }
                ),
                "index, no scan",
                Some(uses_index),
            ));
        }
        None => checks.push(check(
            "cost growth",
            "not run (BENCH_GROWTH=0)".into(),
            "within 20%",
            None,
        )),
    }

    for (name, row, goal) in [
        ("sends/s / HTTP ceiling, 64 conns", &send64, 0.30),
        ("status/s / HTTP ceiling, 64 conns", &status64, 0.70),
    ] {
        checks.push(match row {
            Some(r) => check(
                name,
                format!(
                    "{:.2} ({:.0} / {ceiling:.0})",
                    r.per_sec / ceiling,
                    r.per_sec
                ),
                &format!(">= {goal:.2} (#18)"),
                Some(r.per_sec / ceiling >= goal),
            ),
            None => check(name, "not run".into(), &format!(">= {goal:.2}"), None),
        });
    }
    let name = "sends/s vs Express + SQLite, 64 conns";
    checks.push(match (&send64, &express) {
        (Some(w), Some(e)) => {
            let times = w.per_sec / e.send.per_sec.max(1e-9);
            check(
                name,
                format!(
                    "{times:.1}x ({:.0} / {:.0}; status {:.0} / {:.0})",
                    w.per_sec,
                    e.send.per_sec,
                    status64.as_ref().map_or(0.0, |r| r.per_sec),
                    e.status.per_sec
                ),
                ">= 10x (#18)",
                Some(times >= 10.0),
            )
        }
        (_, None) => check(
            name,
            "not run (BENCH_EXPRESS unset; scripts/bench-express runs it)".into(),
            ">= 10x",
            None,
        ),
        (None, Some(_)) => check(
            name,
            "not run (no 64-connection run)".into(),
            ">= 10x",
            None,
        ),
    });
    checks.push(match &webhooks {
        Some(w) => {
            let ratio = w.send_backlog / w.send_none.max(1e-9);
            check(
                "send/s beside a webhook backlog",
                format!(
                    "{:.0} vs {:.0} ({:.0}%; {} due, {} delivered, {} left)",
                    w.send_backlog,
                    w.send_none,
                    ratio * 100.0,
                    w.pending_before,
                    w.delivered,
                    w.pending_after
                ),
                ">= 90%",
                Some(ratio >= 0.9),
            )
        }
        None => check(
            "send/s beside a webhook backlog",
            "not run (BENCH_WEBHOOKS=0)".into(),
            ">= 90%",
            None,
        ),
    });

    match &stores {
        Some(rows) => {
            println!("\nstores (medians of {} rounds, 64 connections; CPU = server cores busy, all nodes)", s.growth_rounds);
            println!(
                "  {:<8} {:>10} {:>10} {:>12} {:>10} {:>12}",
                "store", "sends/s", "status/s", "send p99 ms", "CPU", "vs ceiling"
            );
            for r in rows {
                println!(
                    "  {:<8} {:>10.0} {:>10.0} {:>12.1} {:>10.2} {:>5.2} / {:.2}",
                    r.label,
                    r.send,
                    r.status,
                    r.send_p99_ms,
                    r.server_cpu,
                    r.send / ceiling,
                    r.status / ceiling
                );
            }
        }
        None => println!("\nstores: not run (BENCH_POSTGRES unset; scripts/bench-stores runs it)"),
    }

    println!("\nsummary");
    for c in &checks {
        let verdict = match c.pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "-",
        };
        println!(
            "  {:<36} {:<40} target {:<16} {verdict}",
            c.name, c.figure, c.target
        );
    }
    Ok(durable_ok)
}

struct GrowthFigures {
    send_empty: f64,
    send_big: f64,
    status_empty: f64,
    status_big: f64,
    next_pending_empty: f64,
    next_pending_big: f64,
    list_empty: f64,
    list_big: f64,
    plan: Vec<String>,
}

/// One server of the growth comparison and what was measured on it.
struct Side {
    server: Server,
    /// More nodes on the same database (the load is spread over all).
    more: Vec<Server>,
    token: Arc<str>,
    label: &'static str,
    ids: Vec<String>,
    send: Vec<Row>,
    status: Vec<Row>,
    list: Vec<Row>,
}

impl Side {
    fn new(server: Server, token: &str, label: &'static str) -> Side {
        Side {
            server,
            more: Vec::new(),
            token: Arc::from(token),
            label,
            ids: Vec::new(),
            send: Vec::new(),
            status: Vec::new(),
            list: Vec::new(),
        }
    }

    fn with_more(mut self, more: Vec<Server>) -> Side {
        self.more = more;
        self
    }
}

/// One 64-connection run of `kind` on each side in turn: status runs read
/// back the side's accepted ids; a send run's ids are kept for them.
async fn alternate(sides: &mut [Side], kind: Kind, s: &Settings) {
    for side in sides.iter_mut() {
        let load = Load {
            kind,
            conns: 64,
            secs: s.secs,
            warmup: s.warmup,
            label: side.label,
        };
        let ids = Arc::new(match kind {
            Kind::Status => side.ids.clone(),
            Kind::Send | Kind::List => Vec::new(),
        });
        let servers: Vec<&Server> = std::iter::once(&side.server).chain(&side.more).collect();
        let out = run_load_on(&servers, load, &side.token, &ids).await;
        print_row(&out.row);
        side.ids.extend(out.ids);
        match kind {
            Kind::Send => side.send.push(out.row),
            Kind::Status => side.status.push(out.row),
            Kind::List => side.list.push(out.row),
        }
    }
}

/// Median requests per second of some runs.
fn median(rows: &[Row]) -> f64 {
    let mut v: Vec<f64> = rows.iter().map(|r| r.per_sec).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
