"""`python -m distill.train`: distil a teacher BERT into a small student from token shards.

    python -m distill.train --shards DIR --teacher PATH_OR_HUB_ID --output DIR [options]

Writes DIR/distill_config.json (what is trained), DIR/train_config.json (how), DIR/metrics.jsonl,
DIR/checkpoints/step-N/ and, at the end, DIR/student/ (a Hugging Face model directory with the
tokenizer). A non-empty DIR is refused unless --resume (continue it) or --overwrite (replace
what distill.train wrote there). Multi-GPU: `torchrun --nproc_per_node N -m distill.train ...`;
TPU: `--device xla`. Options, outputs and examples: docs/distill.md; the command-line
convention: docs/cli.md.

This module stays light (argparse and the output checks): torch and transformers are imported
by distill.loop, after the options are parsed.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext

from distill import options
from pipeline import cli


def run(args: argparse.Namespace) -> dict | None:
    """Check --output, hold its lock, train; the run's summary (None on ranks other than 0)."""
    options.check_sources(args)
    main_rank = options.launched_rank() == 0
    with cli.OutputLock(args.output) if main_rank else nullcontext():
        if main_rank:
            options.check_output(args.output, args.resume, args.overwrite)
        from distill import loop  # torch, transformers: only now

        loop.run(args)
    return options.run_summary(args.output) if main_rank else None


def main(argv: list[str] | None = None) -> int:
    args = options.train_parser().parse_args(argv)

    def body() -> None:
        summary = run(args)
        if summary is not None:
            cli.emit_summary(args, options.human_summary(summary), summary)

    return cli.run_command(options.TRAIN, body)


if __name__ == "__main__":
    raise SystemExit(main())
