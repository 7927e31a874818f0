"""Stable 64-bit hashing in numpy: the same values in every process and on every machine.

Python's `hash()` is salted per process and `hashlib` costs a Python call per item; these
work on whole arrays with integer arithmetic only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BYTE_POSITIONS = np.arange(8, dtype=np.int64)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection with full avalanche), in place."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def splitmix64(seed: int, count: int) -> np.ndarray:
    """`count` pseudo-random uint64 from `seed` (SplitMix64): fixed forever, unlike numpy's RNGs."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    state ^= state >> np.uint64(30)
    state *= np.uint64(0xBF58476D1CE4E5B9)
    state ^= state >> np.uint64(27)
    state *= np.uint64(0x94D049BB133111EB)
    state ^= state >> np.uint64(31)
    return state


def string_hashes(strings: pa.Array | pa.ChunkedArray | Sequence[str], seed: int, lanes: int = 1) -> np.ndarray:
    """`lanes` independently keyed 64-bit hashes of each string's UTF-8 bytes: [n, lanes] uint64.

    Lane j starts from SplitMix64(seed)[j] XOR (byte length * golden ratio), finalised; then
    absorbs the bytes 8 at a time (little-endian words, the last one zero-padded), each
    word XORed into the state and the state finalised again. Strings are grouped by word
    count, so the work is proportional to the total bytes, and one long string costs no
    more than its own length.
    """
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if not isinstance(strings, pa.Array):
        strings = pa.array(strings, pa.large_string())
    strings = strings.cast(pa.large_string())
    if strings.null_count:
        raise ValueError(f"cannot hash {strings.null_count} null strings")
    n = len(strings)
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[strings.offset:strings.offset + n + 1] if n else np.zeros(1, np.int64)
    raw = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = np.concatenate([raw[offsets[0]:offsets[-1]], np.zeros(8, np.uint8)])  # 8 spare bytes: every word read is in bounds
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        state = splitmix64(seed, lanes)[None, :] ^ (lengths.astype(np.uint64) * _GOLDEN)[:, None]
    fmix64(state)
    words = (lengths + 7) // 8
    longest_first = np.argsort(-words, kind="stable")
    negated_words = -words[longest_first]  # ascending
    for k in range(int(words.max()) if n else 0):
        active = longest_first[:np.searchsorted(negated_words, -k, side="left")]  # strings with more than k words
        byte_index = starts[active, None] + 8 * k + _BYTE_POSITIONS
        chunk = data[byte_index]
        chunk[_BYTE_POSITIONS >= (lengths[active, None] - 8 * k)] = 0  # bytes past the string's end
        absorbed = state[active] ^ chunk.view("<u8")
        state[active] = fmix64(absorbed)
    return state
