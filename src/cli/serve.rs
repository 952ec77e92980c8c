//! `serve`: take the database's serve lock (one server per database, see
//! `store::lock`), open it, bootstrap it on first run, bind, and run the
//! server until SIGINT/SIGTERM. Unlike the admin commands it prints as it
//! goes (the first-run token, then the address it listens on), because it
//! never returns while it works.

use std::path::Path;

use serde_json::json;

use super::CliError;
use crate::config::Config;
use crate::domain::token::{self, TokenKind};
use crate::domain::{DriverKind, Role};
use crate::store::lock::{LockError, ServeLock};
use crate::store::{admin, Store};

pub fn serve(mut config: Config, listen: Option<&str>, json_out: bool) -> Result<(), CliError> {
    if let Some(listen) = listen {
        config.server.listen = listen.parse().map_err(|_| {
            CliError(format!(
                "--listen: {listen:?} is not an address like 127.0.0.1:8080"
            ))
        })?;
    }
    // Before anything else touches the database or the port, so that a
    // second server says who runs it rather than "address in use".
    // Resolved once: the default names this process.
    config.cluster.node_id = Some(config.cluster.node_id());
    let (_file_lock, _node_lock) = match &config.database.url {
        None => (
            Some(
                ServeLock::acquire(&config.database.path)
                    .map_err(|e| lock_refused(&config.database.path, e))?,
            ),
            None,
        ),
        Some(url) => (
            None,
            Some(crate::store::postgres::NodeLock::acquire(
                url,
                &config.cluster.node_id(),
            )?),
        ),
    };
    let store = Store::open_config(&config.database)?;
    let listener = std::net::TcpListener::bind(config.server.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", config.server.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    config.server.listen = addr;
    let sign_in = crate::dashboard::session::LoginLink::new(FIRST_SIGN_IN_TTL);
    if let Some((account, secret)) = bootstrap(&store, &sign_in)? {
        let link = sign_in.url(&config.public_url());
        print_first_run(&account, &secret, &link, addr, json_out);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| CliError(e.to_string()))?;
        let shutdown = shutdown_signal()?;
        match store.path() {
            Some(path) => tracing::info!(%addr, db = %path.display(), "whatan listening"),
            None => tracing::info!(%addr, db = "postgresql", "whatan listening"),
        }
        if json_out {
            println!("{}", json!({"listening": addr.to_string()}));
        }
        crate::server::serve(config, store, listener, shutdown)
            .await
            .map_err(CliError)
    })
}

/// The one line a second `serve` on a database prints.
fn lock_refused(database: &Path, error: LockError) -> CliError {
    match error {
        LockError::Held { lock_path, pid } => {
            let holder = pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
            CliError(format!(
                "database {} is already served by another whatan ({holder}, lock {}); only one serve may run per database",
                database.display(),
                lock_path.display()
            ))
        }
        LockError::Io { .. } => CliError(error.to_string()),
    }
}

/// How long the first run's dashboard sign-in link works.
const FIRST_SIGN_IN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Create a workspace, an owner, a connected sandbox account, a send
/// token and the owner's dashboard sign-in link in one transaction, if the
/// database is empty. Returns the token's secret.
fn bootstrap(
    store: &Store,
    sign_in: &crate::dashboard::session::LoginLink,
) -> Result<Option<(admin::Account, String)>, CliError> {
    let (link_hash, link_expires) = (sign_in.hash, sign_in.expires_at);
    let new = token::generate(TokenKind::Send);
    let secret = new.secret.clone();
    let created = store.write_blocking(move |c| {
        if !admin::is_empty(c)? {
            return Ok(None);
        }
        let ws = admin::create_workspace(c, "My workspace")?;
        let owner = admin::add_user(c, &ws.id, "Owner", Role::Owner)?;
        let account = admin::add_account(
            c,
            &ws.id,
            &owner.id,
            "+917000000001",
            DriverKind::Sandbox,
            &json!({}),
        )?;
        admin::create_token(c, &owner.id, TokenKind::Send, Some("first-run"), None, &new)?;
        crate::store::dashboard::create_login_link(
            c,
            &owner.id,
            &link_hash,
            link_expires,
            crate::clock::now_ms(),
        )?;
        Ok(Some(account))
    })?;
    Ok(created.map(|a| (a, secret)))
}

fn print_first_run(
    account: &admin::Account,
    secret: &str,
    dashboard: &str,
    addr: std::net::SocketAddr,
    json_out: bool,
) {
    if json_out {
        println!(
            "{}",
            json!({"firstRun": {"workspace": account.workspace, "user": account.user,
                   "account": account.id, "phone": account.phone, "token": secret,
                   "dashboard": dashboard}})
        );
        return;
    }
    println!(
        "\nFirst run: created a workspace, an owner, a connected sandbox WhatsApp account ({phone})\n\
         and this Send API token. Copy it now, it is not shown again:\n\n    {secret}\n\n\
         Send a message (the sandbox network records it instead of reaching a phone):\n\n    \
         curl -X POST http://{addr}/api/v1/messages/send \\\n      \
         -H \"Authorization: Bearer {secret}\" \\\n      \
         -H \"Content-Type: application/json\" \\\n      \
         -d '{{\"to\": \"+917999709798\", \"type\": \"text\", \"text\": \"Hello from whatan\"}}'\n\n\
         Then poll GET http://{addr}/api/v1/messages/<sendAttemptId> with the same header,\n\
         and see what the sandbox delivered with: whatan sandbox outbox\n\n\
         The dashboard (a one-time sign-in link, valid for 24 hours; a new one any time:\n\
         whatan user login-link {user}):\n\n    {dashboard}\n",
        phone = account.phone,
        user = account.user
    );
}

/// The shutdown future: resolves on the first SIGINT or SIGTERM. The
/// handlers are installed here, before `serve` says it listens: installed
/// lazily (on first poll), a SIGTERM sent as soon as the address is printed
/// would kill the process instead of draining it.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        let cannot = |e: std::io::Error| CliError(format!("cannot handle signals: {e}"));
        (
            signal(SignalKind::interrupt()).map_err(cannot)?,
            signal(SignalKind::terminate()).map_err(cannot)?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received");
    })
}
