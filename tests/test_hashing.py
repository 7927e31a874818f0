"""transforms.hashing.string_hashes against the same hash written out per string with Python ints."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.hashing import splitmix64, string_hashes

MASK = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15


def fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


def naive_hashes(text: str, seed: int, lanes: int) -> list[int]:
    data = text.encode("utf-8")
    out = []
    for key in splitmix64(seed, lanes).tolist():
        state = fmix64_int(key ^ ((len(data) * GOLDEN) & MASK))
        for start in range(0, len(data), 8):
            state = fmix64_int(state ^ int.from_bytes(data[start:start + 8].ljust(8, b"\0"), "little"))
        out.append(state)
    return out


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=50, deadline=None)
@given(st.lists(TEXT, max_size=30), st.integers(0, 2**64 - 1), st.integers(1, 3))
def test_matches_the_per_string_formula(texts, seed, lanes):
    expected = np.array([naive_hashes(t, seed, lanes) for t in texts], dtype=np.uint64).reshape(len(texts), lanes)
    np.testing.assert_array_equal(string_hashes(texts, seed, lanes), expected)


def test_arrow_inputs_sliced_chunked_and_long_strings():
    texts = ["", "a", "a\0", "12345678", "123456789", "가나다라마바사", "x" * 10_000, "한국어 댓글"]
    expected = np.array([naive_hashes(t, 5, 2) for t in texts], dtype=np.uint64)
    np.testing.assert_array_equal(string_hashes(pa.array(texts), 5, 2), expected)
    np.testing.assert_array_equal(string_hashes(pa.array(texts, pa.large_string())[2:6], 5, 2), expected[2:6])
    np.testing.assert_array_equal(string_hashes(pa.chunked_array([texts[:3], texts[3:]]), 5, 2), expected)
    assert string_hashes([], 5, 2).shape == (0, 2)
    # trailing NUL bytes and length both count; the lanes differ
    assert len({int(h) for h in expected[:, 0]}) == len(texts)
    assert (expected[:, 0] != expected[:, 1]).all()


def test_nulls_and_bad_seeds_are_refused():
    with pytest.raises(ValueError, match="null"):
        string_hashes(pa.array(["a", None]), 0)
    with pytest.raises(ValueError, match="seed"):
        string_hashes(["a"], -1)
