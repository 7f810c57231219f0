//! The deployment files: docker-compose validates, and the same topology
//! run as processes on loopback honours a revocation across replicas; the
//! systemd unit, Kubernetes manifests, alert rules, dashboard, Dockerfile
//! and scripts each pass their platform's checker and agree with the
//! gateway they describe.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

mod docker;
mod kubernetes;
mod licence;
mod monitoring;
mod systemd;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_file_is_valid() {
    let out = run(Command::new("docker-compose")
        .args(["config", "-q"])
        .current_dir(repo()));
    assert!(
        out.status.success(),
        "docker-compose config -q: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the topology however the test ends.
struct Topology {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Topology {
    fn up() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(repo().join("scripts/topology.sh"))
            .args(["up", dir.path().to_str().expect("utf-8")])
            .env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis"))
            .output()
            .expect("topology.sh");
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let topology = Self { dir, env };
        assert!(
            out.status.success(),
            "topology.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        topology
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .expect("address")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/topology.sh"))
            .args(["down", self.dir.path().to_str().unwrap_or_default()])
            .status();
    }
}

#[test]
fn a_revocation_through_one_replica_is_honoured_by_the_other() {
    let topology = Topology::up();
    let (one, two) = (topology.addr("REPLICA_1"), topology.addr("REPLICA_2"));
    let login = post(
        one,
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        "username=alice&password=wonderland",
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let access = login.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert_eq!(
        get(two, "/echo", &[&bearer(&access)]).status,
        200,
        "replica 2 accepts replica 1's token"
    );

    let admin_token = topology.env["ADMIN_TOKEN"].clone();
    let revoke = send(
        topology.addr("ADMIN_1"),
        &format!("POST /admin/users/alice/revoke HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {admin_token}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(revoke.status, 200, "{}", revoke.text());
    // The promise of `max_staleness` (1 s): no request sent after it
    // admits the token (a replica that cannot confirm its view answers
    // 503: fail closed). How fast it arrives is a benchmark's figure.
    let started = Instant::now();
    loop {
        let sent = started.elapsed();
        let response = get(two, "/echo", &[&bearer(&access)]);
        if response.header("x-portcullis-error") == Some("token_revoked") {
            break;
        }
        if sent > Duration::from_secs(1) {
            assert_eq!(
                (response.status, response.header("x-portcullis-error")),
                (503, Some("auth_unavailable")),
                "replica 2 answered a request sent {sent:?} after the revocation"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the revocation never reached replica 2"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ----------------------------------------------------------------------
// The packaging: each shipped file is checked by the tool its platform
// uses, and against the gateway it describes.

/// A checker from the venv that scripts/test.sh makes (target/venv),
/// else from PATH.
fn tool(name: &str) -> PathBuf {
    let venv = repo().join("target/venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// Runs a checker; a missing one fails saying what to install.
fn run(command: &mut Command) -> Output {
    crate::support::tool::output(command)
}

#[track_caller]
fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, through PyYAML (installed with
/// kubernetes-validate).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = run(Command::new(tool("python3"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path));
    assert_success(
        &out,
        "reading YAML with PyYAML (scripts/test.sh installs it in target/venv)",
    );
    serde_json::from_slice(&out.stdout).expect("JSON from PyYAML")
}

/// `text` with each `from` replaced; each must occur, so a replacement
/// that silently stopped applying fails the test.
#[track_caller]
fn replaced(text: &str, replacements: &[(&str, &str)]) -> String {
    replacements
        .iter()
        .fold(text.to_owned(), |text, (from, to)| {
            assert!(text.contains(from), "{from:?} is not in the file any more");
            text.replace(from, to)
        })
}

/// `portcullis check` on configuration text, as an operator runs it.
fn check(text: &str) -> Output {
    check_with(text, &[])
}

/// `portcullis check` with more options (`--skip-files`).
fn check_with(text: &str, options: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).expect("write config");
    run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .args(options)
        .arg("--config")
        .arg(&path)
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env("RUST_LOG", "warn"))
}

/// A folder holding what a secret store hands the gateway, under the names
/// the systemd unit's credentials and the Kubernetes Secret use: a fresh
/// EdDSA key and an admin token.
fn secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "keygen",
            "--algorithm",
            "eddsa",
            "--kid",
            "generated",
            "--out",
        ])
        .arg(dir.path()));
    assert_success(&out, "keygen");
    std::fs::rename(
        dir.path().join("generated.pem"),
        dir.path().join("signing-key.pem"),
    )
    .expect("rename key");
    std::fs::write(
        dir.path().join("admin-token"),
        "an-admin-token-of-32-characters.",
    )
    .expect("token");
    dir
}

fn seconds(duration: &toml::Value) -> f64 {
    let text = duration.as_str().expect("a duration string");
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .as_secs_f64()
}

// --- Scripts

#[test]
fn the_readmes_two_commands_pass_shellcheck() {
    let out = run(Command::new("shellcheck").current_dir(repo()).args([
        "scripts/demo.sh",
        "scripts/test.sh",
        ".ci/run",
    ]));
    assert_success(&out, "shellcheck");
    let readme = read("README.md");
    for command in [
        "scripts/demo.sh",
        "scripts/test.sh",
        "cargo install --locked --path .",
    ] {
        assert!(readme.contains(command), "the README shows {command}");
    }
}
