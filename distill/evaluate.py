"""`python -m distill.evaluate`: how good is a (distilled) masked LM on the validation shards?

    python -m distill.evaluate --model DIR --shards DIR [--teacher PATH] [--sentiment FILE]

Reports, as one JSON object on stdout (and in --output FILE): masked-token accuracy, loss and
perplexity on the validation split with deterministic masking (--seed), top-1 agreement with
the teacher at the masked positions (--teacher), and with --sentiment the accuracy of a
classifier fine-tuned from the model on NSMC-style sentiment data (see distill.finetune).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from distill import device as devices
from distill.data import ShardBatches, ShardDir, open_shard_dir, open_split
from distill.finetune import finetune_sentiment, read_sentiment_file
from distill.masking import masking_spec
from distill.models import check_vocabulary, gather_slots, model_vocabulary
from transforms.storage import write_json_atomic


def load_masked_lm(name_or_path: str, device: torch.device) -> BertForMaskedLM:
    try:
        model = AutoModelForMaskedLM.from_pretrained(name_or_path, attn_implementation="sdpa")
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load {name_or_path!r} as a masked LM: {error}") from error
    return model.to(device).eval()


def check_model(model: BertForMaskedLM, who: str, name_or_path: str, shards: ShardDir) -> None:
    """Same vocabulary as the shards, and positions for their sequence length."""
    check_vocabulary(who, model.config.vocab_size, model_vocabulary(name_or_path), shards.vocab)
    if shards.seq_len > model.config.max_position_embeddings:
        raise ValueError(f"{who} has {model.config.max_position_embeddings} positions, the shards' sequences {shards.seq_len} tokens")


def slot_logits(model: BertForMaskedLM, batch: dict) -> torch.Tensor:
    """MLM logits at the prediction slots only, [batch, slots, vocab], in float32."""
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return model.cls(gather_slots(hidden, batch["positions"])).float()


@torch.no_grad()
def masked_lm_metrics(model: BertForMaskedLM, teacher: BertForMaskedLM | None, batches, device: torch.device,
                      max_batches: int | None = None) -> dict:
    """Accumulate loss, accuracy (and teacher agreement) over the masked positions of the batches."""
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, agree, teacher correct
    count = 0
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        targets = batch["targets"]
        filled = targets != -100
        logits = slot_logits(model, batch)
        predictions = logits.argmax(dim=-1)
        totals[0] += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        totals[1] += ((predictions == targets) & filled).sum()
        if teacher is not None:
            teacher_predictions = slot_logits(teacher, batch).argmax(dim=-1)
            totals[2] += ((predictions == teacher_predictions) & filled).sum()
            totals[3] += ((teacher_predictions == targets) & filled).sum()
        count += int(filled.sum())
    if count == 0:
        raise ValueError("no masked tokens in the evaluated batches")
    loss, correct, agree, teacher_correct = totals.tolist()
    metrics = {
        "masked_tokens": count,
        "mlm_loss": loss / count,
        "perplexity": math.exp(min(loss / count, 700.0)),
        "mlm_accuracy": correct / count,
    }
    if teacher is not None:
        metrics.update(teacher_agreement=agree / count, teacher_mlm_accuracy=teacher_correct / count)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (e.g. OUTPUT/student) or hub id")
    parser.add_argument("--shards", help="token shard directory; masked-LM metrics on its validation split")
    parser.add_argument("--teacher", help="teacher for top-1 agreement at masked positions")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0, help="masking (and fine-tuning) seed")
    parser.add_argument("--max-batches", type=int, help="evaluate only the first N batches")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--sentiment", help="NSMC-style sentiment file (.jsonl with text+rating/label, or .tsv)")
    parser.add_argument("--sentiment-epochs", type=int, default=1)
    parser.add_argument("--sentiment-batch-size", type=int, default=32)
    parser.add_argument("--sentiment-lr", type=float, default=5e-5)
    parser.add_argument("--sentiment-max-length", type=int, default=128)
    parser.add_argument("--sentiment-test-fraction", type=float, default=0.1)
    parser.add_argument("--sentiment-max-examples", type=int, help="use a seeded sample of at most N examples")
    parser.add_argument("--output", help="also write the JSON report to this file")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    if not args.shards and not args.sentiment:
        raise ValueError("nothing to evaluate: give --shards and/or --sentiment")
    device = torch.device("cuda" if devices.choose_device(args.device) == "cuda" else "cpu")
    report: dict = {"model": args.model}
    if args.shards:
        shards = open_shard_dir(args.shards)
        split = open_split(shards, args.split)
        model = load_masked_lm(args.model, device)
        check_model(model, "the model", args.model, shards)
        teacher = None
        if args.teacher:
            teacher = load_masked_lm(args.teacher, device)
            check_model(teacher, "the teacher", args.teacher, shards)
        batches = ShardBatches(
            split,
            args.batch_size,
            seed=args.seed,
            masking=masking_spec(shards.vocab, shards.special_ids, shards.seq_len, args.mlm_probability),
            pad_id=shards.special_ids["pad"],
            repeat=False,
        )
        report["shards"] = args.shards
        report["split"] = args.split
        report["masked_lm"] = masked_lm_metrics(model, teacher, batches, device, args.max_batches)
        del model, teacher
    if args.sentiment:
        data = read_sentiment_file(args.sentiment)
        report["sentiment"] = finetune_sentiment(
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
        )
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(args)
    except ValueError as error:  # includes TokenShardError and VocabularyMismatch
        print(f"distill.evaluate: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.output:
        write_json_atomic(str(Path(args.output)), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
