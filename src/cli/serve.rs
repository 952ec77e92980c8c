//! `serve`: open the database, bootstrap it on first run, bind, and run the
//! server until SIGINT/SIGTERM. Unlike the admin commands it prints as it
//! goes (the first-run token, then the address it listens on), because it
//! never returns while it works.

use serde_json::json;

use super::CliError;
use crate::config::Config;
use crate::domain::token::{self, TokenKind};
use crate::domain::{DriverKind, Role};
use crate::store::{admin, Store};

pub fn serve(mut config: Config, listen: Option<&str>, json_out: bool) -> Result<(), CliError> {
    if let Some(listen) = listen {
        config.server.listen = listen.parse().map_err(|_| {
            CliError(format!(
                "--listen: {listen:?} is not an address like 127.0.0.1:8080"
            ))
        })?;
    }
    let store = Store::open(&config.database.path)?;
    let listener = std::net::TcpListener::bind(config.server.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", config.server.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    if let Some((account, secret)) = bootstrap(&store)? {
        print_first_run(&account, &secret, addr, json_out);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| CliError(e.to_string()))?;
        tracing::info!(%addr, db = %store.path().display(), "whatan listening");
        if json_out {
            println!("{}", json!({"listening": addr.to_string()}));
        }
        crate::server::serve(config, store, listener, shutdown_signal())
            .await
            .map_err(CliError)
    })
}

/// Create a workspace, an owner, a connected sandbox account and a send
/// token in one transaction, if the database is empty. Returns the secret.
fn bootstrap(store: &Store) -> Result<Option<(admin::Account, String)>, CliError> {
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
        Ok(Some(account))
    })?;
    Ok(created.map(|a| (a, secret)))
}

fn print_first_run(
    account: &admin::Account,
    secret: &str,
    addr: std::net::SocketAddr,
    json_out: bool,
) {
    if json_out {
        println!(
            "{}",
            json!({"firstRun": {"workspace": account.workspace, "user": account.user,
                   "account": account.id, "phone": account.phone, "token": secret}})
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
         and see what the sandbox delivered with: whatan sandbox outbox\n",
        phone = account.phone
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("signal received");
}
