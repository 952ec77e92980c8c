//! Value parsers of the config: each takes the key it reads, so that every
//! error names it (`pacing.min_delay: invalid duration "5x"`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use super::{ConfigError, LogFormat};
use crate::domain::Phone;

pub(super) fn as_str<'a>(key: &str, v: &'a Value) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| ConfigError(format!("{key} must be a string")))
}

/// `"250ms"`, `"10s"`, `"2m"`, `"1h"`, `"1d"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A duration, or `"forever"` (keep everything).
pub(super) fn retention(key: &str, v: &Value) -> Result<Option<Duration>, ConfigError> {
    (as_str(key, v)? != "forever")
        .then(|| duration(key, v))
        .transpose()
}

pub(super) fn duration(key: &str, v: &Value) -> Result<Duration, ConfigError> {
    let s = as_str(key, v)?;
    parse_duration(s).ok_or_else(|| {
        ConfigError(format!(
            "{key}: invalid duration {s:?} (use a whole number with ms, s, m, h or d, like \"250ms\" or \"2m\")"
        ))
    })
}

/// An array of durations, or one comma-separated string of them
/// (`WHATAN_WEBHOOKS_RETRY_SCHEDULE=5ms,10ms`); at least one.
pub(super) fn duration_list(key: &str, v: &Value) -> Result<Vec<Duration>, ConfigError> {
    let items: Vec<Value> = match v {
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect(),
        Value::Array(items) => items.clone(),
        _ => {
            return Err(ConfigError(format!(
                "{key}: expected an array of durations"
            )))
        }
    };
    if items.is_empty() {
        return Err(ConfigError(format!("{key}: needs at least one duration")));
    }
    items.iter().map(|item| duration(key, item)).collect()
}

pub(super) fn socket_addr(key: &str, v: &Value) -> Result<SocketAddr, ConfigError> {
    let s = as_str(key, v)?;
    s.parse().map_err(|_| {
        ConfigError(format!(
            "{key}: {s:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

pub(super) fn path_buf(key: &str, v: &Value) -> Result<PathBuf, ConfigError> {
    Ok(PathBuf::from(as_str(key, v)?))
}

pub(super) fn integer(key: &str, v: &Value) -> Result<i64, ConfigError> {
    match v {
        Value::Integer(i) => Ok(*i),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{key} must be a whole number, not {s:?}"))),
        _ => Err(ConfigError(format!("{key} must be a whole number"))),
    }
}

pub(super) fn non_negative_i64(key: &str, v: &Value) -> Result<i64, ConfigError> {
    let i = integer(key, v)?;
    if i < 0 {
        return Err(ConfigError(format!("{key} must not be negative")));
    }
    Ok(i)
}

pub(super) fn positive_usize(key: &str, v: &Value) -> Result<usize, ConfigError> {
    let i = integer(key, v)?;
    usize::try_from(i)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ConfigError(format!("{key} must be a positive whole number")))
}

pub(super) fn positive_u64(key: &str, v: &Value) -> Result<u64, ConfigError> {
    let i = integer(key, v)?;
    u64::try_from(i)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ConfigError(format!("{key} must be a positive whole number")))
}

pub(super) fn string_list<'a>(key: &str, v: &'a Value) -> Result<Vec<&'a str>, ConfigError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ConfigError(format!("{key} must be an array of strings")))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .ok_or_else(|| ConfigError(format!("{key} must be an array of strings")))
        })
        .collect()
}

pub(super) fn phone_list(key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    string_list(key, v)?
        .into_iter()
        .map(|s| {
            Phone::parse(s)
                .map(|p| p.e164().to_string())
                .map_err(|e| ConfigError(format!("{key}: {s:?}: {e}")))
        })
        .collect()
}

pub(super) fn http_url(key: &str, v: &Value) -> Result<String, ConfigError> {
    let s = as_str(key, v)?;
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(ConfigError(format!("{key}: {s:?} is not an http(s) URL"))),
    }
}

pub(super) fn graph_version(key: &str, v: &Value) -> Result<String, ConfigError> {
    let s = as_str(key, v)?;
    let ok = s.len() <= 10
        && s.starts_with('v')
        && s[1..]
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(ConfigError(format!(
            "{key}: {s:?} is not a Graph API version like \"v23.0\""
        )));
    }
    Ok(s.to_string())
}

pub(super) fn resolve_table(
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, Vec<IpAddr>>, ConfigError> {
    let t = v
        .as_table()
        .ok_or_else(|| ConfigError(format!("{key} must be a table of host = [addresses]")))?;
    let mut out = BTreeMap::new();
    for (host, addrs) in t {
        let list = string_list(&format!("{key}.{host}"), addrs)?
            .into_iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| ConfigError(format!("{key}.{host}: {a:?} is not an IP address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(host.trim_end_matches('.').to_ascii_lowercase(), list);
    }
    Ok(out)
}

/// `"pretty"` or `"json"`.
pub(super) fn log_format(key: &str, v: &Value) -> Result<LogFormat, ConfigError> {
    match as_str(key, v)? {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        other => Err(ConfigError(format!(
            "{key}: {other:?} is not \"pretty\" or \"json\""
        ))),
    }
}

/// An array of networks, or one comma-separated string of them (as the
/// environment gives it: `WHATAN_SERVER_TRUSTED_PROXIES=10.0.0.0/8,::1`).
pub(super) fn network_list(key: &str, v: &Value) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    match v {
        Value::String(s) => {
            let items: Vec<Value> = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect();
            networks(key, &Value::Array(items))
        }
        _ => networks(key, v),
    }
}

pub(super) fn networks(key: &str, v: &Value) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    string_list(key, v)?
        .into_iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError(format!("{key}: {s:?} is not a network like 127.0.0.1/32"))
                })
        })
        .collect()
}

/// `server.public_url`: an absolute `http` or `https` URL with a host and
/// no path, query or fragment (the dashboard is served at the root of its
/// host), returned as its origin (`https://whatan.example.com`).
pub(super) fn public_url(key: &str, v: &Value) -> Result<String, ConfigError> {
    let raw = as_str(key, v)?.trim();
    let bad = |why: &str| ConfigError(format!("{key}: {raw:?} {why}"));
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "must have no path, query or fragment: whatan is served at the root of its host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    Ok(url.origin().ascii_serialization())
}

/// `database.url`: a libpq-style `postgres://` or `postgresql://` URL. The
/// error never repeats the URL, which may carry a password.
pub(super) fn postgres_url(key: &str, v: &Value) -> Result<String, ConfigError> {
    let raw = as_str(key, v)?.trim();
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err(ConfigError(format!(
            "{key}: must be a postgres:// or postgresql:// URL"
        )));
    }
    let target =
        crate::store::pg_url::parse(raw).map_err(|e| ConfigError(format!("{key}: {e}")))?;
    let _: postgres::Config = target
        .url
        .parse()
        .map_err(|e| ConfigError(format!("{key}: not a PostgreSQL URL: {e}")))?;
    Ok(raw.to_string())
}

/// A node's name: 1 to 100 letters, digits, `.`, `_`, `-`.
pub(super) fn node_id(key: &str, v: &Value) -> Result<String, ConfigError> {
    let s = as_str(key, v)?;
    let ok = (1..=100).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ConfigError(format!(
            "{key}: {s:?} is not a node id (1 to 100 letters, digits, '.', '_' or '-')"
        )));
    }
    Ok(s.to_string())
}
