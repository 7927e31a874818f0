"""Stable 64-bit hashing in numpy: the same values in every process and on every machine.

Python's `hash()` is salted per process and `hashlib` costs a Python call per item; these
work on whole arrays with integer arithmetic only. `text_hashes` is the one hash of
strings: pipeline.tokenize samples documents by it (their texts), pipeline.shard splits
and buckets them by it (their ids).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

HASH_BLOCK_BYTES = 1 << 18
MASK64 = (1 << 64) - 1


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection with full avalanche), in place."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over every output bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def splitmix64(seed: int, count: int) -> np.ndarray:
    """`count` pseudo-random uint64 from `seed` (SplitMix64): fixed forever, unlike numpy's RNGs."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return mix64(state)


def utf8_buffers(texts: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [n + 1] from 0, UTF-8 bytes) of a large_string array, without copying the bytes."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[texts.offset: texts.offset + len(texts) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0]: offsets[-1]]


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


def text_hashes(texts: pa.Array | pa.ChunkedArray | Sequence[str], seed: int) -> np.ndarray:
    """[n, 2] uint64: two independent hashes per string, a pure function of (seed, string).

    A polynomial hash of the UTF-8 bytes with a seed-derived odd multiplier, mixed with the
    length and finished by splitmix64's finalizer under two seed-derived keys (the three
    keys are SplitMix64(seed)). Vectorized over the batch (a BLAKE2b per string cost 3 to
    10 times more).
    """
    keys = splitmix64(seed, 3)  # checks the seed
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = (texts if isinstance(texts, pa.Array) else pa.array(texts, pa.large_string())).cast(pa.large_string())
    if texts.null_count:
        raise ValueError(f"cannot hash {texts.null_count} null strings")
    offsets, data = utf8_buffers(texts)
    hashes = polynomial_hashes(offsets, data, int(keys[2]) | 1)
    hashes ^= mix64(np.diff(offsets).astype(np.uint64) ^ keys[2])
    return np.stack([mix64(hashes ^ keys[0]), mix64(hashes ^ keys[1])], axis=1)
