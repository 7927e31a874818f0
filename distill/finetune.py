"""Downstream check: fine-tune a sequence classifier on NSMC-style sentiment and report accuracy.

Input formats (docs/distill.md#sentiment-files), read through the one I/O layer
(`transforms.storage.open_decompressed`: gz, bz2, xz and zst by suffix, a truncated file is an
error) with the format taken from the suffix as everywhere else (`transforms.reading.detect_format`):

- JSON lines (`.jsonl`, `.json`): `text` and either `rating` (NSMC's convention, `rating_label`)
  or `label` (0/1);
- TSV (`.tsv`): a header naming a text column (`text` or `document`) and `label`, or headerless
  `text<TAB>label` rows;
- `.txt` is plain text elsewhere in the project, so it is read as TSV only when its first line is
  such a header (NSMC's `ratings_*.txt`), or with an explicit format (`--sentiment-format tsv`).

Texts go through the corpus cleaner (transforms.clean.clean_text), as the pretraining text did.
Every line read is either kept or counted under a drop reason.

See docs/distill.md, "Sentiment files".
"""
from __future__ import annotations

import json
import lzma
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.cli import Progress
from transforms import storage
from transforms.clean import clean_text
from transforms.reading import detect_format, iter_lines

FORMATS = ("jsonl", "tsv")
TEXT_COLUMNS = ("text", "document")
MAX_LINE_BYTES = 1 << 20  # a longer line is counted as malformed
READ_FAILURES = (EOFError, OSError, lzma.LZMAError, zlib.error)  # truncated or corrupt compressed input


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


def tsv_header(line: str) -> tuple[int, int] | None:
    """(text column, label column) when the line is a header naming them, else None."""
    header = line.rstrip("\r\n").lstrip("\ufeff").split("\t")
    text_name = next((name for name in TEXT_COLUMNS if name in header), None)
    return (header.index(text_name), header.index("label")) if text_name and "label" in header else None


def resolve_format(path: str, requested: str, first_line: str) -> str:
    """jsonl or tsv: the requested one, or the suffix's (transforms.reading.detect_format); a `.txt`
    (plain text elsewhere) only with a TSV header such as NSMC's ratings_*.txt."""
    if requested in FORMATS:
        return requested
    if requested != "auto":
        raise ValueError(f"sentiment format must be auto, {' or '.join(FORMATS)}, not {requested!r}")
    detected = detect_format(path)
    detected = "jsonl" if detected == "json" else detected  # .json: read here as JSON lines, as before
    if detected in FORMATS:
        return detected
    if detected == "text" and tsv_header(first_line) is not None:
        return "tsv"
    raise ValueError(f"{path}: the name says {detected}, not a sentiment format: give JSON lines (.jsonl, .json), "
                     "TSV (.tsv, or .txt with a text/document and label header), or --sentiment-format")


def read_sentiment_file(path, fmt: str = "auto") -> SentimentData:
    """Read labelled texts; `fmt` auto, jsonl or tsv (see the module docstring)."""
    path = str(path)
    if not storage.is_file(path):
        raise ValueError(f"sentiment file {path} does not exist")
    try:
        with storage.open_decompressed(path) as stream:
            data = _read_lines(path, fmt, iter_lines(stream, MAX_LINE_BYTES))
    except READ_FAILURES as error:
        raise ValueError(f"{path} cannot be read to its end (truncated or corrupt?): {error}") from error
    if len(set(data.labels)) < 2:
        raise ValueError(f"{path}: need examples of both classes, kept {len(data.texts)} with labels {sorted(set(data.labels))}")
    return data


def _read_lines(path: str, fmt: str, raw_lines: Iterator[bytes | None]) -> SentimentData:
    first = next(raw_lines, b"")
    first_text = first.decode("utf-8", errors="replace") if first is not None else ""
    fmt = resolve_format(path, fmt, first_text)
    columns = (0, 1)
    if fmt == "tsv" and (header := tsv_header(first_text)) is not None:
        columns = header
    else:
        raw_lines = _chain(first, raw_lines)
    counts: Counter = Counter()
    texts: list[str] = []
    labels: list[int] = []
    for raw in raw_lines:
        if raw is not None and not raw.strip():
            continue
        counts["read"] += 1
        text, label = _parse_line(raw, fmt, columns)
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
    return SentimentData(texts, labels, dict(counts))


def _chain(first: bytes | None, rest: Iterator[bytes | None]) -> Iterator[bytes | None]:
    yield first
    yield from rest


def _parse_line(raw: bytes | None, fmt: str, columns: tuple[int, int]) -> tuple[str | None, int | None]:
    """(text, label) of one line; text None when the line is malformed (too long, not UTF-8, not
    parseable), label None when it has no usable label."""
    try:
        line = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        line = None
    if line is None:
        return None, None
    if fmt == "jsonl":
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None, None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return None, None
        if "rating" in record:
            return record["text"], rating_label(record["rating"])
        return record["text"], record.get("label") if record.get("label") in (0, 1) else None
    fields = line.split("\t")
    text_column, label_column = columns
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


def model_tokenizer(model_dir: str):
    """The model's own tokenizer; a model directory without tokenizer files is refused (transformers 5
    would hand back a five-token tokenizer, and every text would become [UNK])."""
    from distill.models import check_model_path
    from tokenizer_training.loading import model_vocabulary

    check_model_path(model_dir, "--model")
    if model_vocabulary(model_dir, "--model") is None:
        raise ValueError(f"--model {model_dir} has no tokenizer files (tokenizer.json or vocab.txt), which the "
                         "sentiment check needs to tokenize its texts; copy them from the shards' tokenizer/")
    return AutoTokenizer.from_pretrained(model_dir)


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
    progress: Progress | None = None,
) -> dict:
    """Fine-tune AutoModelForSequenceClassification(model_dir) on the training part, report test accuracy."""
    progress = progress or Progress("distill.finetune", enabled=False)
    torch.manual_seed(seed)
    count = len(data.texts) if max_examples is None else min(max_examples, len(data.texts))
    subset = np.random.default_rng(seed + 1).permutation(len(data.texts))[:count]
    texts = [data.texts[i] for i in subset]
    labels = torch.tensor([data.labels[i] for i in subset])
    train_idx, test_idx = split_indices(count, test_fraction, seed)
    tokenizer = model_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).to(device)
    max_length = min(max_length, model.config.max_position_embeddings)

    def encode(indices: np.ndarray) -> dict:
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return {key: value.to(device) for key, value in batch.items()}

    progress.say(f"fine-tuning {model_dir} on {len(train_idx):,} sentiment examples, {epochs} epoch(s)")
    train_classifier(model, encode, labels, train_idx, epochs, batch_size, lr, seed, progress)
    progress.say(f"testing on {len(test_idx):,} held-out examples")
    correct = count_correct(model, encode, labels, test_idx, batch_size)
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


def train_classifier(model, encode, labels: torch.Tensor, train_idx: np.ndarray, epochs: int, batch_size: int,
                     lr: float, seed: int, progress: Progress) -> None:
    """AdamW with linear decay to 0, gradient clipping at 1, a seeded order per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    device = next(model.parameters()).device
    model.train()
    rng = np.random.default_rng(seed + 2)
    done = 0
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
            done += 1
            progress.count(done, "fine-tuning steps", steps)


def count_correct(model, encode, labels: torch.Tensor, test_idx: np.ndarray, batch_size: int) -> int:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_idx), batch_size):
            indices = test_idx[start : start + batch_size]
            predictions = model(**encode(indices)).logits.argmax(dim=-1).cpu()
            correct += int((predictions == labels[indices]).sum())
    return correct
