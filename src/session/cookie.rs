//! Browser mode's refresh cookie: its settings, reading it from a request's
//! `Cookie` headers, and the `Set-Cookie` value that carries or clears it.
//!
//! The cross-site checks of a cookie-authenticated call are the HTTP
//! layer's (`proxy::endpoints::common`); this module only knows cookies.

use http::header::COOKIE;
use http::HeaderMap;

/// Browser mode: the refresh token lives in an `HttpOnly` cookie.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    /// Origins whose cookie-authenticated calls are accepted:
    /// `sessions.allowed_origins` and the `[cors]` origins, one list.
    pub allowed_origins: Vec<String>,
    /// A header that a call without `Origin` must carry; a browser sends
    /// `Origin` on every cross-origin call, so this only admits clients
    /// that are no browser.
    pub csrf_header: http::HeaderName,
}

impl CookieSettings {
    /// The refresh token a request presents in its cookie.
    pub fn refresh_token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        cookie_pairs(headers)
            .filter(|pair| self.names(pair))
            .find_map(|pair| pair.split_once('=').map(|(_, value)| value))
    }

    /// The request's other cookies, as one `Cookie` value (`None` when
    /// there is none left): what an upstream may see. Every pair this
    /// cookie's name could be read from is gone, with or without a value.
    pub fn other_cookies(&self, headers: &HeaderMap) -> Option<String> {
        let kept: Vec<&str> = cookie_pairs(headers)
            .filter(|pair| !self.names(pair))
            .collect();
        (!kept.is_empty()).then(|| kept.join("; "))
    }

    /// `Set-Cookie` for the refresh token, scoped to `/auth`; an empty token
    /// with `max_age` 0 clears it.
    pub fn set_cookie(&self, token: &str, max_age: u64) -> String {
        format!(
            "{}={token}; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age={max_age}",
            self.name
        )
    }

    fn names(&self, pair: &str) -> bool {
        pair.split('=').next().map(str::trim) == Some(self.name.as_str())
    }
}

/// The `name=value` pairs of every `Cookie` header, trimmed, empty ones left out.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CookieSettings {
        CookieSettings {
            name: "prt".to_owned(),
            allowed_origins: Vec::new(),
            csrf_header: http::HeaderName::from_static("x-requested-with"),
        }
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, value.parse().expect("value"));
        }
        headers
    }

    #[test]
    fn the_refresh_cookie_is_read_from_any_cookie_header_and_kept_from_upstreams() {
        let headers = cookies(&["theme=dark; prt=prt_abc", "lang=en"]);
        let cookie = settings();
        assert_eq!(cookie.refresh_token(&headers), Some("prt_abc"));
        assert_eq!(
            cookie.other_cookies(&headers).as_deref(),
            Some("theme=dark; lang=en")
        );
        assert_eq!(cookie.other_cookies(&cookies(&["prt=x; prt"])), None);
        assert_eq!(cookie.refresh_token(&cookies(&["prtx=1; prt"])), None);
    }
}
