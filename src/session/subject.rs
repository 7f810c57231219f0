//! The user ids and entitlements (roles, scope) the admin API accepts (for the sessions it
//! opens, and the users it lists, revokes, disables or enables): only a
//! user id and roles a token could carry and the gateway would forward as
//! they are. (A login takes the subject its backend names; the
//! gateway checks it when it forwards it, see `auth::identity`.) Each
//! check answers with the description a refusal gives.

use crate::auth::identity::{role_separable, subject_forwardable};

/// Longest user id the admin API accepts.
const MAX_SUBJECT_BYTES: usize = 512;
/// Longest role or scope string the admin API takes.
const MAX_GRANT_BYTES: usize = 256;

/// A user id the gateway would forward from a token, without control
/// characters: anything else names nobody who could ever be let in (or
/// issues a token no route accepts).
pub fn check_subject(sub: &str) -> Result<(), &'static str> {
    if sub.len() > MAX_SUBJECT_BYTES
        || !subject_forwardable(sub)
        || sub.chars().any(char::is_control)
    {
        return Err("the user id must have 1 to 512 bytes and no control characters");
    }
    Ok(())
}

/// Roles and scope the gateway would accept in a token and forward as they
/// are: a role with a comma would split into roles never granted, one with
/// a control character would be dropped from the roles header.
pub fn check_entitlements(roles: &[String], scope: Option<&str>) -> Result<(), &'static str> {
    let role_ok = |r: &String| {
        r.len() <= MAX_GRANT_BYTES && role_separable(r) && !r.chars().any(char::is_control)
    };
    if !roles.iter().all(role_ok) {
        return Err("each role must have 1 to 256 bytes, no comma and no control characters");
    }
    // RFC 6749 §3.3: scope tokens are printable ASCII without `"` or `\`,
    // separated by spaces.
    let scope_ok = scope.is_none_or(|s| {
        s.len() <= MAX_GRANT_BYTES
            && s.bytes()
                .all(|b| b == b' ' || (b.is_ascii_graphic() && b != b'"' && b != b'\\'))
    });
    if !scope_ok {
        return Err("scope must be up to 256 printable ASCII characters, space-separated");
    }
    Ok(())
}
