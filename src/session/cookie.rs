//! Browser mode's refresh cookie: its settings, reading it from a request's
//! `Cookie` headers, the `Set-Cookie` value that carries or clears it, the
//! cross-site check every cookie-authenticated call passes, and which
//! refresh token a refresh presents (body or cookie) and where its answer
//! goes. Works on the request's `HeaderMap`; reading the request and
//! writing the answer is the HTTP layer's.

use http::header::{COOKIE, HOST, ORIGIN};
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
    /// The refresh token a request presents in its cookie. Two cookies of
    /// this name mean one was planted beside the gateway's own (a browser
    /// sends the one with the longer path first): neither is used.
    pub fn refresh_token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let mut ours = cookie_pairs(headers).filter(|pair| self.names(pair));
        match (ours.next(), ours.next()) {
            (Some(pair), None) => pair.split_once('=').map(|(_, value)| value),
            _ => None,
        }
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

    /// Cross-site protection for cookie-authenticated calls.
    ///
    /// A request with `Origin` passes only when it names one origin, and
    /// that origin is allowed (the `[cors]` origins and
    /// `sessions.allowed_origins`, one list) or is the gateway's own (its
    /// host is the request's `Host`, which a browser sets and no page can
    /// change): `Sec-Fetch-Site` cannot vouch for a foreign `Origin`, and
    /// two `Origin` headers come from no browser. Without `Origin`, the
    /// browser's own word that the page is on the gateway's origin
    /// (`Sec-Fetch-Site: same-origin`, which no script can set) passes, and
    /// from a client that is no browser (neither header), the custom header.
    pub fn same_site_call(&self, headers: &HeaderMap) -> bool {
        let mut origins = headers.get_all(ORIGIN).iter();
        match (origins.next(), origins.next()) {
            (Some(_), Some(_)) => false,
            (Some(origin), None) => origin
                .to_str()
                .is_ok_and(|origin| self.allowed_origin(origin, headers)),
            (None, _) => {
                headers
                    .get(SEC_FETCH_SITE)
                    .is_some_and(|v| v.as_bytes() == b"same-origin")
                    || headers.contains_key(&self.csrf_header)
            }
        }
    }

    /// An allowed origin, or the gateway's own: `https://` and the
    /// request's `Host`. The refresh cookie is `Secure`, so a browser
    /// holds it for the gateway's `https://` origin only; a page on
    /// `http://` and the same host (one a network attacker can serve) is
    /// another origin. Loopback is the exception browsers make too: they
    /// keep `Secure` cookies for `http://localhost` and `127.0.0.1`, where
    /// the demo runs.
    fn allowed_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let own = || {
            let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://").filter(|a| loopback(a)));
            authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
        };
        self.allowed_origins.iter().any(|a| a == origin) || own()
    }

    /// Whether a `Set-Cookie` value (from an upstream) would set this
    /// cookie in the browser: its name, trimmed, is this one's, or it has
    /// no `=` at all (a browser then reads the text as a nameless value,
    /// which the gateway's reader would still find by name), or its name is
    /// empty (`=portcullis_refresh=X`: the browser keeps a nameless cookie
    /// and sends its value back, `portcullis_refresh=X`, RFC 6265bis §5.6).
    pub fn is_set_by(&self, set_cookie: &[u8]) -> bool {
        let text = String::from_utf8_lossy(set_cookie);
        let pair = text.split(';').next().unwrap_or_default();
        let sent_back = pair.trim_start().trim_start_matches(['=', ' ', '\t']);
        self.names(pair) || self.names(sent_back)
    }

    fn names(&self, pair: &str) -> bool {
        pair.split('=').next().map(str::trim) == Some(self.name.as_str())
    }
}

/// Whether an authority (`host[:port]`) names this machine: `localhost`,
/// `127.0.0.0/8` or `[::1]`.
fn loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A request made by a browser: it carries `Origin` or a `Sec-Fetch-*`
/// header, which browsers set on every cross-origin and every `POST`
/// request and which a page's script can neither set nor remove.
pub fn browser_request(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"))
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
    /// In cookie mode, a browser's refresh token in the body: a browser
    /// holds it in the `HttpOnly` cookie only, so one in the body was read
    /// out of somewhere a script could reach.
    BrowserBodyToken,
}

/// Per request: a browser's refresh (one that sends `Origin` or
/// `Sec-Fetch-*`) is always checked for its origin, must present the
/// cookie (not a body token) and is answered in the cookie; another
/// client's token travels in the body both ways, unless it presents the
/// cookie (then the same-site check applies).
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
    if browser && cookie.is_some() && in_body.is_some() {
        return Err(NotPresented::BrowserBodyToken);
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
    fn set_cookie_for_the_refresh_cookie_is_recognised_in_any_spacing() {
        let cookie = settings();
        for value in [
            "prt=x; Path=/auth",
            " prt =x",
            "prt",
            "prt=; Max-Age=0",
            "=prt=x; Path=/auth/token",
            " = prt=x",
        ] {
            assert!(cookie.is_set_by(value.as_bytes()), "{value}");
        }
        for value in ["prtx=1", "theme=prt", "x=1; prt=2", "Prt=1"] {
            assert!(!cookie.is_set_by(value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn two_refresh_cookies_present_none() {
        let cookie = settings();
        assert_eq!(
            cookie.refresh_token(&cookies(&["prt=a; theme=x"])),
            Some("a")
        );
        assert_eq!(
            cookie.refresh_token(&cookies(&["prt=planted; prt=a"])),
            None
        );
        assert_eq!(
            cookie.refresh_token(&cookies(&["prt=planted", "prt=a"])),
            None
        );
    }

    #[test]
    fn the_origin_check_refuses_two_origins_and_foreign_ones_whatever_sec_fetch_site_says() {
        let mut cookie = settings();
        cookie.allowed_origins = vec!["https://app.example".to_owned()];
        let with = |lines: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, "gw.example".parse().expect("host"));
            for (name, value) in lines {
                let name = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
                headers.append(name, value.parse().expect("value"));
            }
            headers
        };
        let same = ("sec-fetch-site", "same-origin");
        assert!(cookie.same_site_call(&with(&[("origin", "https://app.example")])));
        assert!(cookie.same_site_call(&with(&[("origin", "https://gw.example"), same])));
        // The cookie is `Secure`: the same host over plain HTTP is another
        // origin, loopback (where browsers keep `Secure` cookies) excepted.
        assert!(!cookie.same_site_call(&with(&[("origin", "http://gw.example")])));
        let mut local = HeaderMap::new();
        local.insert(HOST, "127.0.0.1:8080".parse().expect("host"));
        local.insert(ORIGIN, "http://127.0.0.1:8080".parse().expect("origin"));
        assert!(cookie.same_site_call(&local));
        assert!(cookie.same_site_call(&with(&[same])));
        assert!(!cookie.same_site_call(&with(&[("origin", "https://evil.example"), same])));
        assert!(!cookie.same_site_call(&with(&[
            ("origin", "https://app.example"),
            ("origin", "https://app.example"),
        ])));
    }

    #[test]
    fn a_browser_may_not_present_the_refresh_token_in_the_body() {
        let mut cookie = settings();
        cookie.allowed_origins = vec!["https://app.example".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, "https://app.example".parse().expect("origin"));
        assert_eq!(
            presented_refresh_token(&headers, Some("prt_x"), Some(&cookie)),
            Err(NotPresented::BrowserBodyToken)
        );
        let mut fetch = HeaderMap::new();
        fetch.insert("sec-fetch-mode", "cors".parse().expect("mode"));
        fetch.insert("x-requested-with", "1".parse().expect("csrf"));
        assert_eq!(
            presented_refresh_token(&fetch, Some("prt_x"), Some(&cookie)),
            Err(NotPresented::BrowserBodyToken)
        );
        let cli = HeaderMap::new();
        assert!(presented_refresh_token(&cli, Some("prt_x"), Some(&cookie)).is_ok());
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
