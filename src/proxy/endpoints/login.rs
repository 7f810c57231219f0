//! `POST /auth/login`, delegated to the backend's own credential check.
//!
//! The client's request goes to `[login]` as it came, less hop-by-hop
//! headers and the gateway's own credentials (identity and forwarding
//! headers set by the gateway, as on every route). A 2xx answer
//! names the user in response headers; the gateway removes them, opens a
//! session and answers with a token pair instead. Anything else goes back
//! to the client unchanged, so the backend's own "wrong password" page
//! still works.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use pingora_core::connectors::http::Connector;
use pingora_http::{RequestHeader, ResponseHeader};
// The engine calls one HTTP request and its answer a "session"; here that word
// is the user's login session, so the engine's is an exchange.
use pingora_proxy::Session as Exchange;
use serde_json::Value;

use super::common::{deliver, issuer, read_body, token_reply};
use crate::config::{LoginSettings, Runtime};
use crate::proxy::client_addr::ClientAddress;
use crate::proxy::context::Tracing;
use crate::proxy::headers::{copy_end_to_end, from_upstream, strip_hop_by_hop, to_upstream};
use crate::proxy::respond::{Refusal, StoreCaller};
use crate::proxy::trace::in_span;
use crate::session::cookie::{login_cookie_mode, presented_refresh_token, NotPresented};
use crate::session::login_throttle::ThrottleSettings;
use crate::session::service::{Issuer, NewSession};
use crate::session::{clean_device_label, Entitlements, TokenPair};
use crate::state::AppState;
use crate::telemetry::{self, Outgoing};
use crate::vocabulary::DEVICE_NAME_HEADER;

/// This endpoint's log target, kept from before it moved into
/// `endpoints/`: operators filter on it.
const TARGET: &str = "portcullis::proxy::login";

/// Largest login response the gateway reads from the backend.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// The backend's answer.
struct LoginResponse {
    header: ResponseHeader,
    body: Bytes,
}

pub async fn serve(
    state: &AppState,
    runtime: &Runtime,
    exchange: &mut Exchange,
    id: &str,
    client: Option<&ClientAddress>,
    tracing: &Tracing,
) -> Result<&'static str, Refusal> {
    let login = runtime
        .login
        .as_ref()
        .ok_or(Refusal::login_not_configured())?;
    let issuer = issuer(runtime)?;
    let cookie_mode = cookie_mode(runtime, exchange)?;
    let body = read_body(exchange, runtime.server.header_read_timeout).await?;
    let mut attempt = Attempt::of(state, login, exchange, &body, client);
    attempt.begin()?;
    let device = device_label(exchange, &body);
    let presented = presented_refresh(runtime, exchange, &body)?;
    let body = without_refresh_token(exchange, body);
    // The backend's span is the parent its `traceparent` names.
    let span = tracing
        .request()
        .map(|t| t.child("login_backend", SpanKind::Client));
    let outgoing = Outgoing::of(tracing.is_on(), span.as_ref());
    let request = upstream_request(runtime, login, exchange, body.len(), id, client, &outgoing)?;
    let response = ask_backend(login, request, body).await;
    if let Some(span) = span {
        telemetry::finish(span, || backend_attributes(&response));
    }
    let response = response?;
    attempt.answered(response.header.status);
    if !response.header.status.is_success() {
        let status = response.header.status.as_u16();
        tracing::info!(target: "portcullis::session", request_id = id, status, "login refused by the backend");
        pass_through(exchange, runtime, login, response, id).await;
        return Ok(LOGIN_REFUSED);
    }
    let new = identity(login, &response.header, device)?;
    let opened = session_for(state, runtime, &issuer, new, presented.as_deref(), id);
    let pair = in_span(
        tracing.request(),
        "session_write",
        SpanKind::Internal,
        opened,
        |r| {
            vec![KeyValue::new(
                "portcullis.outcome",
                r.as_ref().map_or_else(|e| e.code, |_| "ok"),
            )]
        },
    )
    .await?;
    deliver(exchange, token_reply(runtime, &pair, cookie_mode, id)).await;
    Ok("ok")
}

/// One login attempt as the throttle sees it (`session::login_throttle`):
/// the user name the body gives and the client's address. Counted as a
/// failure from `begin` on; an attempt dropped before the backend judged
/// it (an error on the way) is not one.
struct Attempt<'a> {
    state: &'a AppState,
    settings: Option<&'a ThrottleSettings>,
    /// The user name counted; `None` when the body names more than one
    /// (the gateway and the backend could read different ones).
    user: Option<String>,
    ip: Option<std::net::IpAddr>,
    /// Counted by `begin`, not yet answered.
    pending: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let (true, Some(ip), Some(user)) = (self.pending, self.ip, &self.user) {
            self.state.login_throttle.not_judged(user, ip);
        }
    }
}

impl<'a> Attempt<'a> {
    fn of(
        state: &'a AppState,
        login: &'a LoginSettings,
        exchange: &Exchange,
        body: &[u8],
        client: Option<&ClientAddress>,
    ) -> Self {
        let settings = login.throttle.as_ref();
        let user = settings.map(|s| {
            let headers = &exchange.req_header().headers;
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            user_name_in(content_type, body, &s.username_field)
        });
        Self {
            state,
            settings,
            user: user.flatten(),
            ip: client.map(|c| c.ip),
            pending: false,
        }
    }

    /// 429 `rate_limited` while this pair or this address must wait:
    /// answered at once, the backend not asked.
    fn begin(&mut self) -> Result<(), Refusal> {
        let Some(settings) = self.settings else {
            return Ok(());
        };
        let Some(user) = &self.user else {
            return Err(Refusal::invalid_request(
                "the user name field is given more than once",
            ));
        };
        // An address the gateway could not learn is still one caller: the
        // attempts without one share a count rather than escape it.
        let ip = *self.ip.get_or_insert(UNKNOWN_ADDRESS);
        match self.state.login_throttle.begin(settings, user, ip) {
            Some(wait) => {
                tracing::info!(target: "portcullis::session", %ip, wait_secs = wait.as_secs(), "login throttled");
                Err(Refusal::rate_limited(wait.as_secs_f64().ceil() as u64))
            }
            None => {
                self.pending = true;
                Ok(())
            }
        }
    }

    /// A refusal of the backend (a 4xx, or a 3xx: many form logins answer
    /// a wrong password with a redirect back to the form) stays counted; a
    /// success clears the pair. A failing backend (5xx) said nothing about
    /// the credentials.
    fn answered(&mut self, status: http::StatusCode) {
        let (true, Some(ip), Some(user)) = (std::mem::take(&mut self.pending), self.ip, &self.user)
        else {
            return;
        };
        let throttle = &self.state.login_throttle;
        if status.is_success() {
            throttle.succeeded(user, ip);
        } else if status.is_server_error() || status.is_informational() {
            throttle.not_judged(user, ip);
        }
    }
}

/// The pair for a user the backend vouched for: the presented session
/// kept (step-up) when it is the user's and live, else a new session.
async fn session_for(
    state: &AppState,
    runtime: &Runtime,
    issuer: &Issuer<'_>,
    new: NewSession,
    presented: Option<&str>,
    id: &str,
) -> Result<TokenPair, Refusal> {
    if let Some(presented) = presented {
        let kept = runtime
            .sessions
            .reauthenticate(&state.view, issuer, presented, &new.sub)
            .await
            .map_err(Refusal::reauth_failed)?;
        if let Some((pair, kept)) = kept {
            tracing::info!(target: "portcullis::session", request_id = id, sub = %kept.sub, sid = %kept.sid, "re-authenticated");
            return Ok(pair);
        }
    }
    let store = state.view.store().as_ref();
    let (pair, opened) = runtime
        .sessions
        .open(store, issuer, new)
        .await
        .map_err(|e| Refusal::session_failed(e, StoreCaller::Login))?;
    tracing::info!(target: "portcullis::session", request_id = id, sub = %opened.sub, sid = %opened.sid, "login");
    Ok(pair)
}

/// The refresh token a login presents to keep its session (step-up): a
/// `refresh_token` field in the body, or the refresh cookie, under the
/// same rules as a refresh (`session::cookie::presented_refresh_token`).
/// `None` when there is none.
fn presented_refresh(
    runtime: &Runtime,
    exchange: &Exchange,
    body: &[u8],
) -> Result<Option<String>, Refusal> {
    let headers = &exchange.req_header().headers;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let in_body = body_fields(content_type, body).remove("refresh_token");
    let cookie = runtime.sessions.settings.cookie.as_ref();
    match presented_refresh_token(headers, in_body.as_deref(), cookie) {
        Ok(presented) => Ok(Some(presented.token.to_owned())),
        Err(NotPresented::Missing) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

/// Whether the answer goes in the cookie (`session::cookie::login_cookie_mode`).
fn cookie_mode(runtime: &Runtime, exchange: &Exchange) -> Result<bool, Refusal> {
    let cookie = runtime.sessions.settings.cookie.as_ref();
    Ok(login_cookie_mode(&exchange.req_header().headers, cookie)?)
}

/// The backend's answer within `[login] timeout`.
async fn ask_backend(
    login: &LoginSettings,
    request: RequestHeader,
    body: Vec<u8>,
) -> Result<LoginResponse, Refusal> {
    tokio::time::timeout(login.timeout, call(login, request, body))
        .await
        .map_err(|_| Refusal::gateway_timeout())?
        .map_err(|e| {
            tracing::warn!(target: TARGET, error = %e, "login upstream failed");
            Refusal::bad_gateway()
        })
}

/// The login backend's span: its status, or the contract code of the
/// failure to get one.
fn backend_attributes(response: &Result<LoginResponse, Refusal>) -> Vec<KeyValue> {
    match response {
        Ok(r) => vec![KeyValue::new(
            "http.response.status_code",
            i64::from(r.header.status.as_u16()),
        )],
        Err(refusal) => vec![KeyValue::new("portcullis.error_code", refusal.code)],
    }
}

/// The outcome logged and counted when the backend refused the
/// credentials and its answer went back to the client unchanged.
pub const LOGIN_REFUSED: &str = "login_refused";

/// The device label: a `device_name` field, else `X-Device-Name`, else the
/// User-Agent, cleaned like every label.
fn device_label(exchange: &Exchange, body: &[u8]) -> String {
    let headers = &exchange.req_header().headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_body = body_fields(header(CONTENT_TYPE.as_str()), body).remove("device_name");
    let label = from_body
        .as_deref()
        .or_else(|| header(DEVICE_NAME_HEADER))
        .or_else(|| header(USER_AGENT.as_str()))
        .unwrap_or("unknown device");
    clean_device_label(label)
}

/// The body for the backend: a refresh token presented to keep the session
/// is the gateway's credential, like the refresh cookie, and is taken out
/// (the other fields stay as sent, in their order). A body without one
/// goes as it came, byte for byte.
fn without_refresh_token(exchange: &Exchange, body: Vec<u8>) -> Vec<u8> {
    const FIELD: &str = "refresh_token";
    let content_type = exchange.req_header().headers.get(CONTENT_TYPE);
    let content_type = content_type.and_then(|v| v.to_str().ok());
    if !body_fields(content_type, &body).contains_key(FIELD) {
        return body;
    }
    if is_json(content_type) {
        if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&body) {
            map.remove(FIELD);
            return serde_json::to_vec(&map).unwrap_or_default();
        }
    }
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(&body).filter(|(name, _)| name != FIELD) {
        form.append_pair(&name, &value);
    }
    form.finish().into_bytes()
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    })
}

/// The address the attempts of clients without a known address count under.
const UNKNOWN_ADDRESS: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// The user name a login body gives in `field` (empty when none); `None`
/// when a form gives it more than once: backends differ on which one they
/// read (the first, or the last), so a throttle counting one could be
/// sent the victim's name in the other.
fn user_name_in(content_type: Option<&str>, body: &[u8], field: &str) -> Option<String> {
    if is_json(content_type) {
        return Some(
            body_fields(content_type, body)
                .remove(field)
                .unwrap_or_default(),
        );
    }
    let mut names = form_urlencoded::parse(body).filter(|(k, _)| k == field);
    let first = names.next().map(|(_, v)| v.into_owned());
    names.next().is_none().then(|| first.unwrap_or_default())
}

/// Form (`application/x-www-form-urlencoded`) or JSON string fields.
fn body_fields(content_type: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    if is_json(content_type) {
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

/// The client's request for the backend: its headers less the hop-by-hop
/// ones (its `Connection` nominations included), then what every request
/// to an upstream gets (`proxy::headers::to_upstream`: gateway-owned
/// headers and the gateway's own credentials out, this hop's forwarding
/// headers in), and the length of the body read.
fn upstream_request(
    runtime: &Runtime,
    login: &LoginSettings,
    exchange: &Exchange,
    body_len: usize,
    id: &str,
    client: Option<&ClientAddress>,
    trace: &Outgoing,
) -> Result<RequestHeader, Refusal> {
    let mut request = RequestHeader::build("POST", login.path.as_bytes(), None)
        .map_err(|_| Refusal::internal())?;
    copy_end_to_end(&exchange.req_header().headers, &mut request)?;
    let build = |request: &mut RequestHeader| -> pingora_core::Result<()> {
        to_upstream(runtime, exchange, request, &[], id, client, trace)?;
        request.insert_header(CONTENT_LENGTH, body_len)
    };
    build(&mut request).map_err(|_| Refusal::bad_request())?;
    Ok(request)
}

async fn call(
    login: &LoginSettings,
    request: RequestHeader,
    body: Vec<u8>,
) -> pingora_core::Result<LoginResponse> {
    let backend = login.upstream.select().ok_or_else(|| {
        pingora_core::Error::explain(pingora_core::ErrorType::ConnectNoRoute, "no login target")
    })?;
    let peer = login.upstream.peer(&backend);
    let (mut http, _reused) = connector().get_http_session(&peer).await?;
    http.write_request_header(Box::new(request)).await?;
    http.write_request_body(Bytes::from(body), true).await?;
    http.finish_request_body().await?;
    // Informational answers (100 Continue, 103 Early Hints) come before the
    // real one and carry no body: skip them (RFC 9110 §15.2).
    loop {
        http.read_response_header().await?;
        if !http
            .response_header()
            .is_some_and(|h| h.status.is_informational())
        {
            break;
        }
    }
    let header = http.response_header().cloned().ok_or_else(|| {
        pingora_core::Error::explain(
            pingora_core::ErrorType::InvalidHTTPHeader,
            "no response header",
        )
    })?;
    let mut body = Vec::new();
    while let Some(chunk) = http.read_response_body().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return pingora_core::Error::e_explain(
                pingora_core::ErrorType::ReadError,
                "login response too large",
            );
        }
        body.extend_from_slice(&chunk);
    }
    connector()
        .release_http_session(http, &peer, Some(Duration::from_secs(60)))
        .await;
    Ok(LoginResponse {
        header,
        body: Bytes::from(body),
    })
}

/// Who the backend says logged in. A 2xx without a subject is the
/// backend's fault: 502.
fn identity(
    login: &LoginSettings,
    header: &ResponseHeader,
    device: String,
) -> Result<NewSession, Refusal> {
    let text = |name: &http::HeaderName| {
        header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let sub = text(&login.subject_header)
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .ok_or_else(|| {
            tracing::warn!(target: TARGET, "login upstream answered 2xx without a subject header");
            Refusal::bad_gateway()
        })?;
    let roles = text(&login.roles_header).map(roles).unwrap_or_default();
    let claims = text(&login.claims_header)
        .map(claims)
        .transpose()?
        .unwrap_or_default();
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let entitlements = Entitlements {
        roles,
        scope,
        claims,
    }
    .without_reserved_claims();
    Ok(NewSession {
        sub: sub.to_owned(),
        entitlements,
        device,
    })
}

/// The comma-separated roles header.
fn roles(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The claims header: a JSON object, or the backend's fault (502).
fn claims(text: &str) -> Result<serde_json::Map<String, Value>, Refusal> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => {
            tracing::warn!(target: TARGET, "login upstream sent claims that are not a JSON object");
            Err(Refusal::bad_gateway())
        }
    }
}

/// A non-2xx answer goes back as it came, less the hop-by-hop headers and
/// the identity headers (which only mean something on success), and with
/// what every upstream answer gets (`proxy::headers::from_upstream`, under
/// the global CORS policy: the endpoints have no route of their own).
async fn pass_through(
    exchange: &mut Exchange,
    runtime: &Runtime,
    login: &LoginSettings,
    response: LoginResponse,
    id: &str,
) {
    let mut header = response.header;
    strip_hop_by_hop(&mut header);
    for name in [
        &login.subject_header,
        &login.roles_header,
        &login.claims_header,
    ] {
        header.remove_header(name);
    }
    let written = async {
        from_upstream(
            runtime,
            &runtime.cors.global,
            &mut header,
            "_auth_login",
            id,
            exchange.is_http2(),
        )?;
        header.insert_header(CONTENT_LENGTH, response.body.len())?;
        exchange
            .write_response_header(Box::new(header), false)
            .await?;
        exchange
            .write_response_body(Some(response.body), true)
            .await
    };
    if let Err(e) = written.await {
        tracing::debug!(target: TARGET, error = %e, "could not pass the login answer through");
    }
}
