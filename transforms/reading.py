"""Reading raw corpus files into records, without Beam.

A file is read as bytes in fixed-size chunks and split on b"\\n", so a single line of
many megabytes never needs more than `max_line_bytes` of memory: a longer line is skipped
to its end and reported. Each line is then parsed by format into a record (id, text,
kept fields) or a reject with a reason (transforms.drop_reasons). Every line read becomes
exactly one of the two. docs/run.md describes the formats and the ids.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from transforms.drop_reasons import (BAD_FIELD, BAD_ID, BLANK_LINE, INVALID_UTF8, MALFORMED_JSON, MALFORMED_ROW,
                                    MISSING_TEXT, NOT_AN_OBJECT, TEXT_NOT_STRING)
from transforms.storage import READ_CHUNK_BYTES, strip_compression_suffix

FORMATS = ("text", "jsonl", "tsv", "csv")
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv",
                    ".txt": "text", ".text": "text"}
REJECTED_RAW_CHARS = 1000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class InputFormatError(ValueError):
    """The options cannot read the input (raised before any work starts)."""


def detect_format(path: str) -> str:
    """The format a file name implies: its suffix, after removing a compression suffix."""
    name = strip_compression_suffix(path.lower())
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    return "text"


@dataclass(frozen=True)
class FieldSpec:
    """Which fields of a JSON object or table row become the record, and their types."""

    text_field: str = "text"
    id_field: str | None = "id"
    keep_fields: tuple[tuple[str, str], ...] = ()  # (name, "str" | "int" | "float")

    @staticmethod
    def parse_keep_fields(spec: str) -> tuple[tuple[str, str], ...]:
        """`date,rating:int` -> (("date", "str"), ("rating", "int"))."""
        fields = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, kind = item.partition(":")
            kind = kind or "str"
            if kind not in ("str", "int", "float"):
                raise InputFormatError(f"--keep-fields: type of {name!r} must be str, int or float, not {kind!r}")
            fields.append((name, kind))
        return tuple(fields)


@dataclass
class Reject:
    source: str
    line: int
    reason: str
    raw: str

    def to_json(self) -> dict:
        return {"source": self.source, "line": self.line, "reason": self.reason, "raw": self.raw}


def raw_excerpt(raw: bytes) -> str:
    """A printable, bounded excerpt of a rejected line (invalid bytes shown as escapes)."""
    return raw[: REJECTED_RAW_CHARS * 4].decode("utf-8", errors="backslashreplace")[:REJECTED_RAW_CHARS]


def iter_lines(stream: BinaryIO, max_line_bytes: int, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes | None]:
    """Lines of a binary stream without their line ending (\\n or \\r\\n).

    A line longer than `max_line_bytes` is yielded as None after skipping to its end,
    so memory stays bounded by about chunk_bytes + max_line_bytes. A final line without
    a newline counts; an empty file yields nothing.
    """
    pending = b""  # the unfinished last line of the chunks so far
    skipping = False  # inside a line already known to be too long
    read = getattr(stream, "read1", stream.read)  # read1: what was decoded before a corrupt tail is not lost
    while chunk := read(chunk_bytes):
        pieces = chunk.split(b"\n")
        if len(pieces) == 1:  # no line ends in this chunk
            if not skipping:
                pending += chunk
                if len(pending) > max_line_bytes:
                    pending, skipping = b"", True
            continue
        if skipping:
            yield None
            skipping = False
        else:
            pieces[0] = pending + pieces[0]
            yield _bounded(pieces[0], max_line_bytes)
        for line in pieces[1:-1]:
            yield _bounded(line, max_line_bytes)
        pending = pieces[-1]
        if len(pending) > max_line_bytes:
            pending, skipping = b"", True
    if skipping:
        yield None
    elif pending:
        yield _bounded(pending, max_line_bytes)


def _bounded(line: bytes, max_line_bytes: int) -> bytes | None:
    """The line without a trailing \\r, or None when it (with the \\r) exceeds the limit."""
    if len(line) > max_line_bytes:
        return None
    return line[:-1] if line.endswith(b"\r") else line


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON escapes can make them; they cannot be written as UTF-8


def _convert(value: object, kind: str) -> object:
    if value is None:
        return None
    if kind == "str":
        value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if LONE_SURROGATE.search(value):
            raise ValueError("lone surrogate")
        return value
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("a boolean is not an int")
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:  # the Parquet column is int64
            raise ValueError("out of the int64 range")
        return value
    return float(value)


_JSON = json.JSONDecoder()
NO_FIELDS: dict = {}  # shared by every record when no field is kept (never mutated)


def _parse_json_slowly(line: str) -> object:
    """A line the fast path refused: a blank line, a BOM before the object, or a drop reason."""
    line = line.removeprefix("\ufeff")
    if not line.strip():
        return BLANK_LINE
    try:
        return _JSON.decode(line)
    except (json.JSONDecodeError, RecursionError):
        return MALFORMED_JSON


def parse_line(raw: bytes, fmt: str, fields: FieldSpec, columns: list[str] | None) -> tuple[str | None, str, dict] | str:
    """One line -> (id or None, raw text, kept fields) or a drop reason.

    `columns` names the columns of a tsv/csv file (its header row).
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8
    if fmt == "jsonl":  # the common case first: a well-formed object without a BOM
        try:
            obj = _JSON.decode(line)
        except (json.JSONDecodeError, RecursionError):
            obj = _parse_json_slowly(line)
            if isinstance(obj, str):
                return obj
        if not isinstance(obj, dict):
            return NOT_AN_OBJECT
    else:
        line = line.removeprefix("\ufeff")
        if not line.strip():
            return BLANK_LINE
        if fmt == "text":
            return None, line, {name: None for name, _ in fields.keep_fields}
        values = line.split("\t") if fmt == "tsv" else next(csv.reader(io.StringIO(line)), [])
        if columns is None or len(values) != len(columns):
            return MALFORMED_ROW
        obj = dict(zip(columns, values))
    text = obj.get(fields.text_field)
    if text is None:
        return MISSING_TEXT
    if not isinstance(text, str):
        return TEXT_NOT_STRING
    record_id = obj.get(fields.id_field) if fields.id_field else None
    if record_id is not None:
        if isinstance(record_id, (dict, list)):
            return BAD_ID
        record_id = record_id if isinstance(record_id, str) else json.dumps(record_id)
        if not record_id or "\x00" in record_id or (not record_id.isascii() and LONE_SURROGATE.search(record_id)):
            return BAD_ID
    if not fields.keep_fields:
        return record_id, text, NO_FIELDS
    try:
        kept = {name: _convert(obj.get(name), kind) for name, kind in fields.keep_fields}
    except (TypeError, ValueError):
        return BAD_FIELD
    return record_id, text, kept


def parse_header(raw: bytes, fmt: str) -> list[str]:
    """Column names from a tsv/csv header row."""
    line = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    return line.split("\t") if fmt == "tsv" else next(csv.reader(io.StringIO(line)), [])


def derived_id(source_name: str, line_number: int) -> str:
    """A stable id for a record without one: its file and 1-based line (zero-padded, so ids sort by line)."""
    return f"{source_name}:{line_number:010d}"
