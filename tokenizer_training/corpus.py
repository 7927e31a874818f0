"""Streaming document readers for tokenizer training.

`list_inputs` turns --input patterns into files: a directory is a clean corpus
(`DIR/clean/*.parquet`, contract 1, else `DIR/*.parquet`); a glob is matched one path
component at a time (`**` spans directories); local paths and the URIs pyarrow.fs
understands (gs://, s3://) work alike. `read_batches` then yields the documents in file
order, a batch at a time: Parquet by record batches and only the columns needed; plain
text (a line is a document), JSON lines and TSV/CSV with a header, compressed or not
(gz, bz2, zst, xz), line by line through transforms.reading. At most one batch is held in
memory, whatever the corpus size. A record that cannot be used is counted by reason.
"""
from __future__ import annotations

import fnmatch
import lzma
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import zstandard

from tokenizer_training.errors import TokenizeError
from transforms import reading
from transforms.token_shards import resolve

PARQUET = "parquet"
BATCH_ROWS = 8192
MAX_LINE_BYTES = 64 << 20
GLOB_CHARS = "*?["
# Drop reasons beyond transforms.reading's (which name the line-level ones).
NULL_TEXT = "null_text"
EMPTY_TEXT = "empty_text"
INVALID_UNICODE = "invalid_unicode"  # a JSON \ud800 escape: a lone surrogate no encoder accepts
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, pa.ArrowException)


@dataclass(frozen=True)
class CorpusFile:
    filesystem: pafs.FileSystem
    path: str  # inside the filesystem
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
    """The files the patterns name, sorted and without repeats; a pattern matching nothing is an error."""
    found: dict[str, CorpusFile] = {}
    for pattern in patterns:
        try:
            matched = _match(pattern)
        except TokenizeError:
            raise
        except READ_ERRORS as error:  # an unknown URI scheme, missing credentials, a permission error
            raise TokenizeError(f"cannot read --input {pattern!r}: {error}") from error
        if not matched:
            raise TokenizeError(f"--input {pattern!r} matches no file")
        found.update((file.name, file) for file in matched)
    return [found[name] for name in sorted(found)]


def _split_glob(pattern: str) -> tuple[str, list[str]]:
    """('gs://b/dir', ['*', '*.parquet']) for 'gs://b/dir/*/*.parquet': the literal base and the glob parts."""
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        if any(char in part for char in GLOB_CHARS):
            return "/".join(parts[:index]) or ("/" if pattern.startswith("/") else "."), parts[index:]
    return pattern, []


def _glob_match(parts: list[str], globs: list[str]) -> bool:
    if not globs:
        return not parts
    if globs[0] == "**":
        return any(_glob_match(parts[skip:], globs[1:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], globs[0]) and _glob_match(parts[1:], globs[1:])


def _match(pattern: str) -> list[CorpusFile]:
    base, globs = _split_glob(pattern)
    filesystem, inner = resolve(base)
    prefix = base[: base.index("://") + 3] if "://" in base and filesystem.type_name != "local" else ""
    info = filesystem.get_file_info(inner)
    if not globs:
        if info.type == pafs.FileType.File:
            return [_corpus_file(filesystem, info, prefix)]
        if info.type == pafs.FileType.Directory:
            return _corpus_directory(filesystem, inner, prefix, pattern)
        raise TokenizeError(f"--input {pattern!r}: no such file or directory")
    if info.type != pafs.FileType.Directory:
        raise TokenizeError(f"--input {pattern!r}: no such directory {base!r}")
    listing = filesystem.get_file_info(pafs.FileSelector(inner, recursive=len(globs) > 1))
    root = inner.rstrip("/") + "/"
    return [_corpus_file(filesystem, entry, prefix) for entry in listing
            if entry.type == pafs.FileType.File and _glob_match(entry.path[len(root):].split("/"), globs)]


def _corpus_directory(filesystem: pafs.FileSystem, inner: str, prefix: str, pattern: str) -> list[CorpusFile]:
    """A clean corpus directory: its clean/*.parquet shards, or the *.parquet files directly in it."""
    clean = posixpath.join(inner, "clean")
    if filesystem.get_file_info(clean).type == pafs.FileType.Directory:
        if filesystem.get_file_info(posixpath.join(inner, "stats.json")).type != pafs.FileType.File:
            raise TokenizeError(f"--input {pattern!r} is an unfinished pipeline.run output (clean/ without "
                                "stats.json, which pipeline.run writes last): rerun pipeline.run")
        inner = clean
    listing = filesystem.get_file_info(pafs.FileSelector(inner, recursive=False))
    shards = [_corpus_file(filesystem, entry, prefix) for entry in listing
              if entry.type == pafs.FileType.File and entry.base_name.lower().endswith(".parquet")]
    if not shards:
        raise TokenizeError(f"--input {pattern!r}: a directory must hold Parquet shards "
                            "(DIR/clean/*.parquet as pipeline.run writes, or DIR/*.parquet); none found")
    return shards


def _corpus_file(filesystem: pafs.FileSystem, info: pafs.FileInfo, prefix: str) -> CorpusFile:
    name = prefix + info.path
    return CorpusFile(filesystem, info.path, name, file_format(name), info.size or 0)


def parquet_rows(files: list[CorpusFile], text_field: str, value_field: str | None) -> int:
    """Rows in the Parquet files, from their footers, after checking they hold the columns asked for."""
    rows = 0
    for file in files:
        if file.format != PARQUET:
            continue
        try:
            with file.filesystem.open_input_file(file.path) as handle:
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
            file.filesystem.open_input_stream(file.path).close()
        except READ_ERRORS as error:
            raise TokenizeError(f"{file.name}: cannot open: {error}") from error


def read_batches(files: list[CorpusFile], text_field: str, value_field: str | None, drops: Counter,
                 batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """The usable documents of every file, in order, `batch_rows` at a time; drops are counted by reason."""
    for file in files:
        reader = _parquet_batches if file.format == PARQUET else _line_batches
        try:
            yield from reader(file, text_field, value_field, drops, batch_rows)
        except READ_ERRORS as error:
            raise TokenizeError(f"{file.name}: read failed: {error}") from error


def _parquet_batches(file: CorpusFile, text_field: str, value_field: str | None, drops: Counter,
                     batch_rows: int) -> Iterator[Batch]:
    columns = [text_field] + ([value_field] if value_field not in (None, text_field) else [])
    with file.filesystem.open_input_file(file.path) as handle:
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
    with file.filesystem.open_input_stream(file.path, compression=None) as raw:  # decompressed below
        lines = reading.iter_lines(reading.open_decompressed(raw, file.name), MAX_LINE_BYTES)
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
                drops[reading.LINE_TOO_LONG] += 1
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
