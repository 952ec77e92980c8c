//! Test fixture: the real server (`server::serve`) on 127.0.0.1 port 0 with a
//! fresh SQLite file, a workspace with an owner, an admin and a member (each
//! with a sandbox account and a send token), and a client that talks HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use whatan::config::Config;
use whatan::domain::token::{self, TokenKind};
use whatan::domain::{AccountStatus, DriverKind, Role};
pub use whatan::server::Hooks;
use whatan::store::admin;
use whatan::store::Store;

pub struct Member {
    pub user: String,
    pub token: String,
    pub phone: String,
    pub account: Option<String>,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub config: Config,
    pub client: reqwest::Client,
    pub workspace: String,
    pub owner: Member,
    pub admin: Member,
    pub member: Member,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Fast pacing and receipts, so delivery tests run in milliseconds.
pub fn test_config(db: PathBuf) -> Config {
    let mut c = Config::default();
    crate::database::configure(&mut c.database, db);
    c.pacing.min_delay = Duration::from_millis(1);
    c.pacing.max_delay = Duration::from_millis(5);
    c.sandbox.receipt_delay = Duration::from_millis(20);
    c.sandbox.unreachable = vec!["+917999000000".into()];
    // Media hosts resolve to a loopback address admitted by the test-only
    // allow-list, where nothing listens: validation passes, fetches fail fast,
    // and no test ever sends a packet off this machine.
    c.media.resolve.insert(
        "media.example.com".into(),
        vec!["127.0.0.2".parse().unwrap()],
    );
    c.media.unsafe_allow_networks_for_testing = vec!["127.0.0.2/32".parse().unwrap()];
    c.server.shutdown_timeout = Duration::from_secs(5);
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_hooks(tweak, Hooks::default()).await
}

/// The app with a test's [`Hooks`]: a manual clock, a wrapped driver.
pub async fn spawn_app_with_hooks(tweak: impl FnOnce(&mut Config), hooks: Hooks) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().join("whatan.db"));
    tweak(&mut config);
    let store = Store::open_config(&config.database).unwrap();
    let (workspace, owner, admin, member) = store
        .write(|c| {
            let ws = admin::create_workspace(c, "Acme")?;
            let owner = add_member(c, &ws.id, Role::Owner, "+917000000001")?;
            let admin_m = add_member(c, &ws.id, Role::Admin, "+917000000002")?;
            let member = add_member(c, &ws.id, Role::Member, "+917000000003")?;
            Ok((ws.id, owner, admin_m, member))
        })
        .await
        .unwrap();
    let mut app = start(config, store, hooks).await;
    app.workspace = workspace;
    app.owner = owner;
    app.admin = admin;
    app.member = member;
    app._dir = Some(dir);
    app
}

/// A user with a sandbox account on `phone` (if given) and a send token.
pub fn add_member(
    c: &whatan::store::Conn,
    ws: &str,
    role: Role,
    phone: &str,
) -> Result<Member, whatan::store::StoreError> {
    let user = admin::add_user(c, ws, &format!("{} user", role.as_str()), role)?;
    let account = if phone.is_empty() {
        None
    } else {
        Some(
            admin::add_account(
                c,
                ws,
                &user.id,
                phone,
                DriverKind::Sandbox,
                &serde_json::json!({}),
            )?
            .id,
        )
    };
    let t = token::generate(TokenKind::Send);
    admin::create_token(c, &user.id, TokenKind::Send, None, None, &t)?;
    Ok(Member {
        user: user.id,
        token: t.secret,
        phone: phone.to_string(),
        account,
    })
}

async fn start(config: Config, store: Store, hooks: Hooks) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(whatan::server::serve_with(
        config.clone(),
        store.clone(),
        listener,
        async {
            let _ = rx.await;
        },
        hooks,
    ));
    let empty = || Member {
        user: String::new(),
        token: String::new(),
        phone: String::new(),
        account: None,
    };
    TestApp {
        addr,
        store,
        config,
        client: reqwest::Client::new(),
        workspace: String::new(),
        owner: empty(),
        admin: empty(),
        member: empty(),
        shutdown: Some(tx),
        task: Some(task),
        _dir: None,
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.bytes)))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send_raw(
        &self,
        token: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .client
            .post(self.url("/api/v1/messages/send"))
            .header("Content-Type", "application/json")
            .body(body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        reply(req.send().await.unwrap()).await
    }

    pub async fn send(&self, token: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send_raw(token, key, body.to_string()).await
    }

    /// Send `body` with no key; the `sendAttemptId` of the answer.
    pub async fn send_id(&self, token: &str, body: &Value) -> String {
        let sent = self.send(token, None, body).await;
        sent.json()["sendAttemptId"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, token: &str, id: &str) -> Reply {
        let resp = self
            .client
            .get(self.url(&format!("/api/v1/messages/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        reply(resp).await
    }

    /// Poll the status endpoint until `done` holds (bounded; no fixed sleeps).
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_get(&format!("/api/v1/messages/{id}"), token, done)
            .await
    }

    /// Poll `GET path` until its JSON body satisfies `done`, for at most 20 s.
    pub async fn wait_for_get(
        &self,
        path: &str,
        token: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let resp = self
                .client
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let body = reply(resp).await.json();
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition never held; last answer of {path}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        self.store
            .read(move |c| Ok(c.query_row(sql, (), |r| r.get(0))?))
            .await
            .unwrap()
    }

    /// Run one statement with one parameter through the writer: a state the
    /// API cannot reach, set by hand.
    pub async fn execute<P>(&self, sql: &'static str, param: P)
    where
        P: whatan::store::db::ToParam + Send + 'static,
    {
        self.store
            .write(move |c| Ok(c.execute(sql, [param]).map(drop)?))
            .await
            .unwrap();
    }

    pub async fn set_status(&self, account: &str, status: AccountStatus) {
        let id = account.to_string();
        self.store
            .write(move |c| admin::set_account_status(c, &id, status, None))
            .await
            .unwrap();
    }

    /// Stop the server gracefully and start a new one on the same database.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let store = Store::open_config(&self.config.database).unwrap();
        let mut next = start(self.config.clone(), store, Hooks::default()).await;
        next.workspace = std::mem::take(&mut self.workspace);
        next.owner = std::mem::replace(&mut self.owner, next.owner);
        next.admin = std::mem::replace(&mut self.admin, next.admin);
        next.member = std::mem::replace(&mut self.member, next.member);
        next._dir = self._dir.take();
        next
    }

    /// The variable that points the CLI at this test's database (the
    /// SQLite file, or the PostgreSQL database).
    pub fn database_env(&self) -> (&'static str, String) {
        match &self.config.database.url {
            Some(url) => ("WHATAN_DATABASE_URL", url.clone()),
            None => (
                "WHATAN_DATABASE_PATH",
                self.config.database.path.display().to_string(),
            ),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A one-time dashboard sign-in link for `user`, valid 15 minutes, as
/// `whatan user login-link` makes it.
pub async fn login_link(app: &TestApp, user: &str) -> String {
    let link = whatan::dashboard::session::LoginLink::new(Duration::from_secs(900));
    let (user, hash, expires) = (user.to_string(), link.hash, link.expires_at);
    app.store
        .write(move |c| whatan::store::dashboard::create_login_link(c, &user, &hash, expires, 0))
        .await
        .unwrap();
    link.url(&format!("http://{}", app.addr))
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap().to_vec();
    Reply {
        status,
        headers,
        bytes,
    }
}

pub fn text_to(to: &str) -> Value {
    serde_json::json!({"to": to, "type": "text", "text": "hello"})
}
