"""MinHash signatures, LSH parameters and band keys (transforms.minhash)."""
from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch.lsh import _optimal_param

from transforms.minhash import (
    DEFAULT_NGRAM,
    LSH_WEIGHTS,
    LSH_WEIGHTS_VERIFIED,
    TEXTS_PER_BLOCK,
    band_keys,
    collision_probability,
    exact_jaccard,
    lsh_params,
    shingle_hashes,
    shingle_table,
    signatures,
    text_band_keys,
)

ROOT = Path(__file__).resolve().parent.parent
SYLLABLES = [chr(c) for c in range(0xAC00, 0xAC00 + 600)]


def reference_shingles(text: str, ngram: int) -> set[str]:
    """The n-gram set by the definition: whitespace removed, a short text is one shingle."""
    text = "".join(text.split())
    if len(text) < ngram:
        return {"short:" + text}
    return {text[i:i + ngram] for i in range(len(text) - ngram + 1)}


def reference_jaccard(a: str, b: str, ngram: int) -> float:
    sa, sb = reference_shingles(a, ngram), reference_shingles(b, ngram)
    return len(sa & sb) / len(sa | sb)


def edited_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Random Korean-syllable texts and copies with a random share of their characters replaced."""
    rng = random.Random(seed)
    first, second = [], []
    for _ in range(count):
        length = rng.randrange(20, 120)
        text = [rng.choice(SYLLABLES) for _ in range(length)]
        copy = list(text)
        for position in rng.sample(range(length), rng.randrange(0, length // 4 + 1)):
            copy[position] = rng.choice(SYLLABLES)
        first.append("".join(text))
        second.append("".join(copy))
    return first, second


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    return (sig_a == sig_b).mean(axis=1)


@pytest.mark.parametrize("ngram", [1, 2, 3, 5])
def test_shingle_sets_follow_the_definition(ngram):
    rng = random.Random(ngram)
    alphabet = "ab 가나\t\u3000\n.ㅋ"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14))) for _ in range(400)]
    texts += ["", " ", "ㅋ", "가나다라마바사"]
    offsets, hashes = shingle_table(texts, ngram)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 1)
    for i, text in enumerate(texts):
        single = shingle_hashes(text, ngram)
        assert len(single) == len(reference_shingles(text, ngram)), repr(text)
        assert np.array_equal(np.unique(hashes[offsets[i]:offsets[i + 1]]), single)


def test_whitespace_is_ignored_and_short_texts_are_one_distinct_shingle():
    assert np.array_equal(shingle_hashes("정말 재밌 어요", 2), shingle_hashes("정말재밌어요", 2))
    assert len(shingle_hashes("가나", 3)) == 1
    # a short text's shingle is not the n-gram it starts
    assert not set(shingle_hashes("가나", 3)) & set(shingle_hashes("가나다", 3))
    assert not set(shingle_hashes("", 2)) & set(shingle_hashes("가", 2))


def test_exact_jaccard_matches_sets():
    first, second = edited_pairs(300, seed=3)
    second[:3] = ["", "가나", first[2] + " 끝"]
    for ngram in (2, 3):
        expected = [reference_jaccard(a, b, ngram) for a, b in zip(first, second)]
        assert np.allclose(exact_jaccard(first, second, ngram), expected)


def test_signatures_estimate_jaccard_without_bias_and_with_binomial_error():
    first, second = edited_pairs(3000, seed=1)
    exact = np.array([reference_jaccard(a, b, DEFAULT_NGRAM) for a, b in zip(first, second)])
    assert 0.3 < exact.mean() < 0.8 and exact.std() > 0.1  # a spread of similarities
    num_perm = 128
    sig = signatures(first + second, num_perm=num_perm)
    errors = estimated_jaccard(sig[:3000], sig[3000:]) - exact
    expected_variance = exact * (1 - exact) / num_perm
    standard_error_of_mean = np.sqrt(expected_variance.mean() / len(exact))
    assert abs(errors.mean()) < 4 * standard_error_of_mean
    rms_ratio = np.sqrt((errors ** 2).mean() / expected_variance.mean())
    assert 0.85 < rms_ratio < 1.15


def test_signatures_estimate_jaccard_on_the_sample_corpus():
    sample_corpus = pytest.importorskip("pipeline.sample_corpus")
    from transforms.clean import clean_text

    corpus = sample_corpus.generate_sample(0)
    texts = {r["id"]: clean_text(r["text"]) for r in sample_corpus.sample_records(0)}
    pairs = list(corpus.near_duplicate_of.items())
    ids = sorted(texts)
    rng = random.Random(0)
    pairs += [tuple(rng.sample(ids, 2)) for _ in range(1500)]
    first = [texts[a] for a, _ in pairs]
    second = [texts[b] for _, b in pairs]
    exact = exact_jaccard(first, second, DEFAULT_NGRAM)
    sig = signatures(first + second)
    errors = estimated_jaccard(sig[:len(pairs)], sig[len(pairs):]) - exact
    expected_variance = exact * (1 - exact) / 128
    assert abs(errors.mean()) < 4 * np.sqrt(expected_variance.mean() / len(pairs))
    assert np.sqrt((errors ** 2).mean() / expected_variance.mean()) < 1.3


def test_signatures_shape_dtype_and_identities():
    texts = ["정말 재밌는 영화였어요", "정말 재밌는 영화였어요", "정말재밌는 영화 였어요", "완전히 다른 이야기입니다", ""]
    sig = signatures(texts, num_perm=64, seed=7)
    assert sig.shape == (5, 64) and sig.dtype == np.uint32 and sig.flags.c_contiguous
    assert np.array_equal(sig[0], sig[1]) and np.array_equal(sig[0], sig[2])
    assert (sig[0] == sig[3]).mean() < 0.3
    assert not np.array_equal(sig, signatures(texts, num_perm=64, seed=8))
    assert signatures([], num_perm=16).shape == (0, 16)


def test_signatures_do_not_depend_on_batching():
    first, second = edited_pairs(400, seed=5)
    rng = random.Random(6)
    texts = first + second + ["".join(rng.choices(SYLLABLES, k=30_000))]  # longer than a block of shingles
    whole = signatures(texts)
    parts = np.concatenate([signatures(texts[i:i + 37]) for i in range(0, len(texts), 37)])
    assert np.array_equal(whole, parts)


def test_text_band_keys_do_not_depend_on_the_block_size_and_equal_band_keys_of_signatures():
    """Whole partitions are shingled a block of texts at a time (bounded memory); the keys must not change."""
    first, second = edited_pairs(60, seed=9)
    texts = first + ["", "   ", "\t\n", "가", " 가 "] + second + ["".join(random.Random(3).choices(SYLLABLES, k=20_000))]
    bands, rows = 16, 8
    reference = band_keys(signatures(texts, num_perm=128, ngram=2, seed=4), bands, rows).T
    chunked = pa.chunked_array([texts[:50], texts[50:51], texts[51:]])  # as a Parquet partition's column arrives
    for block in (1, 7, len(texts), TEXTS_PER_BLOCK):
        for given in (texts, chunked):
            keys = text_band_keys(given, 128, 2, 4, bands, rows, texts_per_block=block)
            assert keys.dtype == np.uint64 and keys.shape == (bands, len(texts))
            assert np.array_equal(keys, reference), (block, type(given))
    assert text_band_keys([], 128, 2, 4, bands, rows).shape == (bands, 0)
    with pytest.raises(ValueError, match="texts_per_block"):
        text_band_keys(texts, 128, 2, 4, bands, rows, texts_per_block=0)


SUBPROCESS_CODE = """
import hashlib, sys
sys.path.insert(0, {root!r})
from transforms.minhash import band_keys, signatures
texts = ["정말 재밌는 영화였어요 ㅋㅋ", "최악", "", "a b c d e f g", "가나다라마바사아자차카타파하" * 9]
sig = signatures(texts, num_perm=96, ngram=3, seed=12345)
print(hashlib.sha256(sig.tobytes() + band_keys(sig, 12, 8).tobytes()).hexdigest())
"""


def test_signatures_and_band_keys_are_identical_across_processes():
    texts = ["정말 재밌는 영화였어요 ㅋㅋ", "최악", "", "a b c d e f g", "가나다라마바사아자차카타파하" * 9]
    sig = signatures(texts, num_perm=96, ngram=3, seed=12345)
    digest = hashlib.sha256(sig.tobytes() + band_keys(sig, 12, 8).tobytes()).hexdigest()
    for hash_seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", SUBPROCESS_CODE.format(root=str(ROOT))], capture_output=True,
                                text=True, check=True, env={"PYTHONHASHSEED": hash_seed})
        assert result.stdout.strip() == digest


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("weights", [(0.5, 0.5), LSH_WEIGHTS, LSH_WEIGHTS_VERIFIED])
def test_lsh_params_match_datasketch(threshold, weights):
    bands, rows = lsh_params(threshold, 128, *weights)
    assert bands * rows <= 128
    assert (bands, rows) == _optimal_param(threshold, 128, *weights)


def test_lsh_params_s_curve_around_the_threshold():
    bands, rows = lsh_params(0.8, 128)
    assert (bands, rows) == (11, 11)
    curve = collision_probability(np.linspace(0, 1, 101), bands, rows)
    assert np.all(np.diff(curve) >= 0) and curve[0] == 0 and curve[-1] == 1
    assert collision_probability(0.95, bands, rows) > 0.999
    assert collision_probability(0.5, bands, rows) < 0.01
    assert 0.5 < collision_probability(0.8, bands, rows) < 0.8
    verified = lsh_params(0.8, 128, *LSH_WEIGHTS_VERIFIED)
    assert verified == (16, 8) and collision_probability(0.8, *verified) > 0.94 > collision_probability(
        0.8, bands, rows)
    assert np.prod(lsh_params(0.8, 16)) <= 16


def test_band_keys_collide_exactly_on_equal_bands():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(6, 20), dtype=np.uint32)
    sig[1] = sig[0]
    sig[2, :5] = sig[0, :5]  # same first band only
    sig[3] = sig[0, [5, 6, 7, 8, 9, 0, 1, 2, 3, 4] + list(range(10, 20))]  # bands 0 and 1 swapped
    keys = band_keys(sig, 4, 5)
    assert keys.shape == (6, 4) and keys.dtype == np.uint64
    assert np.array_equal(keys[0], keys[1])
    assert keys[2, 0] == keys[0, 0] and np.all(keys[2, 1:] != keys[0, 1:])
    assert keys[3, 0] != keys[0, 1] and keys[3, 1] != keys[0, 0]  # a band's index is part of its key
    assert len(np.unique(keys[[0, 4, 5]])) == 12
    assert np.array_equal(band_keys(sig, 3, 6), band_keys(sig[:, :18], 3, 6))  # odd rows, unused columns
    with pytest.raises(ValueError, match="bands\\*rows"):
        band_keys(sig, 5, 5)


def test_near_duplicates_share_a_bucket_with_high_probability():
    first, second = edited_pairs(3000, seed=2)
    exact = exact_jaccard(first, second, DEFAULT_NGRAM)
    close = exact >= 0.9
    assert close.sum() > 300
    bands, rows = lsh_params(0.8, 128)
    keys = band_keys(signatures(first + second), bands, rows)
    collide = (keys[:3000] == keys[3000:]).any(axis=1)
    assert collide[close].mean() > 0.97
    assert collide[exact < 0.5].mean() < 0.02


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="ngram"):
        signatures(["가나다"], ngram=0)
    with pytest.raises(ValueError, match="num_perm"):
        signatures(["가나다"], num_perm=0)
    with pytest.raises(ValueError, match="seed"):
        signatures(["가나다"], seed=-1)
    with pytest.raises(TypeError):
        signatures(["가나다", None])
    with pytest.raises(ValueError, match="threshold"):
        lsh_params(1.0, 128)
    with pytest.raises(ValueError, match="weights"):
        lsh_params(0.8, 128, 0, 0)
    with pytest.raises(ValueError, match="as many"):
        exact_jaccard(["a"], [], 2)


def test_unusual_code_points_are_ordinary_characters():
    texts = ["a\x00", "a", "\ud800가나", "가나", "😀👍🏻 좋아요", "\U0010ffff\U0010ffff", "\x00\x00\x00"]
    for ngram in (2, 3):
        sets = [frozenset(shingle_hashes(text, ngram).tolist()) for text in texts]
        assert len(set(sets)) == len(texts)  # a NUL or a lone surrogate is a character like any other
        assert len(shingle_hashes("😀👍🏻 좋아요", ngram)) == len(reference_shingles("😀👍🏻 좋아요", ngram))
    sig = signatures(texts)
    assert len({row.tobytes() for row in sig}) == len(texts)


def test_pairwise_jaccard_equals_exact_jaccard():
    from transforms.minhash import pairwise_jaccard

    rng = random.Random(11)
    for ngram in (1, 2, 3, 5):
        texts = ["".join(rng.choice("가나다 라ab!") for _ in range(rng.randrange(0, 25))) for _ in range(200)]
        first = np.array([rng.randrange(200) for _ in range(1500)])
        second = np.array([rng.randrange(200) for _ in range(1500)])
        got = pairwise_jaccard(texts, first, second, ngram)
        assert np.array_equal(got, exact_jaccard([texts[i] for i in first], [texts[i] for i in second], ngram))
    assert pairwise_jaccard(["가나"], [], [], 2).shape == (0,)
    with pytest.raises(ValueError, match="as many first as second"):
        pairwise_jaccard(["가나"], [0], [], 2)


def test_pairwise_jaccard_when_shingles_of_one_text_share_their_top_bits(monkeypatch):
    """Hashes that agree in their top 32 bits within a text take the exact by-number path: same sets, same values."""
    from transforms import minhash

    calls = []
    by_number = minhash._pairwise_jaccard_by_number
    monkeypatch.setattr(minhash, "_pairwise_jaccard_by_number", lambda *args: calls.append(1) or by_number(*args))

    rng = np.random.default_rng(4)
    tops = rng.integers(0, 2**32, size=6, dtype=np.uint64) << np.uint64(32)
    pool = tops[rng.integers(0, 6, size=40)] | rng.integers(0, 3, size=40).astype(np.uint64)  # few low bits
    sets = [rng.choice(pool, size=int(rng.integers(1, 12))) for _ in range(30)]
    offsets = np.r_[0, np.cumsum([len(s) for s in sets])]
    hashes = np.concatenate(sets)
    first, second = rng.integers(0, 30, size=200), rng.integers(0, 30, size=200)
    expected = [len(set(sets[a].tolist()) & set(sets[b].tolist())) / len(set(sets[a].tolist()) | set(sets[b].tolist()))
                for a, b in zip(first, second)]
    assert np.allclose(minhash._pairwise_jaccard(offsets, hashes, first, second), expected, rtol=0, atol=1e-12)
    assert calls == [1]
    distinct = pool[np.unique(pool >> np.uint64(32), return_index=True)[1]]  # one hash per top: the fast path
    sets = [rng.choice(distinct, size=int(rng.integers(1, 6))) for _ in range(30)]
    offsets, hashes = np.r_[0, np.cumsum([len(s) for s in sets])], np.concatenate(sets)
    expected = [len(set(sets[a].tolist()) & set(sets[b].tolist())) / len(set(sets[a].tolist()) | set(sets[b].tolist()))
                for a, b in zip(first, second)]
    assert np.allclose(minhash._pairwise_jaccard(offsets, hashes, first, second), expected, rtol=0, atol=1e-12)
    assert calls == [1]  # one hash per top: the fast path
