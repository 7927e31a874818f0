"""MinHash signatures and LSH band keys for whole batches of texts, in numpy (no Beam).

Shingles: character n-grams of the text with its whitespace removed (Korean spacing in
comments is inconsistent: "재밌어요" and "재밌 어요" are the same comment). A text shorter
than n characters (after that) has exactly one shingle: the whole text, padded with a
marker that is not a code point, so it never equals a real n-gram. Each shingle is hashed
to 64 bits by a polynomial over its code points and the MurmurHash3 finaliser: integer
arithmetic only, so a text gives the same hashes in every process and on every machine
(Python's `hash()` is salted per process). The whole batch is shingled in one vectorised
pass over its concatenated UTF-32 code points.

Signatures: the top 32 bits of each shingle hash go through `num_perm` affine maps
`h -> a*h + b mod 2^32` with odd `a` (each a bijection of the 32-bit values; datasketch
2.x's scheme), and each text keeps the minimum per map. Over 4,000 random pairs and 20
seeds the estimate's mean error was -0.0002 (standard error of that mean 0.0006) and its
RMS error 1.00x the binomial sqrt(J(1-J)/num_perm): the cheap family is statistically
sound (tests/test_minhash.py checks it). The maps run over blocks of 8,192 shingles laid
out [num_perm, shingles], so that `np.minimum.reduceat` reduces contiguous runs (~6x faster
than in the [shingles, num_perm] layout).

Default n = 2, measured on 22,000 cleaned NSMC reviews plus ~2,000 planted lightly edited
copies (bench/bench_near_dedup.py, table "Choice of n"). Reviews are short (median 27
characters) and one edit changes up to n shingles, so the share of planted copies still at
Jaccard >= 0.8 falls fast with n (whitespace removed: 0.90 for n=2, 0.76 for 3, 0.63 for
4, 0.57 for 5), while pairs of distinct reviews at >= 0.8 stay as rare for n=2 as for n=5
(12 vs 10 among the 22,000, nearly all genuine near duplicates). MinHash+LSH is also most
precise at n=2: fewer pairs sit just below the threshold. Removing whitespace is neutral
at n=2 (planted share 0.90 vs 0.91 kept) and helps longer n-grams (n=3: 0.76 vs 0.73; n=5:
0.57 vs 0.41), besides making spacing variants identical. For long documents (articles),
use --ngram 5.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.hashing import fmix64, splitmix64

DEFAULT_NGRAM = 2
DEFAULT_NUM_PERM = 128

# (false positive, false negative) weights of `lsh_params`, measured on NSMC at threshold
# 0.8 (bench/results/near_dedup.md). Without verification false candidates are removed
# texts, so both errors count: (0.3, 0.7) gives 11 bands x 11 rows, P ~ R ~ 0.95. With
# verification (the default) false candidates only cost a Jaccard check, so recall is
# bought: (0.05, 0.95) gives 16 x 8. On all NSMC reviews (natural, 271,700 texts after exact
# dedup) its removed-record recall against the exact ground truth was 0.988, against 0.967
# for (0.1, 0.9)'s 14 x 9, for 13,908 candidate pairs instead of 8,120 (bench/near_dedup_truth.py).
LSH_WEIGHTS = (0.3, 0.7)
LSH_WEIGHTS_VERIFIED = (0.05, 0.95)

_PAD = np.uint64(0x110000)  # one past the last code point: a pad never equals a character
_POLY = np.uint64(0x100000001B3)  # the 64-bit FNV prime, as the polynomial's base
_SHINGLES_PER_BLOCK = 8192  # 128 x 8192 uint32 = 4 MiB of work per block: stays in cache
# Texts shingled at once by `text_band_keys`: its transient tables take ~40 bytes per character
# plus 512 per text, ~110 MB for a block of 70-character texts, whatever the partition's size.
TEXTS_PER_BLOCK = 32_768
_U32 = np.uint64(32)
_WHITESPACE_TABLE = np.array([chr(c).isspace() for c in range(0x3001)] + [False])


def _check_ngram(ngram: int) -> None:
    if not isinstance(ngram, (int, np.integer)) or ngram < 1:
        raise ValueError(f"ngram must be a positive integer, got {ngram!r}")


def _is_whitespace(code_points: np.ndarray) -> np.ndarray:
    """Bool mask of the code points `str.isspace()` accepts (all of them are <= U+3000)."""
    return _WHITESPACE_TABLE[np.minimum(code_points, len(_WHITESPACE_TABLE) - 1)]


def shingle_table(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """All texts' n-gram hashes in one vectorised pass: (offsets [n+1] int64, hashes uint64).

    Whitespace is removed before shingling. Text i's shingle hashes (in text order,
    repeats included) are `hashes[offsets[i]:offsets[i + 1]]`; every text has at least
    one shingle.
    """
    _check_ngram(ngram)
    pads = ngram  # pads after every text: no window crosses into the next, even after an empty text
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    separator = "\x00" * pads  # placeholders, overwritten with _PAD below
    joined = separator.join(texts) + separator
    # surrogatepass: a lone surrogate (possible in a Python str) is one code unit, as len() counts it
    code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    text_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + pads, out=text_starts[1:])
    space = _is_whitespace(code_points)
    spaces = np.flatnonzero(space)
    spaces_before_start = np.searchsorted(spaces, text_starts)
    lengths = lengths - (np.searchsorted(spaces, text_starts + lengths) - spaces_before_start)
    text_starts = text_starts - spaces_before_start
    buffer = code_points[~space].astype(np.uint64)
    buffer[((text_starts + lengths)[:, None] + np.arange(pads)).ravel()] = _PAD
    windows = len(buffer) - ngram + 1
    hashes = buffer[:windows].copy()
    for k in range(1, ngram):
        hashes *= _POLY
        hashes += buffer[k:k + windows]
    counts = np.maximum(lengths - ngram + 1, 1)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    positions = np.arange(offsets[-1], dtype=np.int64) + np.repeat(text_starts - offsets[:-1], counts)
    return offsets, fmix64(hashes[positions])


def shingle_hashes(text: str, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """The set of a text's n-gram hashes, sorted, uint64 (one hash for a text shorter than n)."""
    return np.unique(shingle_table([text], ngram)[1])


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the `num_perm` maps h -> a*h + b mod 2^32, as uint32 columns [num_perm, 1]."""
    if not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive integer, got {num_perm!r}")
    words = splitmix64(seed, 2 * num_perm) >> _U32
    a = (words[:num_perm] | np.uint64(1)).astype(np.uint32)  # odd: a bijection mod 2^32
    b = words[num_perm:].astype(np.uint32)
    return a[:, None], b[:, None]


def signatures_from_shingles(offsets: np.ndarray, hashes: np.ndarray, num_perm: int = DEFAULT_NUM_PERM,
                             seed: int = 0) -> np.ndarray:
    """MinHash signatures [n_texts, num_perm] uint32 of a `shingle_table`."""
    return np.ascontiguousarray(_minima(offsets, hashes, num_perm, seed).T)


def _minima(offsets: np.ndarray, hashes: np.ndarray, num_perm: int, seed: int, used: int | None = None
            ) -> np.ndarray:
    """The signatures laid out [permutation, text]: the first `used` (default all) of the `num_perm` maps."""
    a, b = permutations(num_perm, seed)
    a, b = a[:used], b[:used]
    keys = (hashes >> _U32).astype(np.uint32)
    n_texts = len(offsets) - 1
    minima = np.full((len(a), n_texts), np.iinfo(np.uint32).max, dtype=np.uint32)
    work = np.empty((len(a), _SHINGLES_PER_BLOCK), dtype=np.uint32)
    total = len(keys)
    for start in range(0, total, _SHINGLES_PER_BLOCK):
        stop = min(total, start + _SHINGLES_PER_BLOCK)
        first = int(np.searchsorted(offsets, start, side="right")) - 1  # text holding shingle `start`
        last = int(np.searchsorted(offsets, stop, side="left"))  # texts that begin before `stop`
        segments = offsets[first:last] - start
        segments[0] = 0  # the first text may have begun in the previous block
        block = work[:, :stop - start]
        np.multiply(a, keys[start:stop], out=block)
        block += b
        block_minima = np.minimum.reduceat(block, segments, axis=1)
        np.minimum(block_minima[:, 0], minima[:, first], out=block_minima[:, 0])
        minima[:, first:last] = block_minima
    return minima


def signatures(texts: Sequence[str], num_perm: int = DEFAULT_NUM_PERM, ngram: int = DEFAULT_NGRAM,
               seed: int = 0) -> np.ndarray:
    """MinHash signatures of a batch of texts: [len(texts), num_perm] uint32.

    The fraction of equal columns of two rows estimates the Jaccard similarity of the two
    texts' n-gram sets, with standard error sqrt(J(1-J)/num_perm).
    """
    offsets, hashes = shingle_table(texts, ngram)
    return signatures_from_shingles(offsets, hashes, num_perm, seed)


def collision_probability(similarity, bands: int, rows: int):
    """Probability that two texts of Jaccard `similarity` share a bucket in at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int = DEFAULT_NUM_PERM,
               false_positive_weight: float = LSH_WEIGHTS[0],
               false_negative_weight: float = LSH_WEIGHTS[1]) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising datasketch's weighted error.

    Error = fp_weight * integral_0^t P(collide | s) ds + fn_weight * integral_t^1 (1 - P) ds,
    exactly datasketch's `_optimal_param`. The integrands are polynomials of degree
    bands*rows <= num_perm, so Gauss-Legendre with num_perm//2 + 1 nodes integrates them
    exactly; the search is vectorised over all (bands, rows) at once.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive integer, got {num_perm!r}")
    if false_positive_weight < 0 or false_negative_weight < 0 or false_positive_weight + false_negative_weight <= 0:
        raise ValueError("LSH weights must be non-negative and not both zero")
    # Candidates in datasketch's loop order (bands outer, rows inner): ties go to the first.
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)])
    bands, rows = pairs[:, :1].astype(np.float64), pairs[:, 1:].astype(np.float64)
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(low: float, high: float, miss: bool) -> np.ndarray:
        s = (high - low) / 2 * nodes + (high + low) / 2
        p = collision_probability(s[None, :], bands, rows)
        return ((1.0 - p if miss else p) * weights).sum(axis=1) * (high - low) / 2

    error = false_positive_weight * integral(0.0, threshold, False) + false_negative_weight * integral(
        threshold, 1.0, True)
    best = int(np.argmin(error))
    return int(pairs[best, 0]), int(pairs[best, 1])


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per (text, band): [n, bands] uint64, from the first bands*rows columns.

    The band's index is mixed into its key, so keys of different bands differ (barring a
    2^-64 accident) and buckets can be grouped by key alone, in any partitioning.
    """
    if signatures.ndim != 2 or bands < 1 or rows < 1 or bands * rows > signatures.shape[1]:
        raise ValueError(f"need a 2-D signature array with at least bands*rows = {bands}*{rows} columns, "
                         f"got shape {signatures.shape}")
    by_band = signatures[:, :bands * rows].reshape(len(signatures), bands, rows).transpose(1, 2, 0)
    return np.ascontiguousarray(_fold_bands(by_band).T)


def text_band_keys(texts, num_perm: int, ngram: int, seed: int, bands: int, rows: int,
                   texts_per_block: int = TEXTS_PER_BLOCK) -> np.ndarray:
    """`band_keys(signatures(texts, num_perm, ngram, seed), bands, rows)`, transposed: [bands, n] uint64.

    The same keys, cheaper: only the bands*rows minima the keys use are computed, and the
    signatures are never laid out [text, permutation]. `texts` is a sequence of str or a
    pyarrow string (Chunked)Array; it is shingled `texts_per_block` texts at a time (an
    Arrow array turned into Python strings a block at a time too), so a whole partition
    costs its keys (8 bytes per band per text) plus one block's transient tables, not ~40
    bytes per character of the partition. The keys do not depend on the block size.
    """
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"need bands*rows = {bands}*{rows} <= num_perm = {num_perm}")
    if texts_per_block < 1:
        raise ValueError(f"texts_per_block must be positive, got {texts_per_block!r}")
    keys = np.empty((bands, len(texts)), dtype=np.uint64)
    for start in range(0, len(texts), texts_per_block):
        block = texts[start:start + texts_per_block]
        block = block.to_pylist() if hasattr(block, "to_pylist") else block
        offsets, hashes = shingle_table(block, ngram)
        minima = _minima(offsets, hashes, num_perm, seed, bands * rows)
        keys[:, start:start + len(block)] = _fold_bands(minima.reshape(bands, rows, len(block)))
    return keys


def _fold_bands(values: np.ndarray) -> np.ndarray:
    """[bands, rows, n] minima -> [bands, n] keys: the band's seed, then two rows at a time, mixed."""
    bands, rows, n = values.shape
    keys = np.repeat(splitmix64(0x5EED_BA4D, bands)[:, None], n, axis=1)
    for r in range(0, rows, 2):
        word = values[:, r].astype(np.uint64) << _U32
        if r + 1 < rows:
            word |= values[:, r + 1]
        keys ^= word
        fmix64(keys)
    return keys


def exact_jaccard(texts_a: Sequence[str], texts_b: Sequence[str], ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """True Jaccard similarity of the n-gram sets of each pair (texts_a[i], texts_b[i]), float64."""
    if len(texts_a) != len(texts_b):
        raise ValueError(f"need as many texts on each side, got {len(texts_a)} and {len(texts_b)}")
    pairs = len(texts_a)
    offsets, hashes = shingle_table(list(texts_a) + list(texts_b), ngram)
    text = np.repeat(np.arange(2 * pairs, dtype=np.int64), np.diff(offsets))
    order = np.lexsort((hashes, text))
    text, hashes = text[order], hashes[order]
    first = np.ones(len(text), dtype=bool)
    first[1:] = (text[1:] != text[:-1]) | (hashes[1:] != hashes[:-1])
    text, hashes = text[first], hashes[first]  # each text's set
    sizes = np.bincount(text, minlength=2 * pairs)
    pair = text % pairs if pairs else text
    order = np.lexsort((hashes, pair))
    pair, hashes = pair[order], hashes[order]
    shared = (pair[1:] == pair[:-1]) & (hashes[1:] == hashes[:-1])  # a hash in both sets of a pair
    intersection = np.bincount(pair[1:][shared], minlength=pairs)
    union = sizes[:pairs] + sizes[pairs:] - intersection
    return intersection / union


def pairwise_jaccard(texts: Sequence[str], first: np.ndarray, second: np.ndarray, ngram: int = DEFAULT_NGRAM
                     ) -> np.ndarray:
    """True Jaccard of the n-gram sets of texts[first[i]] and texts[second[i]], float64; each text shingled once.

    For many pairs over few texts (a bucket's members are in many pairs): the texts' sets
    are built once, sorted; each pair looks the shingles of its smaller set up in the larger
    one. The same values as `exact_jaccard` of the pairs.
    """
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if len(first) != len(second):
        raise ValueError(f"need as many first as second indexes, got {len(first)} and {len(second)}")
    if not len(first):
        return np.zeros(0, np.float64)
    return _pairwise_jaccard(*shingle_table(texts, ngram), first, second)


def _pairwise_jaccard(offsets: np.ndarray, hashes: np.ndarray, first: np.ndarray, second: np.ndarray
                      ) -> np.ndarray:
    """`pairwise_jaccard` of a shingle table.

    Each text's set is sorted by one int64 key, (text, top 32 bits of the shingle hash), with
    the full hashes carried along: a lookup matches a key, then the full hash. That is exact
    as long as no two distinct shingles of one text share their top 32 bits (about 1 text in
    10^7); when some do, the sets are built from shingles numbered by their full hashes
    instead (`_pairwise_jaccard_by_number`).
    """
    n_texts = len(offsets) - 1
    text = np.repeat(np.arange(n_texts, dtype=np.int64), np.diff(offsets))
    keys = (text << _U32.astype(np.int64)) | (hashes >> _U32).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, full = keys[order], hashes[order]
    same_key = keys[1:] == keys[:-1]
    if (same_key & (full[1:] != full[:-1])).any():
        return _pairwise_jaccard_by_number(text, hashes, n_texts, first, second)
    distinct = np.r_[True, ~same_key]
    keys, full = keys[distinct], full[distinct]
    return _lookup_jaccard(keys, n_texts, first, second, full)


def _pairwise_jaccard_by_number(text: np.ndarray, hashes: np.ndarray, n_texts: int, first: np.ndarray,
                                second: np.ndarray) -> np.ndarray:
    """The same with the shingles numbered 0 .. V-1 by their full hashes (V < 2^32): keys (text, number)."""
    by_hash = np.argsort(hashes, kind="stable")
    number = np.empty(len(hashes), np.int64)
    number[by_hash] = np.cumsum(np.r_[True, hashes[by_hash][1:] != hashes[by_hash][:-1]]) - 1
    keys = np.sort((text << _U32.astype(np.int64)) | number)
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    return _lookup_jaccard(keys, n_texts, first, second, None)


def _lookup_jaccard(keys: np.ndarray, n_texts: int, first: np.ndarray, second: np.ndarray,
                    full: np.ndarray | None) -> np.ndarray:
    """Jaccard of pairs of sets given as sorted distinct int64 keys (text << 32 | shingle value)."""
    starts = np.searchsorted(keys, np.arange(n_texts, dtype=np.int64) << _U32.astype(np.int64))
    sizes = np.diff(np.r_[starts, len(keys)])
    smaller_first = sizes[first] <= sizes[second]
    small, large = np.where(smaller_first, first, second), np.where(smaller_first, second, first)
    counts = sizes[small]
    pair = np.repeat(np.arange(len(first)), counts)
    element = np.repeat(starts[small] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    queries = (large[pair] << _U32.astype(np.int64)) | (keys[element] & np.int64(0xFFFFFFFF))
    position = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    match = keys[position] == queries
    if full is not None:
        match &= full[position] == full[element]
    intersection = np.bincount(pair[match], minlength=len(first))
    return intersection / (sizes[first] + sizes[second] - intersection)
