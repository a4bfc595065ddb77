"""The series selectors of a PromQL expression: metric names and the label names it reads.

Enough of PromQL for rule and dashboard expressions: selectors with `{...}` matchers, range
and offset modifiers, function calls, aggregations with by/without, and binary operators
with on/ignoring/group_left/group_right. It is checked against the real Prometheus by
tests/prometheus/test_prometheus.py, which asks Prometheus for every name found here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", re.IGNORECASE
)
_RANGE_OR_OFFSET = re.compile(r"\[[^\]]*\]|\boffset\s+-?\w+|@\s*\S+")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "inf", "nan"})


@dataclass
class Selectors:
    metrics: dict[str, set[str]] = field(default_factory=dict)  # name → matcher labels
    grouping: set[str] = field(default_factory=set)  # labels of by/without/on/...


def selectors(expr: str) -> Selectors:
    found = Selectors()
    text = _STRING.sub('""', expr)
    for match in _LABEL_LIST.finditer(text):
        found.grouping |= {x.strip() for x in match.group(2).split(",") if x.strip()}
    text = _LABEL_LIST.sub(" ", text)

    def selector(match: re.Match[str]) -> str:
        labels = set(_MATCHER.findall(match.group(2)))
        name = match.group(1)
        if not name:
            raise ValueError(f"a selector without a metric name: {match.group(0)}")
        found.metrics.setdefault(name, set()).update(labels - {"__name__"})
        return " "

    text = _SELECTOR.sub(selector, text)
    text = _RANGE_OR_OFFSET.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            found.metrics.setdefault(name, set())
    return found
