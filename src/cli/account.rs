//! `account add|connect|disconnect|list`: the WhatsApp numbers a workspace
//! sends from. Connecting means something different per driver (a sandbox
//! phone switches on, a Cloud API number has its credentials checked, a
//! linked device is paired), so `connect` asks the driver before it writes.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{CliError, Context, Output};
use crate::domain::{AccountStatus, DriverKind, Phone};
use crate::store::admin;

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
    /// Mark offline; queued sends wait (up to pacing.offline_grace).
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

fn connect(ctx: &Context, id: String, pair_code: bool) -> Result<Output, CliError> {
    let account = ctx
        .store
        .read_blocking(|c| admin::get_account(c, &id))?
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
            crate::driver::web::link_account_blocking(&ctx.config, &account, pair_code, ctx.json)
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
    let account = ctx.store.write_blocking(move |c| {
        admin::set_account_status(c, &id, AccountStatus::Connected, detail.as_deref())
    })?;
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
    let account = ctx.store.write_blocking(move |c| {
        admin::set_account_status(
            c,
            &id,
            AccountStatus::Disconnected,
            Some("disconnected by an administrator"),
        )
    })?;
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
