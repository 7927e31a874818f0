"""Fine-tuning a model on one task and scoring it: the torch half of `distill.evaluate --task/--suite`.

The pieces, composed per task from the registry (`distill.tasks.TASKS`):

- `featurize`: the task's examples through its featurizer (`distill.tasks.features`) with the
  model's own tokenizer;
- the head: `HEADS` maps the task's head kind to the transformers AutoModel class (sequence
  classification, regression as a one-output sequence classifier with MSE, token classification,
  extractive QA) and `decode` turns its outputs into predictions;
- `train_model`: AdamW (no decay on biases and LayerNorm weights), linear warm-up and decay to 0,
  gradient clipping; batches in a seeded order, padded to their longest feature; bf16 autocast on
  GPUs that have it, fp32 on the CPU;
- `predict` then `score` (the task's metrics, `distill.tasks.metrics`) and `baselines` (majority
  class, constant score, all-O tagging) on the same evaluation examples.

`run_task` does it for each fine-tuning seed: the seed sets the head's initialisation, dropout and
the batch order, so a run is repeatable for a seed on the CPU. The `--sentiment` check
(`finetune_sentiment`) is the same machinery on one file with a held-out part.

See docs/evaluate.md.
"""
from __future__ import annotations

import inspect
import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from distill.tasks import QA_ONLY, HyperParameters, Task, metrics
from distill.tasks.features import (IGNORE, Features, TaskTokenizer, best_spans, qa_features, text_features,
                                    token_features)
from distill.tasks.readers import Dataset, TextExample
from distill.tasks.sentiment import SentimentData, read_sentiment_file, split_indices  # noqa: F401 (re-exported)
from pipeline.cli import Progress


def head_class(head: str):
    from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    return {"sequence": AutoModelForSequenceClassification, "regression": AutoModelForSequenceClassification,
            "token": AutoModelForTokenClassification, "qa": AutoModelForQuestionAnswering}[head]


def load_head(model: str, head: str, labels: tuple[str, ...] | None):
    """The model with a freshly initialised task head (torch's RNG: seed first)."""
    from distill.models import check_model_path

    check_model_path(model, "--model")
    kwargs: dict = {}
    if head == "regression":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    elif head in ("sequence", "token"):
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
        if head == "sequence":
            kwargs["problem_type"] = "single_label_classification"
    try:
        return head_class(head).from_pretrained(model, **kwargs)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load --model {model!r} with a {head} head: {error}") from error


def model_config(model: str):
    from transformers import AutoConfig

    from distill.models import check_model_path

    check_model_path(model, "--model")
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load --model {model!r}: {error}") from error


def sample(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded sample of at most `limit` examples, in file order (the same for every fine-tuning seed)."""
    if limit is None or limit >= len(dataset.examples):
        return dataset
    keep = np.sort(np.random.default_rng(seed).permutation(len(dataset.examples))[:limit])
    return Dataset([dataset.examples[i] for i in keep], dataset.labels, dataset.counts)


def featurize(task: Task, dataset: Dataset, tokenizer: TaskTokenizer, hp: HyperParameters, train: bool) -> Features:
    if task.head in ("sequence", "regression"):
        return text_features(dataset.examples, tokenizer, hp.max_length, task.head == "regression")
    if task.head == "token":
        return token_features(dataset.examples, tokenizer, hp.max_length)
    return qa_features(dataset.examples, tokenizer, hp.max_length, hp.doc_stride, hp.max_query_length, train)


# ---------------------------------------------------------------- batches


def pad(rows: list[np.ndarray], value: int) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def collate(features: Features, indices, pad_id: int, device: torch.device, with_types: bool,
            with_targets: bool) -> dict[str, torch.Tensor]:
    rows = [features.input_ids[i] for i in indices]
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int64)
    batch = {"input_ids": torch.from_numpy(pad(rows, pad_id)), "attention_mask": torch.from_numpy(mask)}
    if with_types:
        batch["token_type_ids"] = torch.from_numpy(pad([features.token_type_ids[i] for i in indices], 0))
    if with_targets:
        for name, values in features.targets.items():
            if isinstance(values, list):
                batch[name] = torch.from_numpy(pad([values[i] for i in indices], IGNORE))
            else:
                batch[name] = torch.from_numpy(values[np.asarray(indices)])
    return {name: tensor.to(device) for name, tensor in batch.items()}


def uses_token_types(model) -> bool:
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    return accepts and getattr(model.config, "type_vocab_size", 0) >= 2


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 on a GPU that has it, fp32 otherwise."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


# ---------------------------------------------------------------- training and prediction


def linear_schedule(warmup: int, total: int):
    """transformers' get_linear_schedule_with_warmup as a LambdaLR factor."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def train_model(model, features: Features, hp: HyperParameters, seed: int, pad_id: int, device: torch.device,
                precision: str, progress: Progress) -> dict:
    """Fine-tune in place; returns the step count and the last logged loss."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, eps=hp.adam_eps)
    per_epoch = math.ceil(len(features) / hp.batch_size)
    total = hp.epochs * per_epoch
    warmup = int(total * hp.warmup_proportion)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    rng = np.random.default_rng(seed)
    with_types = uses_token_types(model)
    model.train()
    done, loss_value, started = 0, None, time.perf_counter()
    for _ in range(hp.epochs):
        order = rng.permutation(len(features))
        for start in range(0, len(order), hp.batch_size):
            batch = collate(features, order[start : start + hp.batch_size], pad_id, device, with_types, True)
            with autocast(device, precision):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == total or done % 50 == 0:
                loss_value = float(loss.detach())
            progress.tick(lambda: f"{done:,} of {total:,} fine-tuning steps ({done / total:.0%}), "
                                  f"{done / (time.perf_counter() - started):.1f}/s")
    return {"steps": total, "final_loss": loss_value}


@torch.no_grad()
def predict(model, features: Features, batch_size: int, pad_id: int, device: torch.device,
            precision: str) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Each feature's output (float32, cut to its own length for per-token outputs), in feature order;
    batches of similar length."""
    model.eval()
    with_types = uses_token_types(model)
    order = np.argsort(features.lengths(), kind="stable")
    outputs: dict[str, list] = {}
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        with autocast(device, precision):
            result = model(**collate(features, indices, pad_id, device, with_types, False))
        for name in ("logits", "start_logits", "end_logits"):
            value = getattr(result, name, None)
            if value is None:
                continue
            value = value.float().cpu().numpy()
            per_token = name != "logits" or value.ndim == 3  # [batch, seq(, labels)] rather than [batch, labels]
            slots = outputs.setdefault(name, [None] * len(features))
            for row, index in zip(value, indices):
                slots[index] = row[: len(features.input_ids[index])] if per_token else row
    if "start_logits" in outputs:
        return outputs["start_logits"], outputs["end_logits"]
    return outputs["logits"]


def decode(task: Task, outputs, features: Features, dataset: Dataset, hp: HyperParameters):
    """Predictions in the form the task's metric reads."""
    if task.head == "sequence":
        return np.asarray([int(np.argmax(row)) for row in outputs])
    if task.head == "regression":
        return np.asarray([float(row[0]) for row in outputs])
    if task.head == "token":
        predicted = []
        for example, row, words in zip(dataset.examples, outputs, features.extra["word_index"]):
            tags = [0] * len(example.words)  # words cut by max_length: O
            for position in np.flatnonzero(words >= 0):
                tags[words[position]] = int(np.argmax(row[position]))
            predicted.append([dataset.labels[t] for t in tags])
        return predicted
    start_logits, end_logits = outputs
    return best_spans(start_logits, end_logits, features, dataset.examples, hp.n_best, hp.max_answer_length)


def score(task: Task, dataset: Dataset, predictions) -> dict[str, float | None]:
    """The task's metrics of `predictions` on `dataset` (fractions)."""
    if task.head == "sequence":
        gold = np.asarray([e.label for e in dataset.examples])
        return {"accuracy": metrics.accuracy(gold, predictions), "macro_f1": metrics.macro_f1(gold, predictions)}
    if task.head == "regression":
        gold = np.asarray([e.label for e in dataset.examples], dtype=np.float64)
        mse = float(np.mean((np.asarray(predictions, dtype=np.float64) - gold) ** 2))
        return {**metrics.correlations(gold, predictions), "mse": mse}
    if task.head == "token":
        gold = [[dataset.labels[t] for t in e.tags] for e in dataset.examples]
        return metrics.entity_scores(gold, predictions)
    answers = {e.qid: [text for text, _ in e.answers] for e in dataset.examples}
    return metrics.qa_scores(answers, predictions)


def bigram_overlap(a: str, b: str) -> float:
    grams = lambda text: {text[i : i + 2] for i in range(len(text) - 1)}  # noqa: E731
    x, y = grams(a.replace(" ", "")), grams(b.replace(" ", ""))
    return len(x & y) / len(x | y) if x | y else 0.0


def baselines(task: Task, train: Dataset, evaluation: Dataset) -> list[dict]:
    """What a model must beat, on the same evaluation examples, without any model."""
    n = len(evaluation.examples)
    if task.head == "sequence":
        labels = np.asarray([e.label for e in train.examples])
        majority = int(np.bincount(labels).argmax())
        return [{"name": f"majority class of the training file ({train.labels[majority]})",
                 "metrics": score(task, evaluation, np.full(n, majority))}]
    if task.head == "regression":
        mean = float(np.mean([e.label for e in train.examples]))
        found = [{"name": f"constant: the training mean ({mean:.3f}); correlations are undefined",
                  "metrics": score(task, evaluation, np.full(n, mean))}]
        if all(e.pair is not None for e in evaluation.examples):
            overlap = [bigram_overlap(e.text, e.pair) for e in evaluation.examples]
            found.append({"name": "character-bigram Jaccard of the two sentences (no training)",
                          "metrics": {**score(task, evaluation, overlap), "mse": None}})
        return found
    if task.head == "token":
        return [{"name": "every word O", "metrics": score(task, evaluation, [["O"] * len(e.words) for e in evaluation.examples])}]
    return []


# ---------------------------------------------------------------- a task, several seeds


def check_tokenizer(tokenizer: TaskTokenizer, config, model: str) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"--model {model}: its tokenizer has {tokenizer.vocab_size} tokens, its config's vocab_size "
                         f"is {config.vocab_size}: the tokenizer files are not the model's")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.base_model.parameters())


def run_task(task: Task, model: str, train: Dataset, evaluation: Dataset, hp: HyperParameters, seeds: list[int],
             device: torch.device, precision: str, progress: Progress, sample_seed: int = 0) -> dict:
    """Fine-tune `model` on `train` once per seed and score each run on `evaluation`."""
    config = model_config(model)
    tokenizer = TaskTokenizer.of_model(model)
    check_tokenizer(tokenizer, config, model)
    positions = getattr(config, "max_position_embeddings", hp.max_length)
    if hp.max_length > positions:
        hp = hp.updated({"max_length": positions})
    train, evaluation = sample(train, hp.max_examples, sample_seed), sample(evaluation, hp.max_eval_examples, sample_seed + 1)
    if not train.examples or not evaluation.examples:
        raise ValueError(f"{task.name}: no examples to {'train on' if not train.examples else 'score'}")
    train_features = featurize(task, train, tokenizer, hp, train=True)
    eval_features = featurize(task, evaluation, tokenizer, hp, train=False)
    runs, parameters = [], None
    for seed in seeds:
        progress.say(f"{task.name}: fine-tuning {model} on {len(train.examples):,} examples "
                     f"({len(train_features):,} features), {hp.epochs} epoch(s), seed {seed}")
        started = time.perf_counter()
        torch.manual_seed(seed)
        network = load_head(model, task.head, train.labels).to(device)
        parameters = count_parameters(network)
        trained = train_model(network, train_features, hp, seed, tokenizer.specials.pad, device, precision, progress)
        outputs = predict(network, eval_features, hp.eval_batch_size, tokenizer.specials.pad, device, precision)
        predictions = decode(task, outputs, eval_features, evaluation, hp)
        runs.append({"seed": seed, "metrics": score(task, evaluation, predictions), **trained,
                     "seconds": round(time.perf_counter() - started, 1)})
        progress.say(f"{task.name}: seed {seed}: " + ", ".join(
            f"{name} {value:.4f}" for name, value in runs[-1]["metrics"].items() if value is not None))
        del network
    mean, std = metrics.mean_and_std([run["metrics"] for run in runs])
    used = {name: value for name, value in hp.to_dict().items() if task.head == "qa" or name not in QA_ONLY}
    return {
        "task": task.name,
        "dataset": task.title,
        "primary": list(task.primary),
        "hyperparameters": used,
        "defaults_source": task.source,
        "examples": {"train": len(train.examples), "eval": len(evaluation.examples),
                     "train_features": len(train_features), "eval_features": len(eval_features)},
        "counts": {"train": train.counts, "eval": evaluation.counts},
        "runs": runs,
        "mean": mean,
        "std": std,
        "baselines": baselines(task, train, evaluation),
        "parameters": parameters,
    }


# ---------------------------------------------------------------- the --sentiment check


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
    """Fine-tune a sequence classifier on the training part of one sentiment file, report held-out accuracy."""
    from distill.tasks import TASKS

    progress = progress or Progress("distill.finetune", enabled=False)
    task = TASKS["nsmc"]
    count = len(data.texts) if max_examples is None else min(max_examples, len(data.texts))
    subset = np.random.default_rng(seed + 1).permutation(len(data.texts))[:count]
    examples = [TextExample(data.texts[i], data.labels[i]) for i in subset]
    train_idx, test_idx = split_indices(count, test_fraction, seed)
    train = Dataset([examples[i] for i in train_idx], ("0", "1"))
    test = Dataset([examples[i] for i in test_idx], ("0", "1"))
    hp = HyperParameters(epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, weight_decay=0.01)
    config = model_config(model_dir)
    tokenizer = TaskTokenizer.of_model(model_dir)
    check_tokenizer(tokenizer, config, model_dir)
    hp = hp.updated({"max_length": min(max_length, config.max_position_embeddings)})
    train_features = featurize(task, train, tokenizer, hp, train=True)
    test_features = featurize(task, test, tokenizer, hp, train=False)
    progress.say(f"fine-tuning {model_dir} on {len(train_idx):,} sentiment examples, {epochs} epoch(s)")
    torch.manual_seed(seed)
    network = load_head(model_dir, "sequence", ("0", "1")).to(device)
    precision = resolve_precision("auto", device)
    train_model(network, train_features, hp, seed + 2, tokenizer.specials.pad, device, precision, progress)
    progress.say(f"testing on {len(test_idx):,} held-out examples")
    predictions = decode(task, predict(network, test_features, 64, tokenizer.specials.pad, device, precision),
                         test_features, test, hp)
    gold = np.asarray([e.label for e in test.examples])
    positives = int(gold.sum())
    return {
        "examples": count,
        "train_examples": len(train_idx),
        "test_examples": len(test_idx),
        "epochs": epochs,
        "accuracy": metrics.accuracy(gold, predictions),
        "majority_baseline": max(positives, len(gold) - positives) / len(gold),
        "counts": data.counts,
    }
