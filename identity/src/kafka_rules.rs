//! Kafka's `ssl.principal.mapping.rules` (KIP-371), with the semantics of Kafka's
//! `SslPrincipalMapper`, quirks included:
//! - rules are split and parsed by Kafka's own two regular expressions (reused here: they
//!   need no feature the `regex` crate lacks); empty rules are ignored, anything else
//!   that does not parse is an error;
//! - a rule applies when its pattern matches the *whole* DN, and then the result is
//!   `dn.replaceAll(pattern, replacement)`, which replaces *every* match, so `.*` gives
//!   two replacements (the whole DN, then the empty string at its end);
//! - `$n` references to groups the pattern does not have are made literal by Kafka's
//!   `escapeLiteralBackReferences` (with its index shift after the first insertion);
//! - `/L` and `/U` change the case with Java's `Locale.ENGLISH` rules.
//!
//! Java throws at mapping time for a replacement it cannot apply (`$x`, a trailing
//! backslash, a group that does not exist); the rules are refused up front instead.

use crate::java_regex::{self, RegexError};
use crate::matcher::{Matcher, DEFAULT_SIZE_LIMIT};
use std::fmt;

/// Java's `\s` is ASCII whitespace and `.` stops at line terminators other than `\n`.
const JAVA_SPACE: &str = r"[ \t\n\x0B\x0C\r]";
const JAVA_DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_RULES_LENGTH: usize = 16 * 1024;

/// A compiled list of Kafka SSL principal mapping rules.
#[derive(Debug, Clone)]
pub struct KafkaRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Pattern(PatternRule),
}

#[derive(Debug, Clone)]
struct PatternRule {
    source: String,
    whole: Matcher,
    find: Matcher,
    replacement: Vec<Piece>,
    case: Case,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
}

/// A rule Kafka would refuse, or that this implementation cannot reproduce exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub reason: RuleProblem,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {:?}: {}", self.rule, self.reason)
    }
}

impl std::error::Error for RuleError {}

/// What is wrong with a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleProblem {
    RulesTooLong {
        max: usize,
    },
    /// The rule grammar itself did not compile (a bug, never the user's input).
    Grammar(String),
    Invalid,
    Unmatched {
        rest: String,
    },
    /// The pattern cannot be translated from Java exactly.
    Pattern {
        pattern: String,
        error: RegexError,
    },
    /// The translated pattern did not compile (e.g. it is too large).
    Compile {
        pattern: String,
        error: String,
    },
    Replacement {
        replacement: String,
        error: ReplacementError,
    },
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleProblem::RulesTooLong { max } => write!(f, "rules are longer than {max} bytes"),
            RuleProblem::Grammar(e) => write!(f, "internal rule grammar failed to compile: {e}"),
            RuleProblem::Invalid => f.write_str("invalid rule"),
            RuleProblem::Unmatched { rest } => write!(
                f,
                "invalid rule, unmatched substring {rest:?} (expected DEFAULT or RULE:pattern/replacement/[LU])"
            ),
            RuleProblem::Pattern { pattern, error } => write!(f, "pattern {pattern:?}: {error}"),
            RuleProblem::Compile { pattern, error } => write!(f, "pattern {pattern:?}: {error}"),
            RuleProblem::Replacement { replacement, error } => write!(
                f,
                "replacement {replacement:?}: {error} (Kafka would fail when the rule matches)"
            ),
        }
    }
}

/// A replacement Java's `Matcher.appendReplacement` would throw on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacementError {
    GroupReferenceTooLarge { digits: String },
    MissingEscapedCharacter,
    MissingGroupIndex,
    UnclosedGroupName,
    GroupNameStart,
    NoGroupNamed { name: String },
    IllegalGroupReference,
    NoGroup { group: usize },
}

impl fmt::Display for ReplacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplacementError::GroupReferenceTooLarge { digits } => {
                write!(f, "group reference ${digits} is too large")
            }
            ReplacementError::MissingEscapedCharacter => {
                f.write_str("character to be escaped is missing")
            }
            ReplacementError::MissingGroupIndex => f.write_str("group index is missing"),
            ReplacementError::UnclosedGroupName => {
                f.write_str("named group is missing trailing '}'")
            }
            ReplacementError::GroupNameStart => {
                f.write_str("named group reference must start with a letter")
            }
            ReplacementError::NoGroupNamed { name } => write!(f, "no group with name {{{name}}}"),
            ReplacementError::IllegalGroupReference => f.write_str("illegal group reference"),
            ReplacementError::NoGroup { group } => write!(f, "no group {group}"),
        }
    }
}

/// Why the rules give no principal for a DN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// No rule applied; Kafka's `NoMatchingRule`.
    NoMatchingRule,
    /// The first applicable rule's pattern matched the empty string just before a
    /// character outside the BMP. Java then resumes its search *inside* the UTF-16
    /// surrogate pair and may split it, giving a principal that is not valid Unicode;
    /// refusing is the only safe answer.
    SplitsSurrogatePair { rule: String },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::NoMatchingRule => f.write_str("no rule matched"),
            ApplyError::SplitsSurrogatePair { rule } => write!(
                f,
                "rule {rule:?} matches the empty string before a non-BMP character, where Kafka's result is not valid Unicode"
            ),
        }
    }
}

impl std::error::Error for ApplyError {}

impl std::error::Error for RuleProblem {}

impl std::error::Error for ReplacementError {}

impl KafkaRules {
    /// Parses rules as `SslPrincipalMapper.fromRules` does.
    pub fn parse(rules: &str) -> Result<KafkaRules, RuleError> {
        if rules.len() > MAX_RULES_LENGTH {
            return Err(RuleError {
                rule: String::new(),
                reason: RuleProblem::RulesTooLong {
                    max: MAX_RULES_LENGTH,
                },
            });
        }
        let splitter = kafka_regex(&format!(
            r"{JAVA_SPACE}*({}){JAVA_SPACE}*(,{JAVA_SPACE}*|$|[\x{{85}}\x{{2028}}\x{{2029}}]$)",
            rule_pattern()
        ))?;
        let parser = kafka_regex(&format!(r"\A(?:{})", rule_pattern()))?;
        // Java's String.trim() strips every character up to U+0020.
        let trimmed = rules.trim_matches(|c: char| c <= ' ');
        let mut parsed = Vec::new();
        for captures in splitter.captures_all(trimmed) {
            let rule = captures.get(1).unwrap_or_default();
            if let Some(rule) = parse_rule(&parser, rule)? {
                parsed.push(rule);
            }
        }
        Ok(KafkaRules { rules: parsed })
    }

    /// The principal name for a DN rendered as `X500Principal.getName()` renders it.
    pub fn apply(&self, dn: &str) -> Result<String, ApplyError> {
        self.rules
            .iter()
            .find_map(|rule| match rule {
                Rule::Default => Some(Ok(dn.to_string())),
                Rule::Pattern(rule) => rule.apply(dn),
            })
            .unwrap_or(Err(ApplyError::NoMatchingRule))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl fmt::Display for KafkaRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .rules
            .iter()
            .map(|r| match r {
                Rule::Default => "DEFAULT",
                Rule::Pattern(p) => p.source.as_str(),
            })
            .collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// Kafka's `RULE_PATTERN`, `(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)`,
/// with Java's `.`.
fn rule_pattern() -> String {
    format!(
        r"(DEFAULT)|RULE:((\\{d}|[^\\/])*)/((\\{d}|[^\\/])*)/([LU]?){d}*?|({d}*?)",
        d = JAVA_DOT
    )
}

fn kafka_regex(pattern: &str) -> Result<Matcher, RuleError> {
    Matcher::new(pattern, DEFAULT_SIZE_LIMIT).map_err(|e| RuleError {
        rule: String::new(),
        reason: RuleProblem::Grammar(e),
    })
}

fn parse_rule(parser: &Matcher, rule: &str) -> Result<Option<Rule>, RuleError> {
    let error = |reason: RuleProblem| RuleError {
        rule: rule.to_string(),
        reason,
    };
    let captures = parser
        .captures_at(rule, 0)
        .ok_or_else(|| error(RuleProblem::Invalid))?;
    let end = captures.range(0).map_or(0, |(_, end)| end);
    if end != rule.len() {
        let rest = rule.get(end..).unwrap_or_default().to_owned();
        return Err(error(RuleProblem::Unmatched { rest }));
    }
    if captures.get(1).is_some() {
        return Ok(Some(Rule::Default));
    }
    let (Some(pattern), Some(replacement)) = (captures.get(2), captures.get(4)) else {
        // Kafka ignores empty rules (e.g. from ",,").
        return Ok(None);
    };
    let case = match captures.get(6) {
        Some("L") => Case::Lower,
        Some("U") => Case::Upper,
        _ => Case::Keep,
    };
    let translated = java_regex::translate(pattern).map_err(|e| {
        error(RuleProblem::Pattern {
            pattern: pattern.to_owned(),
            error: e,
        })
    })?;
    let build = |p: &str| {
        Matcher::new(p, REGEX_SIZE_LIMIT).map_err(|e| {
            error(RuleProblem::Compile {
                pattern: pattern.to_owned(),
                error: e,
            })
        })
    };
    let find = build(&translated)?;
    let whole = build(&format!(r"\A(?:{translated})\z"))?;
    let group_count = find.captures_len().saturating_sub(1);
    let names = find.capture_names();
    let pieces = escape_literal_back_references(replacement, group_count)
        .and_then(|escaped| parse_replacement(&escaped, group_count, &names))
        .map_err(|e| {
            error(RuleProblem::Replacement {
                replacement: replacement.to_owned(),
                error: e,
            })
        })?;
    Ok(Some(Rule::Pattern(PatternRule {
        source: rule.to_string(),
        whole,
        find,
        replacement: pieces,
        case,
    })))
}

impl PatternRule {
    fn apply(&self, dn: &str) -> Option<Result<String, ApplyError>> {
        if !self.whole.is_match(dn) {
            return None;
        }
        let Some(replaced) = self.replace_all(dn) else {
            return Some(Err(ApplyError::SplitsSurrogatePair {
                rule: self.source.clone(),
            }));
        };
        Some(Ok(match self.case {
            Case::Keep => replaced,
            Case::Lower => replaced.to_lowercase(),
            Case::Upper => replaced.to_uppercase(),
        }))
    }

    /// `String.replaceAll` with Java's `Matcher.find` iteration: after an empty match the
    /// search resumes one character later; after a non-empty one, at its end, where an
    /// empty match is still allowed. `None` when Java would step into a surrogate pair.
    fn replace_all(&self, dn: &str) -> Option<String> {
        let mut out = String::with_capacity(dn.len());
        let mut appended = 0;
        let mut search_from = 0;
        while search_from <= dn.len() {
            let Some(captures) = self.find.captures_at(dn, search_from) else {
                break;
            };
            let Some((start, end)) = captures.range(0) else {
                break;
            };
            out.push_str(dn.get(appended..start).unwrap_or_default());
            for piece in &self.replacement {
                match piece {
                    Piece::Literal(text) => out.push_str(text),
                    Piece::Group(n) => {
                        out.push_str(captures.get(*n).unwrap_or_default());
                    }
                }
            }
            appended = end;
            search_from = if start == end {
                let next = dn.get(end..).and_then(|rest| rest.chars().next());
                if next.is_some_and(|c| c.len_utf16() == 2) {
                    return None;
                }
                end + next.map_or(1, char::len_utf8)
            } else {
                end
            };
        }
        out.push_str(dn.get(appended..).unwrap_or_default());
        Some(out)
    }
}

/// Kafka's `escapeLiteralBackReferences`, on UTF-16 like Java: a `$n` whose group does
/// not exist gets a backslash. Positions come from the original string while insertions
/// shift the edited one, as in Kafka.
fn escape_literal_back_references(
    replacement: &str,
    group_count: usize,
) -> Result<Vec<u16>, ReplacementError> {
    let original: Vec<u16> = replacement.encode_utf16().collect();
    if group_count == 0 {
        return Ok(original);
    }
    let mut value = original.clone();
    let is_digit = |u: u16| (u16::from(b'0')..=u16::from(b'9')).contains(&u);
    let mut i = 0;
    while i < original.len() {
        if original.get(i) != Some(&u16::from(b'$')) {
            i += 1;
            continue;
        }
        let group_start = i + 1;
        let mut end = group_start;
        while original.get(end).is_some_and(|u| is_digit(*u)) {
            end += 1;
        }
        if end == group_start {
            i += 1;
            continue;
        }
        i = end;
        if original.get(group_start) == Some(&u16::from(b'0')) {
            continue;
        }
        let digits = String::from_utf16_lossy(original.get(group_start..end).unwrap_or_default());
        // Kafka's Integer.parseInt throws above i32::MAX.
        let mut index: u64 = digits
            .parse::<i32>()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| ReplacementError::GroupReferenceTooLarge {
                digits: digits.clone(),
            })?;
        let count = group_count as u64;
        while index > count && index >= 10 {
            index /= 10;
        }
        if index > count {
            let at = group_start - 1;
            if at <= value.len() {
                value.insert(at, u16::from(b'\\'));
            }
        }
    }
    Ok(value)
}

/// Java's `Matcher.appendReplacement` syntax, resolved against the pattern's groups.
fn parse_replacement(
    units: &[u16],
    group_count: usize,
    names: &[Option<&str>],
) -> Result<Vec<Piece>, ReplacementError> {
    let mut pieces = Vec::new();
    let mut literal: Vec<u16> = Vec::new();
    let flush = |literal: &mut Vec<u16>, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Literal(String::from_utf16_lossy(literal)));
            literal.clear();
        }
    };
    let digit = |u: Option<&u16>| {
        u.and_then(|u| char::from_u32(u32::from(*u)))
            .and_then(|c| c.to_digit(10))
            .map(|d| d as usize)
    };
    let mut i = 0;
    while let Some(&unit) = units.get(i) {
        if unit == u16::from(b'\\') {
            let escaped = units
                .get(i + 1)
                .ok_or(ReplacementError::MissingEscapedCharacter)?;
            literal.push(*escaped);
            i += 2;
        } else if unit == u16::from(b'$') {
            i += 1;
            let next = units.get(i).ok_or(ReplacementError::MissingGroupIndex)?;
            let group = if *next == u16::from(b'{') {
                i += 1;
                let mut name = String::new();
                loop {
                    match units.get(i).and_then(|u| char::from_u32(u32::from(*u))) {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() => name.push(c),
                        _ => return Err(ReplacementError::UnclosedGroupName),
                    }
                    i += 1;
                }
                i += 1;
                if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return Err(ReplacementError::GroupNameStart);
                }
                names
                    .iter()
                    .position(|n| *n == Some(name.as_str()))
                    .ok_or_else(|| ReplacementError::NoGroupNamed { name: name.clone() })?
            } else {
                let mut group = digit(Some(next)).ok_or(ReplacementError::IllegalGroupReference)?;
                i += 1;
                while let Some(d) = digit(units.get(i)) {
                    let longer = group * 10 + d;
                    if longer > group_count {
                        break;
                    }
                    group = longer;
                    i += 1;
                }
                if group > group_count {
                    return Err(ReplacementError::NoGroup { group });
                }
                group
            };
            flush(&mut literal, &mut pieces);
            pieces.push(Piece::Group(group));
        } else {
            literal.push(unit);
            i += 1;
        }
    }
    flush(&mut literal, &mut pieces);
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &str, dn: &str) -> Option<String> {
        KafkaRules::parse(rules).unwrap().apply(dn).ok()
    }

    // Cases from Kafka's SslPrincipalMapperTest, re-derived.
    #[test]
    fn kafka_examples() {
        let rules = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
                     RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
                     RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U,\
                     DEFAULT";
        assert_eq!(
            map(rules, "CN=Duke,OU=ServiceUsers,O=Org,C=US").unwrap(),
            "Duke"
        );
        assert_eq!(
            map(rules, "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US").unwrap(),
            "duke@sme"
        );
        assert_eq!(
            map(rules, "cn=duke,OU=JavaSoft,O=Sun Microsystems").unwrap(),
            "DUKE"
        );
        assert_eq!(
            map(rules, "OU=JavaSoft,O=Sun Microsystems,C=US").unwrap(),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
    }

    #[test]
    fn escaped_commas_and_slashes() {
        assert_eq!(map(r"RULE:^CN=([^\,]*)\,.*$/$1/", "CN=a,O=b").unwrap(), "a");
        assert_eq!(map(r"RULE:^CN=(.*)$/x\/$1/", "CN=a").unwrap(), "x/a");
    }

    #[test]
    fn replace_all_quirk() {
        // `.*` matches the whole DN, then the empty string at its end.
        assert_eq!(map("RULE:.*/x/", "CN=a").unwrap(), "xx");
        assert_eq!(map("RULE:(.*)/<$1>/", "CN=a").unwrap(), "<CN=a><>");
    }

    #[test]
    fn literal_back_references() {
        assert_eq!(map("RULE:^CN=(.*)$/$1@$2/", "CN=a").unwrap(), "a@$2");
        assert_eq!(map("RULE:^CN=(.*)$/$12/", "CN=a").unwrap(), "a2");
        assert_eq!(map("RULE:^CN=(.*)$/$0/", "CN=a").unwrap(), "CN=a");
    }

    #[test]
    fn no_rule_and_empty_rules() {
        assert!(map("RULE:^CN=x$/y/", "CN=z").is_none());
        assert!(map("", "CN=z").is_none());
        assert_eq!(map(" , DEFAULT ,", "CN=z").unwrap(), "CN=z");
    }

    #[test]
    fn invalid_rules() {
        for bad in [
            "RULE:a/b",
            "RULE:a/b/X",
            "DEFAULTX",
            "foo",
            "RULE:(a)\\1/x/",
            "RULE:^(.*)$/$x/",
            "RULE:^(.*)$/a\\/",
            "RULE:^.*$/$1/",
        ] {
            assert!(KafkaRules::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn case_flags_use_full_case_mapping() {
        assert_eq!(map("RULE:(.*)/$1/U", "ß").unwrap(), "SS");
    }
}
