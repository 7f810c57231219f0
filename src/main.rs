//! The `portcullis` command line: parse arguments, load configuration, run.

// Functions over 60 lines (clippy.toml) fail `cargo clippy -D warnings`,
// as CI runs it; a declarative table may say why it is longer.
#![warn(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::admin::client::{api_key_path, session_path, user_path, AdminClient};
use portcullis::auth::issue::{mint, Issuance};
use portcullis::config::raw::KeyAlgorithm;
use portcullis::config::{self, ConfigError};
use portcullis::log_line;
use portcullis::log_queue::{self, LogWriterGuard};
use portcullis::{demo, keygen, server};

/// glibc malloc was ~10% of the proxy's CPU in a profile of the pass-through
/// path; mimalloc's thread-local free lists cut that (docs/benchmarks.md).
/// The `system-allocator` feature leaves the system's in place, for heap
/// profilers that hook malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A reverse-proxy authentication gateway"
)]
struct Cli {
    /// Log lines as text or as one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print its route table. Upstream
    /// names are checked for their form, not resolved (a compose or
    /// Kubernetes name checks in CI).
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Also resolve every upstream target name here, and report each
        /// one that does not resolve.
        #[arg(long)]
        resolve: bool,
        /// Check everything but the presence of secret files and variables
        /// (keys, TLS certificates, CA bundles, the admin token file), so a
        /// deployment's configuration checks in CI without its secrets.
        #[arg(long)]
        skip_files: bool,
    },
    /// Write a new signing key (or HS256 secret) and print its config entry.
    Keygen {
        /// EdDSA, ES256, RS256 or HS256, in any case.
        #[arg(long, value_parser = |s: &str| s.parse::<KeyAlgorithm>())]
        algorithm: KeyAlgorithm,
        /// The folder the key is written into (created if missing); the
        /// private key is mode 0600, and never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Key id; default: the algorithm and a random suffix.
        #[arg(long)]
        kid: Option<String>,
        /// The configuration file the key is for: the printed entry names
        /// the key relative to it (as the file reads it); without it, the
        /// path is absolute.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print an access token signed with the configured signing key
    /// (for scripts, load tests and trying routes by hand).
    Token {
        /// The configuration file whose signing key signs the token.
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// The user the token is for (its `sub` claim).
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime; default: the configured access_ttl.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Call a gateway's admin API: revoke tokens, log users out everywhere,
    /// disable and enable users, check health.
    Admin {
        /// The admin listener.
        #[arg(
            long,
            env = "PORTCULLIS_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        url: String,
        /// The admin token.
        #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON answer instead of a sentence.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Run only the demo backend (for docker-compose and scripts).
    DemoBackend {
        /// Where the demo backend listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// Run the gateway in front of a built-in demo backend.
    Demo {
        /// Where the gateway listens (the address to open in a browser).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo backend listens, behind the gateway.
        #[arg(long, default_value = "127.0.0.1:8081")]
        backend_listen: String,
        /// Where the gateway's admin API and metrics listen.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: String,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Revoke one access token, by jti and exp or by the token itself.
    RevokeToken {
        /// The token's id (its `jti` claim); needs --exp.
        #[arg(long, requires = "exp", conflicts_with = "access_token")]
        jti: Option<String>,
        /// The token's exp (Unix seconds): the revocation is kept until then.
        #[arg(long)]
        exp: Option<u64>,
        /// The access token itself.
        #[arg(long = "access-token")]
        access_token: Option<String>,
    },
    /// Log a user out everywhere: every token they hold dies.
    RevokeUser {
        /// The user's subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        sub: String,
    },
    /// Refuse a user with 403 account_disabled until enabled again.
    Disable {
        /// The user's subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        sub: String,
    },
    /// Let a disabled user in again.
    Enable {
        /// The user's subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        sub: String,
    },
    /// A user's sessions (devices).
    Sessions {
        /// The user's subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        sub: String,
    },
    /// End one session: its refresh token stops working and its access
    /// tokens are revoked.
    EndSession {
        /// The session id, as `admin sessions` lists it. Ids are base64url
        /// and may begin with `-`, so a leading hyphen is part of the value.
        #[arg(allow_hyphen_values = true)]
        sid: String,
    },
    /// Trusted issuance: open a session for a user another service
    /// authenticated, and print the token pair.
    Issue {
        /// The user's subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// The device label shown in the session list.
        #[arg(long)]
        device: Option<String>,
    },
    /// Re-read the gateway's configuration file (as SIGHUP does).
    Reload,
    /// Liveness and readiness of the gateway.
    Health,
    /// API keys for scripts and services: create, list, revoke.
    ApiKey {
        #[command(subcommand)]
        action: ApiKeyAction,
    },
}

#[derive(Subcommand)]
enum ApiKeyAction {
    /// Create a key for a service account; the key is printed once.
    Create {
        /// The subject the key stands for (`sub`).
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. `90d`; without it the key does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// A label to tell keys apart in `api-key list`.
        #[arg(long)]
        label: Option<String>,
    },
    /// Every key: id, label, prefix, subject, created, last used, expiry.
    List,
    /// Revoke a key by id (as `api-key list` shows it).
    Revoke {
        /// The key's id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. } | Command::Demo { .. });
    // Dropped when `main` returns: what is still queued is written first.
    let _log = init_logging(cli.log_format, serving);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            complain(&format!("portcullis: {e:#}"));
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve(&config),
        Command::Check {
            config,
            resolve,
            skip_files,
        } => Ok(check(
            &config,
            config::LoadOptions {
                resolve,
                skip_files,
            },
        )),
        Command::Keygen {
            algorithm,
            out,
            kid,
            config,
        } => {
            let kid = kid.unwrap_or_else(|| keygen::default_kid(algorithm));
            let config_dir = config.as_deref().map(|c| c.parent().unwrap_or(c));
            let key = keygen::generate(algorithm, &out, &kid, config_dir).context("keygen")?;
            complain(&format!("wrote {}", key.private_path.display()));
            if let Some(public) = &key.public_path {
                complain(&format!("wrote {}", public.display()));
            }
            say(&key.snippet);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            url,
            token,
            json,
            action,
        } => admin(&url, token, json, action),
        Command::DemoBackend { listen } => {
            demo::run_backend(&listen);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            config,
            sub,
            roles,
            scope,
            ttl,
        } => token(&config, sub, roles, scope, ttl),
        Command::Demo {
            listen,
            backend_listen,
            admin_listen,
        } => {
            demo::run(&demo::DemoOptions {
                listen,
                backend_listen,
                admin_listen,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = match config::load(path) {
        Ok(runtime) => runtime,
        Err(e) => return Ok(report(&e)),
    };
    announce(&runtime, path);
    server::build(runtime, Some(path.to_owned()))?.run_until_signal();
    Ok(ExitCode::SUCCESS)
}

fn token(
    path: &std::path::Path,
    sub: String,
    roles: Vec<String>,
    scope: Option<String>,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let runtime = match config::load(path) {
        Ok(runtime) => runtime,
        Err(e) => return Ok(report(&e)),
    };
    let signer = runtime
        .signer
        .as_ref()
        .context("[tokens] has no signing_key")?;
    let ttl = ttl.unwrap_or(runtime.access_ttl);
    if ttl > runtime.max_token_lifetime {
        anyhow::bail!(
            "--ttl {} is longer than [tokens] max_token_lifetime ({}): the gateway would refuse the token",
            humantime::format_duration(ttl),
            humantime::format_duration(runtime.max_token_lifetime)
        );
    }
    let user = current_user(&runtime, &sub)?;
    if user.disabled {
        anyhow::bail!("{sub} is disabled: the gateway would refuse the token");
    }
    let issuance = Issuance {
        sub,
        roles,
        scope,
        ver: user.version,
        ..Issuance::default()
    };
    let (token, _) = mint(signer, issuance, &runtime.issuer, &runtime.audience, ttl)?;
    say(&token);
    Ok(ExitCode::SUCCESS)
}

/// The user's record in the configured store, so a minted token carries
/// the current `ver` and dies with the next "log out everywhere", even one
/// in the same second.
fn current_user(
    runtime: &portcullis::config::Runtime,
    sub: &str,
) -> anyhow::Result<portcullis::store::UserRecord> {
    let location = &runtime.server.store.location;
    let retention = portcullis::store::Retention {
        after_expiry: runtime.leeway,
        log_entries: runtime.server.store.change_log_entries,
    };
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let options = runtime.server.store.redis.clone();
        let store = portcullis::store::open_with(location, retention, options).await?;
        store.user(sub).await
    })
    .with_context(|| format!("reading {sub}'s token version from the store"))
}

fn admin(
    url: &str,
    token: Option<String>,
    json: bool,
    action: AdminAction,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(url, token);
    let (status, body) = match &action {
        AdminAction::RevokeToken {
            jti,
            exp,
            access_token,
        } => {
            let body = match (jti, exp, access_token) {
                (Some(jti), Some(exp), None) => serde_json::json!({"jti": jti, "exp": exp}),
                (None, None, Some(token)) => serde_json::json!({"token": token}),
                _ => anyhow::bail!("give --jti and --exp, or --access-token"),
            };
            client.post("/admin/tokens/revoke", Some(&body))?
        }
        AdminAction::RevokeUser { sub } => client.post(&user_path(sub, "revoke"), None)?,
        AdminAction::Disable { sub } => client.post(&user_path(sub, "disable"), None)?,
        AdminAction::Enable { sub } => client.post(&user_path(sub, "enable"), None)?,
        AdminAction::Sessions { sub } => client.get(&user_path(sub, "sessions"))?,
        AdminAction::EndSession { sid } => client.delete(&session_path(sid))?,
        AdminAction::Issue {
            sub,
            roles,
            scope,
            device,
        } => {
            let mut body = serde_json::json!({"sub": sub, "roles": roles});
            if let Some(scope) = scope {
                body["scope"] = scope.as_str().into();
            }
            if let Some(device) = device {
                body["device"] = device.as_str().into();
            }
            client.post("/admin/sessions", Some(&body))?
        }
        AdminAction::Reload => client.post("/admin/reload", None)?,
        AdminAction::Health => client.get("/readyz")?,
        AdminAction::ApiKey { action } => api_key_call(&client, action)?,
    };
    if json {
        say(&body.to_string());
    } else {
        say(&describe(&action, status, &body));
    }
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn api_key_call(
    client: &AdminClient,
    action: &ApiKeyAction,
) -> anyhow::Result<(u16, serde_json::Value)> {
    Ok(match action {
        ApiKeyAction::Create {
            sub,
            roles,
            scope,
            expires,
            label,
        } => {
            let mut body = serde_json::json!({"sub": sub, "roles": roles});
            if let Some(scope) = scope {
                body["scope"] = scope.as_str().into();
            }
            if let Some(expires) = expires {
                body["expires_in"] = expires.as_secs().into();
            }
            if let Some(label) = label {
                body["label"] = label.as_str().into();
            }
            client.post("/admin/api-keys", Some(&body))?
        }
        ApiKeyAction::List => client.get("/admin/api-keys")?,
        ApiKeyAction::Revoke { id } => client.delete(&api_key_path(id))?,
    })
}

/// An API key call's answer, for a person: the key itself only once,
/// after it was created.
fn describe_api_key(action: &ApiKeyAction, body: &serde_json::Value) -> String {
    match action {
        ApiKeyAction::Create { .. } => format!(
            "API key {} created for {} (shown once; store it now):\n{}",
            body["id"].as_str().unwrap_or("?"),
            body["sub"].as_str().unwrap_or("?"),
            body["key"].as_str().unwrap_or("?"),
        ),
        ApiKeyAction::Revoke { id } => format!("API key {id} is revoked"),
        ApiKeyAction::List => {
            let list = body["api_keys"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut out = format!("{} API key(s)", list.len());
            for key in list {
                out.push_str(&format!(
                    "\n  {}  {}…  {}  {}  {}  created {}  last used {}  expires {}",
                    key["id"].as_str().unwrap_or("?"),
                    key["prefix"].as_str().unwrap_or("?"),
                    key["status"].as_str().unwrap_or("?"),
                    key["sub"].as_str().unwrap_or("?"),
                    key["label"]
                        .as_str()
                        .filter(|l| !l.is_empty())
                        .unwrap_or("-"),
                    readable_time(&key["created"]),
                    optional_time(&key["last_used"], "never"),
                    optional_time(&key["expires"], "never"),
                ));
            }
            out
        }
    }
}

fn optional_time(seconds: &serde_json::Value, none: &str) -> String {
    match seconds {
        serde_json::Value::Null => none.to_owned(),
        at => readable_time(at),
    }
}

/// What an operator needs to see at startup: which build, where it
/// listens, which store, how many routes, and what is switched off.
fn announce(runtime: &config::Runtime, path: &std::path::Path) {
    let server = &runtime.server;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        listen = %server.listen.join(","),
        tls = server.tls.is_some(),
        admin = %server.admin_listen,
        store = %server.store.location,
        routes = runtime.router.routes().count(),
        "portcullis starting"
    );
    if server.admin_token.is_none() {
        tracing::warn!(
            admin = %server.admin_listen,
            "the admin API is disabled: no admin token is configured (set the variable named by admin_token_env)"
        );
    }
}

/// One sentence for a person reading the terminal.
fn describe(action: &AdminAction, status: u16, body: &serde_json::Value) -> String {
    if let (AdminAction::Reload, Some(errors)) = (action, body["errors"].as_array()) {
        let lines: Vec<&str> = errors.iter().filter_map(|e| e.as_str()).collect();
        return format!(
            "reload refused, the running configuration stays:\n{}",
            lines.join("\n")
        );
    }
    if let Some(code) = body["error"].as_str() {
        return format!(
            "refused ({status} {code}): {}",
            body["error_description"].as_str().unwrap_or("")
        );
    }
    let user = &body["user"];
    match action {
        AdminAction::RevokeToken { .. } if body["revoked"] == true => {
            format!(
                "revoked token {} (kept until exp {})",
                body["jti"].as_str().unwrap_or("?"),
                body["exp"]
            )
        }
        AdminAction::RevokeToken { .. } => {
            format!("nothing to do: {}", body["reason"].as_str().unwrap_or(""))
        }
        AdminAction::RevokeUser { sub } => {
            format!(
                "{sub} is logged out everywhere (token version now {})",
                user["version"]
            )
        }
        AdminAction::Disable { sub } => format!("{sub} is disabled"),
        AdminAction::Enable { sub } => format!("{sub} is enabled"),
        AdminAction::Sessions { sub } => describe_sessions(sub, body),
        AdminAction::EndSession { sid } => {
            format!(
                "session {sid} of {} ended",
                body["sub"].as_str().unwrap_or("?")
            )
        }
        AdminAction::Issue { sub, .. } => format!(
            "session {} opened for {sub}\naccess_token={}\nrefresh_token={}",
            body["sid"].as_str().unwrap_or("?"),
            body["access_token"].as_str().unwrap_or("?"),
            body["refresh_token"].as_str().unwrap_or("?"),
        ),
        AdminAction::Reload => describe_reload(body),
        AdminAction::ApiKey { action } => describe_api_key(action, body),
        AdminAction::Health => describe_health(body),
    }
}

/// Readiness, with the view's age against its bound.
fn describe_health(body: &serde_json::Value) -> String {
    format!(
        "{} (store {}, view {} ms old, bound {} ms, {} revoked tokens)",
        if body["ready"] == true {
            "ready"
        } else {
            "NOT ready"
        },
        body["store"].as_str().unwrap_or("?"),
        body["view_staleness_ms"],
        body["max_staleness_ms"],
        body["revoked_tokens"],
    )
}

/// A reload's answer, with what it could not apply: those settings take
/// effect only when the gateway restarts.
fn describe_reload(body: &serde_json::Value) -> String {
    let mut out = format!("configuration reloaded ({} routes)", body["routes"]);
    let pending: Vec<&str> = body["needs_restart"]
        .as_array()
        .map(|list| list.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    if !pending.is_empty() {
        out.push_str(&format!(
            "\nnot applied until a restart: {}",
            pending.join(", ")
        ));
    }
    out
}

/// One line per session: id, device, when it opened, when it was last
/// used and when it ends, as UTC times a person reads.
fn describe_sessions(sub: &str, body: &serde_json::Value) -> String {
    let list = body["sessions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut out = format!("{sub} has {} session(s)", list.len());
    for session in list {
        out.push_str(&format!(
            "\n  {}  {}  opened {}  last used {}  ends {}",
            session["sid"].as_str().unwrap_or("?"),
            session["device"].as_str().unwrap_or("-"),
            readable_time(&session["created"]),
            readable_time(&session["last_used"]),
            readable_time(&session["expires_at"]),
        ));
    }
    out
}

/// Unix seconds as `2026-12-07 14:30:00 UTC`; anything else as it came.
fn readable_time(seconds: &serde_json::Value) -> String {
    let Some(at) = seconds
        .as_u64()
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)))
    else {
        return seconds.to_string();
    };
    // RFC 3339 (`2026-12-07T14:30:00Z`) with the T and Z spelled out.
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", stamp.trim_end_matches('Z').replacen('T', " ", 1))
}

/// Writes a line to standard output. A reader that has gone away
/// (`portcullis check … | head -1`) ends the command quietly, with the
/// status a shell gives a tool ended by SIGPIPE, instead of a panic.
fn say(line: &str) {
    say_raw(&format!("{line}\n"));
}

/// Writes a line to standard error; with nobody reading it, there is
/// nobody to tell, and the command goes on to its exit status.
fn complain(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `say` without the line end.
fn say_raw(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        complain(&format!("portcullis: cannot write the output: {e}"));
        std::process::exit(1);
    }
}

fn check(path: &std::path::Path, options: config::LoadOptions) -> ExitCode {
    match config::load_with(path, options) {
        Ok(runtime) => {
            say(&format!("{}: ok", path.display()));
            say_raw(&runtime.route_table());
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn report(error: &ConfigError) -> ExitCode {
    complain(&error.to_string());
    ExitCode::from(2)
}

/// `RUST_LOG` filters (default `info`); the access log is the
/// `portcullis::access` target.
///
/// The crates that read client bytes log them at `debug` and `trace`: the
/// engine quotes raw request heads, `h2` a malformed `:path` or
/// `:authority` with its query, `rustls` the records of a handshake. Their
/// lines are capped at `warn` whatever `RUST_LOG` says (see
/// [`capped_filter`]), so no level or directive puts a client's token in
/// the log.
fn init_logging(format: LogFormat, queued: bool) -> Option<LogWriterGuard> {
    let requested = std::env::var("RUST_LOG").ok();
    let filter = capped_filter(requested.as_deref().unwrap_or("info"));
    // Colours only for a person at a terminal, never into a file or a pipe.
    let ansi = std::io::stderr().is_terminal();
    // A long-running gateway writes through the queue (off the request
    // thread); one-shot commands write directly, in order with their output.
    let queue = queued
        .then(|| log_queue::start(std::io::stderr(), log_queue::DEFAULT_CAPACITY).ok())
        .flatten();
    match queue {
        Some((queue, guard)) => {
            install_logging(format, filter, ansi, queue);
            Some(guard)
        }
        None => {
            install_logging(format, filter, ansi, std::io::stderr);
            None
        }
    }
}

/// Log targets (prefixes) of the dependencies that handle a client's bytes
/// before the gateway has judged them: the engine (`pingora_core`,
/// `pingora_proxy`, …), HTTP/2 framing, TLS, and the HTTP/1 parser.
/// `hyper` is not a dependency today; it is listed so that one pulled in
/// later is capped too.
const CAPPED_TARGETS: [&str; 6] = [
    "pingora",
    "h2",
    "rustls",
    "tokio_rustls",
    "httparse",
    "hyper",
];

/// `requested` without its directives that could open the capped
/// targets, plus a `warn` cap for each: a directive that names one
/// (`h2=debug`, `pingora_core=trace`) would otherwise win over the cap, as
/// the more specific one.
fn capped_filter(requested: &str) -> tracing_subscriber::EnvFilter {
    let kept = requested
        .split(',')
        .map(str::trim)
        .filter(|directive| !opens_capped_target(directive))
        .collect::<Vec<_>>()
        .join(",");
    let mut filter = tracing_subscriber::EnvFilter::new(kept);
    for target in CAPPED_TARGETS {
        if let Ok(cap) = format!("{target}=warn").parse() {
            filter = filter.add_directive(cap);
        }
    }
    for target in POOL_TARGETS {
        if let Ok(off) = format!("{target}=off").parse() {
            filter = filter.add_directive(off);
        }
    }
    filter
}

/// The engine's upstream connection pool, whose lines name no request:
/// `failed to acquire reusable stream` (ERROR: a pooled connection was
/// still held by the task watching it idle, a race inside the engine) and
/// the data an upstream sent on an idle connection. Either way the engine
/// closes that connection and the request goes on over a new one; nothing
/// failed. A request whose upstream connection does fail gets the
/// gateway's own `upstream failed` line, with its request id, method,
/// route and target (issue #22).
const POOL_TARGETS: [&str; 2] = ["pingora_core::connectors", "pingora_pool"];

/// Whether a `RUST_LOG` directive (`target[span]=level`) could enable a
/// capped target's lines: one that names it, or a span filter without a
/// target (`[span]=debug` enables every crate's events inside the span,
/// and `h2` logs inside spans of its own, past any per-target cap).
fn opens_capped_target(directive: &str) -> bool {
    let target = directive
        .split(['[', '='])
        .next()
        .unwrap_or_default()
        .trim();
    let untargeted_span = target.is_empty() && directive.contains('[');
    untargeted_span
        || CAPPED_TARGETS
            .iter()
            .any(|capped| target.starts_with(capped))
}

fn install_logging<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
    writer: W,
) where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.event_format(log_line::TextLines::new()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn directives_that_could_open_a_capped_target_are_dropped() {
        for opens in [
            "h2=debug",
            "pingora_core=trace",
            "pingora",
            "rustls::server=debug",
            "tokio_rustls=trace",
            "httparse=debug",
            "[conn]=trace",
            "[{peer}]=debug",
        ] {
            assert!(opens_capped_target(opens), "{opens}");
        }
        for keeps in [
            "debug",
            "info",
            "portcullis=debug",
            "portcullis[req]=trace",
            "redis=warn",
        ] {
            assert!(!opens_capped_target(keeps), "{keeps}");
        }
    }

    /// The engine's pool lines name no request and are left out, even at
    /// ERROR (`failed to acquire reusable stream`); its other lines keep
    /// the `warn` cap, and the gateway's own lines the requested level.
    #[test]
    fn the_engine_pool_lines_are_left_out_at_every_level() {
        #[derive(Clone, Default)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("capture").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(capped_filter("trace"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
            tracing::warn!(target: "pingora_pool::connection", "Data received on idle client connection");
            tracing::debug!(target: "pingora_core::protocols", "raw bytes");
            tracing::error!(target: "pingora_core::server", "engine fault");
            tracing::debug!(target: "portcullis::proxy", "own line");
        });
        let written = String::from_utf8_lossy(&capture.0.lock().expect("capture")).into_owned();
        for gone in ["reusable stream", "idle client connection", "raw bytes"] {
            assert!(!written.contains(gone), "{gone}: {written}");
        }
        for kept in ["engine fault", "own line"] {
            assert!(written.contains(kept), "{kept}: {written}");
        }
    }

    /// Every subcommand and every argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "portcullis", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }

    #[test]
    fn times_read_as_utc_and_anything_else_as_it_came() {
        assert_eq!(
            readable_time(&serde_json::json!(1_796_652_600u64)),
            "2026-12-07 14:10:00 UTC"
        );
        assert_eq!(readable_time(&serde_json::json!(null)), "null");
    }

    #[test]
    fn a_reload_says_what_waits_for_a_restart() {
        let applied = serde_json::json!({"routes": 3, "needs_restart": []});
        assert_eq!(
            describe_reload(&applied),
            "configuration reloaded (3 routes)"
        );
        let pending =
            serde_json::json!({"routes": 3, "needs_restart": ["server.listen", "store.url"]});
        assert_eq!(
            describe_reload(&pending),
            "configuration reloaded (3 routes)\nnot applied until a restart: server.listen, store.url"
        );
    }
}
