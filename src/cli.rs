//! The command line: `serve` and the admin subcommands of `admin-cli.md`.
//! Every command prints one JSON value with `--json`, human text otherwise,
//! and exits non-zero with a one-line reason on stderr when it fails.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::config::{parse_duration, Config};
use crate::domain::token::{self, TokenKind};
use crate::domain::{DriverKind, Phone, Role};
use crate::store::{admin, outbox, Store, StoreError};

#[derive(Parser, Debug)]
#[command(
    name = "whatan",
    version,
    about = "Self-hosted WhatsApp Send API server"
)]
pub struct Cli {
    /// Config file (default: ./whatan.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database file; overrides database.path.
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// Print exactly one JSON value on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API and the delivery engine until SIGINT/SIGTERM.
    Serve {
        /// Listen address; overrides server.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    #[command(subcommand)]
    User(UserCmd),
    #[command(subcommand)]
    Account(AccountCmd),
    #[command(subcommand)]
    Token(TokenCmd),
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    Create { name: String },
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    Add {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        name: String,
        /// owner, admin or member.
        #[arg(long)]
        role: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    Add(AccountAdd),
    /// Connect (sandbox: switch the phone on).
    Connect {
        id: String,
        /// Web accounts: link with an 8-character pair code instead of a QR code.
        #[arg(long)]
        pair_code: bool,
    },
    /// Take offline until `account connect`; queued sends wait (up to
    /// pacing.offline_grace).
    Disconnect {
        id: String,
    },
    List,
}

#[derive(Args, Debug)]
pub struct AccountAdd {
    #[arg(long)]
    pub workspace: String,
    #[arg(long)]
    pub user: String,
    /// International format, e.g. +917000000001.
    #[arg(long)]
    pub phone: String,
    /// sandbox, cloud or web.
    #[arg(long, default_value = "sandbox")]
    pub driver: String,
    /// Cloud API: the phone number id.
    #[arg(long)]
    pub phone_number_id: Option<String>,
    /// Cloud API: the access token (stored, never printed back).
    #[arg(long)]
    pub access_token: Option<String>,
    /// Cloud API: the app secret that signs webhooks.
    #[arg(long)]
    pub app_secret: Option<String>,
    /// Cloud API: the webhook verify token you enter in Meta's dashboard.
    #[arg(long)]
    pub verify_token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: Option<String>,
        /// e.g. 90d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
        /// send (Send API) or mcp.
        #[arg(long, default_value = "send")]
        kind: String,
    },
    Revoke {
        id: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// What the simulated network delivered.
    Outbox,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the commented example config.
    Example,
}

/// A failed command: one line for stderr.
#[derive(Debug)]
pub struct CliError(pub String);

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError(e.to_string())
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Serve { .. }));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            eprintln!("whatan: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// The WhatsApp Web library's own crates. Their logs are off unless
/// `WHATAN_LOG` asks for them: the library logs every retry of a connection
/// (for minutes, when WhatsApp cannot be reached), while whatan reports what
/// matters once, in its own words.
const LIBRARY_LOGS_OFF: &str = "whatsapp_rust=off,wacore=off,waproto=off";

fn init_tracing(serving: bool) {
    let default = if serving {
        format!("info,{LIBRARY_LOGS_OFF}")
    } else {
        format!("warn,{LIBRARY_LOGS_OFF}")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHATAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(db) = &cli.db {
        config.database.path = db.clone();
    }
    Ok(config)
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Config(ConfigCmd::Example) = cli.command {
        print!("{}", crate::config::EXAMPLE);
        return Ok(());
    }
    let mut config = load_config(&cli)?;
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        config.server.listen = listen.parse().map_err(|_| {
            CliError(format!(
                "--listen: {listen:?} is not an address like 127.0.0.1:8080"
            ))
        })?;
    }
    let store = Store::open(&config.database.path)?;
    let json_out = cli.json;
    let print = |value: Value, human: String| {
        if json_out {
            println!("{value}");
        } else {
            println!("{human}");
        }
    };
    match cli.command {
        Command::Serve { .. } => serve(config, store, json_out),
        Command::Config(_) => Ok(()),
        Command::Workspace(WorkspaceCmd::Create { name }) => {
            let ws = store.write_blocking(move |c| admin::create_workspace(c, &name))?;
            print(
                json!({"id": ws.id, "name": ws.name}),
                format!("created workspace {} ({})", ws.id, ws.name),
            );
            Ok(())
        }
        Command::Workspace(WorkspaceCmd::List) => {
            let all = store.read_blocking(admin::list_workspaces)?;
            let human = all
                .iter()
                .map(|w| format!("{}  {}", w.id, w.name))
                .collect::<Vec<_>>()
                .join("\n");
            print(serde_json::to_value(&all).unwrap_or_default(), human);
            Ok(())
        }
        Command::User(UserCmd::Add {
            workspace,
            name,
            role,
        }) => {
            let role = Role::parse(&role).ok_or_else(|| {
                CliError(format!("bad role {role:?}: use owner, admin or member"))
            })?;
            let user =
                store.write_blocking(move |c| admin::add_user(c, &workspace, &name, role))?;
            print(
                json!({"id": user.id, "workspace": user.workspace, "name": user.name, "role": user.role}),
                format!(
                    "created {} {} ({}) in {}",
                    user.role, user.id, user.name, user.workspace
                ),
            );
            Ok(())
        }
        Command::User(UserCmd::List) => {
            let all = store.read_blocking(admin::list_users)?;
            let human = all
                .iter()
                .map(|u| format!("{}  {}  {}  {}", u.id, u.workspace, u.role, u.name))
                .collect::<Vec<_>>()
                .join("\n");
            print(serde_json::to_value(&all).unwrap_or_default(), human);
            Ok(())
        }
        Command::Account(AccountCmd::Add(add)) => {
            let account = add_account(&store, add)?;
            print(
                account_json(&account),
                format!(
                    "added {} account {} ({}), {}",
                    account.driver, account.id, account.phone, account.status
                ),
            );
            Ok(())
        }
        Command::Account(AccountCmd::Connect { id, pair_code }) => {
            let account = store
                .read_blocking(|c| admin::get_account(c, &id))?
                .ok_or_else(|| CliError(format!("unknown account {id}")))?;
            // A sandbox phone switches on at once; a cloud account is connected
            // only once Meta's phone number endpoint accepts its credentials.
            let detail = match account.driver_kind() {
                DriverKind::Sandbox => None,
                DriverKind::Cloud => Some(
                    crate::driver::cloud::verify_credentials_blocking(&config.cloud, &account)
                        .map_err(|reason| CliError(format!("account {id}: {reason}")))?,
                ),
                // A web account is connected once its phone is linked (QR or
                // pair code shown here; the running server picks the session up).
                #[cfg(feature = "web")]
                DriverKind::Web => Some(
                    crate::driver::web::link_account_blocking(
                        &config, &account, pair_code, json_out,
                    )
                    .map_err(|reason| CliError(format!("account {id}: {reason}")))?,
                ),
                #[cfg(not(feature = "web"))]
                DriverKind::Web => {
                    let _ = pair_code;
                    return Err(CliError(format!(
                        "account {id} uses the web driver, but this build of whatan has no linked-device support (built without the `web` feature)"
                    )));
                }
            };
            let account = store
                .write_blocking(move |c| admin::connect_by_operator(c, &id, detail.as_deref()))?;
            let verified = account
                .status_detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            print(
                json!({"id": account.id, "status": account.status}),
                format!(
                    "account {} ({}) is {}{verified}",
                    account.id, account.phone, account.status
                ),
            );
            Ok(())
        }
        Command::Account(AccountCmd::Disconnect { id }) => {
            // Held until `account connect`, whatever the driver reports; a
            // running server stops the account's linked device.
            let account = store.write_blocking(move |c| admin::disconnect_by_operator(c, &id))?;
            print(
                json!({"id": account.id, "status": account.status}),
                format!(
                    "account {} ({}) is {}",
                    account.id, account.phone, account.status
                ),
            );
            Ok(())
        }
        Command::Account(AccountCmd::List) => {
            let all = store.read_blocking(admin::list_accounts)?;
            let human = all
                .iter()
                .map(|a| {
                    format!(
                        "{}  {}  {}  {}  user {}",
                        a.id, a.phone, a.driver, a.status, a.user
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(Value::Array(all.iter().map(account_json).collect()), human);
            Ok(())
        }
        Command::Token(TokenCmd::Create {
            user,
            name,
            expires_in,
            kind,
        }) => {
            let kind = TokenKind::parse(&kind)
                .ok_or_else(|| CliError(format!("bad token kind {kind:?}: use send or mcp")))?;
            let expires_at = match expires_in {
                None => None,
                Some(s) => {
                    let d = parse_duration(&s).filter(|d| !d.is_zero()).ok_or_else(|| {
                        CliError(format!(
                            "--expires-in: invalid duration {s:?} (e.g. 90d, 12h)"
                        ))
                    })?;
                    Some(now_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
                }
            };
            let new = token::generate(kind);
            let secret = new.secret.clone();
            let u = user.clone();
            let id = store.write_blocking(move |c| {
                admin::create_token(c, &u, kind, name.as_deref(), expires_at, &new)
            })?;
            print(
                json!({"id": id, "token": secret, "user": user, "kind": kind.as_str(),
                       "expiresAt": expires_at.map(crate::clock::rfc3339_ms)}),
                format!(
                    "created token {id} for {user}. Copy it now, it is not shown again:\n{secret}"
                ),
            );
            Ok(())
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            let i = id.clone();
            store.write_blocking(move |c| admin::revoke_token(c, &i))?;
            print(
                json!({"id": id, "revoked": true}),
                format!("revoked token {id}"),
            );
            Ok(())
        }
        Command::Token(TokenCmd::List) => {
            let all = store.read_blocking(admin::list_tokens)?;
            let human = all
                .iter()
                .map(|t| {
                    format!(
                        "{}  {}  {}  {}{}",
                        t.id,
                        t.user,
                        t.kind,
                        t.hint,
                        if t.revoked { "  (revoked)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(serde_json::to_value(&all).unwrap_or_default(), human);
            Ok(())
        }
        Command::Sandbox(SandboxCmd::Outbox) => {
            let all = store.read_blocking(outbox::list)?;
            let human = all
                .iter()
                .map(|e| {
                    format!(
                        "{}  {}  {} -> {}  {}  {}",
                        e.delivered_at, e.message_id, e.from, e.to, e.type_name, e.body
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(serde_json::to_value(&all).unwrap_or_default(), human);
            Ok(())
        }
    }
}

fn account_json(a: &admin::Account) -> Value {
    json!({
        "id": a.id, "phone": a.phone, "driver": a.driver, "status": a.status,
        "workspace": a.workspace, "user": a.user, "statusDetail": a.status_detail,
    })
}

fn add_account(store: &Store, add: AccountAdd) -> Result<admin::Account, CliError> {
    let phone =
        Phone::parse(&add.phone).map_err(|e| CliError(format!("phone {:?}: {e}", add.phone)))?;
    let driver = DriverKind::parse(&add.driver).ok_or_else(|| {
        CliError(format!(
            "bad driver {:?}: use sandbox, cloud or web",
            add.driver
        ))
    })?;
    let settings = match driver {
        DriverKind::Cloud => {
            let need = |v: &Option<String>, flag: &str| {
                v.clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| CliError(format!("a cloud account needs --{flag}")))
            };
            json!({
                "phone_number_id": need(&add.phone_number_id, "phone-number-id")?,
                "access_token": need(&add.access_token, "access-token")?,
                "app_secret": need(&add.app_secret, "app-secret")?,
                "verify_token": need(&add.verify_token, "verify-token")?,
            })
        }
        _ => {
            if add.phone_number_id.is_some()
                || add.access_token.is_some()
                || add.app_secret.is_some()
                || add.verify_token.is_some()
            {
                return Err(CliError("--phone-number-id, --access-token, --app-secret and --verify-token are for --driver cloud".into()));
            }
            json!({})
        }
    };
    let (ws, user, e164) = (add.workspace, add.user, phone.e164().to_string());
    Ok(store
        .write_blocking(move |c| admin::add_account(c, &ws, &user, &e164, driver, &settings))?)
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

fn serve(config: Config, store: Store, json_out: bool) -> Result<(), CliError> {
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
