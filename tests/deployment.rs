//! The deployment files: docker-compose validates, and the same topology
//! run as processes on loopback honours a revocation across replicas.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["config", "-q"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose is needed ({e}); scripts/test.sh installs Debian's package")
        });
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
    let started = Instant::now();
    loop {
        let response = get(two, "/echo", &[&bearer(&access)]);
        if response.header("x-portcullis-error") == Some("token_revoked") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica 2 still admits the token after the 1 s bound"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a checker; a missing one fails with where it comes from.
fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed ({e}); scripts/test.sh installs it"))
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
