//! `/admin/api-keys`: creating (the key shown once), listing and revoking
//! API keys. Each write goes through the revocation view, so it holds on
//! this instance at once and reaches the others through the change log.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::api_key::{hash_key, is_key_id, NewKey};
use crate::clock::unix_now;
use crate::proxy::respond::{Refusal, StoreCaller};
use crate::session::clean_device_label;
use crate::session::subject::{check_entitlements, check_subject};
use crate::store::{ApiKeyRecord, RevocationView, StoreError};

/// The longest lifetime a key may be given: ten years.
const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// What `POST /admin/api-keys` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    /// Seconds from now; absent: the key does not expire.
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    label: Option<String>,
}

/// Creates a key; the answer is the only place the key itself appears.
pub async fn create(view: &RevocationView, body: &[u8]) -> Result<(StatusCode, Value), Refusal> {
    let request: CreateRequest = serde_json::from_slice(body).map_err(|_| {
        Refusal::invalid_request(
            "expected {\"sub\", \"roles\", \"scope\", \"expires_in\", \"label\"}",
        )
    })?;
    check_subject(&request.sub).map_err(Refusal::invalid_request)?;
    check_entitlements(&request.roles, request.scope.as_deref())
        .map_err(Refusal::invalid_request)?;
    if request
        .expires_in
        .is_some_and(|s| s == 0 || s > MAX_LIFETIME_SECS)
    {
        return Err(Refusal::invalid_request(
            "expires_in must be 1 second to 10 years",
        ));
    }
    let new = NewKey::generate().ok_or_else(Refusal::internal)?;
    let now = unix_now();
    let record = ApiKeyRecord {
        id: new.id,
        hash: hex::encode(hash_key(&new.key)),
        sub: request.sub,
        roles: request.roles,
        scope: request.scope,
        label: clean_device_label(request.label.as_deref().unwrap_or("")),
        created: now,
        expires: request.expires_in.map(|s| now + s),
        revoked: None,
        last_used: None,
    };
    view.create_api_key(&record).await.map_err(store_down)?;
    tracing::info!(target: "portcullis::admin", id = %record.id, sub = %record.sub, "API key created");
    let mut body = listed(&record, now);
    body["key"] = new.key.into();
    Ok((StatusCode::CREATED, body))
}

/// Every key, newest first, without hashes; this instance's uses are
/// written first, so its own "last used" is current.
pub async fn list(view: &RevocationView) -> Result<(StatusCode, Value), Refusal> {
    if let Err(e) = view.write_api_key_uses().await {
        tracing::warn!(error = %e, "recording API key uses failed");
    }
    let mut keys = view.store().api_keys().await.map_err(store_down)?;
    keys.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let now = unix_now();
    let keys: Vec<Value> = keys.iter().map(|k| listed(k, now)).collect();
    Ok((StatusCode::OK, json!({ "api_keys": keys })))
}

/// Revokes a key by id; revoking it again changes nothing.
pub async fn revoke(view: &RevocationView, id: &str) -> Result<(StatusCode, Value), Refusal> {
    if !is_key_id(id) {
        return Err(Refusal::no_such_api_key());
    }
    let revoked = view
        .revoke_api_key(id, unix_now())
        .await
        .map_err(store_down)?
        .ok_or_else(Refusal::no_such_api_key)?;
    tracing::info!(target: "portcullis::admin", id, sub = %revoked.sub, "API key revoked");
    Ok((StatusCode::OK, listed(&revoked, unix_now())))
}

/// A key as lists show it: never its hash.
fn listed(key: &ApiKeyRecord, now: u64) -> Value {
    let status = match (key.revoked, key.expires) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if now >= at => "expired",
        _ => "active",
    };
    json!({
        "id": key.id,
        "prefix": key.prefix(),
        "label": key.label,
        "sub": key.sub,
        "roles": key.roles,
        "scope": key.scope,
        "created": key.created,
        "last_used": key.last_used,
        "expires": key.expires,
        "revoked": key.revoked,
        "status": status,
    })
}

fn store_down(error: StoreError) -> Refusal {
    Refusal::store_failed(&error, StoreCaller::Admin)
}
