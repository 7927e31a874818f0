"""Streaming document readers for tokenizer training.

`list_inputs` turns --input patterns into files with `transforms.storage.list_inputs`
(a directory is a clean corpus: `DIR/clean/*.parquet`, else `DIR/*.parquet`). `read_batches` then yields the documents in file
order, a batch at a time: Parquet by record batches and only the columns needed; plain
text (a line is a document), JSON lines, JSON arrays and TSV/CSV (RFC 4180) with a header,
compressed or not (gz, bz2, zst, xz), record by record through transforms.reading's
RecordReader and parse_line, as pipeline.run reads them (--format, --encoding, --quoting).
`check_text_files` runs pipeline.run's checks before any work (transforms.preflight).
At most one batch is held in memory, whatever the corpus size. A record that cannot be
used is counted by reason.
"""
from __future__ import annotations

import dataclasses
import lzma
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from tokenizer_training.errors import TokenizeError
from transforms import preflight, reading, storage
from transforms.drop_reasons import EMPTY_TEXT, INVALID_UNICODE, LINE_TOO_LONG, NULL_TEXT

PARQUET = "parquet"
BATCH_ROWS = 8192
MAX_LINE_BYTES = 64 << 20
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)


@dataclass(frozen=True)
class CorpusFile:
    name: str  # as users write it: the URI, or the absolute local path
    format: str  # parquet, text, jsonl, json, tsv or csv
    size: int
    quoting: str = "auto"  # tsv/csv: how quotes are read (--quoting, settled per file by the checks)


@dataclass(frozen=True)
class ReadOptions:
    """How the text files (not Parquet) are read: --encoding and --quoting."""

    encoding: str = reading.DEFAULT_ENCODING
    quoting: str = "auto"


@dataclass
class Batch:
    texts: pa.LargeStringArray  # no nulls, none empty or only whitespace
    values: list | None  # the --stratify-by field of each document, when one is asked for


def file_format(name: str, fmt: str = "auto") -> str:
    """Parquet by its suffix; any other file by --format, or with auto by its suffix (transforms.reading)."""
    if name.lower().endswith(".parquet"):
        return PARQUET
    return reading.detect_format(name) if fmt == "auto" else fmt


def list_inputs(patterns: list[str], fmt: str = "auto") -> list[CorpusFile]:
    """The files the patterns name (transforms.storage.list_inputs: a directory is a clean corpus)."""
    try:
        files = storage.list_inputs(patterns, directories="corpus")
    except storage.StorageError as error:
        raise TokenizeError(str(error)) from error
    return [CorpusFile(file.path, file_format(file.path, fmt), file.size) for file in files]


def check_text_files(files: list[CorpusFile], checks: preflight.Checks) -> list[CorpusFile]:
    """pipeline.run's checks before any work on the first records of every file that is not Parquet
    (transforms.preflight: binary data, the encoding, the header and JSON keys, usable records, NFD
    Hangul); returns the files, each with --quoting."""
    text_files = [file for file in files if file.format != PARQUET]
    if not text_files:
        return files
    samples = preflight.sample_files([(file.name, file.name, file.format) for file in text_files], checks)
    try:
        preflight.check_samples(samples, checks)
    except preflight.PreflightError as error:
        raise TokenizeError(str(error)) from error
    return [dataclasses.replace(file, quoting=checks.quoting) if file.format != PARQUET else file for file in files]


def parquet_rows(files: list[CorpusFile], text_field: str, value_field: str | None) -> int:
    """Rows in the Parquet files, from their footers, after checking they hold the columns asked for."""
    rows = 0
    for file in files:
        if file.format != PARQUET:
            continue
        try:
            with storage.open_random_access(file.name) as handle:
                metadata = pq.ParquetFile(handle).metadata
        except READ_ERRORS as error:
            raise TokenizeError(f"{file.name}: not a readable Parquet file: {error}") from error
        schema = metadata.schema.to_arrow_schema()
        if text_field not in schema.names:
            raise TokenizeError(f"{file.name}: no column {text_field!r} for --text-field "
                                f"(columns: {', '.join(schema.names)})")
        text_type = schema.field(text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise TokenizeError(f"{file.name}: column {text_field!r} is {text_type}, not a string")
        if value_field is not None and value_field not in schema.names:
            raise TokenizeError(f"{file.name}: no column {value_field!r} for --stratify-by "
                                f"(columns: {', '.join(schema.names)})")
        rows += metadata.num_rows
    return rows


def check_readable(files: list[CorpusFile]) -> None:
    """Open every text file once, so an unreadable one stops the run before any work."""
    for file in files:
        if file.format == PARQUET:
            continue
        try:
            storage.open_input(file.name).close()
        except READ_ERRORS as error:
            raise TokenizeError(f"{file.name}: cannot open: {error}") from error


def read_batches(files: list[CorpusFile], text_field: str, value_field: str | None, drops: Counter,
                 batch_rows: int = BATCH_ROWS, limit: int | None = None,
                 read_options: ReadOptions = ReadOptions()) -> Iterator[Batch]:
    """The usable documents of every file, in order, `batch_rows` at a time; drops are counted by reason.

    With a limit, only the first `limit` usable documents (--limit: the same ones in both passes).
    """
    remaining = limit
    for file in files:
        batches = (_parquet_batches(file, text_field, value_field, drops, batch_rows) if file.format == PARQUET
                   else _line_batches(file, text_field, value_field, drops, batch_rows, read_options.encoding))
        try:
            for batch in batches:
                if remaining is not None and len(batch.texts) >= remaining:
                    yield Batch(batch.texts[:remaining], batch.values[:remaining] if batch.values is not None else None)
                    return
                if remaining is not None:
                    remaining -= len(batch.texts)
                yield batch
        except READ_ERRORS as error:
            raise TokenizeError(f"{file.name}: read failed: {error}") from error


def _parquet_batches(file: CorpusFile, text_field: str, value_field: str | None, drops: Counter,
                     batch_rows: int) -> Iterator[Batch]:
    columns = [text_field] + ([value_field] if value_field not in (None, text_field) else [])
    with storage.open_random_access(file.name) as handle:
        for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
            texts = record_batch.column(text_field).cast(pa.large_string())
            usable = pc.fill_null(pc.and_(pc.greater(pc.binary_length(texts), 0),
                                          pc.invert(pc.utf8_is_space(texts))), False)
            kept = pc.sum(usable).as_py() or 0
            drops[NULL_TEXT] += texts.null_count
            drops[EMPTY_TEXT] += len(texts) - texts.null_count - kept
            if kept < len(texts):
                record_batch, texts = record_batch.filter(usable), texts.filter(usable)
            if kept:
                yield Batch(texts, record_batch.column(value_field).to_pylist() if value_field is not None else None)


def _line_batches(file: CorpusFile, text_field: str, value_field: str | None, drops: Counter,
                  batch_rows: int, encoding: str = reading.DEFAULT_ENCODING) -> Iterator[Batch]:
    fields = reading.FieldSpec(text_field=text_field, id_field=None,
                               keep_fields=((value_field, "str"),) if value_field is not None else ())
    with storage.open_input(file.name) as raw:
        records = reading.RecordReader(storage.decompressed(raw, file.name), file.format, MAX_LINE_BYTES,
                                       file.quoting, encoding)
        texts: list[str] = []
        values: list = []
        for _, record in records:
            if record is None:
                drops[LINE_TOO_LONG] += 1
                continue
            parsed = reading.parse_line(record, file.format, fields, records.header, encoding, file.quoting)
            if isinstance(parsed, str):
                drops[parsed] += 1
                continue
            _, text, kept = parsed
            if text.isspace() or not text:
                drops[EMPTY_TEXT] += 1
                continue
            if file.format in reading.JSON_FORMATS and not _encodable(text):
                drops[INVALID_UNICODE] += 1
                continue
            texts.append(text)
            if value_field is not None:
                values.append(kept[value_field])
            if len(texts) >= batch_rows:
                yield Batch(pa.array(texts, pa.large_string()), values if value_field is not None else None)
                texts, values = [], []
        if texts:
            yield Batch(pa.array(texts, pa.large_string()), values if value_field is not None else None)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
