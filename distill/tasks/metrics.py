"""Metrics on fixed predictions, as the seeds' tables count them (pure; scipy for correlations).

- accuracy; macro F1 (Korean Hate Speech: KoELECTRA scores it with scikit-learn's
  `f1_score(average="macro")`: the mean F1 over the classes present in gold or predictions, a class
  without predictions having precision 0);
- Pearson and Spearman correlations (KorSTS; `scipy.stats`, as KoELECTRA's `pearson_and_spearman`);
- entity-level F1 over B/I tags with the type in front and B/I after it (`PER-B`, `PER-I`), counted as
  conlleval and seqeval's default mode count it (KoELECTRA: `seqeval.metrics.f1_score(suffix=True)`):
  an I after O or after another type starts an entity, an entity ends at O, at B or at a change of
  type, and an entity counts when its type, start and end all match (micro average);
- extractive QA: exact match and F1 of the best-scoring gold answer, averaged over the questions.
  `korquad_*` is KorQuAD 1.0's official script (`evaluate_v1.0.py`, which the KorQuAD columns of the
  seeds' tables report): quotes and brackets ' " 《 》 < > 〈 〉 ( ) ‘ ’ become spaces, lower case,
  ASCII punctuation removed, whitespace collapsed, and F1 over the *characters* of the answer (spaces
  excluded). `squad_*` is SQuAD v1.1's official script: lower case, punctuation removed, the English
  articles a/an/the removed, whitespace collapsed, F1 over whitespace tokens.

Every metric returns a fraction in [0, 1] (the table shows percentages). See docs/evaluate.md#metrics.
"""
from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np


def accuracy(gold, predicted) -> float:
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    return float((gold == predicted).mean()) if len(gold) else 0.0


def macro_f1(gold, predicted) -> float:
    """scikit-learn's f1_score(average='macro'): classes = those in gold or predictions."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    scores = []
    for label in np.union1d(gold, predicted):
        tp = int(((predicted == label) & (gold == label)).sum())
        fp = int(((predicted == label) & (gold != label)).sum())
        fn = int(((predicted != label) & (gold == label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def correlations(gold, predicted) -> dict[str, float | None]:
    """Pearson and Spearman; None when either side is constant (the correlation is undefined)."""
    from scipy.stats import pearsonr, spearmanr

    gold, predicted = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(predicted) == 0:
        return {"pearson": None, "spearman": None}
    return {"pearson": float(pearsonr(predicted, gold)[0]), "spearman": float(spearmanr(predicted, gold)[0])}


# ---------------------------------------------------------------- entities


def split_tag(tag: str) -> tuple[str, str]:
    """(B/I/O/E/S, type) of a suffix-style tag: 'PER-B' -> ('B', 'PER'), 'O' -> ('O', '_')."""
    if tag in ("O", "B", "I", "E", "S"):
        return tag, "_"
    return tag[-1], tag[:-1].rsplit("-", 1)[0] or "_"


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity in one sentence's tag sequence (conlleval's chunking)."""
    found = set()
    previous_tag, previous_type, begin = "O", "_", 0
    for position, tag in enumerate([*tags, "O"]):
        kind, type_ = split_tag(tag)
        ends = (previous_tag in ("E", "S")
                or (previous_tag in ("B", "I") and kind in ("B", "S", "O"))
                or (previous_tag != "O" and previous_type != type_))
        starts = (kind in ("B", "S")
                  or (previous_tag in ("E", "S", "O") and kind in ("E", "I"))
                  or (kind != "O" and previous_type != type_))
        if ends:
            found.add((previous_type, begin, position - 1))
        if starts:
            begin = position
        previous_tag, previous_type = kind, type_
    return found


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of entities over sentences (seqeval's default mode)."""
    true_count = predicted_count = correct = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_entities, predicted_entities = entities(list(gold_tags)), entities(list(predicted_tags))
        true_count += len(gold_entities)
        predicted_count += len(predicted_entities)
        correct += len(gold_entities & predicted_entities)
    precision = correct / predicted_count if predicted_count else 0.0
    recall = correct / true_count if true_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# ---------------------------------------------------------------- extractive QA

PUNCTUATION = set(string.punctuation)
KORQUAD_SPACED = "'\"《》<>〈〉()‘’"


def squad_normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def korquad_normalize(text: str) -> str:
    for ch in KORQUAD_SPACED:
        text = text.replace(ch, " ")
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(text.split())


def overlap_f1(prediction: list[str], gold: list[str]) -> float:
    common = sum((Counter(prediction) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, gold: str) -> float:
    return overlap_f1(squad_normalize(prediction).split(), squad_normalize(gold).split())


def korquad_f1(prediction: str, gold: str) -> float:
    return overlap_f1(list(korquad_normalize(prediction).replace(" ", "")), list(korquad_normalize(gold).replace(" ", "")))


def qa_scores(answers: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    """EM and F1 (KorQuAD 1.0 and SQuAD v1.1 official semantics) over the questions of `answers`;
    a question without a prediction scores 0, as in the official scripts."""
    totals = Counter()
    for qid, golds in answers.items():
        prediction = predictions.get(qid)
        if prediction is None:
            continue
        totals["korquad_exact_match"] += max(korquad_normalize(prediction) == korquad_normalize(g) for g in golds)
        totals["korquad_f1"] += max(korquad_f1(prediction, g) for g in golds)
        totals["squad_exact_match"] += max(squad_normalize(prediction) == squad_normalize(g) for g in golds)
        totals["squad_f1"] += max(squad_f1(prediction, g) for g in golds)
    count = max(1, len(answers))
    names = ("korquad_exact_match", "korquad_f1", "squad_exact_match", "squad_f1")
    return {name: totals[name] / count for name in names}


# ---------------------------------------------------------------- runs


def mean_and_std(runs: list[dict[str, float | None]]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Mean and sample standard deviation (ddof 1; 0 for a single run) of each metric over runs;
    None where a run has None."""
    means, stds = {}, {}
    for name in runs[0]:
        values = [run[name] for run in runs]
        if any(value is None for value in values):
            means[name] = stds[name] = None
            continue
        array = np.asarray(values, dtype=np.float64)
        means[name] = float(array.mean())
        stds[name] = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return means, stds
