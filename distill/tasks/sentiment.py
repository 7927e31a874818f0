"""`distill.evaluate --sentiment FILE`: NSMC-style sentiment reviews, cleaned as the corpus was (no torch).

The sentiment check predates the task registry (distill.tasks) and is kept as it was: the texts go
through the corpus cleaner (transforms.clean.clean_text), as the pretraining text did, and part of the
one file is held out (`split_indices`). `--task nsmc` reads NSMC as distributed instead, with its own
test file (docs/evaluate.md).

Input formats (docs/distill.md#sentiment-files), read through the one I/O layer
(`transforms.storage.open_decompressed`: gz, bz2, xz and zst by suffix, a truncated file is an
error) with the format taken from the suffix as everywhere else (`transforms.reading.detect_format`):

- JSON lines (`.jsonl`, `.json`): `text` and either `rating` (NSMC's convention, `rating_label`)
  or `label` (0/1);
- TSV (`.tsv`): a header naming a text column (`text` or `document`) and `label`, or headerless
  `text<TAB>label` rows;
- `.txt` is plain text elsewhere in the project, so it is read as TSV only when its first line is
  such a header (NSMC's `ratings_*.txt`), or with an explicit format (`--sentiment-format tsv`).

Every line read is either kept or counted under a drop reason.
"""
from __future__ import annotations

import json
import lzma
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from distill.tasks.readers import rating_label
from transforms import storage
from transforms.clean import clean_text
from transforms.reading import detect_format, iter_lines

FORMATS = ("jsonl", "tsv")
TEXT_COLUMNS = ("text", "document")
MAX_LINE_BYTES = 1 << 20  # a longer line is counted as malformed
READ_FAILURES = (EOFError, OSError, lzma.LZMAError, zlib.error)  # truncated or corrupt compressed input


@dataclass(frozen=True)
class SentimentData:
    texts: list[str]
    labels: list[int]
    counts: dict[str, int]  # lines read, kept, and each drop reason


def tsv_header(line: str) -> tuple[int, int] | None:
    """(text column, label column) when the line is a header naming them, else None."""
    header = line.rstrip("\r\n").lstrip("\ufeff").split("\t")
    text_name = next((name for name in TEXT_COLUMNS if name in header), None)
    return (header.index(text_name), header.index("label")) if text_name and "label" in header else None


def resolve_format(path: str, requested: str, first_line: str) -> str:
    """jsonl or tsv: the requested one, or the suffix's (transforms.reading.detect_format); a `.txt`
    (plain text elsewhere) only with a TSV header such as NSMC's ratings_*.txt."""
    if requested in FORMATS:
        return requested
    if requested != "auto":
        raise ValueError(f"sentiment format must be auto, {' or '.join(FORMATS)}, not {requested!r}")
    detected = detect_format(path)
    detected = "jsonl" if detected == "json" else detected  # .json: read here as JSON lines, as before
    if detected in FORMATS:
        return detected
    if detected == "text" and tsv_header(first_line) is not None:
        return "tsv"
    raise ValueError(f"{path}: the name says {detected}, not a sentiment format: give JSON lines (.jsonl, .json), "
                     "TSV (.tsv, or .txt with a text/document and label header), or --sentiment-format")


def read_sentiment_file(path, fmt: str = "auto") -> SentimentData:
    """Read labelled texts; `fmt` auto, jsonl or tsv (see the module docstring)."""
    path = str(path)
    if not storage.is_file(path):
        raise ValueError(f"sentiment file {path} does not exist")
    try:
        with storage.open_decompressed(path) as stream:
            data = _read_lines(path, fmt, iter_lines(stream, MAX_LINE_BYTES))
    except READ_FAILURES as error:
        raise ValueError(f"{path} cannot be read to its end (truncated or corrupt?): {error}") from error
    if len(set(data.labels)) < 2:
        raise ValueError(f"{path}: need examples of both classes, kept {len(data.texts)} with labels {sorted(set(data.labels))}")
    return data


def _read_lines(path: str, fmt: str, raw_lines: Iterator[bytes | None]) -> SentimentData:
    first = next(raw_lines, b"")
    first_text = first.decode("utf-8", errors="replace") if first is not None else ""
    fmt = resolve_format(path, fmt, first_text)
    columns = (0, 1)
    if fmt == "tsv" and (header := tsv_header(first_text)) is not None:
        columns = header
    else:
        raw_lines = _chain(first, raw_lines)
    counts: Counter = Counter()
    texts: list[str] = []
    labels: list[int] = []
    for raw in raw_lines:
        if raw is not None and not raw.strip():
            continue
        counts["read"] += 1
        text, label = _parse_line(raw, fmt, columns)
        if text is None:
            counts["dropped_malformed"] += 1
        elif label is None:
            counts["dropped_unlabelled"] += 1
        elif not (cleaned := clean_text(text)):
            counts["dropped_empty"] += 1
        else:
            texts.append(cleaned)
            labels.append(label)
    counts["kept"] = len(texts)
    return SentimentData(texts, labels, dict(counts))


def _chain(first: bytes | None, rest: Iterator[bytes | None]) -> Iterator[bytes | None]:
    yield first
    yield from rest


def _parse_line(raw: bytes | None, fmt: str, columns: tuple[int, int]) -> tuple[str | None, int | None]:
    """(text, label) of one line; text None when the line is malformed (too long, not UTF-8, not
    parseable), label None when it has no usable label."""
    try:
        line = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        line = None
    if line is None:
        return None, None
    if fmt == "jsonl":
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None, None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return None, None
        if "rating" in record:
            return record["text"], rating_label(record["rating"])
        return record["text"], record.get("label") if record.get("label") in (0, 1) else None
    fields = line.split("\t")
    text_column, label_column = columns
    if len(fields) <= max(text_column, label_column):
        return None, None
    label = fields[label_column].strip()
    return fields[text_column], int(label) if label in ("0", "1") else None


def split_indices(count: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded permutation, the first test_fraction held out."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(1, int(round(count * test_fraction)))
    return order[held_out:], order[:held_out]


