//! Linking a phone from the admin CLI (`account connect ID [--pair-code]`):
//! runs the pairing of `whatan-web` on a small runtime of its own and shows
//! its QR codes or pair code to the person holding the phone.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use whatan_web::{PairMode, PairingPrompt, QrStyle};

use super::Sessions;
use crate::config::Config;
use crate::store::admin::Account;
use crate::store::Store;

/// How long `account connect` waits for the phone.
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `account connect ID [--pair-code]` for a `web` account: link the phone
/// (QR code, or pair code), printing what to scan or type to stdout, or to
/// stderr with `--json` (whose stdout carries only the final object).
/// Returns the status detail to store; an account whose session is already
/// linked is not paired again.
pub fn link_account_blocking(
    config: &Config,
    store: &Store,
    account: &Account,
    pair_code: bool,
    json: bool,
) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let printer = PromptPrinter::new(json, account.phone.clone());
    runtime.block_on(link_account(config, store, account, pair_code, move |p| {
        printer.show(p)
    }))
}

/// Link a `web` account's phone, showing each prompt (QR code, pair code)
/// through `show`: the CLI prints them, the dashboard draws them. Returns
/// the status detail to store; an account whose session is already linked
/// is not paired again.
pub async fn link_account(
    config: &Config,
    store: &Store,
    account: &Account,
    pair_code: bool,
    show: impl Fn(PairingPrompt) + Send + Sync + 'static,
) -> Result<String, String> {
    let session = Sessions::of(store, &config.database.path)
        .open(&account.id, None)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(user) = whatan_web::linked_phone(&session)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(format!(
            "already linked (+{user}); `whatan serve` connects it"
        ));
    }
    let mode = if pair_code {
        PairMode::PairCode
    } else {
        PairMode::Qr
    };
    let linked = whatan_web::pair(
        &super::network(),
        &session,
        &account.phone,
        mode,
        show,
        PAIRING_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!("linked +{}", linked.phone_user))
}

/// Shows pairing prompts on stdout (human) or stderr (`--json`).
struct PromptPrinter {
    to_stderr: bool,
    terminal: bool,
    phone: String,
}

impl PromptPrinter {
    fn new(json: bool, phone: String) -> PromptPrinter {
        let terminal = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        PromptPrinter {
            to_stderr: json,
            terminal,
            phone,
        }
    }

    fn show(&self, prompt: PairingPrompt) {
        let text = prompt_text(&prompt, &self.phone, self.terminal);
        let written = if self.to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot show the pairing code");
        }
    }
}

/// What to print for a pairing prompt. On a terminal each new QR code
/// replaces the previous one (clear screen) and is drawn in explicit colours.
pub fn prompt_text(prompt: &PairingPrompt, phone: &str, terminal: bool) -> String {
    match prompt {
        PairingPrompt::QrCode { payload, valid_for } => {
            let style = if terminal { QrStyle::Ansi } else { QrStyle::Plain };
            let qr = whatan_web::render_qr(payload, style)
                .unwrap_or_else(|e| format!("{e}\nQR payload: {payload}\n"));
            format!(
                "{clear}On the phone of {phone}: WhatsApp > Settings > Linked devices > Link a device, \
                 and scan this code\n(it is replaced in about {}s; Ctrl-C to give up):\n\n{qr}\n",
                valid_for.as_secs(),
                clear = if terminal { "\x1b[2J\x1b[H" } else { "" },
            )
        }
        PairingPrompt::PairCode { code, valid_for } => format!(
            "On the phone of {phone}: WhatsApp > Settings > Linked devices > Link a device > \
             Link with phone number instead, and type this code (valid for about {} minutes):\n\n    {}\n\n",
            valid_for.as_secs().div_ceil(60).max(1),
            whatan_web::format_pair_code(code),
        ),
        PairingPrompt::QrCodesRenewing => {
            "The QR codes expired; getting new ones...\n".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_prompts_say_where_to_scan_or_type() {
        let qr = prompt_text(
            &PairingPrompt::QrCode {
                payload: "2@abc,def,ghi,jkl".into(),
                valid_for: Duration::from_secs(20),
            },
            "+917000000001",
            false,
        );
        assert!(qr.contains("Linked devices") && qr.contains("+917000000001"));
        assert!(qr.contains('█') && !qr.contains('\x1b'));
        let on_terminal = prompt_text(
            &PairingPrompt::QrCode {
                payload: "2@abc,def,ghi,jkl".into(),
                valid_for: Duration::from_secs(20),
            },
            "+917000000001",
            true,
        );
        assert!(on_terminal.starts_with("\x1b[2J\x1b[H"));
        let code = prompt_text(
            &PairingPrompt::PairCode {
                code: "ABCD1234".into(),
                valid_for: Duration::from_secs(180),
            },
            "+917000000001",
            false,
        );
        assert!(
            code.contains("ABCD-1234") && code.contains("about 3 minutes"),
            "{code}"
        );
    }
}
