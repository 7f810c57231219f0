//! The verify path per algorithm (cache miss and hit), path normalisation
//! and route matching. Run: `cargo bench --bench verify`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::issue::{mint, Issuance};
use portcullis::config::runtime::path::normalize_path;
use portcullis::config::{self, Runtime};
use portcullis::store::view::OnUnavailable;
use portcullis::store::{
    self, Change, Retention, RevocationView, StoreLocation, UserRecord, ViewSettings,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// A runtime whose signing key is `kid`, with `routes` extra routes.
fn runtime(kid: &str, algorithm: &str, file_key: &str, file: &str, routes: usize) -> Runtime {
    let mut text = format!(
        "[tokens]\nissuer = \"https://issuer.bench\"\naudience = \"bench\"\nsigning_key = \"{kid}\"\n\n\
         [[tokens.keys]]\nkid = \"{kid}\"\nalgorithm = \"{algorithm}\"\n{file_key} = \"{}/{file}\"\n\n\
         [[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n",
        fixtures().display()
    );
    for i in 0..routes {
        text.push_str(&format!(
            "\n[[routes]]\npath = \"/service-{i}/api\"\nupstream = \"u\"\n"
        ));
    }
    config::load_str(&text, Path::new("bench.toml")).expect("bench config")
}

fn token(runtime: &Runtime) -> String {
    let issuance = Issuance {
        sub: "bench-user".into(),
        roles: vec!["user".into()],
        ..Issuance::default()
    };
    let signer = runtime.signer.as_ref().expect("signer");
    mint(
        signer,
        issuance,
        &runtime.issuer,
        &runtime.audience,
        Duration::from_secs(3600),
    )
    .expect("mint")
    .0
}

fn verify(c: &mut Criterion) {
    let keys = [
        ("HS256", "test-hs256", "secret_file", "test-hs256.secret"),
        ("EdDSA", "test-eddsa", "private_key_file", "test-eddsa.pem"),
        ("ES256", "test-es256", "private_key_file", "test-es256.pem"),
        ("RS256", "test-rs256", "private_key_file", "test-rs256.pem"),
    ];
    let mut group = c.benchmark_group("verify");
    for (algorithm, kid, file_key, file) in keys {
        let runtime = runtime(kid, algorithm, file_key, file, 0);
        let token = token(&runtime);
        group.bench_function(format!("{algorithm}/miss"), |b| {
            b.iter(|| {
                runtime
                    .verifier
                    .verify_uncached(black_box(&token))
                    .expect("valid")
            })
        });
        runtime.verifier.verify(&token).expect("warm");
        group.bench_function(format!("{algorithm}/hit"), |b| {
            b.iter(|| runtime.verifier.verify(black_box(&token)).expect("valid"))
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let runtime = runtime(
        "test-hs256",
        "HS256",
        "secret_file",
        "test-hs256.secret",
        50,
    );
    let mut group = c.benchmark_group("routing");
    group.bench_function("normalize_path", |b| {
        b.iter(|| normalize_path(black_box(b"/service-42/api/v1//orders/./123")).expect("ok"))
    });
    group.bench_function("find/50-routes", |b| {
        b.iter(|| {
            runtime.router.find(
                black_box(Some("api.example.com")),
                black_box("/service-42/api/v1/orders/123"),
            )
        })
    });
    group.finish();
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The whole per-request check with a warm cache: verified-token cache hit,
/// revoked-jti lookup and user record, with 1,000,000 revoked jtis and
/// 1,000,000 cached users loaded.
fn full_check(c: &mut Criterion) {
    const ENTRIES: u64 = 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Retention {
        after_expiry: Duration::from_secs(30),
        log_entries: 1000,
    };
    let store = rt
        .block_on(store::open(
            &StoreLocation::Sqlite(dir.path().join("bench.db")),
            retention,
        ))
        .expect("store");
    let settings = ViewSettings {
        max_staleness: Duration::from_secs(3600),
        on_unavailable: OnUnavailable::Deny,
        user_cache_entries: ENTRIES + 10,
    };
    let view = RevocationView::new(store, settings);
    view.confirm_fresh(std::time::Instant::now());

    let before = rss_bytes();
    let exp = portcullis::clock::unix_now() + 3600;
    view.reset((0..ENTRIES).map(|i| (format!("{i:032x}"), exp)).collect());
    let after_revoked = rss_bytes();
    rt.block_on(async {
        for i in 0..ENTRIES {
            let record = UserRecord {
                version: 1,
                disabled: false,
                not_before: 0,
                revision: 1,
            };
            view.apply(&Change::User {
                sub: format!("user-{i}"),
                record,
            })
            .await;
        }
    });
    let after_users = rss_bytes();
    eprintln!(
        "memory: {} bytes per revoked jti, {} bytes per cached user (RSS delta over {ENTRIES} entries)",
        (after_revoked - before) / ENTRIES,
        (after_users - after_revoked) / ENTRIES,
    );

    let runtime = runtime("test-hs256", "HS256", "secret_file", "test-hs256.secret", 0);
    let issuance = Issuance {
        sub: "user-424242".into(),
        roles: vec!["user".into()],
        ver: 1,
        ..Issuance::default()
    };
    let signer = runtime.signer.as_ref().expect("signer");
    let token = mint(
        signer,
        issuance,
        &runtime.issuer,
        &runtime.audience,
        Duration::from_secs(3600),
    )
    .expect("mint")
    .0;
    runtime.verifier.verify(&token).expect("warm");

    c.bench_function("check/full-warm-1M", |b| {
        b.to_async(&rt).iter(|| async {
            let verified = runtime.verifier.verify(black_box(&token)).expect("valid");
            view.check(&verified.claims).await.expect("allowed");
        })
    });
}

criterion_group!(benches, verify, routing, full_check);
criterion_main!(benches);
