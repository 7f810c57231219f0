//! Request path normalisation before routing (RFC 3986 §6.2.2, §5.2.4).
//!
//! The route is chosen on the normalised path and the upstream receives the
//! same string, so a prefix the gateway protects cannot be reached by
//! spelling it differently (`//admin`, `/public/../admin`, `/%2e%2e/admin`).

/// Why a path was refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`*`, empty, or not starting with `/`).
    NotOriginForm,
    /// `%2F`, `%5C` or `%00`: backends disagree on what they mean.
    EncodedSeparator,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A raw backslash, `#`, control byte, space or non-ASCII byte.
    ForbiddenByte,
    /// An encoded control character (`%01`–`%1F`, `%7F`): backends cut,
    /// log or split on them (CRLF injection, `%09` as a separator).
    ControlCharacter,
    /// `..;x` or `.;x`: servlet containers treat these as dot segments.
    DotSegmentParameter,
    /// `%C0`, `%C1` or `%F5`–`%FF`: bytes no UTF-8 text holds, used for
    /// overlong encodings (`%C0%AF` read as `/` by lax decoders).
    InvalidUtf8,
}

/// Decodes percent-escapes of unreserved characters, upper-cases the rest,
/// resolves dot segments and collapses repeated slashes.
pub fn normalize_path(raw: &[u8]) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    match already_normal(raw) {
        Some(normal) => Ok(normal.to_owned()),
        None => normalize_fully(raw),
    }
}

/// [`normalize_path`] without the shortcut, for a path that starts with `/`.
fn normalize_fully(raw: &[u8]) -> Result<String, PathError> {
    let decoded = decode_unreserved(raw)?;
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotSegmentParameter)
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// The path itself when normalising could not change it: printable ASCII
/// without escapes, backslashes or `#`, and no empty or dot segment
/// (a segment merely starting with `.` takes the full way too). Most
/// request paths are this, and skip the decoded copy and segment list.
fn already_normal(raw: &[u8]) -> Option<&str> {
    let plain = |b: &u8| (0x21..0x7F).contains(b) && !matches!(b, b'%' | b'\\' | b'#');
    let mut segments = raw[1..].split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.first() == Some(&b'.') || (segment.is_empty() && !last) {
            return None;
        }
    }
    if !raw.iter().all(plain) {
        return None;
    }
    std::str::from_utf8(raw).ok()
}

/// The path with `;parameters` cut from every segment: what the route is
/// chosen on. Servlet containers (Tomcat, Jetty, Spring) ignore them, so
/// `/admin;x=1/users` must be judged as `/admin/users`; the upstream still
/// receives the path with its parameters.
pub fn without_parameters(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let cut: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect();
    std::borrow::Cow::Owned(cut.join("/"))
}

/// Whether a backend that reads paths the way IIS and other Windows-era
/// servers do could take the normalised `path` for another one: what a
/// `match = "legacy"` route refuses. Such a backend folds case (the route
/// matches in any case for that) and also
/// - drops a trailing `.` or space of a segment or `;` piece (`/admin.`);
/// - reads `name:stream:$TYPE` as the file `name` (NTFS alternate data
///   streams: `/admin::$DATA/x`, `/admin:$i30:$INDEX_ALLOCATION/x`, the
///   IIS directory-authentication bypass), so any `:`, raw or `%3A`;
/// - opens `SECRET~1` as `secretarea` (8.3 short names), so a `~` before
///   a digit;
/// - may decode twice (`%252e` as `.`; IIS refuses `%25` itself unless
///   `allowDoubleEscaping`), so any `%25`;
/// - may fold non-ASCII letters onto ASCII ones (dotless `ı` to `I`,
///   fullwidth `Ａ` to `A`, the Kelvin sign to `k`), so any escape of a
///   byte above 0x7F (raw ones never get this far).
///
/// Kept escapes are upper-case after [`normalize_path`], unreserved ones
/// decoded (`%7E` is `~` here).
pub fn legacy_ambiguous(path: &str) -> bool {
    let trailing = path
        .split(['/', ';'])
        .any(|piece| piece.ends_with('.') || piece.ends_with("%20"));
    let short_name = path
        .as_bytes()
        .windows(2)
        .any(|pair| pair[0] == b'~' && pair[1].is_ascii_digit());
    trailing || short_name || path.contains(':') || path.split('%').skip(1).any(legacy_escape)
}

/// The text after a `%`: `3A…` (`:`), `25…` (`%`), or `8…`–`F…` (a byte
/// above 0x7F).
fn legacy_escape(after: &str) -> bool {
    after.starts_with("3A")
        || after.starts_with("25")
        || after
            .as_bytes()
            .first()
            .is_some_and(|b| matches!(b, b'8'..=b'9' | b'A'..=b'F'))
}

fn decode_unreserved(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        if byte == b'%' {
            let hi = raw.get(i + 1).and_then(|b| hex(*b));
            let lo = raw.get(i + 2).and_then(|b| hex(*b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let value = hi << 4 | lo;
            match value {
                b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                v if v < 0x20 || v == 0x7F => return Err(PathError::ControlCharacter),
                0xC0 | 0xC1 | 0xF5..=0xFF => return Err(PathError::InvalidUtf8),
                v if is_unreserved(v) => out.push(v as char),
                v => {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(v & 0xF)]));
                }
            }
            i += 3;
            continue;
        }
        // `#` starts a fragment, which a request target never has (RFC 9112
        // §3.2); a backend that cuts it would see a shorter path.
        if byte == b'\\' || byte == b'#' || byte <= 0x20 || byte >= 0x7F {
            return Err(PathError::ForbiddenByte);
        }
        out.push(byte as char);
        i += 1;
    }
    Ok(out)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resolves_dot_segments_and_slashes() {
        let cases = [
            ("/", "/"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin/", "/admin/"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/%7euser", "/a/~user"),
            ("/a/%c3%a9", "/a/%C3%A9"),
            ("/a//b///c", "/a/b/c"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw.as_bytes()).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_encoded_separators_and_bad_bytes() {
        let cases = [
            ("/admin%2fsecret", PathError::EncodedSeparator),
            ("/admin%5Csecret", PathError::EncodedSeparator),
            ("/admin%00", PathError::EncodedSeparator),
            ("/admin%2", PathError::BadEscape),
            ("/admin%zz", PathError::BadEscape),
            ("/admin\\x", PathError::ForbiddenByte),
            ("*", PathError::NotOriginForm),
            ("/public/..;/admin", PathError::DotSegmentParameter),
            ("/admin%09", PathError::ControlCharacter),
            ("/admin%0a/x", PathError::ControlCharacter),
            ("/admin%0D%0AX-Injected:%201", PathError::ControlCharacter),
            ("/admin%7f", PathError::ControlCharacter),
            ("/x%c0%afadmin", PathError::InvalidUtf8),
            ("/admin#x", PathError::ForbiddenByte),
            ("/admin\t", PathError::ForbiddenByte),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw.as_bytes()), Err(want), "{raw}");
        }
    }

    #[test]
    fn refuses_raw_bytes_outside_printable_ascii() {
        for raw in [
            &b"/caf\xc3\xa9"[..],
            b"/a\x7f",
            b"/a\x00",
            b"/a b",
            b"/\x80/x",
        ] {
            assert_eq!(
                normalize_path(raw),
                Err(PathError::ForbiddenByte),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn parameters_are_cut_for_routing() {
        assert_eq!(
            without_parameters("/admin;jsessionid=x/users"),
            "/admin/users"
        );
        assert_eq!(without_parameters("/a;b;c"), "/a");
        assert_eq!(without_parameters("/plain/path"), "/plain/path");
    }

    #[test]
    fn legacy_spellings_of_another_path_are_caught() {
        for path in [
            "/admin.",
            "/admin%20",
            "/admin;.",
            "/admin::$DATA/x",
            "/admin:$i30:$INDEX_ALLOCATION/x",
            "/admin%3A%3A$DATA/x",
            "/x/a:b",
            "/SECRET~1/x",
            "/a/b~9",
            "/admin%252E/x",
            "/%C4%B1/x",
            "/%EF%BC%A1dmin",
            "/%E2%84%AA",
        ] {
            let normal = normalize_path(path.as_bytes()).expect("normalises");
            assert!(legacy_ambiguous(&normal), "{path} as {normal}");
        }
        for path in [
            "/admin/x",
            "/~user/x",
            "/a~b",
            "/a%22b",
            "/a%3Bb",
            "/docs/file.txt",
        ] {
            assert!(!legacy_ambiguous(path), "{path}");
        }
    }

    proptest! {
        /// The shortcut for paths already normal agrees with the full
        /// normalisation wherever it answers.
        #[test]
        fn already_normal_paths_normalise_to_themselves(raw in "/[a-zA-Z0-9./%_~;#\\\\ -]{0,40}") {
            if let Some(normal) = already_normal(raw.as_bytes()) {
                prop_assert_eq!(normal, raw.as_str());
                prop_assert_eq!(normalize_fully(raw.as_bytes()), Ok(raw.clone()));
            }
        }

        /// The same, with the segments normalising is about put together.
        #[test]
        fn already_normal_paths_from_telling_segments(
            segments in proptest::collection::vec(prop::sample::select(vec![
                "", ".", "..", ".;x", "..;x", ".a", "a", "a;b", "%2e", "%41", "b\u{e9}",
                "c\u{7f}", "d#", "e\\", "f\u{0}",
            ]), 0..6)
        ) {
            let raw = format!("/{}", segments.join("/"));
            if let Some(normal) = already_normal(raw.as_bytes()) {
                prop_assert_eq!(normal, raw.as_str());
                prop_assert_eq!(normalize_fully(raw.as_bytes()), Ok(raw.clone()));
            }
        }

        /// Normalising is idempotent, and the result never holds a dot
        /// segment, an empty segment or an encoded separator.
        #[test]
        fn normal_form_is_stable(raw in "/[a-zA-Z0-9./%_~;-]{0,60}") {
            if let Ok(once) = normalize_path(raw.as_bytes()) {
                prop_assert_eq!(normalize_path(once.as_bytes()), Ok(once.clone()));
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                for segment in once.split('/') {
                    prop_assert!(segment != "." && segment != "..");
                }
                let lower = once.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"));
            }
        }
    }
}
