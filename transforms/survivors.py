"""Which record of a group of duplicates survives: `--keep` rules as sortable byte keys, in numpy.

pipeline.run keeps one record of every exact-duplicate group (equal cleaned texts) and of
every near-duplicate cluster. The rule (`--keep`, docs/run.md and docs/near-dedup.md):

- `smallest-id` (default): the smallest id. Ids are strings and compare as strings (by
  code point, which is UTF-8 byte order), also when they look numeric: "10" < "9".
- `longest`: the longest cleaned text (in characters).
- `first-by:FIELD` / `last-by:FIELD`: the smallest / largest value of FIELD, one of
  --keep-fields, compared as its type (str by code point, int and float as numbers); a
  record without a value (null, or NaN) comes after every record with one.

Ties go to the smallest id, so the survivor never depends on arrival order, partitioning
or the number of workers. `survivor_keys` turns a rule into one byte string per record such
that sorting by (key, id) ascending puts the survivor first: the same keys decide exact
dedup inside a partition (transforms.corpus_stages.dedup_partition) and near-duplicate
clusters across partitions (transforms.components.near_duplicate_components), which only
compare keys. A key is a flag byte (1: has a value, 2: no value) and then the value:
integers and floats as 8 big-endian bytes whose unsigned order is the numeric order
(sign bit flipped; negative floats complemented), strings as their UTF-8 bytes; for the
descending rules (`longest`, `last-by`) the value bytes are complemented, and a string
also gets a 0xFF terminator so that a longer string with the same beginning comes first.
numpy compares byte strings of different widths as if padded with NUL bytes, which is the
order these keys need. (A string value with a NUL byte in it may tie with its prefix.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SMALLEST_ID = "smallest-id"
LONGEST = "longest"
FIRST_BY = "first-by"
LAST_BY = "last-by"
RULES = (SMALLEST_ID, LONGEST, f"{FIRST_BY}:FIELD", f"{LAST_BY}:FIELD")
_HAS_VALUE, _NO_VALUE = 1, 2
_SIGN = np.uint64(1 << 63)


@dataclass(frozen=True)
class KeepRule:
    """A parsed --keep rule: kind (smallest-id, longest, first-by, last-by), and the field and its type for *-by."""

    kind: str = SMALLEST_ID
    field: str | None = None
    field_type: str | None = None  # "str", "int" or "float", as --keep-fields declares it

    @staticmethod
    def parse(spec: str, keep_fields: tuple[tuple[str, str], ...] = ()) -> "KeepRule":
        """`smallest-id`, `longest`, `first-by:FIELD` or `last-by:FIELD` (FIELD one of --keep-fields); ValueError if not."""
        kind, colon, field = spec.strip().partition(":")
        if kind in (SMALLEST_ID, LONGEST) and not colon:
            return KeepRule(kind)
        if kind not in (FIRST_BY, LAST_BY):
            raise ValueError(f"--keep must be one of {', '.join(RULES)}; got {spec!r}")
        types = dict(keep_fields)
        if field not in types:
            listed = ", ".join(types) or "none"
            raise ValueError(f"--keep {spec}: {field or 'FIELD'!r} must be one of --keep-fields ({listed})")
        return KeepRule(kind, field, types[field])

    @property
    def by_id(self) -> bool:
        """The default rule: the smallest id, with no key of its own."""
        return self.kind == SMALLEST_ID

    def __str__(self) -> str:
        return self.kind if self.field is None else f"{self.kind}:{self.field}"


def survivor_keys(table: pa.Table, rule: KeepRule) -> np.ndarray | None:
    """One byte string per row: sorting rows by (key, id) ascending puts each group's survivor first.

    None for `smallest-id` (the id alone decides). `table` needs the `text` column for
    `longest` and the rule's field for `first-by` / `last-by`.
    """
    if rule.by_id:
        return None
    if rule.kind == LONGEST:
        lengths = pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False).astype(np.uint64)
        return _numeric_keys(lengths, np.ones(len(lengths), bool), descending=True)
    column = table.column(rule.field)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    descending = rule.kind == LAST_BY
    if rule.field_type == "str":
        return _string_keys(pc.fill_null(column, "").cast(pa.large_string()), valid, descending)
    if rule.field_type == "int":
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        return _numeric_keys(values.view(np.uint64) ^ _SIGN, valid, descending)
    values = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(np.float64) + 0.0  # -0.0 -> 0.0
    valid &= ~np.isnan(values)
    bits = values.view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return _numeric_keys(np.where(negative, ~bits, bits | _SIGN), valid, descending)


def _numeric_keys(ordered: np.ndarray, valid: np.ndarray, descending: bool) -> np.ndarray:
    """Flag byte + 8 big-endian bytes of uint64 values whose unsigned order is the wanted order."""
    values = ~ordered if descending else ordered
    matrix = np.zeros((len(values), 9), np.uint8)
    matrix[:, 0] = np.where(valid, _HAS_VALUE, _NO_VALUE)
    matrix[:, 1:] = values.astype(">u8").view(np.uint8).reshape(-1, 8) * valid[:, None]
    return matrix.view("S9").ravel()


def _string_keys(strings: pa.LargeStringArray, valid: np.ndarray, descending: bool) -> np.ndarray:
    """Flag byte + UTF-8 bytes (complemented and 0xFF-terminated when descending)."""
    from transforms.hashing import utf8_buffers

    offsets, data = utf8_buffers(strings)
    lengths = np.diff(offsets) * valid
    width = 1 + int(lengths.max(initial=0)) + descending
    matrix = np.zeros((len(lengths), width), np.uint8)
    matrix[:, 0] = np.where(valid, _HAS_VALUE, _NO_VALUE)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(offsets[:-1], lengths)
    positions = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values = data[starts + positions]
    matrix[rows, 1 + positions] = ~values if descending else values
    if descending:
        matrix[np.flatnonzero(valid), 1 + lengths[valid]] = 0xFF
    return matrix.view(f"S{width}").ravel()
