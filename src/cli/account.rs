//! `account add|connect|disconnect|list`: the WhatsApp numbers a workspace
//! sends from. Connecting means something different per driver (a sandbox
//! phone switches on, a Cloud API number has its credentials checked, a
//! linked device is paired), so `connect` asks the driver before it writes.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{CliError, Context, Output};
use crate::domain::{DriverKind, Phone};
use crate::store::admin;

// Parsed once per process: the size of the `Add` variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Cloud API: the access token (stored, never printed back). Visible
    /// in `ps` and shell history: prefer --access-token-file or
    /// WHATAN_CLOUD_ACCESS_TOKEN.
    #[arg(long, conflicts_with = "access_token_file")]
    pub access_token: Option<String>,
    /// Cloud API: read the access token from this file (`-`: stdin); a
    /// trailing newline is dropped.
    #[arg(long, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,
    /// Cloud API: the app secret that signs webhooks. Prefer
    /// --app-secret-file or WHATAN_CLOUD_APP_SECRET.
    #[arg(long, conflicts_with = "app_secret_file")]
    pub app_secret: Option<String>,
    /// Cloud API: read the app secret from this file (`-`: stdin); a
    /// trailing newline is dropped.
    #[arg(long, value_name = "FILE")]
    pub app_secret_file: Option<PathBuf>,
    /// Cloud API: the webhook verify token you enter in Meta's dashboard.
    #[arg(long)]
    pub verify_token: Option<String>,
}

pub fn run(ctx: &Context, cmd: AccountCmd) -> Result<Output, CliError> {
    match cmd {
        AccountCmd::Add(add) => add_account(ctx, add),
        AccountCmd::Connect { id, pair_code } => connect(ctx, id, pair_code),
        AccountCmd::Disconnect { id } => disconnect(ctx, id),
        AccountCmd::List => list(ctx),
    }
}

/// An account as `account add` and `account list` print it: never its
/// driver settings, which hold the Cloud API secrets.
fn account_json(a: &admin::Account) -> Value {
    json!({
        "id": a.id, "phone": a.phone, "driver": a.driver, "status": a.status,
        "workspace": a.workspace, "user": a.user, "statusDetail": a.status_detail,
    })
}

fn add_account(ctx: &Context, add: AccountAdd) -> Result<Output, CliError> {
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
            if add.access_token_file.as_deref() == Some(Path::new(STDIN))
                && add.app_secret_file.as_deref() == Some(Path::new(STDIN))
            {
                return Err(CliError(
                    "--access-token-file and --app-secret-file cannot both read stdin (-)".into(),
                ));
            }
            let access_token = cloud_secret(
                add.access_token,
                add.access_token_file.as_deref(),
                ACCESS_TOKEN_ENV,
            )?;
            let app_secret = cloud_secret(
                add.app_secret,
                add.app_secret_file.as_deref(),
                APP_SECRET_ENV,
            )?;
            let need = |v: Option<String>, what: &str| {
                v.filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| CliError(format!("a cloud account needs {what}")))
            };
            json!({
                "phone_number_id": need(add.phone_number_id, "--phone-number-id")?,
                "access_token": need(access_token, &format!("--access-token-file, {ACCESS_TOKEN_ENV} or --access-token"))?,
                "app_secret": need(app_secret, &format!("--app-secret-file, {APP_SECRET_ENV} or --app-secret"))?,
                "verify_token": need(add.verify_token, "--verify-token")?,
            })
        }
        // The environment variables are not checked here: they may be set
        // for a whole provisioning script that adds other accounts too.
        _ => {
            if add.phone_number_id.is_some()
                || add.access_token.is_some()
                || add.access_token_file.is_some()
                || add.app_secret.is_some()
                || add.app_secret_file.is_some()
                || add.verify_token.is_some()
            {
                return Err(CliError("--phone-number-id, --access-token(-file), --app-secret(-file) and --verify-token are for --driver cloud".into()));
            }
            json!({})
        }
    };
    let (ws, user, e164) = (add.workspace, add.user, phone.e164().to_string());
    let account = ctx
        .store
        .write_blocking(move |c| admin::add_account(c, &ws, &user, &e164, driver, &settings))?;
    Ok(Output::new(
        account_json(&account),
        format!(
            "added {} account {} ({}), {}",
            account.driver, account.id, account.phone, account.status
        ),
    ))
}

/// Where a Cloud API secret may come from besides its flags, so that it
/// stays out of `ps` and shell history.
const ACCESS_TOKEN_ENV: &str = "WHATAN_CLOUD_ACCESS_TOKEN";
const APP_SECRET_ENV: &str = "WHATAN_CLOUD_APP_SECRET";
/// The file name that means standard input.
const STDIN: &str = "-";
/// Secrets are short; a bigger file is a mistake (or `/dev/zero`).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A Cloud API secret, from the first of: its flag, its `-file` flag (clap
/// refuses both at once), its environment variable. What is given on the
/// command line wins over the environment, as flags win over `WHATAN_*`
/// variables for the config. Errors name the source, never the secret.
fn cloud_secret(
    flag: Option<String>,
    file: Option<&Path>,
    env: &str,
) -> Result<Option<String>, CliError> {
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(file) = file {
        return read_secret_file(file).map(Some);
    }
    match std::env::var(env) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(CliError(format!("{env} is not valid UTF-8")))
        }
    }
}

/// The whole of `file` (`-`: stdin) as text, without its trailing newline
/// (`echo`, editors and `printf '%s\n'` add one; a secret never ends in one).
fn read_secret_file(file: &Path) -> Result<String, CliError> {
    let stdin = file == Path::new(STDIN);
    let name = if stdin {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    let failed = |e: std::io::Error| CliError(format!("cannot read {name}: {e}"));
    let mut text = String::new();
    let read = if stdin {
        std::io::stdin()
            .lock()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_string(&mut text))
    };
    let bytes = read.map_err(failed)?;
    if bytes as u64 > MAX_SECRET_BYTES {
        return Err(CliError(format!(
            "{name} is over {MAX_SECRET_BYTES} bytes: not a secret"
        )));
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(trimmed.to_string())
}

fn connect(ctx: &Context, id: String, pair_code: bool) -> Result<Output, CliError> {
    let account = ctx
        .store
        .read_blocking({
            let id = id.clone();
            move |c| admin::get_account(c, &id)
        })?
        .ok_or_else(|| CliError(format!("unknown account {id}")))?;
    // A sandbox phone switches on at once; a cloud account is connected
    // only once Meta's phone number endpoint accepts its credentials.
    let detail = match account.driver_kind() {
        DriverKind::Sandbox => None,
        DriverKind::Cloud => Some(
            crate::driver::cloud::verify_credentials_blocking(&ctx.config.cloud, &account)
                .map_err(|reason| CliError(format!("account {id}: {reason}")))?,
        ),
        // A web account is connected once its phone is linked (QR or
        // pair code shown here; the running server picks the session up).
        #[cfg(feature = "web")]
        DriverKind::Web => Some(
            crate::driver::web::link_account_blocking(
                &ctx.config,
                &ctx.store,
                &account,
                pair_code,
                ctx.json,
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
    let account = ctx
        .store
        .write_blocking(move |c| admin::connect_by_operator(c, &id, detail.as_deref()))?;
    let verified = account
        .status_detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    Ok(Output::new(
        json!({"id": account.id, "status": account.status}),
        format!(
            "account {} ({}) is {}{verified}",
            account.id, account.phone, account.status
        ),
    ))
}

fn disconnect(ctx: &Context, id: String) -> Result<Output, CliError> {
    // Held until `account connect`, whatever the driver reports; a running
    // server stops the account's linked device.
    let account = ctx
        .store
        .write_blocking(move |c| admin::disconnect_by_operator(c, &id))?;
    Ok(Output::new(
        json!({"id": account.id, "status": account.status}),
        format!(
            "account {} ({}) is {}",
            account.id, account.phone, account.status
        ),
    ))
}

fn list(ctx: &Context) -> Result<Output, CliError> {
    let all = ctx.store.read_blocking(admin::list_accounts)?;
    Ok(Output::list(&all, account_json, |a| {
        format!(
            "{}  {}  {}  {}  user {}",
            a.id, a.phone, a.driver, a.status, a.user
        )
    }))
}
