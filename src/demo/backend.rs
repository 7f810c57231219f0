//! The demo's stand-in for a legacy backend: it knows nothing about tokens
//! and shows what the gateway told it.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

pub struct DemoBackend;

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let path = request.uri.path().to_owned();
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
            .get("x-user-id")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = if path.starts_with("/public") {
            json!({ "page": "public", "message": "anyone may read this; the gateway checked no token" })
        } else if path.starts_with("/admin") {
            json!({ "page": "admin", "message": "only tokens with the admin role get here", "user": user })
        } else {
            json!({ "page": "echo", "method": request.method.as_str(), "path": path, "headers_received": headers })
        };
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
