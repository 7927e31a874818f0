"""transforms.hashing.text_hashes against the same hash written out per string with Python ints."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer_training.sampling import document_uniforms
from transforms.hashing import text_hashes

MASK = 2**64 - 1


def mix64_int(h: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def naive_hashes(text: str, seed: int) -> list[int]:
    data = text.encode("utf-8")
    key_a, key_b, key_length = (mix64_int((seed + i * 0x9E3779B97F4A7C15) & MASK) for i in (1, 2, 3))
    multiplier = key_length | 1
    state = sum((byte + 1) * pow(multiplier, j, 1 << 64) for j, byte in enumerate(data)) & MASK
    state ^= mix64_int(len(data) ^ key_length)
    return [mix64_int(state ^ key_a), mix64_int(state ^ key_b)]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=50, deadline=None)
@given(st.lists(TEXT, max_size=30), st.integers(0, 2**64 - 1))
def test_matches_the_per_string_formula(texts, seed):
    expected = np.array([naive_hashes(t, seed) for t in texts], dtype=np.uint64).reshape(len(texts), 2)
    np.testing.assert_array_equal(text_hashes(texts, seed), expected)


def test_arrow_inputs_sliced_chunked_and_long_strings():
    texts = ["", "a", "a\0", "12345678", "123456789", "가나다라마바사", "x" * 10_000, "한국어 댓글"]
    expected = np.array([naive_hashes(t, 5) for t in texts], dtype=np.uint64)
    np.testing.assert_array_equal(text_hashes(pa.array(texts), 5), expected)
    np.testing.assert_array_equal(text_hashes(pa.array(texts, pa.large_string())[2:6], 5), expected[2:6])
    np.testing.assert_array_equal(text_hashes(pa.chunked_array([texts[:3], texts[3:]]), 5), expected)
    assert text_hashes([], 5).shape == (0, 2)
    # trailing NUL bytes and length both count; the lanes differ
    assert len({int(h) for h in expected[:, 0]}) == len(texts)
    assert (expected[:, 0] != expected[:, 1]).all()


def test_sampling_draws_are_the_top_bits_of_the_same_hashes():
    texts = pa.array(["하나", "둘", "", "셋 넷"], pa.large_string())
    draws = document_uniforms(texts, 9)
    np.testing.assert_array_equal(draws, (text_hashes(texts, 9) >> np.uint64(11)).astype(np.float64) * 2.0**-53)
    assert ((draws >= 0) & (draws < 1)).all()


def test_nulls_and_bad_seeds_are_refused():
    with pytest.raises(ValueError, match="null"):
        text_hashes(pa.array(["a", None]), 0)
    with pytest.raises(ValueError, match="seed"):
        text_hashes(["a"], -1)
