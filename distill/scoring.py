"""Masked-LM metrics of a model on token shards: loss, accuracy, perplexity, agreement with a teacher.

The heavy half of `python -m distill.evaluate` (torch, transformers), imported after its options
are parsed. Masking is deterministic for a seed (distill.data's per-batch seeding), so two
models scored with the same seed see the same masked positions. See docs/distill.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from distill.attention import allowed_pairs, attention_bias
from distill.data import ShardDir
from distill.models import check_model_path, check_vocabulary, encode, gather_slots, model_vocabulary


def load_masked_lm(name_or_path: str, device: torch.device, who: str = "--model") -> BertForMaskedLM:
    check_model_path(name_or_path, who)
    try:
        model = AutoModelForMaskedLM.from_pretrained(name_or_path, attn_implementation="sdpa")
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load {name_or_path!r} as a masked LM: {error}") from error
    return model.to(device).eval()


def check_model(model: BertForMaskedLM, who: str, name_or_path: str, shards: ShardDir) -> None:
    """Same vocabulary as the shards, and positions for their sequence length."""
    check_vocabulary(who, model.config.vocab_size, model_vocabulary(name_or_path, who), shards.vocab)
    if shards.seq_len > model.config.max_position_embeddings:
        raise ValueError(f"{who} has {model.config.max_position_embeddings} positions, the shards' sequences {shards.seq_len} tokens")


def slot_logits(model: BertForMaskedLM, batch: dict) -> torch.Tensor:
    """MLM logits at the prediction slots only, [batch, slots, vocab], in float32, under the batch's
    attention scope (each document alone by default, as distill.train trains)."""
    bias = attention_bias(allowed_pairs(batch["segments"]), model.dtype)
    hidden = encode(model.bert, batch["input_ids"], bias, batch["position_ids"])
    return model.cls(gather_slots(hidden, batch["positions"])).float()


@torch.no_grad()
def masked_lm_metrics(model: BertForMaskedLM, teacher: BertForMaskedLM | None, batches, device: torch.device,
                      max_batches: int | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """Accumulate loss, accuracy (and teacher agreement) over the masked positions of the batches;
    `progress(batches done)` after each batch."""
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
        if progress is not None:
            progress(index + 1)
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
