"""Checks of the input before any work: the first records of each file, read by the pipeline's own reader and parser.

pipeline.run and pipeline.tokenize call the same two pure steps before they start:

1. `sample_file`: the first SAMPLE_RECORDS records (at most SAMPLE_BYTES of them) of one
   file, read through transforms.reading.RecordReader and parse_line exactly as the run
   will read them, summed up in a `FileSample`: drop reasons, JSON keys, the header,
   undecodable records and what they decode as instead, decomposed Hangul, quoting.
2. `check_samples`: the mistakes that would make a run read nothing usable, or something
   else than asked for, each a `PreflightError` whose message names the fix: a binary file
   (Parquet, Arrow, UTF-16, ...), text in another encoding (`--encoding cp949`), a TSV/CSV
   header without the --text-field (or an explicit --id-field, or a --keep-fields column),
   JSON records that all lack the text field (with the keys they have), a JSON array in a
   JSON-lines file, a TSV/CSV file read as plain text (its header names the --text-field:
   `--format tsv`), a file of which no sampled record is usable, decomposed (NFD) Hangul
   above NFD_SHARE of the records (`--nfc`, or `--allow-nfd`), and an input without records.

`unusable_run` is the last line of defence, after a run: every record read was dropped
before it could be cleaned. docs/run.md (Checks before the run) lists the checks.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transforms import drop_reasons, reading, storage

SAMPLE_RECORDS = 1000
SAMPLE_BYTES = 4 << 20  # a sample stops after this many bytes of records, even before SAMPLE_RECORDS
BINARY_PROBE_BYTES = 8000  # NUL bytes in more than 1% of the first 8,000 bytes make a file binary
MAX_SAMPLED_FILES = 1000  # with more input files, this many, spread evenly over the sorted list
UNDECODABLE_SHARE = 0.5  # above this share of undecodable records, the encoding is wrong
ALTERNATIVE_SHARE = 0.9  # ...and it is that encoding when this share of them decode with it
NFD_SHARE = 0.01
CONJOINING_JAMO = re.compile("[\u1100-\u11ff]")
MAGIC = {b"PAR1": "a Parquet file", b"ARROW1": "an Arrow IPC file", b"\xff\xff\xff\xff": "an Arrow IPC stream",
         b"PK\x03\x04": "a zip archive", b"%PDF": "a PDF document", b"\x1f\x8b": "gzip data (without a .gz suffix)",
         b"\xfd7zXZ": "xz data (without an .xz suffix)", b"BZh": "bzip2 data (without a .bz2 suffix)",
         b"\x28\xb5\x2f\xfd": "zstd data (without a .zst suffix)", b"\xff\xfe": "UTF-16 text",
         b"\xfe\xff": "UTF-16 text"}
TEXT_FORMATS_HINT = "text (one document a line), JSON lines, a JSON array, TSV or CSV"


class PreflightError(ValueError):
    """The input cannot give what the options ask for; the message names the file and the fix."""


@dataclass(frozen=True)
class Checks:
    """What the command will read: its options, as the checks need them."""

    fields: reading.FieldSpec
    encoding: str = reading.DEFAULT_ENCODING
    quoting: str = "auto"
    max_record_bytes: int = 8 << 20
    id_field_explicit: bool = False  # the default id field may be absent (ids become FILE:LINE)
    nfd_allowed: bool = False  # --nfc or --allow-nfd
    nfd_fix: str = ("cleaning would delete the jamo: pass --nfc to compose them into syllables (or --allow-nfd to "
                    "keep the seed's behaviour)")
    kept_option: str = "--keep-fields"  # the option that names fields to carry (pipeline.tokenize: --stratify-by)


@dataclass
class FileSample:
    """What the first records of one file look like."""

    name: str
    fmt: str  # as read: text, jsonl, json-array, tsv or csv
    binary: str | None = None  # what the file is when it is not text ("a Parquet file", ...)
    header: list[str] | None = None
    header_undecodable: bool = False
    records: int = 0
    dropped: Counter = field(default_factory=Counter)  # drop reasons of the sampled records
    parsed: int = 0  # records that parsed into a text
    objects: int = 0  # JSON objects among the records
    keys: Counter = field(default_factory=Counter)  # objects that have each key
    undecodable: int = 0
    decodes_as: Counter = field(default_factory=Counter)  # undecodable records that another encoding reads
    nfd: int = 0  # parsed records whose text holds conjoining jamo
    first_record: bytes | None = None
    read_error: str | None = None


# ---------------------------------------------------------------- sampling


def sample_file(path: str, name: str, fmt: str, checks: Checks) -> FileSample:
    """The first records of one file, read and parsed as the run will read them."""
    sample, reader = FileSample(name, fmt), None
    try:
        with storage.open_input(path) as raw:
            stream = storage.decompressed(raw, path)
            head = _read_head(stream)
            sample.binary = binary_kind(head)
            if sample.binary is not None:
                return sample
            reader = reading.RecordReader(reading.Prefixed(head, stream), fmt, checks.max_record_bytes,
                                          checks.quoting, checks.encoding)
            sampled_bytes = 0
            for _, record in reader:
                sampled_bytes += _add_record(sample, record, reader, checks)
                if sample.records >= SAMPLE_RECORDS or sampled_bytes >= SAMPLE_BYTES:
                    break
    except Exception as error:  # noqa: BLE001 - the run counts it as a read_error; the sample ends here
        sample.read_error = f"{type(error).__name__}: {error}"
    if reader is not None:
        sample.fmt, sample.header = reader.kind, reader.header
        if reader.header_raw is not None:
            sample.header_undecodable = not _decodes(reader.header_raw, checks.encoding)
    return sample


def _read_head(stream) -> bytes:
    read = getattr(stream, "read1", stream.read)
    head = b""
    while len(head) < BINARY_PROBE_BYTES and (chunk := read(BINARY_PROBE_BYTES - len(head))):
        head += chunk
    return head


def binary_kind(head: bytes) -> str | None:
    """What a file whose first bytes are `head` is, when it is not text: a known format, or binary data (NUL
    bytes, which text holds at most by accident: more than 1% of the bytes)."""
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    nuls = head.count(b"\x00")
    if nuls * 100 > len(head):
        return f"binary data ({nuls:,} NUL bytes among its first {len(head):,} bytes)"
    return None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _add_record(sample: FileSample, record, reader: reading.RecordReader, checks: Checks) -> int:
    """Count one record into the sample; returns its size in bytes."""
    raw = getattr(record, "raw", record)
    sample.records += 1
    if sample.first_record is None and raw:
        sample.first_record = raw[:4096]
    fmt = reader.kind if reader.kind != "json-array" else "json"
    parsed = drop_reasons.LINE_TOO_LONG if record is None else reading.parse_line(
        record, fmt, checks.fields, reader.header, checks.encoding, checks.quoting)
    if isinstance(parsed, str):
        sample.dropped[parsed] += 1
        if parsed in (drop_reasons.INVALID_UTF8, drop_reasons.UNDECODABLE):
            sample.undecodable += 1
            for other in ("utf-8", "cp949"):
                if other != checks.encoding and _decodes(raw, other):
                    sample.decodes_as[other] += 1
    else:
        sample.parsed += 1
        if CONJOINING_JAMO.search(parsed[1]):
            sample.nfd += 1
    if raw and fmt in reading.JSON_FORMATS and not isinstance(record, reading.Damaged):
        try:
            obj = json.loads(raw.decode(checks.encoding))
        except (UnicodeDecodeError, ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            sample.objects += 1
            sample.keys.update(obj.keys())
    return len(raw) if raw else 0


def sample_files(files: list[tuple[str, str, str]], checks: Checks, threads: int = 8) -> list[FileSample]:
    """`sample_file` for (path, name, format) triples, several at a time (remote files wait on the network).

    With more than MAX_SAMPLED_FILES files, that many are sampled, spread evenly over the list.
    """
    if len(files) > MAX_SAMPLED_FILES:
        step = len(files) / MAX_SAMPLED_FILES
        files = [files[int(i * step)] for i in range(MAX_SAMPLED_FILES)]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        return list(pool.map(lambda file: sample_file(*file, checks), files))


# ---------------------------------------------------------------- checks


def check_samples(samples: list[FileSample], checks: Checks) -> None:
    """Raise a PreflightError for the first mistake the samples show (the module docstring lists them)."""
    for sample in samples:
        message = check_file(sample, checks)
        if message is not None:
            raise PreflightError(message)
    if samples and all(sample.records == 0 and sample.read_error is None for sample in samples):
        raise PreflightError(f"the input holds no records: {len(samples)} file(s), all empty")
    _check_kept_fields(samples, checks)


def check_file(sample: FileSample, checks: Checks) -> str | None:
    """The message for what is wrong with one file's first records, or None."""
    if sample.binary is not None:
        return (f"{sample.name} is {sample.binary}, not {TEXT_FORMATS_HINT} in a text encoding; leave it out of "
                "--input (a directory means every file under it)")
    if sample.records == 0:
        return None
    return (_encoding_problem(sample, checks) or _header_problem(sample, checks) or _json_problem(sample, checks)
            or _table_as_text(sample, checks) or _nothing_usable(sample, checks) or _nfd_problem(sample, checks))


def _encoding_problem(sample: FileSample, checks: Checks) -> str | None:
    readable = sample.records - sample.dropped[drop_reasons.BLANK_LINE] + sample.header_undecodable
    undecodable = sample.undecodable + sample.header_undecodable
    if not readable or undecodable <= UNDECODABLE_SHARE * readable:
        return None
    name = "UTF-8" if checks.encoding == reading.DEFAULT_ENCODING else checks.encoding
    found = f"{sample.name}: {undecodable:,} of its first {readable:,} records are not valid {name}"
    for other, label in (("cp949", "CP949 (EUC-KR)"), ("utf-8", "UTF-8")):
        if sample.undecodable and sample.decodes_as[other] >= ALTERNATIVE_SHARE * sample.undecodable:
            return f"{found} but read as {label}: pass --encoding {other}"
    return f"{found}, nor CP949 or UTF-8: is it a text file? (--encoding names its encoding: utf-8, cp949, euc-kr)"


def _header_problem(sample: FileSample, checks: Checks) -> str | None:
    if sample.fmt not in reading.TABLE_FORMATS or sample.header is None:
        return None
    columns = ", ".join(repr(column) for column in sample.header)
    hint = ""
    if len(sample.header) == 1 and "\t" in sample.header[0] and sample.fmt == "csv":
        hint = "; the header is tab-separated: --format tsv"
    elif len(sample.header) == 1 and "," in sample.header[0] and sample.fmt == "tsv":
        hint = "; the header is comma-separated: --format csv"
    wanted = [("--text-field", checks.fields.text_field)]
    if checks.id_field_explicit and checks.fields.id_field:
        wanted.append(("--id-field", checks.fields.id_field))
    for option, name in wanted:
        if name not in sample.header:
            return f"{sample.name}: its header has no column {name!r} for {option} (columns: {columns}){hint}"
    return None


def _json_problem(sample: FileSample, checks: Checks) -> str | None:
    if sample.fmt == "jsonl" and sample.parsed == 0 and (sample.first_record or b"").lstrip(
            reading.UTF8_BOM + reading.JSON_SPACE).startswith(b"["):
        return (f"{sample.name} holds a JSON array, not JSON lines: name it .json or pass --format json "
                "(a .json file whose first character is '[' is read as one array of records)")
    if sample.fmt not in ("jsonl", "json-array") or not sample.objects:
        return None
    keys = ", ".join(f"{key} ({count:,})" for key, count in sample.keys.most_common(20)) or "none"
    wanted = [("--text-field", checks.fields.text_field)]
    if checks.id_field_explicit and checks.fields.id_field:
        wanted.append(("--id-field", checks.fields.id_field))
    for option, name in wanted:
        if not sample.keys[name]:
            return (f"{sample.name}: none of its first {sample.objects:,} JSON records has the field {name!r} "
                    f"for {option}; the keys found (records with each): {keys}")
    return None


def _table_as_text(sample: FileSample, checks: Checks) -> str | None:
    """A file read as plain text whose first line is a TSV/CSV header naming the --text-field (NSMC's ratings.txt)."""
    if sample.fmt != "text" or not sample.first_record:
        return None
    first = sample.first_record.decode(checks.encoding, errors="replace").lstrip("\ufeff")
    for delimiter, fmt in (("\t", "tsv"), (",", "csv")):
        columns = reading.split_fields(first, delimiter) or first.split(delimiter)
        if len(columns) > 1 and checks.fields.text_field in columns:
            return (f"{sample.name} is read as plain text (one document a line), but its first line is a {fmt.upper()} "
                    f"header with the column {checks.fields.text_field!r}: pass --format {fmt}")
    return None


def _nothing_usable(sample: FileSample, checks: Checks) -> str | None:
    if sample.parsed:
        return None
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sample.dropped.most_common())
    message = f"{sample.name}: no usable document among its first {sample.records:,} records ({reasons})"
    if sample.dropped[drop_reasons.MALFORMED_ROW] and sample.header is not None:
        message += (f"; its header has {len(sample.header)} columns ({', '.join(map(repr, sample.header))}): check "
                    "--format, or --quoting none if its quotes are ordinary characters")
    elif sample.dropped[drop_reasons.BAD_QUOTING]:
        message += "; its quotes do not follow RFC 4180: --quoting auto or none"
    elif sample.dropped[drop_reasons.MALFORMED_JSON] or sample.dropped[drop_reasons.NOT_AN_OBJECT]:
        message += "; JSON lines hold one object a line, a .json file one array of objects (--format json)"
    return message


def _nfd_problem(sample: FileSample, checks: Checks) -> str | None:
    if checks.nfd_allowed or not sample.parsed or sample.nfd <= NFD_SHARE * sample.parsed:
        return None
    return (f"{sample.name}: {sample.nfd:,} of its first {sample.parsed:,} records hold decomposed Hangul (NFD: "
            f"conjoining jamo U+1100-U+11FF, as macOS file names and PDF text have); {checks.nfd_fix}")


def _check_kept_fields(samples: list[FileSample], checks: Checks) -> None:
    if not checks.fields.keep_fields:
        return
    found: Counter = Counter()
    with_fields = [sample for sample in samples if sample.header is not None or sample.objects]
    for sample in with_fields:
        found.update(sample.header or ())
        found.update(sample.keys)
    for name, _ in checks.fields.keep_fields:
        if found[name]:
            continue
        if not with_fields:
            raise PreflightError(f"{checks.kept_option} {name!r}: the input has no fields (plain text, one document "
                                 "a line); fields come from JSON records or a TSV/CSV header")
        names = ", ".join(sorted(found)) or "none"
        close = _closest(name, list(found))
        raise PreflightError(f"{checks.kept_option} {name!r}: no sampled record has this field"
                             + (f" (did you mean {close!r}?)" if close else "") + f"; the fields found: {names}")


def _closest(name: str, candidates: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


# ---------------------------------------------------------------- after the run


def unusable_run(input_records: int, dropped: dict) -> str | None:
    """The message when a run read records and every one was dropped before cleaning (None otherwise)."""
    unreadable = {reason: count for reason, count in dropped.items() if reason in drop_reasons.UNREADABLE}
    if not input_records or sum(unreadable.values()) < input_records:
        return None
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(unreadable.items(), key=lambda kv: -kv[1]))
    return f"none of the {input_records:,} records read is a usable document ({reasons})"
