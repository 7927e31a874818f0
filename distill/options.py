"""The light command-line side of distill.train and distill.evaluate: parsers, TrainConfig, output policy.

Nothing here imports torch or transformers, so that `--help`, usage errors and the output
directory checks answer at once; the commands import the heavy modules after parsing.

- `train_parser()` / `evaluate_parser()`: the options (pipeline.cli's convention, docs/cli.md).
- `TrainConfig`: how a student is trained (DistillConfig says what is trained), saved as
  DIR/train_config.json and in every checkpoint; `review_changes` is what `--resume` does with it.
- The output directory: what distill.train writes there (`OWN_OUTPUTS`), the refusal of a
  non-empty one, `--overwrite`'s removal, and the summary of a run read back from it.

See docs/distill.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from distill.recipes import OBJECTIVES
from pipeline import cli

TRAIN = "distill.train"
EVALUATE = "distill.evaluate"
# The choices of options whose modules (configs, device) import torch or transformers; those
# modules take them from here. tests/test_distill_cli.py checks STUDENT_PRESET_NAMES against
# configs.STUDENT_PRESETS.
STUDENT_PRESET_NAMES = ("minilm-23m", "minilm-68m", "distil-3l")
DEVICES = ("auto", "cuda", "xla", "cpu")
ATTENTION_SCOPES = ("document", "row")
SOFT_TARGET_POSITIONS = ("all", "masked")
RELATION_AVERAGES = ("sequence", "pooled")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SENTIMENT_FORMATS = ("auto", "jsonl", "tsv")


non_negative_int = cli.number(int, 0)
positive_float = cli.number(float, 0, low_open=True)
probability = cli.number(float, 0, 1, low_open=True, high_open=True)
fraction = cli.number(float, 0, 1, high_open=True)


def relation_heads(text: str) -> int | str:
    """--relation-heads: 'auto' or a positive integer."""
    return text if text == "auto" else cli.positive_int(text)


def adam_betas(text: str) -> tuple[float, float]:
    """--adam-betas B1,B2 with both in [0, 1)."""
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers B1,B2") from None
    if len(values) != 2 or not all(0 <= value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers B1,B2 in [0, 1)")
    return values


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(TRAIN, "Distil a teacher BERT into a small student from token shards.",
                                epilog="Options, outputs and examples: docs/distill.md.")
    add = parser.add_argument
    add("--shards", help="token shard directory (pipeline.shard output); required unless --source")
    add("--teacher", help="teacher BERT: local directory or hub id; required unless --source")
    add("--source", action="append", metavar="NAME=TEACHER:SHARDS",
        help="instead of --teacher/--shards: one of several (teacher, shards) sources, each batch distilled from "
             "its own teacher; repeatable (docs/distill.md#several-teachers)")
    add("--mix", metavar="NAME=WEIGHT,...",
        help="with --source: micro-batches from each source in this ratio, e.g. ko=1,en=1 (default: equal)")
    add("--output", required=True, help="output directory: configs, metrics.jsonl, checkpoints/, student/")
    add("--student", help=f"{', '.join(STUDENT_PRESET_NAMES)}, a BertConfig JSON file, or a BERT model directory to "
        "start from (e.g. distill.extend's output) (default: the objective's, minilm-23m; distil-3l for distilkobert)")
    add("--objective", default="minilm", choices=OBJECTIVES,
        help="loss terms and their reference recipe (docs/distill.md#objectives)")
    add("--teacher-layer", type=int, help="teacher layer (0-based, -1 = last) the last student layer learns from")
    add("--layer-map", help="TEACHER:STUDENT layer pairs, e.g. 3:1,7:3,11:5 (0-based)")
    add("--relation-heads", type=relation_heads,
        help="MiniLMv2 relation heads, or auto (default): 48 for a base teacher, 64 for a large one, else the "
             "largest count that divides both hidden sizes")
    add("--relation-average", choices=RELATION_AVERAGES,
        help="relation losses: the mean of each sequence's mean (sequence, default, as the papers) or one mean "
             "over every query token of the batch (pooled)")
    add("--temperature", type=positive_float, help="soft-target temperature (default 2.0)")
    add("--soft-target-positions", choices=SOFT_TARGET_POSITIONS,
        help="soft-target KL at every real token (all, default, as the DistilBERT reference) or at the masked ones")
    add("--attention-scope", default="document", choices=ATTENTION_SCOPES,
        help="packed rows: each document attends only to itself, positions restarting per document (document), "
             "or the whole row is one sequence (row)")
    add("--loss-weights", help="NAME=WEIGHT,...: reweight, add or (weight 0) drop loss terms")
    add("--init-from-teacher-layers", help="comma-separated 0-based teacher layers copied into the student "
        "(with embeddings and MLM head); distil-3l defaults to 0,4,8")
    add("--batch-size", type=cli.positive_int, default=256, help="sequences per device per micro-batch")
    add("--grad-accum", type=cli.positive_int, default=1, help="micro-batches per optimizer step")
    add("--lr", type=positive_float, help="peak learning rate (default: the objective's, 6e-4 or 5e-4)")
    add("--warmup-steps", type=non_negative_int,
        help="linear warm-up steps (default: the objective's, never more than 5%% of --max-steps)")
    add("--max-steps", type=cli.positive_int, help="optimizer steps of the schedule (default: one pass over the train split)")
    add("--run-steps", type=cli.positive_int,
        help="stop this invocation after this many steps (checkpointed); continue with --resume")
    add("--weight-decay", type=float, help="AdamW weight decay, not on biases and LayerNorm weights "
        "(default: the objective's, 0.01 or 0)")
    add("--adam-betas", type=adam_betas, help="AdamW B1,B2 (default: the objective's, 0.9,0.999 or 0.9,0.98)")
    add("--adam-eps", type=positive_float, help="AdamW epsilon (default 1e-6)")
    add("--max-grad-norm", type=positive_float, help="gradient clipping norm (default: the objective's, 1.0 or 5.0)")
    add("--precision", default="auto", choices=PRECISIONS, help="auto = bf16 on GPU/TPU, fp32 on CPU")
    add("--device", default="auto", choices=DEVICES, help="auto = CUDA, else XLA when torch_xla is installed, else CPU")
    add("--mlm-probability", type=probability, help="masking rate of objectives that read MLM logits (default 0.15)")
    add("--shuffle-buffer", type=non_negative_int, default=100_000, help="rows per shuffle window")
    add("--loader-workers", type=non_negative_int, default=2, help="DataLoader worker processes")
    add("--seed", type=int, default=0, help="initialisation, data order and masking")
    add("--log-every", type=cli.positive_int, default=10, help="steps per metrics.jsonl line")
    add("--save-every", type=cli.positive_int, default=1000, help="steps between checkpoints")
    add("--keep-checkpoints", type=cli.positive_int, default=2, help="checkpoints kept (the newest)")
    add("--resume", action="store_true", help="continue from the newest intact checkpoint in --output")
    add("--allow-config-change", action="store_true",
        help="with --resume: accept changed options that change the data order or what a step is "
             f"({', '.join(guarded_options())})")
    cli.add_output_options(parser, "checkpoints, student, metrics and configs")
    cli.add_reporting_options(parser)
    add("--verbose", action="store_true", help="let transformers print its load reports and progress bars")
    return parser


# Fine-tuning options: (flag, type, help). Their default is None, "not given": the task's default
# (docs/evaluate.md#default-hyper-parameters), a suite's value, or this option when given.
FINETUNE_OPTIONS = (
    ("--epochs", cli.positive_int, "fine-tuning epochs"),
    ("--lr", positive_float, "peak learning rate"),
    ("--train-batch-size", cli.positive_int, "fine-tuning batch size"),
    ("--eval-batch-size", cli.positive_int, "batch size when predicting"),
    ("--max-length", cli.positive_int, "tokens per input (capped at the model's positions)"),
    ("--max-examples", cli.positive_int, "fine-tune on a seeded sample of at most N training examples"),
    ("--max-eval-examples", cli.positive_int, "score a seeded sample of at most N evaluation examples"),
    ("--weight-decay", fraction, "AdamW weight decay (not on biases and LayerNorm weights)"),
    ("--warmup-proportion", fraction, "share of the steps with a linear warm-up"),
    ("--doc-stride", cli.positive_int, "korquad: tokens between the starts of two context windows"),
    ("--max-query-length", cli.positive_int, "korquad: question tokens kept"),
    ("--max-answer-length", cli.positive_int, "korquad: longest answer span, in tokens"),
)


def finetune_overrides(args: argparse.Namespace) -> dict:
    """The fine-tuning options given on the command line, as HyperParameters field names."""
    rename = {"train_batch_size": "batch_size"}
    given = {}
    for flag, _, _ in FINETUNE_OPTIONS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name, None)
        if value is not None:
            given[rename.get(name, name)] = value
    return given


def evaluate_parser() -> cli.ArgumentParser:
    from distill.tasks import TASK_NAMES  # light: no torch, transformers or pyarrow

    parser = cli.ArgumentParser(EVALUATE, "Score a (distilled) BERT: fine-tune it on the tasks of the seeds' "
                                "results table (--task or --suite), masked-token metrics on validation shards, "
                                "agreement with a teacher, sentiment fine-tuning.",
                                epilog="Tasks, formats, default hyper-parameters and the table: docs/evaluate.md. "
                                       "Masked-LM report and sentiment files: docs/distill.md.")
    add = parser.add_argument
    add("--model", required=True, help="model directory (e.g. OUTPUT/student) or hub id")
    add("--task", choices=TASK_NAMES, help="fine-tune on this task's --train file and score on its --eval file")
    add("--train", help="--task: the training file, in the task's distributed format")
    add("--eval", help="--task: the evaluation file, in the same format")
    add("--suite", help="a JSON file naming several tasks' files and hyper-parameters (docs/evaluate.md#suites)")
    add("--seeds", type=cli.positive_int,
        help="fine-tuning runs per task, seeds --seed, --seed+1, ...; mean and standard deviation over them "
             "(default 3, as the seeds' tables, or the suite's)")
    for flag, kind, text in FINETUNE_OPTIONS:
        add(flag, type=kind, help=text + " (default: the task's)")
    add("--precision", default="auto", choices=("auto", "bf16", "fp32"),
        help="fine-tuning arithmetic: auto = bf16 autocast on a GPU that has it, else fp32")
    add("--name", help="the table row's label (default: the suite's name, else the model's directory name)")
    add("--shards", help="token shard directory; masked-LM metrics on its --split")
    add("--teacher", help="teacher for top-1 agreement at masked positions")
    add("--split", default="validation", help="shard split to score")
    add("--batch-size", type=cli.positive_int, default=64, help="sequences per batch")
    add("--mlm-probability", type=probability, default=0.15, help="masking rate")
    add("--attention-scope", default="document", choices=ATTENTION_SCOPES,
        help="packed rows: each document alone (document) or the row as one sequence (row), as in distill.train")
    add("--seed", type=int, default=0, help="masking seed, first fine-tuning seed, and the seed of the "
        "--max-examples samples")
    add("--max-batches", type=cli.positive_int, help="evaluate only the first N batches")
    add("--device", default="auto", choices=("auto", "cuda", "cpu"), help="auto = CUDA when torch sees a GPU")
    add("--sentiment", help="NSMC-style sentiment file (JSON lines with text+rating/label, or TSV)")
    add("--sentiment-format", default="auto", choices=SENTIMENT_FORMATS,
        help="auto = by suffix (.jsonl/.json JSON lines, .tsv TSV; .txt is TSV only with a text/document "
             "and label header, as NSMC's ratings_*.txt)")
    add("--sentiment-epochs", type=cli.positive_int, default=1, help="fine-tuning epochs")
    add("--sentiment-batch-size", type=cli.positive_int, default=32, help="fine-tuning batch size")
    add("--sentiment-lr", type=positive_float, default=5e-5, help="fine-tuning learning rate")
    add("--sentiment-max-length", type=cli.positive_int, default=128, help="tokens per text")
    add("--sentiment-test-fraction", type=probability, default=0.1, help="held-out share")
    add("--sentiment-max-examples", type=cli.positive_int, help="use a seeded sample of at most N examples")
    add("--output", help="also write the JSON report to this file")
    cli.add_reporting_options(parser)
    add("--verbose", action="store_true", help="let transformers print its load reports and progress bars")
    return parser


# ---------------------------------------------------------------- several sources

SOURCE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_source(text: str) -> tuple[str, str, str]:
    """--source NAME=TEACHER:SHARDS -> (name, teacher, shards). The colon of a gs:// or s3:// URI
    is not a separator."""
    name, sep, rest = text.partition("=")
    parts = re.split(r":(?!//)", rest)
    if not sep or not SOURCE_NAME.match(name) or len(parts) != 2 or not all(parts):
        raise cli.UsageError(f"--source {text!r}: expected NAME=TEACHER:SHARDS with NAME of letters, digits, _ or -, "
                             "e.g. --source ko=klue-bert/:shards-ko/")
    return name, parts[0], parts[1]


def parse_mix(text: str | None, names: list[str]) -> dict[str, int]:
    """--mix ko=1,en=1 -> {name: weight} for exactly the sources' names (positive integers); equal without it."""
    if text is None:
        return {name: 1 for name in names}
    mix = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise cli.UsageError(f"--mix {text!r}: entries are NAME=WEIGHT with a positive integer WEIGHT, e.g. ko=1,en=1")
        mix[name] = int(value)
    if sorted(mix) != sorted(names):
        raise cli.UsageError(f"--mix names {', '.join(sorted(mix))}; the --source names are {', '.join(sorted(names))}")
    return {name: mix[name] for name in names}


def check_sources(args: argparse.Namespace) -> None:
    """--shards with --teacher, or --source (repeatable, distinct names) with an optional --mix; not both."""
    if args.source:
        if args.shards or args.teacher:
            raise cli.UsageError("give --shards and --teacher (one source) or --source NAME=TEACHER:SHARDS "
                                 "(several), not both")
        names = [parse_source(text)[0] for text in args.source]
        if len(set(names)) != len(names):
            raise cli.UsageError(f"--source names must differ, got {', '.join(names)}")
        parse_mix(args.mix, names)
        return
    if args.mix:
        raise cli.UsageError("--mix only applies with --source")
    missing = [option for option, value in (("--shards", args.shards), ("--teacher", args.teacher)) if not value]
    if missing:
        raise cli.UsageError(f"the following arguments are required: {', '.join(missing)} "
                             "(or --source NAME=TEACHER:SHARDS, repeatable)")


# ---------------------------------------------------------------- TrainConfig


@dataclass(frozen=True)
class TrainConfig:
    """How the student is trained, with every default resolved (the objective's recipe, precision,
    max_steps): saved as train_config.json, so two runs compare option by option."""

    lr: float
    warmup_steps: int
    max_steps: int
    batch_size: int
    grad_accum: int
    weight_decay: float
    max_grad_norm: float
    adam_betas: list[float]
    adam_eps: float
    seed: int
    precision: str  # resolved: bf16, fp16 or fp32
    mlm_probability: float | None  # None: the objective reads no MLM logits, nothing is masked
    shuffle_buffer: int
    train_data: str  # fingerprint of the train split's shard files (their sha256s)
    loader_workers: int
    log_every: int
    save_every: int
    keep_checkpoints: int
    mix: dict | None = None  # --source runs: source name -> weight (--mix, resolved)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **resolved) -> TrainConfig:
        """The options of `args`, with the resolved values (recipe defaults, precision, max_steps, train_data) given."""
        values = {field.name: getattr(args, field.name, None) for field in fields(cls)}
        return cls(**{**values, **resolved})

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields a resumed run may not change silently, and what each change would do.
GUARDED = {
    "batch_size": "it changes the data order and what a step is",
    "grad_accum": "it changes what a step is",
    "seed": "it changes the data order and the masking",
    "shuffle_buffer": "it changes the data order",
    "mlm_probability": "it changes the masking",
    "precision": "it changes the arithmetic of every step",
    "train_data": "the training data differs",
    "mix": "it changes which source each batch comes from",
}


def option_name(field: str) -> str:
    """The command-line option behind a TrainConfig field."""
    return {"train_data": "--shards", "mix": "--mix"}.get(field, "--" + field.replace("_", "-"))


def guarded_options() -> list[str]:
    return [option_name(field) for field in GUARDED]


def review_changes(saved: dict, current: TrainConfig, allow: bool, report: Callable[[str], None],
                   where: str = "the checkpoint") -> list[str]:
    """Compare the TrainConfig a checkpoint was made with to this run's: `report` one line per
    changed value; raise UsageError naming the options whose change would silently change the
    run, unless `allow`. Returns the changed fields. Fields absent from `saved` (older runs) are skipped."""
    changed = [name for name, value in current.to_dict().items() if name in saved and saved[name] != value]
    refused = [name for name in changed if name in GUARDED and not allow]
    for name in changed:
        verdict = "refused" if name in refused else "accepted"
        report(f"python -m {TRAIN}: --resume: {option_name(name)} changed since {where}: "
               f"{saved[name]!r} -> {current.to_dict()[name]!r} ({verdict})")
    if refused:
        reasons = "; ".join(f"{option_name(name)} {saved[name]!r} -> {current.to_dict()[name]!r}: {GUARDED[name]}"
                            for name in refused)
        raise cli.UsageError(f"--resume with changed options ({reasons}); resume with the saved values, "
                             "or pass --allow-config-change to continue anyway")
    return changed


# ---------------------------------------------------------------- the output directory

# What distill.train writes in --output (and all that --overwrite removes), besides the lock.
OWN_OUTPUTS = ("checkpoints", "student", "metrics.jsonl", "distill_config.json", "train_config.json")
# Leftovers of an interrupted atomic write of one of them (storage.write_bytes_atomic, export_student).
OWN_LEFTOVERS = re.compile(r"^(?:(?:metrics\.jsonl|distill_config\.json|train_config\.json)\.[0-9a-f]{32}\.tmp"
                           r"|\.(?:tmp|old)-student-[0-9a-f]{32})$")


def is_own_output(name: str) -> bool:
    return name in OWN_OUTPUTS or OWN_LEFTOVERS.match(name) is not None


def directory_entries(output: str) -> list[str]:
    """The entries of the output directory, the lock file aside (none when it does not exist)."""
    if not os.path.isdir(output):
        return []
    return sorted(name for name in os.listdir(output) if name != cli.LOCK_FILE)


def check_output(output: str, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty --output unless --resume or --overwrite (UsageError, before any work)."""
    if resume and overwrite:
        raise cli.UsageError("give --resume (continue the run in --output) or --overwrite (replace it), not both")
    if os.path.exists(output) and not os.path.isdir(output):
        raise cli.UsageError(f"--output {output} exists and is not a directory")
    entries = directory_entries(output)
    if entries and not (resume or overwrite):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise cli.UsageError(f"--output {output} is not empty ({shown}): pass --resume to continue the run in it, "
                             "--overwrite to replace what distill.train wrote there, or choose another --output")


def remove_own_outputs(output: str) -> list[str]:
    """--overwrite: delete what distill.train writes (OWN_OUTPUTS and their leftovers), nothing else."""
    removed = [name for name in directory_entries(output) if is_own_output(name)]
    for name in removed:
        path = os.path.join(output, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return removed


def launched_rank() -> int:
    """This process's rank under torchrun (0 when run alone): only rank 0 locks and checks --output."""
    return int(os.environ.get("RANK", "0"))


def read_json_file(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def last_metrics(output: str) -> dict | None:
    """The last line of DIR/metrics.jsonl, or None."""
    try:
        with open(os.path.join(output, "metrics.jsonl"), encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
    except OSError:
        return None
    return json.loads(lines[-1]) if lines else None


def run_summary(output: str) -> dict:
    """What the run in `output` has done so far, read back from its files (works for every launcher)."""
    train_config = read_json_file(os.path.join(output, "train_config.json")) or {}
    distill_config = read_json_file(os.path.join(output, "distill_config.json")) or {}
    last = last_metrics(output)
    step = last["step"] if last else 0
    max_steps = train_config.get("max_steps")
    finished = max_steps is not None and step >= max_steps and os.path.isdir(os.path.join(output, "student"))
    checkpoints = os.path.join(output, "checkpoints")
    steps = sorted(name for name in os.listdir(checkpoints) if name.startswith("step-")) if os.path.isdir(checkpoints) else []
    return {
        "output": output,
        "objective": distill_config.get("objective"),
        "step": step,
        "max_steps": max_steps,
        "finished": finished,
        "student": os.path.join(output, "student") if finished else None,
        "checkpoint": os.path.join(checkpoints, steps[-1]) if steps else None,
        "metrics": last,
    }


def human_summary(summary: dict) -> str:
    """The summary on stdout without --json."""
    loss = f", loss {summary['metrics']['loss']:.4f}" if summary["metrics"] else ""
    head = f"{summary['objective']} distillation: step {summary['step']} of {summary['max_steps']}{loss}"
    if summary["finished"]:
        return f"{head}; student in {summary['student']}"
    where = f" (checkpoint {summary['checkpoint']})" if summary["checkpoint"] else ""
    return f"{head}{where}; continue with --resume"


def say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
