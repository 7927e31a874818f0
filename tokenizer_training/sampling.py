"""Deterministic, streaming document sampling (KcBERT trained its vocab on a 1/10 sample stratified by date).

Each document's text is hashed, with the seed, into two independent uniform numbers in
[0, 1). The first puts the document in the held-out evaluation sample when it is below
`eval_fraction`; the other documents form the training pool, from which the second number
draws the training sample. Hashing the text, not an id or a position, makes the
split independent of how the corpus is sharded or ordered, and keeps identical texts on the
same side: the held-out sample never holds a text that training saw.

Without a stratum field the training sample is a Bernoulli sample (draw < fraction): every
stratum of every field keeps its share in expectation, with binomial noise of about
sqrt((1 - f) / (f n)) relative for a stratum of n documents (3% for n = 10,000 at f = 0.1,
30% for n = 100). With `--stratify-by FIELD[:day|month|year]` a first pass counts the pool
documents n_s of every stratum and the training pass keeps exactly round(f * n_s) of each
by selection sampling (Knuth's algorithm S, the second number as its random draw): every
period is represented in exact proportion, still streaming, with memory per stratum.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tokenizer_training.errors import TokenizeError
from transforms.hashing import text_hashes

GRANULARITIES = {"year": 4, "month": 7, "day": 10}  # prefix lengths of an ISO date
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_SEED = 2**64 - 1


def document_uniforms(texts: pa.LargeStringArray, seed: int) -> np.ndarray:
    """[n, 2] floats in [0, 1): two independent draws per text, a pure function of (seed, text)
    (the top 53 bits of `transforms.hashing.text_hashes`)."""
    return (text_hashes(texts, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class StratifyBy:
    """A stratum field, optionally cut to the year, month or day of an ISO date (`date:month`)."""

    field: str
    granularity: str | None = None

    @classmethod
    def parse(cls, spec: str) -> StratifyBy:
        name, colon, suffix = spec.rpartition(":")
        if not colon:
            return cls(spec)
        if not name or suffix not in GRANULARITIES:
            raise TokenizeError(f"--stratify-by {spec!r}: expected FIELD or FIELD:day, FIELD:month, FIELD:year")
        return cls(name, suffix)

    def key(self, value: object) -> str | None:
        """The stratum of a field value; None when the value is missing or not an ISO date where one is needed."""
        if value is None:
            return None
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
        if self.granularity is None:
            return text
        return text[: GRANULARITIES[self.granularity]] if ISO_DATE.match(text) else None

    def __str__(self) -> str:
        return self.field if self.granularity is None else f"{self.field}:{self.granularity}"


def stratum_targets(pool_counts: dict[str | None, int], fraction: float) -> dict[str | None, int]:
    """round(fraction * n_s), halves up, for every stratum."""
    return {key: int(fraction * count + 0.5) for key, count in pool_counts.items()}


class StratifiedSelection:
    """Exactly targets[s] of the pool_counts[s] pool documents of each stratum s (Knuth's algorithm S).

    The documents arrive in corpus order; the k-th of a stratum with `left` documents still to
    come and `needed` still to pick is kept when draw * left < needed. Every subset of the
    target size is equally likely, and the last documents are taken when they are all needed.
    """

    def __init__(self, pool_counts: dict[str | None, int], fraction: float):
        self.targets = stratum_targets(pool_counts, fraction)
        self._left = dict(pool_counts)
        self._needed = dict(self.targets)

    def keep(self, draws: np.ndarray, keys: list[str | None]) -> np.ndarray:
        kept = np.zeros(len(keys), dtype=bool)
        for index, (draw, key) in enumerate(zip(draws.tolist(), keys)):
            left = self._left.get(key, 0)
            if left == 0:
                raise TokenizeError("the input changed between the counting pass and the training pass")
            if draw * left < self._needed[key]:
                kept[index] = True
                self._needed[key] -= 1
            self._left[key] = left - 1
        return kept
