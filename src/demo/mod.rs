//! `portcullis demo`: the gateway in front of a small built-in backend, with
//! a fresh key in a temporary folder and ready-to-paste curl commands.

mod backend;

use std::path::Path;
use std::time::Duration;

use pingora_core::services::listening::Service as ListeningService;

use crate::auth::issue::{mint, Issuance};
use crate::config::raw::KeyAlgorithm;
use crate::config::{self, Runtime};
use crate::keygen;
pub use backend::DemoBackend;

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: String,
    pub backend_listen: String,
    pub admin_listen: String,
}

/// The demo's configuration: the same TOML a user would write.
pub fn demo_config(options: &DemoOptions, key_file: &Path, kid: &str) -> String {
    format!(
        r#"# Written by `portcullis demo`.
[server]
listen = ["{listen}"]
admin_listen = "{admin}"
admin_token_file = "admin.token"
shutdown_grace = "0s"
shutdown_timeout = "1s"

[store]
url = "sqlite://portcullis.db"

[tokens]
issuer = "https://portcullis.demo"
audience = "demo-backend"
access_ttl = "60s"
refresh_hint = "45s"
signing_key = "{kid}"

[[tokens.keys]]
kid = "{kid}"
algorithm = "EdDSA"
private_key_file = "{key}"

[[upstreams]]
name = "demo"
targets = ["{backend}"]

[login]
upstream = "demo"
path = "/login"

[sessions]
refresh_ttl = "7d"
max_age = "72h"
# Browsers get the refresh token in an HttpOnly cookie; curl (no Origin,
# no Sec-Fetch-Site) gets it in the JSON body.
cookie = true

[[routes]]
path = "/public"
upstream = "demo"
auth = "none"

[[routes]]
path = "/admin"
upstream = "demo"
auth = "required"
roles = ["admin"]

# The backend's change-password page: its answer may end the user's
# other sessions (X-Portcullis-Session-Control: end-other-sessions).
[[routes]]
path = "/account"
upstream = "demo"
auth = "required"
session_control = true

[[routes]]
path = "/"
upstream = "demo"
auth = "required"
"#,
        listen = options.listen,
        backend = options.backend_listen,
        admin = options.admin_listen,
        key = key_file.display(),
    )
}

/// Runs the demo until Ctrl-C; the temporary folder is removed afterwards.
pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("portcullis-demo-")
        .tempdir()?;
    let key = keygen::generate(KeyAlgorithm::EdDSA, dir.path(), "demo-eddsa", None)?;
    let admin_token = format!("{:032x}", rand::random::<u128>());
    std::fs::write(dir.path().join("admin.token"), &admin_token)?;
    let config_path = dir.path().join("portcullis.toml");
    std::fs::write(
        &config_path,
        demo_config(options, &key.private_path, &key.kid),
    )?;
    let runtime = config::load(&config_path)?;
    print_instructions(&runtime, options, &config_path, &admin_token)?;

    let hint = Duration::from_secs(runtime.refresh_hint_secs);
    let mut instance = crate::server::build(runtime, Some(config_path.clone()))?;
    let page = DemoBackend::new(Some(hint));
    let mut backend = ListeningService::new("demo backend".to_owned(), page);
    backend.add_tcp(&options.backend_listen);
    instance.server.add_service(backend);
    instance.run_until_signal();
    drop(dir);
    Ok(())
}

/// Runs only the demo backend until SIGTERM or Ctrl-C.
pub fn run_backend(listen: &str) {
    let mut server = pingora_core::server::Server::new_with_opt_and_conf(
        None::<pingora_core::server::configuration::Opt>,
        pingora_core::server::configuration::ServerConf {
            grace_period_seconds: Some(0),
            graceful_shutdown_timeout_seconds: Some(1),
            ..Default::default()
        },
    );
    server.bootstrap();
    let page = DemoBackend::new(None);
    let mut backend = ListeningService::new("demo backend".to_owned(), page);
    backend.add_tcp(listen);
    server.add_service(backend);
    server.run(pingora_core::server::RunArgs::default());
}

fn print_instructions(
    runtime: &Runtime,
    options: &DemoOptions,
    config_path: &Path,
    api_token: &str,
) -> anyhow::Result<()> {
    let signer = runtime
        .signer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("demo config has no signing key"))?;
    let ttl = Duration::from_secs(3600);
    let user = Issuance {
        sub: "alice".into(),
        roles: vec!["user".into()],
        ..Issuance::default()
    };
    let admin = Issuance {
        sub: "root".into(),
        roles: vec!["admin".into(), "user".into()],
        ..Issuance::default()
    };
    let (user_token, _) = mint(signer, user, &runtime.issuer, &runtime.audience, ttl)?;
    let (admin_token, _) = mint(signer, admin, &runtime.issuer, &runtime.audience, ttl)?;
    let base = format!("http://{}", options.listen);
    println!(
        "portcullis demo: gateway on {base}, demo backend on http://{}",
        options.backend_listen
    );
    println!("configuration: {}\n", config_path.display());
    println!("{}", runtime.route_table());
    print_request_tour(&base, &user_token, &admin_token);
    print_session_tour(&base, runtime);
    print_admin_tour(options, api_token);
    println!("Press Ctrl-C to stop.");
    Ok(())
}

/// Requests through the gateway: public, refused, allowed, and the
/// session endpoints.
fn print_request_tour(base: &str, user_token: &str, admin_token: &str) {
    println!("Try these (tokens are valid for one hour):\n");
    println!("  # a public page: no token needed");
    println!("  curl -i {base}/public\n");
    println!("  # no token on a protected route: 401 token_missing");
    println!("  curl -i {base}/echo\n");
    println!("  # alice's token: the backend sees X-User-Id and X-User-Roles set by the gateway,");
    println!("  # and the spoofed X-User-Id is gone");
    println!(
        "  curl -i -H 'Authorization: Bearer {user_token}' -H 'X-User-Id: mallory' {base}/echo\n"
    );
    println!("  # alice on the admin page: 403 insufficient_scope");
    println!("  curl -i -H 'Authorization: Bearer {user_token}' {base}/admin\n");
    println!("  # an admin token on the admin page");
    println!("  curl -i -H 'Authorization: Bearer {admin_token}' {base}/admin\n");
    println!("  # a tampered token: 401 token_invalid");
    println!("  curl -i -H 'Authorization: Bearer {user_token}x' {base}/echo\n");
}

/// Logging in and the session endpoints. The commands keep the token pair
/// in the shell variables `ACCESS_TOKEN` and `REFRESH_TOKEN`, taken from
/// each answer (with sed: no JSON tool needs installing), so every line
/// runs as printed, in order, in one shell.
fn print_session_tour(base: &str, runtime: &Runtime) {
    let ttl = runtime.access_ttl.as_secs();
    let quiet = ttl.saturating_sub(runtime.refresh_hint_secs);
    let take = |var: &str, field: &str| {
        format!("{var}=$(echo \"$ANSWER\" | sed -E 's/.*\"{field}\":\"([^\"]+)\".*/\\1/')")
    };
    let keep_pair = format!(
        "  {}\n  {}",
        take("ACCESS_TOKEN", "access_token"),
        take("REFRESH_TOKEN", "refresh_token")
    );
    println!("  # log in through the backend's own check (alice/wonderland or root/changeme):");
    println!(
        "  # the page at {base}/public/ does the whole flow in a browser with portcullis-client"
    );
    println!(
        "  # (cookie mode): watch the token's remaining life, the refresh ahead, and the page"
    );
    println!("  # dropping to its login form when you run the revoke-user command below.");
    println!("  # Its Change password form (the backend's /account/password, a route with");
    println!("  # session_control = true) signs your other devices out and keeps this one:");
    println!("  # open the page in two browsers, log in on both, change the password in one.");
    println!("  # In a terminal, paste these lines in order into one shell: the login answer's");
    println!("  # access_token and refresh_token land in $ACCESS_TOKEN and $REFRESH_TOKEN");
    println!("  ANSWER=$(curl -s -X POST -d 'username=alice&password=wonderland&device_name=terminal' {base}/auth/login); echo \"$ANSWER\"");
    println!("{keep_pair}");
    println!(
        "  # call; the token lives {ttl} s, and answers carry X-Token-Expires-In after {quiet} s"
    );
    println!("  curl -i -H \"Authorization: Bearer $ACCESS_TOKEN\" {base}/echo");
    println!("  # refresh: the refresh token rotates, so keep the new pair");
    println!("  ANSWER=$(curl -s -X POST -d \"grant_type=refresh_token&refresh_token=$REFRESH_TOKEN\" {base}/auth/token); echo \"$ANSWER\"");
    println!("{keep_pair}");
    println!("  # list devices, log out");
    println!("  curl -s -w '\\n' -H \"Authorization: Bearer $ACCESS_TOKEN\" {base}/auth/sessions");
    println!("  curl -s -w '\\n' -X POST -H \"Authorization: Bearer $ACCESS_TOKEN\" {base}/auth/logout\n");
}

/// Logging a user out everywhere and disabling an account, by the admin API
/// and by the command line.
fn print_admin_tour(options: &DemoOptions, api_token: &str) {
    let admin = format!("http://{}", options.admin_listen);
    println!(
        "  # log alice out everywhere through the admin API; her token now gets 401 token_revoked"
    );
    println!(
        "  curl -i -X POST -H 'Authorization: Bearer {api_token}' {admin}/admin/users/alice/revoke"
    );
    let cli = command_name();
    println!("  # or with the command line:");
    println!("  {cli} admin --url {admin} --token {api_token} revoke-user alice\n");
    println!("  # disable the admin account: its token above now gets 403 account_disabled");
    println!("  {cli} admin --url {admin} --token {api_token} disable root");
    println!("  # and enable it again: the same token is admitted again");
    println!("  {cli} admin --url {admin} --token {api_token} enable root\n");
}

/// How a shell reaches this binary: `portcullis` once it is on the `PATH`
/// (`cargo install`), otherwise the running executable's own path, so the
/// printed commands work straight after `scripts/demo.sh`.
fn command_name() -> String {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("portcullis").is_file())
    });
    match std::env::current_exe() {
        Ok(exe) if !on_path => exe.display().to_string(),
        _ => "portcullis".to_owned(),
    }
}
