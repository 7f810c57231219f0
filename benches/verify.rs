//! The verify path per algorithm (cache miss and hit), path normalisation
//! and route matching. Run: `cargo bench --bench verify`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::issue::{mint, Grant};
use portcullis::config::{self, Runtime};
use portcullis::proxy::path::normalize_path;

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
    let grant = Grant {
        sub: "bench-user".into(),
        roles: vec!["user".into()],
        ..Grant::default()
    };
    let signer = runtime.signer.as_ref().expect("signer");
    mint(
        signer,
        grant,
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

criterion_group!(benches, verify, routing);
criterion_main!(benches);
