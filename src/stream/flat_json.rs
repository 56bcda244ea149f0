//! A scanner for the common shape of a stream message: one flat JSON object
//! whose values are strings without escapes, numbers, booleans or null.
//!
//! It is the decoding fast path: it checks the JSON grammar of what it
//! accepts, borrows every string from the payload and allocates nothing.
//! Anything outside that shape (escapes, nested values, a syntax error) is
//! refused with `None`, and the caller falls back to the full `serde_json`
//! parser, which also explains what is wrong. So this scanner never has to
//! be complete, only right about what it accepts.

/// One member value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// A string with no escape sequence, as written.
    Str(&'a str),
    /// A number token, checked against the JSON number grammar.
    Number(&'a str),
    Bool(bool),
    Null,
}

impl<'a> Scalar<'a> {
    /// The number as an `f64`, correctly rounded (`serde_json` without its
    /// `float_roundtrip` feature may be one unit in the last place off);
    /// `None` for a non-number or a value out of the `f64` range.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Number(token) => token.parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        }
    }

    /// The number as an `i64` when it is written as an integer in range
    /// (`3`, not `3.0`), as `serde_json` reads an integer field (which takes
    /// `-0` for a float).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Number(token) if !token.contains(['.', 'e', 'E']) && *token != "-0" => token.parse::<i64>().ok(),
            _ => None,
        }
    }
}

/// Calls `member(key, value)` for each member of the object in `payload`, in
/// order. Returns `None` if the payload is not a flat object of the shape
/// above (or not valid JSON), or as soon as `member` returns `false`.
pub fn scan_object<'a>(payload: &'a [u8], mut member: impl FnMut(&'a str, Scalar<'a>) -> bool) -> Option<()> {
    let text = std::str::from_utf8(payload).ok()?;
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return finished(bytes, at + 1);
    }
    loop {
        let (key, after_key) = string(text, at)?;
        at = skip_whitespace(bytes, after_key);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(bytes, at + 1);
        let (value, after_value) = scalar(text, at)?;
        if !member(key, value) {
            return None;
        }
        at = skip_whitespace(bytes, after_value);
        match bytes.get(at)? {
            b',' => at = skip_whitespace(bytes, at + 1),
            b'}' => return finished(bytes, at + 1),
            _ => return None,
        }
    }
}

/// Only whitespace may follow the object.
fn finished(bytes: &[u8], at: usize) -> Option<()> {
    (skip_whitespace(bytes, at) == bytes.len()).then_some(())
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The string starting at the quote at `at`, and the position after its
/// closing quote; `None` if it has an escape or a control character.
fn string(text: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let mut end = start;
    loop {
        match *bytes.get(end)? {
            b'"' => return Some((&text[start..end], end + 1)),
            b'\\' | 0x00..=0x1f => return None,
            _ => end += 1,
        }
    }
}

/// The scalar value starting at `at`, and the position after it.
fn scalar(text: &str, at: usize) -> Option<(Scalar<'_>, usize)> {
    let bytes = text.as_bytes();
    match *bytes.get(at)? {
        b'"' => string(text, at).map(|(s, end)| (Scalar::Str(s), end)),
        b'-' | b'0'..=b'9' => {
            let end = number_end(bytes, at)?;
            Some((Scalar::Number(&text[at..end]), end))
        }
        _ if bytes[at..].starts_with(b"null") => Some((Scalar::Null, at + 4)),
        _ if bytes[at..].starts_with(b"true") => Some((Scalar::Bool(true), at + 4)),
        _ if bytes[at..].starts_with(b"false") => Some((Scalar::Bool(false), at + 5)),
        _ => None,
    }
}

/// The end of the number token at `at`, following the JSON grammar:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |from: usize| {
        let mut end = from;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        end
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(at),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    // A number runs into nothing but a separator, whitespace or the end.
    match bytes.get(at) {
        None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => Some(at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(payload: &str) -> Option<Vec<(String, Scalar<'_>)>> {
        let mut out = Vec::new();
        scan_object(payload.as_bytes(), |k, v| {
            out.push((k.to_string(), v));
            true
        })?;
        Some(out)
    }

    #[test]
    fn reads_flat_objects() {
        let got = members(" {\"a\" : \"x y\", \"b\":-1.5e3,\"c\":null,\"d\":true,\"e\":false,\"f\":0}\n").unwrap();
        assert_eq!(got, vec![
            ("a".into(), Scalar::Str("x y")),
            ("b".into(), Scalar::Number("-1.5e3")),
            ("c".into(), Scalar::Null),
            ("d".into(), Scalar::Bool(true)),
            ("e".into(), Scalar::Bool(false)),
            ("f".into(), Scalar::Number("0")),
        ]);
        assert_eq!(members("{}").unwrap(), vec![]);
        assert_eq!(members("{\"pays\":\"Österreich\"}").unwrap(), vec![("pays".into(), Scalar::Str("Österreich"))]);
    }

    #[test]
    fn refuses_what_it_does_not_handle_or_is_not_json() {
        for payload in [
            "", "[]", "{", "{\"a\":1", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":1} x", "{\"a\":1}}",
            "{\"a\":\"x\\\"y\"}", "{\"a\":\"tab\there\"}", "{\"a\":[1]}", "{\"a\":{}}", "{\"a\":01}",
            "{\"a\":1.}", "{\"a\":.5}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":-}", "{\"a\":1x}", "{\"a\":nul}",
            "{\"a\":True}", "{\"a\":1,\"b\"}", "{\"a\":\"open}",
        ] {
            assert!(members(payload).is_none(), "accepted {payload:?}");
        }
        assert!(scan_object(b"{\"a\":\"\xff\"}", |_, _| true).is_none(), "invalid UTF-8");
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for token in ["0", "-0", "3", "18.0", "54.25", "1e2", "2.5E-3", "9007199254740993", "0.1", "123456789.987654321", "-7"] {
            let scalar = Scalar::Number(token);
            let value: serde_json::Value = serde_json::from_str(token).unwrap();
            // `serde_json`'s default float parser may miss the last bit.
            let (ours, theirs) = (scalar.as_f64().unwrap(), value.as_f64().unwrap());
            assert!((ours - theirs).abs() <= theirs.abs() * 4.0 * f64::EPSILON, "{token} as f64");
            assert_eq!(ours, token.parse::<f64>().unwrap());
            assert_eq!(scalar.as_i64(), value.as_i64(), "{token} as i64");
        }
        assert_eq!(Scalar::Number("1e400").as_f64(), None, "out of range");
        assert_eq!(Scalar::Number("99999999999999999999").as_i64(), None, "out of range");
        assert_eq!(Scalar::Str("3").as_f64(), None);
    }
}
