//! Rebuilds Kafka's rendering of a subject from Envoy's, which is OpenSSL's
//! `X509_NAME_print_ex(..., XN_FLAG_RFC2253)`: same RDN order as Java (though the values
//! of a multi-valued RDN are reversed), but OpenSSL
//! escapes differently (`\XX` for bytes above 0x7F and control characters, leading `#`
//! only) and names more attributes (`emailAddress`, `serialNumber`, ...).
//!
//! Values of Java's keywords (CN, C, L, ST, O, OU, STREET, DC, UID) are re-escaped the
//! Java way. Java shows any other attribute as `OID=#<DER hex>`: exact when OpenSSL dumped
//! the DER (`#...`), otherwise the string type is guessed (IA5String for emailAddress,
//! PrintableString for C/serialNumber/dnQualifier, UTF8String otherwise).

use crate::java_dn::{self, AvaValue};

const SHORT_NAMES: &[(&str, &str, u8)] = &[
    ("emailAddress", "1.2.840.113549.1.9.1", 0x16),
    ("serialNumber", "2.5.4.5", 0x13),
    ("dnQualifier", "2.5.4.46", 0x13),
    ("SN", "2.5.4.4", 0x0c),
    ("GN", "2.5.4.42", 0x0c),
    ("title", "2.5.4.12", 0x0c),
    ("initials", "2.5.4.43", 0x0c),
    ("generationQualifier", "2.5.4.44", 0x0c),
    ("pseudonym", "2.5.4.65", 0x0c),
    ("description", "2.5.4.13", 0x0c),
    ("businessCategory", "2.5.4.15", 0x0c),
    ("postalCode", "2.5.4.17", 0x0c),
    ("organizationIdentifier", "2.5.4.97", 0x0c),
    ("name", "2.5.4.41", 0x0c),
];

/// Converts Envoy's subject string to Java's `X500Principal.getName()` form.
pub(crate) fn to_java(envoy: &str) -> String {
    split_unescaped(envoy, ',')
        .into_iter()
        .map(|rdn| {
            // XN_FLAG_DN_REV reverses the flat list of attributes, so the values of a
            // multi-valued RDN come out reversed too; Java keeps their DER order.
            split_unescaped(rdn, '+')
                .into_iter()
                .rev()
                .map(convert_ava)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn convert_ava(ava: &str) -> String {
    let Some((key, raw_value)) = ava.split_once('=') else {
        return ava.to_string();
    };
    let (oid, tag) = if let Some(oid) = java_dn::oid_for_keyword(key) {
        let keyword = java_dn::keyword_for_oid(oid).unwrap_or(key);
        // OpenSSL dumps non-string values as `#hex`; Java shows them as hex too.
        return match raw_value.strip_prefix('#').and_then(decode_hex) {
            Some(der) => java_dn::render_ava(keyword, AvaValue::Der(&der)),
            None => java_dn::render_ava(keyword, AvaValue::Text(&unescape(raw_value))),
        };
    } else if let Some((_, oid, tag)) = SHORT_NAMES.iter().find(|(name, _, _)| *name == key) {
        ((*oid).to_string(), *tag)
    } else if key.starts_with(|c: char| c.is_ascii_digit()) {
        (key.to_string(), 0x0c)
    } else {
        return ava.to_string();
    };
    match raw_value.strip_prefix('#').and_then(decode_hex) {
        Some(der) => java_dn::render_ava(&oid, AvaValue::Der(&der)),
        None => java_dn::render_ava(
            &oid,
            AvaValue::Der(&java_dn::encode_tlv(tag, &unescape(raw_value))),
        ),
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(text.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts
}

/// OpenSSL escapes: `\c` for a special character, `\XX` for a byte.
fn unescape(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
                if let Some(&next) = bytes.get(i + 1) {
                    out.push(next);
                }
                i += 2;
            }
        }
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.is_empty() {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |i: usize| pair.get(i).and_then(|b| char::from(*b).to_digit(16));
            Some((digit(0)? * 16 + digit(1)?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl x509 -noout -subject -nameopt RFC2253` against `X500Principal.getName()`
    /// for the same certificates.
    #[test]
    fn matches_java_for_real_openssl_output() {
        assert_eq!(
            to_java(r"emailAddress=x@y,CN=\#b \<c\>+OU=a,O=acme\, inc"),
            r"1.2.840.113549.1.9.1=#1603784079,OU=a+CN=\#b \<c\>,O=acme\, inc"
        );
        assert_eq!(
            to_java(r"CN=Jos\C3\A9=x\;y,OU=\ sp\ ,O=Acme\, Inc.,C=US"),
            r"CN=José\=x\;y,OU=\ sp\ ,O=Acme\, Inc.,C=US"
        );
    }

    #[test]
    fn converts_openssl_rendering() {
        assert_eq!(to_java("CN=a,O=acme"), "CN=a,O=acme");
        assert_eq!(to_java("CN=a\\, b,O=x"), "CN=a\\, b,O=x");
        assert_eq!(to_java("CN=\\C3\\A9"), "CN=é");
        assert_eq!(to_java("CN=a=b"), "CN=a\\=b");
        assert_eq!(to_java("CN=a+OU=b"), "OU=b+CN=a");
        assert_eq!(
            to_java("emailAddress=a@b,CN=x"),
            "1.2.840.113549.1.9.1=#1603614062,CN=x"
        );
        assert_eq!(to_java("1.2.3.4=#0c0178"), "1.2.3.4=#0c0178");
        assert_eq!(to_java(""), "");
        assert_eq!(to_java("garbage"), "garbage");
        assert_eq!(to_java("CN=x\\"), "CN=x");
    }
}
