"""`python -m pipeline.run`: raw Korean text -> clean, deduplicated corpus shards + stats.json.

    python -m pipeline.run [--input PATTERN ...] --output DIR [options] [any Beam option]

With no --input, the embedded sample corpus is generated into DIR/sample_input/ and read.
The pipeline writes into DIR/_temporary/ and, once the job has finished, moves the files
into DIR/clean/, DIR/rejected/ (and DIR/clusters/) and writes DIR/stats.json last: a
directory with stats.json is complete; one without it is not.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import posixpath
import sys
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.sample_corpus import write_sample
from runners.presets import pipeline_options
from transforms import reading, storage
from transforms.clean import CleanOptions
from transforms.corpus_beam import (DedupPartition, InputFile, NearDedupOptions, ParseCleanFilter, ReadLineBatches,
                                    SumCounts, WritePartition, bucket_edges, near_duplicate_components,
                                    write_clusters, write_rejected)

STATS_FILE = "stats.json"
STAGING_DIR = "_temporary"
OUTPUT_SUBDIRS = ("clean", "rejected", "clusters")
BYTES_PER_PARTITION = 128 << 20
MIN_PARTITIONS = 8
COMPRESSION_RATIO_ESTIMATE = 4  # uncompressed bytes per compressed byte, for sizing partitions only
CLUSTER_SIZE_COUNT = "near_dedup_cluster_size_"  # + size: clusters of that size, a count in counts.json


class UsageError(Exception):
    """Bad arguments or unusable input, reported before any work starts."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run",
        description="Clean, filter and deduplicate raw Korean text into Parquet corpus shards (Apache Beam).",
        epilog="Any other option is passed to Beam (--runner, --direct_num_workers, --project, ...).",
    )
    parser.add_argument("--input", nargs="+", default=None, metavar="PATTERN",
                        help="files or globs (local, gs://, s3://); default: the embedded sample corpus")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local, gs://, s3://)")
    parser.add_argument("--format", choices=("auto",) + reading.FORMATS, default="auto",
                        help="input format; auto: by file suffix (.jsonl/.json, .tsv, .csv, else text)")
    parser.add_argument("--text-field", default="text", help="JSON key or TSV/CSV header column of the text")
    parser.add_argument("--id-field", default="id",
                        help="JSON key or column of the id; records without one get FILE:LINE")
    parser.add_argument("--keep-fields", default="", metavar="F[:TYPE],...",
                        help="fields carried into the output, e.g. date,rating:int (types: str, int, float)")
    parser.add_argument("--min-chars", type=int, default=10, help="drop cleaned texts shorter than this (KcBERT: 10)")
    parser.add_argument("--max-chars", type=int, default=None, help="drop cleaned texts longer than this")
    parser.add_argument("--max-line-bytes", type=int, default=8 << 20,
                        help="lines longer than this many bytes are dropped as line_too_long (bounded memory)")
    parser.add_argument("--no-exact-dedup", dest="exact_dedup", action="store_false",
                        help="keep exact duplicates (texts equal after cleaning)")
    parser.add_argument("--no-near-dedup", dest="near_dedup", action="store_false",
                        help="keep near duplicates (MinHash LSH over character n-grams)")
    parser.add_argument("--near-dedup-threshold", type=float, default=0.8, help="Jaccard threshold of near dedup")
    parser.add_argument("--num-perm", type=int, default=128, help="MinHash permutations")
    parser.add_argument("--ngram", type=int, default=None, help="character n-gram size (default: transforms.minhash)")
    parser.add_argument("--seed", type=int, default=0, help="MinHash seed")
    parser.add_argument("--verify", action="store_true",
                        help="check candidate pairs with their true Jaccard (slower, more precise)")
    parser.add_argument("--write-clusters", action="store_true",
                        help="write DIR/clusters/*.parquet (id, cluster_id, kept) for near-duplicate clusters")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="output files = dedup partitions (default: from input size, at least 8)")
    parser.add_argument("--nfc", action="store_true", help="opt-in: NFC-normalise before cleaning")
    parser.add_argument("--keep-digit-runs", action="store_true", help="opt-in: do not shorten digit runs (10000)")
    parser.add_argument("--keep-hanja", action="store_true", help="opt-in: keep Hanja instead of removing it")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N lines (quick trials)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in DIR")
    parser.add_argument("--quiet", action="store_true", help="no summary on stdout")
    return parser


def match_inputs(patterns: list[str], fmt: str) -> tuple[list[InputFile], int]:
    """Expand patterns into sorted files; a pattern matching nothing is an error."""
    paths: dict[str, int] = {}
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # Beam raises BeamIOError with the cause inside
            raise UsageError(f"cannot read --input {pattern!r}: {error}") from None
        files = [m for m in metadata if not m.path.endswith("/")]
        if not files:
            raise UsageError(f"--input {pattern!r} matches no file")
        for m in files:
            paths[m.path] = m.size_in_bytes
    common = posixpath.dirname(os.path.commonprefix(list(paths))) if len(paths) > 1 else posixpath.dirname(
        next(iter(paths)))
    inputs = [InputFile(path, path[len(common):].lstrip("/") if common else path,
                        reading.detect_format(path) if fmt == "auto" else fmt)
              for path in sorted(paths)]
    compressed = sum(size for path, size in paths.items() if storage.is_compressed(path))
    return inputs, sum(paths.values()) - compressed + compressed * COMPRESSION_RATIO_ESTIMATE


def default_num_shards(estimated_bytes: int) -> int:
    return max(MIN_PARTITIONS, math.ceil(estimated_bytes / BYTES_PER_PARTITION))


def build_pipeline(pipeline: beam.Pipeline, inputs: list[InputFile], args, staging: str, num_partitions: int,
                   near: NearDedupOptions | None) -> None:
    fields = reading.FieldSpec(args.text_field, args.id_field or None,
                               reading.FieldSpec.parse_keep_fields(args.keep_fields))
    clean_options = CleanOptions(nfc=args.nfc, keep_digit_runs=args.keep_digit_runs, keep_hanja=args.keep_hanja)
    file_groups = [inputs] if args.limit is not None else [[f] for f in inputs]
    read = (
        pipeline
        | "Files" >> beam.Create(file_groups)
        | "ReadLines" >> beam.ParDo(ReadLineBatches(args.max_line_bytes, args.limit)).with_outputs(
            ReadLineBatches.COUNTS, main="batches")
    )
    parsed = (
        read.batches
        | "Spread" >> beam.Reshuffle()
        | "ParseCleanFilter" >> beam.ParDo(
            ParseCleanFilter(fields, clean_options, args.min_chars, args.max_chars, num_partitions)
        ).with_outputs(ParseCleanFilter.REJECTED, ParseCleanFilter.COUNTS, main="records")
    )
    deduped = (
        parsed.records
        | "GroupByPartition" >> beam.GroupByKey()
        | "Dedup" >> beam.ParDo(DedupPartition(args.exact_dedup, near, num_partitions)).with_outputs(
            DedupPartition.BANDS, DedupPartition.COUNTS, main="records")
    )
    components = None
    if near is not None:
        components = (
            deduped.bands
            | "GroupByBandPartition" >> beam.GroupByKey()
            | "BucketEdges" >> beam.FlatMap(bucket_edges, near)
            | "CollectEdges" >> beam.combiners.ToList()
            | "Components" >> beam.Map(near_duplicate_components)
        )
        if args.write_clusters:
            _ = components | "WriteClusters" >> beam.FlatMap(write_clusters, staging)
    # Only the removed ids (compact arrays) go to the writers as a side input.
    side = [beam.pvalue.AsSingleton(components | "RemovedIds" >> beam.Map(lambda c: c["removed"]))] if (
        components is not None) else []
    written = deduped.records | "Write" >> beam.ParDo(
        WritePartition(staging, num_partitions, fields.keep_fields), *side).with_outputs(
        WritePartition.COUNTS, main="paths")
    _ = (
        parsed.rejected
        | "GroupRejected" >> beam.GroupByKey()
        | "WriteRejected" >> beam.FlatMap(write_rejected, staging, num_partitions)
    )
    count_streams = [read.counts, parsed.counts, deduped.counts, written.counts]
    if components is not None:
        count_streams.append(components | "NearDedupCounts" >> beam.Map(
            lambda c: {"near_dedup_candidate_pairs": c["candidate_pairs"],
                       **{f"{CLUSTER_SIZE_COUNT}{size}": n for size, n in c["histogram"].items()}}))
    _ = (
        count_streams
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCounts())
        | "WriteCounts" >> beam.Map(_write_counts, staging)
    )


def _write_counts(counts: dict, staging: str) -> None:
    with FileSystems.create(FileSystems.join(staging, "counts.json")) as handle:
        handle.write(json.dumps(counts, sort_keys=True).encode("utf-8"))


def prepare_output(output: str, overwrite: bool) -> str:
    """Refuse to mix with an earlier run unless --overwrite; return a fresh staging dir."""
    existing = [name for name in (STATS_FILE, *OUTPUT_SUBDIRS)
                if path_exists(FileSystems.join(output, name))]
    if existing and not overwrite:
        state = "a finished run" if STATS_FILE in existing else "an unfinished run (no stats.json)"
        raise UsageError(f"{output} already holds {state}: {', '.join(existing)}; pass --overwrite to replace it")
    staging = FileSystems.join(output, STAGING_DIR)
    for name in [STAGING_DIR] + (existing if overwrite else []):
        path = FileSystems.join(output, name)
        if path_exists(path):
            if name == STATS_FILE:
                FileSystems.delete([path])
            else:
                delete_tree(path)
    return staging


def path_exists(path: str) -> bool:
    """A file, or a directory with something in it (on gs:// and s3:// a directory is only a key prefix)."""
    return FileSystems.exists(path) or bool(FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list)


def delete_tree(path: str) -> None:
    """Delete a directory: on gs:// and s3:// the key prefix DIR/ (without the slash Beam deletes one object)."""
    FileSystems.delete([path + "/" if "://" in path else path])


def publish(staging: str, output: str) -> list[str]:
    """Move the staged files into place (stats.json is written after this)."""
    moved = []
    for subdir in OUTPUT_SUBDIRS:
        staged = FileSystems.match([FileSystems.join(staging, subdir, "*")])[0].metadata_list
        sources = sorted(m.path for m in staged)
        if not sources:
            continue
        targets = [FileSystems.join(output, subdir, posixpath.basename(path)) for path in sources]
        if not FileSystems.exists(FileSystems.join(output, subdir)):
            FileSystems.mkdirs(FileSystems.join(output, subdir))
        FileSystems.rename(sources, targets)
        moved += [posixpath.relpath(t, output) if "://" not in output else t for t in targets]
    return moved


def build_stats(counts: dict, args, inputs: list[InputFile], near: NearDedupOptions | None, num_partitions: int,
                files: list[str], timings: dict) -> dict:
    counts = Counter(counts)
    dropped = {reason: counts.get(reason, 0) for reason in reading.DROP_REASONS if counts.get(reason, 0)}
    stats = {
        "input_records": counts["input_records"],
        "output_records": counts["output_records"],
        "dropped": dropped,
        "files": {"matched": len(inputs), "read": counts["files_read"], "empty": counts["files_empty"],
                  "with_read_errors": counts["files_with_read_errors"],
                  "output": files},
        "num_shards": num_partitions,
    }
    if near is not None:
        sizes = sorted((int(key[len(CLUSTER_SIZE_COUNT):]), n) for key, n in counts.items()
                       if key.startswith(CLUSTER_SIZE_COUNT))
        stats["near_dedup"] = {
            "threshold": near.threshold, "num_perm": near.num_perm, "ngram": near.ngram, "bands": near.bands,
            "rows": near.rows, "seed": near.seed, "verify": near.verify,
            "candidate_pairs": counts.get("near_dedup_candidate_pairs", 0),
            "removed": counts.get(reading.NEAR_DUPLICATE, 0),
            "cluster_size_histogram": {str(size): n for size, n in sizes},
            "clusters": sum(n for _, n in sizes),
        }
    stats["timings"] = {**timings, **{key[len("seconds_"):] + "_worker_seconds": round(value, 3)
                                      for key, value in sorted(counts.items()) if key.startswith("seconds_")}}
    stats["options"] = {key: value for key, value in sorted(vars(args).items()) if key not in ("quiet",)}
    accounted = stats["output_records"] + sum(dropped.values())
    if accounted != stats["input_records"]:
        raise RuntimeError(f"record accounting failed: {stats['input_records']} read, {accounted} accounted for")
    return stats


def summary(stats: dict) -> str:
    lines = [f"read {stats['input_records']:,} records from {stats['files']['matched']} file(s); "
             f"kept {stats['output_records']:,} in "
             f"{sum(path.startswith('clean/') for path in stats['files']['output'])} file(s)"]
    for reason, n in sorted(stats["dropped"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  dropped {n:>10,}  {reason}")
    if "near_dedup" in stats:
        near = stats["near_dedup"]
        histogram = ", ".join(f"{size}:{n}" for size, n in near["cluster_size_histogram"].items())
        lines.append(f"near dedup: J>={near['threshold']} ({near['bands']} bands x {near['rows']} rows, "
                     f"{near['ngram']}-grams): {near['candidate_pairs']:,} candidate pairs, {near['clusters']:,} "
                     f"clusters, {near['removed']:,} removed; cluster sizes {{{histogram}}}")
    lines.append(f"took {stats['timings']['total_seconds']:.1f} s")
    return "\n".join(lines)


def near_dedup_options(args) -> NearDedupOptions | None:
    if not args.near_dedup:
        return None
    from transforms import minhash

    if not 0 < args.near_dedup_threshold < 1:
        raise UsageError("--near-dedup-threshold must be between 0 and 1")
    # Verification removes false candidates, so its bands x rows can favour recall harder.
    weights = minhash.LSH_WEIGHTS_VERIFIED if args.verify else minhash.LSH_WEIGHTS
    bands, rows = minhash.lsh_params(args.near_dedup_threshold, args.num_perm, *weights)
    return NearDedupOptions(args.near_dedup_threshold, args.num_perm, args.ngram or minhash.DEFAULT_NGRAM,
                            args.seed, bands, rows, args.verify)


def run(argv: list[str] | None = None) -> dict:
    """Run the pipeline; returns the stats written to DIR/stats.json."""
    started = time.perf_counter()
    args, beam_args = build_parser().parse_known_args(argv)
    try:
        options = pipeline_options(beam_args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    FileSystems.set_options(options)  # the gs:// and s3:// calls before the pipeline need --project, --s3_*, ...
    if args.min_chars < 0 or (args.max_chars is not None and args.max_chars < args.min_chars):
        raise UsageError("--min-chars must be >= 0 and --max-chars >= --min-chars")
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    try:
        reading.FieldSpec.parse_keep_fields(args.keep_fields)
    except reading.InputFormatError as error:
        raise UsageError(str(error)) from None
    sample = args.input is None
    if sample and "://" in args.output:
        raise UsageError("the embedded sample corpus needs a local --output; pass --input for remote runs")
    if not sample:
        inputs, estimated_bytes = match_inputs(args.input, args.format)  # before the output is touched
    near = near_dedup_options(args)
    try:
        staging = prepare_output(args.output, args.overwrite)
        FileSystems.mkdirs(staging)
        if sample:
            sample_path = Path(args.output) / "sample_input" / "sample_comments.jsonl"
            write_sample(sample_path)
    except UsageError:
        raise
    except Exception as error:  # OSError locally, BeamIOError on other file systems
        raise UsageError(f"cannot write to --output {args.output!r}: {error}") from None
    if sample:
        args.input = [str(sample_path)]
        inputs, estimated_bytes = match_inputs(args.input, args.format)
    num_partitions = args.num_shards or default_num_shards(estimated_bytes)

    pipeline_started = time.perf_counter()
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, inputs, args, staging, num_partitions, near)
    pipeline_seconds = time.perf_counter() - pipeline_started

    with FileSystems.open(FileSystems.join(staging, "counts.json")) as handle:
        counts = json.loads(handle.read())
    files = publish(staging, args.output)
    delete_tree(staging)
    timings = {"pipeline_seconds": round(pipeline_seconds, 3),
               "total_seconds": round(time.perf_counter() - started, 3)}
    stats = build_stats(counts, args, inputs, near, num_partitions, files, timings)
    with FileSystems.create(FileSystems.join(args.output, STATS_FILE)) as handle:
        handle.write((json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    if not args.quiet:
        print(summary(stats))
    return stats


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except UsageError as error:
        print(f"pipeline.run: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
