//! Renders a certificate's subject exactly as Java's `X500Principal.getName()` (RFC 2253
//! form) does, because that string is what Kafka feeds to `ssl.principal.mapping.rules`.
//!
//! Java's rules, measured against JDK 17 by `identity/tests/java_compat.rs`:
//! - RDNs in reverse DER order joined by `,`; values of a multi-valued RDN in DER order
//!   joined by `+`.
//! - Only CN, C, L, ST, O, OU, STREET, DC and UID have keywords; any other attribute is
//!   its dotted OID followed by `=#` and the lower-case hex of the value's DER encoding.
//! - UTF8String, PrintableString, TeletexString, IA5String, GeneralString and BMPString
//!   values are decoded *as UTF-8 whatever their type* (so a BMPString's zero bytes
//!   become `\00`); any other value type is rendered as `#hex` like an unknown OID.
//! - `,=+<>#;"\` are escaped with a backslash anywhere in a value, NUL becomes `\00`, and
//!   leading or trailing spaces and carriage returns are escaped.

use x509_parser::der_parser::asn1_rs::{Any, Class};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// Universal tags whose content Java decodes as a string (see `AVA.isDerString`).
const STRING_TAGS: &[u32] = &[12, 19, 20, 22, 27, 30];

const ESCAPED: &[char] = &[',', '=', '+', '<', '>', '#', ';', '"', '\\'];

/// The keyword Java uses for a dotted OID, if it has one in RFC 2253 form.
pub(crate) fn keyword_for_oid(oid: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .find(|(dotted, _)| *dotted == oid)
        .map(|(_, keyword)| *keyword)
}

/// Dotted OID for an RFC 2253 keyword (case-insensitive), the inverse of `keyword_for_oid`.
pub(crate) fn oid_for_keyword(keyword: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .find(|(_, k)| k.eq_ignore_ascii_case(keyword))
        .map(|(dotted, _)| *dotted)
}

pub(crate) fn render_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(render_attribute)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn render_attribute(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let value = attribute.attr_value();
    let tag = value.header.tag().0;
    let is_string = value.header.class() == Class::Universal
        && !value.header.is_constructed()
        && STRING_TAGS.contains(&tag);
    match keyword_for_oid(&oid) {
        Some(keyword) if is_string => render_ava(keyword, AvaValue::Text(value.data)),
        Some(keyword) => render_ava(keyword, AvaValue::Der(&der_encoding(value))),
        None => render_ava(&oid, AvaValue::Der(&der_encoding(value))),
    }
}

/// An attribute value, either decoded text bytes or the DER encoding of a value Java
/// shows in hex.
pub(crate) enum AvaValue<'a> {
    Text(&'a [u8]),
    Der(&'a [u8]),
}

pub(crate) fn render_ava(keyword: &str, value: AvaValue<'_>) -> String {
    let mut out = String::with_capacity(keyword.len() + 16);
    out.push_str(keyword);
    out.push('=');
    let starts_with_digit = keyword.starts_with(|c: char| c.is_ascii_digit());
    match value {
        AvaValue::Der(der) => push_hex(&mut out, der),
        // Java shows any value under a dotted OID as DER; text from Envoy is assumed UTF8String.
        AvaValue::Text(bytes) if starts_with_digit => push_hex(&mut out, &encode_tlv(0x0c, bytes)),
        AvaValue::Text(bytes) => out.push_str(&escape_value(&String::from_utf8_lossy(bytes))),
    }
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    out.push('#');
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
}

fn escape_value(text: &str) -> String {
    let mut escaped: Vec<char> = Vec::with_capacity(text.len() + 4);
    for c in text.chars() {
        if ESCAPED.contains(&c) {
            escaped.push('\\');
            escaped.push(c);
        } else if c == '\0' {
            escaped.extend(['\\', '0', '0']);
        } else {
            escaped.push(c);
        }
    }
    // Java escapes the leading and trailing runs of spaces and carriage returns, counted
    // after the escaping above.
    let is_blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| is_blank(c)).count();
    let trail = escaped.iter().rev().take_while(|c| is_blank(c)).count();
    let trail_start = escaped.len().saturating_sub(trail);
    let mut out = String::with_capacity(escaped.len() + lead + trail);
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i >= trail_start {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Java re-encodes the value it parsed, so use the minimal DER length whatever the
/// certificate's own encoding was.
fn der_encoding(value: &Any<'_>) -> Vec<u8> {
    let header = &value.header;
    let class_bits = (header.class() as u8) << 6;
    let constructed_bit = if header.is_constructed() { 0x20 } else { 0 };
    let tag = header.tag().0;
    let mut out = Vec::with_capacity(value.data.len() + 6);
    if tag < 31 {
        out.push(class_bits | constructed_bit | (tag as u8));
    } else {
        out.push(class_bits | constructed_bit | 0x1f);
        let mut groups = Vec::new();
        let mut rest = tag;
        loop {
            groups.push((rest & 0x7f) as u8);
            rest >>= 7;
            if rest == 0 {
                break;
            }
        }
        let last = groups.len().saturating_sub(1);
        for (i, group) in groups.iter().rev().enumerate() {
            out.push(if i == last { *group } else { group | 0x80 });
        }
    }
    push_length(&mut out, value.data.len());
    out.extend_from_slice(value.data);
    out
}

pub(crate) fn encode_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let significant: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(&significant);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_java() {
        assert_eq!(escape_value("a,b"), "a\\,b");
        assert_eq!(escape_value("#x=y"), "\\#x\\=y");
        assert_eq!(escape_value(" a "), "\\ a\\ ");
        assert_eq!(escape_value("  "), "\\ \\ ");
        assert_eq!(escape_value("a\0b"), "a\\00b");
        assert_eq!(escape_value("\ra\r"), "\\\ra\\\r");
        assert_eq!(escape_value(""), "");
    }

    #[test]
    fn oid_values_are_hex_der() {
        assert_eq!(
            render_ava("1.2.3", AvaValue::Der(&encode_tlv(0x0c, b"x"))),
            "1.2.3=#0c0178"
        );
        assert_eq!(render_ava("1.2.3", AvaValue::Text(b"x")), "1.2.3=#0c0178");
    }

    #[test]
    fn long_lengths_are_minimal() {
        let tlv = encode_tlv(0x0c, &[b'a'; 200]);
        assert_eq!(&tlv[..3], &[0x0c, 0x81, 200]);
    }
}
