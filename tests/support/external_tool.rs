//! Tests that drive a program from outside the project (nginx,
//! systemd-analyze) run it when it is installed. When it is not, the test
//! prints what it left out and passes, unless `WHATAN_TEST_REQUIRE_ALL=1`
//! (CI sets it after installing them), where a missing program fails it.

use std::path::{Path, PathBuf};

/// The program's path, searching `PATH` and the sbin directories (nginx
/// lives in /usr/sbin, which a non-root `PATH` often lacks); `None` after
/// printing what is skipped when it is absent and not required.
pub fn find_or_skip(program: &str, left_out: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p));
    available_or_skip(found.is_some(), &format!("{program} is"), left_out);
    found
}

/// `available`, after saying what is left out when it is not: fails under
/// `WHATAN_TEST_REQUIRE_ALL=1`, else prints a `SKIPPED:` line. `missing`
/// names what is absent, with its verb ("nginx is", "playwright-core (npm
/// ci --prefix tests/browser) is").
pub fn available_or_skip(available: bool, missing: &str, left_out: &str) -> bool {
    if !available {
        let required = std::env::var("WHATAN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{missing} not installed and WHATAN_TEST_REQUIRE_ALL=1: cannot check {left_out}"
        );
        eprintln!("SKIPPED: {missing} not installed; not checked: {left_out}");
    }
    available
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `python3` can import `module` (installed with `pip install
/// {package}`); when it cannot, prints what is left out, or fails under
/// `WHATAN_TEST_REQUIRE_ALL=1`.
pub fn python_module_or_skip(module: &str, package: &str, left_out: &str) -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    available_or_skip(
        available,
        &format!("python3 with {package} (pip install {package}) is"),
        left_out,
    )
}

/// Run `python3 ARGS` with `stdin` on its standard input; its output.
pub fn python_with_stdin(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut python = std::process::Command::new("python3");
    python.args(args);
    output_with_stdin(&mut python, stdin)
}

/// Run `cmd` with `stdin` on its standard input; its whole output.
pub fn output_with_stdin(cmd: &mut std::process::Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}
