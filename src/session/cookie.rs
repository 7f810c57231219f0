//! Browser mode's refresh cookie: its settings, reading it from a request's
//! `Cookie` headers, the `Set-Cookie` value that carries or clears it, the
//! cross-site check every cookie-authenticated call passes, and which
//! refresh token a refresh presents (body or cookie) and where its answer
//! goes. Works on the request's `HeaderMap`; reading the request and
//! writing the answer is the HTTP layer's.

use http::header::{COOKIE, ORIGIN};
use http::HeaderMap;

const SEC_FETCH_SITE: &str = "sec-fetch-site";

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

    /// Cross-site protection for cookie-authenticated calls: an allowed
    /// `Origin` (the `[cors]` origins and `sessions.allowed_origins`, one
    /// list), or the browser's own word that the page is on the gateway's
    /// origin (`Sec-Fetch-Site: same-origin`, which no script can set), or,
    /// from a client that is no browser (neither header), the custom header.
    pub fn same_site_call(&self, headers: &HeaderMap) -> bool {
        let same_origin = headers
            .get(SEC_FETCH_SITE)
            .is_some_and(|v| v.as_bytes() == b"same-origin");
        match headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
            Some(origin) => same_origin || self.allowed_origins.iter().any(|a| a == origin),
            None => same_origin || headers.contains_key(&self.csrf_header),
        }
    }

    fn names(&self, pair: &str) -> bool {
        pair.split('=').next().map(str::trim) == Some(self.name.as_str())
    }
}

/// A request made by a browser: it carries `Origin` or `Sec-Fetch-Site`,
/// which browsers set on every cross-origin and every `POST` request and
/// which a page's script can neither set nor remove.
pub fn browser_request(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN) || headers.contains_key(SEC_FETCH_SITE)
}

/// The refresh token a refresh presents, and whether its answer goes in
/// the cookie.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub token: &'a str,
    pub cookie_mode: bool,
}

/// Whether a login is answered in the cookie: a browser is, another client
/// (no `Origin`, no `Sec-Fetch-Site`) gets its refresh token in the body.
/// In cookie mode a cross-site form could log the victim's browser into
/// the attacker's account (login CSRF): same rule as for refresh.
pub fn login_cookie_mode(
    headers: &HeaderMap,
    cookie: Option<&CookieSettings>,
) -> Result<bool, NotPresented> {
    let browser = browser_request(headers);
    if cookie.is_some_and(|cookie| browser && !cookie.same_site_call(headers)) {
        return Err(NotPresented::CrossSite);
    }
    Ok(browser)
}

/// Why a request may not use the refresh cookie (a login or a refresh
/// from a site that may not), or presents no refresh token at all.
#[derive(Debug, PartialEq, Eq)]
pub enum NotPresented {
    /// Neither in the body nor in a cookie.
    Missing,
    /// In cookie mode, from a site that may not use the cookie.
    CrossSite,
}

/// Per request: a browser's refresh (one that sends `Origin` or
/// `Sec-Fetch-Site`) is always checked for its origin and answered in the
/// cookie; another client's token travels in the body both ways, unless it
/// presents the cookie (then the same-site check applies).
pub fn presented_refresh_token<'a>(
    headers: &'a HeaderMap,
    in_body: Option<&'a str>,
    cookie: Option<&CookieSettings>,
) -> Result<Presented<'a>, NotPresented> {
    let browser = browser_request(headers);
    let (token, checked) = match (in_body, cookie) {
        (Some(token), Some(cookie)) if browser => (token, Some(cookie)),
        (Some(token), _) => (token, None),
        (None, Some(cookie)) => (
            cookie.refresh_token(headers).ok_or(NotPresented::Missing)?,
            Some(cookie),
        ),
        (None, None) => return Err(NotPresented::Missing),
    };
    if checked.is_some_and(|cookie| !cookie.same_site_call(headers)) {
        return Err(NotPresented::CrossSite);
    }
    Ok(Presented {
        token,
        cookie_mode: browser || in_body.is_none(),
    })
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
