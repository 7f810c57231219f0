//! The endpoints the gateway serves itself: refresh, logout, devices and
//! the JWKS. Login lives in `login.rs`.
//!
//! Only the paths below are taken (each also with one trailing slash); any
//! other `/auth/...` path goes through the route table like every request.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, COOKIE, ORIGIN, RETRY_AFTER, SET_COOKIE};
use http::{HeaderName, Method, StatusCode};
use pingora_core::protocols::http::ServerSession;
use pingora_proxy::Session;
use serde_json::{json, Value};

use super::respond::{send_json, Refusal};
use crate::auth::{extract_bearer, AuthError, VerifiedToken};
use crate::config::Runtime;
use crate::metrics::METRICS;
use crate::session::grant;
use crate::session::ratelimit::TokenKey;
use crate::session::service::Issuer;
use crate::session::{CookieSettings, RefreshError, TokenPair};
use crate::state::AppState;
use crate::store::RevocationView;

/// Largest body the gateway reads for its own endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Token,
    Logout,
    ListSessions,
    EndSession(String),
    Jwks,
}

/// The endpoint a normalised path names, if any; a known path with the
/// wrong method is refused with 405.
pub fn endpoint_for(method: &Method, path: &str) -> Option<Result<Endpoint, Refusal>> {
    // `/auth/sessions/{sid}/` is the same endpoint: many backends read a
    // trailing slash as the same resource, so such a path must not slip
    // past the gateway to an upstream (with the caller's credentials).
    let path = match path.strip_suffix('/') {
        Some(trimmed) if trimmed.starts_with("/auth/") || trimmed == "/.well-known/jwks.json" => {
            trimmed
        }
        _ => path,
    };
    let (expected, endpoint) = match path {
        "/auth/login" => (Method::POST, Endpoint::Login),
        "/auth/token" => (Method::POST, Endpoint::Token),
        "/auth/logout" => (Method::POST, Endpoint::Logout),
        "/auth/sessions" => (Method::GET, Endpoint::ListSessions),
        "/.well-known/jwks.json" => (Method::GET, Endpoint::Jwks),
        _ => {
            let sid = path
                .strip_prefix("/auth/sessions/")
                .filter(|s| !s.is_empty() && !s.contains('/'))?;
            (Method::DELETE, Endpoint::EndSession(sid.to_owned()))
        }
    };
    Some(
        if *method == expected || (expected == Method::GET && *method == Method::HEAD) {
            Ok(endpoint)
        } else {
            Err(Refusal::other(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the method is not allowed here",
            ))
        },
    )
}

/// Serves a gateway endpoint; the response is written when this returns
/// `Ok`, with the outcome to log and count (`ok`, or the code of a refusal
/// written with extra headers).
pub async fn serve(
    endpoint: Endpoint,
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    request_id: &str,
) -> Result<&'static str, Refusal> {
    let served = match endpoint {
        Endpoint::Login => return super::login::serve(state, runtime, session, request_id).await,
        Endpoint::Token => return token(state, runtime, session, request_id).await,
        Endpoint::Logout => logout(state, runtime, session, request_id).await,
        Endpoint::ListSessions => list_sessions(state, runtime, session, request_id).await,
        Endpoint::EndSession(sid) => end_session(state, runtime, session, &sid, request_id).await,
        Endpoint::Jwks => jwks(runtime, session, request_id).await,
    };
    served.map(|()| "ok")
}

/// Writes a JSON answer; a failed write is the client's loss, not a refusal.
async fn answer(
    session: &mut Session,
    status: StatusCode,
    body: &Value,
    extra: &[(HeaderName, String)],
    id: &str,
) {
    if let Err(e) = send_json(session, status, body, extra, id).await {
        tracing::debug!(error = %e, "could not write the answer");
    }
}

/// The bearer token's identity, checked like a request to a protected route.
pub async fn authenticate_bearer(
    runtime: &Runtime,
    view: &RevocationView,
    headers: &http::HeaderMap,
) -> Result<Arc<VerifiedToken>, AuthError> {
    let token = extract_bearer(headers, runtime.max_token_bytes)?.ok_or(AuthError::Missing)?;
    super::verify_and_check(runtime, view, token).await
}

async fn caller(
    runtime: &Runtime,
    state: &AppState,
    session: &Session,
) -> Result<Arc<VerifiedToken>, Refusal> {
    authenticate_bearer(runtime, &state.view, &session.req_header().headers)
        .await
        .map_err(|e| Refusal::auth(&e, &runtime.realm))
}

pub fn issuer(runtime: &Runtime) -> Result<Issuer<'_>, Refusal> {
    let signer = runtime.signer.as_ref().ok_or_else(|| {
        Refusal::other(
            StatusCode::NOT_FOUND,
            "not_found",
            "this gateway issues no tokens: no signing key is configured",
        )
    })?;
    Ok(Issuer {
        signer,
        issuer: &runtime.issuer,
        audience: &runtime.audience,
        access_ttl: runtime.access_ttl,
    })
}

/// Reads the whole request body, refusing more than `MAX_BODY_BYTES`; the
/// admin listener reads its bodies with this too.
pub async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| Refusal::bad_request())?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Refusal::other(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "the request body is too large",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Form (`application/x-www-form-urlencoded`) or JSON string fields.
pub fn body_fields(content_type: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let is_json = content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if is_json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return HashMap::new();
        };
        return map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect();
    }
    form_urlencoded::parse(body).into_owned().collect()
}

fn content_type(session: &Session) -> Option<String> {
    session
        .req_header()
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Cross-site protection for cookie-authenticated calls: an allowed
/// `Origin` (the `[cors]` origins and `sessions.allowed_origins`, one list
/// compiled into the cookie settings), or the browser's own word that the
/// page is on the gateway's origin (`Sec-Fetch-Site: same-origin`, which no
/// script can set), or, from a client that is no browser (neither header),
/// the custom header.
pub fn same_site_call(session: &Session, cookie: &CookieSettings) -> bool {
    let headers = &session.req_header().headers;
    let same_origin = headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    match headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            same_origin
                || cookie
                    .allowed_origins
                    .iter()
                    .any(|allowed| allowed == origin)
        }
        None => same_origin || headers.contains_key(&cookie.csrf_header),
    }
}

/// A request made by a browser: it carries `Origin` or `Sec-Fetch-Site`,
/// which browsers set on every cross-origin and every `POST` request and
/// which a page's script can neither set nor remove.
pub fn browser_request(headers: &http::HeaderMap) -> bool {
    headers.contains_key(ORIGIN) || headers.contains_key(SEC_FETCH_SITE)
}

const SEC_FETCH_SITE: &str = "sec-fetch-site";

pub fn cross_site() -> Refusal {
    Refusal::other(
        StatusCode::FORBIDDEN,
        "cross_site_request",
        "cookie-authenticated calls must come from an allowed origin",
    )
}

/// `Set-Cookie` for the refresh token, scoped to `/auth`.
pub fn refresh_cookie(cookie: &CookieSettings, token: &str, max_age: u64) -> (HeaderName, String) {
    (
        SET_COOKIE,
        format!(
            "{}={token}; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age={max_age}",
            cookie.name
        ),
    )
}

/// The token response: in cookie mode (`cookie_mode`, chosen per request)
/// the refresh token goes to the cookie only, never to script-readable JSON.
pub fn token_answer(
    runtime: &Runtime,
    pair: &TokenPair,
    cookie_mode: bool,
) -> (Value, Vec<(HeaderName, String)>) {
    let settings = &runtime.sessions.settings;
    match settings.cookie.as_ref().filter(|_| cookie_mode) {
        Some(cookie) => (
            json!({"access_token": pair.access_token, "token_type": pair.token_type, "expires_in": pair.expires_in}),
            vec![refresh_cookie(
                cookie,
                &pair.refresh_token,
                settings.refresh_ttl.as_secs(),
            )],
        ),
        None => (
            serde_json::to_value(pair).unwrap_or(Value::Null),
            Vec::new(),
        ),
    }
}

/// `POST /auth/token`: the refresh grant (RFC 6749 §6), errors per §5.2.
async fn token(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<&'static str, Refusal> {
    let outcome = |label: &str| METRICS.refreshes.with_label_values(&[label]).inc();
    let issuer = issuer(runtime)?;
    let body = read_body(session).await?;
    let fields = grant::parameters(content_type(session).as_deref(), &body)
        .map_err(|e| oauth_error("invalid_request", e.description()))?;
    match fields.get("grant_type").map(String::as_str) {
        None => return Err(oauth_error("invalid_request", "grant_type is required")),
        Some("refresh_token") => {}
        Some(_) => {
            return Err(oauth_error(
                "unsupported_grant_type",
                "only the refresh_token grant is supported",
            ))
        }
    }
    let (presented, cookie_mode) = presented_token(session, runtime, &fields)?;
    // Only this token's own failures count: a valid token is never slowed
    // down by what other clients (behind the same address) presented.
    let key = TokenKey::of(&presented);
    if let Some(wait) = state.refresh_failures.blocked(&key) {
        outcome(TOO_MANY_REQUESTS);
        let refusal = Refusal::other(
            StatusCode::TOO_MANY_REQUESTS,
            TOO_MANY_REQUESTS,
            "this refresh token failed too often; retry later",
        );
        if let Err(e) = refusal
            .send_with(session, id, &[(RETRY_AFTER, wait.to_string())])
            .await
        {
            tracing::debug!(error = %e, "could not write the answer");
        }
        return Ok(TOO_MANY_REQUESTS);
    }
    match runtime
        .sessions
        .refresh(&state.view, &issuer, &presented)
        .await
    {
        Ok(pair) => {
            outcome("ok");
            let (body, headers) = token_answer(runtime, &pair, cookie_mode);
            answer(session, StatusCode::OK, &body, &headers, id).await;
            Ok("ok")
        }
        Err(RefreshError::InvalidGrant(reason)) => {
            outcome("invalid_grant");
            tracing::info!(target: "portcullis::session", reason, "refresh refused");
            state.refresh_failures.record_failure(key);
            Err(oauth_error(
                "invalid_grant",
                "the refresh token is invalid, expired or revoked",
            ))
        }
        Err(RefreshError::Store(e)) => {
            outcome("unavailable");
            METRICS.store_errors.with_label_values(&["refresh"]).inc();
            tracing::warn!(error = %e, "refresh failed: store unavailable");
            Err(Refusal::auth(&AuthError::Unavailable, &runtime.realm))
        }
        Err(RefreshError::Internal(what)) => {
            outcome("error");
            tracing::error!(what, "refresh failed");
            Err(Refusal::internal())
        }
    }
}

const TOO_MANY_REQUESTS: &str = "too_many_requests";

/// The presented refresh token, and whether the answer goes in the cookie.
/// Per request: a browser's refresh (one that sends `Origin` or
/// `Sec-Fetch-Site`) is always checked for its origin and answered in the
/// cookie; another client's token travels in the body both ways, unless it
/// presents the cookie (then the same-site check applies).
fn presented_token(
    session: &Session,
    runtime: &Runtime,
    fields: &HashMap<String, String>,
) -> Result<(String, bool), Refusal> {
    let cookie = runtime.sessions.settings.cookie.as_ref();
    let browser = browser_request(&session.req_header().headers);
    let in_body = fields.get("refresh_token");
    let presented = match (in_body, cookie) {
        (Some(token), Some(cookie)) if browser => {
            if !same_site_call(session, cookie) {
                return Err(cross_site());
            }
            token.clone()
        }
        (Some(token), _) => token.clone(),
        (None, Some(cookie)) => {
            let token = cookie_value(session, &cookie.name)
                .ok_or_else(|| oauth_error("invalid_request", "refresh_token is required"))?;
            if !same_site_call(session, cookie) {
                return Err(cross_site());
            }
            token
        }
        (None, None) => return Err(oauth_error("invalid_request", "refresh_token is required")),
    };
    Ok((presented, browser || in_body.is_none()))
}

/// A store failure: logged with what failed, answered 503 `auth_unavailable`.
fn store_unavailable(error: crate::store::StoreError, what: &'static str, realm: &str) -> Refusal {
    METRICS.store_errors.with_label_values(&["endpoint"]).inc();
    tracing::warn!(error = %error, "{what}");
    Refusal::auth(&AuthError::Unavailable, realm)
}

fn oauth_error(code: &'static str, description: &'static str) -> Refusal {
    Refusal::other(StatusCode::BAD_REQUEST, code, description)
}

/// `POST /auth/logout`: ends the caller's session and revokes its tokens.
async fn logout(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<(), Refusal> {
    let caller = caller(runtime, state, session).await?;
    let claims = &caller.claims;
    let unavailable = |e| store_unavailable(e, "logout failed: store unavailable", &runtime.realm);
    let ended = match claims.sid.as_deref() {
        Some(sid) => runtime
            .sessions
            .end(&state.view, sid, runtime.access_ttl)
            .await
            .map_err(unavailable)?,
        None => None,
    };
    if ended.is_none() {
        // A token from outside any session: revoke just this token, which
        // needs its `jti`.
        if claims.jti.is_empty() {
            return Err(Refusal::other(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "this token carries no jti and cannot be logged out; revoke the user instead",
            ));
        }
        {
            state
                .view
                .store()
                .revoke_token(&claims.jti, claims.exp)
                .await
                .map_err(unavailable)?;
            let change = crate::store::Change::TokenRevoked {
                jti: claims.jti.clone(),
                exp: claims.exp,
            };
            state.view.apply(&change).await;
        }
    }
    tracing::info!(target: "portcullis::session", request_id = id, sub = %claims.sub, sid = claims.sid.as_deref().unwrap_or("-"), "logout");
    let clear = runtime
        .sessions
        .settings
        .cookie
        .as_ref()
        .map(|c| refresh_cookie(c, "", 0));
    answer(
        session,
        StatusCode::OK,
        &json!({"logged_out": true}),
        clear.as_slice(),
        id,
    )
    .await;
    Ok(())
}

/// `GET /auth/sessions`: the caller's live sessions, the current one marked.
async fn list_sessions(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<(), Refusal> {
    let caller = caller(runtime, state, session).await?;
    let body = sessions_json(state, &caller.claims.sub, caller.claims.sid.as_deref())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "listing sessions failed");
            Refusal::auth(&AuthError::Unavailable, &runtime.realm)
        })?;
    answer(session, StatusCode::OK, &body, &[], id).await;
    Ok(())
}

/// `{"sessions": [...]}` for a user: live sessions only, newest first.
pub async fn sessions_json(
    state: &AppState,
    sub: &str,
    current: Option<&str>,
) -> Result<Value, crate::store::StoreError> {
    let now = crate::auth::unix_now();
    let sessions = state.view.store().sessions_of(sub, now).await?;
    // A logout everywhere (version bump) ended every older session.
    let version = state.view.store().user(sub).await?.version;
    let list: Vec<Value> = sessions
        .iter()
        .filter(|s| s.is_live(now) && s.version >= version)
        .map(|s| {
            json!({
                "sid": s.sid,
                "device": s.device,
                "created": s.created,
                "last_used": s.last_refresh,
                "expires_at": s.expires_at.min(s.last_refresh + s.idle_ttl),
                "current": current == Some(s.sid.as_str()),
            })
        })
        .collect();
    Ok(json!({"sessions": list}))
}

/// `DELETE /auth/sessions/{sid}`: sign out one of the caller's devices.
async fn end_session(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    sid: &str,
    id: &str,
) -> Result<(), Refusal> {
    let caller = caller(runtime, state, session).await?;
    let unavailable = |e| {
        store_unavailable(
            e,
            "ending a session failed: store unavailable",
            &runtime.realm,
        )
    };
    // Another user's session is answered exactly like a missing one.
    let owned = state
        .view
        .store()
        .session(sid)
        .await
        .map_err(unavailable)?
        .filter(|s| s.sub == caller.claims.sub);
    if owned.is_none() {
        return Err(Refusal::other(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such session",
        ));
    }
    runtime
        .sessions
        .end(&state.view, sid, runtime.access_ttl)
        .await
        .map_err(unavailable)?;
    tracing::info!(target: "portcullis::session", request_id = id, sub = %caller.claims.sub, sid, "session ended by its user");
    answer(session, StatusCode::OK, &json!({"ended": sid}), &[], id).await;
    Ok(())
}

/// `GET /.well-known/jwks.json`: every configured public key (RFC 7517).
async fn jwks(runtime: &Arc<Runtime>, session: &mut Session, id: &str) -> Result<(), Refusal> {
    let mut keys: Vec<&Value> = runtime
        .verifier
        .keyring()
        .keys()
        .filter_map(|k| k.jwk.as_ref())
        .collect();
    keys.sort_by_key(|k| k["kid"].as_str().unwrap_or_default().to_owned());
    let cache = (
        http::header::CACHE_CONTROL,
        "public, max-age=300".to_owned(),
    );
    answer(
        session,
        StatusCode::OK,
        &json!({"keys": keys}),
        &[cache],
        id,
    )
    .await;
    Ok(())
}
