//! `GET /.well-known/jwks.json`: every configured public key (RFC 7517).

use http::StatusCode;
use serde_json::{json, Value};

use crate::config::Runtime;
use crate::proxy::respond::Reply;

/// How long clients and shared caches may keep the key set: short enough
/// that a new key is seen soon after a rotation is configured.
const MAX_AGE_SECS: u64 = 300;

pub fn serve(runtime: &Runtime, id: &str) -> Reply {
    let mut keys: Vec<&Value> = runtime
        .verifier
        .keyring()
        .keys()
        .filter_map(|k| k.jwk.as_ref())
        .collect();
    keys.sort_by_key(|k| k["kid"].as_str().unwrap_or_default().to_owned());
    Reply::json(StatusCode::OK, &json!({"keys": keys}), id).cacheable_for(MAX_AGE_SECS)
}
