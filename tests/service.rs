//! `contrib/whatan.service` is a unit systemd accepts: `systemd-analyze
//! verify` finds no error and no warning in it, and it keeps the hardening
//! the operations spec promises.

#[allow(dead_code)]
#[path = "support/external_tool.rs"]
mod external_tool;

use std::process::Command;

const UNIT: &str = include_str!("../contrib/whatan.service");
const INSTALLED_BINARY: &str = "/usr/local/bin/whatan";

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = external_tool::find_or_skip(
        "systemd-analyze",
        "contrib/whatan.service with systemd-analyze verify",
    ) else {
        return;
    };
    // verify checks that ExecStart's program exists: point it at the binary
    // this build made instead of the installed path.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("whatan.service");
    assert!(UNIT.contains(INSTALLED_BINARY));
    std::fs::write(
        &unit,
        UNIT.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_whatan")),
    )
    .unwrap();

    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // An unknown or misspelt key is only a warning, with exit status 0.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_systemd_unit_keeps_its_hardening() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=whatan",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "KillSignal=SIGTERM",
        "UMask=0077",
    ] {
        assert!(lines.contains(&setting), "whatan.service lacks {setting}");
    }
    let exec = lines
        .iter()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart");
    assert!(
        exec.starts_with("ExecStart=/usr/local/bin/whatan --db /var/lib/whatan/whatan.db serve"),
        "{exec}"
    );
    assert!(lines.iter().any(|l| l.starts_with("TimeoutStopSec=")));
}
