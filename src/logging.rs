//! Where log lines go and how they look: stderr, as text for people or one
//! JSON object per line (`log.format`), filtered by `WHATAN_LOG`, else
//! `log.level`, else `info` for `serve` and `warn` for the admin commands.
//!
//! Inside a request every line carries the request's span (`request_id`,
//! and `token_id` once the token is known); see `api::observe`.
//!
//! The WhatsApp Web client logs protocol traffic, message contents
//! included, at `debug`, and every retry of a connection (for minutes, when
//! WhatsApp cannot be reached) at `info`. Its targets are off unless the
//! filter names them itself: whatan reports what matters once, in its own
//! words, and `WHATAN_LOG=debug` stays free of message texts. The MCP
//! library (`rmcp`) is off for the same reasons: it logs each request, tool
//! arguments (message texts) included, at `debug`, and each stateless
//! request's start and end at `info`; `/mcp` has the access log like every
//! route.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Targets of the linked-device client and the MCP library (prefixes), off
/// unless named.
const CHATTY_TARGETS: &[&str] = &[
    "whatsapp_rust",
    "wacore",
    "waproto",
    "rmcp",
    // Logs every statement's parameters at debug: message texts, hashes.
    "tokio_postgres",
    "postgres",
];

/// Install the global subscriber; a second call does nothing.
pub fn init(log: &LogConfig, serving: bool) {
    let filter = filter(
        std::env::var("WHATAN_LOG").ok().as_deref(),
        log.level.as_deref(),
        serving,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        // Colours only for a terminal: journald and files get plain text.
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The filter from `WHATAN_LOG`, else `log.level`, else the default; a
/// `WHATAN_LOG` that does not parse falls back to the next (as before).
fn filter(env: Option<&str>, configured: Option<&str>, serving: bool) -> EnvFilter {
    let default = if serving { "info" } else { "warn" };
    let (text, filter) = [env, configured]
        .into_iter()
        .flatten()
        .find_map(|text| EnvFilter::try_new(text).ok().map(|f| (text, f)))
        .unwrap_or_else(|| (default, EnvFilter::new(default)));
    CHATTY_TARGETS
        .iter()
        .filter(|target| !text.contains(*target))
        .filter_map(|target| format!("{target}=off").parse().ok())
        .fold(filter, EnvFilter::add_directive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_and_the_web_client_stays_off_unless_named() {
        let f = filter(Some("debug"), Some("warn"), true).to_string();
        assert!(f.contains("debug"), "{f}");
        assert!(f.contains("whatsapp_rust=off"), "{f}");
        let f = filter(None, Some("whatsapp_rust=trace,info"), true).to_string();
        assert!(f.contains("whatsapp_rust=trace"), "{f}");
        assert!(!f.contains("whatsapp_rust=off"), "{f}");
        assert!(filter(None, None, false).to_string().contains("warn"));
    }
}
