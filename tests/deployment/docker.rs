//! The Dockerfile, the release profile and docker-compose.yml: the image's
//! dependency layer, and compose's healthchecks run against real services.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

use super::*;

#[test]
fn dockerfile_stubs_every_target_cargo_toml_declares() {
    // The dependency layer builds against stub sources; cargo refuses a
    // manifest whose declared bench or test file is missing, so a target
    // added without its stub breaks the image build.
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let mut targets: Vec<String> = vec!["src/main.rs".into(), "src/lib.rs".into()];
    for bench in manifest["bench"].as_array().expect("[[bench]]") {
        let name = bench["name"].as_str().expect("bench name");
        targets.push(match bench.get("path") {
            Some(path) => path.as_str().expect("path").to_owned(),
            None => format!("benches/{name}.rs"),
        });
    }
    for test in manifest["test"].as_array().expect("[[test]]") {
        targets.push(test["path"].as_str().expect("test path").to_owned());
    }
    let dockerfile = read("Dockerfile");
    let stub_step = dockerfile
        .split("\nRUN ")
        .find(|step| step.contains("fn main() {}"))
        .expect("a RUN step writing stubs");
    for target in &targets {
        assert!(
            stub_step.contains(target.as_str()),
            "the Dockerfile does not stub {target}"
        );
    }
    assert!(
        dockerfile.contains("HEALTHCHECK"),
        "the image checks itself"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    // Its exceptions are comments in the Dockerfile, each with its reason.
    let out = run(Command::new(tool("hadolint"))
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(repo().join("Dockerfile")));
    assert_success(&out, "hadolint Dockerfile");
}

#[test]
fn release_profile_strips_debug_info_and_release_debug_keeps_line_tables() {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let profiles = &manifest["profile"];
    assert_eq!(profiles["release"]["strip"].as_str(), Some("debuginfo"));
    assert_eq!(profiles["release"]["debug"].as_bool(), Some(false));
    let debug = &profiles["release-debug"];
    assert_eq!(debug["inherits"].as_str(), Some("release"));
    assert_eq!(debug["debug"].as_str(), Some("line-tables-only"));
    assert_eq!(debug["strip"].as_str(), Some("none"));
}

fn compose() -> Value {
    let mut documents = yaml_documents(&repo().join("docker-compose.yml"));
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

#[test]
fn compose_starts_services_only_after_their_dependencies_are_healthy() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let has_check = |name: &str| {
        let check = &services[name]["healthcheck"];
        check.is_object() && check["disable"] != true
    };
    let mut waits = 0;
    for (name, service) in services {
        let Some(needs) = service["depends_on"].as_object() else {
            assert!(
                service["depends_on"].is_null(),
                "{name}: depends_on with conditions"
            );
            continue;
        };
        for (dependency, condition) in needs {
            let expected = if has_check(dependency) {
                "service_healthy"
            } else {
                "service_completed_successfully"
            };
            assert_eq!(
                condition["condition"], expected,
                "{name} waits for {dependency}"
            );
            waits += 1;
        }
    }
    assert!(
        waits >= 6,
        "the replicas and Prometheus wait for their dependencies"
    );
    for name in [
        "redis",
        "backend",
        "portcullis-1",
        "portcullis-2",
        "prometheus",
    ] {
        assert!(has_check(name), "{name} has a healthcheck");
    }
}

/// A healthcheck's command as argv (`CMD …`) or a shell line (`CMD-SHELL`).
fn healthcheck(service: &str) -> Vec<String> {
    let test = compose()["services"][service]["healthcheck"]["test"].clone();
    let test: Vec<String> = serde_json::from_value(test).expect("a test list");
    match test[0].as_str() {
        "CMD" => test[1..].to_vec(),
        "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), test[1].clone()],
        other => panic!("{service}: healthcheck {other}"),
    }
}

fn passes(argv: &[String], env: &[(&str, &str)]) -> bool {
    let binary = env!("CARGO_BIN_EXE_portcullis");
    let program = if argv[0] == "portcullis" {
        binary
    } else {
        &argv[0]
    };
    run(Command::new(program)
        .args(&argv[1..])
        .envs(env.iter().copied())
        .env_remove("PORTCULLIS_ADMIN_TOKEN"))
    .status
    .success()
}

/// Runs `check` until it passes (the server is still starting), at most
/// for a bound that only stops a broken test from hanging.
fn passes_soon(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn compose_healthchecks_pass_on_running_services_and_fail_without_them() {
    // The gateway's: the image's PORTCULLIS_ADMIN_URL, here the test
    // gateway's admin listener.
    let argv = healthcheck("portcullis-1");
    let dockerfile = read("Dockerfile");
    let image_check = format!("CMD [\"{}\"]", argv.join("\", \""));
    assert!(
        dockerfile.contains(&image_check),
        "the image runs the same check"
    );
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let url = format!("http://{}", gateway.admin);
    let env = [("PORTCULLIS_ADMIN_URL", url.as_str())];
    assert!(
        passes_soon(|| passes(&argv, &env)),
        "{argv:?} on a ready gateway"
    );
    drop(gateway);
    assert!(!passes(&argv, &env), "{argv:?} with no gateway");

    // The demo backend's: one request over bash's /dev/tcp.
    let addr = crate::support::gateway::free_addr();
    let argv: Vec<String> = healthcheck("backend")
        .iter()
        .map(|arg| arg.replace("127.0.0.1/8081", &format!("127.0.0.1/{}", addr.port())))
        .collect();
    // Not waited for: the healthcheck itself is what polls.
    let backend = crate::support::binary::RunningBinary::portcullis(
        &["demo-backend", "--listen", &addr.to_string()],
        "warn",
        false,
    );
    let up = passes_soon(|| passes(&argv, &[]));
    drop(backend);
    assert!(up, "{argv:?} on a running demo backend");
    assert!(!passes(&argv, &[]), "{argv:?} with no backend");

    // Redis's, against the test harness's redis-server.
    let mut redis = crate::support::redis::RedisServer::start();
    let argv: Vec<String> = healthcheck("redis")
        .iter()
        .map(|arg| {
            arg.replace(
                "redis-cli ",
                &format!("redis-cli -p {} ", redis.addr.port()),
            )
        })
        .collect();
    assert!(
        passes_soon(|| passes(&argv, &[])),
        "{argv:?} on a running redis"
    );
    redis.kill();
    assert!(!passes(&argv, &[]), "{argv:?} with no redis");
}

/// The build context leaves out build output and installed packages at any
/// depth, and nothing the Dockerfile copies.
#[test]
fn dockerignore_leaves_out_build_output_and_packages_but_nothing_copied() {
    let text = read(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    for needed in ["**/target", "**/node_modules", ".git/"] {
        assert!(patterns.contains(&needed), "{needed} in .dockerignore");
    }
    let dockerfile = read("Dockerfile");
    // Every COPY's sources: all its words but the destination.
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from="))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(copied.contains(&"src"), "{copied:?}");
    for source in &copied {
        for pattern in &patterns {
            // The patterns here name a folder at any depth, `.git/`, or a
            // suffix (`*.db`).
            let name = pattern.trim_start_matches("**/").trim_end_matches('/');
            let hit = match name.strip_prefix('*') {
                Some(suffix) => source.ends_with(suffix.trim_end_matches('*')),
                None => source.split('/').any(|part| part == name),
            };
            assert!(
                !hit,
                "{pattern} leaves out {source}, which the Dockerfile copies"
            );
        }
    }
}
