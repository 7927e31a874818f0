"""`python -m pipeline.shard`: clean corpus + tokenizer -> packed, fixed-length Arrow token shards.

    python -m pipeline.shard --input CORPUS_DIR --tokenizer TOKENIZER_DIR --output SHARD_DIR
        [--seq-len 128] [--packing concat|none] [--validation-fraction 0.01]
        [--shard-tokens 50000000] [--seed 0] [--text-field text] [--overwrite]
        [--preset NAME (runners/presets.py)] [any Beam pipeline option: --runner, --direct_num_workers, ...]

The Beam pipeline (DirectRunner unless told otherwise; see `runners.presets.pipeline_options`):

    read units (the row groups of the Parquet files)
      -> tokenize each unit (one Parquet row group) in batches, split train/validation
         by a hash of (seed, id)                    [one element per unit and split]
      -> total ids per split (a side input) -> number of shards S per split
      -> bucket = hash of (seed, id) mod S          [one element per unit, split, bucket]
      -> group by (split, bucket) -> sort by id -> pack -> write one shard per bucket
      -> one index of what was written

Shard contents depend only on the documents and the options, never on the worker count
or bundle boundaries. Shards are written under DIR/.staging/ and moved into place when
the pipeline has finished; manifest.json is written last (layout: transforms/token_shards.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import sys
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from tokenizers import Tokenizer

from runners.presets import pipeline_options
from transforms import storage
from transforms import token_shards as ts
from transforms.packing import (
    PACKERS,
    bucket_count,
    document_hashes,
    encode_texts,
    is_validation,
    shard_buckets,
    take_documents,
)

NAMESPACE = "pipeline.shard"
STAGING = ".staging"
INDEX_NAME = "index.json"
DEFAULT_SHARD_TOKENS = 50_000_000  # 100 MB per shard at uint16
SPECIAL_TOKEN_NAMES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


class ShardInputError(ValueError):
    """Bad input or options, found before any work starts (exit status 2)."""


@dataclass(frozen=True)
class ReadUnit:
    """One row group of one Parquet file: the unit of work spread over the workers."""

    path: str
    row_group: int


@dataclass(frozen=True)
class Settings:
    """Everything the workers need, fixed before the pipeline starts."""

    tokenizer_json: str
    text_field: str
    seed: int
    validation_fraction: float
    seq_len: int
    packing: str
    dtype: str
    special_tokens: dict
    shard_tokens: int
    staging: str


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


# ---------------------------------------------------------------- checks before work starts


def input_files(pattern: str) -> list[str]:
    """The Parquet files, sorted: DIR means DIR/clean/*.parquet (contract 1), else a glob."""
    if not any(char in pattern for char in "*?[") and not pattern.endswith(".parquet"):
        if not FileSystems.exists(posixpath.join(pattern, "stats.json")):
            raise ShardInputError(f"{pattern} is not a finished pipeline.run output (no stats.json, which "
                                  "pipeline.run writes last): rerun pipeline.run")
        pattern = posixpath.join(pattern, "clean", "*.parquet")
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # Beam raises BeamIOError, or a filesystem-specific error for unknown schemes
        raise ShardInputError(f"cannot list input {pattern}: {err}") from err
    if not matches:
        raise ShardInputError(f"no input files match {pattern}")
    return sorted(m.path for m in matches)


def plan_units(paths: list[str], text_field: str) -> tuple[list[ReadUnit], int]:
    """Read every file's footer: check the columns, refuse null ids, list the row groups; return (units, rows)."""
    units: list[ReadUnit] = []
    rows = 0
    for path in paths:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                metadata = pq.ParquetFile(handle).metadata
                schema = metadata.schema.to_arrow_schema()
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
            raise ShardInputError(f"{path}: not a readable Parquet file: {err}") from err
        for column in ("id", text_field):
            if column not in schema.names:
                raise ShardInputError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)})")
            if not (pa.types.is_string(schema.field(column).type) or pa.types.is_large_string(schema.field(column).type)):
                raise ShardInputError(f"{path}: column {column!r} is {schema.field(column).type}, not a string")
        id_index = schema.names.index("id")
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(id_index).statistics
            if statistics is not None and statistics.has_null_count and statistics.null_count:
                raise ShardInputError(f"{path}: row group {group} has {statistics.null_count} rows with a null id")
            units.append(ReadUnit(path, group))
            rows += metadata.row_group(group).num_rows
    return units, rows


def read_bytes(path: str) -> bytes:
    fs, inner = storage.resolve(path)
    with fs.open_input_stream(inner) as handle:
        return handle.read()


def tokenizer_files(tokenizer_dir: str) -> dict[str, bytes]:
    """The tokenizer directory's regular files (name -> bytes); it must hold tokenizer.json."""
    fs, inner = storage.resolve(tokenizer_dir)
    if fs.get_file_info(storage.join(inner, "tokenizer.json")).type != pafs.FileType.File:
        raise ShardInputError(f"{tokenizer_dir}: no tokenizer.json (expected a directory written by pipeline.tokenize)")
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    return {info.base_name: read_bytes(storage.join(tokenizer_dir, info.base_name))
            for info in sorted(infos, key=lambda i: i.base_name) if info.type == pafs.FileType.File}


def load_tokenizer(tokenizer_json: str) -> Tokenizer:
    """The tokenizer as packing needs it.

    Truncation and padding off: a saved max_length must never cut a document. Special tokens
    written in the text ("[SEP]" in a comment) are tokenized as text, so no document can
    inject control ids into the packed stream.
    """
    tokenizer = Tokenizer.from_str(read_bytes(tokenizer_json).decode("utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = True
    return tokenizer


def special_token_ids(files: dict[str, bytes], tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK], by the names in tokenizer_config.json and special_tokens_map.json."""
    names = dict(SPECIAL_TOKEN_NAMES)
    for config in ("tokenizer_config.json", "special_tokens_map.json"):
        if config not in files:
            continue
        mapping = json.loads(files[config].decode("utf-8"))
        for role in names:
            value = mapping.get(f"{role}_token")
            if value is not None:
                names[role] = value["content"] if isinstance(value, dict) else value
    ids = {role: tokenizer.token_to_id(name) for role, name in names.items()}
    missing = [f"{role} {names[role]}" for role, token_id in ids.items() if token_id is None]
    if missing:
        raise ShardInputError(f"the tokenizer lacks special tokens: {', '.join(missing)}")
    return ids


def check_output(output: str, overwrite: bool) -> None:
    """Refuse to replace finished (or half-finalized) shards unless --overwrite."""
    fs, inner = storage.resolve(output)
    if overwrite:
        return
    if fs.get_file_info(storage.join(inner, ts.MANIFEST_NAME)).type != pafs.FileType.NotFound:
        raise ShardInputError(f"{output} already holds token shards ({ts.MANIFEST_NAME}); pass --overwrite to replace them")
    for name in (*ts.SPLITS, ts.TOKENIZER_SUBDIR):
        if fs.get_file_info(storage.join(inner, name)).type != pafs.FileType.NotFound:
            raise ShardInputError(
                f"{output}/{name} exists but there is no {ts.MANIFEST_NAME} (an interrupted run?); "
                "pass --overwrite to replace it"
            )


# ---------------------------------------------------------------- Beam stages (thin wrappers)


class TokenizeUnits(beam.DoFn):
    """One read unit -> (split, DocBatch) for each split that has documents in it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.read = Metrics.counter(NAMESPACE, "documents_read")
        self.empty = Metrics.counter(NAMESPACE, "documents_empty")
        self.validation = Metrics.counter(NAMESPACE, "documents_validation")
        self.tokens = Metrics.counter(NAMESPACE, "tokens_read")

    def setup(self):
        self.tokenizer = load_tokenizer(self.settings.tokenizer_json)

    def process(self, unit: ReadUnit):
        s = self.settings
        with FileSystems.open(unit.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            table = pq.ParquetFile(handle).read_row_group(unit.row_group, columns=["id", s.text_field])
        ids = table.column("id").combine_chunks().cast(pa.string())
        if ids.null_count:
            raise ValueError(f"{unit.path}: {ids.null_count} rows with a null id in row group {unit.row_group}")
        texts = pc.fill_null(table.column(s.text_field).combine_chunks(), "").to_pylist()
        tokens, lengths = encode_texts(self.tokenizer, texts)
        hashes = document_hashes(ids, s.seed)
        validation = is_validation(hashes[:, 0], s.validation_fraction)
        # narrowed to the shard dtype here: half the bytes through the shuffle for vocabularies <= 65,536
        batch = DocBatch(ids, hashes[:, 1], tokens.astype(s.dtype), lengths)
        self.read.inc(len(texts))
        self.empty.inc(int(np.count_nonzero(lengths == 0)))
        self.validation.inc(int(validation.sum()))
        self.tokens.inc(len(tokens))
        for split, mask in (("train", ~validation), ("validation", validation)):
            if mask.any():
                yield split, batch.take(np.flatnonzero(mask))


def split_slots(element: tuple[str, DocBatch]) -> tuple[str, int]:
    """(split, ids + one [SEP] per document): what the split will occupy in rows."""
    split, batch = element
    return split, int(len(batch.tokens) + len(batch.lengths))


def assign_buckets(element: tuple[str, DocBatch], totals: dict, shard_tokens: int):
    """(split, DocBatch) -> ((split, bucket), DocBatch) per bucket, S = split slots / shard_tokens."""
    split, batch = element
    buckets = shard_buckets(batch.bucket_hashes, bucket_count(totals[split], shard_tokens))
    order = np.argsort(buckets, kind="stable")
    bounds = np.flatnonzero(np.diff(buckets[order])) + 1
    for part in np.split(order, bounds):
        yield (split, int(buckets[part[0]])), batch.take(part)


class PackAndWrite(beam.DoFn):
    """All documents of one (split, bucket): sort by id, pack, write the staging shard; yield its record."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.split_docs = Metrics.counter(NAMESPACE, "documents_split")
        self.packed = Metrics.counter(NAMESPACE, "documents_packed")
        self.sequences = Metrics.counter(NAMESPACE, "sequences_written")
        self.tokens = Metrics.counter(NAMESPACE, "tokens_written")
        self.shards = Metrics.counter(NAMESPACE, "shards_written")

    def process(self, element):
        (split, bucket), batches = element
        s = self.settings
        batch = DocBatch.concat(list(batches)).sorted_by_id()
        special = s.special_tokens
        rows, n_split = PACKERS[s.packing](batch.tokens, batch.lengths, s.seq_len, special["cls"], special["sep"], special["pad"])
        empty = int(np.count_nonzero(batch.lengths == 0))
        record = {
            "split": split,
            "bucket": bucket,
            "documents": len(batch.lengths) - empty,
            "empty_documents": empty,
            "split_documents": n_split,
            "sequences": len(rows),
            "tokens": 0,
            "sha256": None,
            "staged": None,
        }
        if len(rows):
            staged = storage.join(s.staging, split, f"bucket-{bucket:05d}.arrow")
            record["sha256"], record["tokens"] = ts.write_shard(staged, rows, s.dtype, pad_id=special["pad"])
            record["staged"] = staged
            self.shards.inc()
        self.split_docs.inc(n_split)
        self.packed.inc(record["documents"])
        self.sequences.inc(len(rows))
        self.tokens.inc(record["tokens"])
        yield record


def write_index(records: list[dict], path: str) -> None:
    storage.write_json_atomic(path, {"records": sorted(records, key=lambda r: (r["split"], r["bucket"]))})


def build_pipeline(pipeline: beam.Pipeline, units: list[ReadUnit], settings: Settings) -> None:
    batches = (
        pipeline
        | "Units" >> beam.Create(units)
        | "Tokenize" >> beam.ParDo(TokenizeUnits(settings))
    )
    totals = batches | "SplitSlots" >> beam.Map(split_slots) | "TotalSlots" >> beam.CombinePerKey(sum)
    (
        batches
        | "AssignBuckets" >> beam.FlatMap(assign_buckets, totals=beam.pvalue.AsDict(totals), shard_tokens=settings.shard_tokens)
        | "GroupBuckets" >> beam.GroupByKey()
        | "PackAndWrite" >> beam.ParDo(PackAndWrite(settings))
        | "AllRecords" >> beam.combiners.ToList()
        | "WriteIndex" >> beam.Map(write_index, storage.join(settings.staging, INDEX_NAME))
    )


# ---------------------------------------------------------------- finalize


def _move(source: str, target: str) -> None:
    fs, inner_source = storage.resolve(source)
    inner_target = storage.resolve(target)[1]
    fs.create_dir(posixpath.dirname(inner_target), recursive=True)
    fs.move(inner_source, inner_target)


def _delete_if_exists(path: str) -> None:
    fs, inner = storage.resolve(path)
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(inner)
    elif kind == pafs.FileType.File:
        fs.delete_file(inner)


def _file_names(directory: str) -> list[str]:
    fs, inner = storage.resolve(directory)
    return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(inner)) if info.type == pafs.FileType.File)


def split_summaries(records: list[dict]) -> tuple[dict, list[tuple[str, str]]]:
    """Per split: counts and shard entries, numbered shard-00000... in bucket order; and the
    (staged path, final relative path) moves that put the files there."""
    splits, moves = {}, []
    for split in ts.SPLITS:
        mine = [r for r in records if r["split"] == split]
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


def finalize(output: str, staging: str, header: dict, documents_read: int) -> dict:
    """Move the staged shards and tokenizer into place, then write manifest.json last; return it."""
    records = json.loads(read_bytes(storage.join(staging, INDEX_NAME)).decode("utf-8"))["records"]
    splits, moves = split_summaries(records)
    accounted = sum(info["documents"] + info["empty_documents"] for info in splits.values())
    if accounted != documents_read:
        raise RuntimeError(f"read {documents_read} documents but packed or counted {accounted}; nothing was published")
    staged_tokenizer = storage.join(staging, ts.TOKENIZER_SUBDIR)
    moves += [(storage.join(staged_tokenizer, name), f"{ts.TOKENIZER_SUBDIR}/{name}") for name in _file_names(staged_tokenizer)]
    _delete_if_exists(storage.join(output, ts.MANIFEST_NAME))  # first: an old manifest must never describe new files
    for name in (*ts.SPLITS, ts.TOKENIZER_SUBDIR):
        _delete_if_exists(storage.join(output, name))
    for source, relative in moves:
        _move(source, storage.join(output, relative))
    _delete_if_exists(staging)
    manifest = {"format": ts.FORMAT, **header, "documents_read": documents_read, "splits": splits}
    storage.write_json_atomic(storage.join(output, ts.MANIFEST_NAME), manifest)
    return manifest


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.shard",
        description="Tokenize a clean corpus and pack it into fixed-length Arrow token shards with a manifest.",
        epilog="Any other option is a Beam pipeline option (--runner, --direct_num_workers, ...).",
        allow_abbrev=False,
    )
    parser.add_argument("--input", required=True, help="clean corpus directory (reads DIR/clean/*.parquet) or a Parquet glob")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (tokenizer.json, vocab.txt, ...)")
    parser.add_argument("--output", required=True, help="token shard directory to write")
    parser.add_argument("--seq-len", type=int, default=128, help="ids per sequence, [CLS] and [SEP] included (default 128)")
    parser.add_argument("--packing", choices=sorted(PACKERS), default="concat",
                        help="concat: several documents per sequence; none: one document per sequence (default concat)")
    parser.add_argument("--validation-fraction", type=float, default=0.01,
                        help="share of documents, by hash of id, in the validation split (default 0.01)")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help=f"approximate ids per shard file (default {DEFAULT_SHARD_TOKENS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and shard hashes (default 0)")
    parser.add_argument("--text-field", default="text", help="text column of the Parquet files (default text)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing token shard directory")
    args, beam_args = parser.parse_known_args(argv)
    for arg in beam_args:  # what Beam does not know it only warns about: catch our own options misspelt
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag[2:].replace("-", "_") in vars(args):
            parser.error(f"unknown option {flag}; did you mean --{flag[2:].replace('_', '-')}?")
    if args.seq_len < 3:
        parser.error(f"--seq-len must be at least 3 ([CLS], one id, [SEP]), got {args.seq_len}")
    if not 0 <= args.validation_fraction < 1:
        parser.error(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    if not 0 <= args.seed < 2**64:
        parser.error(f"--seed must be in [0, 2**64), got {args.seed}")
    if args.shard_tokens < args.seq_len:
        parser.error(f"--shard-tokens ({args.shard_tokens}) must be at least --seq-len ({args.seq_len})")
    return args, beam_args, parser


def absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def main(argv: list[str] | None = None) -> int:
    args, beam_args, parser = parse_args(argv)
    output = absolute(args.output)
    staging = storage.join(output, STAGING)
    try:
        options = pipeline_options(beam_args)
    except ValueError as err:  # an unknown --preset, or one missing the options it needs
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    FileSystems.set_options(options)  # the gs:// and s3:// calls below, before the pipeline, need --project, --s3_*...
    try:
        check_output(output, args.overwrite)
        files = input_files(args.input)
        units, documents_read = plan_units(files, args.text_field)
        tokenizer_dir = absolute(args.tokenizer)
        files_by_name = tokenizer_files(tokenizer_dir)
        tokenizer = load_tokenizer(storage.join(tokenizer_dir, "tokenizer.json"))
        special = special_token_ids(files_by_name, tokenizer)
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    except (ShardInputError, ts.TokenShardError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except Exception as err:  # a tokenizer.json that tokenizers cannot parse, say
        parser.exit(2, f"{parser.prog}: error: {type(err).__name__}: {err}\n")

    _delete_if_exists(staging)  # leftovers of an interrupted run
    staged_tokenizer = storage.join(staging, ts.TOKENIZER_SUBDIR)
    for name, data in files_by_name.items():
        storage.write_bytes_atomic(storage.join(staged_tokenizer, name), data)
    settings = Settings(
        tokenizer_json=storage.join(staged_tokenizer, "tokenizer.json"),  # the workers read the copy that is published
        text_field=args.text_field,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        seq_len=args.seq_len,
        packing=args.packing,
        dtype=ts.narrowest_dtype(vocab_size),
        special_tokens=special,
        shard_tokens=args.shard_tokens,
        staging=staging,
    )
    header = {
        "seq_len": settings.seq_len,
        "packing": settings.packing,
        "dtype": settings.dtype,
        "vocab_size": vocab_size,
        "special_tokens": special,
        "tokenizer_fingerprint": ts.tokenizer_fingerprint(staged_tokenizer),
        "options": {
            "input": args.input,
            "input_files": files,
            "tokenizer": args.tokenizer,
            "seq_len": args.seq_len,
            "packing": args.packing,
            "validation_fraction": args.validation_fraction,
            "shard_tokens": args.shard_tokens,
            "seed": args.seed,
            "text_field": args.text_field,
        },
    }
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, units, settings)
    result = pipeline.run()
    result.wait_until_finish()
    manifest = finalize(output, staging, header, documents_read)
    counters = {
        m.key.metric.name: m.committed
        for m in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    print(json.dumps({"output": output, "counters": dict(sorted(counters.items())), **{
        split: {k: v for k, v in info.items() if k != "shards"} | {"shards": len(info["shards"])}
        for split, info in manifest["splits"].items()
    }}, indent=2))
    return 0


if __name__ == "__main__":
    # Workers unpickle ReadUnit, DocBatch, ... by module name, and __main__ is not importable
    # there: run the copy of this module that is imported as pipeline.shard.
    from pipeline import shard

    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(shard.main())
