"""Reading raw corpus files into records, without Beam.

A file is read as bytes in fixed-size chunks and split on b"\\n", so a single line of
many megabytes never needs more than `max_line_bytes` of memory: a longer line is skipped
to its end and reported. `RecordReader` turns the lines into records by format: a line of
text or JSON lines is one record; a TSV/CSV record follows RFC 4180 (a quoted field may hold
delimiters, doubled quotes and line breaks, so one record may span lines; `--quoting`); a
`.json` file that starts with `[` is one JSON array whose elements are the records (found by
a byte scanner, never holding more than one element). Each record is then decoded
(`--encoding`) and parsed by format into a record (id, text, kept fields) or a reject with a
reason (transforms.drop_reasons). Every record read becomes exactly one of the two.
docs/run.md describes the formats, the quoting and the ids.
"""
from __future__ import annotations

import codecs
import functools
import json
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import orjson

from transforms.drop_reasons import (BAD_FIELD, BAD_ID, BAD_QUOTING, BLANK_LINE, INVALID_UTF8, MALFORMED_JSON,
                                    MALFORMED_ROW, MISSING_TEXT, NOT_AN_OBJECT, TEXT_NOT_STRING, UNDECODABLE)
from transforms.storage import READ_CHUNK_BYTES, strip_compression_suffix

# json: a JSON array when the file's first non-space byte is `[`, JSON lines otherwise.
FORMATS = ("text", "jsonl", "json", "tsv", "csv")
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "json", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv",
                    ".txt": "text", ".text": "text"}
JSON_FORMATS = ("jsonl", "json")
TABLE_FORMATS = ("tsv", "csv")
# auto: RFC 4180, and a record that is not valid RFC 4180 is read with its quotes as ordinary characters;
# rfc4180: such a record is dropped (bad_quoting); none: quotes are ordinary characters, one record a line.
QUOTINGS = ("auto", "rfc4180", "none")
ENCODINGS = ("utf-8", "cp949", "euc_kr")  # Python's names; ASCII bytes never occur inside their characters
DEFAULT_ENCODING = "utf-8"
REJECTED_RAW_CHARS = 1000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class InputFormatError(ValueError):
    """The options cannot read the input (raised before any work starts)."""


def check_encoding(name: str) -> str:
    """The Python name of a supported --encoding (utf-8, cp949, euc-kr and their aliases), or InputFormatError."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = None
    if canonical not in ENCODINGS:
        raise InputFormatError(f"--encoding {name!r} is not supported: use utf-8, cp949 (Korean Windows, a superset "
                               "of EUC-KR) or euc-kr")
    return canonical


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

    @functools.cached_property
    def number_fields(self) -> tuple[str, ...]:
        """The fields whose JSON numbers become record values (as id text or kept ints/floats): orjson reads an
        integer beyond 64 bits as a float where Python's json keeps it exact, so such a record is read again
        (`_json_object`)."""
        return tuple(filter(None, (self.id_field, *(name for name, _ in self.keep_fields))))

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


def raw_excerpt(raw) -> str:
    """A printable, bounded excerpt of a rejected record (invalid bytes shown as escapes)."""
    raw = getattr(raw, "raw", raw)  # a Damaged or Literal record
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


# ---------------------------------------------------------------- records: lines, RFC 4180 rows, JSON array elements


@dataclass(frozen=True)
class Damaged:
    """A record the reader could not delimit (`reason`, a drop reason) with an excerpt of its first line."""

    reason: str
    raw: bytes


@dataclass(frozen=True)
class Literal:
    """A TSV/CSV line whose RFC 4180 reading failed, read with its quotes as ordinary characters (--quoting auto)."""

    raw: bytes


QUOTE = 0x22
EXCERPT_BYTES = REJECTED_RAW_CHARS * 4
JSON_SPACE = b" \t\r\n"
UTF8_BOM = b"\xef\xbb\xbf"


class Prefixed:
    """A stream whose first bytes were already read (peeked): they come back first."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head, self._read = head, getattr(stream, "read1", stream.read)

    def read1(self, size: int = -1) -> bytes:
        if self.head:
            size = len(self.head) if size is None or size < 0 else size
            out, self.head = self.head[:size], self.head[size:]
            return out
        return self._read(size)

    read = read1


def scan_row(line: bytes, delimiter: int, quoted: bool, fields: int) -> tuple[bool, int, bool]:
    """Follow RFC 4180 over one physical line of a record: (inside a quoted field at its end, fields ended, broken).

    `quoted` and `fields` carry the state of the record's earlier lines (False, 0 at its
    start). A quote opens a quoted field only as the field's first character; inside one, a
    doubled quote is a quote and a single quote closes it, after which the field must end
    (a delimiter or the line's end); anything else breaks the record (`broken`). A quote
    inside an unquoted field is an ordinary character. The same grammar as Python's csv
    module with strict=True, on bytes (the delimiters and quotes of UTF-8, CP949 and EUC-KR
    text never occur inside a multi-byte character).
    """
    separator = bytes((delimiter,))
    i, n = 0, len(line)
    while True:
        if quoted:
            j = line.find(b'"', i)
            if j < 0:
                return True, fields, False
            if j + 1 < n and line[j + 1] == QUOTE:
                i = j + 2
                continue
            quoted = False
            if j + 1 == n:
                return False, fields + 1, False
            if line[j + 1] != delimiter:
                return False, fields, True
            fields, i = fields + 1, j + 2
            continue
        if i < n and line[i] == QUOTE:
            quoted, i = True, i + 1
            continue
        j = line.find(separator, i)
        if j < 0:
            return False, fields + 1, False
        fields, i = fields + 1, j + 1


def split_fields(line: str, delimiter: str, rfc4180: bool = True) -> list[str] | None:
    """The fields of one decoded TSV/CSV record; None when it is not valid RFC 4180 (see `scan_row`).

    Without rfc4180 (--quoting none, or a Literal record) every delimiter separates fields.
    """
    if not rfc4180 or '"' not in line:
        return line.split(delimiter)
    fields, i, n = [], 0, len(line)
    while True:
        if i < n and line[i] == '"':
            parts, i = [], i + 1
            while True:
                j = line.find('"', i)
                if j < 0:
                    return None
                parts.append(line[i:j])
                if j + 1 < n and line[j + 1] == '"':
                    parts.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            fields.append("".join(parts))
            if i == n:
                return fields
            if line[i] != delimiter:
                return None
            i += 1
            continue
        j = line.find(delimiter, i)
        if j < 0:
            fields.append(line[i:])
            return fields
        fields.append(line[i:j])
        i = j + 1


_ARRAY_STRUCTURE = re.compile(rb'["\[\]{},]')
_STRING_SPECIAL = re.compile(rb'["\\]')


def array_elements(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes | None | Damaged]:
    """The elements of a JSON array, as bytes, from the chunks that follow its opening `[`.

    A byte scanner finds where each element ends (a `,` or the closing `]` outside strings
    and nesting), so one element at a time is held: an element longer than `max_bytes` is
    skipped to its end and yielded as None. An empty element (`[1,,2]`, a trailing comma)
    and anything after the closing `]` are Damaged (malformed_json); a missing `]` ends the
    array at the end of the file. The JSON parser judges each element afterwards.
    """
    depth, in_string, escaped = 0, False, False
    parts: list[bytes] = []
    size, too_long, elements = 0, False, 0

    def finish(piece: bytes):
        nonlocal parts, size, too_long, elements
        element = None if too_long else (b"".join(parts) + piece).strip(JSON_SPACE)
        parts, size, too_long = [], 0, False
        elements += 1
        return Damaged(MALFORMED_JSON, b"") if element == b"" else element

    for chunk in chunks:
        i, start, n = 0, 0, len(chunk)
        while i < n:
            if in_string:
                if escaped:
                    i, escaped = i + 1, False
                    continue
                found = _STRING_SPECIAL.search(chunk, i)
                if found is None:
                    break
                j = found.start()
                if chunk[j] == 0x5C:  # a backslash escapes the next byte, maybe in the next chunk
                    i, escaped = (j + 2, False) if j + 1 < n else (n, True)
                    continue
                in_string, i = False, j + 1
                continue
            found = _ARRAY_STRUCTURE.search(chunk, i)
            if found is None:
                break
            j, byte = found.start(), chunk[found.start()]
            i = j + 1
            if byte == QUOTE:
                in_string = True
            elif byte in b"[{":
                depth += 1
            elif byte == 0x7D:  # }
                depth = max(depth - 1, 0)
            elif byte == 0x5D and depth:  # ] closing a nested array
                depth -= 1
            elif byte == 0x2C and not depth:  # , between elements
                yield finish(chunk[start:j])
                start = j + 1
            elif byte == 0x5D:  # ] closing the array
                last = finish(chunk[start:j])
                if last != Damaged(MALFORMED_JSON, b"") or elements > 1:  # `[]` has no element
                    yield last
                rest = chunk[j + 1:].strip(JSON_SPACE)
                if rest:
                    yield Damaged(MALFORMED_JSON, rest[:EXCERPT_BYTES])
                return
        if not too_long:
            parts.append(chunk[start:])
            size += n - start
            if size > max_bytes:
                parts, too_long = [], True
    if parts or too_long:
        last = finish(b"")
        if last != Damaged(MALFORMED_JSON, b"") or elements > 1:
            yield last


class RecordReader:
    """The records of one file, numbered: iterate for (number, record).

    A record is bytes (one line of text or JSON lines; one TSV/CSV record, its lines joined
    with \\n; one element of a JSON array), None when longer than `max_record_bytes`
    (line_too_long), a `Damaged` record or a `Literal` one. Its number is the line where it
    starts, or for a JSON array element its 1-based index in the array. A TSV/CSV file's
    first record is its header (`header`, decoded with `encoding`), not a record. `kind` is the
    format as read (a `json` file becomes `json-array` or `jsonl`); `next_number` is the
    number after the last line (element) read; `counts` holds `records_read_literally` and
    `records_spanning_lines`. Memory: one chunk plus one record (at most `max_record_bytes`;
    a TSV/CSV record that would grow past it is given up and its lines read again, see
    `_table_records`). A reader of a part of a file (transforms.ranges) numbers from
    `first_number` and, for TSV/CSV, is given the file's `header` instead of reading one.
    """

    def __init__(self, stream: BinaryIO, fmt: str, max_record_bytes: int, quoting: str = "auto",
                 encoding: str = DEFAULT_ENCODING, chunk_bytes: int = READ_CHUNK_BYTES, first_number: int = 1,
                 header: list[str] | None = None):
        self.stream, self.fmt, self.max_record_bytes = stream, fmt, max_record_bytes
        self.quoting, self.encoding, self.chunk_bytes = quoting, encoding, chunk_bytes
        self.kind = fmt
        self.header: list[str] | None = header
        self.header_raw: bytes | None = None  # the header row as read, before decoding
        self.next_number = first_number
        self.counts: Counter = Counter()

    def __iter__(self) -> Iterator[tuple[int, object]]:
        stream = self.stream
        if self.fmt == "json":
            head, array = self._peek()
            if array is not None:
                self.kind = "json-array"
                for element in array_elements(self._chunks(array), self.max_record_bytes):
                    number = self.next_number
                    self.next_number += 1
                    yield number, element
                return
            self.kind, stream = "jsonl", Prefixed(head, stream)
        lines = iter_lines(stream, self.max_record_bytes, self.chunk_bytes)
        if self.fmt in TABLE_FORMATS:
            yield from self._table_records(lines)
            return
        for line in lines:
            number = self.next_number
            self.next_number += 1
            yield number, line

    def _chunks(self, first: bytes) -> Iterator[bytes]:
        yield first
        read = getattr(self.stream, "read1", self.stream.read)
        while chunk := read(self.chunk_bytes):
            yield chunk

    def _peek(self) -> tuple[bytes, bytes | None]:
        """(the bytes read, the bytes after the `[` when the first non-space byte opens an array, else None)."""
        read = getattr(self.stream, "read1", self.stream.read)
        head = b""
        while chunk := read(self.chunk_bytes):
            head += chunk
            content = head.removeprefix(UTF8_BOM).lstrip(JSON_SPACE)
            if content:
                return head, content[1:] if content[:1] == b"[" else None
            if len(head) > self.max_record_bytes:
                break
        return head, None

    def _table_records(self, lines: Iterator[bytes | None]) -> Iterator[tuple[int, object]]:
        """TSV/CSV records by RFC 4180 (see `scan_row`), the header first (kept in `header`).

        A record that does not close into the header's number of fields within
        `max_record_bytes` and the file (a runaway quote, a quote followed by text, too many
        or too few fields across its lines) is given up at its first line: that line becomes a
        `Literal` record (--quoting auto) or a `Damaged` one (rfc4180, bad_quoting), and the
        lines after it are read again as records of their own.
        """
        delimiter = 0x09 if self.fmt == "tsv" else 0x2C
        rfc4180 = self.quoting != "none"
        again: deque = deque()  # lines read ahead for a record that was given up: read again

        def take():
            if again:
                return again.popleft()
            line = next(lines, StopIteration)
            if line is StopIteration:
                return None
            number = self.next_number
            self.next_number += 1
            return number, line

        def record_at(number: int, line: bytes | None):
            if line is None or not rfc4180 or b'"' not in line:
                return line
            return self._quoted_record(line, delimiter, take, again)

        while self.header is None and (item := take()) is not None:  # lines too long before it are records
            number, line = item
            record = record_at(number, line)
            if record is None:
                yield number, None
                continue
            self.header_raw = getattr(record, "raw", record)
            self.header = parse_header(self.header_raw, self.fmt, self.encoding,
                                       "none" if isinstance(record, (Literal, Damaged)) else self.quoting)
        while True:
            while again:  # lines read ahead for a record that was given up
                number, line = again.popleft()
                record = record_at(number, line)
                if record.__class__ is Literal:
                    self.counts["records_read_literally"] += 1
                yield number, record
            for line in lines:  # the common case, kept lean: a line without a quote is a record
                number = self.next_number
                self.next_number = number + 1
                if line is not None and rfc4180 and b'"' in line:
                    line = self._quoted_record(line, delimiter, take, again)
                    if line.__class__ is Literal:
                        self.counts["records_read_literally"] += 1
                yield number, line
                if again:
                    break
            else:
                if not again:
                    return

    def _quoted_record(self, line: bytes, delimiter: int, take, again: deque) -> object:
        """The record that starts with `line` (which holds a quote), reading further lines as it needs."""
        columns = len(self.header) if self.header is not None else None
        quoted, fields, broken = scan_row(line, delimiter, False, 0)
        if not quoted:
            if self.quoting == "auto" and (broken or (columns is not None and fields != columns)):
                return Literal(line)
            return line  # rfc4180: the parser finds what is wrong with it (malformed_row)
        parts, size, read_ahead = [line], len(line), []
        while (item := take()) is not None:
            read_ahead.append(item)
            following = item[1]
            if following is None:
                break
            size += 1 + len(following)
            if size > self.max_record_bytes:
                break
            quoted, fields, broken = scan_row(following, delimiter, True, fields)
            if broken:
                break
            parts.append(following)
            if not quoted:
                if columns is None or fields == columns:
                    self.counts["records_spanning_lines"] += 1
                    return b"\n".join(parts)
                break
        again.extendleft(reversed(read_ahead))
        return Literal(line) if self.quoting == "auto" else Damaged(BAD_QUOTING, line[:EXCERPT_BYTES])


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


def _decoded_line(raw: bytes, encoding: str) -> tuple[str, str | None]:
    """(the record decoded, without a BOM, None), or ("", the drop reason: undecodable or blank)."""
    try:
        line = raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError:
        return "", INVALID_UTF8 if encoding == DEFAULT_ENCODING else UNDECODABLE
    return (line, None) if line.strip() else ("", BLANK_LINE)


def _json_object(raw: bytes, encoding: str, number_fields: tuple[str, ...]) -> dict | str:
    """A JSON record's object, or a drop reason: what Python's json reads, at orjson's speed where they agree.

    orjson (C; about 3x Python's json on short objects, the common case) reads the bytes;
    where it refuses them (invalid UTF-8, a BOM, a blank line, NaN, a lone surrogate escape,
    nesting past 1,024) or read an integer of more than 64 bits in a `number_fields` field
    as a float, Python's json decides, so every record parses as it always did.
    """
    try:
        value = orjson.loads(raw if encoding == DEFAULT_ENCODING else raw.decode(encoding))
        if value.__class__ is not dict:
            return NOT_AN_OBJECT
        for name in number_fields:
            if value.get(name).__class__ is float:
                break
        else:
            return value
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        pass
    line, reason = _decoded_line(raw, encoding)
    if reason is not None:
        return reason
    try:
        value = _JSON.decode(line)
    except (json.JSONDecodeError, RecursionError):
        return MALFORMED_JSON
    return value if isinstance(value, dict) else NOT_AN_OBJECT


def parse_line(raw, fmt: str, fields: FieldSpec, columns: list[str] | None, encoding: str = DEFAULT_ENCODING,
               quoting: str = "auto") -> tuple[str | None, str, dict] | str:
    """One record (of `RecordReader`) -> (id or None, raw text, kept fields) or a drop reason.

    `columns` names the columns of a tsv/csv file (its header row); `quoting` is the file's
    (--quoting), a Literal record is read as with `none`.
    """
    if raw.__class__ is not bytes:
        if isinstance(raw, Damaged):
            return raw.reason
        raw, quoting = raw.raw, "none"  # a Literal record
    if fmt in JSON_FORMATS:
        obj = _json_object(raw, encoding, fields.number_fields)
        if obj.__class__ is str:
            return obj
    else:
        line, reason = _decoded_line(raw, encoding)
        if reason is not None:
            return reason
        if fmt == "text":
            return None, line, {name: None for name, _ in fields.keep_fields}
        delimiter = "\t" if fmt == "tsv" else ","
        values = line.split(delimiter) if quoting == "none" or '"' not in line else split_fields(line, delimiter)
        if values is None or columns is None or len(values) != len(columns):
            return MALFORMED_ROW
        obj = dict(zip(columns, values))
    text = obj.get(fields.text_field)
    if text.__class__ is not str:  # parsers make plain str, never a subclass
        return MISSING_TEXT if text is None else TEXT_NOT_STRING
    id_field = fields.id_field
    record_id = obj.get(id_field) if id_field else None
    if record_id is not None:
        if record_id.__class__ is not str:
            if isinstance(record_id, (dict, list)):
                return BAD_ID
            record_id = json.dumps(record_id)
        if not record_id or "\x00" in record_id or (not record_id.isascii() and LONE_SURROGATE.search(record_id)):
            return BAD_ID
    if not fields.keep_fields:
        return record_id, text, NO_FIELDS
    try:
        kept = {name: _convert(obj.get(name), kind) for name, kind in fields.keep_fields}
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity)
        return BAD_FIELD
    return record_id, text, kept


def parse_header(raw: bytes, fmt: str, encoding: str = DEFAULT_ENCODING, quoting: str = "auto") -> list[str]:
    """Column names from a tsv/csv header row (by RFC 4180 unless quoting is none or the row is not valid RFC 4180)."""
    line = raw.decode(encoding, errors="replace").lstrip("\ufeff")
    delimiter = "\t" if fmt == "tsv" else ","
    return split_fields(line, delimiter, quoting != "none") or line.split(delimiter)


def derived_id(source_name: str, line_number: int) -> str:
    """A stable id for a record without one: its file and 1-based line (zero-padded, so ids sort by line)."""
    return f"{source_name}:{line_number:010d}"
