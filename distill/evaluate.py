"""`python -m distill.evaluate`: how good is a (distilled) BERT?

    python -m distill.evaluate --model DIR --task TASK --train FILE --eval FILE [--seeds 3] [--json]
    python -m distill.evaluate --model DIR --suite SUITE.json [--output report.json]
    python -m distill.evaluate --model DIR --shards DIR [--teacher PATH] [--sentiment FILE] [--json]

--task / --suite fine-tune the model on the tasks of the seeds' results table (NSMC, Naver NER,
PAWS-X, KorNLI, KorSTS, Question Pair, KorQuAD 1.0, Korean Hate Speech; distill.tasks), each read
from its file as distributed, once per fine-tuning seed, and report the metrics of every run, their
mean and standard deviation, baselines, and the model's row of the table (docs/evaluate.md).
--shards reports masked-token accuracy, loss and perplexity on a shard split with deterministic
masking (--seed), top-1 agreement with the teacher (--teacher), and --sentiment the accuracy of a
classifier fine-tuned on part of one NSMC-style file (docs/distill.md). The summary goes to stdout
(with --json the whole report as JSON, which --output FILE also receives); progress lines to stderr.

Every input is read and checked before any work starts. This module stays light: torch and
transformers are imported after the options are parsed.
"""
from __future__ import annotations

import argparse

from distill import options
from pipeline import cli


def plan_tasks(args: argparse.Namespace) -> tuple[list, str, list[int]]:
    """(task runs, the row's name, fine-tuning seeds) of --task or --suite; UsageError when they do not fit."""
    from distill.tasks import TASKS
    from distill.tasks.suite import SuiteError, TaskRun, read_suite

    overrides = options.finetune_overrides(args)
    if args.task and args.suite:
        raise cli.UsageError("give --task (with --train and --eval) or --suite, not both")
    if (args.train or args.eval) and not args.task:
        raise cli.UsageError("--train and --eval go with --task; several tasks go in a --suite file")
    if args.task and not (args.train and args.eval):
        raise cli.UsageError(f"--task {args.task} needs --train FILE and --eval FILE "
                             f"(the seeds' tables: {TASKS[args.task].splits})")
    qa_only = [k for k in overrides if k in ("doc_stride", "max_query_length", "max_answer_length")]
    if args.task and qa_only and args.task != "korquad":
        raise cli.UsageError(f"--{qa_only[0].replace('_', '-')} applies to --task korquad only")
    name, count = args.model.rstrip("/"), args.seeds
    if args.task:
        task = TASKS[args.task]
        runs = [TaskRun(task.name, args.train, args.eval, task.defaults.updated(overrides))]
    else:
        try:
            suite = read_suite(args.suite, overrides)
        except SuiteError as error:
            raise cli.UsageError(str(error)) from error
        runs, name, count = suite.runs, suite.name or name, count or suite.seeds
    count = count or 3
    return runs, args.name or name, list(range(args.seed, args.seed + count))


def read_task_files(runs: list) -> dict[str, tuple]:
    """Every task's train and eval files, read and checked before any fine-tuning starts."""
    from distill.tasks import TASKS

    data = {}
    for run in runs:
        reader = TASKS[run.task].reader
        data[run.task] = (reader(run.train), reader(run.eval))
    return data


def evaluate(args: argparse.Namespace, progress: cli.Progress) -> dict:
    """The report: fine-tuned tasks (--task, --suite), masked-LM metrics (--shards), the sentiment check."""
    fine_tuning = bool(args.task or args.suite or args.train or args.eval)
    if not (fine_tuning or args.shards or args.sentiment):
        raise cli.UsageError("nothing to evaluate: give --task with --train and --eval, --suite, --shards and/or "
                             "--sentiment")
    if not fine_tuning:
        given = [flag for flag, _, _ in options.FINETUNE_OPTIONS if getattr(args, flag[2:].replace("-", "_")) is not None]
        given += [flag for flag, value in (("--seeds", args.seeds), ("--name", args.name)) if value is not None]
        given += ["--precision"] if args.precision != "auto" else []
        if given:
            raise cli.UsageError(f"{given[0]} applies to fine-tuning on tasks (--task or --suite); the --sentiment "
                                 "check has its own --sentiment-* options")
    runs, name, seeds = plan_tasks(args) if fine_tuning else ([], None, [])
    task_data = read_task_files(runs)
    import torch

    from distill import device as devices
    from distill.models import quiet_transformers

    quiet_transformers(args.verbose)
    device = torch.device("cuda" if devices.choose_device(args.device) == "cuda" else "cpu")
    report: dict = {"model": args.model}
    if runs:
        report.update(score_tasks(args, runs, task_data, name, seeds, device, progress))
    if args.shards:
        report.update(shards=args.shards, split=args.split, masked_lm=score_shards(args, device, progress))
    if args.sentiment:
        report["sentiment"] = score_sentiment(args, device, progress)
    return report


def score_tasks(args: argparse.Namespace, runs: list, task_data: dict, name: str, seeds: list[int], device,
                progress: cli.Progress) -> dict:
    from distill.finetune import resolve_precision, run_task
    from distill.tasks import TASKS, table

    if args.precision == "bf16" and device.type == "cpu":
        raise cli.UsageError("--precision bf16 is for GPUs; the CPU fine-tunes in fp32 (--precision auto)")
    precision = resolve_precision(args.precision, device)
    results = {}
    for run in runs:
        train, evaluation = task_data[run.task]
        result = run_task(TASKS[run.task], args.model, train, evaluation, run.hyperparameters, seeds, device,
                          precision, progress, sample_seed=args.seed)
        results[run.task] = {"train": run.train, "eval": run.eval, **result}
    parameters = next(iter(results.values()))["parameters"]
    return {
        "name": name,
        "device": device.type,
        "precision": precision,
        "seeds": seeds,
        "parameters": parameters,
        "tasks": results,
        "table": {"header": table.header(), "separator": table.separator(), "row": table.row(name, results, parameters)},
    }


def score_shards(args: argparse.Namespace, device, progress: cli.Progress) -> dict:
    from distill.data import ShardBatches, open_shard_dir, open_split
    from distill.masking import masking_spec
    from distill.scoring import check_model, load_masked_lm, masked_lm_metrics

    shards = open_shard_dir(args.shards)
    split = open_split(shards, args.split)
    model = load_masked_lm(args.model, device)
    check_model(model, "the model", args.model, shards)
    teacher = None
    if args.teacher:
        teacher = load_masked_lm(args.teacher, device, "--teacher")
        check_model(teacher, "the teacher", args.teacher, shards)
    batches = ShardBatches(
        split,
        args.batch_size,
        seed=args.seed,
        masking=masking_spec(shards.vocab, shards.special_ids, shards.seq_len, args.mlm_probability),
        pad_id=shards.special_ids["pad"],
        repeat=False,
        attention_scope=args.attention_scope,
        cls_id=shards.special_ids["cls"],
        sep_id=shards.special_ids["sep"],
    )
    total = min(batches.batches_per_epoch(), args.max_batches or batches.batches_per_epoch())
    progress.say(f"masked-LM metrics of {args.model} on {total:,} {args.split} batches")
    return masked_lm_metrics(model, teacher, batches, device, args.max_batches,
                             progress=lambda done: progress.count(done, "batches", total))


def score_sentiment(args: argparse.Namespace, device, progress: cli.Progress) -> dict:
    from distill.finetune import finetune_sentiment, read_sentiment_file

    data = read_sentiment_file(args.sentiment, args.sentiment_format)
    return finetune_sentiment(
        args.model,
        data,
        device=device,
        epochs=args.sentiment_epochs,
        batch_size=args.sentiment_batch_size,
        lr=args.sentiment_lr,
        max_length=args.sentiment_max_length,
        test_fraction=args.sentiment_test_fraction,
        max_examples=args.sentiment_max_examples,
        seed=args.seed,
        progress=progress,
    )


def format_metric(mean: float | None, std: float | None, runs: int) -> str:
    if mean is None:
        return "undefined"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if runs > 1 else "")


def task_lines(report: dict) -> list[str]:
    lines = []
    for name, result in report["tasks"].items():
        runs = len(result["runs"])
        shown = ", ".join(f"{metric} {format_metric(result['mean'][metric], result['std'][metric], runs)}"
                          for metric in result["mean"])
        examples = result["examples"]
        lines.append(f"{name} ({result['dataset']}, {examples['train']:,} training / {examples['eval']:,} evaluation "
                     f"examples, {runs} run(s)): {shown}")
        for baseline in result["baselines"]:
            values = ", ".join(f"{metric} {format_metric(value, 0, 1)}" for metric, value in baseline["metrics"].items()
                               if metric in result["primary"])
            lines.append(f"  baseline, {baseline['name']}: {values}")
    table = report["table"]
    return [*lines, "", table["header"], table["separator"], table["row"]]


def human_summary(report: dict) -> str:
    lines = [f"model {report['model']}"]
    if "tasks" in report:
        lines += task_lines(report)
    if "masked_lm" in report:
        m = report["masked_lm"]
        line = (f"masked LM ({report['split']}, {m['masked_tokens']:,} masked tokens): accuracy {m['mlm_accuracy']:.4f}, "
                f"loss {m['mlm_loss']:.4f}, perplexity {m['perplexity']:,.1f}")
        if "teacher_agreement" in m:
            line += f", teacher agreement {m['teacher_agreement']:.4f}"
        lines.append(line)
    if "sentiment" in report:
        s = report["sentiment"]
        lines.append(f"sentiment: accuracy {s['accuracy']:.4f} on {s['test_examples']:,} held-out examples "
                     f"(majority baseline {s['majority_baseline']:.4f}; trained on {s['train_examples']:,})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = options.evaluate_parser().parse_args(argv)

    def body() -> None:
        try:
            report = evaluate(args, cli.Progress(options.EVALUATE, not args.quiet))
        except ValueError as error:  # includes TokenShardError, VocabularyMismatch and TokenizerSourceError
            raise cli.UsageError(str(error)) from error
        if args.output:
            from transforms.storage import write_json_atomic

            write_json_atomic(args.output, report)
        cli.emit_summary(args, human_summary(report), report)

    return cli.run_command(options.EVALUATE, body)


if __name__ == "__main__":
    raise SystemExit(main())
