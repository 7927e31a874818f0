"""Downstream check: fine-tune a sequence classifier on NSMC-style sentiment and report accuracy.

Input: JSON lines with `text` and either `rating` (NSMC's convention: 1-4 negative, 9-10
positive, 5-8 dropped) or `label` (0/1); or TSV with a header naming a text column (`text`
or `document`) and `label`, or headerless `text<TAB>label` rows (the NSMC ratings_*.txt
files have the header form). `.xz`, `.gz` and `.bz2` files are read transparently. Texts go
through the corpus cleaner (transforms.clean.clean_text), as the pretraining text did.
Every line read is either kept or counted under a drop reason.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from transforms.clean import clean_text

OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


@dataclass(frozen=True)
class SentimentData:
    texts: list[str]
    labels: list[int]
    counts: dict[str, int]  # lines read, kept, and each drop reason


def rating_label(rating) -> int | None:
    """NSMC: ratings 1-4 are negative (0), 9-10 positive (1), anything else has no label."""
    if isinstance(rating, bool) or not isinstance(rating, (int, float)):
        return None
    return 0 if 1 <= rating <= 4 else 1 if 9 <= rating <= 10 else None


def _open_text(path: Path):
    opener = OPENERS.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8")


def read_sentiment_file(path: str | Path) -> SentimentData:
    """Read labelled texts (format from the file name: .jsonl/.json or .tsv/.txt, before any compression suffix)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sentiment file {path} does not exist")
    kind = Path(path.stem).suffix if path.suffix in OPENERS else path.suffix
    if kind not in (".jsonl", ".json", ".tsv", ".txt"):
        raise ValueError(f"{path}: sentiment files are .jsonl/.json or .tsv/.txt (optionally .xz/.gz/.bz2)")
    counts: Counter = Counter()
    texts: list[str] = []
    labels: list[int] = []
    with _open_text(path) as handle:
        lines = iter(handle)
        text_column = label_column = None
        if kind in (".tsv", ".txt"):
            first = next(lines, "")
            header = first.rstrip("\n").split("\t")
            text_name = next((name for name in ("text", "document") if name in header), None)
            if text_name and "label" in header:
                text_column, label_column = header.index(text_name), header.index("label")
            else:
                text_column, label_column = 0, 1
                lines = iter([first, *lines])
        for line in lines:
            if not line.strip():
                continue
            counts["read"] += 1
            text, label = _parse_line(line, kind, text_column, label_column)
            if text is None:
                counts["dropped_malformed"] += 1
            elif label is None:
                counts["dropped_unlabelled"] += 1
            elif not (cleaned := clean_text(text)):
                counts["dropped_empty"] += 1
            else:
                texts.append(cleaned)
                labels.append(label)
    counts["kept"] = len(texts)
    if len(set(labels)) < 2:
        raise ValueError(f"{path}: need examples of both classes, kept {len(texts)} with labels {sorted(set(labels))}")
    return SentimentData(texts, labels, dict(counts))


def _parse_line(line: str, kind: str, text_column: int | None, label_column: int | None) -> tuple[str | None, int | None]:
    """(text, label) of one line; text None when the line is malformed, label None when it has no usable label."""
    if kind in (".jsonl", ".json"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None, None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return None, None
        if "rating" in record:
            return record["text"], rating_label(record["rating"])
        return record["text"], record.get("label") if record.get("label") in (0, 1) else None
    fields = line.rstrip("\n").split("\t")
    if len(fields) <= max(text_column, label_column):
        return None, None
    label = fields[label_column].strip()
    return fields[text_column], int(label) if label in ("0", "1") else None


def split_indices(count: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded permutation, the first test_fraction held out."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(1, int(round(count * test_fraction)))
    return order[held_out:], order[:held_out]


def finetune_sentiment(
    model_dir: str,
    data: SentimentData,
    *,
    device: torch.device,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 5e-5,
    max_length: int = 128,
    test_fraction: float = 0.1,
    max_examples: int | None = None,
    seed: int = 0,
) -> dict:
    """Fine-tune AutoModelForSequenceClassification(model_dir) on the training part, report test accuracy."""
    torch.manual_seed(seed)
    count = len(data.texts) if max_examples is None else min(max_examples, len(data.texts))
    subset = np.random.default_rng(seed + 1).permutation(len(data.texts))[:count]
    texts = [data.texts[i] for i in subset]
    labels = torch.tensor([data.labels[i] for i in subset])
    train_idx, test_idx = split_indices(count, test_fraction, seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).to(device)
    max_length = min(max_length, model.config.max_position_embeddings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))

    def encode(indices: np.ndarray) -> dict:
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return {key: value.to(device) for key, value in batch.items()}

    model.train()
    rng = np.random.default_rng(seed + 2)
    for _ in range(epochs):
        order = train_idx[rng.permutation(len(train_idx))]
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            loss = model(**encode(indices), labels=labels[indices].to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_idx), batch_size):
            indices = test_idx[start : start + batch_size]
            predictions = model(**encode(indices)).logits.argmax(dim=-1).cpu()
            correct += int((predictions == labels[indices]).sum())
    majority = max(int(labels[test_idx].sum()), len(test_idx) - int(labels[test_idx].sum())) / len(test_idx)
    return {
        "examples": count,
        "train_examples": len(train_idx),
        "test_examples": len(test_idx),
        "epochs": epochs,
        "accuracy": correct / len(test_idx),
        "majority_baseline": majority,
        "counts": data.counts,
    }
