//! Translates a `java.util.regex.Pattern` into an equivalent pattern for the `regex` crate,
//! or refuses it.
//!
//! Both engines pick the same match (leftmost, first alternative, greedy/lazy as written),
//! so a faithful translation of the syntax gives Kafka's results. Java spells some things
//! differently: `.` stops at `\r`, U+0085, U+2028 and U+2029 as well as `\n`; `\d`, `\w`
//! and `\s` are ASCII-only; `(?i)` folds ASCII only; `\<` is a literal. Everything is
//! therefore rewritten into explicit forms. Constructs with no exact `regex` equivalent
//! (backreferences, lookaround, possessive quantifiers, atomic groups, `\b`, `\Z`, the
//! `m`, `x`, `u`, `d` and `U` flags, Unicode blocks, `java*` properties) are refused with
//! a message, never approximated.

use std::fmt;
use std::fmt::Write as _;

const MAX_PATTERN_CHARS: usize = 4096;
/// Nested classes are parsed recursively; bound the stack (the Wasm VM's is small).
const MAX_CLASS_DEPTH: usize = 32;
const NOT_LINE_TERMINATOR: &str = "[^\\n\\r\\x{85}\\x{2028}\\x{2029}]";
const ASCII_DIGIT: &str = "0-9";
const ASCII_WORD: &str = "a-zA-Z0-9_";
const ASCII_SPACE: &str = "\\t\\n\\x0B\\x0C\\r\\x20";

#[derive(Clone, Copy, Default)]
struct Flags {
    case_insensitive: bool,
    dot_all: bool,
}

/// Translates a Java pattern into `regex` syntax.
pub fn translate(java: &str) -> Result<String, RegexError> {
    let chars: Vec<char> = java.chars().collect();
    if chars.len() > MAX_PATTERN_CHARS {
        return Err(syntax(format!(
            "pattern is longer than {MAX_PATTERN_CHARS} characters"
        )));
    }
    let mut translator = Translator {
        chars,
        pos: 0,
        out: String::with_capacity(java.len() * 2),
        scopes: vec![Flags::default()],
        class_depth: 0,
    };
    translator.run()?;
    Ok(translator.out)
}

struct Translator {
    chars: Vec<char>,
    pos: usize,
    out: String,
    /// Flags in force for each open group; `(?i)` changes the innermost one.
    scopes: Vec<Flags>,
    class_depth: usize,
}

/// Why a Java pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexError {
    /// Java accepts it, but the `regex` crate has no exact equivalent.
    Unsupported(String),
    /// Java itself would refuse it (`PatternSyntaxException`).
    Syntax(String),
}

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegexError::Unsupported(what) => write!(
                f,
                "{what} not supported (the Rust regex engine has no exact equivalent)"
            ),
            RegexError::Syntax(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for RegexError {}

fn unsupported(what: &str) -> RegexError {
    RegexError::Unsupported(what.to_owned())
}

fn syntax(problem: impl Into<String>) -> RegexError {
    RegexError::Syntax(problem.into())
}

impl Translator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn flags(&self) -> Flags {
        self.scopes.last().copied().unwrap_or_default()
    }

    fn run(&mut self) -> Result<(), RegexError> {
        while let Some(c) = self.next() {
            match c {
                '\\' => self.escape_outside_class()?,
                '[' => {
                    let class = self.class()?;
                    self.out.push_str(&class);
                }
                '.' => {
                    if self.flags().dot_all {
                        self.out.push_str("(?s:.)");
                    } else {
                        self.out.push_str(NOT_LINE_TERMINATOR);
                    }
                }
                '^' | '|' => self.out.push(c),
                // Without MULTILINE Java's `$` also matches before a final line
                // terminator; the `regex` crate's only at the end. Documented divergence.
                '$' => self.out.push('$'),
                '(' => self.group_open()?,
                ')' => {
                    if self.scopes.len() <= 1 {
                        return Err(syntax(format!("unmatched ')' at index {}", self.pos - 1)));
                    }
                    self.scopes.pop();
                    self.out.push(')');
                }
                '*' | '+' | '?' => {
                    self.out.push(c);
                    self.quantifier_suffix()?;
                }
                '{' => self.counted_repetition()?,
                other => self.literal(other),
            }
        }
        if self.scopes.len() > 1 {
            return Err(syntax("unclosed group"));
        }
        Ok(())
    }

    fn quantifier_suffix(&mut self) -> Result<(), RegexError> {
        match self.peek() {
            Some('?') => {
                self.pos += 1;
                self.out.push('?');
            }
            Some('+') => return Err(unsupported("possessive quantifier")),
            _ => {}
        }
        // Java refuses `a**` and `a*?+`; the `regex` crate would accept them.
        match self.peek() {
            Some(c @ ('*' | '+' | '?')) => Err(syntax(format!(
                "dangling meta character '{c}' at index {}",
                self.pos
            ))),
            _ => Ok(()),
        }
    }

    fn counted_repetition(&mut self) -> Result<(), RegexError> {
        let start = self.pos - 1;
        let mut body = String::new();
        loop {
            match self.next() {
                Some('}') => break,
                Some(c) if c.is_ascii_digit() || c == ',' => body.push(c),
                _ => return Err(syntax(format!("illegal repetition at index {start}"))),
            }
        }
        let mut parts = body.splitn(2, ',');
        let min = parts.next().unwrap_or_default();
        let max = parts.next();
        let valid = !min.is_empty() && max.is_none_or(|m| !m.contains(','));
        if !valid {
            return Err(syntax(format!(
                "illegal repetition {{{body}}} at index {start}"
            )));
        }
        let _ = write!(self.out, "{{{body}}}");
        self.quantifier_suffix()
    }

    fn group_open(&mut self) -> Result<(), RegexError> {
        let outer = self.flags();
        if self.peek() != Some('?') {
            self.scopes.push(outer);
            self.out.push('(');
            return Ok(());
        }
        self.pos += 1;
        match self.next() {
            Some(':') => {
                self.scopes.push(outer);
                self.out.push_str("(?:");
                Ok(())
            }
            Some('=') | Some('!') => Err(unsupported("lookahead")),
            Some('>') => Err(unsupported("atomic group")),
            Some('<') => match self.peek() {
                Some('=') | Some('!') => Err(unsupported("lookbehind")),
                _ => {
                    let mut name = String::new();
                    loop {
                        match self.next() {
                            Some('>') => break,
                            Some(c) if c.is_ascii_alphanumeric() => name.push(c),
                            _ => return Err(syntax("invalid named group")),
                        }
                    }
                    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                        return Err(syntax(format!(
                            "group name {name:?} must start with a letter"
                        )));
                    }
                    self.scopes.push(outer);
                    let _ = write!(self.out, "(?P<{name}>");
                    Ok(())
                }
            },
            Some(_) => {
                self.pos -= 1;
                self.inline_flags(outer)
            }
            None => Err(syntax("unclosed group")),
        }
    }

    fn inline_flags(&mut self, outer: Flags) -> Result<(), RegexError> {
        let mut flags = outer;
        let mut enable = true;
        loop {
            match self.next() {
                Some('-') => enable = false,
                Some('i') => flags.case_insensitive = enable,
                Some('s') => flags.dot_all = enable,
                Some(')') => {
                    // Applies to the rest of the enclosing group. It emits nothing, so a
                    // quantifier after it would wrongly bind to the previous atom.
                    if let Some(top) = self.scopes.last_mut() {
                        *top = flags;
                    }
                    if let Some(c @ ('*' | '+' | '?' | '{')) = self.peek() {
                        return Err(syntax(format!("dangling meta character '{c}' after flags")));
                    }
                    return Ok(());
                }
                Some(':') => {
                    self.scopes.push(flags);
                    self.out.push_str("(?:");
                    return Ok(());
                }
                Some(c @ ('m' | 'x' | 'u' | 'd' | 'U' | 'c')) => {
                    return Err(unsupported(&format!("flag ({c})")))
                }
                _ => return Err(syntax("unknown inline modifier")),
            }
        }
    }

    /// A literal character outside a class.
    fn literal(&mut self, c: char) {
        if self.flags().case_insensitive && c.is_ascii_alphabetic() {
            let _ = write!(
                self.out,
                "[{}{}]",
                c.to_ascii_lowercase(),
                c.to_ascii_uppercase()
            );
        } else {
            push_literal(&mut self.out, c);
        }
    }

    fn escape_outside_class(&mut self) -> Result<(), RegexError> {
        let c = self.next().ok_or_else(|| syntax("trailing backslash"))?;
        match c {
            'd' => self.out.push_str("[0-9]"),
            'D' => self.out.push_str("[^0-9]"),
            'w' => self.out.push_str("[a-zA-Z0-9_]"),
            'W' => self.out.push_str("[^a-zA-Z0-9_]"),
            's' => {
                let _ = write!(self.out, "[{ASCII_SPACE}]");
            }
            'S' => {
                let _ = write!(self.out, "[^{ASCII_SPACE}]");
            }
            'A' => self.out.push_str("\\A"),
            'z' => self.out.push_str("\\z"),
            'b' | 'B' => return Err(unsupported("word boundary \\b")),
            'Z' | 'G' => return Err(unsupported(&format!("\\{c}"))),
            'Q' => {
                while let Some(q) = self.next() {
                    if q == '\\' && self.peek() == Some('E') {
                        self.pos += 1;
                        break;
                    }
                    self.literal(q);
                }
            }
            'p' | 'P' => {
                if self.flags().case_insensitive {
                    return Err(unsupported("\\p{...} under (?i)"));
                }
                let class = self.property(c == 'P')?;
                self.out.push_str(&class);
            }
            '1'..='9' | 'k' => return Err(unsupported("backreference")),
            _ => {
                let literal = self.escaped_char(c)?;
                self.literal(literal);
            }
        }
        Ok(())
    }

    /// The character an escape like `\t`, `\x41`, `\u00e9`, `\0101`, `\cA` or `\,` stands for.
    fn escaped_char(&mut self, c: char) -> Result<char, RegexError> {
        Ok(match c {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\x0C',
            'a' => '\x07',
            'e' => '\x1B',
            '0' => self.octal()?,
            'x' => self.hex_escape()?,
            'u' => self.unicode_escape()?,
            'c' => {
                let control = self
                    .next()
                    .ok_or_else(|| syntax("illegal control escape"))?;
                char::from_u32(u32::from(control) ^ 64)
                    .ok_or_else(|| syntax("illegal control escape"))?
            }
            c if c.is_ascii_alphanumeric() => {
                return Err(syntax(format!("illegal or unsupported escape \\{c}")))
            }
            other => other,
        })
    }

    fn octal(&mut self) -> Result<char, RegexError> {
        let digit = |c: Option<char>| c.and_then(|c| c.to_digit(8));
        let first = digit(self.peek()).ok_or_else(|| syntax("illegal octal escape"))?;
        self.pos += 1;
        let mut value = first;
        if let Some(second) = digit(self.peek()) {
            self.pos += 1;
            value = value * 8 + second;
            if first <= 3 {
                if let Some(third) = digit(self.peek()) {
                    self.pos += 1;
                    value = value * 8 + third;
                }
            }
        }
        char::from_u32(value).ok_or_else(|| syntax("illegal octal escape"))
    }

    fn hex_digits(&mut self, count: usize) -> Result<u32, RegexError> {
        let mut value = 0u32;
        for _ in 0..count {
            let digit = self
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| syntax("illegal hexadecimal escape"))?;
            value = value * 16 + digit;
        }
        Ok(value)
    }

    fn hex_escape(&mut self) -> Result<char, RegexError> {
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut value = 0u32;
            let mut digits = 0;
            loop {
                match self.next() {
                    Some('}') if digits > 0 => break,
                    Some(c) if c.is_ascii_hexdigit() && digits < 8 => {
                        value = value * 16 + c.to_digit(16).unwrap_or(0);
                        digits += 1;
                    }
                    _ => return Err(syntax("illegal hexadecimal escape")),
                }
            }
            return char::from_u32(value).ok_or_else(|| syntax("illegal code point"));
        }
        let value = self.hex_digits(2)?;
        char::from_u32(value).ok_or_else(|| syntax("illegal hexadecimal escape"))
    }

    fn unicode_escape(&mut self) -> Result<char, RegexError> {
        let high = self.hex_digits(4)?;
        if (0xD800..0xDC00).contains(&high)
            && self.peek() == Some('\\')
            && self.peek_at(1) == Some('u')
        {
            self.pos += 2;
            let low = self.hex_digits(4)?;
            if (0xDC00..0xE000).contains(&low) {
                let combined = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return char::from_u32(combined).ok_or_else(|| syntax("illegal code point"));
            }
            return Err(unsupported("lone surrogate"));
        }
        char::from_u32(high).ok_or_else(|| unsupported("lone surrogate"))
    }

    /// `\p{Name}` / `\pL`: Java's POSIX names are ASCII-only, other names are Unicode
    /// categories, scripts or properties, which `regex` spells the same way.
    fn property(&mut self, negated: bool) -> Result<String, RegexError> {
        let name = match self.next() {
            Some('{') => {
                let mut name = String::new();
                loop {
                    match self.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => return Err(syntax("illegal \\p{...} property")),
                    }
                }
                name
            }
            Some(c) if c.is_ascii_alphabetic() => c.to_string(),
            _ => return Err(syntax("illegal \\p property")),
        };
        let set = match name.as_str() {
            "Lower" => "a-z",
            "Upper" => "A-Z",
            "ASCII" => "\\x00-\\x7F",
            "Alpha" => "a-zA-Z",
            "Digit" => ASCII_DIGIT,
            "Alnum" => "a-zA-Z0-9",
            "Punct" | "Graph" | "Print" | "Blank" | "Cntrl" | "XDigit" | "Space" => {
                posix_set(&name)
            }
            n if n.starts_with("java") || n.starts_with("In") => {
                return Err(unsupported(&format!("\\p{{{n}}}")))
            }
            n => {
                let unicode = n.strip_prefix("Is").unwrap_or(n);
                let sign = if negated { 'P' } else { 'p' };
                return Ok(format!("\\{sign}{{{unicode}}}"));
            }
        };
        Ok(format!("[{}{set}]", if negated { "^" } else { "" }))
    }

    /// A character class, already past its `[`. Returns it in `regex` syntax.
    fn class(&mut self) -> Result<String, RegexError> {
        self.class_depth += 1;
        let class = self.class_body();
        self.class_depth -= 1;
        class
    }

    fn class_body(&mut self) -> Result<String, RegexError> {
        if self.class_depth > MAX_CLASS_DEPTH {
            return Err(syntax(format!(
                "character classes nested more than {MAX_CLASS_DEPTH} deep"
            )));
        }
        let case_insensitive = self.flags().case_insensitive;
        let mut out = String::from("[");
        if self.peek() == Some('^') {
            self.pos += 1;
            out.push('^');
        }
        let mut empty = true;
        // Java reads a `]` that opens a class as a literal.
        if self.peek() == Some(']') {
            self.pos += 1;
            self.class_item(&mut out, ']', case_insensitive)?;
            empty = false;
        }
        loop {
            let c = self
                .next()
                .ok_or_else(|| syntax("unclosed character class"))?;
            match c {
                ']' => break,
                '[' => {
                    let nested = self.class()?;
                    out.push_str(&nested);
                }
                '&' if self.peek() == Some('&') => {
                    self.pos += 1;
                    out.push_str("&&");
                    continue;
                }
                '\\' => match self.peek() {
                    Some(e @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                        self.pos += 1;
                        let (set, negate) = match e {
                            'd' => (ASCII_DIGIT, false),
                            'D' => (ASCII_DIGIT, true),
                            'w' => (ASCII_WORD, false),
                            'W' => (ASCII_WORD, true),
                            's' => (ASCII_SPACE, false),
                            _ => (ASCII_SPACE, true),
                        };
                        let _ = write!(out, "[{}{set}]", if negate { "^" } else { "" });
                    }
                    Some(p @ ('p' | 'P')) => {
                        if case_insensitive {
                            return Err(unsupported("\\p{...} under (?i)"));
                        }
                        self.pos += 1;
                        let class = self.property(p == 'P')?;
                        out.push_str(&class);
                    }
                    Some('Q') => {
                        self.pos += 1;
                        while let Some(q) = self.next() {
                            if q == '\\' && self.peek() == Some('E') {
                                self.pos += 1;
                                break;
                            }
                            push_class_range(&mut out, q, q, case_insensitive);
                        }
                    }
                    Some(_) => {
                        let e = self.next().ok_or_else(|| syntax("trailing backslash"))?;
                        if matches!(e, '1'..='9' | 'b' | 'B' | 'k') {
                            return Err(unsupported(&format!("\\{e} in a class")));
                        }
                        let lo = self.escaped_char(e)?;
                        self.class_item(&mut out, lo, case_insensitive)?;
                    }
                    None => return Err(syntax("trailing backslash")),
                },
                lo => self.class_item(&mut out, lo, case_insensitive)?,
            }
            empty = false;
        }
        if empty {
            return Err(syntax("empty character class"));
        }
        out.push(']');
        Ok(out)
    }

    /// A single character or a range starting at `lo` inside a class.
    fn class_item(&mut self, out: &mut String, lo: char, ci: bool) -> Result<(), RegexError> {
        if self.peek() == Some('-') && !matches!(self.peek_at(1), Some(']') | None) {
            if self.peek_at(1) == Some('[') {
                return Err(unsupported("'-' before a nested class"));
            }
            self.pos += 1;
            let hi = match self.next() {
                Some('\\') => {
                    let e = self.next().ok_or_else(|| syntax("trailing backslash"))?;
                    self.escaped_char(e)?
                }
                Some(c) => c,
                None => return Err(syntax("unclosed character class")),
            };
            if hi < lo {
                return Err(syntax(format!("illegal character range {lo}-{hi}")));
            }
            push_class_range(out, lo, hi, ci);
        } else {
            push_class_range(out, lo, lo, ci);
        }
        Ok(())
    }
}

fn posix_set(name: &str) -> &'static str {
    match name {
        "Punct" => "!-/:-@\\[-`{-~",
        "Graph" => "!-~",
        "Print" => "\\x20-~",
        "Blank" => "\\x20\\t",
        "Cntrl" => "\\x00-\\x1F\\x7F",
        "XDigit" => "0-9a-fA-F",
        _ => ASCII_SPACE,
    }
}

fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
    }
}

/// Adds `lo-hi` to a class; under Java's ASCII `(?i)` also every ASCII character whose
/// other case falls in the range.
fn push_class_range(out: &mut String, lo: char, hi: char, case_insensitive: bool) {
    let _ = write!(out, "\\x{{{:X}}}", u32::from(lo));
    if hi != lo {
        let _ = write!(out, "-\\x{{{:X}}}", u32::from(hi));
    }
    if case_insensitive {
        for byte in 0u8..=0x7f {
            let c = char::from(byte);
            let in_range = |x: char| lo <= x && x <= hi;
            if !in_range(c)
                && (in_range(c.to_ascii_uppercase()) || in_range(c.to_ascii_lowercase()))
            {
                let _ = write!(out, "\\x{{{:X}}}", byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_match(java: &str, input: &str) -> bool {
        let rust = translate(java).unwrap();
        regex::Regex::new(&format!("\\A(?:{rust})\\z"))
            .unwrap()
            .is_match(input)
    }

    #[test]
    fn dot_stops_at_java_line_terminators() {
        assert!(full_match("a.c", "abc"));
        assert!(!full_match("a.c", "a\rc"));
        assert!(!full_match("a.c", "a\u{2028}c"));
        assert!(full_match("(?s)a.c", "a\rc"));
    }

    #[test]
    fn ascii_classes_and_case() {
        assert!(!full_match("\\d", "\u{0663}"));
        assert!(!full_match("\\w", "é"));
        assert!(full_match("(?i)cn=abc", "CN=AbC"));
        assert!(!full_match("(?i)é", "É"));
        assert!(full_match("(?i)[a-c]+", "AbC"));
        assert!(full_match("(?i:x)y", "Xy"));
        assert!(!full_match("(?i:x)y", "XY"));
        assert!(full_match("\\p{Lower}+", "abc"));
        assert!(!full_match("\\p{Lower}", "é"));
        assert!(full_match("\\p{L}+", "éa"));
    }

    #[test]
    fn escapes_are_literals() {
        assert!(full_match("a\\,b", "a,b"));
        assert!(full_match("\\<x\\>", "<x>"));
        assert!(full_match("\\Q.*\\E", ".*"));
        assert!(full_match("\\x41\\u0042\\0103\\t", "ABC\t"));
        assert!(full_match("[\\]a-]+", "]-a"));
        assert!(full_match("[a-z&&[^x]]+", "abc"));
        assert!(!full_match("[a-z&&[^x]]+", "axc"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}a{}", "[".repeat(2000), "]".repeat(2000));
        assert!(translate(&deep).unwrap_err().to_string().contains("nested"));
    }

    #[test]
    fn refuses_what_cannot_be_exact() {
        for bad in [
            "a**",
            "a+?*",
            "(a)\\1",
            "(?=a)",
            "(?!a)",
            "(?<=a)",
            "(?<!a)",
            "(?>a)",
            "a*+",
            "\\bx",
            "(?m)a",
            "(?x)a",
            "\\Z",
            "\\p{InGreek}",
            "\\p{javaLowerCase}",
            "a{,2}",
            "(a",
            "a)",
            "\\",
            "\\y",
            "[a",
        ] {
            assert!(translate(bad).is_err(), "{bad} should be refused");
        }
    }
}
