"""`python -m distill.evaluate`: how good is a (distilled) masked LM on the validation shards?

    python -m distill.evaluate --model DIR --shards DIR [--teacher PATH] [--sentiment FILE] [--json]

Reports masked-token accuracy, loss and perplexity on a shard split with deterministic masking
(--seed), top-1 agreement with the teacher at the masked positions (--teacher), and with
--sentiment the accuracy of a classifier fine-tuned from the model on NSMC-style sentiment data
(distill.finetune). The summary goes to stdout (with --json the whole report as JSON, which
--output FILE also receives); progress lines to stderr. See docs/distill.md and docs/cli.md.

This module stays light: torch and transformers are imported after the options are parsed.
"""
from __future__ import annotations

import argparse

from distill import options
from pipeline import cli


def evaluate(args: argparse.Namespace, progress: cli.Progress) -> dict:
    """The report: masked-LM metrics (--shards) and/or the sentiment check (--sentiment)."""
    if not args.shards and not args.sentiment:
        raise cli.UsageError("nothing to evaluate: give --shards and/or --sentiment")
    import torch

    from distill import device as devices
    from distill.models import quiet_transformers

    quiet_transformers(args.verbose)
    device = torch.device("cuda" if devices.choose_device(args.device) == "cuda" else "cpu")
    report: dict = {"model": args.model}
    if args.shards:
        report.update(shards=args.shards, split=args.split, masked_lm=score_shards(args, device, progress))
    if args.sentiment:
        report["sentiment"] = score_sentiment(args, device, progress)
    return report


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


def human_summary(report: dict) -> str:
    lines = [f"model {report['model']}"]
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
