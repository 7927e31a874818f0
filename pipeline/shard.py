"""`python -m pipeline.shard`: a clean corpus and a tokenizer -> packed, fixed-length Arrow token shards.

    python -m pipeline.shard --input CORPUS_DIR --tokenizer TOKENIZER_DIR --output SHARD_DIR
        [--seq-len 128] [--packing concat|none] [--validation-fraction 0.01] [--shard-tokens N]
        [--seed 0] [--text-field text] [--limit N] [--overwrite] [--quiet] [--json]
        [--preset NAME] [any Beam pipeline option]
        [--engine spark [--spark-master URL] [--spark-conf KEY=VALUE ...]]

The command, in order: parse the arguments -> one frozen ShardSettings -> preflight (inputs,
tokenizer, output: usage errors, exit 2, before any work) -> the Beam graph
(pipeline/beam_shard.py, around the stages of transforms/shard_stages.py), or with `--engine
spark` the Spark graph over the same stages (pipeline/spark_shard.py; same bytes), writing into the
staging directory -> publish -> manifest.json, last. Options and behaviour: docs/shard.md;
the files: docs/formats.md (koforge-token-shards/1); the shared conventions: docs/cli.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from functools import partial

from pipeline import cli
from tokenizer_training.loading import TokenizerSourceError, looks_local
from tokenizer_training.loading import load_tokenizer as load_tokenizer_files
from transforms import storage
from transforms import token_shards as ts
from transforms.packing import PACKERS
from transforms.shard_stages import (DEFAULT_SHARD_TOKENS, ReadUnit, ShardInputError, ShardSettings, plan_units,
                                     read_index, split_summaries)

COMMAND = "pipeline.shard"
PUBLISHED = (*ts.SPLITS, ts.TOKENIZER_SUBDIR)  # what a run replaces, besides manifest.json and its staging directory
PROGRESS_POLL_SECONDS = 0.5


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(COMMAND, "Tokenize a clean corpus and pack it into fixed-length Arrow token "
                                         "shards with a manifest (docs/shard.md).")
    parser.add_argument("--input", action="append", required=True, metavar="PATTERN",
                        help="a clean corpus directory (DIR/clean/*.parquet), Parquet files or globs; local paths "
                             "or gs:// s3:// URIs; repeatable")
    parser.add_argument("--tokenizer", required=True, metavar="DIR_OR_HUB_ID",
                        help="a BERT WordPiece tokenizer: pipeline.tokenize's output, a teacher's model directory "
                             "(only its tokenizer files are read), a vocab.txt or tokenizer.json directory, or a hub id")
    parser.add_argument("--output", required=True, metavar="DIR", help="token shard directory to write")
    parser.add_argument("--seq-len", type=int, default=128, help="ids per sequence, [CLS] and [SEP] included")
    parser.add_argument("--packing", choices=sorted(PACKERS), default="concat",
                        help="concat: several documents per sequence; none: one document per sequence")
    parser.add_argument("--validation-fraction", type=float, default=0.01,
                        help="share of documents, by a hash of the id, in the validation split")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="approximate ids per shard file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and shard hashes")
    parser.add_argument("--text-field", default="text", help="text column of the Parquet files")
    cli.add_pipeline_command_options(parser, "documents",
                                     "token shards (manifest.json, train/, validation/, tokenizer/)")
    return parser


def settings_from_args(args, parser: cli.ArgumentParser) -> ShardSettings:
    """The one frozen settings object; a bad value stops the command (exit 2)."""
    try:
        return ShardSettings(
            inputs=tuple(storage.absolute(pattern) for pattern in args.input),
            tokenizer=storage.absolute(args.tokenizer) if looks_local(args.tokenizer) else args.tokenizer,
            output=storage.absolute(args.output),
            seq_len=args.seq_len, packing=args.packing, validation_fraction=args.validation_fraction,
            shard_tokens=args.shard_tokens, seed=args.seed, text_field=args.text_field, limit=args.limit)
    except ShardInputError as err:
        parser.error(str(err))


# ---------------------------------------------------------------- preflight: nothing is written before it passes


@dataclass(frozen=True)
class Plan:
    """What preflight found: the settings completed with the tokenizer's facts, and the work."""

    settings: ShardSettings
    input_files: list[str]
    units: list[ReadUnit]
    documents: int
    tokenizer_files: dict[str, bytes]
    vocab_size: int


def read_tokenizer(source: str) -> tuple[dict[str, bytes], dict[str, int], int]:
    """(the tokenizer files by name, special token ids by role, vocabulary size).

    Whatever the source (tokenizer_training.loading): exactly the four tokenizer files, the missing
    ones derived, never anything else of the directory, so a teacher's weights never reach the shards.
    """
    try:
        tokenizer = load_tokenizer_files(source)
    except TokenizerSourceError as err:
        raise ShardInputError(str(err)) from err
    return tokenizer.files, tokenizer.special_ids, len(tokenizer.vocab)


def check_output(output: str, overwrite: bool) -> None:
    """Refuse to replace finished (or half-published) shards unless --overwrite."""
    if overwrite:
        return
    if storage.exists(storage.join(output, ts.MANIFEST_NAME)):
        raise ShardInputError(f"{output} already holds token shards ({ts.MANIFEST_NAME}); pass --overwrite to replace them")
    for name in PUBLISHED:
        if storage.exists(storage.join(output, name)):
            raise ShardInputError(f"{output}/{name} exists but there is no {ts.MANIFEST_NAME} (an interrupted run?); "
                                  "pass --overwrite to replace it")


def preflight(settings: ShardSettings, overwrite: bool) -> Plan:
    """Inputs, tokenizer and output checked, footers read; any problem is a usage error (exit 2)."""
    try:
        files = [file.path for file in storage.list_inputs(list(settings.inputs), directories="corpus")]
        units, documents = plan_units(files, settings.text_field, settings.limit)
        tokenizer_files, special, vocab_size = read_tokenizer(settings.tokenizer)
        settings = dataclasses.replace(settings, dtype=ts.narrowest_dtype(vocab_size), special_tokens=special)
        check_output(settings.output, overwrite)
    except (ShardInputError, storage.StorageError, ts.TokenShardError) as err:
        raise cli.UsageError(str(err)) from err
    return Plan(settings, files, units, documents, tokenizer_files, vocab_size)


# ---------------------------------------------------------------- staging and publishing


def stage_tokenizer(plan: Plan) -> str:
    """Copy the tokenizer's files into a fresh staging directory (the workers read this copy); its fingerprint."""
    settings = plan.settings
    storage.delete(settings.staging)  # leftovers of an interrupted run; the output lock says none is running
    for name, data in plan.tokenizer_files.items():
        storage.write_bytes_atomic(storage.join(settings.staged_tokenizer, name), data)
    return ts.tokenizer_fingerprint(settings.staged_tokenizer)


def publish(plan: Plan, fingerprint: str, engine: str = "beam") -> dict:
    """Move the staged shards and tokenizer into place, then write manifest.json last; return it."""
    settings = plan.settings
    splits, moves = split_summaries(read_index(settings))
    accounted = sum(info["documents"] + info["empty_documents"] for info in splits.values())
    if accounted != plan.documents:
        raise RuntimeError(f"read {plan.documents} documents but packed or counted {accounted}; nothing was published")
    moves += [(storage.join(settings.staged_tokenizer, name), f"{ts.TOKENIZER_SUBDIR}/{name}")
              for name in storage.list_files(settings.staged_tokenizer)]
    storage.publish(settings.staging, settings.output, moves, replaced=PUBLISHED, marker=ts.MANIFEST_NAME)
    manifest = {
        "format": ts.FORMAT, "seq_len": settings.seq_len, "packing": settings.packing, "dtype": settings.dtype,
        "vocab_size": plan.vocab_size, "special_tokens": settings.special_tokens,
        "tokenizer_fingerprint": fingerprint, "options": settings.options(plan.input_files),
        "documents_read": plan.documents, "splits": splits, "engine": engine,
    }
    storage.write_json_atomic(storage.join(settings.output, ts.MANIFEST_NAME), manifest)
    return manifest


# ---------------------------------------------------------------- reporting


@contextlib.contextmanager
def progress_lines(progress: cli.Progress, tally, total: int):
    """Progress lines from the stages' tally of this process while the pipeline runs (in-process runners)."""
    start, stop = tally["documents_read"], threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_POLL_SECONDS):
            progress.count(tally["documents_read"] - start, "documents tokenized", total)

    thread = threading.Thread(target=report, name="pipeline.shard progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def watch_progress(args, progress: cli.Progress, total: int):
    """`progress_lines` on the in-process Beam runner's tally; nothing with --quiet or on Spark (its console
    progress)."""
    if args.quiet or args.engine != "beam":
        return contextlib.nullcontext()
    from pipeline import beam_shard

    return progress_lines(progress, beam_shard.LOCAL_TALLY, total)


def summaries(manifest: dict, counters: dict[str, int], output: str, seconds: float) -> tuple[str, dict]:
    """The human summary and the machine-readable one (--json)."""
    splits = {split: {key: value for key, value in info.items() if key != "shards"} | {"shards": len(info["shards"])}
              for split, info in manifest["splits"].items()}
    machine = {"output": output, "manifest": storage.join(output, ts.MANIFEST_NAME), "seconds": round(seconds, 3),
               "documents_read": manifest["documents_read"], "splits": splits, "counters": dict(sorted(counters.items()))}
    total = {key: sum(info[key] for info in splits.values()) for key in splits["train"]}
    human = "\n".join([
        f"{output}: {total['sequences']:,} sequences of {manifest['seq_len']} ids ({manifest['dtype']}), "
        + ", ".join(f"{split} {info['sequences']:,} in {info['shards']} shard(s)" for split, info in splits.items()),
        f"{manifest['documents_read']:,} documents read: {total['documents']:,} packed "
        f"({splits['validation']['documents']:,} in validation), {total['empty_documents']:,} empty, "
        f"{total['split_documents']:,} split across sequences; {total['tokens']:,} ids written in {seconds:.1f} s",
        f"manifest: {machine['manifest']}",
    ])
    return human, machine


# ---------------------------------------------------------------- the command


def engine(args, beam_args: list[str], stack: contextlib.ExitStack):
    """(a function (units, settings) -> the stages' counters, the runner: Beam's, or the Spark master and version)."""
    if args.engine == "spark":
        from pipeline import spark_shard
        from pipeline.spark_session import describe, spark_session

        session = stack.enter_context(spark_session(args.spark_master, args.spark_conf, COMMAND, not args.quiet))
        return partial(spark_shard.run, session), describe(session)
    cli.quiet_beam_import()
    from pipeline import beam_shard
    from runners.presets import pipeline_options

    try:
        options = pipeline_options(beam_args)
    except ValueError as err:  # a preset missing the options it needs
        raise cli.UsageError(str(err)) from err
    return partial(beam_shard.run, options), cli.runner_in_use(options)


def shard(settings: ShardSettings, args, beam_args: list[str]) -> dict:
    """The command's body, after parsing; returns the manifest."""
    started = time.perf_counter()
    cli.check_engine_arguments(args, beam_args)
    plan = preflight(settings, args.overwrite)  # before an engine starts (a Spark JVM takes seconds)
    with contextlib.ExitStack() as stack:
        run_engine, runner = engine(args, beam_args, stack)
        return shard_on(plan, args, run_engine, runner, started)


def shard_on(plan: Plan, args, run_engine, runner: str, started: float) -> dict:
    """Stage, run the graph, publish, summarise; returns the manifest."""
    settings = plan.settings
    progress = cli.Progress(COMMAND, enabled=not args.quiet)
    progress.say(f"{len(plan.input_files)} input file(s), {len(plan.units)} row group(s), {plan.documents:,} "
                 f"documents; vocabulary {plan.vocab_size:,} ({plan.settings.dtype})")
    with cli.OutputLock(settings.output):
        try:  # again under the lock: another run may have published since preflight
            check_output(settings.output, args.overwrite)
        except ShardInputError as err:
            raise cli.UsageError(str(err)) from err
        fingerprint = stage_tokenizer(plan)
        with watch_progress(args, progress, plan.documents):
            counters = run_engine(plan.units, plan.settings)
        progress.say("publishing")
        manifest = publish(plan, fingerprint, args.engine)
    human, machine = summaries(manifest, counters, settings.output, time.perf_counter() - started)
    machine["runner"] = runner  # not in manifest.json (its engine is): the shards do not depend on the runner
    human += f"\nrunner: {machine['runner']}"
    cli.emit_summary(args, human, machine)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = cli.parse_with_beam_options(parser, argv)
    settings = settings_from_args(args, parser)
    return cli.run_command(COMMAND, lambda: shard(settings, args, beam_args))


if __name__ == "__main__":
    raise SystemExit(main())
