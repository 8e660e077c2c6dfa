#!/usr/bin/env python3
"""The log lines the docs quote, and a check that the code can write each of them.

An operator greps Envoy's log for what the docs quote, so a quoted line must be one the
filter writes. The docs mark every quoted log line: a fenced code block whose info string is
`log` holds one example per line. In an example

- `...` (or `…`) stands for any text, e.g. `... outcome=auth_failed reason="..."`;
- `<name>` stands for a value that varies, e.g. `root context <n> in VM <id>`;
- a run of digits stands for any number (ports, lifetimes, correlation ids);
- everything else is literal: the identities are those of the e2e stack's certificates.

Two users:

- `make lint` runs this file: every example must be made of the format strings of the
  filter's, the identity crate's and the codec's sources (outside `#[cfg(test)]`), nested
  the way the code nests them (a log line's `{}` holds a refusal message, that message's
  `{}` holds an error's, and so on). A quote reworded, or a log line changed without the
  docs, fails here. Exit 1 with the examples that match nothing.
- `e2e/tests/test_config_changes.py` checks each example against the lines a real Envoy
  wrote (`example_regex`).

    scripts/doc_log_lines.py            check every example against the code
    scripts/doc_log_lines.py --list     print the examples (file:line: text)
"""

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/*.md")
SOURCES = ("filter/src", "identity/src", "kafka-codec/src")
WILD = "\x00"  # one `...`, `…` or `<name>` of an example, in the native check
PLACEHOLDER = re.compile(r"\.\.\.|…|<[a-z][a-z0-9_ -]*>")
# Envoy's own prefix of a Wasm log line: `wasm log <plugin> <root id> [<vm id>]: `.
ENVOY_PREFIX = re.compile(r"^wasm log [^:]*: ")


@dataclass(frozen=True)
class Example:
    path: str
    line: int
    text: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.text}"


def examples(repo=REPO):
    """Every line of every ```log block in README.md and docs/*.md."""
    found = []
    files = sorted({p for pattern in DOCS for p in repo.glob(pattern)})
    for path in files:
        in_block = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fence = line.strip()
            if not in_block and fence == "```log":
                in_block = True
            elif in_block and fence.startswith("```"):
                in_block = False
            elif in_block and fence:
                found.append(Example(str(path.relative_to(repo)), number, fence))
    return found


def example_regex(text):
    """A regex a real log line must match (re.search) for the example `text`."""
    out, at = [], 0
    for m in PLACEHOLDER.finditer(text):
        out.append(_literal(text[at:m.start()]))
        out.append(".*?" if m.group(0) in ("...", "…") else ".+?")
        at = m.end()
    out.append(_literal(text[at:]))
    return re.compile("".join(out) + "$")


def _literal(text):
    return r"-?\d+".join(re.escape(part) for part in re.split(r"\d+", text))


# ---- the native check: examples against the sources' format strings ------------------------

STRING = re.compile(r'b?r(#*)"(.*?)"\1|b?"((?:[^"\\]|\\.)*)"', re.S)
CHAR = re.compile(r"'(?:[^'\\\n]|\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.))'")
ESCAPE = re.compile(r"\\(\n\s*|u\{([0-9a-fA-F]+)\}|x([0-9a-fA-F]{2})|.)")
SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
HOLE = re.compile(r"\{\{|\}\}|\{[^{}]*\}")


def _unescape(body):
    def one(m):
        if m.group(1).startswith("\n"):
            return ""  # a line continuation
        if m.group(2):
            return chr(int(m.group(2), 16))
        if m.group(3):
            return chr(int(m.group(3), 16))
        return SIMPLE_ESCAPES.get(m.group(1), m.group(1))
    return ESCAPE.sub(one, body)


def string_literals(source):
    """The string literals of Rust source up to its first `#[cfg(test)]`, comments skipped."""
    test = re.search(r"^\s*#\[cfg\(test\)\]", source, re.M)
    if test:
        source = source[:test.start()]
    found, at = [], 0
    while at < len(source):
        c = source[at]
        if source.startswith("//", at):
            end = source.find("\n", at)
            at = len(source) if end < 0 else end
        elif source.startswith("/*", at):
            end = source.find("*/", at + 2)
            at = len(source) if end < 0 else end + 2
        elif c == "'":
            m = CHAR.match(source, at)
            at = m.end() if m else at + 1  # else a lifetime
        elif c in "br\"" and (m := STRING.match(source, at)) and (at == 0 or not source[at - 1].isalnum()):
            found.append(m.group(2) if m.group(2) is not None else _unescape(m.group(3)))
            at = m.end()
        else:
            at += 1
    return found


def format_pieces(literal):
    """A format string as a tuple of literal texts and None for each `{...}` hole."""
    pieces, text, at = [], "", 0
    for m in HOLE.finditer(literal):
        text += literal[at:m.start()]
        if m.group(0) in ("{{", "}}"):
            text += m.group(0)[0]
        else:
            pieces.append(text)
            pieces.append(None)
            text = ""
        at = m.end()
    pieces.append(literal[at:] if not text else text + literal[at:])
    return tuple(p for p in pieces if p != "")


@lru_cache(maxsize=None)
def formats(repo=REPO):
    found = set()
    for root in SOURCES:
        for path in sorted((repo / root).rglob("*.rs")):
            for literal in string_literals(path.read_text()):
                pieces = format_pieces(literal)
                if pieces:
                    found.add(pieces)
    return tuple(sorted(found, key=repr))


def _nestable(pieces):
    """A format that may fill another's hole: not one that only adds spaces around holes
    (`{} {}` would let any words through)."""
    return any(p is not None and p.strip() for p in pieces)


class _Matcher:
    """Does one example (placeholders as WILD) spell a format, holes filled by values or by
    nested formats? A value is a quoted string (Rust's `{:?}` of a string) or text without
    whitespace; a WILD fills any hole."""

    def __init__(self, doc, all_formats):
        self.doc = doc
        # Only formats whose every literal piece occurs in the example can take part.
        self.nested = [f for f in all_formats if _nestable(f)
                       and all(p is None or p in doc for p in f)]
        self.memo = {}

    def values(self, pos):
        doc, ends = self.doc, set()
        if pos < len(doc) and doc[pos] == '"':
            m = re.compile(r'"(?:[^"\\]|\\.)*"').match(doc, pos)
            if m:
                ends.add(m.end())
        end = pos
        while end < len(doc) and not doc[end].isspace():
            end += 1
            ends.add(end)
        ends.add(pos)  # an empty value
        return ends

    def hole(self, pos):
        ends = set(self.values(pos))
        for f in self.nested:
            ends |= self.seq(f, 0, pos)
        return ends

    def seq(self, pieces, i, pos):
        key = (pieces, i, pos)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = set()  # a format nested in itself at the same place matches nothing
        doc, ends = self.doc, set()
        if pos == len(doc) - 1 and doc[pos] == WILD:
            ends.add(len(doc))  # a trailing `...`: the rest of the line is left out
        if i == len(pieces):
            ends.add(pos)
        elif pieces[i] is None:
            for end in self.hole(pos):
                ends |= self.seq(pieces, i + 1, end)
        elif doc.startswith(pieces[i], pos):
            ends |= self.seq(pieces, i + 1, pos + len(pieces[i]))
        self.memo[key] = ends
        return ends

    def whole(self, pieces):
        """The example is this format; a leading WILD may leave out any start of it."""
        doc = self.doc
        if self.seq(pieces, 0, 0) & {len(doc)}:
            return True
        if not doc.startswith(WILD):
            return False
        for i, piece in enumerate(pieces):
            starts = [piece[k:] for k in range(len(piece))] if piece is not None else [None]
            for start in starts:
                rest = (start,) + pieces[i + 1:]
                if len(doc) in self.seq(rest, 0, 1):
                    return True
        return False


def explained(example, all_formats=None):
    """True when the code's format strings can write the example."""
    all_formats = formats() if all_formats is None else all_formats
    doc = ENVOY_PREFIX.sub("", example.text if isinstance(example, Example) else example)
    doc = PLACEHOLDER.sub(WILD, doc)
    matcher = _Matcher(doc, all_formats)
    tops = [f for f in all_formats if f[0] is not None and f[0].startswith("kafka-identity: ")]
    return any(matcher.whole(f) for f in tops)


def main(argv):
    found = examples()
    if argv[1:] == ["--list"]:
        for e in found:
            print(e)
        return 0
    if argv[1:]:
        print(__doc__.split("\n\n")[-1].rstrip(), file=sys.stderr)
        return 2
    if not found:
        print("doc_log_lines: no ```log block found in the docs", file=sys.stderr)
        return 1
    bad = [e for e in found if not explained(e)]
    for e in bad:
        print(f"doc_log_lines: no format string of {', '.join(SOURCES)} writes this quoted line:\n  {e}",
              file=sys.stderr)
    if bad:
        return 1
    print(f"doc_log_lines: {len(found)} quoted log lines, each one the code writes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
