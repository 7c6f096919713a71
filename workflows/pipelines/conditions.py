"""The `when:` of a spec: a condition on the metrics earlier steps recorded, in a grammar small enough to read.

    condition   := disjunction
    disjunction := conjunction ("or" conjunction)*
    conjunction := negation ("and" negation)*
    negation    := "not" negation | "(" condition ")" | comparison
    comparison  := operand ("<" | "<=" | ">" | ">=" | "==" | "!=") operand
    operand     := number | metric            (metric: <step>.<name>, e.g. assembly_stats.total_length)

It is parsed once, when the spec is loaded (a mistake names the spec, the step and the position), and evaluated
on recorded metrics only, so that a rerun decides as the first pass did. Nothing here calls `eval`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<metric>[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)"
    r"|(?P<word>and|or|not)\b|(?P<op><=|>=|==|!=|<|>)|(?P<paren>[()]))"
)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says where."""


class MissingMetric(LookupError):
    """The condition names a metric that was not recorded."""


Metrics = Mapping[str, float]


@dataclass(frozen=True)
class _Comparison:
    left: str | float
    op: str
    right: str | float

    def value(self, metrics: Metrics) -> bool:
        return _COMPARE[self.op](_operand(self.left, metrics), _operand(self.right, metrics))

    def why(self, metrics: Metrics, holds: bool) -> list[str]:
        """The comparison as it came out, with the recorded values: `total_length 12,345 < 20,000`."""
        left, right = _operand(self.left, metrics), _operand(self.right, metrics)
        op = self.op if holds else _NEGATED[self.op]
        return [f"{_show(self.left, left)} {op} {_show(self.right, right)}"]


@dataclass(frozen=True)
class _Not:
    inner: _Node

    def value(self, metrics: Metrics) -> bool:
        return not self.inner.value(metrics)

    def why(self, metrics: Metrics, holds: bool) -> list[str]:
        return self.inner.why(metrics, not holds)


@dataclass(frozen=True)
class _Junction:
    """`and` (every part) or `or` (any part)."""

    every: bool
    parts: tuple[_Node, ...]

    def value(self, metrics: Metrics) -> bool:
        values = (part.value(metrics) for part in self.parts)
        return all(values) if self.every else any(values)

    def why(self, metrics: Metrics, holds: bool) -> list[str]:
        # The parts that decided: those with the junction's own outcome (for a false `or`, all of them).
        return [
            reason
            for part in self.parts
            if part.value(metrics) == holds
            for reason in part.why(metrics, holds)
        ]


_Node = _Comparison | _Not | _Junction


@dataclass(frozen=True)
class Condition:
    text: str
    root: _Node

    @property
    def metrics(self) -> frozenset[str]:
        """The metric names it reads, `<step>.<name>`."""
        names: set[str] = set()
        stack: list[_Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Comparison):
                names.update(side for side in (node.left, node.right) if isinstance(side, str))
            elif isinstance(node, _Not):
                stack.append(node.inner)
            else:
                stack.extend(node.parts)
        return frozenset(names)

    def holds(self, metrics: Metrics) -> bool:
        """Raises MissingMetric if a metric it reads was not recorded."""
        return self.root.value(metrics)

    def why_false(self, metrics: Metrics) -> str:
        """What made it false, with the recorded values: `assembly_stats.total_length 12,345 < 20,000`."""
        return "; ".join(self.root.why(metrics, False))


def parse_condition(text: str) -> Condition:
    tokens = _tokenize(text)
    parser = _Parser(text, tokens)
    root = parser.disjunction()
    if parser.position < len(tokens):
        raise ConditionError(
            f"{text!r}: unexpected {tokens[parser.position][1]!r} at token {parser.position + 1}"
        )
    return Condition(text, root)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ConditionError(
                f"{text!r}: cannot read {text[position:].strip()!r} (at character {position + 1})"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    if not tokens:
        raise ConditionError("an empty condition")
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str]]) -> None:
        self.text, self.tokens, self.position = text, tokens, 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ConditionError(f"{self.text!r}: ends too early")
        self.position += 1
        return token

    def disjunction(self) -> _Node:
        parts = [self.conjunction()]
        while self._peek() == ("word", "or"):
            self._take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _Junction(False, tuple(parts))

    def conjunction(self) -> _Node:
        parts = [self.negation()]
        while self._peek() == ("word", "and"):
            self._take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _Junction(True, tuple(parts))

    def negation(self) -> _Node:
        token = self._peek()
        if token == ("word", "not"):
            self._take()
            return _Not(self.negation())
        if token == ("paren", "("):
            self._take()
            inner = self.disjunction()
            if self._take() != ("paren", ")"):
                raise ConditionError(f"{self.text!r}: a '(' without its ')'")
            return inner
        left = self._operand()
        kind, op = self._take()
        if kind != "op":
            raise ConditionError(f"{self.text!r}: expected a comparison after {left!r}, got {op!r}")
        return _Comparison(left, op, self._operand())

    def _operand(self) -> str | float:
        kind, value = self._take()
        if kind == "number":
            return float(value)
        if kind == "metric":
            return value
        raise ConditionError(f"{self.text!r}: expected a number or a <step>.<metric>, got {value!r}")


def _operand(side: str | float, metrics: Metrics) -> float:
    if isinstance(side, float):
        return side
    if side not in metrics:
        raise MissingMetric(side)
    value = metrics[side]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MissingMetric(f"{side} is not a number ({value!r})")
    return float(value)


def _show(side: str | float, value: float) -> str:
    figure = f"{value:,.0f}" if value == int(value) else f"{value:,}"
    return f"{side} {figure}" if isinstance(side, str) else figure
