//! Which field of a JSON text serde_json was reading when it refused it.
//!
//! serde_json's data errors (unknown or missing field, wrong type, unknown variant) say
//! what is wrong and where in the text (line, column), not which field. Wrapping the
//! deserializer to track the path (`serde_path_to_error`) would name it, at ~20 KB of Wasm:
//! every configuration type's deserializer is generated again for the wrapper, and the
//! .wasm must fit a ConfigMap (docs/design.md, "The .wasm and its size"). This module reads
//! the text up to the error's position instead, with a tokenizer that only follows objects,
//! keys and array elements; tests check it against `serde_path_to_error`.

/// One open container, innermost last.
enum Frame<'a> {
    /// The key whose value is being read, once its string is complete; `awaiting_key`
    /// after `{` or `,`.
    Object {
        key: Option<&'a str>,
        awaiting_key: bool,
    },
    /// How many elements have started.
    Array { started: usize },
}

/// The byte offset of serde_json's 1-based `line` and byte `column`: the end of what it had
/// consumed when it raised the error.
pub(crate) fn offset_of(json: &str, line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    let mut lines = 1;
    for (at, byte) in json.bytes().enumerate() {
        if lines >= line {
            break;
        }
        if byte == b'\n' {
            lines += 1;
            start = at + 1;
        }
    }
    (lines >= line).then_some(start + column)
}

/// The path (`signing.issuer`, `identity.sources[0]`, empty for the whole text) of the value
/// that was being read once `consumed` bytes of `json` had been read. After a closing `}`
/// it is the path of the object just closed: serde reports a missing field there. With
/// `key_names_a_variant`, a key read last is an enum's variant (`{"bogus": 1}` where a
/// variant is expected), not a field: the path ends before it.
pub(crate) fn path_at(json: &str, consumed: usize, key_names_a_variant: bool) -> String {
    let bytes = json.as_bytes();
    let read = bytes.get(..consumed).unwrap_or(bytes);
    let mut stack: Vec<Frame<'_>> = Vec::new();
    // Inside a number, `true`, `false` or `null`: its first byte started an element.
    let mut in_scalar = false;
    let mut key_last = false;
    let mut at = 0;
    while let Some(&byte) = read.get(at) {
        if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            key_last = false;
        }
        let scalar = !matches!(
            byte,
            b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
        );
        if scalar && !in_scalar {
            element_starts(&mut stack);
        }
        in_scalar = scalar;
        match byte {
            b'{' => {
                element_starts(&mut stack);
                stack.push(Frame::Object {
                    key: None,
                    awaiting_key: true,
                });
            }
            b'[' => {
                element_starts(&mut stack);
                stack.push(Frame::Array { started: 0 });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { awaiting_key, .. }) = stack.last_mut() {
                    *awaiting_key = false;
                }
            }
            b',' => {
                if let Some(Frame::Object { awaiting_key, .. }) = stack.last_mut() {
                    *awaiting_key = true;
                }
            }
            b'"' => {
                let start = at + 1;
                let end = string_end(read, start);
                let text = json.get(start..end.min(read.len())).unwrap_or("");
                match stack.last_mut() {
                    Some(Frame::Object {
                        key,
                        awaiting_key: true,
                    }) => {
                        *key = Some(text);
                        key_last = true;
                    }
                    _ => element_starts(&mut stack),
                }
                at = end;
            }
            _ => {}
        }
        at += 1;
    }
    // serde_json refuses a `{` or `[` where it wants something else before reading it: an
    // element that is about to start is the one refused.
    let next = bytes
        .get(read.len()..)
        .unwrap_or_default()
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if !in_scalar && next.is_some_and(|b| !matches!(b, b']' | b',' | b'}' | b':')) {
        element_starts(&mut stack);
    }
    if key_names_a_variant && key_last {
        if let Some(Frame::Object { key, .. }) = stack.last_mut() {
            *key = None;
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Array { started } if *started > 0 => {
                path.push('[');
                path.push_str(&(started - 1).to_string());
                path.push(']');
            }
            _ => break,
        }
    }
    path
}

/// A value starts: in an array, the next element.
fn element_starts(stack: &mut [Frame<'_>]) {
    if let Some(Frame::Array { started }) = stack.last_mut() {
        *started += 1;
    }
}

/// The index of the `"` that closes the string whose text starts at `start` (or the end of
/// `read`, when the error came inside it).
fn string_end(read: &[u8], start: usize) -> usize {
    let mut at = start;
    while let Some(&byte) = read.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return at,
            _ => at += 1,
        }
    }
    read.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let at_end = |json: &str| path_at(json, json.len(), false);
        assert_eq!(at_end(r#"{"a": 1"#), "a");
        assert_eq!(at_end(r#"{"a": {"b": "x"#), "a.b");
        assert_eq!(at_end(r#"{"a": {"b": 1}"#), "a");
        assert_eq!(at_end(r#"{"a": {"b": 1}}"#), "");
        assert_eq!(at_end(r#"{"a": [1, {"b": true"#), "a[1].b");
        assert_eq!(at_end(r#"{"a": ["x", "y\"]", 3"#), "a[2]");
        assert_eq!(at_end(r#"{"a": [[], [7"#), "a[1][0]");
        // Refused before its first byte was read: the element about to start.
        assert_eq!(path_at(r#"{"a": ["x", {}]}"#, 12, false), "a[1]");
        assert_eq!(path_at(r#"{"a": [ []]}"#, 8, false), "a[0]");
        assert_eq!(path_at(r#"{"a": ["x", ]}"#, 12, false), "a[0]");
        assert_eq!(at_end(r#"{"a": 1, "b""#), "b");
        assert_eq!(at_end(r#"{"a": ["#), "a");
        assert_eq!(at_end("{\n \"a\" :\n\t{ \"b\" : null"), "a.b");
        assert_eq!(at_end(""), "");
        // Past the end or inside a multi-byte character: no panic.
        assert_eq!(path_at(r#"{"é": 1"#, 100, false), "é");
        assert_eq!(path_at(r#"{"é": 1"#, 3, false), "");
        // An enum given as {"variant": ...}: the variant is no field.
        assert_eq!(path_at(r#"{"a": [{"v""#, 11, true), "a[0]");
        assert_eq!(path_at(r#"{"a": [{"v""#, 11, false), "a[0].v");
        assert_eq!(path_at(r#"{"a": "v""#, 9, true), "a");
    }

    #[test]
    fn offsets() {
        assert_eq!(offset_of("abc", 1, 2), Some(2));
        assert_eq!(offset_of("ab\ncd\nef", 2, 1), Some(4));
        assert_eq!(offset_of("ab\ncd\nef", 3, 2), Some(8));
        assert_eq!(offset_of("ab", 3, 0), None);
    }
}
