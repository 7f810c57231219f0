//! The demo's stand-in for a legacy backend: it knows nothing about tokens,
//! checks passwords its own way at `POST /login`, and shows what the
//! gateway told it.

use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::vocabulary::{
    LOGIN_CLAIMS_HEADER, LOGIN_ROLES_HEADER, LOGIN_SUBJECT_HEADER, USER_ID_HEADER,
};

/// The demo's users: name, password, roles.
pub const DEMO_USERS: [(&str, &str, &str); 2] = [
    ("alice", "wonderland", "user"),
    ("root", "changeme", "admin,user"),
];

const LOGIN_PAGE: &str = include_str!("login.html");
/// The browser client the page is built on, served from this repository's copy.
const CLIENT_LIBRARY: &str = include_str!("../../clients/js/index.js");

/// The backend, with its page written for the gateway in front of it.
pub struct DemoBackend {
    page: String,
}

impl DemoBackend {
    /// `refresh_hint` is the gateway's `[tokens] refresh_hint`, so the page
    /// states the window the gateway really uses; `None` where that
    /// configuration is not known here (the standalone `demo-backend`).
    pub fn new(refresh_hint: Option<Duration>) -> Self {
        let window = match refresh_hint {
            Some(hint) => format!("{} seconds", hint.as_secs()),
            None => "stretch (the gateway's <code>refresh_hint</code>)".to_owned(),
        };
        Self {
            page: LOGIN_PAGE.replace("{{REFRESH_HINT}}", &window),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if session.req_header().method == Method::POST && path == "/login" {
            return login(session).await;
        }
        if path == "/public/" || path == "/public/index.html" {
            return respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.page.as_bytes().to_vec(),
                &[],
            );
        }
        if path == "/public/portcullis-client.js" {
            return respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                CLIENT_LIBRARY.as_bytes().to_vec(),
                &[],
            );
        }
        let request = session.req_header();
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    json!(String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let user = request
            .headers
            .get(USER_ID_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = if path.starts_with("/public") {
            json!({ "page": "public", "message": "anyone may read this; the gateway checked no token" })
        } else if path.starts_with("/admin") {
            json!({ "page": "admin", "message": "only tokens with the admin role get here", "user": user })
        } else {
            json!({ "page": "echo", "method": request.method.as_str(), "path": path, "headers_received": headers })
        };
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        respond(StatusCode::OK, "application/json", body, &[])
    }
}

/// The backend's own credential check: on success it names the user in
/// response headers, which the gateway turns into a session.
async fn login(session: &mut ServerSession) -> Response<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > 16 * 1024 {
            break;
        }
    }
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let json_fields: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .or_else(|| json_fields[name].as_str().map(str::to_owned))
    };
    let (user, password) = (
        field("username").unwrap_or_default(),
        field("password").unwrap_or_default(),
    );
    match DEMO_USERS
        .iter()
        .find(|(u, p, _)| *u == user && *p == password)
    {
        Some((user, _, roles)) => {
            let claims = format!("{{\"email\":\"{user}@demo.example\"}}");
            let headers = [
                // The gateway's `[login]` defaults, which the demo keeps.
                (LOGIN_SUBJECT_HEADER, *user),
                (LOGIN_ROLES_HEADER, *roles),
                (LOGIN_CLAIMS_HEADER, claims.as_str()),
            ];
            respond(StatusCode::OK, "text/plain", b"welcome".to_vec(), &headers)
        }
        None => respond(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            b"wrong user name or password\n".to_vec(),
            &[],
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}
