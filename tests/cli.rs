//! The command line as a user runs it: `check`, `keygen`, the examples.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    if text.contains("\"signing.pem\"") {
        // A signing key of the config's own, readable by its owner only, so
        // `check` has no warning to print beside the errors under test.
        let key = dir.join("signing.pem");
        std::fs::copy(fixtures.join("test-eddsa.pem"), &key).expect("copy key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let path = dir.join("portcullis.toml");
    std::fs::write(
        &path,
        text.replace("{fixtures}", &fixtures.display().to_string()),
    )
    .expect("write");
    path
}

#[test]
fn every_example_configuration_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("PATH"),
                "prints the route table"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected example configurations in config/");
}

#[test]
fn a_typo_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nlisen = 3\n",
    );
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!("{}:3:1: unknown field `lisen`", path.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(
        err.contains("expected one of"),
        "lists the known keys: {err}"
    );
}

#[test]
fn a_bad_duration_points_at_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[tokens]\nissuer = \"i\"\naudience = \"a\"\nleeway = \"30 parsecs\"\n";
    let path = write_config(dir.path(), text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!("{}:4:10: invalid duration", path.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_cross_check_error_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("short.secret"), "too-short").expect("write");
    let text = r#"[tokens]
issuer = "https://issuer.test"
audience = "api"
signing_key = "nope"

[[tokens.keys]]
kid = "small-rsa"
algorithm = "RS256"
private_key_file = "{fixtures}/test-rs1024-too-small.pem"

[[tokens.keys]]
kid = "short"
algorithm = "HS256"
secret_file = "short.secret"

[[tokens.keys]]
kid = "wrong-alg"
algorithm = "ES256"
private_key_file = "{fixtures}/test-eddsa.pem"

[[upstreams]]
name = "legacy"
targets = ["127.0.0.1:8081"]

[[routes]]
path = "/a"
upstream = "legacy"

[[routes]]
path = "/a/"
upstream = "legacy"

[[routes]]
path = "/b"
upstream = "missing"

[[routes]]
path = "/c"
upstream = "legacy"
auth = "none"
roles = ["admin"]

[store]
url = "postgres://nope"
on_unavailable = "deny"
"#;
    let path = write_config(dir.path(), text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:4:15: signing key \"nope\" is not among [[tokens.keys]]"),
        format!("{file}:9:20: key \"small-rsa\" (RS256): RSA key has fewer than 2048 bits"),
        format!("{file}:14:15: key \"short\" (HS256): HS256 secret has 9 bytes; at least 32 are required"),
        format!("{file}:19:20: key \"wrong-alg\" (ES256): not a valid P-256 key"),
        format!("{file}:30:8: duplicate route"),
        format!("{file}:35:12: unknown upstream \"missing\""),
        format!("{file}:38:8: roles and scopes need auth"),
        format!("{file}:44:7: \"postgres://nope\": expected sqlite://PATH or redis://HOST:PORT/DB"),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&expected)), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn keygen_writes_private_keys_readable_by_the_owner_only_and_a_working_snippet() {
    for algorithm in ["eddsa", "es256", "rs256", "hs256"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let out = portcullis(&[
            "keygen",
            "--algorithm",
            algorithm,
            "--out",
            keys.to_str().expect("utf-8"),
            "--kid",
            "k1",
        ]);
        assert!(out.status.success(), "{algorithm}: {}", stderr(&out));
        let snippet = String::from_utf8_lossy(&out.stdout).into_owned();
        let private = std::fs::read_dir(&keys)
            .expect("keys dir")
            .map(|e| e.expect("entry").path())
            .find(|p| !p.to_string_lossy().ends_with(".pub.pem"))
            .expect("private key file");
        let mode = std::fs::metadata(&private)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{algorithm}: {}", private.display());

        let config = format!(
            "[tokens]\nissuer = \"i\"\naudience = \"a\"\nsigning_key = \"k1\"\n\n{snippet}\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n"
        );
        let path = write_config(dir.path(), &config);
        let check = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
        assert!(
            check.status.success(),
            "{algorithm}: generated snippet must load: {}",
            stderr(&check)
        );

        let again = portcullis(&[
            "keygen",
            "--algorithm",
            algorithm,
            "--out",
            keys.to_str().expect("utf-8"),
            "--kid",
            "k1",
        ]);
        assert!(
            !again.status.success(),
            "{algorithm}: keygen must never overwrite a key"
        );
    }
}

#[test]
fn roles_on_an_optional_route_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[tokens]\nissuer = \"i\"\naudience = \"a\"\n\n[[tokens.keys]]\nkid = \"k\"\nalgorithm = \"EdDSA\"\n\
                public_key_file = \"{fixtures}/test-eddsa.pub.pem\"\n\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n\n\
                [[routes]]\npath = \"/x\"\nupstream = \"u\"\nauth = \"optional\"\nroles = [\"admin\"]\n";
    let path = write_config(dir.path(), text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let expected = format!(
        "{}:15:8: roles and scopes need auth = \"required\"",
        path.display()
    );
    assert!(stderr(&out).starts_with(&expected), "{}", stderr(&out));
}

#[test]
fn algorithm_names_are_accepted_in_any_case_by_keygen_and_the_config() {
    for (spelling, configured) in [("EdDSA", "eddsa"), ("ES256", "es256"), ("rs256", "RS256")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let config_path = dir.path().join("portcullis.toml");
        let out = portcullis(&[
            "keygen",
            "--algorithm",
            spelling,
            "--out",
            keys.to_str().expect("utf-8"),
            "--kid",
            "k1",
            "--config",
            config_path.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{spelling}: {}", stderr(&out));
        // The printed entry, with the algorithm spelled another way.
        let snippet: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| match line.starts_with("algorithm = ") {
                true => format!("algorithm = \"{configured}\"\n"),
                false => format!("{line}\n"),
            })
            .collect();
        let config = format!(
            "[tokens]\nissuer = \"i\"\naudience = \"a\"\nsigning_key = \"k1\"\n\n{snippet}\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n"
        );
        std::fs::write(&config_path, config).expect("write");
        let check = portcullis(&["check", "--config", config_path.to_str().expect("utf-8")]);
        assert!(check.status.success(), "{configured}: {}", stderr(&check));
    }
    let unknown = portcullis(&["keygen", "--algorithm", "ed448", "--out", "/nonexistent"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("expected EdDSA, ES256, RS256 or HS256"));
}

/// The configuration reads key paths relative to its own folder, so keygen
/// names the key relative to the config it is told about, and absolutely
/// otherwise — never relative to the shell's current directory.
#[test]
fn keygen_names_the_key_as_the_config_will_read_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let keygen = |out: &str, config: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.current_dir(elsewhere.path()).args([
            "keygen",
            "--algorithm",
            "eddsa",
            "--out",
            out,
        ]);
        if let Some(config) = config {
            command.args(["--config", config.to_str().expect("utf-8")]);
        }
        let out = command.output().expect("keygen");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let config = dir.path().join("portcullis.toml");
    let inside = keygen(
        dir.path().join("keys").to_str().expect("utf-8"),
        Some(&config),
    );
    assert!(inside.contains("private_key_file = \"keys/"), "{inside}");

    let relative = keygen("local-keys", None);
    let expected = format!(
        "private_key_file = \"{}/local-keys/",
        elsewhere.path().display()
    );
    assert!(relative.contains(&expected), "{relative}");

    // Both arguments relative, as the README's Quick start types them: the
    // configuration's folder is the current one.
    let both_relative = keygen("keys", Some(Path::new("portcullis.toml")));
    assert!(
        both_relative.contains("private_key_file = \"keys/"),
        "{both_relative}"
    );
    // The same folder reached two ways still counts as inside.
    let name = elsewhere
        .path()
        .file_name()
        .expect("name")
        .to_str()
        .expect("utf-8");
    let roundabout = keygen(
        "./more-keys",
        Some(&Path::new("..").join(name).join("portcullis.toml")),
    );
    assert!(
        roundabout.contains("private_key_file = \"more-keys/"),
        "{roundabout}"
    );
    let outside = keygen("outside", Some(&dir.path().join("portcullis.toml")));
    assert!(
        outside.contains(&expected.replace("local-keys", "outside")),
        "{outside}"
    );
}

/// Keys other tools read: OpenSSL 3 parses each private key and derives
/// the public key keygen wrote beside it, and PyJWT signs with the private
/// key a token that verifies with that public key (RFC 8410's PKCS#8 v1
/// form for EdDSA; the v2 form is one OpenSSL 3 and PyJWT refuse).
#[test]
fn keygen_writes_keys_openssl_and_pyjwt_read() {
    for (algorithm, jose) in [("eddsa", "EdDSA"), ("es256", "ES256"), ("rs256", "RS256")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = portcullis(&[
            "keygen",
            "--algorithm",
            algorithm,
            "--out",
            dir.path().to_str().expect("utf-8"),
            "--kid",
            "k1",
        ]);
        assert!(out.status.success(), "{algorithm}: {}", stderr(&out));
        let (private, public) = (dir.path().join("k1.pem"), dir.path().join("k1.pub.pem"));
        let derived = external(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private),
        );
        assert!(
            derived.status.success(),
            "{algorithm}: openssl pkey: {}",
            stderr(&derived)
        );
        assert_eq!(
            String::from_utf8_lossy(&derived.stdout),
            std::fs::read_to_string(&public).expect("public key"),
            "{algorithm}: OpenSSL derives the public key keygen wrote"
        );
        let pyjwt = external(
            Command::new(venv_python())
                .args(["-c", PYJWT_ROUND_TRIP, jose])
                .args([&private, &public]),
        );
        let said = stderr(&pyjwt);
        assert!(
            !said.contains("ModuleNotFoundError"),
            "PyJWT or cryptography is missing from target/venv: install them \
             (scripts/test.sh does, pinned): {said}"
        );
        assert!(pyjwt.status.success(), "{algorithm}: PyJWT: {said}");
        assert_eq!(String::from_utf8_lossy(&pyjwt.stdout).trim(), "k1-subject");
    }
}

/// Signs with the private key, verifies with the public one, prints `sub`.
const PYJWT_ROUND_TRIP: &str = "import sys, jwt
alg, private, public = sys.argv[1:4]
token = jwt.encode({'sub': 'k1-subject'}, open(private).read(), algorithm=alg)
print(jwt.decode(token, open(public).read(), algorithms=[alg])['sub'])";

/// The venv scripts/test.sh makes holds PyJWT and cryptography.
fn venv_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python3");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test.sh makes it with PyJWT and cryptography",
        venv.display()
    );
    venv
}

/// Runs a tool the test needs; a missing one fails saying what to install.
fn external(command: &mut Command) -> Output {
    crate::support::tool::output(command)
}

#[test]
fn a_fixture_or_world_readable_signing_key_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = r#"[tokens]
issuer = "i"
audience = "a"
signing_key = "k1"

[[tokens.keys]]
kid = "k1"
algorithm = "EdDSA"
private_key_file = "{fixtures}/test-eddsa.pem"

[[upstreams]]
name = "u"
targets = ["127.0.0.1:1"]
"#;
    let path = write_config(dir.path(), fixture);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .output()
        .expect("check");
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("signing key is a public test fixture"),
        "{}",
        stderr(&out)
    );

    let keys = dir.path().join("keys");
    let snippet = portcullis(&[
        "keygen",
        "--algorithm",
        "eddsa",
        "--out",
        keys.to_str().expect("utf-8"),
        "--kid",
        "k1",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    let own = format!(
        "[tokens]\nissuer = \"i\"\naudience = \"a\"\nsigning_key = \"k1\"\n\n{}\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n",
        String::from_utf8_lossy(&snippet.stdout)
    );
    std::fs::write(&path, own).expect("write");
    let quiet = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .output()
        .expect("check");
    assert!(
        !stderr(&quiet).contains("signing key"),
        "{}",
        stderr(&quiet)
    );

    let key = keys.join("k1.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loud = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .output()
        .expect("check");
    assert!(
        stderr(&loud).contains("signing key is readable by other users"),
        "{}",
        stderr(&loud)
    );
}

#[test]
fn the_admin_command_line_says_what_is_wrong_and_covers_sessions_reload_and_issuance() {
    use crate::support::gateway::ADMIN_TOKEN;
    use crate::support::{standard_config, EchoUpstream, TestGateway};
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let url = format!("http://{}", gateway.admin);
    let admin = |token: Option<&str>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["admin", "--url", &url])
            .env_remove("PORTCULLIS_ADMIN_TOKEN")
            .env("RUST_LOG", "warn");
        if let Some(token) = token {
            command.env("PORTCULLIS_ADMIN_TOKEN", token);
        }
        command.args(args).output().expect("portcullis admin")
    };

    let missing = admin(None, &["revoke-user", "zoe"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        "portcullis: admin token missing: set PORTCULLIS_ADMIN_TOKEN (or pass --token)"
    );
    let nobody = crate::support::gateway::free_addr();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "admin",
            "--url",
            &format!("http://{nobody}"),
            "--token",
            ADMIN_TOKEN,
            "reload",
        ])
        .output()
        .expect("admin");
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!("portcullis: no gateway at http://{nobody}: ")),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "said once: {text}");

    let issued = admin(
        Some(ADMIN_TOKEN),
        &[
            "--json",
            "issue",
            "zoe",
            "--roles",
            "admin,ops",
            "--device",
            "ci runner",
        ],
    );
    assert!(issued.status.success(), "{}", stderr(&issued));
    let pair: serde_json::Value = serde_json::from_slice(&issued.stdout).expect("json");
    let sid = pair["sid"].as_str().expect("sid").to_owned();
    assert!(pair["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    let listed = admin(Some(ADMIN_TOKEN), &["sessions", "zoe"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(text.starts_with("zoe has 1 session(s)"), "{text}");
    assert!(text.contains(&sid) && text.contains("ci runner"), "{text}");

    // Session ids are base64url, so one may begin with `-`: it is a value,
    // never read as a flag.
    let hyphen = admin(Some(ADMIN_TOKEN), &["end-session", "-jNoSuchSession"]);
    assert_eq!(
        String::from_utf8_lossy(&hyphen.stdout).trim(),
        "refused (404 not_found): no such session"
    );
    assert_eq!(hyphen.status.code(), Some(1));

    let ended = admin(Some(ADMIN_TOKEN), &["end-session", &sid]);
    assert!(ended.status.success(), "{}", stderr(&ended));
    assert_eq!(
        String::from_utf8_lossy(&ended.stdout).trim(),
        format!("session {sid} of zoe ended")
    );

    let reloaded = admin(Some(ADMIN_TOKEN), &["reload"]);
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    assert!(String::from_utf8_lossy(&reloaded.stdout).starts_with("configuration reloaded ("));
    std::fs::write(gateway.dir.path().join("portcullis.toml"), "[tokens\n").expect("break config");
    let refused = admin(Some(ADMIN_TOKEN), &["reload"]);
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(
        text.starts_with("reload refused, the running configuration stays:\n"),
        "{text}"
    );
    assert!(text.contains("portcullis.toml:1:"), "{text}");
}

/// The upstream names of a compose or Kubernetes configuration mean
/// nothing where CI runs `check`: they are checked for their form only.
const UNRESOLVED_NAMES: &str = r#"[tokens]
issuer = "i"
audience = "a"
signing_key = "k"
[[tokens.keys]]
kid = "k"
algorithm = "EdDSA"
private_key_file = "signing.pem"

[[upstreams]]
name = "legacy"
targets = ["backend.invalid:8081", "localhost:8081"]

[login]
upstream = "legacy"
path = "/login"

[[routes]]
path = "/a"
upstream = "legacy"

[[routes]]
path = "/b"
upstream = "legacy"
"#;

#[test]
fn check_passes_on_upstream_names_that_do_not_resolve_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), UNRESOLVED_NAMES);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("legacy"));
}

#[test]
fn check_resolve_reports_each_name_that_does_not_resolve_at_its_position_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), UNRESOLVED_NAMES);
    let out = portcullis(&[
        "check",
        "--resolve",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!(
        "{}:12:12: \"backend.invalid:8081\" does not resolve: ",
        path.display()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error, no follow-on ones: {err}");
    assert!(lines[0].starts_with(&expected), "{err}");
}

#[test]
fn a_malformed_target_is_one_error_without_follow_on_unknown_upstream_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = UNRESOLVED_NAMES.replace("\"backend.invalid:8081\"", "\"backend\"");
    let path = write_config(dir.path(), &text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [format!(
            "{}:12:12: \"backend\" is not host:port",
            path.display()
        )],
        "{err}"
    );
}

#[test]
fn the_compose_configuration_checks_with_its_service_names_as_shipped() {
    // Only the key comes from the machine (compose mounts it at /keys);
    // `backend:8081` and `redis:6379` stay the compose services' names.
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let made = portcullis(&[
        "keygen",
        "--algorithm",
        "eddsa",
        "--kid",
        "compose-eddsa",
        "--out",
        keys.to_str().expect("utf-8"),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/portcullis.toml");
    let text = std::fs::read_to_string(shipped).expect("compose configuration");
    assert!(text.contains("targets = [\"backend:8081\"]"));
    let path = dir.path().join("portcullis.toml");
    let keys_dir = format!("{}/", keys.display());
    std::fs::write(&path, text.replace("/keys/", &keys_dir)).expect("write");
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_zero_resolve_interval_is_refused_at_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = UNRESOLVED_NAMES.replace(
        "targets = [\"backend.invalid:8081\", \"localhost:8081\"]",
        "targets = [\"backend.invalid:8081\"]\nresolve_interval = \"0s\"",
    );
    let path = write_config(dir.path(), &text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "{}:13:20: resolve_interval must be positive",
            path.display()
        )
    );
}

/// The demo prints `admin` commands that run as printed, straight after
/// the build: before `cargo install` they name the binary's own path.
#[test]
fn the_demo_prints_admin_commands_that_work_as_printed() {
    let free = || crate::support::gateway::free_addr().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args([
            "demo",
            "--listen",
            &free(),
            "--backend-listen",
            &free(),
            "--admin-listen",
            &free(),
        ])
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "warn");
    let mut demo = crate::support::binary::RunningBinary::spawn(command, true);
    let printed = demo.stdout_until(|line| line.starts_with("Press Ctrl-C"));
    let revoke = printed
        .iter()
        .map(|l| l.trim())
        .find(|l| l.ends_with("revoke-user alice"))
        .expect("a revoke-user command is printed")
        .to_owned();
    let words: Vec<&str> = revoke.split_whitespace().collect();
    assert_eq!(words[0], env!("CARGO_BIN_EXE_portcullis"), "{revoke}");
    // The instructions come first; wait for the admin listener itself.
    let admin = words[3].trim_start_matches("http://");
    demo.wait_listening(admin.parse().expect("the admin address"));
    let out = Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("run the printed command");
    drop(demo);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("alice is logged out everywhere"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An unknown key is reported and reading goes on, so the errors after it
/// (another unknown key, a cross-check between tables) are reported in the
/// same run, each at its own line and column.
#[test]
fn an_unknown_key_does_not_hide_the_errors_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[server]\nlisen = 3\n[tokens]\nissuer = \"i\"\naudience = \"a\"\n[[upstreams]]\nname = \"legacy\"\ntargets = [\"127.0.0.1:8081\"]\n\n[[routes]]\npath = \"/c\"\nupstream = \"legacy\"\nauth = \"none\"\nroles = [\"admin\"]\ncors = { allowed_origins = [\"https://a.test\"], max_agee = \"1m\" }\n";
    let path = write_config(dir.path(), text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:2:1: unknown field `lisen`"),
        format!("{file}:15:48: unknown field `max_agee`"),
        format!("{file}:11:8: roles and scopes need auth"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{err}"
        );
    }
}

/// `/auth/login` answers with tokens the gateway signs: a `[login]` with
/// no signing key would be a 404 at run time, so it is a `check` error.
#[test]
fn a_login_without_a_signing_key_is_a_check_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[tokens]\nissuer = \"i\"\naudience = \"a\"\n\n[[tokens.keys]]\nkid = \"v\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{fixtures}/test-eddsa.pub.pem\"\n\n[[upstreams]]\nname = \"legacy\"\ntargets = [\"127.0.0.1:8081\"]\n\n[login]\nupstream = \"legacy\"\npath = \"/login\"\n";
    let path = write_config(dir.path(), text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let expected = format!(
        "{}:15:12: [login] needs [tokens] signing_key: a login answers with tokens this gateway signs",
        path.display()
    );
    assert_eq!(stderr(&out).trim(), expected);
}

/// The shipped deployment configurations name production key files
/// (`/keys/…`, `/run/credentials/…`) that do not exist here:
/// `--skip-files` checks everything else in them, as shipped, and still
/// reports a key file that is there but broken.
#[test]
fn shipped_configurations_check_as_shipped_without_their_secret_files() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for shipped in [
        "deploy/compose/portcullis.toml",
        "deploy/systemd/portcullis.toml",
    ] {
        let path = repo.join(shipped);
        let path = path.to_str().expect("utf-8");
        let strict = portcullis(&["check", "--config", path]);
        assert_eq!(
            strict.status.code(),
            Some(2),
            "{shipped} names files absent here"
        );
        let out = portcullis(&["check", "--skip-files", "--config", path]);
        assert!(out.status.success(), "{shipped}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("PATH"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("broken.pem"), "not a key").expect("write");
    let text = "[tokens]\nissuer = \"i\"\naudience = \"a\"\nsigning_key = \"there\"\n\n[[tokens.keys]]\nkid = \"there\"\nalgorithm = \"EdDSA\"\nprivate_key_file = \"broken.pem\"\n\n[[tokens.keys]]\nkid = \"absent\"\nalgorithm = \"EdDSA\"\nprivate_key_file = \"absent.pem\"\n\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n";
    let path = write_config(dir.path(), text);
    let out = portcullis(&[
        "check",
        "--skip-files",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!("{}:9:20: key \"there\"", path.display());
    assert!(err.lines().any(|l| l.starts_with(&expected)), "{err}");
    assert!(!err.contains("absent"), "{err}");
}

/// `portcullis check … | head -1`: the reader goes away before the route
/// table is written, and the command ends quietly (the status a shell
/// gives a tool ended by SIGPIPE), with no panic.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/minimal.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", example.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run portcullis");
    // Closing the only read end now: the command's first write fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

/// The complete configuration the README gives a newcomer checks as it
/// stands, with the key its own `keygen` command writes.
#[test]
fn the_readmes_complete_configuration_checks() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let marker = "<!-- the test suite checks the block below: tests/cli.rs -->\n```toml\n";
    let start = readme
        .find(marker)
        .expect("the README's complete configuration")
        + marker.len();
    let block = &readme[start..start + readme[start..].find("```").expect("block end")];
    for section in [
        "[server]",
        "[store]",
        "[[tokens.keys]]",
        "[login]",
        "[sessions]",
        "roles = [\"admin\"]",
        "auth = \"none\"",
    ] {
        assert!(
            block.contains(section),
            "{section} in the README's configuration"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("portcullis.toml"), block).expect("write");
    let keygen = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args([
            "keygen",
            "--algorithm",
            "eddsa",
            "--out",
            "keys",
            "--kid",
            "k1",
            "--config",
            "portcullis.toml",
        ])
        .output()
        .expect("keygen");
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    assert!(
        String::from_utf8_lossy(&keygen.stdout).contains("private_key_file = \"keys/k1.pem\""),
        "{}",
        String::from_utf8_lossy(&keygen.stdout)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["check", "--config", "portcullis.toml"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("check");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no warning either");
}

/// A listener key that is not its certificate's would fail every TLS
/// handshake (and a start or a reload): `check` names it at the key.
#[test]
fn a_tls_key_that_is_not_the_certificates_is_a_check_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let text = format!(
        "[server]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n[tokens]\nissuer = \"i\"\naudience = \"a\"\n[[tokens.keys]]\nkid = \"v\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{{fixtures}}/test-eddsa.pub.pem\"\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n",
        cert = tls.join("test-cert.pem").display(),
        key = tls.join("test-key-2.pem").display(),
    );
    let path = write_config(dir.path(), &text);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    // Line 2, at the key file's value (columns count from 1).
    let line_start = text.find('\n').expect("line 1") + 1;
    let value = text.find("key = \"").expect("key") + "key = ".len();
    let expected = format!("{}:2:{}: ", path.display(), value - line_start + 1);
    assert!(err.starts_with(&expected), "{expected} in {err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let good = text.replace("test-key-2.pem", "test-key.pem");
    let path = write_config(dir.path(), &good);
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
}
