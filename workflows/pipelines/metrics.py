"""The named parsers a spec's `metrics:` declares: which output file feeds which recorded figure.

A step's metrics are read once, when the step has completed, and recorded with the request; a `when:` and the
analysis's summary read the record, never the file again. Each parser reads one file (not a per-mate one):

- ``tsv_row``: a tab-separated table of one header line and one row; ``fields`` maps a metric to a column.
- ``json``: a JSON document; ``fields`` maps a metric to a dotted path (``summary.after_filtering.total_reads``).
- ``fasta_count``: the number of records of a FASTA file, as ``field``.
- ``fastq_count``: the number of records of a FASTQ file (four lines each), as ``field``.
- ``table_count_by``: rows of a whitespace-separated table (lines starting with ``#`` skipped), as ``field``,
  and the rows by the value of ``column`` (1-based) as ``<field>_by``; with ``pattern``, a regular expression
  whose first group is taken from that column as the value (a GFF attribute, say).
- ``line_count``: the lines of a file that are neither empty nor comments, as ``field``.

No Django and no Prefect here.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

MetricValue = int | float | dict[str, int]


class MetricsError(ValueError):
    """An output file that does not hold what its parser reads; the message names the file."""


@dataclass(frozen=True)
class MetricsSpec:
    parser: str
    file: str  # a file name of the spec's `files`
    fields: Mapping[str, str]  # metric -> column or path (tsv_row, json)
    field: str | None  # the metric (fasta_count, table_count_by, line_count)
    column: int | None
    pattern: str | None

    @property
    def names(self) -> tuple[str, ...]:
        """The numeric metrics it records (what a `when:` may name)."""
        return tuple(self.fields) if self.fields else (self.field,) if self.field else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in {
                "parser": self.parser,
                "file": self.file,
                "fields": dict(self.fields),
                "field": self.field,
                "column": self.column,
                "pattern": self.pattern,
            }.items()
            if value not in (None, {})
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> MetricsSpec:
        return cls(
            parser=value["parser"],
            file=value["file"],
            fields=MappingProxyType(dict(value.get("fields", {}))),
            field=value.get("field"),
            column=value.get("column"),
            pattern=value.get("pattern"),
        )


def read_metrics(spec: MetricsSpec, path: Path) -> dict[str, MetricValue]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MetricsError(f"{path}: cannot be read for its metrics: {exc.strerror or exc}") from None
    try:
        return PARSERS[spec.parser](spec, text)
    except MetricsError as exc:
        raise MetricsError(f"{path}: {exc}") from None


def _tsv_row(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) != 1:
        raise MetricsError(f"expected one row under the header, got {len(rows)}")
    return {metric: _number(rows[0].get(column), column) for metric, column in spec.fields.items()}


def _json(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricsError(f"not JSON: {exc}") from None
    values: dict[str, MetricValue] = {}
    for metric, path in spec.fields.items():
        node: Any = document
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise MetricsError(f"has no {path!r}")
            node = node[part]
        values[metric] = _number(node, path)
    return values


def _fasta_count(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    assert spec.field
    return {spec.field: sum(1 for line in text.splitlines() if line.startswith(">"))}


def _fastq_count(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    assert spec.field
    lines = sum(1 for line in text.splitlines() if line)
    if lines % 4:
        raise MetricsError(f"{lines} lines: not a FASTQ file of four lines a record")
    return {spec.field: lines // 4}


def _table_count_by(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    assert spec.field and spec.column
    pattern = re.compile(spec.pattern) if spec.pattern else None
    by: Counter[str] = Counter()
    rows = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if len(columns) < spec.column:
            raise MetricsError(f"line {number} has {len(columns)} column(s), not {spec.column}")
        value = columns[spec.column - 1]
        if pattern:
            match = pattern.search(value)
            if match is None:
                raise MetricsError(f"line {number}: {value!r} does not match {spec.pattern!r}")
            value = match.group(1)
        by[value] += 1
        rows += 1
    return {spec.field: rows, f"{spec.field}_by": dict(sorted(by.items()))}


def _line_count(spec: MetricsSpec, text: str) -> dict[str, MetricValue]:
    assert spec.field
    return {spec.field: sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))}


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool):
        raise MetricsError(f"{where}: not a number: {value!r}")
    if isinstance(value, int | float):
        return value
    try:
        return int(str(value))
    except ValueError:
        pass
    try:
        return float(str(value))
    except ValueError:
        raise MetricsError(f"{where}: not a number: {value!r}") from None


PARSERS: Mapping[str, Callable[[MetricsSpec, str], dict[str, MetricValue]]] = MappingProxyType(
    {
        "tsv_row": _tsv_row,
        "json": _json,
        "fasta_count": _fasta_count,
        "fastq_count": _fastq_count,
        "table_count_by": _table_count_by,
        "line_count": _line_count,
    }
)
# Which parsers take a mapping of `fields`, and which one `field`.
PARSERS_WITH_FIELDS = frozenset({"tsv_row", "json"})
