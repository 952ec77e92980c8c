//! Guards for the unit tests of `resolve` and `fetch`: every name they use
//! is in a static resolve table, so no test asks a real resolver.

use std::net::IpAddr;
use std::time::Duration;

use super::{MediaConfig, MediaGuard};

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn guard_with(table: &[(&str, &[&str])], allow: &[&str]) -> MediaGuard {
    let resolve = table
        .iter()
        .map(|(host, addrs)| ((*host).to_owned(), addrs.iter().map(|a| ip(a)).collect()))
        .collect();
    MediaGuard::new(MediaConfig {
        resolve,
        unsafe_allow_networks_for_testing: allow.iter().map(|n| n.parse().unwrap()).collect(),
        connect_timeout: Duration::from_secs(2),
        ..MediaConfig::default()
    })
    .unwrap()
}

pub(super) fn table_guard() -> MediaGuard {
    guard_with(
        &[
            ("private.test", &["10.0.0.1"]),
            ("mixed.test", &["93.184.215.14", "10.0.0.1"]),
            ("mixed6.test", &["93.184.215.14", "fd00::1"]),
            ("mapped.test", &["::ffff:93.184.215.14"]),
            (
                "Public.TEST.",
                &["93.184.215.14", "2606:2800:220:1::1", "93.184.215.14"],
            ),
            ("bücher.example", &["93.184.215.14"]),
            ("empty.test", &[]),
            ("loop.test", &["127.0.0.1"]),
            ("meta.test", &["169.254.169.254"]),
        ],
        &[],
    )
}
