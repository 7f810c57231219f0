//! deploy/systemd: the unit through systemd-analyze, and its example
//! configuration through `check` with the unit's credentials and state.

use std::path::PathBuf;
use std::process::Command;

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
