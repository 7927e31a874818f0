"""Streaming document readers for tokenizer training.

`list_inputs` turns --input patterns into files with `transforms.storage.list_inputs`
(a directory is a clean corpus: `DIR/clean/*.parquet`, else `DIR/*.parquet`). `read_batches` then yields the documents in file
order, a batch at a time: Parquet by record batches and only the columns needed; plain
text (a line is a document), JSON lines and TSV/CSV with a header, compressed or not
(gz, bz2, zst, xz), line by line through transforms.reading. At most one batch is held in
memory, whatever the corpus size. A record that cannot be used is counted by reason.
"""
from __future__ import annotations

import lzma
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from tokenizer_training.errors import TokenizeError
from transforms import reading, storage
from transforms.drop_reasons import EMPTY_TEXT, INVALID_UNICODE, LINE_TOO_LONG, NULL_TEXT

PARQUET = "parquet"
BATCH_ROWS = 8192
MAX_LINE_BYTES = 64 << 20
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)


@dataclass(frozen=True)
class CorpusFile:
    name: str  # as users write it: the URI, or the absolute local path
    format: str  # parquet, text, jsonl, tsv or csv
    size: int


@dataclass
class Batch:
    texts: pa.LargeStringArray  # no nulls, none empty or only whitespace
    values: list | None  # the --stratify-by field of each document, when one is asked for


def file_format(name: str) -> str:
    return PARQUET if name.lower().endswith(".parquet") else reading.detect_format(name)


def list_inputs(patterns: list[str]) -> list[CorpusFile]:
    """The files the patterns name (transforms.storage.list_inputs: a directory is a clean corpus)."""
    try:
        files = storage.list_inputs(patterns, directories="corpus")
    except storage.StorageError as error:
        raise TokenizeError(str(error)) from error
    return [CorpusFile(file.path, file_format(file.path), file.size) for file in files]


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
                 batch_rows: int = BATCH_ROWS, limit: int | None = None) -> Iterator[Batch]:
    """The usable documents of every file, in order, `batch_rows` at a time; drops are counted by reason.

    With a limit, only the first `limit` usable documents (--limit: the same ones in both passes).
    """
    remaining = limit
    for file in files:
        reader = _parquet_batches if file.format == PARQUET else _line_batches
        try:
            for batch in reader(file, text_field, value_field, drops, batch_rows):
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
                  batch_rows: int) -> Iterator[Batch]:
    fields = reading.FieldSpec(text_field=text_field, id_field=None,
                               keep_fields=((value_field, "str"),) if value_field is not None else ())
    with storage.open_input(file.name) as raw:
        lines = reading.iter_lines(storage.decompressed(raw, file.name), MAX_LINE_BYTES)
        columns = None
        if file.format in ("tsv", "csv"):
            header = next(lines, None)
            if header is None:
                return
            columns = reading.parse_header(header, file.format)
        texts: list[str] = []
        values: list = []
        for line in lines:
            if line is None:
                drops[LINE_TOO_LONG] += 1
                continue
            parsed = reading.parse_line(line, file.format, fields, columns)
            if isinstance(parsed, str):
                drops[parsed] += 1
                continue
            _, text, kept = parsed
            if text.isspace() or not text:
                drops[EMPTY_TEXT] += 1
                continue
            if file.format == "jsonl" and not _encodable(text):
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
