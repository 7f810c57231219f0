//! The parameters of a token request (RFC 6749 §3.2, §4.1.3, §6), read
//! strictly: nothing here knows HTTP beyond the `Content-Type` value.
//!
//! Only `application/x-www-form-urlencoded` (the RFC's format) and
//! `application/json` (documented as a convenience) are read; any other
//! media type, or none, is `invalid_request`. A parameter sent twice is
//! `invalid_request` too (§3.2: "MUST NOT be included more than once"),
//! never "the last one wins", so two parsers on the path cannot disagree
//! about which token was presented. A parameter without a value counts as
//! omitted (§3.1).

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Why a token request's parameters were refused; each is `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    MediaType,
    Repeated,
    Malformed,
}

impl GrantError {
    /// The fixed text a client sees.
    pub fn description(self) -> &'static str {
        match self {
            Self::MediaType => {
                "the request body must be application/x-www-form-urlencoded or application/json"
            }
            Self::Repeated => "a parameter is repeated",
            Self::Malformed => "the request body is malformed",
        }
    }
}

/// The string parameters of a token request, by name.
pub fn parameters(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<HashMap<String, String>, GrantError> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let fields = match media.as_deref() {
        Some("application/x-www-form-urlencoded") => form(body)?,
        Some("application/json") => json(body)?,
        _ => return Err(GrantError::MediaType),
    };
    Ok(fields.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

fn form(body: &[u8]) -> Result<HashMap<String, String>, GrantError> {
    let mut fields = HashMap::new();
    for (name, value) in form_urlencoded::parse(body).into_owned() {
        if fields.insert(name, value).is_some() {
            return Err(GrantError::Repeated);
        }
    }
    Ok(fields)
}

/// A JSON object's string members; other members are ignored, like
/// unknown form parameters (§3.2).
fn json(body: &[u8]) -> Result<HashMap<String, String>, GrantError> {
    let object: Members = serde_json::from_slice(body).map_err(|_| GrantError::Malformed)?;
    if object.repeated {
        return Err(GrantError::Repeated);
    }
    Ok(object
        .members
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect())
}

/// A JSON object's members, and whether a name came twice (serde_json's
/// own map silently keeps the last of two equal names).
struct Members {
    members: HashMap<String, Value>,
    repeated: bool,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut object = Members {
                    members: HashMap::new(),
                    repeated: false,
                };
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    object.repeated |= object.members.insert(name, value).is_some();
                }
                Ok(object)
            }
        }
        deserializer.deserialize_map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn form_and_json_are_read() {
        let form = parameters(FORM, b"grant_type=refresh_token&refresh_token=a%2Bb").expect("form");
        assert_eq!(form["refresh_token"], "a+b");
        let json = parameters(
            Some("Application/JSON; charset=utf-8"),
            br#"{"grant_type":"refresh_token","n":1}"#,
        )
        .expect("json");
        assert_eq!(json.len(), 1);
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(
            parameters(FORM, b"refresh_token=a&refresh_token=b"),
            Err(GrantError::Repeated)
        );
        assert_eq!(
            parameters(
                Some("application/json"),
                br#"{"refresh_token":"a","refresh_token":"b"}"#
            ),
            Err(GrantError::Repeated)
        );
    }

    #[test]
    fn other_media_types_are_refused() {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/json-patch+json"),
            Some("multipart/form-data; boundary=x"),
        ] {
            assert_eq!(parameters(ct, b"a=b"), Err(GrantError::MediaType), "{ct:?}");
        }
        assert_eq!(
            parameters(Some("application/json"), b"[1]"),
            Err(GrantError::Malformed)
        );
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let form = parameters(FORM, b"grant_type=refresh_token&refresh_token=").expect("form");
        assert!(!form.contains_key("refresh_token"));
    }
}
