//! The regular expressions of Kafka's mapping rules, run by `regex-automata`'s PikeVM.
//!
//! The `regex` crate's `Regex` is a front for `regex-automata`'s meta engine, which picks
//! among several engines and literal optimisations per pattern. Without the `regex` crate's
//! `perf-*` features that choice ends at the PikeVM anyway (or the bounded backtracker,
//! which finds the same leftmost-first match), but its code still weighed ~50 KB of the
//! filter's .wasm (docs/design.md, "The .wasm and its size"). Here the same parser
//! (`regex-syntax`, configured as `regex::Regex::new` configures it), the same Thompson NFA
//! (the meta engine's settings) and the same PikeVM are used directly, so matches, capture
//! groups and error messages are the `regex` crate's; `tests` checks that against it.
//! Rules are matched once per certificate (the filter caches identifications), so the
//! PikeVM's speed is not on any per-request path.

use regex_automata::nfa::thompson::{self, pikevm::PikeVM, WhichCaptures};
use regex_automata::util::captures::Captures;
use regex_automata::{Input, PatternID};

/// `regex::RegexBuilder`'s default size limit for the compiled program.
pub const DEFAULT_SIZE_LIMIT: usize = 10 * (1 << 20);

/// A compiled pattern (one per rule, plus Kafka's two rule-grammar patterns).
#[derive(Debug, Clone)]
pub struct Matcher {
    vm: PikeVM,
}

/// Capture groups of one match, by index (0 is the whole match), as text of the haystack.
pub struct Groups<'h> {
    captures: Captures,
    haystack: &'h str,
}

impl<'h> Groups<'h> {
    /// The text of group `index`, or `None` when it did not take part in the match.
    pub fn get(&self, index: usize) -> Option<&'h str> {
        self.range(index)
            .and_then(|(start, end)| self.haystack.get(start..end))
    }

    /// The byte offsets of group `index` in the haystack.
    pub fn range(&self, index: usize) -> Option<(usize, usize)> {
        self.captures
            .get_group(index)
            .map(|span| (span.start, span.end))
    }
}

impl Matcher {
    /// Compiles `pattern` as `regex::RegexBuilder::new(pattern).size_limit(size_limit)`
    /// would; the error is the text of that builder's error.
    pub fn new(pattern: &str, size_limit: usize) -> Result<Matcher, String> {
        // `regex-syntax`'s default configuration is `regex::Regex`'s (Unicode, UTF-8 only,
        // nest limit 250, no flags).
        let hir = regex_automata::util::syntax::parse(pattern).map_err(|e| e.to_string())?;
        let config = thompson::Config::new()
            .utf8(true)
            .nfa_size_limit(Some(size_limit))
            .shrink(false)
            .which_captures(WhichCaptures::All);
        let nfa = thompson::Compiler::new()
            .configure(config)
            .build_from_hir(&hir)
            .map_err(|e| match e.size_limit() {
                Some(limit) => format!("Compiled regex exceeds size limit of {limit} bytes."),
                // The `regex` crate words every other build failure so.
                None => "error building NFA".to_owned(),
            })?;
        let vm = PikeVM::new_from_nfa(nfa).map_err(|_| "error building NFA".to_owned())?;
        Ok(Matcher { vm })
    }

    pub fn is_match(&self, haystack: &str) -> bool {
        let mut cache = self.vm.create_cache();
        self.vm.is_match(&mut cache, haystack)
    }

    /// The leftmost-first match starting at or after byte `start`, with `haystack[..start]`
    /// still seen by look-around such as `\A` (`regex::Regex::captures_at`).
    pub fn captures_at<'h>(&self, haystack: &'h str, start: usize) -> Option<Groups<'h>> {
        if start > haystack.len() {
            return None;
        }
        let mut cache = self.vm.create_cache();
        let mut captures = self.vm.create_captures();
        self.vm.captures(
            &mut cache,
            Input::new(haystack).range(start..),
            &mut captures,
        );
        captures.is_match().then_some(Groups { captures, haystack })
    }

    /// Every successive non-overlapping match (`regex::Regex::captures_iter`).
    pub fn captures_all<'h>(&self, haystack: &'h str) -> Vec<Groups<'h>> {
        let mut cache = self.vm.create_cache();
        self.vm
            .captures_iter(&mut cache, haystack)
            .map(|captures| Groups { captures, haystack })
            .collect()
    }

    /// The number of capture groups, the whole match included
    /// (`regex::Regex::captures_len`).
    pub fn captures_len(&self) -> usize {
        self.vm.get_nfa().group_info().group_len(PatternID::ZERO)
    }

    /// Group names by index, `None` for unnamed ones (`regex::Regex::capture_names`).
    pub fn capture_names(&self) -> Vec<Option<&str>> {
        self.vm
            .get_nfa()
            .group_info()
            .pattern_names(PatternID::ZERO)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATTERNS: &[&str] = &[
        r"^CN=(.*?),OU=(.*?),O=(.*?)$",
        r"(?P<name>[a-z]+)=(?P<value>[^,]*)",
        r"\A(?:[^\n\r\x{85}\x{2028}\x{2029}]*?)\z",
        r"(.*)",
        r"x*",
        r"",
        r"(a)|(b)|(c)?",
        r"\p{L}+|\p{Greek}|\p{sc=Latin}\p{Alphabetic}",
        r"[^a-zA-Z0-9_]+",
        r"(?s:.)$",
        r"(?m)^[a-z]$",
    ];

    const HAYSTACKS: &[&str] = &[
        "",
        "CN=Duke,OU=JavaSoft,O=Sun",
        "cn=duke,ou=x",
        "ß\u{2028}ä🎉Ωx",
        "aaa bbb",
        "STRASSE straße",
        "a\nb\r\nc",
    ];

    fn groups(m: &Groups<'_>, len: usize) -> Vec<Option<(usize, usize)>> {
        (0..len).map(|i| m.range(i)).collect()
    }

    fn regex_groups(c: &regex::Captures<'_>) -> Vec<Option<(usize, usize)>> {
        c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect()
    }

    /// Everything the mapping rules use, against the `regex` crate itself.
    #[test]
    fn same_answers_as_the_regex_crate() {
        for pattern in PATTERNS {
            let ours = Matcher::new(pattern, DEFAULT_SIZE_LIMIT).unwrap();
            let theirs = regex::Regex::new(pattern).unwrap();
            assert_eq!(ours.captures_len(), theirs.captures_len(), "{pattern}");
            assert_eq!(
                ours.capture_names(),
                theirs.capture_names().collect::<Vec<_>>(),
                "{pattern}"
            );
            let len = theirs.captures_len();
            for haystack in HAYSTACKS {
                assert_eq!(
                    ours.is_match(haystack),
                    theirs.is_match(haystack),
                    "{pattern} on {haystack:?}"
                );
                let all: Vec<_> = ours
                    .captures_all(haystack)
                    .iter()
                    .map(|m| groups(m, len))
                    .collect();
                let expected: Vec<_> = theirs
                    .captures_iter(haystack)
                    .map(|c| regex_groups(&c))
                    .collect();
                assert_eq!(all, expected, "{pattern} on {haystack:?}");
                for start in 0..=haystack.len() + 1 {
                    if !haystack.is_char_boundary(start.min(haystack.len())) {
                        continue;
                    }
                    let ours = ours.captures_at(haystack, start).map(|m| groups(&m, len));
                    let theirs = if start <= haystack.len() {
                        theirs
                            .captures_at(haystack, start)
                            .map(|c| regex_groups(&c))
                    } else {
                        None
                    };
                    assert_eq!(ours, theirs, "{pattern} on {haystack:?} from {start}");
                }
            }
        }
    }

    #[test]
    fn same_errors_as_the_regex_crate() {
        for (pattern, limit) in [
            ("(", DEFAULT_SIZE_LIMIT),
            (r"\p{Nope}", DEFAULT_SIZE_LIMIT),
            ("a{5000000}", DEFAULT_SIZE_LIMIT),
            (r"\p{L}{100}", 1 << 20),
            ("x{2}{3}{4}", 100),
        ] {
            let ours = Matcher::new(pattern, limit).unwrap_err();
            let theirs = regex::RegexBuilder::new(pattern)
                .size_limit(limit)
                .dfa_size_limit(limit)
                .build()
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs, "{pattern}");
        }
    }

    #[test]
    fn groups_are_text_of_the_haystack() {
        let m = Matcher::new("^CN=(.*?),O=(x)?", DEFAULT_SIZE_LIMIT).unwrap();
        let groups = m.captures_at("CN=a,O=b", 0).unwrap();
        assert_eq!(groups.get(0), Some("CN=a,O="));
        assert_eq!(groups.get(1), Some("a"));
        assert_eq!(groups.get(2), None);
        assert_eq!(groups.get(3), None);
        assert!(m.captures_at("CN=a,O=b", 1).is_none());
        assert!(m.captures_at("CN=a,O=b", 99).is_none());
    }
}
