//! The backend's own credentials (`[[upstreams]] upstream_auth`), against
//! a real backend that enforces HTTP Basic auth: Debian's nginx with
//! `auth_basic` and an htpasswd file whose hashes openssl makes. The
//! request passes only with the credentials the gateway injects; a
//! client's own `Authorization: Basic …` never gets through; a wrong
//! secret gets the backend's 401 back; a reload swaps the secret; the
//! secret is never logged; `check` reports every mistake at its position.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::binary::{Launch, PATIENCE};
use crate::support::gateway::{config_with_routes, free_addr};
use crate::support::tokens::fixtures_dir;
use crate::support::{assert_refused, bearer, claims, get, sign, tool, EchoUpstream, TestGateway};

/// The password of the gateway's service account `svc` at the backend.
const SERVICE_PASSWORD: &str = "svc-pass-0123456789";
/// The per-upstream password every user has at the `basic_subject` backend.
const SHARED_PASSWORD: &str = "shared-pass-9876543210";

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// nginx on a free loopback port, stopped (by its own handle) when dropped.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Requires Basic auth against `users` (name, password), hashed with
    /// `openssl passwd -apr1`; answers `ok <user>` to whoever passes.
    fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd: String = users
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", apr1(password)))
            .collect();
        std::fs::write(dir.path().join("htpasswd"), htpasswd).expect("htpasswd");
        std::fs::create_dir(dir.path().join("empty")).expect("empty root");
        let (addr, d) = (free_addr(), dir.path().display());
        let conf = format!(
            r#"master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr};
        auth_basic "legacy";
        auth_basic_user_file {d}/htpasswd;
        root {d}/empty;
        # `return` would answer before the access phase that checks the
        # password: answer from a named location after it instead.
        location / {{
            try_files $uri @ok;
        }}
        location @ok {{
            default_type text/plain;
            return 200 "ok $remote_user";
        }}
    }}
}}
"#
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).expect("nginx.conf");
        let child = tool::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&file)
                .arg("-p")
                .arg(dir.path())
                .args(["-e", &format!("{d}/error.log"), "-g", "daemon off;"]),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "no nginx on {addr}");
            thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child, dir }
    }

    /// The requests nginx logged (one line each).
    fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log")).map_or(0, |l| l.lines().count())
    }
}

/// An htpasswd hash of `password` (Apache MD5, which nginx reads).
fn apr1(password: &str) -> String {
    let out = tool::output(Command::new("openssl").args(["passwd", "-apr1", password]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A secret file with `content`, mode 0600, in `dir`.
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The `echo` upstream (for refusals), and `legacy` at `target` with the
/// `upstream_auth` given (none if empty); `/` needs a token, `/open` is
/// public (not with `basic_subject`, which needs a user).
fn config(echo: &EchoUpstream, target: SocketAddr, upstream_auth: &str) -> String {
    let open = if upstream_auth.contains("basic_subject") {
        ""
    } else {
        "[[routes]]\npath = \"/open\"\nupstream = \"legacy\"\nauth = \"none\"\n"
    };
    config_with_routes(
        echo.addr,
        &format!(
            "[[upstreams]]\nname = \"legacy\"\ntargets = [\"{target}\"]\n{upstream_auth}\n\n[[routes]]\npath = \"/\"\nupstream = \"legacy\"\nauth = \"required\"\n\n{open}"
        ),
    )
}

fn fixed_file(path: &Path) -> String {
    format!(
        "upstream_auth = {{ kind = \"fixed\", file = \"{}\" }}",
        path.display()
    )
}

fn token(sub: &str) -> String {
    bearer(&sign("test-eddsa", &claims(sub)))
}

/// A fixed `Basic` value from a file is what gets a request past nginx's
/// `auth_basic`: without it the same request gets nginx's own 401 (passed
/// back, no contract code), with it nginx sees the service account.
#[test]
fn fixed_credentials_get_a_request_past_a_backend_that_enforces_basic_auth() {
    let nginx = Nginx::start(&[("svc", SERVICE_PASSWORD)]);
    let echo = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secret_file(
        secrets.path(),
        "legacy.auth",
        &format!("{}\n", basic("svc", SERVICE_PASSWORD)),
    );

    let without = TestGateway::start(&config(&echo, nginx.addr, ""));
    let refused = get(without.addr, "/orders", &[&token("alice")]);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(
        refused.header("x-portcullis-error"),
        None,
        "the backend's own 401"
    );
    drop(without);

    let gateway = TestGateway::start(&config(&echo, nginx.addr, &fixed_file(&file)));
    let passed = get(gateway.addr, "/orders", &[&token("alice")]);
    assert_eq!((passed.status, passed.text()), (200, "ok svc".to_owned()));
    assert_eq!(echo.count(), 0);
}

/// A client that holds the backend's real credentials and sends them
/// itself gets nowhere: on a route that needs a token the gateway refuses
/// it (`token_missing`) before nginx sees anything; on a public route the
/// gateway's own value replaces it, so a wrong gateway secret means nginx
/// refuses although the client's credentials were right.
#[test]
fn a_clients_own_basic_credentials_never_reach_the_backend() {
    let nginx = Nginx::start(&[("svc", SERVICE_PASSWORD)]);
    let echo = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let wrong = secret_file(
        secrets.path(),
        "wrong.auth",
        &basic("svc", "not-the-password"),
    );
    let gateway = TestGateway::start(&config(&echo, nginx.addr, &fixed_file(&wrong)));
    let client_basic = format!("Authorization: {}", basic("svc", SERVICE_PASSWORD));

    let refused = get(gateway.addr, "/orders", &[&client_basic]);
    assert_refused(&refused, 401, "token_missing", &echo);
    assert_eq!(nginx.requests(), 0, "nothing reached the backend");

    let replaced = get(gateway.addr, "/open/page", &[&client_basic]);
    assert_eq!(replaced.status, 401, "{}", replaced.text());
    assert_eq!(replaced.header("x-portcullis-error"), None);
    let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).expect("error log");
    assert!(log.contains("password mismatch"), "{log}");
}

/// `basic_subject`: the verified subject is the Basic user name, the
/// upstream's secret the password. A user the backend knows passes as
/// that user; one it does not know gets its 401; and so does everyone
/// when the gateway's password is wrong (the backend's 401 passes back).
#[test]
fn basic_subject_presents_the_verified_user_with_the_upstreams_password() {
    let nginx = Nginx::start(&[("alice", SHARED_PASSWORD), ("bob", SHARED_PASSWORD)]);
    let echo = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let right = secret_file(secrets.path(), "right", &format!("{SHARED_PASSWORD}\n"));
    let lines = |path: &Path| {
        format!(
            "upstream_auth = {{ kind = \"basic_subject\", password_file = \"{}\" }}",
            path.display()
        )
    };
    let gateway = TestGateway::start(&config(&echo, nginx.addr, &lines(&right)));
    for user in ["alice", "bob"] {
        let passed = get(gateway.addr, "/orders", &[&token(user)]);
        assert_eq!((passed.status, passed.text()), (200, format!("ok {user}")));
    }
    let stranger = get(gateway.addr, "/orders", &[&token("mallory")]);
    assert_eq!(stranger.status, 401);
    assert_eq!(stranger.header("x-portcullis-error"), None);
    drop(gateway);

    let wrong = secret_file(secrets.path(), "wrong", "not-the-password");
    let gateway = TestGateway::start(&config(&echo, nginx.addr, &lines(&wrong)));
    let refused = get(gateway.addr, "/orders", &[&token("alice")]);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.header("x-portcullis-error"), None);
    assert_eq!(echo.count(), 0);
}

/// A reload reads the secret file again: a rotated secret takes effect
/// without a restart, and a reload whose secret file is gone fails and
/// keeps the running secret.
#[test]
fn a_reload_swaps_the_secret() {
    let nginx = Nginx::start(&[("svc", SERVICE_PASSWORD)]);
    let echo = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secret_file(secrets.path(), "legacy.auth", &basic("svc", "old-password"));
    let gateway = TestGateway::start(&config(&echo, nginx.addr, &fixed_file(&file)));
    assert_eq!(get(gateway.addr, "/orders", &[&token("alice")]).status, 401);

    secret_file(
        secrets.path(),
        "legacy.auth",
        &basic("svc", SERVICE_PASSWORD),
    );
    assert_eq!(gateway.reload().status, 200);
    let passed = get(gateway.addr, "/orders", &[&token("alice")]);
    assert_eq!((passed.status, passed.text()), (200, "ok svc".to_owned()));

    std::fs::remove_file(&file).expect("remove");
    assert_ne!(
        gateway.reload().status,
        200,
        "a reload without its secret fails"
    );
    assert_eq!(get(gateway.addr, "/orders", &[&token("alice")]).status, 200);
}

/// The pool's health check presents a fixed value too: without it nginx
/// would answer every check 401, the only target would be marked unhealthy
/// and every request would get a 503.
#[test]
fn the_health_check_presents_the_fixed_credentials() {
    let nginx = Nginx::start(&[("svc", SERVICE_PASSWORD)]);
    let echo = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secret_file(
        secrets.path(),
        "legacy.auth",
        &basic("svc", SERVICE_PASSWORD),
    );
    let lines = format!(
        "{}\nhealth_check = {{ path = \"/healthz\", interval = \"100ms\", unhealthy_threshold = 1 }}",
        fixed_file(&file)
    );
    let gateway = TestGateway::start(&config(&echo, nginx.addr, &lines));
    let log = nginx.dir.path().join("access.log");
    let checks = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/healthz"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // Checks run about once a second; wait for two.
    while checks().len() < 2 {
        assert!(Instant::now() < deadline, "no health check reached nginx");
        thread::sleep(Duration::from_millis(100));
    }
    let passed = get(gateway.addr, "/orders", &[&token("alice")]);
    assert_eq!((passed.status, passed.text()), (200, "ok svc".to_owned()));
    let checks = checks();
    assert!(
        checks
            .iter()
            .all(|l| l.contains(" svc [") && l.contains("\" 200 ")),
        "{checks:?}"
    );
}

/// The secret appears in no log line, at debug level, on a request that
/// passes and on one the backend refuses.
#[test]
fn the_secret_is_never_logged() {
    let echo = EchoUpstream::start_with(|_| (401, vec![], b"no".to_vec()));
    let secrets = tempfile::tempdir().expect("tempdir");
    let value = basic("svc", SERVICE_PASSWORD);
    let file = secret_file(secrets.path(), "legacy.auth", &value);
    let config = format!(
        "{}\n[[upstreams]]\nname = \"legacy\"\ntargets = [\"{}\"]\n{}\n\n[[routes]]\npath = \"/\"\nupstream = \"legacy\"\n",
        config_with_routes(echo.addr, "").replace("{fixtures}", &fixtures_dir().display().to_string()),
        echo.addr,
        fixed_file(&file),
    );
    let gateway = Launch::new(&config).log("debug").start();
    let response = get(gateway.addr, "/orders", &[&token("alice")]);
    assert_eq!(response.status, 401);
    assert_eq!(echo.only().values("authorization"), [value.as_str()]);
    gateway.wait_for_line(
        |l| l.contains("refused the gateway's upstream_auth"),
        PATIENCE,
    );
    let log = gateway.stop();
    let encoded = value.trim_start_matches("Basic ");
    assert!(
        !log.contains(encoded) && !log.contains(SERVICE_PASSWORD),
        "{log}"
    );
}

/// `portcullis check` on `text` in `dir`, with `env` set: exit code,
/// stderr, and the file's path.
fn check(dir: &Path, text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, PathBuf) {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run portcullis");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, path)
}

/// A missing file, an unset variable, an empty secret, a secret written
/// inline, an unencoded Basic value, an unknown kind, keys of the other
/// kind, both sources, a `basic_subject` upstream on a public route and
/// `forward_token` beside `upstream_auth`: each a `check` error at its
/// file, line and column, and no message shows a secret.
#[test]
fn upstream_auth_mistakes_are_check_errors_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = secret_file(dir.path(), "empty", "\n");
    let plain = secret_file(dir.path(), "plain", "Basic svc:hunter2\n");
    let good = secret_file(dir.path(), "good", &basic("svc", "hunter2"));
    let missing = dir.path().join("missing");
    let keys = fixtures_dir();
    let head = format!(
        "[tokens]\nissuer = \"i\"\naudience = \"a\"\n[[tokens.keys]]\nkid = \"v\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{}\"\n",
        keys.join("test-eddsa.pub.pem").display()
    );
    let upstream = |name: &str, auth: &str| {
        format!("[[upstreams]]\nname = \"{name}\"\ntargets = [\"127.0.0.1:1\"]\nupstream_auth = {auth}\n")
    };
    let text = [
        head.clone(),
        // From line 8, four lines each.
        upstream("missing", &format!("{{ kind = \"fixed\", file = \"{}\" }}", missing.display())),
        upstream("unset", "{ kind = \"fixed\", env = \"PORTCULLIS_TEST_UNSET_SECRET\" }"),
        upstream("empty", &format!("{{ kind = \"basic_subject\", password_file = \"{}\" }}", empty.display())),
        upstream("inline", "{ kind = \"fixed\", value = \"Bearer abc\", env = \"PORTCULLIS_TEST_SECRET\" }"),
        upstream("unencoded", &format!("{{ kind = \"fixed\", file = \"{}\" }}", plain.display())),
        upstream("kind", "{ kind = \"digest\", env = \"PORTCULLIS_TEST_SECRET\" }"),
        upstream("other-keys", "{ kind = \"basic_subject\", env = \"PORTCULLIS_TEST_SECRET\", password_env = \"PORTCULLIS_TEST_SECRET\" }"),
        upstream("both", &format!("{{ kind = \"fixed\", file = \"{}\", env = \"PORTCULLIS_TEST_SECRET\" }}", good.display())),
        upstream("neither", "{ kind = \"fixed\" }"),
        upstream("per-user", "{ kind = \"basic_subject\", password_env = \"PORTCULLIS_TEST_SECRET\" }"),
        "[[routes]]\npath = \"/\"\nupstream = \"per-user\"\nauth = \"none\"\n".to_owned(),
    ]
    .concat();
    let env = [("PORTCULLIS_TEST_SECRET", "Bearer s3cret-env-value")];
    let (code, err, path) = check(dir.path(), &text, &env);
    assert_eq!(code, Some(2), "{err}");
    let f = path.display();
    let expected = [
        format!("{f}:11:42: {}: No such file or directory (os error 2)", missing.display()),
        format!("{f}:15:41: environment variable PORTCULLIS_TEST_UNSET_SECRET is not set"),
        format!("{f}:19:59: {}: the secret is empty", empty.display()),
        format!("{f}:23:43: upstream_auth value: a secret is never written in the configuration; put it in a file (file / password_file) or an environment variable (env / password_env)"),
        format!("{f}:27:42: {}: Basic credentials must be base64 of user:password", plain.display()),
        format!("{f}:31:26: upstream_auth kind must be \"fixed\" or \"basic_subject\", not \"digest\""),
        format!("{f}:35:49: upstream_auth env does not go with kind = \"basic_subject\""),
        format!("{f}:39:{}: upstream_auth takes file or env, not both", 52 + good.display().to_string().len()),
        format!("{f}:43:17: upstream_auth kind = \"fixed\" needs file or env"),
        format!("{f}:50:12: upstream \"per-user\" sends the verified user as its Basic user name (upstream_auth kind = \"basic_subject\"), and a route with auth = \"none\" has no user"),
    ];
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&*f.to_string()))
        .collect();
    assert_eq!(lines, expected, "{err}");
    assert!(
        !err.contains("hunter2") && !err.contains("s3cret-env-value"),
        "{err}"
    );

    // forward_token hands the token on in Authorization, which
    // upstream_auth takes.
    let forwarding = format!(
        "{head}[identity]\nforward_token = true\n{}",
        upstream(
            "legacy",
            "{ kind = \"fixed\", env = \"PORTCULLIS_TEST_SECRET\" }"
        )
    );
    let (code, err, path) = check(dir.path(), &forwarding, &env);
    assert_eq!(code, Some(2), "{err}");
    let expected = format!(
        "{}:13:17: upstream \"legacy\": upstream_auth replaces Authorization, so [identity] forward_token cannot forward the token to it",
        path.display()
    );
    assert!(err.lines().any(|l| l == expected), "{err}");

    // The good ones check clean: a file, and a variable.
    let clean = format!(
        "{head}{}{}",
        upstream(
            "file",
            &format!("{{ kind = \"fixed\", file = \"{}\" }}", good.display())
        ),
        upstream(
            "env",
            "{ kind = \"basic_subject\", password_env = \"PORTCULLIS_TEST_SECRET\" }"
        ),
    );
    let (code, err, _) = check(dir.path(), &clean, &env);
    assert_eq!(code, Some(0), "{err}");
}
