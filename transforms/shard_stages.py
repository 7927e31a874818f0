"""The engine-free stages of pipeline.shard: plan, tokenize, bucket, pack and write token shards.

Each stage is a plain function of one unit (a Parquet row group) or one shard bucket and the
run's frozen `ShardSettings`; a stage that counts returns a tally (a Counter) beside its
outputs. The Beam graph (pipeline/beam_shard.py) is a few lines per stage that call these and
turn tallies into Beam counters; another engine (Spark's mapPartitions / mapInArrow) calls
the very same functions, so every engine writes the same bytes. Nothing here knows an engine.

    plan_units                  driver: Parquet footers -> one ReadUnit per row group
    read_unit, tokenize_unit    per unit -> {split: DocBatch}, tally
    split_slots                 per unit and split -> slots, summed per split by the engine
    assign_buckets              per unit and split -> [(bucket, DocBatch)], grouped by the engine
    pack_bucket, write_bucket   per (split, bucket) -> one staged shard and its record, tally
    write_index, split_summaries   driver: records -> manifest splits and the files to publish

Why this order, and what makes the output independent of workers and bundles:
docs/shard.md#order-and-determinism. The files: docs/formats.md (koforge-token-shards/1).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import storage
from transforms import token_shards as ts
from transforms.hashing import text_hashes
from transforms.packing import PACKERS, bucket_count, encode_texts, is_validation, shard_buckets, take_documents
from transforms.special_tokens import TOKENIZER_JSON

DEFAULT_SHARD_TOKENS = 50_000_000  # 100 MB per shard at uint16
INDEX_NAME = "index.json"  # in the staging directory: the record of every bucket written


class ShardInputError(ValueError):
    """Bad input or options, found before any work starts."""


@dataclass(frozen=True)
class ShardSettings:
    """Every option of a run, resolved, and what preflight learns from the tokenizer.

    Fixed before work starts and shipped to every worker with each stage, so it holds only
    paths and numbers. `dtype` and `special_tokens` come from the tokenizer (pipeline.shard's
    preflight fills them in with `dataclasses.replace`).
    """

    inputs: tuple[str, ...]
    tokenizer: str
    output: str
    seq_len: int = 128
    packing: str = "concat"
    validation_fraction: float = 0.01
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    seed: int = 0
    text_field: str = "text"
    limit: int | None = None
    dtype: str = "uint16"
    special_tokens: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.seq_len < 3:
            raise ShardInputError(f"--seq-len must be at least 3 ([CLS], one id, [SEP]), got {self.seq_len}")
        if not 0 <= self.validation_fraction < 1:
            raise ShardInputError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0 <= self.seed < 2**64:
            raise ShardInputError(f"--seed must be in [0, 2**64), got {self.seed}")
        if self.shard_tokens < self.seq_len:
            raise ShardInputError(f"--shard-tokens ({self.shard_tokens}) must be at least --seq-len ({self.seq_len})")
        if self.packing not in PACKERS:
            raise ShardInputError(f"--packing must be one of {', '.join(sorted(PACKERS))}, got {self.packing!r}")

    @property
    def staging(self) -> str:
        """Where shards and the tokenizer copy are written before they are published (storage.staging_dir)."""
        return storage.staging_dir(self.output)

    @property
    def staged_tokenizer(self) -> str:
        return storage.join(self.staging, ts.TOKENIZER_SUBDIR)

    @property
    def staged_tokenizer_json(self) -> str:
        """The workers read the copy that is published beside the shards, never the source directory."""
        return storage.join(self.staged_tokenizer, TOKENIZER_JSON)

    def options(self, input_files: list[str]) -> dict:
        """manifest.json's `options`: the resolved value of every option that shapes the shards."""
        return {"input": list(self.inputs), "input_files": input_files, "tokenizer": self.tokenizer,
                "seq_len": self.seq_len, "packing": self.packing, "validation_fraction": self.validation_fraction,
                "shard_tokens": self.shard_tokens, "seed": self.seed, "text_field": self.text_field,
                "limit": self.limit}


@dataclass(frozen=True)
class ReadUnit:
    """One row group of one Parquet file (its first `rows` rows with --limit): the unit of work."""

    path: str
    row_group: int
    rows: int | None = None


@dataclass
class DocBatch:
    """Documents as flat arrays: ids (Arrow strings), bucket hashes, token ids and one length each."""

    ids: pa.Array
    bucket_hashes: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray

    def take(self, order: np.ndarray) -> DocBatch:
        tokens, lengths = take_documents(self.tokens, self.lengths, order)
        return DocBatch(self.ids.take(pa.array(order)), self.bucket_hashes[order], tokens, lengths)

    @staticmethod
    def concat(batches: list[DocBatch]) -> DocBatch:
        return DocBatch(
            pa.concat_arrays([b.ids for b in batches]),
            np.concatenate([b.bucket_hashes for b in batches]),
            np.concatenate([b.tokens for b in batches]),
            np.concatenate([b.lengths for b in batches]),
        )

    def sorted_by_id(self) -> DocBatch:
        """Sorted by id; the token bytes break ties, so even duplicate ids give one order.

        Ids are nearly always unique: one sort by id, and the two-key sort only when it left ties.
        """
        order = pc.sort_indices(self.ids)
        ordered_ids = self.ids.take(order)
        if len(ordered_ids) > 1 and pc.any(pc.equal(ordered_ids[1:], ordered_ids[:-1])).as_py():
            offsets = np.concatenate(([0], np.cumsum(self.lengths))).astype(np.int64) * self.tokens.itemsize
            token_bytes = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), len(self.lengths), [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(self.tokens))]
            )
            order = pc.sort_indices(
                pa.table({"id": self.ids, "tokens": token_bytes}), sort_keys=[("id", "ascending"), ("tokens", "ascending")]
            )
        return self.take(order.to_numpy())


# ---------------------------------------------------------------- driver: plan the work


def _check_schema(path: str, schema: pa.Schema, text_field: str) -> None:
    for column in ("id", text_field):
        if column not in schema.names:
            raise ShardInputError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)})")
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ShardInputError(f"{path}: column {column!r} is {kind}, not a string")


def plan_units(paths: list[str], text_field: str, limit: int | None = None) -> tuple[list[ReadUnit], int]:
    """Read the files' footers: check the columns, refuse null ids, list the row groups; return (units, rows).

    With `limit`, only the first `limit` rows in file and row order (the last unit cut short),
    so a trial run reads the same documents every time.
    """
    units: list[ReadUnit] = []
    rows = 0
    for path in paths:
        if limit is not None and rows >= limit:
            break
        try:
            with storage.open_random_access(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
            schema = metadata.schema.to_arrow_schema()
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
            raise ShardInputError(f"{path}: not a readable Parquet file: {err}") from err
        _check_schema(path, schema, text_field)
        id_index = schema.names.index("id")
        for group in range(metadata.num_row_groups):
            if limit is not None and rows >= limit:
                break
            statistics = metadata.row_group(group).column(id_index).statistics
            if statistics is not None and statistics.has_null_count and statistics.null_count:
                raise ShardInputError(f"{path}: row group {group} has {statistics.null_count} rows with a null id")
            group_rows = metadata.row_group(group).num_rows
            taken = group_rows if limit is None else min(group_rows, limit - rows)
            units.append(ReadUnit(path, group, None if taken == group_rows else taken))
            rows += taken
    return units, rows


def load_tokenizer(tokenizer_json: str):
    """The `tokenizers.Tokenizer` as packing needs it.

    Truncation and padding off: a saved max_length must never cut a document. Special tokens
    written in the text ("[SEP]" in a comment) are tokenized as text, so no document can
    inject control ids into the packed stream.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(storage.read_bytes(tokenizer_json).decode("utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = True
    return tokenizer


# ---------------------------------------------------------------- per unit


def read_unit(unit: ReadUnit, text_field: str) -> pa.Table:
    """The unit's `id` and text columns."""
    with storage.open_random_access(unit.path) as handle:
        table = pq.ParquetFile(handle).read_row_group(unit.row_group, columns=["id", text_field])
    return table if unit.rows is None else table.slice(0, unit.rows)


def tokenize_unit(table: pa.Table, settings: ShardSettings, tokenizer) -> tuple[dict[str, DocBatch], Counter]:
    """Tokenize a table of documents and split it train/validation by a hash of (seed, id).

    Returns the non-empty splits' DocBatches, tokens narrowed to the shard dtype here (half
    the bytes through the shuffle for vocabularies up to 65,536), and the tally
    documents_read, documents_empty, documents_validation, tokens_read.
    """
    ids = table.column("id").combine_chunks().cast(pa.string())
    if ids.null_count:
        raise ValueError(f"{ids.null_count} documents with a null id")
    texts = pc.fill_null(table.column(settings.text_field).combine_chunks(), "").to_pylist()
    tokens, lengths = encode_texts(tokenizer, texts)
    hashes = text_hashes(ids, settings.seed)  # column 0 decides the split, column 1 the bucket
    validation = is_validation(hashes[:, 0], settings.validation_fraction)
    batch = DocBatch(ids, hashes[:, 1], tokens.astype(settings.dtype), lengths)
    tally = Counter({"documents_read": len(texts), "documents_empty": int(np.count_nonzero(lengths == 0)),
                     "documents_validation": int(validation.sum()), "tokens_read": len(tokens)})
    splits = {split: batch.take(np.flatnonzero(mask))
              for split, mask in (("train", ~validation), ("validation", validation)) if mask.any()}
    return splits, tally


def tokenize_read_unit(unit: ReadUnit, settings: ShardSettings, tokenizer) -> tuple[dict[str, DocBatch], Counter]:
    """`read_unit` + `tokenize_unit`; a bad unit's error names its file and row group."""
    table = read_unit(unit, settings.text_field)
    try:
        return tokenize_unit(table, settings, tokenizer)
    except ValueError as err:
        raise ValueError(f"{unit.path}, row group {unit.row_group}: {err}") from err


def split_slots(batch: DocBatch) -> int:
    """Ids plus one [SEP] per document: what the batch will occupy in rows (summed per split, it sizes the shards)."""
    return int(len(batch.tokens) + len(batch.lengths))


def assign_buckets(batch: DocBatch, split_total: int, settings: ShardSettings) -> list[tuple[int, DocBatch]]:
    """(bucket, the batch's documents in it) per bucket: bucket = hash mod S, S = split_total / --shard-tokens."""
    buckets = shard_buckets(batch.bucket_hashes, bucket_count(split_total, settings.shard_tokens))
    order = np.argsort(buckets, kind="stable")
    if not len(order):
        return []
    bounds = np.flatnonzero(np.diff(buckets[order])) + 1
    return [(int(buckets[part[0]]), batch.take(part)) for part in np.split(order, bounds)]


# ---------------------------------------------------------------- per bucket


def pack_bucket(split: str, bucket: int, batches: Iterable[DocBatch],
                settings: ShardSettings) -> tuple[np.ndarray, dict, Counter]:
    """All documents of one (split, bucket): sort by id, pack; return (rows, its record, tally).

    The record is what the manifest needs of the shard (counts; `sha256` and `staged` are
    filled in by write_bucket). Sorting makes the rows independent of arrival order.
    """
    batch = DocBatch.concat(list(batches)).sorted_by_id()
    special = settings.special_tokens
    rows, n_split = PACKERS[settings.packing](batch.tokens, batch.lengths, settings.seq_len,
                                              special["cls"], special["sep"], special["pad"])
    empty = int(np.count_nonzero(batch.lengths == 0))
    record = {"split": split, "bucket": bucket, "documents": len(batch.lengths) - empty, "empty_documents": empty,
              "split_documents": n_split, "sequences": len(rows),
              "tokens": int(np.count_nonzero(rows != special["pad"])), "sha256": None, "staged": None}
    tally = Counter({"documents_split": n_split, "documents_packed": record["documents"],
                     "sequences_written": len(rows), "tokens_written": record["tokens"],
                     "shards_written": int(len(rows) > 0)})
    return rows, record, tally


def write_bucket(rows: np.ndarray, record: dict, settings: ShardSettings) -> dict:
    """Write a bucket's rows as a staged shard (nothing for an empty bucket); return its completed record."""
    if not len(rows):
        return record
    staged = storage.join(settings.staging, record["split"], f"bucket-{record['bucket']:05d}.arrow")
    sha256, _ = ts.write_shard(staged, rows, settings.dtype, pad_id=settings.special_tokens["pad"])
    return {**record, "sha256": sha256, "staged": staged}


# ---------------------------------------------------------------- driver: what was written


def write_index(records: list[dict], settings: ShardSettings) -> None:
    """One JSON list of every bucket's record, in the staging directory, for the driver to publish from."""
    ordered = sorted(records, key=lambda r: (r["split"], r["bucket"]))
    storage.write_json_atomic(storage.join(settings.staging, INDEX_NAME), {"records": ordered})


def read_index(settings: ShardSettings) -> list[dict]:
    return storage.read_json(storage.join(settings.staging, INDEX_NAME))["records"]


def split_summaries(records: list[dict]) -> tuple[dict, list[tuple[str, str]]]:
    """Per split: counts and shard entries, numbered shard-00000... in bucket order; and the
    (staged path, final relative path) moves that put the files there."""
    splits, moves = {}, []
    for split in ts.SPLITS:
        mine = sorted((r for r in records if r["split"] == split), key=lambda r: r["bucket"])
        shards = []
        for record in (r for r in mine if r["staged"]):
            shards.append({
                "file": f"{split}/shard-{len(shards):05d}.arrow",
                **{key: record[key] for key in ("sequences", "tokens", "documents", "split_documents", "sha256")},
            })
            moves.append((record["staged"], shards[-1]["file"]))
        splits[split] = {
            key: sum(r[key] for r in mine)
            for key in ("sequences", "tokens", "documents", "empty_documents", "split_documents")
        } | {"shards": shards}
    return splits, moves
