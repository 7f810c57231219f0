//! The admin listener: health, readiness, and the revocation API.
//!
//! `/admin/*` needs `Authorization: Bearer <admin token>`, compared in
//! constant time. A write is acknowledged only after the store accepted it,
//! so a revocation is never confirmed and then lost; it is also applied to
//! this instance's view at once, before the change log brings it back.
//! Answers and refusals are built by `proxy::respond`, like the proxy's;
//! session rules (listing, issuing, device labels) are `session`'s.

pub mod api_keys;
mod audit;
pub mod client;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthError;
use crate::clock::unix_now;
use crate::metrics::METRICS;
use crate::proxy::endpoints::common::{issuer, read_body, refuse_announced_too_large};
use crate::proxy::headers::new_request_id;
use crate::proxy::respond::{Refusal, Reply, StoreCaller};
use crate::session::service::NewSession;
use crate::session::subject::{check_entitlements, check_subject};
use crate::session::{clean_device_label, Entitlements};
use crate::state::AppState;
use crate::store::StoreError;

const REALM: &str = "portcullis-admin";

pub struct AdminApi {
    state: Arc<AppState>,
}

impl AdminApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// The route label of the admin API's requests in metrics and logs.
const ADMIN_ROUTE: &str = "_admin";

/// What an admin request answered, before it is built into a response.
enum Answer {
    Json(StatusCode, Value),
    Metrics(Vec<u8>),
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request_id = new_request_id();
        let mut note = audit::Note::default();
        let answered = self.dispatch(session, &mut note).await;
        let outcome = answered.as_ref().map_or_else(|r| r.code, |_| "ok");
        let caller = audit::caller_of(session);
        audit::record(&self.state.audit, &note, &request_id, caller, outcome);
        let reply = match answered {
            Ok(Answer::Json(status, body)) => Reply::json(status, &body, &request_id),
            Ok(Answer::Metrics(page)) => Reply::metrics(page),
            Err(refusal) => {
                log_refusal(session, &refusal, &request_id);
                refusal.reply(&request_id)
            }
        };
        reply.into_response()
    }
}

/// Refusals are logged and counted like the proxy's: a wrong admin token
/// is what an operator alerts on.
fn log_refusal(session: &ServerSession, refusal: &Refusal, request_id: &str) {
    let status = refusal.status.as_u16();
    crate::metrics::endpoint(ADMIN_ROUTE).count(status, refusal.code);
    tracing::info!(
        target: "portcullis::admin",
        request_id,
        method = %session.req_header().method,
        route = ADMIN_ROUTE,
        status,
        outcome = refusal.code,
        "admin request refused"
    );
}

impl AdminApi {
    async fn dispatch(
        &self,
        session: &mut ServerSession,
        note: &mut audit::Note,
    ) -> Result<Answer, Refusal> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => {
                return Ok(Answer::Json(StatusCode::OK, json!({"status": "ok"})))
            }
            (&Method::GET, "/readyz") => return Ok(self.readiness()),
            (&Method::GET, "/metrics") => return Ok(self.metrics()),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/admin/") else {
            return Err(Refusal::no_route());
        };
        // Named before the caller is authorised: a refused attempt is
        // recorded as well.
        note.action = audit::action_of(&method, &rest.split('/').collect::<Vec<_>>());
        // Before anything else: a body announced too large is never waited for.
        refuse_announced_too_large(session)?;
        self.authorize(session)?;
        let segments: Vec<String> = rest
            .split('/')
            .map(decode_segment)
            .collect::<Result<_, _>>()?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        note.resource = audit::resource_of(&segments);
        self.admin(session, method, &segments, note).await
    }

    /// An authorised `/admin/...` request, by its decoded path segments.
    async fn admin(
        &self,
        session: &mut ServerSession,
        method: Method,
        segments: &[&str],
        note: &mut audit::Note,
    ) -> Result<Answer, Refusal> {
        match (method, segments) {
            (Method::POST, ["tokens", "revoke"]) => {
                let body = read_body(session, self.body_deadline()).await?;
                self.revoke_token(&body, note).await
            }
            (Method::POST, ["sessions"]) => {
                let body = read_body(session, self.body_deadline()).await?;
                let new = issue_request(&body)?;
                note.resource = Some(new.sub.clone());
                self.open_session(new).await
            }
            (Method::GET, ["users", sub, "sessions"]) => self.user_sessions(sub).await,
            (Method::DELETE, ["sessions", sid]) => self.end_session(sid).await,
            (Method::POST, ["users", sub, action]) => self.user_action(sub, action).await,
            (Method::POST, ["reload"]) => self.reload().await,
            (Method::POST | Method::GET, ["api-keys"]) | (Method::DELETE, ["api-keys", _]) => {
                self.api_keys(session, segments).await
            }
            (
                _,
                ["tokens", "revoke"]
                | ["sessions"]
                | ["sessions", _]
                | ["users", _, _]
                | ["api-keys"]
                | ["api-keys", _],
            ) => Err(Refusal::admin_method_not_allowed()),
            _ => Err(Refusal::no_route()),
        }
    }

    /// `/admin/api-keys`: create (`POST`), list (`GET`), revoke (`DELETE …/{id}`).
    async fn api_keys(
        &self,
        session: &mut ServerSession,
        segments: &[&str],
    ) -> Result<Answer, Refusal> {
        let view = &self.state.view;
        let method = session.req_header().method.clone();
        let (status, body) = match (method, segments) {
            (Method::POST, _) => {
                let body = read_body(session, self.body_deadline()).await?;
                api_keys::create(view, &body).await?
            }
            (Method::DELETE, [_, id]) => api_keys::revoke(view, id).await?,
            _ => api_keys::list(view).await?,
        };
        Ok(Answer::Json(status, body))
    }

    /// How long a body may take to arrive: the head's deadline.
    fn body_deadline(&self) -> std::time::Duration {
        self.state.runtime.load().server.header_read_timeout
    }

    async fn open_session(&self, new: NewSession) -> Result<Answer, Refusal> {
        let runtime = self.state.runtime.load_full();
        let issuer = issuer(&runtime)?;
        let (pair, session) = runtime
            .sessions
            .open(self.state.view.store().as_ref(), &issuer, new)
            .await
            .map_err(|e| Refusal::session_failed(e, StoreCaller::Admin))?;
        tracing::info!(target: "portcullis::admin", sub = %session.sub, sid = %session.sid, "session issued");
        let mut body = serde_json::to_value(&pair).unwrap_or(Value::Null);
        if let Some(object) = body.as_object_mut() {
            object.insert("sid".into(), session.sid.into());
        }
        Ok(Answer::Json(StatusCode::OK, body))
    }

    async fn user_sessions(&self, sub: &str) -> Result<Answer, Refusal> {
        check_subject(sub).map_err(Refusal::invalid_request)?;
        let runtime = self.state.runtime.load();
        let store = self.state.view.store().as_ref();
        let devices = runtime
            .sessions
            .list(store, sub, None)
            .await
            .map_err(store_down)?;
        let body = serde_json::to_value(devices).map_err(|_| Refusal::internal())?;
        Ok(Answer::Json(StatusCode::OK, body))
    }

    async fn end_session(&self, sid: &str) -> Result<Answer, Refusal> {
        let runtime = self.state.runtime.load_full();
        let ended = runtime
            .sessions
            .end(&self.state.view, sid, runtime.access_ttl)
            .await
            .map_err(store_down)?;
        match ended {
            Some(session) => {
                tracing::info!(target: "portcullis::admin", sid, sub = %session.sub, "session ended");
                Ok(Answer::Json(
                    StatusCode::OK,
                    json!({"ended": sid, "sub": session.sub}),
                ))
            }
            None => Err(Refusal::no_such_session()),
        }
    }

    /// Re-reads the configuration file; a bad file keeps the running
    /// configuration and the answer says why, with file:line:col.
    async fn reload(&self) -> Result<Answer, Refusal> {
        let done = self.state.reload_detached().await.map_err(|e| {
            let errors = match e.diagnostics() {
                [] => vec![e.to_string()],
                list => list.iter().map(ToString::to_string).collect(),
            };
            Refusal::config_invalid(errors)
        })?;
        Ok(Answer::Json(
            StatusCode::OK,
            json!({"reloaded": true, "routes": done.routes, "needs_restart": done.needs_restart}),
        ))
    }

    /// The Prometheus page; gauges that describe the view are read now.
    fn metrics(&self) -> Answer {
        let view = &self.state.view;
        let staleness = view.staleness().map_or(f64::INFINITY, |d| d.as_secs_f64());
        METRICS.view_staleness.set(staleness);
        METRICS.revoked_tokens.set(view.revoked_len() as i64);
        METRICS.cached_users.set(view.cached_users() as i64);
        for issuer in self.state.runtime.load().verifier.external_issuers() {
            if let Some(age) = issuer.jwks.as_ref().and_then(|j| j.key_age()) {
                METRICS
                    .jwks_key_age
                    .with_label_values(&[issuer.issuer.as_str()])
                    .set(age.as_secs_f64());
            }
        }
        crate::config::runtime::upstream::export_target_health(&self.state.runtime.load().pools());
        Answer::Metrics(METRICS.encode())
    }

    fn readiness(&self) -> Answer {
        let view = &self.state.view;
        let staleness = view.staleness().map(|d| d.as_millis() as u64);
        let runtime = self.state.runtime.load();
        let verifier = &runtime.verifier;
        let keys =
            verifier.keyring().keys().next().is_some() || !verifier.external_issuers().is_empty();
        // An issuer whose keys were never fetched cannot verify anything yet.
        let jwks_ok = verifier
            .external_issuers()
            .iter()
            .all(|i| i.jwks.as_ref().is_none_or(|j| j.has_keys()));
        let draining = self.state.is_draining();
        let ready = !draining && view.is_fresh() && keys && jwks_ok;
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Answer::Json(
            status,
            json!({
                "ready": ready,
                "store": view.store().kind(),
                "view_staleness_ms": staleness,
                "max_staleness_ms": view.max_staleness().as_millis() as u64,
                "revoked_tokens": view.revoked_len(),
                "issuer_keys_loaded": jwks_ok,
                "draining": draining,
            }),
        )
    }

    fn authorize(&self, session: &ServerSession) -> Result<(), Refusal> {
        let runtime = self.state.runtime.load();
        let Some(expected) = runtime.server.admin_token.as_ref() else {
            return Err(Refusal::admin_disabled());
        };
        let presented = crate::auth::extract_bearer(&session.req_header().headers, 4096)
            .map_err(|e| Refusal::auth(&e, REALM))?
            .ok_or_else(|| Refusal::auth(&AuthError::Missing, REALM))?;
        if expected.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::auth(&AuthError::Invalid("admin_token"), REALM))
        }
    }

    async fn revoke_token(&self, body: &[u8], note: &mut audit::Note) -> Result<Answer, Refusal> {
        let Some((jti, exp)) = self.revocation_target(body)? else {
            return Ok(Answer::Json(
                StatusCode::OK,
                json!({"revoked": false, "reason": "the token has already expired"}),
            ));
        };
        // The token's id, never the token (a body may carry either).
        note.resource = Some(jti.clone());
        self.check_revocation(&jti, exp)?;
        self.state
            .view
            .revoke_token(&jti, exp)
            .await
            .map_err(store_down)?;
        tracing::info!(target: "portcullis::admin", jti = %jti, exp, "token revoked");
        Ok(Answer::Json(
            StatusCode::OK,
            json!({"revoked": true, "jti": jti, "exp": exp}),
        ))
    }

    /// The `(jti, exp)` a revocation names, given as such or as the token;
    /// `None` for a token that has already expired (nothing to revoke).
    fn revocation_target(&self, body: &[u8]) -> Result<Option<(String, u64)>, Refusal> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ByJti {
            jti: String,
            exp: u64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ByToken {
            token: String,
        }
        if let Ok(by) = serde_json::from_slice::<ByJti>(body) {
            return Ok(Some((by.jti, by.exp)));
        }
        let Ok(by) = serde_json::from_slice::<ByToken>(body) else {
            return Err(Refusal::invalid_request(
                "expected {\"jti\", \"exp\"} or {\"token\"}",
            ));
        };
        match self
            .state
            .runtime
            .load()
            .verifier
            .verify_uncached(by.token.trim())
        {
            Ok(claims) => Ok(Some((claims.jti, claims.exp))),
            Err(AuthError::Expired) => Ok(None),
            Err(_) => Err(Refusal::invalid_request(
                "the token is not one this gateway accepts",
            )),
        }
    }

    fn check_revocation(&self, jti: &str, exp: u64) -> Result<(), Refusal> {
        if jti.is_empty() || jti.len() > 512 {
            return Err(Refusal::invalid_request(
                "jti must have 1 to 512 characters",
            ));
        }
        // The gateway refuses tokens expiring later than this, so a later
        // `exp` names no token and would only pin an entry (or, past 2^63,
        // fail the store write).
        if exp > self.state.runtime.load().verifier.latest_exp(unix_now()) {
            return Err(Refusal::invalid_request(
                "exp lies further ahead than tokens.max_token_lifetime allows",
            ));
        }
        Ok(())
    }

    async fn user_action(&self, sub: &str, action: &str) -> Result<Answer, Refusal> {
        check_subject(sub).map_err(Refusal::invalid_request)?;
        let view = &self.state.view;
        let record = match action {
            "revoke" => view.bump_user(sub, unix_now()).await,
            "disable" => view.set_disabled(sub, true).await,
            "enable" => view.set_disabled(sub, false).await,
            _ => return Err(Refusal::no_route()),
        }
        .map_err(store_down)?;
        tracing::info!(target: "portcullis::admin", sub, action, version = record.version, "user updated");
        Ok(Answer::Json(
            StatusCode::OK,
            json!({"sub": sub, "user": record}),
        ))
    }
}

/// The session `POST /admin/sessions` asks for, checked like the claims
/// of a token the gateway would accept.
fn issue_request(body: &[u8]) -> Result<NewSession, Refusal> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        sub: String,
        #[serde(default)]
        roles: Vec<String>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        claims: serde_json::Map<String, Value>,
        #[serde(default)]
        device: Option<String>,
    }
    let request: Request = serde_json::from_slice(body).map_err(|_| {
        Refusal::invalid_request("expected {\"sub\", \"roles\", \"scope\", \"claims\", \"device\"}")
    })?;
    check_subject(&request.sub).map_err(Refusal::invalid_request)?;
    check_entitlements(&request.roles, request.scope.as_deref())
        .map_err(Refusal::invalid_request)?;
    let entitlements = Entitlements {
        roles: request.roles,
        scope: request.scope,
        claims: request.claims,
    }
    .without_reserved_claims();
    let device = request
        .device
        .as_deref()
        .unwrap_or("issued by the admin API");
    Ok(NewSession {
        sub: request.sub,
        entitlements,
        device: clean_device_label(device),
    })
}

fn store_down(error: StoreError) -> Refusal {
    Refusal::store_failed(&error, StoreCaller::Admin)
}

fn decode_segment(segment: &str) -> Result<String, Refusal> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Refusal::invalid_request("path segments must be UTF-8"))
}
