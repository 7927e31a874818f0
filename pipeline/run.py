"""`python -m pipeline.run`: raw Korean text -> clean, deduplicated corpus shards + stats.json.

    python -m pipeline.run [--input PATTERN ...] --output DIR [options] [--preset NAME] [Beam options]
    python -m pipeline.run ... --engine spark [--spark-master URL] [--spark-conf KEY=VALUE ...]

With no --input, the embedded sample corpus is generated into DIR/sample_input/ and read.
The command parses its arguments (the convention of pipeline/cli.py), checks them and the
input and output before any work (preflight), resolves them into one frozen
`RunSettings`, runs the Beam graph of pipeline/beam_run.py (whose stages are
transforms/corpus_stages.py), or with `--engine spark` the Spark graph of
pipeline/spark_run.py over the same stages (same output bytes), then publishes: the staged files in DIR/_temporary/ move to
DIR/clean/, DIR/rejected/ (and DIR/clusters/), and DIR/stats.json is written last, so a
directory with stats.json is complete and one without it is not. All file access goes
through transforms/storage.py (local, gs://, s3://).

docs/run.md documents the options, the output and stats.json; docs/cli.md the convention;
docs/architecture.md the layout; BENCHMARKS.md the measured cost.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import Counter

from pipeline import cli
from transforms import drop_reasons, ranges, reading, storage  # light: pyarrow.fs, no numpy compute, no Beam
from transforms.preflight import unusable_run

COMMAND = "pipeline.run"
STATS_FILE = "stats.json"
OUTPUT_SUBDIRS = ("clean", "rejected", "clusters")  # with stats.json and the staging dir: all that --overwrite removes
SAMPLE_FILE = os.path.join("sample_input", "sample_comments.jsonl")
BYTES_PER_PARTITION = 128 << 20
MIN_PARTITIONS = 8
COMPRESSION_RATIO_ESTIMATE = 4  # uncompressed bytes per compressed byte, for sizing partitions only
UsageError = cli.UsageError


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(COMMAND, "Clean, filter and deduplicate raw Korean text into Parquet corpus shards "
                                         "(Apache Beam or Apache Spark).")
    parser.add_argument("--input", action="extend", nargs="+", default=None, metavar="PATTERN",
                        help="files, globs or directories (every file under it), local, gs:// or s3://; may be "
                             "repeated; default: the embedded sample corpus")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local, gs://, s3://)")
    parser.add_argument("--format", choices=("auto",) + reading.FORMATS, default="auto",
                        help="input format; auto: by file suffix (.jsonl/.ndjson: jsonl; .json: json, an array when "
                             "it starts with '[', else JSON lines; .tsv, .csv; else text)")
    parser.add_argument("--encoding", default=reading.DEFAULT_ENCODING,
                        help="text encoding of the input: utf-8, cp949 (Korean Windows; reads EUC-KR too) or euc-kr")
    parser.add_argument("--quoting", choices=reading.QUOTINGS, default="auto",
                        help="TSV/CSV quotes: rfc4180 (quoted fields may hold delimiters, \"\" and line breaks; a "
                             "line whose quoted field does not close into a record is dropped as bad_quoting), "
                             "none (quotes are ordinary characters, one record a line), auto (rfc4180, but such a "
                             "line is read as with none)")
    parser.add_argument("--text-field", default="text", help="JSON key or TSV/CSV header column of the text")
    parser.add_argument("--id-field", default="id",
                        help="JSON key or column of the id; records without one get FILE:LINE")
    parser.add_argument("--keep-fields", default="", metavar="F[:TYPE],...",
                        help="fields carried into the output, e.g. date,rating:int (types: str, int, float)")
    parser.add_argument("--min-chars", type=int, default=10, help="drop cleaned texts shorter than this (KcBERT: 10)")
    parser.add_argument("--max-chars", type=int, default=None, help="drop cleaned texts longer than this")
    parser.add_argument("--max-line-bytes", type=cli.positive_int, default=8 << 20,
                        help="records (lines, TSV/CSV records, JSON array elements) longer than this many bytes are "
                             "dropped as line_too_long (bounded memory)")
    parser.add_argument("--read-range-bytes", type=cli.positive_int, default=ranges.READ_RANGE_BYTES,
                        help="an uncompressed text/jsonl file (tsv/csv: with --quoting none) larger than this is read "
                             "by several workers in ranges of about this many bytes; ids as read whole (docs/scale.md)")
    parser.add_argument("--no-exact-dedup", dest="exact_dedup", action="store_false",
                        help="keep exact duplicates (texts equal after cleaning)")
    _add_near_dedup_options(parser)
    parser.add_argument("--num-shards", type=cli.positive_int, default=None,
                        help="output files = dedup partitions (default: from input size, at least 8)")
    parser.add_argument("--nfc", action="store_true", help="opt-in: NFC-normalise before cleaning")
    parser.add_argument("--allow-nfd", action="store_true",
                        help="run on input whose first records hold decomposed Hangul (NFD) without --nfc: cleaning "
                             "deletes the jamo, as the seed does (otherwise an error before the run)")
    parser.add_argument("--keep-digit-runs", action="store_true", help="opt-in: do not shorten digit runs (10000)")
    parser.add_argument("--keep-hanja", action="store_true", help="opt-in: keep Hanja instead of removing it")
    cli.add_pipeline_command_options(parser, "records of the sorted input files",
                                     "clean/, rejected/, clusters/ and stats.json")
    return parser


def _add_near_dedup_options(parser: cli.ArgumentParser) -> None:
    parser.add_argument("--no-near-dedup", dest="near_dedup", action="store_false",
                        help="keep near duplicates (MinHash LSH over character n-grams)")
    parser.add_argument("--near-dedup-threshold", type=float, default=0.8, help="Jaccard threshold of near dedup")
    parser.add_argument("--num-perm", type=cli.positive_int, default=128, help="MinHash permutations")
    parser.add_argument("--ngram", type=cli.positive_int, default=None,
                        help="character n-gram size (default: transforms.minhash.DEFAULT_NGRAM)")
    parser.add_argument("--seed", type=int, default=0, help="MinHash seed, 0 <= seed < 2**64")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="check every candidate pair's true Jaccard before linking it (the default; "
                             "the option is its explicit spelling)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="link unverified LSH candidates (faster; removes some texts with no partner at the "
                             "threshold)")
    parser.add_argument("--keep", default="smallest-id", metavar="RULE",
                        help="which record of a group of exact or near duplicates survives: smallest-id, longest, "
                             "first-by:FIELD or last-by:FIELD (FIELD one of --keep-fields; ties: smallest id; ids "
                             "compare as strings)")
    parser.add_argument("--components-rounds", type=cli.positive_int, default=None, metavar="N",
                        help="large-star/small-star round pairs unrolled for the near-duplicate components (default: "
                             "log2 of the most records the input can hold, + 3; a graph that needs more is finished "
                             "by one union-find in one worker, and stats.json says so)")
    parser.add_argument("--write-clusters", action="store_true",
                        help="write DIR/clusters/*.parquet (id, cluster_id, kept) for near-duplicate clusters")


# ---------------------------------------------------------------- preflight


def check_options(args) -> None:
    """Option values that argparse alone cannot check; a UsageError before anything is read or written."""
    if args.min_chars < 0 or (args.max_chars is not None and args.max_chars < args.min_chars):
        raise UsageError("--min-chars must be >= 0 and --max-chars >= --min-chars")
    if not 0 < args.near_dedup_threshold < 1:
        raise UsageError("--near-dedup-threshold must be between 0 and 1")
    if not 0 <= args.seed < 2**64:
        raise UsageError("--seed must be in [0, 2**64)")
    try:
        keep_fields = reading.FieldSpec.parse_keep_fields(args.keep_fields)
    except reading.InputFormatError as error:
        raise UsageError(str(error)) from None
    keep_rule(args.keep, keep_fields)
    if args.input is None and "://" in args.output:
        raise UsageError("the embedded sample corpus needs a local --output; pass --input for remote runs")
    try:
        args.encoding = reading.check_encoding(args.encoding)
    except reading.InputFormatError as error:
        raise UsageError(str(error)) from None


def list_sources(patterns: list[str], fmt: str) -> tuple[list, int]:
    """The input files (sorted, each with the name ids show: its path relative to the inputs' common prefix)
    and an estimate of their uncompressed bytes, for sizing the partitions."""
    from transforms.corpus_stages import SourceFile

    try:
        files = storage.list_inputs(patterns, directories="files")
    except storage.StorageError as error:
        raise UsageError(str(error)) from None
    paths = [file.path for file in files]
    common = os.path.dirname(os.path.commonprefix(paths)) if len(paths) > 1 else os.path.dirname(paths[0])
    sources = [SourceFile(file.path, file.path[len(common):].lstrip("/") if common else file.path,
                          reading.detect_format(file.path) if fmt == "auto" else fmt, size=file.size) for file in files]
    compressed = sum(file.size for file in files if storage.is_compressed(file.path))
    return sources, sum(file.size for file in files) - compressed + compressed * COMPRESSION_RATIO_ESTIMATE


def preflight(args, sources: list, id_field_explicit: bool) -> list:
    """The checks before any work (transforms.preflight) on the first records of every input file.

    Returns the sources, each with --quoting (transforms.reading.QUOTINGS).
    """
    import dataclasses

    from transforms import preflight as checks_module

    checks = checks_module.Checks(
        fields=reading.FieldSpec(args.text_field, args.id_field or None,
                                 reading.FieldSpec.parse_keep_fields(args.keep_fields)),
        encoding=args.encoding, quoting=args.quoting, max_record_bytes=args.max_line_bytes,
        id_field_explicit=id_field_explicit, nfd_allowed=args.nfc or args.allow_nfd)
    samples = checks_module.sample_files([(source.path, source.name, source.fmt) for source in sources], checks)
    try:
        checks_module.check_samples(samples, checks)
    except checks_module.PreflightError as error:
        raise UsageError(str(error)) from None
    return [dataclasses.replace(source, quoting=args.quoting) for source in sources]


def refuse_earlier_run(output: str, overwrite: bool) -> None:
    """A UsageError if the output holds an earlier run (finished or not) and there is no --overwrite."""
    existing = [name for name in (STATS_FILE, *OUTPUT_SUBDIRS) if storage.exists(storage.join(output, name))]
    if existing and not overwrite:
        state = "a finished run" if STATS_FILE in existing else "an unfinished run (no stats.json)"
        raise UsageError(f"{output} already holds {state}: {', '.join(existing)}; pass --overwrite to replace it")


def prepare_output(output: str, overwrite: bool) -> str:
    """Refuse to mix with an earlier run unless --overwrite; return a fresh, empty staging dir.

    An earlier run's files stay until the new run publishes (storage.publish replaces them):
    an interrupted run leaves the earlier output as it was. A staging dir left by a dead run
    is not an earlier run and goes (the output lock makes sure no live run owns it).
    """
    refuse_earlier_run(output, overwrite)
    staging = storage.staging_dir(storage.absolute(output))
    storage.delete(staging)
    storage.mkdirs(staging)
    return staging


@contextlib.contextmanager
def output_problems(output: str):
    """An output that cannot be created or written is a UsageError that names it (no traceback)."""
    try:
        yield
    except (OSError, storage.StorageError) as error:
        raise UsageError(f"cannot write to --output {output!r}: {error}") from None


def stage_output(args, sources: list | None, estimated_bytes: int) -> tuple[str, list, int]:
    """Check and prepare the output (a staging dir); write and list the sample corpus when there is no --input."""
    from pathlib import Path

    from pipeline.sample_corpus import write_sample

    with output_problems(args.output):
        staging = prepare_output(args.output, args.overwrite)
        if sources is not None:
            return staging, sources, estimated_bytes
        sample = Path(args.output).absolute() / SAMPLE_FILE
        write_sample(sample)
    args.input = [str(sample)]
    return staging, *list_sources(args.input, args.format)


# ---------------------------------------------------------------- settings


def keep_rule(spec: str, keep_fields: tuple):
    """The --keep rule (transforms.survivors.KeepRule); a UsageError for a bad rule or a field not kept."""
    from transforms.survivors import KeepRule

    try:
        return KeepRule.parse(spec, keep_fields)
    except ValueError as error:
        raise UsageError(str(error)) from None


def near_dedup_settings(args):
    """NearDedupSettings from the options (bands x rows from the threshold), or None with --no-near-dedup."""
    from transforms import minhash
    from transforms.corpus_stages import NearDedupSettings

    if not args.near_dedup:
        return None
    # Verification removes false candidates, so its bands x rows can favour recall harder.
    weights = minhash.LSH_WEIGHTS_VERIFIED if args.verify else minhash.LSH_WEIGHTS
    bands, rows = minhash.lsh_params(args.near_dedup_threshold, args.num_perm, *weights)
    return NearDedupSettings(args.near_dedup_threshold, args.num_perm, args.ngram, args.seed, bands, rows,
                             args.verify, args.components_rounds or 16)


def default_components_rounds(estimated_bytes: int, min_chars: int) -> int:
    """Round pairs for the largest component the input could hold: every record in one (transforms.connected).

    A record takes at least min_chars characters and a line break, so at most
    estimated_bytes / (min_chars + 1) records (an over-estimate; the rounds grow with its log).
    """
    from transforms.connected import rounds_for

    return rounds_for(estimated_bytes // (max(min_chars, 1) + 1))


def run_settings(args, staging: str, num_partitions: int):
    """The one frozen settings object every stage gets (transforms.corpus_stages.RunSettings)."""
    from transforms.clean import CleanOptions
    from transforms.corpus_stages import RunSettings

    fields = reading.FieldSpec(args.text_field, args.id_field or None,
                               reading.FieldSpec.parse_keep_fields(args.keep_fields))
    return RunSettings(
        fields=fields, clean=CleanOptions(nfc=args.nfc, keep_digit_runs=args.keep_digit_runs,
                                          keep_hanja=args.keep_hanja),
        min_chars=args.min_chars, max_chars=args.max_chars, max_line_bytes=args.max_line_bytes,
        exact_dedup=args.exact_dedup, near=near_dedup_settings(args), num_partitions=num_partitions,
        staging=staging, write_clusters=args.write_clusters, keep=keep_rule(args.keep, fields.keep_fields),
        encoding=args.encoding, read_range_bytes=args.read_range_bytes)


def default_num_shards(estimated_bytes: int) -> int:
    """One partition per ~128 MiB of uncompressed input, at least MIN_PARTITIONS (docs/scale.md)."""
    return max(MIN_PARTITIONS, math.ceil(estimated_bytes / BYTES_PER_PARTITION))


# ---------------------------------------------------------------- run, publish, report


def beam_pipeline_options(beam_args: list[str]):
    """Beam's PipelineOptions (runners.presets: --preset expanded, DirectRunner in memory by default)."""
    from runners.presets import pipeline_options

    cli.quiet_beam_import()
    try:
        return pipeline_options(beam_args)
    except ValueError as error:
        raise UsageError(str(error)) from None


def engine(args, beam_args: list[str], stack: contextlib.ExitStack):
    """The engine the options ask for: (a function (sources, settings) -> (counts, wall seconds), its description
    for stats.json: the Beam runner, or the Spark master and version)."""
    if args.engine == "spark":
        from pipeline import spark_run
        from pipeline.spark_session import describe, spark_session

        session = stack.enter_context(spark_session(args.spark_master, args.spark_conf, COMMAND, not args.quiet))
        return (lambda sources, settings: spark_run.run_graph(session, sources, settings, args.limit)), describe(session)
    options = beam_pipeline_options(beam_args)
    return (lambda sources, settings: run_graph(options, sources, settings, args.limit, not args.quiet),
            cli.runner_in_use(options))


def run_graph(options, sources: list, settings, limit: int | None, progress: bool) -> tuple[dict, float]:
    """Build and run the Beam graph (pipeline/beam_run.py); returns the counts of every stage and its wall seconds."""
    import apache_beam as beam

    from pipeline import beam_run

    started = time.perf_counter()
    with beam.Pipeline(options=options) as pipeline:
        beam_run.build_graph(pipeline, sources, settings, limit, progress)
    seconds = time.perf_counter() - started
    return storage.read_json(storage.join(settings.staging, beam_run.COUNTS_FILE)), seconds


def publish_outputs(staging: str, output: str) -> list[str]:
    """Move the staged files into place, replacing an earlier run's; the output files, as stats.json lists them."""
    entries = [(storage.join(staging, subdir, name), f"{subdir}/{name}")
               for subdir in OUTPUT_SUBDIRS for name in storage.list_files(storage.join(staging, subdir))]
    written = storage.publish(staging, output, entries, replaced=OUTPUT_SUBDIRS, marker=STATS_FILE)
    return [storage.join(output, name) for name in written] if storage.is_remote(output) else written


def build_stats(counts: dict, sources: list, settings, files: list[str], timings: dict, options: dict) -> dict:
    """stats.json: every count of the run, checked so that input = output + every drop reason."""
    counts = Counter(counts)
    dropped = {reason: counts[reason] for reason in drop_reasons.DROP_REASONS if counts[reason]}
    stats = {
        "input_records": counts["input_records"],
        "output_records": counts["output_records"],
        "dropped": dropped,
        "files": {"matched": len(sources), "read": counts["files_read"], "empty": counts["files_empty"],
                  "with_read_errors": counts["files_with_read_errors"], "output": files},
        "num_shards": settings.num_partitions,
    }
    quoting = quoting_stats(counts, sources)
    if quoting is not None:
        stats["quoting"] = quoting
    if settings.near is not None:
        stats["near_dedup"] = near_dedup_stats(counts, settings.near)
    per_worker = {key: value for key, value in sorted(counts.items()) if key.startswith("max_")}
    if per_worker:
        stats["per_worker_max"] = per_worker  # the most one key / bundle held, per step (docs/scale.md)
    from transforms.profile import stats_section

    profile_section = stats_section(counts)
    if profile_section:
        stats["profile"] = profile_section  # lengths before/after the filter, what the clean changed (docs/run.md)
    stats["timings"] = {**timings, **{key[len("seconds_"):] + "_worker_seconds": round(value, 3)
                                      for key, value in sorted(counts.items()) if key.startswith("seconds_")}}
    stats["options"] = options
    accounted = stats["output_records"] + sum(dropped.values())
    if accounted != stats["input_records"]:
        raise RuntimeError(f"record accounting failed: {stats['input_records']} read, {accounted} accounted for")
    return stats


def quoting_stats(counts: Counter, sources: list) -> dict | None:
    """How the TSV/CSV records were read (only when there are some): records read with their quotes as ordinary
    characters (--quoting auto: not valid RFC 4180), records spanning lines (a quoted line break)."""
    tables = [source for source in sources if source.fmt in reading.TABLE_FORMATS]
    if not tables:
        return None
    return {"records_read_literally": counts["records_read_literally"],
            "records_spanning_lines": counts["records_spanning_lines"]}


def near_dedup_stats(counts: Counter, near) -> dict:
    from transforms.corpus_stages import CLUSTER_SIZE_COUNT

    sizes = sorted((int(key[len(CLUSTER_SIZE_COUNT):]), n) for key, n in counts.items()
                   if key.startswith(CLUSTER_SIZE_COUNT))
    return {"threshold": near.threshold, "num_perm": near.num_perm, "ngram": near.ngram, "bands": near.bands,
            "rows": near.rows, "seed": near.seed, "verify": near.verify,
            **verification_stats(counts, near.verify),
            "removed": counts.get(drop_reasons.NEAR_DUPLICATE, 0),
            "cluster_size_histogram": {str(size): n for size, n in sizes},
            "clusters": sum(n for _, n in sizes),
            "components": {"rounds": near.rounds,
                           "unconverged_nodes": counts.get("near_dedup_components_unconverged_nodes", 0)}}


def verification_stats(counts: Counter, verify: bool) -> dict:
    """Candidate pairs and what verification made of them (docs/run.md, stats.json).

    Verified: every distinct pair a bucket proposed (bounded for buckets over
    transforms.near_pairs.ALL_PAIRS_UP_TO members), checked once. --no-verify: the distinct
    star edges linked, none checked (verified and rejected are null).
    """
    from transforms import near_pairs

    if not verify:
        return {"candidate_pairs": counts.get("near_dedup_edges", 0), "verified_pairs": None, "rejected_pairs": None}
    return {"candidate_pairs": counts.get("near_dedup_pairs_checked", 0),
            "verified_pairs": counts.get("near_dedup_pairs_verified", 0),
            "rejected_pairs": counts.get("near_dedup_pairs_rejected", 0),
            "pair_bound": {"all_pairs_up_to": near_pairs.ALL_PAIRS_UP_TO,
                           "representatives": near_pairs.REPRESENTATIVES,
                           "large_buckets": counts.get("near_dedup_large_buckets", 0)}}


def summary(stats: dict) -> str:
    """The human summary on stdout (docs/run.md, Summary)."""
    lines = [f"read {stats['input_records']:,} records from {stats['files']['matched']} file(s); "
             f"kept {stats['output_records']:,} in "
             f"{sum(path.split('/')[-2] == 'clean' for path in stats['files']['output'])} file(s)"]
    for reason, n in sorted(stats["dropped"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  dropped {n:>10,}  {reason}")
    if "near_dedup" in stats:
        near = stats["near_dedup"]
        histogram = ", ".join(f"{size}:{n}" for size, n in near["cluster_size_histogram"].items())
        checked = (f"{near['candidate_pairs']:,} candidate pairs verified: {near['verified_pairs']:,} at the "
                   f"threshold, {near['rejected_pairs']:,} rejected" if near["verify"]
                   else f"{near['candidate_pairs']:,} candidate pairs, not verified (--no-verify)")
        lines.append(f"near dedup: J>={near['threshold']} ({near['bands']} bands x {near['rows']} rows, "
                     f"{near['ngram']}-grams): {checked}; {near['clusters']:,} clusters, {near['removed']:,} "
                     f"removed; cluster sizes {{{histogram}}}")
        components = near.get("components", {})
        if components.get("unconverged_nodes"):
            lines.append(f"  warning: {components['unconverged_nodes']:,} nodes were not in a star after "
                         f"{components['rounds']} component rounds: the components were finished by one union-find "
                         f"in one worker (correct, not distributed); pass a larger --components-rounds")
    if stats.get("options", {}).get("runner"):
        lines.append(f"runner: {stats['options']['runner']}")
    lines.append(f"took {stats['timings']['total_seconds']:.1f} s")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None):
    """Our options (with the defaults resolved: n-gram size) and the Beam options after them."""
    from transforms.minhash import DEFAULT_NGRAM

    args, beam_args = cli.parse_with_beam_options(build_parser(), argv)
    args.ngram = args.ngram or DEFAULT_NGRAM
    return args, beam_args


def run(argv: list[str] | None = None) -> dict:
    """The command without its exit statuses (`main`): parse, preflight, settings, graph, publish, stats.json.

    Returns the stats written to DIR/stats.json.
    """
    started = time.perf_counter()
    args, beam_args = parse_arguments(argv)
    progress = cli.Progress(COMMAND, enabled=not args.quiet)
    check_options(args)
    cli.check_engine_arguments(args, beam_args)
    sources, estimated_bytes = list_sources(args.input, args.format) if args.input else (None, 0)
    if sources is not None:
        sources = preflight(args, sources, id_field_explicit=any(
            token == "--id-field" or token.startswith("--id-field=") for token in (argv or sys.argv[1:])))
    with output_problems(args.output):
        refuse_earlier_run(args.output, args.overwrite)  # before an engine starts (a Spark JVM takes seconds)
    with contextlib.ExitStack() as stack:
        run_engine, runner = engine(args, beam_args, stack)
        stats = run_and_publish(args, beam_args, sources, estimated_bytes, run_engine, runner, progress, started)
    cli.emit_summary(args, summary(stats), stats)
    unusable = unusable_run(stats["input_records"], stats["dropped"])
    if unusable is not None:
        raise UsageError(f"{unusable}; {args.output}/rejected/ holds an excerpt of each (stats.json: the counts)")
    return stats


def run_and_publish(args, beam_args: list[str], sources: list | None, estimated_bytes: int, run_engine, runner: str,
                    progress: cli.Progress, started: float) -> dict:
    """Under the output lock: stage, run the graph, publish, write stats.json (last); returns the stats."""
    with output_problems(args.output):
        lock = cli.OutputLock(args.output).__enter__()
    try:
        staging, sources, estimated_bytes = stage_output(args, sources, estimated_bytes)
        args.num_shards = args.num_shards or default_num_shards(estimated_bytes)
        args.components_rounds = args.components_rounds or default_components_rounds(estimated_bytes, args.min_chars)
        settings = run_settings(args, staging, args.num_shards)
        progress.say(f"reading {len(sources):,} file(s) into {settings.num_partitions} partitions")
        counts, pipeline_seconds = run_engine(sources, settings)
        progress.say("publishing")
        files = publish_outputs(staging, args.output)
        timings = {"pipeline_seconds": round(pipeline_seconds, 3),
                   "total_seconds": round(time.perf_counter() - started, 3)}
        recorded = {**dict(sorted(vars(args).items())), "beam_options": beam_args,
                    "runner": runner}  # every option, resolved
        stats = {**build_stats(counts, sources, settings, files, timings, recorded), "engine": args.engine}
        storage.write_json_atomic(storage.join(args.output, STATS_FILE), stats, sort_keys=False)
    finally:
        lock.__exit__(None, None, None)
    return stats


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(COMMAND, lambda: run(argv))


if __name__ == "__main__":
    raise SystemExit(main())
