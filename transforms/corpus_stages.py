"""The stages of pipeline.run as engine-free functions: one batch or partition in, outputs and a tally out.

read -> parse, clean, length filter -> (shuffle by text partition) -> exact dedup, MinHash
band entries -> (near-duplicate edges and components: transforms.components) -> write.

Each stage is a pure function of its input and one frozen `RunSettings`, and returns its
outputs with a `Counter` of counts (drop reasons from transforms.drop_reasons, file counts,
`seconds_<stage>` worker time). It knows no engine: pipeline/beam_run.py wraps each one in
a few lines of a Beam DoFn that turns the tally into Beam counters, and a Spark job can call
the same functions from `mapPartitions` / `mapInArrow`. Records travel as Arrow record
batches from parsing to writing (`RECORD_COLUMNS` plus the kept fields), their ids encoded
to UTF-8 once, when the batch is built.

A record's partition is a hash of its cleaned text (`partitions_of`): a partition is the unit
of exact dedup, of MinHash work and of one output file, so the output does not depend on
the engine, the number of workers or how the input was cut. docs/run.md describes the
output and the drop reasons, docs/near-dedup.md the near dedup, docs/architecture.md this
layout; measured costs are in BENCHMARKS.md.
"""
from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import drop_reasons, profile, ranges, reading, storage
from transforms.clean import CleanOptions, clean_batch
from transforms.survivors import KeepRule, survivor_keys

LINES_PER_BATCH = 20_000
ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
SORT_KEYS = [("id", "ascending"), ("source", "ascending"), ("line", "ascending")]  # the survivor order
PARQUET_OPTIONS = {"compression": "zstd", "row_group_size": 128 * 1024, "write_statistics": True}  # fixed: same bytes
CLUSTER_SIZE_COUNT = "near_dedup_cluster_size_"  # + size: clusters of that size, a count in counts.json
MAX_PREFIX = "max_"  # a count combined by max, not sum: the most one key / one bundle held (bench/bench_scale.py)


@dataclass(frozen=True)
class NearDedupSettings:
    """MinHash LSH near dedup: Jaccard threshold, signature size, shingles, bands x rows (docs/near-dedup.md)."""

    threshold: float
    num_perm: int
    ngram: int
    seed: int
    bands: int
    rows: int
    verify: bool
    rounds: int = 16  # large-star + small-star round pairs of the components (transforms.connected.rounds_for)


@dataclass(frozen=True)
class RunSettings:
    """Everything the stages of one pipeline.run need, resolved once from its arguments (pipeline/run.py)."""

    fields: reading.FieldSpec
    clean: CleanOptions
    min_chars: int
    max_chars: int | None
    max_line_bytes: int
    exact_dedup: bool
    near: NearDedupSettings | None
    num_partitions: int
    staging: str  # DIR/_temporary: the stages write here, pipeline.run publishes
    write_clusters: bool = False
    encoding: str = reading.DEFAULT_ENCODING  # --encoding, Python's name (utf-8, cp949, euc_kr)
    keep: KeepRule = KeepRule()  # which record of a duplicate group survives (--keep)
    read_range_bytes: int = ranges.READ_RANGE_BYTES  # --read-range-bytes: the ranges a large file is read in

    def output_schema(self) -> pa.Schema:
        """The clean corpus's columns: id, text and the --keep-fields (docs/formats.md)."""
        return pa.schema([("id", pa.string()), ("text", pa.string())]
                         + [(name, ARROW_TYPES[kind]) for name, kind in self.fields.keep_fields])

    def record_schema(self) -> pa.Schema:
        """Records between the stages: the output columns plus where each came from (the tie-breakers)."""
        return self.output_schema().append(pa.field("source", pa.dictionary(pa.int32(), pa.string()))).append(
            pa.field("line", pa.int64()))


@dataclass(frozen=True)
class SourceFile:
    """One input file: its path, the name ids and rejected/ show (relative to the inputs' common prefix), its format
    and, for tsv/csv, its quoting (--quoting, or what the preflight found for the file: transforms.preflight)."""

    path: str
    name: str
    fmt: str
    quoting: str = "auto"
    size: int | None = None  # bytes as stored, when known: an uncompressed file is then read in ranges (read_range)


@dataclass
class LineBatch:
    """Consecutive records of one file (reading.RecordReader: None is one over --max-line-bytes), numbered from
    `first_line` (a record's line, or a JSON array element's index), or by `line_numbers` where records may span
    lines (tsv/csv).

    The last batch of a file carries the file's counts (files_read, files_empty,
    files_with_read_errors, records_read_literally, records_spanning_lines) and, when the file
    could not be read to its end, the error, at line `end_line`.
    """

    source: SourceFile
    header: list[str] | None
    first_line: int
    lines: list
    read_error: str | None = None
    counts: Counter = field(default_factory=Counter)
    line_numbers: list[int] | None = None
    end_line: int | None = None

    def line_of(self, offset: int) -> int:
        return self.first_line + offset if self.line_numbers is None else self.line_numbers[offset]


def partitions_of(keys: Sequence[str], num_partitions: int) -> np.ndarray:
    """The partition of each cleaned text (or source file's rejects): crc32 of its UTF-8 bytes, mod n (int64).

    crc32 because it is fixed forever and the same in every process (Python's `hash()` is
    salted per process), and cheap. It decides which output file each record lands in: a
    different hash would change the output bytes of every run, so it stays. One list
    comprehension for a whole batch: a Python call per text cost more than the hash.
    """
    crc32 = zlib.crc32
    return np.array([crc32(key.encode("utf-8")) for key in keys], np.int64) % num_partitions


def partition_of(key: str, num_partitions: int) -> int:
    """`partitions_of` one key."""
    return int(partitions_of([key], num_partitions)[0])


# ---------------------------------------------------------------- read


def read_line_batches(source: SourceFile, settings: RunSettings, limit: int | None = None) -> Iterator[LineBatch]:
    """A file's records in batches of LINES_PER_BATCH, read through transforms.storage (any pyarrow file system).

    Records come from reading.RecordReader: lines; RFC 4180 tsv/csv records, whose header
    row is kept apart and which may span lines (numbered by their first line); the elements
    of a JSON array. A file that fails midway (corrupt or truncated compression) keeps what
    was read before the failure and reports the rest as the last batch's `read_error`. With
    `limit`, at most that many records are returned.
    """
    @contextlib.contextmanager
    def whole_file():
        with storage.open_input(source.path) as raw:
            yield storage.decompressed(raw, source.path)

    return _record_batches(source, whole_file, settings, limit)


def _record_batches(source: SourceFile, open_stream, settings: RunSettings, limit: int | None = None,
                    first_line: int = 1, header: list[str] | None = None, counts_file: bool = True
                    ) -> Iterator[LineBatch]:
    """The batches of the records in the binary stream `open_stream()` (a context manager) gives, numbered from
    `first_line`, with a tsv/csv `header` read elsewhere; `counts_file`: count files_read/files_empty here."""
    counts: Counter = Counter()
    lines, numbers, batch_first, reader, error = [], [], 0, None, None
    numbered = source.fmt in reading.TABLE_FORMATS
    try:
        with open_stream() as stream:
            reader = reading.RecordReader(stream, source.fmt, settings.max_line_bytes, source.quoting,
                                          settings.encoding, first_number=first_line, header=header)
            for number, line in reader:
                if not lines:
                    batch_first = number
                lines.append(line)
                if numbered:
                    numbers.append(number)
                if limit is not None and len(lines) >= limit:
                    break
                if len(lines) >= LINES_PER_BATCH:
                    yield LineBatch(source, reader.header, batch_first, lines,
                                    line_numbers=numbers if numbered else None)
                    limit = None if limit is None else limit - len(lines)
                    lines, numbers = [], []
    except Exception as failure:  # noqa: BLE001 - any failure of a file is its read_error, counted
        error = f"{type(failure).__name__}: {failure}"
        counts["files_with_read_errors"] += 1
    else:
        counts["files_empty"] += counts_file and reader.next_number == 1
    counts["files_read"] += counts_file
    next_number = reader.next_number if reader is not None else first_line
    if reader is not None:
        counts.update(reader.counts)
    yield LineBatch(source, reader.header if reader is not None else header, batch_first if lines else next_number,
                    lines, error, +counts, line_numbers=numbers if numbered else None,
                    end_line=next_number if numbered else None)


def read_files(sources: Sequence[SourceFile], settings: RunSettings, limit: int | None = None
               ) -> Iterator[LineBatch]:
    """`read_line_batches` of several files in order, the limit counting over all of them."""
    remaining = limit
    for source in sources:
        for batch in read_line_batches(source, settings, remaining):
            remaining = None if remaining is None else remaining - len(batch.lines)
            yield batch
        if remaining is not None and remaining <= 0:
            return


# ---------------------------------------------------------------- read in byte ranges
#
# The engine-free API of split reading, for every engine (Beam: pipeline/beam_run.py):
#   ranges = plan_ranges(sources, settings.read_range_bytes)        # in the driver: file sizes only
#   counted = [(r, count_range_lines(r)) for r in ranges]           # in parallel, one pass of b"\n" counts
#   numbered = number_ranges(counted)                               # per file (group by r.source.path)
#   batches = [b for r in numbered for b in read_range(r, settings)]  # in parallel: LineBatches as read_files'
# The records, their FILE:LINE ids and every count equal those of one reader per file (read_files).


@dataclass(frozen=True)
class FileRange:
    """A part of one input file that one worker reads: bytes [start, end) of it (transforms.ranges), or the
    whole file (`end` None: compressed, a .json file, quoted tsv/csv, or small); its lines numbered from
    `first_line` (number_ranges). `index` is its place among the file's ranges."""

    source: SourceFile
    index: int = 0
    start: int = 0
    end: int | None = None
    first_line: int = 1


def splittable(source: SourceFile) -> bool:
    """Whether a file can be read in byte ranges: uncompressed, of known size, one record per line (text,
    JSON lines, tsv/csv read with --quoting none; a quoted field may hold a line break, a .json file may be
    one array)."""
    return (source.size is not None and not storage.is_compressed(source.path)
            and (source.fmt in ("text", "jsonl") or (source.fmt in reading.TABLE_FORMATS and source.quoting == "none")))


def plan_ranges(sources: Sequence[SourceFile], range_bytes: int) -> list[FileRange]:
    """The ranges of every input file, in file order: about `range_bytes` each for a splittable file, else one."""
    planned = []
    for source in sources:
        if not splittable(source) or source.size <= range_bytes:
            planned.append(FileRange(source))
            continue
        planned.extend(FileRange(source, index, start, end)
                       for index, (start, end) in enumerate(ranges.cut(source.size, range_bytes)))
    return planned


def count_range_lines(file_range: FileRange) -> int:
    """How many lines start in a range (0 for a whole file: nothing follows it); one read of its bytes."""
    if file_range.end is None:
        return 0
    with storage.open_random_access(file_range.source.path) as handle:
        return ranges.count_lines(handle, file_range.start, file_range.end)


def number_ranges(counted: Iterable[tuple[FileRange, int]]) -> list[FileRange]:
    """Ranges with their first line numbers: 1 + the lines of the same file's earlier ranges (prefix sums)."""
    numbered, next_line = [], {}
    for file_range, lines in sorted(counted, key=lambda item: (item[0].source.path, item[0].index)):
        first = next_line.get(file_range.source.path, 1)
        numbered.append(replace(file_range, first_line=first))
        next_line[file_range.source.path] = first + lines
    return numbered


def read_range(file_range: FileRange, settings: RunSettings) -> Iterator[LineBatch]:
    """A range's records in LineBatches, numbered from its first line (`read_line_batches` for a whole file).

    Only the first range counts the file (files_read, files_empty); a range that fails reports
    its own read_error (and counts files_with_read_errors). A tsv/csv range after the first
    reads the file's header row first.
    """
    source = file_range.source
    if file_range.end is None:
        yield from read_line_batches(source, settings)
        return

    @contextlib.contextmanager
    def range_stream():
        with storage.open_random_access(source.path) as handle:
            yield ranges.RangeStream(handle, file_range.start, file_range.end)

    header = _table_header(source, settings) if source.fmt in reading.TABLE_FORMATS and file_range.index else None
    yield from _record_batches(source, range_stream, settings, first_line=file_range.first_line, header=header,
                               counts_file=file_range.index == 0)


def _table_header(source: SourceFile, settings: RunSettings) -> list[str] | None:
    """The header row of a tsv/csv file, read from its start (None for a file without one)."""
    with storage.open_input(source.path) as raw:
        reader = reading.RecordReader(raw, source.fmt, settings.max_line_bytes, source.quoting, settings.encoding)
        for _ in reader:
            if reader.header is not None:
                break
        return reader.header


# ---------------------------------------------------------------- parse, clean, filter


def parse_clean_filter(batch: LineBatch, settings: RunSettings
                       ) -> tuple[dict[int, pa.RecordBatch], dict[int, list[dict]], Counter]:
    """Raw lines -> ({text partition: records}, {partition: rejected rows}, tally).

    Every line becomes a record or one count of a drop reason; lines that are not records
    (except blank ones) also become rejected rows (source, line, reason, raw excerpt).
    """
    started = time.perf_counter()
    tally = Counter(batch.counts)
    tally["input_records"] += len(batch.lines)
    rejects: list[dict] = []
    if batch.read_error is not None:
        tally["input_records"] += 1
        tally[drop_reasons.READ_ERROR] += 1
        end_line = batch.end_line if batch.end_line is not None else batch.first_line + len(batch.lines)
        rejects.append(reading.Reject(batch.source.name, end_line, drop_reasons.READ_ERROR,
                                      batch.read_error).to_json())
    line_numbers, ids, texts, kept = _parse_lines(batch, settings, tally, rejects)
    sampled = [text for line, text in zip(line_numbers, texts) if line % profile.CLEAN_SAMPLE_EVERY == 0]
    tally.update(profile.clean_change_tally(sampled, settings.clean, every=1))  # by line: the same however read
    texts = clean_batch(texts, settings.clean)
    tally.update(profile.length_tally(texts, profile.LENGTH_BEFORE))
    rows = _length_filter(texts, settings, tally)
    texts = [texts[row] for row in rows]
    tally.update(profile.length_tally(texts, profile.LENGTH_AFTER))
    records = _record_batch(batch.source.name, [line_numbers[row] for row in rows], [ids[row] for row in rows],
                            texts, [kept[row] for row in rows], settings)
    partitions = _split_by_text(records, texts, settings.num_partitions)
    rejected = {partition_of(batch.source.name, settings.num_partitions): rejects} if rejects else {}
    tally["seconds_parse_clean"] += time.perf_counter() - started
    return partitions, rejected, tally


def _parse_lines(batch: LineBatch, settings: RunSettings, tally: Counter, rejects: list[dict]):
    """(line numbers, ids or None, raw texts, kept fields) of the records that parse; the others counted."""
    offsets, records = [], []  # per record: its offset in the batch, (id, text, kept fields)
    parse, fields, source, encoding = reading.parse_line, settings.fields, batch.source, settings.encoding
    fmt, header, quoting = source.fmt, batch.header, source.quoting
    for offset, raw in enumerate(batch.lines):
        parsed = drop_reasons.LINE_TOO_LONG if raw is None else parse(raw, fmt, fields, header, encoding, quoting)
        if parsed.__class__ is str:  # a drop reason
            tally[parsed] += 1
            if parsed != drop_reasons.BLANK_LINE:
                rejects.append(reading.Reject(source.name, batch.line_of(offset), parsed,
                                              "" if raw is None else reading.raw_excerpt(raw)).to_json())
            continue
        offsets.append(offset)
        records.append(parsed)
    if batch.line_numbers is None:
        line_numbers = [batch.first_line + offset for offset in offsets]
    else:
        line_numbers = [batch.line_numbers[offset] for offset in offsets]
    ids, texts, kept = (list(column) for column in zip(*records)) if records else ([], [], [])
    return line_numbers, ids, texts, kept


def _length_filter(texts: list[str], settings: RunSettings, tally: Counter) -> list[int]:
    """Rows whose cleaned text is non-empty and within --min-chars..--max-chars; the others counted."""
    rows = []
    for row, text in enumerate(texts):
        length = len(text)
        if not length:
            tally[drop_reasons.EMPTY_AFTER_CLEAN] += 1
        elif length < settings.min_chars:
            tally[drop_reasons.TOO_SHORT] += 1
        elif settings.max_chars is not None and length > settings.max_chars:
            tally[drop_reasons.TOO_LONG] += 1
        else:
            rows.append(row)
    return rows


def _record_batch(source_name: str, line_numbers: list[int], ids: list[str | None], texts: list[str],
                  kept: list[dict], settings: RunSettings) -> pa.RecordBatch:
    """The kept records as one Arrow batch of `settings.record_schema()`; a record without an id gets FILE:LINE."""
    ids = [record_id if record_id is not None else reading.derived_id(source_name, line)
           for record_id, line in zip(ids, line_numbers)]
    columns = [pa.array(ids, pa.string()), pa.array(texts, pa.string())]
    columns += [pa.array([fields[name] for fields in kept], ARROW_TYPES[kind])
                for name, kind in settings.fields.keep_fields]
    columns += [pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(ids), np.int32)), pa.array([source_name])),
                pa.array(line_numbers, pa.int64())]
    return pa.RecordBatch.from_arrays(columns, schema=settings.record_schema())


def _split_by_text(records: pa.RecordBatch, texts: list[str], num_partitions: int) -> dict[int, pa.RecordBatch]:
    """{partition: its records}; each part is a compact copy (a slice would carry the whole batch's buffers)."""
    partitions = partitions_of(texts, num_partitions)
    return {int(partition): records.take(pa.array(np.flatnonzero(partitions == partition)))
            for partition in np.unique(partitions)}


# ---------------------------------------------------------------- dedup


def dedup_partition(partition: int, batches: Iterable[pa.RecordBatch], settings: RunSettings
                    ) -> tuple[pa.Table, dict[int, dict], Counter]:
    """All records of one text partition -> (records sorted by id, {band partition: band entries}, tally).

    Records are sorted by (id, source, line), so of equal texts the smallest id survives
    exact dedup whatever the arrival order (or, under another --keep rule, the first by
    (survivor key, id, source, line); transforms.survivors); the table stays id-sorted.
    With near dedup on, each record's MinHash band keys go out as band entries (see
    `band_entries`); which records near dedup removes is decided later, over all partitions
    (transforms.near_pairs, transforms.components).
    """
    started = time.perf_counter()
    tally: Counter = Counter()
    table = pa.Table.from_batches(list(batches), schema=settings.record_schema())
    tally["max_dedup_partition_records"] = table.num_rows
    table = table.set_column(table.schema.get_field_index("source"), "source",
                             table.column("source").cast(pa.string()))
    table = table.take(pc.sort_indices(table, sort_keys=SORT_KEYS)).combine_chunks()
    if settings.exact_dedup:
        before = table.num_rows
        keys = survivor_keys(table, settings.keep)
        if keys is None:
            table = table.take(pa.array(first_of_each(table.column("text"))))
        else:  # the first of each text in survivor order (stable: ties stay in id order), then id order again
            by_survivor = np.argsort(keys, kind="stable")
            firsts = by_survivor[first_of_each(table.column("text").take(pa.array(by_survivor)))]
            table = table.take(pa.array(np.sort(firsts)))
        tally[drop_reasons.EXACT_DUPLICATE] += before - table.num_rows
    table = table.select(settings.output_schema().names)
    bands = {}
    if settings.near is not None and table.num_rows:
        bands = band_entries(table, partition, settings.near, settings.num_partitions, settings.keep)
    tally["seconds_dedup_minhash"] += time.perf_counter() - started
    return table, bands, tally


def first_of_each(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Rows (ascending) holding the first occurrence of each distinct value.

    Dictionary encoding numbers the values in order of first appearance, so a row is a
    first occurrence exactly when its code exceeds every earlier code.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    codes = pc.dictionary_encode(values).indices.to_numpy()
    if not len(codes):
        return np.zeros(0, np.int64)
    seen_before = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]]))
    return np.flatnonzero(codes > seen_before)


def fixed_width_ids(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """UTF-8 strings as a numpy fixed-width bytes array, straight from the Arrow buffers (no re-encoding).

    Sorted and compared in C, shuffled as one buffer. UTF-8 byte order is code-point order,
    so the smallest bytes are the smallest id; ids hold no NUL (the parser rejects them),
    which the width padding would hide.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    from transforms.hashing import utf8_buffers

    offsets, data = utf8_buffers(ids.cast(pa.large_string()))
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), 1)
    matrix = np.zeros((len(lengths), width), np.uint8)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    matrix[rows, np.arange(len(data)) - np.repeat(offsets[:-1], lengths)] = data
    return matrix.view(f"S{width}").ravel()


def band_entries(table: pa.Table, partition: int, near: NearDedupSettings, num_partitions: int,
                 keep: KeepRule = KeepRule()) -> dict[int, dict]:
    """{band partition: entries}: each record's LSH band keys with where the record is (never its text).

    A bucket is one band key; entries go to the partition `key % num_partitions`, so all
    entries of a bucket meet there (transforms.near_pairs.bucket_pairs, or
    transforms.components.bucket_edges with --no-verify). Entries: "key" (uint64), "row"
    (int32: the record's row in this id-sorted table) and "partition" (this text partition,
    one int for all); verification fetches texts by (partition, row). Without verification
    they also carry "id" (fixed-width bytes) and a --keep rule's survivor key ("order").
    """
    from transforms import minhash

    # [band, row]; the texts are shingled (and turned into Python strings) a block at a time
    keys = minhash.text_band_keys(table.column("text"), near.num_perm, near.ngram, near.seed, near.bands, near.rows)
    unverified = {} if near.verify else {"id": fixed_width_ids(table.column("id")),
                                         "order": survivor_keys(table, keep)}
    # Entries in (row, band) order, split by band partition with one stable (radix) sort of the targets.
    target = (keys.T % np.uint64(num_partitions)).astype(np.uint16 if num_partitions <= 1 << 16 else np.int64)
    by_target = np.argsort(target.ravel(), kind="stable")
    bounds = np.searchsorted(target.ravel()[by_target], np.arange(num_partitions + 1))
    entries = {}
    for band_partition in np.flatnonzero(np.diff(bounds)):
        picked = by_target[bounds[band_partition]:bounds[band_partition + 1]]
        rows, bands = np.divmod(picked, near.bands)
        entries[int(band_partition)] = {"key": keys[bands, rows], "row": rows.astype(np.int32), "partition": partition,
                                        **{name: values[rows] for name, values in unverified.items()
                                           if values is not None}}
    return entries


# ---------------------------------------------------------------- write


def write_partition(partition: int, table: pa.Table, removed_ids: np.ndarray | None, settings: RunSettings
                    ) -> tuple[str, Counter]:
    """Write one partition's survivors as `clean/part-XXXXX-of-YYYYY.parquet` in the staging dir: (path, tally).

    `removed_ids` are the partition's ids that near dedup removes (fixed-width bytes), or
    None when near dedup is off or removed none of them.
    """
    started = time.perf_counter()
    tally: Counter = Counter()
    if removed_ids is not None:
        keep = ~np.isin(fixed_width_ids(table.column("id")), removed_ids)
        tally[drop_reasons.NEAR_DUPLICATE] += int(table.num_rows - keep.sum())
        table = table.filter(pa.array(keep))
    tally["output_records"] += table.num_rows
    path = storage.join(settings.staging, "clean", part_name(partition, settings.num_partitions, "parquet"))
    write_parquet(table.combine_chunks(), path)
    tally["seconds_write"] += time.perf_counter() - started
    return path, tally


def write_rejected(partition: int, reject_lists: Iterable[list[dict]], settings: RunSettings) -> str:
    """Write one partition's rejected rows, sorted by (source, line), as `rejected/part-*.jsonl`."""
    rows = sorted((row for rejects in reject_lists for row in rejects), key=lambda r: (r["source"], r["line"]))
    path = storage.join(settings.staging, "rejected", part_name(partition, settings.num_partitions, "jsonl"))
    with storage.open_output(path) as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    return path


def write_clusters(partition: int, clusters: dict, settings: RunSettings) -> str:
    """Write one text partition's near-duplicate cluster rows (id, cluster_id, kept; by id) as
    `clusters/part-XXXXX-of-YYYYY.parquet`: every record of the partition that is in a cluster."""
    path = storage.join(settings.staging, "clusters", part_name(partition, settings.num_partitions, "parquet"))
    as_strings = [pa.array(clusters[name], pa.binary()).cast(pa.string()) for name in ("id", "cluster_id")]
    write_parquet(pa.table({"id": as_strings[0], "cluster_id": as_strings[1], "kept": clusters["kept"]}), path)
    return path


def part_name(partition: int, num_partitions: int, suffix: str) -> str:
    return f"part-{partition:05d}-of-{num_partitions:05d}.{suffix}"


def write_parquet(table: pa.Table, path: str) -> None:
    """Deterministic Parquet bytes for a table (fixed options), through transforms.storage."""
    with storage.open_output(path) as handle:
        pq.write_table(table, handle, **PARQUET_OPTIONS)


# ---------------------------------------------------------------- shared by the engines' adapters


def add_counts(total: Counter, counts: dict) -> Counter:
    """Adds a tally into a total: sums, except `max_*` counts, which keep the largest value."""
    for name, value in counts.items():
        if name.startswith(MAX_PREFIX):
            total[name] = max(total.get(name, 0), value)
        else:
            total[name] += value
    return total


def write_joined(partition: int, table, settings: RunSettings) -> tuple[str | None, Counter]:
    """One partition's records (with near dedup: joined with its cluster rows) -> its written file, tally.

    `table` is the records' table, or with near dedup {"records": [its table] or [],
    "clusters": [its rows] or []}; (None, no tally) when the partition has no records.
    The Beam and Spark graphs both write through it.
    """
    removed, cluster_tally = None, Counter()
    if isinstance(table, dict):
        tables, clusters = list(table["records"]), list(table["clusters"])
        if not tables:
            return None, Counter()
        table = tables[0]
        if clusters:
            rows = clusters[0]
            removed = rows["id"][~rows["kept"]]
            cluster_tally.update({f"{CLUSTER_SIZE_COUNT}{size}": n for size, n in rows["sizes"].items()})
            cluster_tally["max_write_removed_ids"] = len(removed)
            if settings.write_clusters:
                write_clusters(partition, rows, settings)
    path, tally = write_partition(partition, table, removed, settings)
    tally.update(cluster_tally)
    tally["max_write_records"] = table.num_rows
    return path, tally


def columns_to_fetch(element, settings: RunSettings):
    """(partition, records) with only what near-dedup verification fetches: id, text and a --keep rule's field."""
    partition, table = element
    return partition, table.select(["id", "text"] + ([settings.keep.field] if settings.keep.field else []))
