//! The command line: `serve` and the admin subcommands of `admin-cli.md`.
//! Every command prints one JSON value with `--json`, human text otherwise,
//! and exits non-zero with a one-line reason on stderr when it fails.
//!
//! This file holds what all commands share: the clap types, the dispatch and
//! the printing. Each admin command is a function in the module of its noun
//! (`workspace`, `user`, `account`, `token`, `sandbox`; `maintenance`
//! for `backup` and `prune`) that returns an
//! [`Output`] instead of printing, so the `--json` rule ("exactly one value
//! on stdout") is kept in one place, [`Output::print`]. `serve` runs until a
//! signal and prints as it goes, so it lives apart in `serve.rs`.

mod account;
mod maintenance;
mod sandbox;
mod serve;
mod token;
mod user;
mod webhook;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::Config;
use crate::store::{Store, StoreError};

pub use account::{AccountAdd, AccountCmd};

#[derive(Parser, Debug)]
#[command(
    name = "whatan",
    version,
    about = "Self-hosted WhatsApp Send API server"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes.
#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Config file (default: ./whatan.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database file; overrides database.path.
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// Print exactly one JSON value on stdout.
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Status webhooks to your endpoints (Standard Webhooks signatures).
    #[command(subcommand)]
    Webhook(WebhookCmd),
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Copy the database to FILE (consistent, while serve runs).
    Backup { file: PathBuf },
    /// Create or upgrade the database schema and print its version; with
    /// --from-sqlite, then copy that SQLite file into the (empty)
    /// PostgreSQL database set by database.url.
    Migrate {
        #[arg(long, value_name = "FILE")]
        from_sqlite: Option<PathBuf>,
    },
    /// Delete attempts final for longer than --older-than (e.g. 30d), with
    /// their Idempotency-Keys and sandbox records.
    Prune {
        #[arg(long)]
        older_than: String,
    },
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
    /// Print a one-time dashboard sign-in link for USER.
    LoginLink {
        user: String,
        /// How long the link works (e.g. 15m, 1h, 7d).
        #[arg(long, default_value = "15m")]
        expires_in: String,
    },
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
        /// send (Send API), mcp, or metrics (GET /metrics; owners only).
        #[arg(long, default_value = "send")]
        kind: String,
    },
    Revoke {
        id: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Add an endpoint; prints its signing secret, the only time it is shown.
    Add {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        url: String,
        /// Comma-separated event types (default: all).
        #[arg(long)]
        events: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(long)]
        workspace: Option<String>,
    },
    Remove {
        id: String,
    },
    /// A new secret; the old one also signs for 24 hours.
    RotateSecret {
        id: String,
    },
    /// Recent deliveries of an endpoint.
    Deliveries {
        id: String,
        #[arg(long)]
        failed: bool,
    },
    /// Queue a delivery's event again (same webhook-id).
    Redeliver {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// What the simulated network delivered.
    Outbox,
    /// The simulated phone scans the QR code the dashboard shows for
    /// sandbox account ACCOUNT: the account is connected.
    Scan { account: String },
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

/// What an admin command has to say once it succeeded: the value `--json`
/// prints, and the text a person reads otherwise.
#[derive(Debug)]
pub struct Output {
    pub json: Value,
    pub human: String,
}

impl Output {
    pub fn new(json: Value, human: impl Into<String>) -> Output {
        Output {
            json,
            human: human.into(),
        }
    }

    /// A `list` command: a JSON array, and one line per item for people.
    pub fn list<T>(
        items: &[T],
        item_json: impl Fn(&T) -> Value,
        to_line: impl Fn(&T) -> String,
    ) -> Output {
        Output {
            json: Value::Array(items.iter().map(item_json).collect()),
            human: items.iter().map(to_line).collect::<Vec<_>>().join("\n"),
        }
    }

    /// The one place an admin command writes to stdout.
    fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
        } else {
            println!("{}", self.human);
        }
    }
}

/// A stored record as the JSON `list` prints (the record types are
/// `Serialize`, with secrets skipped).
pub fn to_json<T: serde::Serialize>(record: &T) -> Value {
    serde_json::to_value(record).unwrap_or_default()
}

/// What an admin command works with: the loaded config, the open store, and
/// whether output is JSON (pairing a linked device prints prompts while it
/// runs, to stderr under `--json`).
pub struct Context {
    pub config: Config,
    pub store: Store,
    pub json: bool,
}

impl Context {
    fn open(global: &GlobalArgs) -> Result<Context, CliError> {
        let config = load_config(global)?;
        let store = Store::open_config(&config.database)?;
        Ok(Context {
            config,
            store,
            json: global.json,
        })
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A config that does not load is reported by the command itself; logs
    // then keep their defaults.
    let log = load_config(&cli.global).map(|c| c.log).unwrap_or_default();
    crate::logging::init(&log, matches!(cli.command, Command::Serve { .. }));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            eprintln!("whatan: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

pub fn load_config(global: &GlobalArgs) -> Result<Config, CliError> {
    let mut config = Config::load(global.config.as_deref(), std::env::vars())?;
    if let Some(db) = &global.db {
        if config.database.url.is_some() {
            return Err(CliError(
                "--db names a SQLite file, but database.url is set: the store is either the file or PostgreSQL, set one".into(),
            ));
        }
        config.database.path = db.clone();
    }
    Ok(config)
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { global, command } = cli;
    let output = match command {
        // Needs no config: it is how one starts writing a config. Printed
        // as is, since it is a file to save, not a value.
        Command::Config(ConfigCmd::Example) => {
            print!("{}", crate::config::EXAMPLE);
            return Ok(());
        }
        Command::Serve { listen } => {
            return serve::serve(load_config(&global)?, listen.as_deref(), global.json)
        }
        Command::Workspace(cmd) => workspace::run(&Context::open(&global)?, cmd)?,
        Command::User(cmd) => user::run(&Context::open(&global)?, cmd)?,
        Command::Account(cmd) => account::run(&Context::open(&global)?, cmd)?,
        Command::Token(cmd) => token::run(&Context::open(&global)?, cmd)?,
        Command::Sandbox(cmd) => sandbox::run(&Context::open(&global)?, cmd)?,
        Command::Webhook(cmd) => webhook::run(&Context::open(&global)?, cmd)?,
        Command::Backup { file } => maintenance::backup(&Context::open(&global)?, &file)?,
        Command::Migrate { from_sqlite } => {
            maintenance::migrate(&Context::open(&global)?, from_sqlite.as_deref())?
        }
        Command::Prune { older_than } => maintenance::prune(&Context::open(&global)?, &older_than)?,
    };
    output.print(global.json);
    Ok(())
}
