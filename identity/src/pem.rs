//! PEM blocks, read the way x509-parser 0.17's `Pem::iter_from_buffer` reads them.
//!
//! Line by line: text before a `-----BEGIN LABEL-----` line is skipped, the label ends at
//! its first `-`, the lines up to the next line that starts with `-----END ` are joined with
//! their trailing whitespace removed, then decoded as strict padded base64. A line that is
//! not UTF-8 ends the reading with an error. x509-parser decodes with the `data-encoding`
//! crate, whose decoder alone was 40 KB of the filter's .wasm; `base64ct` (already linked
//! for PEM signing keys) decodes the same strict base64. The tests check both readers agree.

use std::fmt;

use base64ct::Encoding;

/// One PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub contents: Vec<u8>,
}

/// Why a block could not be read; `Display` matches x509-parser's `PEMError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemError {
    Base64,
    Incomplete,
    InvalidHeader,
    NotUtf8,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemError::Base64 => "base64 decode error",
            PemError::Incomplete => "incomplete PEM",
            PemError::InvalidHeader => "invalid header",
            PemError::NotUtf8 => "IO error: stream did not contain valid UTF-8",
        })
    }
}

impl std::error::Error for PemError {}

/// The blocks of `input`, in order; iteration ends after the first error.
pub fn blocks(input: &[u8]) -> Blocks<'_> {
    Blocks {
        lines: input.split_inclusive(|b| *b == b'\n'),
        failed: false,
    }
}

pub struct Blocks<'a> {
    lines: std::slice::SplitInclusive<'a, u8, fn(&u8) -> bool>,
    failed: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<Block, PemError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.read_block()?;
        self.failed = result.is_err();
        Some(result)
    }
}

impl Blocks<'_> {
    fn line(&mut self) -> Option<Result<&str, PemError>> {
        self.lines
            .next()
            .map(|l| std::str::from_utf8(l).map_err(|_| PemError::NotUtf8))
    }

    /// None: no more blocks (the input ended before a BEGIN line).
    fn read_block(&mut self) -> Option<Result<Block, PemError>> {
        let label = loop {
            let line = match self.line()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            if let Some(rest) = line.strip_prefix("-----BEGIN ") {
                // "-----BEGIN L-----..." split at "-----" gives "", "BEGIN L", ...
                let mut parts = rest.split("-----");
                let (Some(label), Some(_)) = (parts.next(), parts.next()) else {
                    return Some(Err(PemError::InvalidHeader));
                };
                break label.split('-').next().unwrap_or_default().to_owned();
            }
        };
        let mut base64 = String::new();
        loop {
            match self.line() {
                None => return Some(Err(PemError::Incomplete)),
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(line)) if line.starts_with("-----END ") => break,
                Some(Ok(line)) => base64.push_str(line.trim_end()),
            }
        }
        Some(
            base64ct::Base64::decode_vec(&base64)
                .map(|contents| Block { label, contents })
                .map_err(|_| PemError::Base64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What x509-parser makes of `input`: the blocks up to and including the first error.
    fn x509_parser_blocks(input: &[u8]) -> Vec<Result<(String, Vec<u8>), String>> {
        let mut out = vec![];
        for block in x509_parser::pem::Pem::iter_from_buffer(input) {
            let failed = block.is_err();
            out.push(
                block
                    .map(|b| (b.label, b.contents))
                    .map_err(|e| e.to_string()),
            );
            if failed {
                break;
            }
        }
        out
    }

    fn ours(input: &[u8]) -> Vec<Result<(String, Vec<u8>), String>> {
        blocks(input)
            .map(|b| b.map(|b| (b.label, b.contents)).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_x509_parser_reads() {
        let body = "MIIBszCCAVmgAwIBAgIUQ2Vy\ndGlmaWNhdGU=\n";
        let cases: Vec<String> = vec![
            String::new(),
            "no pem here\n".into(),
            format!("-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"),
            format!("-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----"),
            format!("-----BEGIN CERTIFICATE-----\r\n{}-----END CERTIFICATE-----\r\n", body.replace('\n', "\r\n")),
            format!("explanatory text\n-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\ntrailer\n"),
            format!("-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"),
            format!("-----BEGIN X509-CRL-----\n{body}-----END X509-CRL-----\n"),
            format!("-----BEGIN CERTIFICATE-----\n{body}"),
            "-----BEGIN CERTIFICATE\nQQ==\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nQQ\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nQR==\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nQ Q==\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\nQQ==  \t\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            "-----BEGIN -----\nQQ==\n-----END -----\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n".into(),
        ];
        for case in &cases {
            assert_eq!(
                ours(case.as_bytes()),
                x509_parser_blocks(case.as_bytes()),
                "{case:?}"
            );
        }
        let not_utf8 = b"-----BEGIN CERTIFICATE-----\n\xff\xfe\n-----END CERTIFICATE-----\n";
        assert_eq!(ours(not_utf8), x509_parser_blocks(not_utf8));
        let not_utf8_before =
            b"\xff\n-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n";
        assert_eq!(ours(not_utf8_before), x509_parser_blocks(not_utf8_before));
    }
}
