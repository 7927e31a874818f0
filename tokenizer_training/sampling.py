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

import functools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tokenizer_training.corpus import utf8_buffers
from tokenizer_training.errors import TokenizeError
from transforms.hashing import splitmix64

GRANULARITIES = {"year": 4, "month": 7, "day": 10}  # prefix lengths of an ISO date
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_SEED = 2**64 - 1
HASH_BLOCK_BYTES = 1 << 18
MASK64 = (1 << 64) - 1


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over every output bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count - 1) mod 2**64."""
    factors = np.full(count, base, dtype=np.uint64)
    factors[0] = 1
    return np.cumprod(factors)


@functools.lru_cache(maxsize=4)
def _power_tables(multiplier: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """multiplier**i and multiplier**-i mod 2**64 for i < size (an odd multiplier is invertible)."""
    inverse = multiplier  # right in the low 3 bits; each Newton step doubles that: 6, 12, 24, 48, 96
    for _ in range(5):
        inverse = inverse * (2 - multiplier * inverse) & MASK64
    return _powers(multiplier, size), _powers(inverse, size)


def polynomial_hashes(offsets: np.ndarray, data: np.ndarray, multiplier: int,
                      block_bytes: int = HASH_BLOCK_BYTES) -> np.ndarray:
    """sum over each text of (byte_j + 1) * multiplier**j mod 2**64, j counted from the text's start.

    Vectorized over the concatenated bytes, a block of `block_bytes` at a time: each block's
    bytes are weighted by powers of their position in the block, summed per text, and moved
    to the text's own origin by one multiplication (by an inverse power when the text starts
    inside the block). Memory stays bounded for texts of any length, and a text's hash does
    not depend on its neighbours or on where the blocks fall.
    """
    powers, inverse_powers = _power_tables(multiplier, block_bytes)
    hashes = np.zeros(len(offsets) - 1, dtype=np.uint64)
    total = int(offsets[-1])
    for start in range(0, total, block_bytes):
        stop = min(start + block_bytes, total)
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        last = int(np.searchsorted(offsets, stop, side="left"))  # texts [first, last) overlap the block
        bounds = np.clip(offsets[first:last + 1], start, stop) - start
        nonempty = np.diff(bounds) > 0
        terms = (data[start:stop].astype(np.uint64) + np.uint64(1)) * powers[:stop - start]
        partial = np.add.reduceat(terms, bounds[:-1][nonempty])
        shifts = offsets[first:last][nonempty] - start  # where each text starts, relative to the block
        inside = shifts >= 0
        partial[inside] *= inverse_powers[shifts[inside]]
        if not inside[0]:  # the text running into the block from an earlier one
            partial[:1] *= np.array([pow(multiplier, -int(shifts[0]), 1 << 64)], dtype=np.uint64)
        hashes[np.arange(first, last)[nonempty]] += partial
    return hashes


def document_uniforms(texts: pa.LargeStringArray, seed: int) -> np.ndarray:
    """[n, 2] floats in [0, 1): two independent draws per text, a pure function of (seed, text).

    A polynomial hash of the UTF-8 bytes with a seed-derived odd multiplier, mixed with the
    length and finished by splitmix64 under two seed-derived keys. Vectorized over the
    batch, it costs less than reading the Parquet (a BLAKE2b per document cost 3 times more).
    """
    offsets, data = utf8_buffers(texts)
    keys = splitmix64(seed, 3)  # never the degenerate multiplier 1 that mixing the bare seed 0 gave
    hashes = polynomial_hashes(offsets, data, int(keys[2]) | 1)
    hashes ^= _mix(np.diff(offsets).astype(np.uint64) ^ keys[2])
    draws = np.stack([_mix(hashes ^ keys[0]), _mix(hashes ^ keys[1])], axis=1)
    return (draws >> np.uint64(11)).astype(np.float64) * 2.0**-53


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
