//! The admin CLI, run as the built binary against a fresh database, and
//! `serve` as a process: first run, signals, CLI changes seen while serving.

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "support/serve.rs"]
mod serve;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

#[allow(dead_code)]
#[path = "support/external_tool.rs"]
mod external_tool;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fresh_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whatan.db");
    Db { _dir: dir, path }
}

fn whatan(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(database::cli_args(db))
        .envs(database::cli_env(db))
        .args(args)
        .env_remove("WHATAN_LOG")
        .current_dir(db.parent().unwrap())
        .output()
        .unwrap()
}

/// Run with --json and parse the single JSON value on stdout.
fn json(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = whatan(db, &all);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON value ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Run expecting failure; returns the one-line reason.
fn fails(db: &Path, args: &[&str]) -> String {
    let out = whatan(db, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(out.stdout.is_empty());
    err
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

struct Setup {
    ws: String,
    owner: String,
    account: String,
    token: String,
}

fn setup(db: &Path) -> Setup {
    let ws = json(db, &["workspace", "create", "Acme"]);
    assert_eq!(ws["name"], "Acme");
    let owner = json(
        db,
        &[
            "user",
            "add",
            "--workspace",
            &s(&ws, "id"),
            "--name",
            "Ana",
            "--role",
            "owner",
        ],
    );
    assert_eq!(owner["role"], "owner");
    assert_eq!(owner["workspace"], ws["id"]);
    let account = json(
        db,
        &[
            "account",
            "add",
            "--workspace",
            &s(&ws, "id"),
            "--user",
            &s(&owner, "id"),
            "--phone",
            "+91 70000-00001",
        ],
    );
    assert_eq!(account["phone"], "+917000000001");
    assert_eq!(account["driver"], "sandbox");
    assert_eq!(account["status"], "connected");
    let token = json(
        db,
        &[
            "token",
            "create",
            "--user",
            &s(&owner, "id"),
            "--name",
            "crm",
        ],
    );
    assert!(s(&token, "token").starts_with("whatan_send_"));
    Setup {
        ws: s(&ws, "id"),
        owner: s(&owner, "id"),
        account: s(&account, "id"),
        token: s(&token, "token"),
    }
}

#[test]
fn admin_commands_print_the_documented_json() {
    let db = fresh_db();
    let st = setup(&db.path);
    let list = json(&db.path, &["workspace", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        json(&db.path, &["user", "list"]).as_array().unwrap().len(),
        1
    );
    let accounts = json(&db.path, &["account", "list"]);
    assert_eq!(accounts[0]["id"], st.account.as_str());
    let off = json(&db.path, &["account", "disconnect", &st.account]);
    assert_eq!(
        off,
        serde_json::json!({"id": st.account, "status": "disconnected"})
    );
    let on = json(&db.path, &["account", "connect", &st.account]);
    assert_eq!(on["status"], "connected");
    let tokens = json(&db.path, &["token", "list"]);
    let text = tokens.to_string();
    assert!(
        !text.contains(&st.token),
        "token list must not show secrets"
    );
    let id = tokens[0]["id"].as_str().unwrap().to_string();
    let revoked = json(&db.path, &["token", "revoke", &id]);
    assert_eq!(revoked, serde_json::json!({"id": id, "revoked": true}));
    assert_eq!(json(&db.path, &["token", "list"])[0]["revoked"], true);
    let expiring = json(
        &db.path,
        &[
            "token",
            "create",
            "--user",
            &st.owner,
            "--expires-in",
            "90d",
        ],
    );
    assert!(expiring["expiresAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        json(&db.path, &["sandbox", "outbox"]),
        serde_json::json!([])
    );
}

#[test]
fn bad_input_fails_with_one_line_and_writes_nothing() {
    let db = fresh_db();
    let st = setup(&db.path);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "user",
                "add",
                "--workspace",
                "ws_nope",
                "--name",
                "x",
                "--role",
                "owner",
            ],
            "unknown workspace",
        ),
        (
            vec![
                "user",
                "add",
                "--workspace",
                &st.ws,
                "--name",
                "x",
                "--role",
                "king",
            ],
            "bad role",
        ),
        (
            vec![
                "account",
                "add",
                "--workspace",
                &st.ws,
                "--user",
                &st.owner,
                "--phone",
                "+917000000001",
            ],
            "already",
        ),
        (
            vec![
                "account",
                "add",
                "--workspace",
                &st.ws,
                "--user",
                "usr_nope",
                "--phone",
                "+917000000002",
            ],
            "unknown user",
        ),
        (
            vec![
                "account",
                "add",
                "--workspace",
                &st.ws,
                "--user",
                &st.owner,
                "--phone",
                "07000000002",
            ],
            "phone",
        ),
        (
            vec![
                "account",
                "add",
                "--workspace",
                &st.ws,
                "--user",
                &st.owner,
                "--phone",
                "+917000000002",
                "--driver",
                "fax",
            ],
            "bad driver",
        ),
        (
            vec![
                "account",
                "add",
                "--workspace",
                &st.ws,
                "--user",
                &st.owner,
                "--phone",
                "+917000000002",
                "--driver",
                "cloud",
            ],
            "needs --phone-number-id",
        ),
        (vec!["account", "connect", "acc_nope"], "unknown account"),
        (
            vec!["token", "create", "--user", "usr_nope"],
            "unknown user",
        ),
        (
            vec![
                "token",
                "create",
                "--user",
                &st.owner,
                "--expires-in",
                "soon",
            ],
            "expires-in",
        ),
        (vec!["token", "revoke", "tok_nope"], "unknown token"),
        (vec!["workspace", "create", ""], "workspace name"),
        (
            vec![
                "token",
                "create",
                "--user",
                &st.owner,
                "--name",
                "crm\u{7}bot",
            ],
            "token name",
        ),
    ];
    for (args, needle) in cases {
        let err = fails(&db.path, &args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(
        json(&db.path, &["user", "list"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        json(&db.path, &["account", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json(&db.path, &["token", "list"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn the_token_secret_appears_nowhere_in_the_database_files() {
    let db = fresh_db();
    let st = setup(&db.path);
    if database::postgres_server().is_some() {
        let bytes = stored_bytes(&db.path);
        assert!(!bytes.is_empty());
        assert!(!bytes
            .windows(st.token.len())
            .any(|w| w == st.token.as_bytes()));
        return;
    }
    let dir = db.path.parent().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(st.token.len())
                .any(|w| w == st.token.as_bytes()),
            "secret found in {}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 2, "db and -wal files checked");
}

#[test]
fn bad_config_stops_start_up_with_one_line_naming_the_key() {
    let db = fresh_db();
    let dir = db.path.parent().unwrap();
    let cases = [
        (
            "[pacing]\nmin_delay = \"5m\"\nmax_delay = \"2m\"\n",
            "pacing.min_delay",
        ),
        ("[pacing]\nspeed = 3\n", "pacing.speed"),
        (
            "[sandbox]\nreceipt_delay = \"soon\"\n",
            "sandbox.receipt_delay",
        ),
    ];
    for (text, key) in cases {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let err = fails(
            &db.path,
            &[
                "--config",
                file.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
        );
        assert!(err.contains(key), "{err}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("WHATAN_PACING_MAX_DELAY", "1x")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pacing.max_delay"));
}

#[test]
fn config_example_prints_the_example_file() {
    let out = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(whatan::config::Config::from_toml(&text).is_ok());
    assert_eq!(text, include_str!("../whatan.toml.example"));
}

/// A running `whatan serve` with its address.
struct Server {
    child: Child,
    addr: String,
    first_line: Value,
}

fn serve(db: &Path, envs: &[(&str, &str)]) -> Server {
    serve_on(
        database::cli_args(db),
        database::cli_env(db),
        db.parent().unwrap(),
        envs,
    )
}

/// `serve` on the database the arguments and environment name.
fn serve_on(
    db_args: Vec<std::ffi::OsString>,
    db_env: Vec<(String, String)>,
    dir: &Path,
    envs: &[(&str, &str)],
) -> Server {
    let mut child = Command::new(BIN)
        .args(db_args)
        .env_remove("WHATAN_DATABASE_URL")
        .envs(db_env)
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first_line = Value::Null;
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(a) = v["listening"].as_str() {
            break a.to_string();
        }
        first_line = v;
    };
    Server {
        child,
        addr,
        first_line,
    }
}

fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sigterm_and_wait(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    server.child.wait().unwrap()
}

#[test]
fn first_run_bootstraps_prints_a_token_and_the_curl_command_works() {
    let db = fresh_db();
    let server = serve(
        &db.path,
        &[
            ("WHATAN_PACING_MIN_DELAY", "1ms"),
            ("WHATAN_PACING_MAX_DELAY", "2ms"),
        ],
    );
    let first = &server.first_line["firstRun"];
    let token = first["token"]
        .as_str()
        .expect("first run prints a token")
        .to_string();
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/v1/messages/send",
        &token,
        r#"{"to": "+917999709798", "type": "text", "text": "Hello from whatan"}"#,
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(sigterm_and_wait(server).code(), Some(0));
    // Second start: the database is not empty, nothing is bootstrapped again.
    let again = serve(&db.path, &[]);
    assert!(again.first_line.is_null());
    assert_eq!(
        json(&db.path, &["workspace", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(sigterm_and_wait(again).code(), Some(0));
}

#[test]
fn cli_changes_take_effect_in_a_running_server() {
    let db = fresh_db();
    let st = setup(&db.path);
    let server = serve(&db.path, &[]);
    let send = r#"{"to": "+917999709798", "type": "text", "text": "x"}"#;
    assert_eq!(
        http(
            &server.addr,
            "POST",
            "/api/v1/messages/send",
            &st.token,
            send
        )
        .0,
        202
    );
    json(&db.path, &["account", "disconnect", &st.account]);
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/v1/messages/send",
        &st.token,
        send,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("whatsapp_not_connected"));
    json(&db.path, &["account", "connect", &st.account]);
    assert_eq!(
        http(
            &server.addr,
            "POST",
            "/api/v1/messages/send",
            &st.token,
            send
        )
        .0,
        202
    );
    let id = json(&db.path, &["token", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    json(&db.path, &["token", "revoke", &id]);
    assert_eq!(
        http(
            &server.addr,
            "POST",
            "/api/v1/messages/send",
            &st.token,
            send
        )
        .0,
        401
    );
    assert_eq!(sigterm_and_wait(server).code(), Some(0));
}

#[test]
fn the_pages_curl_examples_run_unchanged_against_a_first_run_server() {
    let db = fresh_db();
    let dir = db.path.parent().unwrap();
    // example.com resolves to a loopback address admitted for tests, where
    // nothing listens: the requests are accepted, their media fetches fail
    // later, and no packet leaves this machine.
    let config = dir.join("whatan.toml");
    std::fs::write(
        &config,
        "[media]\nresolve = { \"example.com\" = [\"127.0.0.2\"] }\nunsafe_allow_networks_for_testing = [\"127.0.0.2/32\"]\n",
    )
    .unwrap();
    let server = serve(&db.path, &[]);
    let token = server.first_line["firstRun"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/page-curl-examples.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .env("WHATAN_URL", format!("http://{}", server.addr))
        .env("WHATAN_TOKEN", &token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 5 page examples queued"), "{stdout}");
    assert_eq!(sigterm_and_wait(server).code(), Some(0));
}

#[test]
fn sigterm_lets_an_in_flight_hand_off_finish_and_commit() {
    let db = fresh_db();
    let st = setup(&db.path);
    // The simulated network takes a second to acknowledge, so SIGTERM
    // arrives while the hand-off is in flight.
    let server = serve(&db.path, &[("WHATAN_SANDBOX_ACK_DELAY", "1s")]);
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/v1/messages/send",
        &st.token,
        r#"{"to": "+917999709798", "type": "text", "text": "x"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let id: Value = serde_json::from_str(&body).unwrap();
    let path = format!("/api/v1/messages/{}", id["sendAttemptId"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(&server.addr, "GET", &path, &st.token, "");
        if body.contains(r#""status":"sending""#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw sending: {body}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sigterm_and_wait(server).code(), Some(0));
    let status: String = database::with_conn(&db.path, |c| {
        c.query_row("SELECT status FROM send_attempts", (), |r| r.get(0))
            .unwrap()
    });
    assert_eq!(status, "accepted");
    assert_eq!(
        json(&db.path, &["sandbox", "outbox"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A `web` account on the setup's workspace and owner (a second user, since
/// a user has at most one account).
fn add_web_account(db: &Path, st: &Setup) -> String {
    let user = json(
        db,
        &[
            "user",
            "add",
            "--workspace",
            &st.ws,
            "--name",
            "Sales line",
            "--role",
            "member",
        ],
    );
    let account = json(
        db,
        &[
            "account",
            "add",
            "--workspace",
            &st.ws,
            "--user",
            &s(&user, "id"),
            "--phone",
            "+917000000002",
            "--driver",
            "web",
        ],
    );
    assert_eq!(account["driver"], "web");
    assert_eq!(account["status"], "disconnected");
    s(&account, "id")
}

#[cfg(not(feature = "web"))]
#[test]
fn without_the_web_feature_connecting_a_web_account_fails_with_one_line() {
    let db = fresh_db();
    let st = setup(&db.path);
    let account = add_web_account(&db.path, &st);
    let err = fails(&db.path, &["account", "connect", &account]);
    assert!(err.contains("no linked-device support"), "{err}");
    let err = fails(&db.path, &["account", "connect", &account, "--pair-code"]);
    assert!(err.contains("no linked-device support"), "{err}");
}

#[cfg(feature = "web")]
#[test]
fn connecting_a_web_account_whose_session_folder_is_unusable_fails_with_one_line() {
    // Pairing stops before any network use: the session folder next to the
    // database cannot be created (a file is in the way). On PostgreSQL
    // sessions are rows, and nothing stops pairing before the network.
    if database::sqlite_only("a session folder that cannot be created") {
        return;
    }
    let db = fresh_db();
    let st = setup(&db.path);
    let account = add_web_account(&db.path, &st);
    std::fs::write(
        db.path.parent().unwrap().join("web-sessions"),
        b"in the way",
    )
    .unwrap();
    let err = fails(&db.path, &["--json", "account", "connect", &account]);
    assert!(
        err.contains(&account) && err.contains("web-sessions"),
        "{err}"
    );
    let list = json(&db.path, &["account", "list"]);
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == account.as_str())
        .unwrap();
    assert_eq!(web["status"], "disconnected", "nothing half-written");
}

#[test]
fn a_second_serve_on_the_same_database_exits_at_once_naming_the_first() {
    let db = fresh_db();
    let st = setup(&db.path);
    // On PostgreSQL nodes share a database; what is refused there is a
    // second node with the same node id.
    let same_node = ("WHATAN_CLUSTER_NODE_ID", "twin");
    let first = serve(&db.path, &[same_node]);
    let first_pid = first.child.id();

    // Act: a second server on the same database (another port, so only the
    // database is shared).
    let started = std::time::Instant::now();
    let second = Command::new(BIN)
        .args(database::cli_args(&db.path))
        .envs(database::cli_env(&db.path))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(same_node.0, same_node.1)
        .current_dir(db.path.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second_pid = second.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(second.wait_with_output().unwrap()));
    let out = finished
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-KILL", &second_pid]).status();
            panic!("the second serve was still running after 10 s")
        });
    let elapsed = started.elapsed();

    assert!(!out.status.success(), "the second serve must fail");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    if database::postgres_server().is_none() {
        assert!(
            stderr.contains(&db.path.display().to_string()),
            "names the database: {stderr}"
        );
        assert!(
            stderr.contains(&format!("pid {first_pid}")),
            "names the holder: {stderr}"
        );
    } else {
        assert!(
            stderr.contains(r#"node id "twin" already serves"#),
            "{stderr}"
        );
    }
    // The admin CLI keeps working beside the first server, which keeps serving.
    let token = json(&db.path, &["token", "create", "--user", &st.owner]);
    assert!(s(&token, "token").starts_with("whatan_send_"));
    assert_eq!(
        json(&db.path, &["account", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, body) = http(&first.addr, "GET", "/healthz", "", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(sigterm_and_wait(first).code(), Some(0));
    // Once the first has stopped, the database can be served again.
    let again = serve(&db.path, &[]);
    assert_eq!(sigterm_and_wait(again).code(), Some(0));
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn the_database_its_companions_the_lock_and_new_directories_are_owner_only() {
    if database::sqlite_only("the SQLite file's and its lock's modes") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state").join("whatan");
    let db = dir.join("whatan.db");

    // First use, by the CLI: it creates the directories and the database.
    let out = Command::new(BIN)
        .args(database::cli_args(&db))
        .envs(database::cli_env(&db))
        .args(["workspace", "create", "Acme"])
        .current_dir(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_mode(&db), 0o600, "database");
    assert_eq!(file_mode(&dir), 0o700, "directory holding the database");
    assert_eq!(file_mode(&root.path().join("state")), 0o700, "its parent");

    // While serve runs, SQLite's -wal and -shm exist, and so does the lock.
    let server = serve(&db, &[]);
    for suffix in ["-wal", "-shm", ".lock"] {
        let companion = PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(file_mode(&companion), 0o600, "{suffix}");
    }
    assert_eq!(sigterm_and_wait(server).code(), Some(0));
}

/// `whatan --json ARGS` with extra environment variables and `stdin` piped in.
fn whatan_fed(db: &Path, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut whatan = Command::new(BIN);
    whatan
        .args(database::cli_args(db))
        .envs(database::cli_env(db))
        .arg("--json")
        .args(args)
        .env_remove("WHATAN_CLOUD_ACCESS_TOKEN")
        .env_remove("WHATAN_CLOUD_APP_SECRET")
        .envs(envs.iter().copied())
        .env_remove("WHATAN_LOG")
        .current_dir(db.parent().unwrap());
    external_tool::output_with_stdin(&mut whatan, stdin)
}

/// `account add --driver cloud` for a new member of the setup's workspace,
/// with `secrets` as the secret-giving arguments.
fn add_cloud_account(
    db: &Path,
    st: &Setup,
    phone: &str,
    secrets: &[&str],
    envs: &[(&str, &str)],
    stdin: &[u8],
) -> Output {
    let user = json(
        db,
        &[
            "user",
            "add",
            "--workspace",
            &st.ws,
            "--name",
            phone,
            "--role",
            "member",
        ],
    );
    let mut args = vec![
        "account",
        "add",
        "--workspace",
        &st.ws,
        "--phone",
        phone,
        "--driver",
        "cloud",
        "--phone-number-id",
        "106540352242922",
        "--verify-token",
        "verify-token-1",
    ];
    let user_id = s(&user, "id");
    args.extend_from_slice(&["--user", &user_id]);
    args.extend_from_slice(secrets);
    whatan_fed(db, &args, envs, stdin)
}

/// The (access token, app secret) stored for an account.
fn stored_cloud_secrets(db: &Path, account: &str) -> (String, String) {
    let settings: String = database::with_conn(db, |c| {
        c.query_row(
            "SELECT settings FROM accounts WHERE id = ?1",
            [account],
            |r| r.get(0),
        )
        .unwrap()
    });
    let v: Value = serde_json::from_str(&settings).unwrap();
    (s(&v, "access_token"), s(&v, "app_secret"))
}

fn added_id(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["driver"], "cloud");
    s(&v, "id")
}

const ENV_SECRETS: [(&str, &str); 2] = [
    ("WHATAN_CLOUD_ACCESS_TOKEN", "EAAG-token-from-env"),
    ("WHATAN_CLOUD_APP_SECRET", "app-secret-from-env"),
];

#[test]
fn cloud_secrets_come_from_stdin_files_or_the_environment_and_are_never_listed() {
    let db = fresh_db();
    let st = setup(&db.path);
    let secret_file = db.path.parent().unwrap().join("app-secret.txt");
    std::fs::write(&secret_file, "app-secret-from-file\n").unwrap();

    // The access token on stdin, the app secret in a file.
    let from_files = add_cloud_account(
        &db.path,
        &st,
        "+917000000002",
        &[
            "--access-token-file",
            "-",
            "--app-secret-file",
            secret_file.to_str().unwrap(),
        ],
        &[],
        b"EAAG-token-from-stdin\n",
    );
    // Both from the environment.
    let from_env = add_cloud_account(&db.path, &st, "+917000000003", &[], &ENV_SECRETS, b"");
    // A flag given on the command line wins over the environment.
    let flag_wins = add_cloud_account(
        &db.path,
        &st,
        "+917000000004",
        &["--access-token", "EAAG-token-from-flag"],
        &ENV_SECRETS,
        b"",
    );

    let (from_files, from_env, flag_wins) = (
        added_id(&from_files),
        added_id(&from_env),
        added_id(&flag_wins),
    );
    assert_eq!(
        stored_cloud_secrets(&db.path, &from_files),
        (
            "EAAG-token-from-stdin".to_string(),
            "app-secret-from-file".to_string()
        ),
        "trailing newlines dropped"
    );
    assert_eq!(
        stored_cloud_secrets(&db.path, &from_env),
        (
            "EAAG-token-from-env".to_string(),
            "app-secret-from-env".to_string()
        )
    );
    assert_eq!(
        stored_cloud_secrets(&db.path, &flag_wins),
        (
            "EAAG-token-from-flag".to_string(),
            "app-secret-from-env".to_string()
        )
    );
    // Listings never show them, in JSON or as text (with the variables set:
    // they are not mistaken for config keys either).
    let json_list = whatan_fed(&db.path, &["account", "list"], &ENV_SECRETS, b"");
    let text_list = whatan(&db.path, &["account", "list"]);
    assert!(json_list.status.success() && text_list.status.success());
    let json_list = String::from_utf8(json_list.stdout).unwrap();
    let text_list = String::from_utf8(text_list.stdout).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&json_list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    for secret in [
        "EAAG-token-from-stdin",
        "app-secret-from-file",
        "EAAG-token-from-env",
        "app-secret-from-env",
        "EAAG-token-from-flag",
    ] {
        assert!(!json_list.contains(secret), "{secret} in {json_list}");
        assert!(!text_list.contains(secret), "{secret} in {text_list}");
    }
}

#[test]
fn cloud_secrets_that_cannot_be_read_fail_with_one_line_and_add_nothing() {
    let db = fresh_db();
    let st = setup(&db.path);
    let missing = db.path.parent().unwrap().join("no-such-file");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--access-token-file", "-", "--app-secret-file", "-"],
            "both read stdin",
        ),
        (
            &[
                "--access-token-file",
                missing.to_str().unwrap(),
                "--app-secret",
                "x",
            ],
            "no-such-file",
        ),
        // Nothing anywhere: the message says where a secret may come from.
        (&["--app-secret", "x"], "WHATAN_CLOUD_ACCESS_TOKEN"),
    ];
    for (i, (secrets, needle)) in cases.into_iter().enumerate() {
        let phone = format!("+91700000001{i}");
        let out = add_cloud_account(&db.path, &st, &phone, secrets, &[], b"");
        assert!(!out.status.success(), "{secrets:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(needle), "{secrets:?}: {err}");
    }
    assert_eq!(
        json(&db.path, &["account", "list"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the setup's sandbox account"
    );
}

#[cfg(feature = "web")]
#[test]
fn connecting_a_web_account_without_a_route_to_whatsapp_fails_fast_with_one_line_naming_the_cause()
{
    // WhatsApp's server stands at a loopback port nothing listens on.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = fresh_db();
    let st = setup(&db.path);
    let account = add_web_account(&db.path, &st);
    for pair_code in [false, true] {
        let mut args = vec!["account", "connect"];
        args.push(&account);
        if pair_code {
            args.push("--pair-code");
        }
        let started = std::time::Instant::now();
        let out = Command::new(BIN)
            .args(database::cli_args(&db.path))
            .envs(database::cli_env(&db.path))
            .args(&args)
            .env_remove("WHATAN_LOG")
            .env(
                "WHATAN_TEST_WEB_SERVER",
                format!("ws://127.0.0.1:{closed_port}/ws/chat"),
            )
            .current_dir(db.path.parent().unwrap())
            .output()
            .unwrap();
        let elapsed = started.elapsed();

        assert!(!out.status.success());
        assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line, no library logs: {err}");
        assert!(
            err.starts_with(&format!(
                "whatan: account {account}: cannot reach WhatsApp: connection refused"
            )),
            "{err}"
        );
    }
    let list = json(&db.path, &["account", "list"]);
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == account.as_str())
        .unwrap();
    assert_eq!(web["status"], "disconnected");
    assert!(
        !db.path
            .parent()
            .unwrap()
            .join("web-sessions")
            .join(format!("{account}.db"))
            .exists(),
        "no half-made session is left"
    );
}

#[test]
fn metrics_tokens_are_for_owners_only() {
    let db = fresh_db();
    let setup = setup(&db.path);
    let token = json(
        &db.path,
        &[
            "token",
            "create",
            "--user",
            &setup.owner,
            "--kind",
            "metrics",
        ],
    );
    assert!(s(&token, "token").starts_with("whatan_metrics_"));
    assert_eq!(token["kind"], "metrics");
    let member = json(
        &db.path,
        &[
            "user",
            "add",
            "--workspace",
            &setup.ws,
            "--name",
            "Mo",
            "--role",
            "member",
        ],
    );
    let err = fails(
        &db.path,
        &[
            "token",
            "create",
            "--user",
            &s(&member, "id"),
            "--kind",
            "metrics",
        ],
    );
    assert!(
        err.contains("only owners may hold a metrics token"),
        "{err}"
    );
}

#[test]
fn webhook_commands_print_the_documented_json_and_the_secret_only_once() {
    let db = fresh_db();
    let st = setup(&db.path);
    let url = "https://93.184.215.14/hooks/whatan";

    let added = json(
        &db.path,
        &[
            "webhook",
            "add",
            "--workspace",
            &st.ws,
            "--url",
            url,
            "--events",
            "message.read,message.failed",
            "--description",
            "CRM",
        ],
    );
    let id = s(&added, "id");
    assert!(s(&added, "secret").starts_with("whsec_"));
    assert_eq!(
        added["events"],
        serde_json::json!(["message.read", "message.failed"])
    );
    let listed = json(&db.path, &["webhook", "list", "--workspace", &st.ws]);
    assert_eq!(
        listed,
        serde_json::json!([{"id": id, "url": url, "events": ["message.read", "message.failed"],
            "description": "CRM", "status": "enabled", "createdAt": listed[0]["createdAt"]}])
    );
    let rotated = json(&db.path, &["webhook", "rotate-secret", &id]);
    assert_eq!(rotated["id"], id.as_str());
    assert_ne!(rotated["secret"], added["secret"]);
    assert_eq!(
        json(&db.path, &["webhook", "deliveries", &id, "--failed"]),
        serde_json::json!([])
    );

    // Refusals: one line each, naming what is wrong; nothing written.
    let private = fails(
        &db.path,
        &[
            "webhook",
            "add",
            "--workspace",
            &st.ws,
            "--url",
            "https://10.0.0.1/x",
        ],
    );
    assert!(
        private.contains("url") && private.contains("10.0.0.1"),
        "{private}"
    );
    let plain = fails(
        &db.path,
        &[
            "webhook",
            "add",
            "--workspace",
            &st.ws,
            "--url",
            "http://93.184.215.14/x",
        ],
    );
    assert!(plain.contains("https"), "{plain}");
    let event = fails(
        &db.path,
        &[
            "webhook",
            "add",
            "--workspace",
            &st.ws,
            "--url",
            url,
            "--events",
            "message.sent",
        ],
    );
    assert!(event.contains("message.sent"), "{event}");
    assert!(fails(&db.path, &["webhook", "redeliver", "dlv_nope"]).contains("dlv_nope"));
    assert!(fails(&db.path, &["webhook", "rotate-secret", "whk_nope"]).contains("no such webhook"));
    assert_eq!(
        json(&db.path, &["webhook", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let removed = json(&db.path, &["webhook", "remove", &id]);
    assert_eq!(removed, serde_json::json!({"id": id, "removed": true}));
    assert_eq!(json(&db.path, &["webhook", "list"]), serde_json::json!([]));
}

#[test]
fn login_link_prints_a_one_time_url_under_public_url_and_refuses_strangers() {
    let db = fresh_db();
    let st = setup(&db.path);
    let link = json(&db.path, &["user", "login-link", &st.owner]);
    let url = s(&link, "url");
    let secret = url
        .strip_prefix("http://127.0.0.1:8080/login/")
        .unwrap_or_else(|| panic!("{url} is not under the default public_url"));
    assert!(secret.len() >= 43, "{secret}");
    assert!(s(&link, "expiresAt").ends_with('Z'));
    // The secret itself is never stored.
    let bytes = stored_bytes(&db.path);
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let behind_proxy = whatan_fed(
        &db.path,
        &["user", "login-link", &st.owner, "--expires-in", "1h"],
        &[("WHATAN_SERVER_PUBLIC_URL", "https://whatan.example.com")],
        b"",
    );
    let v: Value = serde_json::from_slice(&behind_proxy.stdout).unwrap();
    assert!(s(&v, "url").starts_with("https://whatan.example.com/login/"));

    assert!(fails(&db.path, &["user", "login-link", "usr_nobody"]).contains("unknown user"));
    assert!(fails(
        &db.path,
        &["user", "login-link", &st.owner, "--expires-in", "soon"]
    )
    .contains("--expires-in"));
    let bad_url = whatan_fed(
        &db.path,
        &["user", "login-link", &st.owner],
        &[(
            "WHATAN_SERVER_PUBLIC_URL",
            "https://whatan.example.com/base",
        )],
        b"",
    );
    assert!(!bad_url.status.success());
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("server.public_url"));
}

#[test]
fn sandbox_scan_connects_only_a_sandbox_account_whose_code_is_shown() {
    let db = fresh_db();
    let st = setup(&db.path);
    let err = fails(&db.path, &["sandbox", "scan", &st.account]);
    assert!(err.contains("no QR code is shown"), "{err}");
    assert!(fails(&db.path, &["sandbox", "scan", "acc_nothing"]).contains("unknown account"));
    // What the dashboard's Link page does when it shows the code.
    let store = database::open_store(&db.path);
    let account = st.account.clone();
    let shown = store
        .write_blocking(move |c| {
            whatan::store::dashboard::start_sandbox_pairing(c, &account, "n1", 0)
        })
        .unwrap();
    assert_eq!(shown.status.as_str(), "connecting");
    assert_eq!(
        json(&db.path, &["sandbox", "scan", &st.account]),
        serde_json::json!({"id": st.account, "status": "connected"})
    );
    assert!(fails(&db.path, &["sandbox", "scan", &st.account]).contains("no QR code"));
}

/// What is stored of the database of `path`: the SQLite file's bytes, or on
/// PostgreSQL every row of every whatan table, as text.
fn stored_bytes(path: &Path) -> Vec<u8> {
    if database::postgres_server().is_none() {
        return std::fs::read(path).unwrap();
    }
    database::with_conn(path, database::stored_text).into_bytes()
}

#[test]
fn migrate_prints_the_schema_version_it_brought_the_database_to() {
    let db = fresh_db();
    let latest = include_str!("../schema.sql")
        .lines()
        .filter_map(|l| l.strip_prefix("-- migration: "))
        .map(|n| n.trim().parse::<i64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        json(&db.path, &["migrate"]),
        serde_json::json!({"version": latest})
    );
    // Again: nothing to do, same answer.
    assert_eq!(json(&db.path, &["migrate"])["version"], latest);
}

#[test]
fn migrate_from_sqlite_copies_everything_and_the_copy_serves_on() {
    let Some(server) = database::postgres_only("migrate --from-sqlite") else {
        // Without a PostgreSQL target the command refuses, naming the key.
        let db = fresh_db();
        let source = fresh_db();
        assert!(json(&source.path, &["migrate"])["version"].is_i64());
        let err = fails(
            &db.path,
            &["migrate", "--from-sqlite", source.path.to_str().unwrap()],
        );
        assert!(err.contains("database.url"), "{err}");
        return;
    };
    // A SQLite file with history: the first run's workspace, owner, account
    // and token, and three sends that went out.
    let source = fresh_db();
    let sqlite_args = || vec!["--db".into(), source.path.as_os_str().to_owned()];
    let fast = [
        ("WHATAN_PACING_MIN_DELAY", "1ms"),
        ("WHATAN_PACING_MAX_DELAY", "2ms"),
    ];
    let first = serve_on(sqlite_args(), Vec::new(), source._dir.path(), &fast);
    let token = first.first_line["firstRun"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = http(
            &first.addr,
            "POST",
            "/api/v1/messages/send",
            &token,
            &format!(r#"{{"to": "+917999709798", "type": "text", "text": "before the move {i}"}}"#),
        );
        assert_eq!(status, 202, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.push(s(&v, "sendAttemptId"));
    }
    let outbox_of = |args: Vec<std::ffi::OsString>, env: Vec<(String, String)>| -> Value {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("WHATAN_DATABASE_URL")
            .envs(env)
            .args(["--json", "sandbox", "outbox"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Wait until all three reached the network, then stop.
    serve::wait_for("the three sends to go out", Duration::from_secs(10), || {
        outbox_of(sqlite_args(), Vec::new())
            .as_array()
            .unwrap()
            .len()
            >= 3
    });
    // Copy into an empty PostgreSQL database; not while a server writes the
    // file.
    let url = database::fresh_postgres(&server);
    let pg_env = || vec![("WHATAN_DATABASE_URL".to_string(), url.clone())];
    let copy = |expect_success: bool| {
        let out = Command::new(BIN)
            .envs(pg_env())
            .args(["--json", "migrate", "--from-sqlite"])
            .arg(&source.path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            expect_success,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let refused = copy(false);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("being served"), "{err}");
    assert_eq!(sigterm_and_wait(first).code(), Some(0));
    let outbox = outbox_of(sqlite_args(), Vec::new());

    // A linked web account beside it: its session file moves into the
    // database's rows.
    #[cfg(feature = "web")]
    let web_account = {
        let store = whatan::store::Store::open(&source.path).unwrap();
        let account = store
            .write_blocking(|c| {
                let ws = whatan::store::admin::list_workspaces(c)?.remove(0);
                let member =
                    whatan::store::admin::add_user(c, &ws.id, "Web", whatan::domain::Role::Member)?;
                whatan::store::admin::add_account(
                    c,
                    &ws.id,
                    &member.id,
                    "+917000000009",
                    whatan::domain::DriverKind::Web,
                    &serde_json::json!({}),
                )
            })
            .unwrap();
        drop(store);
        let dir = whatan_web::sessions_dir(&source.path);
        std::fs::create_dir_all(&dir).unwrap();
        let file = whatan_web::session_path(&dir, &account.id).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(
            whatan_web::conformance::seed_file_device(&file, Some("917000000009")),
        );
        account.id
    };

    let copied: Value = serde_json::from_slice(&copy(true).stdout).unwrap();
    #[cfg(feature = "web")]
    {
        assert!(
            copied["sessions"][&web_account].as_u64().unwrap() >= 1,
            "{copied}"
        );
        let store = whatan::store::Store::open_postgres(&url).unwrap();
        let rows = whatan::driver::web::DbRows::new(store, &web_account, None);
        let phone = tokio::runtime::Runtime::new().unwrap().block_on(
            whatan_web::conformance::device_phone(std::sync::Arc::new(rows)),
        );
        assert_eq!(phone.as_deref(), Some("917000000009"), "linked as it was");
    }
    assert!(copied["version"].as_i64().unwrap() >= 9);
    assert_eq!(copied["copied"]["send_attempts"], 3);
    assert_eq!(copied["copied"]["workspaces"], 1);
    assert_eq!(copied["copied"]["tokens"], 1);
    assert_eq!(copied["copied"]["sandbox_outbox"], 3);
    assert_eq!(
        outbox_of(Vec::new(), pg_env()),
        outbox,
        "the network's record moved as it was"
    );

    // A second copy into the now non-empty database refuses and adds nothing.
    let again = copy(false);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not empty"), "{err}");

    // The copy serves: the old token reads the old sends, and a new send is
    // numbered after them (the identity counter moved past the copied rows).
    let moved = serve_on(Vec::new(), pg_env(), source._dir.path(), &fast);
    assert!(moved.first_line.is_null(), "not bootstrapped again");
    for id in &ids {
        let (status, body) = http(
            &moved.addr,
            "GET",
            &format!("/api/v1/messages/{id}"),
            &token,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_ne!(v["status"], "queued", "{body}");
    }
    let (status, body) = http(
        &moved.addr,
        "POST",
        "/api/v1/messages/send",
        &token,
        r#"{"to": "+917999709798", "type": "text", "text": "after the move"}"#,
    );
    assert_eq!(status, 202, "{body}");
    serve::wait_for(
        "the send after the move to go out",
        Duration::from_secs(10),
        || outbox_of(Vec::new(), pg_env()).as_array().unwrap().len() >= 4,
    );
    assert_eq!(sigterm_and_wait(moved).code(), Some(0));
}

#[test]
fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(server) = database::postgres_only("TLS to PostgreSQL") else {
        return;
    };
    // `scripts/test-postgres` serves TLS with a throwaway CA for 127.0.0.1,
    // and `scripts/test-all` names it.
    let Ok(ca) = std::env::var("WHATAN_TEST_POSTGRES_CA") else {
        assert!(
            std::env::var_os("WHATAN_TEST_REQUIRE_ALL").is_none(),
            "the PostgreSQL pass names the server's CA (WHATAN_TEST_POSTGRES_CA)"
        );
        eprintln!(
            "skipped: TLS to PostgreSQL needs WHATAN_TEST_POSTGRES_CA (scripts/test-all sets it)"
        );
        return;
    };
    let url = database::fresh_postgres(&server);
    let sep = if url.contains('?') { '&' } else { '?' };
    let with = |query: &str| format!("{url}{sep}{query}");
    let migrate = |url: &str| {
        Command::new(BIN)
            .env("WHATAN_DATABASE_URL", url)
            .args(["--json", "migrate"])
            .output()
            .unwrap()
    };

    // Verified against the CA the URL names: the schema is created over TLS.
    let tls_url = with(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let out = migrate(&tls_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn_url = tls_url.clone();
    let encrypted: bool = std::thread::spawn(move || {
        let conn = whatan::store::db::PgConn::connect(&conn_url).unwrap();
        let conn = whatan::store::Conn::Pg(Box::new(conn));
        conn.query_row(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            (),
            |r| r.get(0),
        )
        .unwrap()
    })
    .join()
    .unwrap();
    assert!(encrypted, "the session is encrypted");

    // Not trusted (Mozilla's roots do not know the test CA), or not the
    // name in the certificate: refused, with one line.
    for (url, says) in [
        (with("sslmode=require"), "unknownissuer"),
        // The right server (hostaddr), reached by a name its certificate
        // does not carry.
        (
            format!(
                "{}{sep}hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
                url.replace("127.0.0.1", "localhost")
            ),
            "not valid for name",
        ),
        (with("sslmode=prefer"), "unknownissuer"),
        (with("sslmode=allow"), "sslmode=allow"),
        (
            with("sslmode=require&sslrootcert=/nonexistent/ca.pem"),
            "/nonexistent/ca.pem",
        ),
    ] {
        let out = migrate(&url);
        assert!(!out.status.success(), "{url} should be refused");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.to_lowercase().contains(says), "{url}: {err}");
    }
}
