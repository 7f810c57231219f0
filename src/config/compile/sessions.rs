//! `[sessions]` → [`Sessions`] (lifetimes, failure limits, cookie mode) and
//! `[login]` → [`LoginSettings`] (where `POST /auth/login` is delegated and
//! which of its response headers carry the identity).

use http::HeaderName;

use super::identity::header_name;
use super::upstreams::{named_pool, Pools};
use crate::config::raw::{RawLogin, RawSessions};
use crate::config::runtime::cors::CorsTable;
use crate::config::runtime::LoginSettings;
use crate::config::Diagnostics;
use crate::session::login_throttle::ThrottleSettings;
use crate::session::{CookieSettings, SessionSettings, Sessions};
use crate::vocabulary::CSRF_HEADER;

pub(super) fn sessions(raw: &RawSessions, cors: &CorsTable, sink: &mut Diagnostics) -> Sessions {
    let mut settings = session_settings(raw, sink);
    if let Some(cookie) = &mut settings.cookie {
        // One list: the origins `[cors]` lets send credentials may make
        // cookie-authenticated calls; origins allowed only to read (no
        // `allow_credentials`) may not log a browser in or rotate its token.
        if cors.global.credentials {
            cookie
                .allowed_origins
                .extend(cors.global.origins.iter().cloned());
        }
    }
    Sessions::new(settings)
}

fn session_settings(raw: &RawSessions, sink: &mut Diagnostics) -> SessionSettings {
    let csrf_header =
        header_name(&raw.csrf_header, sink).unwrap_or_else(|| HeaderName::from_static(CSRF_HEADER));
    if raw.max_age.0.is_zero() || raw.refresh_ttl.0.is_zero() {
        sink.at(
            raw.csrf_header.span(),
            "sessions.max_age and sessions.refresh_ttl must be positive",
        );
    }
    SessionSettings {
        refresh_ttl: raw.refresh_ttl.0,
        max_age: raw.max_age.0,
        reuse_grace: raw.reuse_grace.0,
        max_failures: raw.max_failures.max(1),
        failure_window: raw.failure_window.0,
        cookie: raw.cookie.then(|| CookieSettings {
            name: raw.cookie_name.clone(),
            allowed_origins: raw.allowed_origins.clone(),
            csrf_header,
        }),
    }
}

/// Stops at an unknown upstream or at the first invalid header name, so
/// the header names after it go unchecked.
pub(super) fn login(
    raw: &RawLogin,
    pools: &Pools,
    sink: &mut Diagnostics,
) -> Option<LoginSettings> {
    let upstream = named_pool(&raw.upstream, pools, sink)?;
    if !raw.path.get_ref().starts_with('/') {
        sink.at(raw.path.span(), "login.path must start with '/'");
    }
    Some(LoginSettings {
        upstream,
        path: raw.path.get_ref().clone(),
        subject_header: header_name(&raw.subject_header, sink)?,
        roles_header: header_name(&raw.roles_header, sink)?,
        claims_header: header_name(&raw.claims_header, sink)?,
        timeout: raw.timeout.0,
        throttle: login_throttle(raw, sink),
    })
}

/// `throttle…`: delays of at least a second, a cap no lower than the
/// first delay, a window that outlasts the cap, a field name to read.
fn login_throttle(raw: &RawLogin, sink: &mut Diagnostics) -> Option<ThrottleSettings> {
    let (delay, max_delay) = (&raw.throttle_delay, &raw.throttle_max_delay);
    if delay.get_ref().0 < std::time::Duration::from_secs(1) {
        sink.at(delay.span(), "login.throttle_delay must be at least 1s");
    }
    if max_delay.get_ref().0 < delay.get_ref().0 {
        sink.at(
            max_delay.span(),
            "login.throttle_max_delay must be at least throttle_delay",
        );
    }
    let window = &raw.throttle_window;
    if window.get_ref().0 < max_delay.get_ref().0 {
        sink.at(
            window.span(),
            "login.throttle_window must be at least throttle_max_delay",
        );
    }
    let field = &raw.throttle_username_field;
    if field.get_ref().trim().is_empty() {
        sink.at(
            field.span(),
            "login.throttle_username_field must name a field",
        );
    }
    raw.throttle.then(|| ThrottleSettings {
        pair_failures: *raw.throttle_failures.get_ref(),
        address_failures: *raw.throttle_address_failures.get_ref(),
        delay: delay.get_ref().0,
        max_delay: max_delay.get_ref().0,
        window: window.get_ref().0,
        username_field: field.get_ref().clone(),
    })
}
