//! Test certificates: rcgen for ordinary ones, a small DER writer for subjects rcgen
//! cannot express (multi-valued RDNs, repeated attributes, arbitrary string types).
#![allow(dead_code)]

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, Ia5String, KeyPair, SanType};

/// A self-signed certificate from rcgen: (DER, PEM).
pub fn rcgen_cert(
    subject: Vec<(DnType, DnValue)>,
    uris: &[&str],
    dns: &[&str],
) -> (Vec<u8>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    for (kind, value) in subject {
        name.push(kind, value);
    }
    params.distinguished_name = name;
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .chain(
            dns.iter()
                .map(|d| SanType::DnsName(Ia5String::try_from(*d).unwrap())),
        )
        .collect();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), cert.pem())
}

/// An attribute: dotted OID, universal tag of the value, value content bytes.
pub type Attr<'a> = (&'a str, u8, &'a [u8]);

pub const UTF8: u8 = 0x0c;
pub const PRINTABLE: u8 = 0x13;
pub const TELETEX: u8 = 0x14;
pub const IA5: u8 = 0x16;
pub const UNIVERSAL: u8 = 0x1c;
pub const BMP: u8 = 0x1e;
pub const NUMERIC: u8 = 0x12;
pub const VISIBLE: u8 = 0x1a;

pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut body = Vec::new();
    let mut encode = |mut v: u64| {
        let mut groups = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            groups.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        groups.reverse();
        body.extend(groups);
    };
    encode(arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        encode(*arc);
    }
    tlv(0x06, &body)
}

/// A Name from RDNs in DER order (most general first), each a set of attributes.
pub fn name(rdns: &[&[Attr]]) -> Vec<u8> {
    let mut seq = Vec::new();
    for rdn in rdns {
        let mut set = Vec::new();
        for (attr_oid, tag, value) in rdn.iter() {
            let mut ava = oid(attr_oid);
            ava.extend(tlv(*tag, value));
            set.extend(tlv(0x30, &ava));
        }
        seq.extend(tlv(0x31, &set));
    }
    tlv(0x30, &seq)
}

pub fn bmp(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

pub fn universal(text: &str) -> Vec<u8> {
    text.chars()
        .flat_map(|c| u32::from(c).to_be_bytes())
        .collect()
}

fn spki() -> Vec<u8> {
    KeyPair::generate().unwrap().public_key_der()
}

/// A certificate (unsigned: the signature is zeros, which parsers do not check) with the
/// given subject Name DER and SANs.
pub fn raw_cert(subject: &[u8], uris: &[&str], dns: &[&str]) -> Vec<u8> {
    let ecdsa_sha256 = {
        let mut alg = oid("1.2.840.10045.4.3.2");
        alg = tlv(0x30, &alg);
        alg
    };
    let issuer = name(&[&[("2.5.4.3", UTF8, b"issuer")]]);
    let validity = {
        let mut v = tlv(0x17, b"250101000000Z");
        v.extend(tlv(0x17, b"350101000000Z"));
        tlv(0x30, &v)
    };
    let mut tbs = tlv(0xa0, &tlv(0x02, &[2]));
    tbs.extend(tlv(0x02, &[1]));
    tbs.extend(&ecdsa_sha256);
    tbs.extend(issuer);
    tbs.extend(validity);
    tbs.extend_from_slice(subject);
    tbs.extend(spki());
    if !uris.is_empty() || !dns.is_empty() {
        let mut names = Vec::new();
        for uri in uris {
            names.extend(tlv(0x86, uri.as_bytes()));
        }
        for d in dns {
            names.extend(tlv(0x82, d.as_bytes()));
        }
        let mut ext = oid("2.5.29.17");
        ext.extend(tlv(0x04, &tlv(0x30, &names)));
        tbs.extend(tlv(0xa3, &tlv(0x30, &tlv(0x30, &ext))));
    }
    let mut cert = tlv(0x30, &tbs);
    cert.extend(&ecdsa_sha256);
    cert.extend(tlv(
        0x03,
        &[0, 0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
    ));
    tlv(0x30, &cert)
}

pub fn pem(der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                body.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                body.push('=');
            }
        }
    }
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
