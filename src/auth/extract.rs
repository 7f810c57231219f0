//! Bearer token extraction from a request (RFC 6750 §2).
//!
//! Only the `Authorization` header is accepted. A token in the query string
//! (§2.3) is refused outright because URLs end up in logs, caches and
//! `Referer` headers; the form-body method (§2.2) is not supported.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::AuthError;

/// The bearer token of the request, `Ok(None)` when there is none.
///
/// Another scheme (`Basic …`) is not ours to judge and counts as no token;
/// two `Authorization` headers or a malformed `Bearer` credential are a
/// client bug and answer 400 `invalid_request`.
pub fn extract_bearer(
    headers: &HeaderMap,
    max_token_bytes: usize,
) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest("several_authorization_headers"));
    }
    // One pass over the bytes for the usual well-formed token; the reason
    // for a refusal is worked out only when there is one.
    // Spaces and tabs around the value (RFC 9110 §5.5): the only ASCII
    // whitespace a header value can hold.
    let trimmed = value.as_bytes().trim_ascii();
    // The scheme ends at a space or a tab: `Bearer<TAB>token` is a bearer
    // credential spelled wrong (RFC 6750 §2.1 allows only spaces), not
    // another scheme that would pass as the backend's own.
    let (scheme, separator, rest) = match trimmed.iter().position(|b| matches!(b, b' ' | b'\t')) {
        Some(i) => (&trimmed[..i], trimmed[i], &trimmed[i + 1..]),
        None => (trimmed, b' ', &[][..]),
    };
    let visible = || value.to_str().is_ok();
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return match visible() {
            true => Ok(None),
            false => Err(AuthError::InvalidRequest("authorization_not_ascii")),
        };
    }
    if separator != b' ' {
        return Err(AuthError::InvalidRequest("malformed_bearer"));
    }
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    let token = &rest[spaces..];
    let token = match std::str::from_utf8(token) {
        Ok(token) if is_b64token(token.as_bytes()) => token,
        _ if !visible() => return Err(AuthError::InvalidRequest("authorization_not_ascii")),
        _ => return Err(AuthError::InvalidRequest("malformed_bearer")),
    };
    if token.len() > max_token_bytes {
        return Err(AuthError::Invalid("oversized"));
    }
    Ok(Some(token))
}

/// Whether a byte may stand in `b64token` before its `=` padding. Range
/// checks rather than a table: the check over a whole token then compiles
/// to vector compares (a table lookup per byte cost a tenth of an HS256
/// request's instructions).
fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() | matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
/// (RFC 6750 §2.1): what a bearer credential may be made of.
pub fn is_b64token(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|b| **b == b'=').count();
    let body = &token[..token.len() - padding];
    // Folded without stopping early, in chunks, so the compiler can
    // vectorise each chunk; a bad byte still ends the scan at its chunk.
    !body.is_empty()
        && body
            .chunks(64)
            .all(|chunk| chunk.iter().fold(true, |ok, b| ok & is_b64token_char(*b)))
}

/// Whether the query string carries a parameter any backend might read as
/// one of the gateway's credentials, `access_token`, `refresh_token` or
/// an API key (`api_key`, `x-api-key`).
/// Such requests are refused on every route so the token is never
/// forwarded or logged.
///
/// Backends split parameters on `;` as well as `&` (the HTML 4 and
/// Servlet conventions), decode escapes more than once when proxies stack
/// up, and frameworks fold a name's odd characters: PHP reads `access.token`
/// and `access token` as `access_token`, `access_token[]` as an array of
/// it, and `a[access_token]` as a member of `a` that a framework may hand
/// on as `access_token`; a Unicode-folding framework (NFKC) reads the
/// fullwidth `ａccess_token` as `access_token`, an unclosed `access[token`
/// as `access_token`. So every parameter name is percent-decoded until it
/// stops changing, read whole and split at its brackets, each part folded from fullwidth to ASCII, stripped of everything but letters
/// and digits and compared case-insensitively with `accesstoken`,
/// `refreshtoken`, `apikey` and `xapikey`.
///
/// A proxy that decodes once turns `x=%26access_token%3Dt` into
/// `x=&access_token=t`, so the query is also read after decoding it whole.
pub fn query_has_access_token(query: &str) -> bool {
    let names_one = |q: &str| {
        q.split(['&', ';'])
            .any(|pair| reads_as_credential(pair.split('=').next().unwrap_or(pair)))
    };
    // Without an escape, decoding changes nothing: one reading is enough.
    names_one(query) || (query.contains('%') && names_one(&decoded_whole(query)))
}

/// The query percent-decoded until it stops changing (bounded passes).
fn decoded_whole(query: &str) -> String {
    let mut text = query.to_owned();
    for _ in 0..MAX_DECODE_PASSES {
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    text
}

/// Enough decoding passes for any stacking of proxies; each pass that
/// changes the name shortens it, so the loop ends anyway.
const MAX_DECODE_PASSES: usize = 8;

/// The parameter names of the gateway's own credentials, folded: its
/// tokens, and its API keys under the names clients put them in
/// (`api_key`, `apikey`, `x-api-key`).
const CREDENTIAL_NAMES: [&str; 4] = ["accesstoken", "refreshtoken", "apikey", "xapikey"];

fn reads_as_credential(name: &str) -> bool {
    let name: std::borrow::Cow<[u8]> = match name.contains('%') {
        true => decoded_name(name).into(),
        false => name.as_bytes().into(),
    };
    // Each bracketed part (`a[access_token]`), and the whole name too:
    // PHP reads an unclosed `access[token` as `access_token`.
    let credential = |part: &[u8]| CREDENTIAL_NAMES.iter().any(|c| folds_to(part, c));
    credential(&name) || name.split(|b| matches!(b, b'[' | b']')).any(credential)
}

/// Whether `part`, folded (fullwidth to ASCII, letters and digits only,
/// lower case), is `folded`.
fn folds_to(part: &[u8], folded: &str) -> bool {
    if part.is_ascii() {
        return ascii_fold(part.iter().map(|b| char::from(*b))).eq(folded.chars());
    }
    let text = String::from_utf8_lossy(part);
    ascii_fold(text.chars().map(fullwidth_to_ascii)).eq(folded.chars())
}

fn ascii_fold(chars: impl Iterator<Item = char>) -> impl Iterator<Item = char> {
    chars
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
}

/// The Halfwidth and Fullwidth Forms block's ASCII variants (U+FF01 to
/// U+FF5E) as the ASCII characters NFKC folds them to.
fn fullwidth_to_ascii(c: char) -> char {
    match u32::from(c) {
        code @ 0xFF01..=0xFF5E => char::from_u32(code - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// A parameter name percent-decoded until it stops changing (bounded).
fn decoded_name(name: &str) -> Vec<u8> {
    let mut name: Vec<u8> = name.as_bytes().to_vec();
    for _ in 0..MAX_DECODE_PASSES {
        let decoded: Vec<u8> = percent_encoding::percent_decode(&name).collect();
        if decoded == name {
            break;
        }
        name = decoded;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                AUTHORIZATION,
                HeaderValue::from_str(v).expect("test header"),
            );
        }
        map
    }

    #[test]
    fn scheme_is_case_insensitive() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi",
        ] {
            assert_eq!(
                extract_bearer(&headers(&[v]), 100),
                Ok(Some("abc.def.ghi")),
                "{v}"
            );
        }
    }

    #[test]
    fn other_schemes_and_absence_are_no_token() {
        assert_eq!(extract_bearer(&headers(&[]), 100), Ok(None));
        assert_eq!(
            extract_bearer(&headers(&["Basic dXNlcjpwYXNz"]), 100),
            Ok(None)
        );
    }

    #[test]
    fn malformed_bearer_is_invalid_request() {
        for v in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,Bearer b",
            "Bearer ===",
        ] {
            let err = extract_bearer(&headers(&[v]), 100).expect_err(v);
            assert_eq!(err.code(), "invalid_request", "{v}");
        }
    }

    #[test]
    fn every_byte_is_classified_by_the_grammar() {
        for b in 0..=u8::MAX {
            let grammar = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token_char(b), grammar, "{b:#04x}");
            assert_eq!(is_b64token(&[b, b'=']), grammar, "{b:#04x}");
        }
    }

    #[test]
    fn two_headers_are_invalid_request() {
        let err = extract_bearer(&headers(&["Bearer a", "Bearer b"]), 100).expect_err("two");
        assert_eq!(err.code(), "invalid_request");
    }

    #[test]
    fn oversized_token_is_invalid_token() {
        let long = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            extract_bearer(&headers(&[&long]), 100),
            Err(AuthError::Invalid("oversized"))
        );
    }

    #[test]
    fn query_token_in_any_spelling_is_found() {
        assert!(query_has_access_token("access_token=x"));
        assert!(query_has_access_token("a=1&ACCESS_TOKEN=x"));
        assert!(query_has_access_token("a=1&access%5Ftoken=x"));
        assert!(!query_has_access_token("access_token_hint=x&b=2"));
        assert!(!query_has_access_token("token=x&access=y"));
    }

    #[test]
    fn query_token_dodges_are_found() {
        for query in [
            "x=1;access_token=t",
            "access_token[]=t",
            "access_token[0]=t",
            "access_token%00=t",
            "access_token+=t",
            "access_token%20=t",
            "%20access_token=t",
            "access.token=t",
            "access+token=t",
            "Access_Token=t",
            "accessToken=t",
            "%2561ccess_token=t",
            "%252561ccess_token=t",
            "access_token",
            "x=%26access_token%3Dt",
            "x=%253Baccess_token%253Dt",
        ] {
            assert!(query_has_access_token(query), "{query}");
        }
    }

    #[test]
    fn a_tab_after_bearer_is_invalid_request() {
        for v in ["Bearer\tabc", "bearer\t abc", "Bearer \tabc"] {
            let err = extract_bearer(&headers(&[v]), 100).expect_err(v);
            assert_eq!(err.code(), "invalid_request", "{v:?}");
        }
        assert_eq!(extract_bearer(&headers(&["Basic\tabc"]), 100), Ok(None));
    }

    #[test]
    fn refresh_tokens_and_bracketed_or_fullwidth_names_are_found() {
        for query in [
            "refresh_token=t",
            "x=1&Refresh-Token=t",
            "%2572efresh_token=t",
            "a[access_token]=t",
            "access[token=t",
            "a[b][refresh_token]=t",
            "a%5Baccess_token%5D=t",
            "\u{ff41}ccess_token=t",
            "%EF%BD%81ccess_token=t",
            "\u{ff21}\u{ff23}\u{ff23}\u{ff25}\u{ff33}\u{ff33}\u{ff3f}\u{ff34}\u{ff2f}\u{ff2b}\u{ff25}\u{ff2e}=t",
            "x=%26refresh_token%3Dt",
        ] {
            assert!(query_has_access_token(query), "{query}");
        }
        for query in [
            "a[x]=1",
            "refresh=1&token=2",
            "refresh_token_hint=1",
            "a[access]=1",
        ] {
            assert!(!query_has_access_token(query), "{query}");
        }
    }

    proptest! {
        #[test]
        fn any_b64token_round_trips(token in "[A-Za-z0-9._~+/-]{1,200}={0,2}") {
            let value = format!("Bearer {token}");
            let map = headers(&[&value]);
            prop_assert_eq!(extract_bearer(&map, 4096), Ok(Some(token.as_str())));
        }

        #[test]
        fn b64token_is_its_grammar(token in proptest::collection::vec(any::<u8>(), 0..300)) {
            let padding = token.iter().rev().take_while(|b| **b == b'=').count();
            let body = &token[..token.len() - padding];
            let grammar = !body.is_empty() && body.iter().all(|b| {
                b.is_ascii_alphanumeric() || b"-._~+/".contains(b)
            });
            prop_assert_eq!(is_b64token(&token), grammar);
        }

        #[test]
        fn a_bad_byte_anywhere_in_a_long_token_is_found(
            token in "[A-Za-z0-9._~+/-]{65,300}",
            at in any::<prop::sample::Index>(),
            bad in any::<u8>().prop_filter("outside b64token", |b| {
                !b.is_ascii_alphanumeric() && !b"-._~+/=".contains(b)
            }),
        ) {
            let mut bytes = token.into_bytes();
            let at = 64 + at.index(bytes.len() - 64);
            bytes[at] = bad;
            prop_assert!(!is_b64token(&bytes));
        }

        #[test]
        fn never_panics_and_never_returns_foreign_bytes(value in "[ -~]{0,120}") {
            if let Ok(v) = HeaderValue::from_str(&value) {
                let mut map = HeaderMap::new();
                map.insert(AUTHORIZATION, v);
                if let Ok(Some(token)) = extract_bearer(&map, 4096) {
                    prop_assert!(is_b64token(token.as_bytes()));
                    prop_assert!(value.contains(token));
                }
            }
        }
    }
}
