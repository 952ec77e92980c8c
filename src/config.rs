//! Configuration: built-in defaults, then `whatan.toml`, then
//! `WHATAN_<SECTION>_<KEY>` environment variables, then command-line flags.
//!
//! Keys are checked by hand rather than through serde so that every error
//! names the key (`pacing.min_delay: invalid duration "5x"`) and unknown keys
//! stop start-up instead of being silently ignored.

mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use self::values::*;
pub use self::values::{format_duration, parse_duration};
use crate::media::MediaConfig;
use crate::store::retention::RetentionConfig;
use crate::webhooks::WebhooksConfig;

/// The commented example config; `whatan config example` prints it and a
/// test parses it, so it cannot drift from the keys below.
pub const EXAMPLE: &str = include_str!("../whatan.toml.example");

/// Every known key, by section.
const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "max_connections",
            "shutdown_timeout",
            "trusted_proxies",
            "public_url",
        ],
    ),
    ("log", &["level", "format"]),
    ("database", &["path", "url"]),
    (
        "pacing",
        &["min_delay", "max_delay", "daily_limit", "offline_grace"],
    ),
    ("sandbox", &["unreachable", "receipt_delay", "ack_delay"]),
    (
        "cloud",
        &["graph_base_url", "graph_version", "request_timeout"],
    ),
    (
        "media",
        &[
            "resolve",
            "extra_ca_file",
            "connect_timeout",
            "fetch_timeout",
            "max_image_bytes",
            "max_document_bytes",
            "unsafe_allow_networks_for_testing",
        ],
    ),
    ("retention", &["attempts"]),
    ("cluster", &["node_id", "lease_ttl"]),
    (
        "webhooks",
        &[
            "allow_networks",
            "timeout",
            "retry_schedule",
            "disable_after",
            "max_in_flight_per_endpoint",
            "poll_interval",
        ],
    ),
];

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub pacing: PacingConfig,
    pub sandbox: SandboxConfig,
    pub cloud: CloudConfig,
    pub media: MediaConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed (access log).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The base of every link the server prints (dashboard sign-in links),
    /// and the only `Origin` the dashboard accepts a form from; `None`:
    /// `http://<listen>`. An origin: scheme, host and port, no path.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `whatan=debug,warn`); `WHATAN_LOG` wins.
    /// `None`: `info` for `serve`, `warn` for the admin commands.
    pub level: Option<String>,
    pub format: LogFormat,
}

/// How stderr lines look: for people, or one JSON object each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The SQLite file (the default store).
    pub path: PathBuf,
    /// A PostgreSQL database instead of the file (`postgres://` or
    /// `postgresql://`, libpq's URL form).
    pub url: Option<String>,
}

/// Several nodes on one PostgreSQL database (cluster.md).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name in the leases; `None`: hostname and pid.
    pub node_id: Option<String>,
    /// How long a lease lasts unless renewed (every third of it).
    pub lease_ttl: Duration,
}

impl ClusterConfig {
    /// `node_id`, or `<hostname>-<pid>`.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "whatan".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[derive(Debug, Clone)]
pub struct PacingConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub daily_limit: i64,
    pub offline_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// E.164 numbers the simulated network reports as not on WhatsApp.
    pub unreachable: Vec<String>,
    pub receipt_delay: Duration,
    /// Simulated time the network takes to acknowledge a message.
    pub ack_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub graph_base_url: String,
    pub graph_version: String,
    pub request_timeout: Duration,
}

/// One line naming the key, for start-up failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: "127.0.0.1:8080".parse().expect("literal"),
                max_connections: 1024,
                shutdown_timeout: Duration::from_secs(30),
                trusted_proxies: Vec::new(),
                public_url: None,
            },
            log: LogConfig::default(),
            database: DatabaseConfig {
                path: PathBuf::from("whatan.db"),
                url: None,
            },
            pacing: PacingConfig {
                min_delay: Duration::from_secs(120),
                max_delay: Duration::from_secs(300),
                daily_limit: 100,
                offline_grace: Duration::from_secs(24 * 3600),
            },
            sandbox: SandboxConfig {
                unreachable: Vec::new(),
                receipt_delay: Duration::from_secs(2),
                ack_delay: Duration::ZERO,
            },
            cloud: CloudConfig {
                graph_base_url: "https://graph.facebook.com".into(),
                graph_version: "v23.0".into(),
                request_timeout: Duration::from_secs(30),
            },
            media: MediaConfig::default(),
            retention: RetentionConfig::default(),
            webhooks: WebhooksConfig::default(),
            cluster: ClusterConfig {
                node_id: None,
                lease_ttl: Duration::from_secs(15),
            },
        }
    }
}

impl Config {
    /// `server.public_url`, or `http://<listen>`: the base of the links
    /// the server and the CLI print, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.server.listen))
    }

    /// Load from an optional file and the given environment.
    /// With `file = None`, `./whatan.toml` is used if it exists.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = Table::new();
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("whatan.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            table = text.parse::<Table>().map_err(|e| {
                ConfigError(format!("{}: {}", path.display(), one_line(&e.to_string())))
            })?;
        }
        overlay_env(&mut table, env)?;
        Config::from_table(&table)
    }

    /// Parse a TOML document (used for the example file's test).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = text
            .parse::<Table>()
            .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        Config::from_table(&table)
    }

    fn from_table(table: &Table) -> Result<Config, ConfigError> {
        check_known_keys(table)?;
        let mut c = Config::default();
        let get = |section: &str, key: &str| -> Option<&Value> {
            table
                .get(section)
                .and_then(Value::as_table)
                .and_then(|t| t.get(key))
        };
        macro_rules! set {
            ($section:literal . $key:literal, $parse:expr, $target:expr) => {
                if let Some(v) = get($section, $key) {
                    $target = $parse(concat!($section, ".", $key), v)?;
                }
            };
        }
        set!("server"."listen", socket_addr, c.server.listen);
        set!("server"."max_connections", positive_usize, c.server.max_connections);
        set!("server"."shutdown_timeout", duration, c.server.shutdown_timeout);
        set!("server"."trusted_proxies", network_list, c.server.trusted_proxies);
        if let Some(v) = get("server", "public_url") {
            c.server.public_url = Some(public_url("server.public_url", v)?);
        }
        set!("log"."format", log_format, c.log.format);
        if let Some(v) = get("log", "level") {
            let level = as_str("log.level", v)?.trim().to_string();
            tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
                ConfigError(format!("log.level: {level:?} is not a log filter: {e}"))
            })?;
            c.log.level = (!level.is_empty()).then_some(level);
        }
        set!("database"."path", path_buf, c.database.path);
        if let Some(v) = get("database", "url") {
            if get("database", "path").is_some() {
                return Err(ConfigError(
                    "database.path and database.url are both set: the store is either the SQLite file (path) or PostgreSQL (url), set one"
                        .into(),
                ));
            }
            c.database.url = Some(postgres_url("database.url", v)?);
        }
        set!("pacing"."min_delay", duration, c.pacing.min_delay);
        set!("pacing"."max_delay", duration, c.pacing.max_delay);
        set!("pacing"."daily_limit", non_negative_i64, c.pacing.daily_limit);
        set!("pacing"."offline_grace", duration, c.pacing.offline_grace);
        set!("sandbox"."unreachable", phone_list, c.sandbox.unreachable);
        set!("sandbox"."receipt_delay", duration, c.sandbox.receipt_delay);
        set!("sandbox"."ack_delay", duration, c.sandbox.ack_delay);
        set!("cloud"."graph_base_url", http_url, c.cloud.graph_base_url);
        set!("cloud"."graph_version", graph_version, c.cloud.graph_version);
        set!("cloud"."request_timeout", duration, c.cloud.request_timeout);
        set!("media"."resolve", resolve_table, c.media.resolve);
        set!("media"."connect_timeout", duration, c.media.connect_timeout);
        set!("media"."fetch_timeout", duration, c.media.fetch_timeout);
        set!("media"."max_image_bytes", positive_u64, c.media.max_image_bytes);
        set!("media"."max_document_bytes", positive_u64, c.media.max_document_bytes);
        set!("media"."unsafe_allow_networks_for_testing", networks, c.media.unsafe_allow_networks_for_testing);
        set!("retention"."attempts", retention, c.retention.attempts);
        set!("webhooks"."allow_networks", network_list, c.webhooks.allow_networks);
        set!("webhooks"."timeout", duration, c.webhooks.timeout);
        set!("webhooks"."retry_schedule", duration_list, c.webhooks.retry_schedule);
        set!("webhooks"."disable_after", duration, c.webhooks.disable_after);
        set!("webhooks"."max_in_flight_per_endpoint", positive_usize, c.webhooks.max_in_flight_per_endpoint);
        set!("webhooks"."poll_interval", duration, c.webhooks.poll_interval);
        if let Some(v) = get("cluster", "node_id") {
            c.cluster.node_id = Some(node_id("cluster.node_id", v)?);
        }
        set!("cluster"."lease_ttl", duration, c.cluster.lease_ttl);
        if c.cluster.lease_ttl < crate::store::db::IDLE_IN_TRANSACTION_TIMEOUT {
            return Err(ConfigError(format!(
                "cluster.lease_ttl ({}) is below 2s: a node would spend its time renewing, and a frozen node could stall renewals for longer than a lease",
                format_duration(c.cluster.lease_ttl)
            )));
        }
        if let Some(v) = get("media", "extra_ca_file") {
            let p = path_buf("media.extra_ca_file", v)?;
            c.media.extra_ca_file = (!p.as_os_str().is_empty()).then_some(p);
        }
        if c.pacing.min_delay > c.pacing.max_delay {
            return Err(ConfigError(format!(
                "pacing.min_delay ({}) is greater than pacing.max_delay ({})",
                format_duration(c.pacing.min_delay),
                format_duration(c.pacing.max_delay)
            )));
        }
        Ok(c)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_known_keys(table: &Table) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some((_, keys)) = KEYS.iter().find(|(s, _)| s == section) else {
            return Err(ConfigError(format!("unknown section [{section}]")));
        };
        let Some(inner) = value.as_table() else {
            return Err(ConfigError(format!(
                "{section} must be a [{section}] table"
            )));
        };
        for key in inner.keys() {
            if !keys.contains(&key.as_str()) {
                return Err(ConfigError(format!("unknown key {section}.{key}")));
            }
        }
    }
    Ok(())
}

/// `WHATAN_*` variables that look like config keys but are not: the Cloud
/// API secrets `account add --driver cloud` reads (so they stay out of `ps`).
/// They are not settings of the server and must not end up in [`Config`].
const NOT_CONFIG_ENV: &[&str] = &["WHATAN_CLOUD_ACCESS_TOKEN", "WHATAN_CLOUD_APP_SECRET"];

/// `WHATAN_PACING_MIN_DELAY=10ms` sets `pacing.min_delay`. A value that
/// parses as a TOML value (a number, an array, an inline table) is taken as
/// such; anything else is a string. Variables of other prefixes are ignored;
/// an unknown key in a known section is an error, like in the file.
fn overlay_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        if NOT_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some(rest) = name.strip_prefix("WHATAN_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, keys)) = KEYS
            .iter()
            .find(|(s, _)| rest.starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        if !keys.contains(&key) {
            return Err(ConfigError(format!(
                "unknown key {section}.{key} (from {name})"
            )));
        }
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(Value::String(raw));
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            t.insert(key.to_string(), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whatan.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_example_file_parses_to_the_defaults_and_names_every_key() {
        let c = Config::from_toml(EXAMPLE).expect("example parses");
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.pacing.min_delay, d.pacing.min_delay);
        assert_eq!(c.pacing.max_delay, d.pacing.max_delay);
        assert_eq!(c.pacing.daily_limit, d.pacing.daily_limit);
        assert_eq!(c.pacing.offline_grace, d.pacing.offline_grace);
        assert_eq!(c.sandbox.receipt_delay, d.sandbox.receipt_delay);
        assert_eq!(c.cloud.graph_version, d.cloud.graph_version);
        assert_eq!(c.media.max_image_bytes, d.media.max_image_bytes);
        assert_eq!((c.retention.attempts, d.retention.attempts), (None, None));
        for (section, keys) in KEYS {
            assert!(
                EXAMPLE.contains(&format!("[{section}]")),
                "example lacks [{section}]"
            );
            for key in *keys {
                assert!(
                    EXAMPLE.lines().any(|l| l
                        .trim_start_matches('#')
                        .trim_start()
                        .starts_with(&format!("{key} ="))),
                    "example does not document {section}.{key}"
                );
            }
        }
    }

    #[test]
    fn trusted_proxies_and_log_settings_come_from_file_or_env() {
        let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[log]\nformat = \"json\"\nlevel = \"whatan=debug,warn\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.server.trusted_proxies,
            vec!["10.0.0.0/8".parse().unwrap()]
        );
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level.as_deref(), Some("whatan=debug,warn"));
        let c = load(
            "",
            &[
                ("WHATAN_SERVER_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
                ("WHATAN_LOG_FORMAT", "pretty"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.server.trusted_proxies,
            vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        assert_eq!(c.log.format, LogFormat::Pretty);
        for (env, key) in [
            ("WHATAN_LOG_FORMAT", "log.format"),
            ("WHATAN_SERVER_TRUSTED_PROXIES", "server.trusted_proxies"),
        ] {
            let err = load("", &[(env, "nonsense")]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn env_wins_over_file() {
        let c = load(
            "[pacing]\nmin_delay = \"1s\"\nmax_delay = \"2s\"\n",
            &[
                ("WHATAN_PACING_MIN_DELAY", "10ms"),
                ("WHATAN_PACING_DAILY_LIMIT", "7"),
                ("WHATAN_RETENTION_ATTEMPTS", "90d"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.retention.attempts, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.pacing.min_delay, Duration::from_millis(10));
        assert_eq!(c.pacing.max_delay, Duration::from_secs(2));
        assert_eq!(c.pacing.daily_limit, 7);
    }

    #[test]
    fn bad_config_names_the_key() {
        let cases = [
            ("[pacing]\nfoo = 1\n", "pacing.foo"),
            ("[nope]\n", "[nope]"),
            ("[pacing]\nmin_delay = \"5x\"\n", "pacing.min_delay"),
            (
                "[pacing]\nmin_delay = \"5m\"\nmax_delay = \"2m\"\n",
                "pacing.min_delay",
            ),
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[pacing]\ndaily_limit = -1\n", "pacing.daily_limit"),
            (
                "[media]\nresolve = { \"a.example\" = [\"not-ip\"] }\n",
                "media.resolve.a.example",
            ),
            (
                "[sandbox]\nunreachable = [\"123\"]\n",
                "sandbox.unreachable",
            ),
        ];
        for (text, key) in cases {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        let err = load("", &[("WHATAN_PACING_TYPO", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pacing.typo"), "{err}");
    }

    #[test]
    fn the_cloud_secret_variables_of_account_add_are_not_config_keys() {
        let config = load(
            "",
            &[
                ("WHATAN_CLOUD_ACCESS_TOKEN", "EAAG-secret"),
                ("WHATAN_CLOUD_APP_SECRET", "app-secret"),
            ],
        )
        .expect("not refused as unknown keys cloud.access_token / cloud.app_secret");
        assert!(!format!("{config:?}").contains("secret"));
        assert!(load("", &[("WHATAN_CLOUD_TYPO", "1")]).is_err());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
