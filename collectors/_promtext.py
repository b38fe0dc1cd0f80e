"""A parser for the Prometheus text exposition format 0.0.4 (pure: text in, families out).

It follows the rules of Prometheus' own ``expfmt.TextParser`` (the parser
node_exporter's textfile collector and ``promtool check metrics`` use), so a file
that promtool rejects is rejected here too, with the line number and a reason in
the same words where they exist:

* ``# HELP name text`` and ``# TYPE name counter|gauge|histogram|summary|untyped``;
  other comments are ignored. A second HELP or TYPE for one name, or a TYPE after
  the family's samples, is an error.
* ``name{label="value",...} value [timestamp]``; label values escape ``\\\\``,
  ``\\"`` and ``\\n``; a label name may not repeat or be ``__name__``; values are
  floats (``NaN``, ``+Inf``, ``-Inf``; no ``_`` and no hex), timestamps integers
  (milliseconds); ``le`` and ``quantile`` values must be floats.
* ``NAME_bucket`` (with ``le``), ``NAME_sum`` and ``NAME_count`` belong to a
  histogram ``NAME``; ``NAME`` (with ``quantile``), ``NAME_sum`` and
  ``NAME_count`` to a summary ``NAME``, when ``NAME`` was typed so before.

Beyond what the text parser checks (``promtool check metrics`` accepts these),
:func:`parse` also refuses a series given twice in one text, because the
exposition it feeds must not carry duplicates.
"""

from __future__ import annotations

import dataclasses
import math
import re

TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_BLANK = " \t"
_INT = re.compile(r"[+-]?[0-9]+")
_FIELDS = re.compile(r"[ \t]+")
_KEYWORD = re.compile(r"[ \t]*(HELP|TYPE)(?:[ \t]+|$)")


class ParseError(ValueError):
    """A text that is not valid exposition format; ``line`` is 1-based (0: the text as a whole)."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


@dataclasses.dataclass
class Series:
    name: str  # the sample's name (NAME_bucket for a histogram bucket)
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None
    line: int


@dataclasses.dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    series: list[Series] = dataclasses.field(default_factory=list)
    typed: bool = False

    def sample_names(self) -> tuple[str, ...]:
        """The sample names this family's series may carry."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.type == "summary":
            return (self.name, f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _float(text: str) -> float:
    t = text.lower()
    if "_" in t or not t or t.strip() != t:  # Python's float() would take "1_0" and "1\r"; Go's ParseFloat does not
        raise ValueError(text)
    if t in ("nan", "+nan", "-nan"):
        return math.nan
    if t in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if t in ("-inf", "-infinity"):
        return -math.inf
    return float(t)


def _unescape_help(s: str, lineno: int) -> str:
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "\\":
                out.append("\\")
            elif n == "n":
                out.append("\n")
            else:
                out.append("\\" + n)  # expfmt keeps other escapes in HELP as they are
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _labels(line: str, pos: int, lineno: int, name: str) -> tuple[dict[str, str], int]:
    """Parse ``{...}`` starting after ``{`` at ``pos``; returns the labels and the position after ``}``."""
    labels: dict[str, str] = {}
    n = len(line)
    while True:
        while pos < n and line[pos] in _BLANK:
            pos += 1
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        m = _LABEL.match(line, pos)
        if not m:
            raise ParseError(lineno, f"invalid label name for metric {name!r}")
        lname = m.group(0)
        pos = m.end()
        if lname == "__name__":
            raise ParseError(lineno, f"label name {lname!r} is reserved")
        if lname in labels:
            raise ParseError(lineno, f"duplicate label names for metric {name!r}")
        while pos < n and line[pos] in _BLANK:
            pos += 1
        if pos >= n or line[pos] != "=":
            raise ParseError(lineno, f"expected '=' after label name, found {line[pos:pos + 1]!r}")
        pos += 1
        while pos < n and line[pos] in _BLANK:
            pos += 1
        if pos >= n or line[pos] != '"':
            raise ParseError(lineno, f"expected '\"' at start of label value, found {line[pos:pos + 1]!r}")
        pos += 1
        buf: list[str] = []
        while True:
            if pos >= n:
                raise ParseError(lineno, "label value not terminated")
            c = line[pos]
            if c == '"':
                pos += 1
                break
            if c == "\\":
                e = line[pos + 1 : pos + 2]
                if e == "\\":
                    buf.append("\\")
                elif e == '"':
                    buf.append('"')
                elif e == "n":
                    buf.append("\n")
                else:
                    raise ParseError(lineno, f"invalid escape sequence '\\{e}'")
                pos += 2
                continue
            buf.append(c)
            pos += 1
        labels[lname] = "".join(buf)
        while pos < n and line[pos] in _BLANK:
            pos += 1
        if pos < n and line[pos] == ",":
            pos += 1
            continue
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        raise ParseError(lineno, f"unexpected end of label value {labels[lname]!r}")


def parse(text: str) -> dict[str, Family]:
    """Families by name, in the order first seen. Raises ParseError."""
    fams: dict[str, Family] = {}
    by_sample: dict[str, Family] = {}  # NAME_bucket -> histogram NAME, ...
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def family_for(sample: str) -> Family:
        f = by_sample.get(sample)
        if f is not None:
            return f
        f = fams.get(sample)
        if f is None:
            f = Family(sample)
            fams[sample] = f
        return f

    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.lstrip(_BLANK)
        if not line:
            continue
        if line[0] == "#":
            km = _KEYWORD.match(line, 1)
            if km is None:
                continue  # any other comment
            kw = km.group(1)
            rest = line[km.end() :]
            m = _NAME.match(rest)
            if not m or (m.end() < len(rest) and rest[m.end()] not in _BLANK):
                raise ParseError(lineno, "invalid metric name in comment")
            name = m.group(0)
            after = rest[m.end() :].lstrip(_BLANK)
            f = fams.get(name)
            if kw == "HELP":
                if f is None:
                    f = fams[name] = Family(name)
                if f.help is not None:
                    raise ParseError(lineno, f"second HELP line for metric name {name!r}")
                f.help = _unescape_help(after, lineno)
            else:
                typ = after.strip(_BLANK).lower()
                if typ not in TYPES:
                    raise ParseError(lineno, f"unknown metric type {after.strip()!r}")
                if f is None:
                    f = fams[name] = Family(name)
                if f.typed or f.series:
                    raise ParseError(lineno, f"second TYPE line for metric name {name!r}, or TYPE reported after samples")
                f.type, f.typed = typ, True
                for sn in f.sample_names():
                    if sn != name:
                        by_sample[sn] = f
            continue
        m = _NAME.match(line)
        if not m:
            raise ParseError(lineno, f"invalid metric name {line.split()[0][:64]!r}")
        name = m.group(0)
        pos = m.end()
        labels: dict[str, str] = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _labels(line, pos + 1, lineno, name)
        fields = [f for f in _FIELDS.split(line[pos:]) if f]  # only blanks and tabs separate ("1\r" is no float)
        if not fields:
            raise ParseError(lineno, f"expected float as value for metric {name!r}")
        if len(fields) > 2:
            raise ParseError(lineno, f"spurious string after timestamp: {fields[2][:32]!r}")
        try:
            value = _float(fields[0])
        except ValueError:
            raise ParseError(lineno, f"expected float as value, got {fields[0][:32]!r}") from None
        ts: int | None = None
        if len(fields) == 2:
            try:
                if not _INT.fullmatch(fields[1]):
                    raise ValueError(fields[1])
                ts = int(fields[1])
            except ValueError:
                raise ParseError(lineno, f"expected integer as timestamp, got {fields[1][:32]!r}") from None
        fam = family_for(name)
        if fam.type == "histogram" and name == f"{fam.name}_bucket" and "le" in labels:
            try:
                _float(labels["le"])
            except ValueError:
                raise ParseError(lineno, f"expected float as le value, got {labels['le'][:32]!r}") from None
        if fam.type == "summary" and "quantile" in labels and name == fam.name:
            try:
                _float(labels["quantile"])
            except ValueError:
                raise ParseError(lineno, f"expected float as quantile value, got {labels['quantile'][:32]!r}") from None
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ParseError(lineno, f"duplicate series {name}{{{', '.join(f'{k}={v!r}' for k, v in key[1])}}}")
        seen.add(key)
        fam.series.append(Series(name, labels, value, ts, lineno))
    for f in list(fams.values()):
        if not f.series and not f.typed and f.help is None:
            del fams[f.name]
    return fams
