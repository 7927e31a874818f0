"""Beam composition of the corpus pipeline: thin DoFns over the pure functions.

Elements are batches (dicts of column lists, numpy arrays), never single comments: Beam's
Python SDK costs microseconds per element, and a comment is ~35 characters. Records are
routed to one of `num_partitions` partitions by a hash of their cleaned text; a partition
is the unit of exact dedup, of MinHash work and of one output file, so the output does not
depend on how many workers ran or how bundles were cut.
"""
from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import reading, storage
from transforms.clean import CleanOptions, clean_batch
from transforms.exact_dedup import dedup_exact

METRICS_NAMESPACE = "koforge"
LINES_PER_BATCH = 20_000


@dataclass(frozen=True)
class InputFile:
    path: str
    source_name: str  # shown in ids and rejected/ (path relative to the inputs' common prefix)
    fmt: str


@dataclass(frozen=True)
class NearDedupOptions:
    threshold: float
    num_perm: int
    ngram: int
    seed: int
    bands: int
    rows: int
    verify: bool


def count(counts: Counter, reason: str, n: int = 1) -> None:
    """Add to the stats.json tally and to the Beam counter of the same name."""
    if n:
        counts[reason] += n
        Metrics.counter(METRICS_NAMESPACE, reason).inc(n)


def count_all(counts: Counter, tally: Counter) -> None:
    """`count` for a whole batch's tally at once (one Beam counter update per reason)."""
    for reason, n in tally.items():
        count(counts, reason, n)


def text_partition(text: str, num_partitions: int) -> int:
    """Stable partition of a cleaned text (crc32 of its UTF-8 bytes); equal texts meet."""
    return zlib.crc32(text.encode("utf-8")) % num_partitions


def source_partition(source_name: str, num_partitions: int) -> int:
    return zlib.crc32(source_name.encode("utf-8")) % num_partitions


class ReadLineBatches(beam.DoFn):
    """A file (or, with a limit, all files in order) -> batches of raw lines."""

    COUNTS = "counts"

    def __init__(self, max_line_bytes: int, limit: int | None):
        self.max_line_bytes = max_line_bytes
        self.limit = limit

    def process(self, files: list[InputFile]):
        remaining = self.limit
        for input_file in files:
            for batch in self._read(input_file, remaining):
                if remaining is not None and isinstance(batch, dict):
                    remaining -= len(batch["lines"])
                yield batch
            if remaining is not None and remaining <= 0:
                return

    def _read(self, input_file: InputFile, limit: int | None):
        counts: Counter = Counter()
        header: list[str] | None = None
        lines: list[bytes | None] = []
        first_line = line_number = 0
        try:
            with FileSystems.open(input_file.path, compression_type=CompressionTypes.UNCOMPRESSED) as raw_stream:
                stream = storage.decompressed(raw_stream, input_file.path)
                for raw in reading.iter_lines(stream, self.max_line_bytes):
                    if input_file.fmt in ("tsv", "csv") and header is None and raw is not None:
                        header = reading.parse_header(raw, input_file.fmt)
                        line_number += 1
                        continue
                    line_number += 1
                    if not lines:
                        first_line = line_number
                    lines.append(raw)
                    if limit is not None and len(lines) >= limit:
                        break
                    if len(lines) >= LINES_PER_BATCH:
                        yield self._batch(input_file, header, first_line, lines)
                        if limit is not None:
                            limit -= len(lines)
                        lines = []
        except Exception as error:  # a corrupt or truncated file: keep what was read, report the rest
            if lines:
                yield self._batch(input_file, header, first_line, lines)
                lines = []
            yield {"file": input_file, "header": header, "first_line": line_number + 1, "lines": [],
                   "read_error": f"{type(error).__name__}: {error}"}
            count(counts, "files_with_read_errors")
        else:
            if line_number == 0:
                count(counts, "files_empty")
        if lines:
            yield self._batch(input_file, header, first_line, lines)
        count(counts, "files_read")
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)

    @staticmethod
    def _batch(input_file, header, first_line, lines):
        return {"file": input_file, "header": header, "first_line": first_line, "lines": lines, "read_error": None}


class ParseCleanFilter(beam.DoFn):
    """A batch of raw lines -> cleaned records per text partition; rejects and counts on the side."""

    REJECTED = "rejected"
    COUNTS = "counts"

    def __init__(self, fields: reading.FieldSpec, clean_options: CleanOptions, min_chars: int,
                 max_chars: int | None, num_partitions: int):
        self.fields = fields
        self.clean_options = clean_options
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.num_partitions = num_partitions

    def process(self, batch):
        started = time.perf_counter()
        input_file: InputFile = batch["file"]
        counts: Counter = Counter()
        rejects: list[dict] = []
        partitions: dict[int, dict[str, list]] = {}
        keep_names = [name for name, _ in self.fields.keep_fields]
        count(counts, "input_records", len(batch["lines"]))
        if batch["read_error"] is not None:
            count(counts, "input_records")
            count(counts, reading.READ_ERROR)
            rejects.append(reading.Reject(input_file.source_name, batch["first_line"], reading.READ_ERROR,
                                          batch["read_error"]).to_json())
        tally: Counter = Counter()  # per-record drops, reported once per batch
        parsed_records = []  # (line number, id or None, raw text, kept fields)
        for offset, raw in enumerate(batch["lines"]):
            line_number = batch["first_line"] + offset
            parsed = reading.LINE_TOO_LONG if raw is None else reading.parse_line(
                raw, input_file.fmt, self.fields, batch["header"])
            if isinstance(parsed, str):
                tally[parsed] += 1
                if parsed != reading.BLANK_LINE:
                    excerpt = "" if raw is None else reading.raw_excerpt(raw)
                    rejects.append(reading.Reject(input_file.source_name, line_number, parsed, excerpt).to_json())
            else:
                parsed_records.append((line_number, *parsed))
        cleaned = clean_batch([text for _, _, text, _ in parsed_records], self.clean_options)
        kept_rows = []
        for row, text in enumerate(cleaned):
            length = len(text)
            if not length:
                tally[reading.EMPTY_AFTER_CLEAN] += 1
            elif length < self.min_chars:
                tally[reading.TOO_SHORT] += 1
            elif self.max_chars is not None and length > self.max_chars:
                tally[reading.TOO_LONG] += 1
            else:
                kept_rows.append(row)
        texts = [cleaned[row] for row in kept_rows]
        records = [parsed_records[row] for row in kept_rows]
        columns = {
            "id": [record_id if record_id is not None else reading.derived_id(input_file.source_name, line_number)
                   for line_number, record_id, _, _ in records],
            "text": texts,
            "source": [input_file.source_name] * len(records),
            "line": [line_number for line_number, _, _, _ in records],
            **{name: [kept[name] for _, _, _, kept in records] for name in keep_names},
        }
        partition_of = np.array([text_partition(text, self.num_partitions) for text in texts], dtype=np.int64)
        for partition in np.unique(partition_of).tolist():
            rows = np.flatnonzero(partition_of == partition).tolist()
            partitions[partition] = {name: [values[row] for row in rows] for name, values in columns.items()}
        count_all(counts, tally)
        yield from partitions.items()
        if rejects:
            yield beam.pvalue.TaggedOutput(self.REJECTED,
                                           (source_partition(input_file.source_name, self.num_partitions), rejects))
        counts["seconds_parse_clean"] = time.perf_counter() - started
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)


class DedupPartition(beam.DoFn):
    """All records of one partition -> exact-deduplicated, id-sorted records (+ LSH band entries)."""

    BANDS = "bands"
    COUNTS = "counts"

    def __init__(self, exact: bool, near: NearDedupOptions | None, num_partitions: int):
        self.exact = exact
        self.near = near
        self.num_partitions = num_partitions

    def process(self, element):
        started = time.perf_counter()
        partition, batches = element
        counts: Counter = Counter()
        columns = merge_columns(list(batches))
        before = len(columns["id"])
        columns = dedup_exact(columns, drop_duplicates=self.exact)
        count(counts, reading.EXACT_DUPLICATE, before - len(columns["id"]))
        yield partition, columns
        if self.near is not None and columns["id"]:
            from transforms import minhash

            signatures = minhash.signatures(columns["text"], num_perm=self.near.num_perm, ngram=self.near.ngram,
                                            seed=self.near.seed)
            keys = minhash.band_keys(signatures, self.near.bands, self.near.rows)
            ids = id_bytes(columns["id"])
            texts = np.asarray(columns["text"], dtype=object) if self.near.verify else None
            target = keys % np.uint64(self.num_partitions)
            for band_partition in np.unique(target):
                rows, bands = np.nonzero(target == band_partition)
                entry = {"key": keys[rows, bands], "id": ids[rows],
                         "partition": np.full(len(rows), partition, dtype=np.int32),
                         "text": texts[rows] if texts is not None else None}
                yield beam.pvalue.TaggedOutput(self.BANDS, (int(band_partition), entry))
        counts["seconds_dedup_minhash"] = time.perf_counter() - started
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)


def id_bytes(ids: list[str]) -> np.ndarray:
    """Ids as a fixed-width bytes array: sorted and compared in C, shuffled as one buffer.

    UTF-8 byte order is code-point order, so the smallest bytes are the smallest id (ids
    cannot hold NUL, which the width padding would hide: the parser rejects them).
    """
    return np.array([record_id.encode("utf-8") for record_id in ids], dtype=np.bytes_)


def merge_columns(batches: list[dict[str, list]]) -> dict[str, list]:
    """Concatenate column batches (in any order: dedup sorts afterwards)."""
    merged = {name: [] for name in batches[0]}
    for batch in batches:
        for name, values in batch.items():
            merged[name].extend(values)
    return merged


def bucket_edges(element, near: NearDedupOptions):
    """Band entries of one key partition -> candidate edges: a star from each bucket's smallest id.

    Band keys already mix in the band index, so a bucket is one key. With --verify an edge
    is kept only when its pair's true Jaccard reaches the threshold.
    """
    from transforms.components import star_edges, verify_pairs

    _, entries = element
    entries = list(entries)
    keys = np.concatenate([e["key"] for e in entries])
    ids = np.concatenate([e["id"] for e in entries])
    partitions = np.concatenate([e["partition"] for e in entries])
    # Most buckets hold one text: find the shared ones with an integer sort, and number only
    # their ids (in sorted order, so the smallest number is the smallest id).
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    shared = np.zeros(len(keys), dtype=bool)
    shared[1:] = sorted_keys[1:] == sorted_keys[:-1]
    shared[:-1] |= shared[1:].copy()
    candidates = by_key[shared]
    _, first, nodes = np.unique(ids[candidates], return_index=True, return_inverse=True)
    edges = star_edges(keys[candidates], nodes)
    heads, members = candidates[first[edges[:, 0]]], candidates[first[edges[:, 1]]]
    if near.verify and len(members):
        texts = np.concatenate([e["text"] for e in entries])
        keep = verify_pairs(list(texts[heads]), list(texts[members]), near.ngram, near.threshold)
        heads, members = heads[keep], members[keep]
    if len(members):
        yield {"a": ids[heads], "a_partition": partitions[heads], "b": ids[members],
               "b_partition": partitions[members]}


def near_duplicate_components(edge_batches: list[dict]) -> dict:
    """All candidate edges -> ids to remove per partition, the clusters and their size histogram.

    One union-find over every candidate edge in a single worker (transforms.components
    documents the scale where that stops working). The survivor of a cluster is its
    smallest id: ids are numbered in sorted order before the components.
    """
    from transforms.components import cluster_size_histogram, connected_components

    if not edge_batches:
        return {"removed": {}, "clusters": None, "histogram": {}, "candidate_pairs": 0}
    a = np.concatenate([e["a"] for e in edge_batches])
    b = np.concatenate([e["b"] for e in edge_batches])
    partitions = np.concatenate([np.concatenate([e["a_partition"] for e in edge_batches]),
                                 np.concatenate([e["b_partition"] for e in edge_batches])])
    names, first, inverse = np.unique(np.concatenate([a, b]), return_index=True, return_inverse=True)
    edges = np.stack([inverse[:len(a)], inverse[len(a):]], axis=1)
    edges = np.unique(np.sort(edges, axis=1), axis=0)  # a pair found in several bands counts once
    nodes, representative = connected_components(edges)
    removed_nodes = nodes[representative != nodes]
    removed_partitions = partitions[first[removed_nodes]]
    return {
        "removed": {int(partition): names[removed_nodes[removed_partitions == partition]]
                    for partition in np.unique(removed_partitions)},
        "clusters": {"id": names[nodes], "cluster_id": names[representative], "kept": representative == nodes},
        "histogram": {str(size): n for size, n in cluster_size_histogram(representative).items()},
        "candidate_pairs": int(len(edges)),
    }


class WritePartition(beam.DoFn):
    """Write one partition's surviving records as `part-XXXXX-of-YYYYY.parquet` in the staging dir."""

    COUNTS = "counts"

    def __init__(self, staging_dir: str, num_partitions: int, keep_fields: tuple[tuple[str, str], ...]):
        self.staging_dir = staging_dir
        self.num_partitions = num_partitions
        self.keep_fields = keep_fields

    def process(self, element, removed_ids=None):
        started = time.perf_counter()
        partition, columns = element
        counts: Counter = Counter()
        removed = (removed_ids or {}).get(partition)
        if removed is not None:
            keep = np.flatnonzero(~np.isin(id_bytes(columns["id"]), removed))
            count(counts, reading.NEAR_DUPLICATE, len(columns["id"]) - len(keep))
            columns = {name: [values[i] for i in keep] for name, values in columns.items()}
        count(counts, "output_records", len(columns["id"]))
        arrow_types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
        schema = pa.schema([("id", pa.string()), ("text", pa.string())]
                           + [(name, arrow_types[kind]) for name, kind in self.keep_fields])
        table = pa.table({name: columns[name] for name in schema.names}, schema=schema)
        path = FileSystems.join(self.staging_dir, "clean",
                                f"part-{partition:05d}-of-{self.num_partitions:05d}.parquet")
        write_parquet(table, path)
        counts["seconds_write"] = time.perf_counter() - started
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)
        yield path


def write_parquet(table: pa.Table, path: str) -> None:
    """Deterministic Parquet bytes for a table (fixed options), through Beam's file systems."""
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle, compression="zstd", row_group_size=128 * 1024, write_statistics=True)


def write_jsonl(path: str, rows: list[dict]) -> None:
    with FileSystems.create(path) as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))


def write_rejected(element, staging_dir: str, num_partitions: int):
    partition, reject_lists = element
    rows = sorted((row for rejects in reject_lists for row in rejects), key=lambda r: (r["source"], r["line"]))
    path = FileSystems.join(staging_dir, "rejected", f"part-{partition:05d}-of-{num_partitions:05d}.jsonl")
    write_jsonl(path, rows)
    yield path


def write_clusters(components: dict, staging_dir: str):
    clusters = components["clusters"]
    if clusters is not None:
        path = FileSystems.join(staging_dir, "clusters", "clusters-00000-of-00001.parquet")
        as_strings = [pa.array(clusters[name], pa.binary()).cast(pa.string()) for name in ("id", "cluster_id")]
        write_parquet(pa.table({"id": as_strings[0], "cluster_id": as_strings[1], "kept": clusters["kept"]}), path)
        yield path


class SumCounts(beam.CombineFn):
    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, counts):
        accumulator.update(counts)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)
