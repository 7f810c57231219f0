//! The `portcullis` command line: parse arguments, load configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::auth::issue::{mint, Grant};
use portcullis::config::raw::KeyAlgorithm;
use portcullis::config::{self, ConfigError};
use portcullis::{demo, keygen, proxy};

/// glibc malloc was ~10% of the proxy's CPU in a profile of the pass-through
/// path; mimalloc's thread-local free lists cut that (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A reverse-proxy authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print its route table.
    Check {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Write a new signing key (or HS256 secret) and print its config entry.
    Keygen {
        #[arg(long, value_enum)]
        algorithm: Algorithm,
        #[arg(long)]
        out: PathBuf,
        /// Key id; default: the algorithm and a random suffix.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Print an access token signed with the configured signing key
    /// (for scripts, load tests and trying routes by hand).
    Token {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
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
    /// Run the gateway in front of a built-in demo backend.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:8081")]
        backend_listen: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Algorithm {
    Eddsa,
    Es256,
    Rs256,
    Hs256,
}

impl From<Algorithm> for KeyAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Eddsa => KeyAlgorithm::EdDSA,
            Algorithm::Es256 => KeyAlgorithm::ES256,
            Algorithm::Rs256 => KeyAlgorithm::RS256,
            Algorithm::Hs256 => KeyAlgorithm::HS256,
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => Ok(check(&config)),
        Command::Keygen {
            algorithm,
            out,
            kid,
        } => {
            let algorithm = KeyAlgorithm::from(algorithm);
            let kid = kid.unwrap_or_else(|| keygen::default_kid(algorithm));
            let key = keygen::generate(algorithm, &out, &kid).context("keygen")?;
            eprintln!("wrote {}", key.private_path.display());
            if let Some(public) = &key.public_path {
                eprintln!("wrote {}", public.display());
            }
            println!("{}", key.snippet);
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
        } => {
            demo::run(&demo::DemoOptions {
                listen,
                backend_listen,
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
    let server = proxy::server::build(Arc::new(ArcSwap::from_pointee(runtime)));
    proxy::server::run_until_signal(server);
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
    let grant = Grant {
        sub,
        roles,
        scope,
        ..Grant::default()
    };
    let ttl = ttl.unwrap_or(runtime.access_ttl);
    let (token, _) = mint(signer, grant, &runtime.issuer, &runtime.audience, ttl)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(runtime) => {
            println!("{}: ok", path.display());
            print!("{}", runtime.route_table());
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn report(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(2)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
