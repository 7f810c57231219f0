//! deploy/systemd: the unit through systemd-analyze, and its example
//! configuration through `check` with the unit's credentials and state.

use std::path::PathBuf;
use std::process::Command;

use crate::support::gateway::free_addr;

use super::*;

const UNIT: &str = "deploy/systemd/portcullis.service";
/// Where `cargo install --locked --path . --root /usr/local` puts it.
const INSTALLED_BINARY: &str = "/usr/local/bin/portcullis";

/// The unit in a folder of its own, starting the binary cargo built: the
/// installed path does not exist on a test machine, and systemd-analyze
/// refuses a unit whose command is missing.
fn unit_starting_the_built_binary() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.service");
    let text = replaced(
        &read(UNIT),
        &[(
            &format!("ExecStart={INSTALLED_BINARY} "),
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_portcullis")),
        )],
    );
    std::fs::write(&path, text).expect("write unit");
    (dir, path)
}

/// The values of `Key=` lines in the unit.
fn unit_values(key: &str) -> Vec<String> {
    read(UNIT)
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_starting_the_built_binary();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert_success(&out, "systemd-analyze verify");
    // An unknown key or a bad value is only a warning (exit 0): refuse it.
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );
    assert_eq!(
        unit_values("ExecReload"),
        ["/bin/kill -HUP $MAINPID"],
        "reload is the gateway's SIGHUP"
    );
}

#[test]
fn unit_exposure_stays_ok() {
    // systemd's own score of the sandbox: 0 (locked down) to 10 (none).
    // Past 2.0 a hardening option was lost.
    let (_dir, unit) = unit_starting_the_built_binary();
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit));
    assert_success(&out, "systemd-analyze security --threshold=20");
    for key in [
        "DynamicUser",
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
    ] {
        assert_eq!(unit_values(key), ["yes"], "{key}");
    }
    assert_eq!(unit_values("ProtectSystem"), ["strict"]);
    assert_eq!(
        unit_values("CapabilityBoundingSet"),
        [""],
        "no capabilities"
    );
    assert_eq!(unit_values("Restart"), ["on-failure"]);
}

#[test]
fn example_configuration_checks_with_the_units_credentials_and_state() {
    let text = read("deploy/systemd/portcullis.toml");
    let credentials = "/run/credentials/portcullis.service";
    // Every file the configuration reads from the credentials folder is a
    // credential the unit loads.
    let loaded: Vec<String> = unit_values("LoadCredential")
        .iter()
        .filter_map(|value| value.split_once(':').map(|(name, _)| name.to_owned()))
        .collect();
    let quoted = format!("\"{credentials}/");
    let read_there: Vec<&str> = text
        .match_indices(&quoted)
        .map(|(at, _)| {
            let rest = &text[at + quoted.len()..];
            &rest[..rest.find('"').expect("closing quote")]
        })
        .collect();
    assert_eq!(
        read_there.len(),
        2,
        "the key and the admin token: {read_there:?}"
    );
    for name in &read_there {
        assert!(loaded.iter().any(|l| l == name), "LoadCredential={name}:…");
    }
    // The SQLite store lives in the unit's StateDirectory.
    let state = unit_values("StateDirectory");
    assert_eq!(state.len(), 1);
    assert!(text.contains(&format!("url = \"sqlite:///var/lib/{}/", state[0])));
    // The stop timeout covers the drain.
    let config: toml::Table = text.parse().expect("TOML");
    let drain = seconds(&config["server"]["shutdown_grace"])
        + seconds(&config["server"]["shutdown_timeout"]);
    let stop = unit_values("TimeoutStopSec");
    let stop = humantime::parse_duration(&stop[0])
        .expect("TimeoutStopSec")
        .as_secs_f64();
    assert!(stop > drain, "TimeoutStopSec {stop} <= {drain}");

    let secrets = secrets();
    let store = tempfile::tempdir().expect("tempdir");
    let text = replaced(
        &text,
        &[
            (credentials, secrets.path().to_str().expect("utf-8")),
            ("/var/lib/portcullis", store.path().to_str().expect("utf-8")),
        ],
    );
    assert_success(
        &check(&text),
        "portcullis check on deploy/systemd/portcullis.toml",
    );
}

/// The unit's header says how to run `portcullis admin` with the root-only
/// token file: that line, with the credentials folder a test can read,
/// works against a gateway running the unit's configuration.
#[test]
fn the_units_admin_command_works_against_its_configuration() {
    let unit = read(UNIT);
    let documented = unit
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(str::trim)
        .find(|line| line.contains("portcullis admin "))
        .expect("the unit's header shows a `portcullis admin` command");
    assert!(
        !documented.contains("--token"),
        "a token in argv: {documented}"
    );
    let text = read("deploy/systemd/portcullis.toml");
    let default_url = "127.0.0.1:9090";
    assert!(text.contains(&format!("admin_listen = \"{default_url}\"")));
    let help = run(Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["admin", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains(&format!("http://{default_url}")));

    let secrets = secrets();
    // As `openssl rand -hex 32` makes it: a token a Bearer header carries
    // (the shared fixture's `!` is outside RFC 6750's token characters).
    std::fs::write(secrets.path().join("admin-token"), "5f".repeat(32)).expect("token");
    let store = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_addr(), free_addr());
    let folder = secrets.path().to_str().expect("utf-8");
    let config = replaced(
        &text,
        &[
            ("/run/credentials/portcullis.service", folder),
            ("/var/lib/portcullis", store.path().to_str().expect("utf-8")),
            ("0.0.0.0:8080", &listen.to_string()),
            (default_url, &admin.to_string()),
        ],
    );
    let config_path = store.path().join("portcullis.toml");
    std::fs::write(&config_path, config).expect("write config");
    let mut gateway = crate::support::binary::RunningBinary::portcullis(
        &["serve", "--config", config_path.to_str().expect("utf-8")],
        "warn",
        false,
    );
    gateway.wait_listening(admin);

    // As an operator without sudo in a test: the same file, read directly.
    let command = replaced(
        documented,
        &[
            ("sudo cat ", "cat "),
            ("/etc/portcullis/credentials", folder),
        ],
    );
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_portcullis"))
        .parent()
        .expect("folder");
    let path = format!("{}:/usr/bin:/bin", binary_dir.display());
    let out = run(Command::new("bash")
        .args(["-c", &command])
        .env("PATH", path)
        .env("PORTCULLIS_ADMIN_URL", format!("http://{admin}"))
        .env_remove("PORTCULLIS_ADMIN_TOKEN"));
    assert_success(&out, &command);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("alice is logged out everywhere"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(gateway);
}
