"""Near-duplicate removal on NSMC: quality against an exact ground truth, and signature speed.

Quality: 22,000 distinct cleaned NSMC reviews (KcBERT clean, >= 10 characters, exact
duplicates removed, as the pipeline does before near dedup) plus 2,000 planted copies with
light random edits, shuffled. The ground truth is every pair at exact Jaccard >= 0.8 over
the same shingle sets, found by an exact prefix-filter join (see `exact_similar_pairs`).
The near dedup under test is the chain pipeline.run runs: signatures -> band keys
(`band_entries`) -> verified bucket pairs (transforms.near_pairs: `bucket_pairs`,
`route_pairs`, `fetch_texts`, `verify_candidates`; the default) or unverified bucket stars
(`bucket_edges`, --no-verify) -> connected_components; datasketch's in-memory MinHashLSH over
the same shingles is the peer.
Speed: `signatures` vs datasketch `MinHash.bulk` on the same shingles, one core, in the same run.
The command itself against an exact ground truth on all NSMC reviews, natural and with planted
copies: bench/near_dedup_truth.py; its cost against a plain loop: bench/pipeline_near_dedup.py.

`python -m bench.bench_near_dedup` (or `make bench`) writes bench/results/near_dedup.md.
"""
from __future__ import annotations

import random
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from datasketch import MinHash, MinHashLSH

from bench.common import NSMC_PATH, RESULTS_DIR, WORK_DIR, machine_line, read_nsmc_texts
from transforms.clean import clean_text
from transforms import near_pairs
from transforms.components import bucket_edges, cluster_size_histogram, connected_components
from transforms.corpus_stages import NearDedupSettings, band_entries
from transforms.minhash import (
    DEFAULT_NGRAM,
    DEFAULT_NUM_PERM,
    LSH_WEIGHTS,
    LSH_WEIGHTS_VERIFIED,
    band_keys,
    lsh_params,
    shingle_table,
    signatures,
    signatures_from_shingles,
)

THRESHOLD = 0.8
ORIGINALS = 22_000
PLANTED = 2_000
MIN_LENGTH = 10  # the pipeline's default length filter (KcBERT's)
SPEED_TEXTS = 20_000
SEED = 0
LAUGHTER = [" ㅋㅋ", "ㅋㅋ", " ㅎㅎ", "ㅠㅠ", " ㅋㅋㅋ", " ㄷㄷ"]
VISIBLE_SPACE = "\u2581"  # never survives clean_text: stands in for a space to keep it in shingles


def distinct_clean_reviews(data_path: Path, count: int, seed: int) -> list[str]:
    """`count` random NSMC reviews as the pipeline leaves them: cleaned, long enough, no exact repeats."""
    raw = read_nsmc_texts(data_path)
    texts: list[str] = []
    seen: set[str] = set()
    for index in random.Random(seed).sample(range(len(raw)), len(raw)):
        text = clean_text(raw[index])
        if len(text) >= MIN_LENGTH and text not in seen:
            seen.add(text)
            texts.append(text)
            if len(texts) == count:
                return texts
    raise ValueError(f"{data_path} has fewer than {count} distinct reviews of >= {MIN_LENGTH} characters")


def light_edit(text: str, rng: random.Random, alphabet: str) -> str:
    """One edit of the kind reposted comments carry."""
    kind = rng.randrange(6)
    position = rng.randrange(len(text))
    if kind == 0:
        return text[:position] + rng.choice(alphabet) + text[position + 1:]
    if kind == 1:
        return text[:position] + rng.choice(alphabet) + text[position:]
    if kind == 2:
        return text[:position] + text[position + 1:]
    if kind == 3:
        return text + rng.choice(LAUGHTER)
    if kind == 4:
        if text[-1] in ".!?~":
            return text[:-1] + rng.choice(["", "!", "..", "?", "~"])
        return text + rng.choice([".", "!", "!!", "..", "?", "~"])
    spaces = [i for i, c in enumerate(text) if c == " "]
    if spaces and rng.random() < 0.5:
        position = rng.choice(spaces)
        return text[:position] + text[position + 1:]
    return text[:position] + " " + text[position:]


def plant_near_duplicates(texts: list[str], count: int, seed: int) -> tuple[list[str], list[int]]:
    """Edited copies of `count` random texts (one edit per 40 characters, at least one), and their sources.

    Substitutions and insertions draw characters from the texts themselves; a copy that
    equals an existing text is dropped (exact dedup would have removed it).
    """
    rng = random.Random(seed)
    alphabet = "".join(texts)
    existing = set(texts)
    copies, sources = [], []
    for source in rng.sample(range(len(texts)), count):
        copy = texts[source]
        for _ in range(1 + len(copy) // 40):
            copy = light_edit(copy, rng, alphabet)
        if copy and copy not in existing:
            existing.add(copy)
            copies.append(copy)
            sources.append(source)
    return copies, sources


def exact_similar_pairs(offsets: np.ndarray, hashes: np.ndarray, threshold: float, block: int = 20_000
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of texts whose shingle sets have Jaccard >= threshold (sorted), and that Jaccard.

    Exact, by the prefix-filter lemma of AllPairs (Bayardo et al. 2007): order each set's
    shingles by global frequency (rarest first). If J(x, y) >= t and |y| <= |x|, the first
    |x| - ceil(t*|x|) + 1 shingles of x (its probe prefix) and the first
    |y| - ceil(2t/(1+t)*|y|) + 1 of y (its index prefix) share a shingle. Candidates are
    such pairs (a sparse product of prefix matrices, a block of probing texts at a time, so
    memory stays bounded) that also pass the size filter |y| >= t*|x|; each is then checked
    exactly (the smaller set's shingles looked up in the larger one). Works on the 64-bit
    shingle hashes, which equal the shingle sets unless two distinct shingles collide
    (probability ~ 2^-64 per pair of shingles).
    """
    n_texts = len(offsets) - 1
    text = np.repeat(np.arange(n_texts, dtype=np.int64), np.diff(offsets))
    vocabulary, token = np.unique(hashes, return_inverse=True)
    frequency = np.bincount(token.ravel(), minlength=len(vocabulary))
    rank = np.empty(len(vocabulary), dtype=np.int64)
    rank[np.lexsort((np.arange(len(vocabulary)), frequency))] = np.arange(len(vocabulary))
    width = np.int64(len(vocabulary))
    keys = np.sort(text * width + rank[token.ravel()])  # each text's set, rarest shingle first
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # (np.unique's hash table is slower at this size)
    text, token = keys // width, keys % width
    size = np.bincount(text, minlength=n_texts)
    start = np.cumsum(size) - size
    position = np.arange(len(text)) - np.repeat(start, size)
    shape = (n_texts, len(vocabulary))

    def prefix_matrix(share: float) -> sp.csr_matrix:
        length = size - np.ceil(share * size - 1e-9).astype(np.int64) + 1
        inside = position < length[text]
        return sp.csr_matrix((np.ones(int(inside.sum()), np.float32), (text[inside], token[inside])), shape=shape)

    probe, index = prefix_matrix(threshold), prefix_matrix(2 * threshold / (1 + threshold)).T.tocsr()
    found_pairs, found_jaccard = [], []
    for low in range(0, n_texts, block):
        candidates = (probe[low:low + block] @ index).tocoo()
        x, y = candidates.row.astype(np.int64) + low, candidates.col.astype(np.int64)
        smaller = (size[y] < size[x]) | ((size[y] == size[x]) & (y < x))
        x, y = x[smaller], y[smaller]
        sized = size[y] >= threshold * size[x] - 1e-9
        x, y = x[sized], y[sized]
        counts = size[y]  # look y's shingles up in x's set
        pair = np.repeat(np.arange(len(x)), counts)
        element = np.repeat(start[y] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        queries = x[pair] * width + token[element]
        where = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
        intersection = np.bincount(pair[keys[where] == queries], minlength=len(x))
        jaccard = intersection / (size[x] + size[y] - intersection)
        similar = jaccard >= threshold
        found_pairs.append(np.stack([np.minimum(x, y)[similar], np.maximum(x, y)[similar]], axis=1))
        found_jaccard.append(jaccard[similar])
    pairs = np.concatenate(found_pairs) if found_pairs else np.zeros((0, 2), np.int64)
    jaccard = np.concatenate(found_jaccard) if found_jaccard else np.zeros(0)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], jaccard[order]


def removed_mask(edges: np.ndarray, n_texts: int) -> np.ndarray:
    """Texts that near dedup removes: all but the smallest index of each component."""
    nodes, representatives = connected_components(edges)
    removed = np.zeros(n_texts, dtype=bool)
    removed[nodes[nodes != representatives]] = True
    return removed


def cluster_labels(edges: np.ndarray, n_texts: int) -> np.ndarray:
    """Component representative of every text (itself when it has no edge)."""
    nodes, representatives = connected_components(edges, np.arange(n_texts))
    return representatives


def same_cluster_pairs(*labelings: np.ndarray) -> int:
    """Number of text pairs that are in one cluster under every labelling given."""
    _, counts = np.unique(np.stack(labelings, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def bucket_pairs(keys: np.ndarray) -> np.ndarray:
    """All pairs (i < j) of rows sharing a key in some band: LSH's candidate pairs, not just the star edges."""
    pairs = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = np.sort(order[start:start + size])
            i, j = np.triu_indices(size, k=1)
            pairs.append(np.stack([members[i], members[j]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def pair_set(pairs: np.ndarray, n_texts: int) -> np.ndarray:
    return np.unique(pairs[:, 0].astype(np.int64) * n_texts + pairs[:, 1])


def quality_row(name: str, edges: np.ndarray, truth: dict, candidate_pairs: np.ndarray, seconds: float) -> str:
    """One table row: pair- and document-level precision and recall against the ground truth."""
    n_texts = truth["n_texts"]
    removed = removed_mask(edges, n_texts)
    hit = (removed & truth["removed"]).sum()
    labels = cluster_labels(edges, n_texts)
    together = same_cluster_pairs(labels)
    together_both = same_cluster_pairs(labels, truth["labels"])
    found = np.isin(pair_set(candidate_pairs, n_texts), truth["pair_keys"]).sum()
    candidates = (f"{len(candidate_pairs):,} | {found / max(len(candidate_pairs), 1):.3f} | "
                  f"{found / len(truth['pair_keys']):.3f}")
    return (f"| {name} | {candidates} | {together_both / max(together, 1):.3f} | "
            f"{together_both / truth['together']:.3f} | {removed.sum():,} | {hit / max(removed.sum(), 1):.3f} | "
            f"{hit / truth['removed'].sum():.3f} | {seconds:.2f} |")


def ground_truth(texts: list[str], ngram: int) -> dict:
    offsets, hashes = shingle_table(texts, ngram)
    started = time.process_time()
    pairs, jaccard = exact_similar_pairs(offsets, hashes, THRESHOLD)
    n_texts = len(texts)
    labels = cluster_labels(pairs, n_texts)
    return {
        "n_texts": n_texts,
        "pairs": pairs,
        "pair_keys": pair_set(pairs, n_texts),
        "removed": removed_mask(pairs, n_texts),
        "labels": labels,
        "together": same_cluster_pairs(labels),
        "seconds": time.process_time() - started,
    }


def our_edges(texts: list[str], ngram: int, weights: tuple[float, float], verify: bool, seed: int = SEED
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """The near dedup under test: (edges it links, LSH candidate pairs, CPU seconds for the edges).

    The edges come from the functions pipeline.run runs on one partition (`band_entries`,
    then the verified pairs of transforms.near_pairs, or `bucket_edges` unverified), with ids
    that sort as the texts' positions.
    """
    started = time.process_time()
    bands, rows = lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *weights)
    near = NearDedupSettings(THRESHOLD, DEFAULT_NUM_PERM, ngram, seed, bands, rows, verify)
    table = pa.table({"id": [f"{i:010d}" for i in range(len(texts))], "text": texts})
    entries = band_entries(table, 0, near, 1).values()
    if verify:
        by_dest, requests = near_pairs.route_pairs(near_pairs.bucket_pairs(entries)[0])
        fetched = near_pairs.fetch_texts(0, [table], requests.values())[0].values()
        found = near_pairs.verify_candidates(by_dest.values(), fetched, ngram, THRESHOLD)[0]
    else:
        found = bucket_edges(entries)
    edges = np.zeros((0, 2), dtype=np.int64) if found is None else np.stack(
        [found["a"].astype(np.int64), found["b"].astype(np.int64)], axis=1)
    seconds = time.process_time() - started
    keys = band_keys(signatures(texts, DEFAULT_NUM_PERM, ngram, seed), bands, rows)
    return edges, bucket_pairs(keys), seconds


def shingle_bytes(texts: list[str], ngram: int) -> list[list[bytes]]:
    """Each text's shingles as the 8-byte hashes `signatures` starts from: the same sets for datasketch."""
    offsets, hashes = shingle_table(texts, ngram)
    raw = hashes.astype("<u8").tobytes()
    return [[raw[8 * k:8 * k + 8] for k in range(offsets[i], offsets[i + 1])] for i in range(len(texts))]


def datasketch_edges(shingles: list[list[bytes]], weights: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Pairs that datasketch's MinHashLSH returns for every text queried against all others."""
    started = time.process_time()
    minhashes = MinHash.bulk(shingles, num_perm=DEFAULT_NUM_PERM, seed=1)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=DEFAULT_NUM_PERM, weights=weights)
    with lsh.insertion_session() as session:
        for index, minhash in enumerate(minhashes):
            session.insert(index, minhash, check_duplication=False)
    pairs = {(min(i, j), max(i, j)) for i, minhash in enumerate(minhashes) for j in lsh.query(minhash) if j != i}
    edges = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return edges, time.process_time() - started


def quality_section(data_path: Path) -> tuple[str, dict]:
    originals = distinct_clean_reviews(data_path, ORIGINALS, SEED)
    copies, sources = plant_near_duplicates(originals, PLANTED, SEED)
    order = np.random.default_rng(SEED).permutation(len(originals) + len(copies))
    texts = [(originals + copies)[i] for i in order]  # ids = positions after shuffling
    truth = ground_truth(texts, DEFAULT_NGRAM)
    rows = []
    default_edges = None
    for name, weights, verify in [
        (f"ours, weights {LSH_WEIGHTS_VERIFIED}, verified (default)", LSH_WEIGHTS_VERIFIED, True),
        (f"ours, weights {LSH_WEIGHTS}, `--no-verify`", LSH_WEIGHTS, False),
        (f"ours, weights {LSH_WEIGHTS}, verified", LSH_WEIGHTS, True),
        ("ours, weights (0.1, 0.9), verified (the earlier verified setting)", (0.1, 0.9), True),
        ("ours, weights (0.5, 0.5), `--no-verify`", (0.5, 0.5), False),
    ]:
        edges, candidates, seconds = our_edges(texts, DEFAULT_NGRAM, weights, verify)
        default_edges = edges if default_edges is None else default_edges
        bands, rows_per_band = lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *weights)
        rows.append(quality_row(f"{name}: {bands}×{rows_per_band}", edges, truth, candidates, seconds))
    shingles = shingle_bytes(texts, DEFAULT_NGRAM)
    for weights in [(0.5, 0.5), LSH_WEIGHTS]:
        edges, seconds = datasketch_edges(shingles, weights)
        bands, rows_per_band = lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *weights)
        rows.append(quality_row(f"datasketch MinHashLSH, weights {weights}: {bands}×{rows_per_band}", edges, truth,
                                edges, seconds))
    histogram = cluster_size_histogram(connected_components(default_edges)[1])
    truth_histogram = cluster_size_histogram(connected_components(truth["pairs"])[1])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    planted = pair_set(np.sort(np.stack([position[sources], position[len(originals) + np.arange(len(copies))]],
                                        axis=1), axis=1), truth["n_texts"])
    planted_share = np.isin(planted, truth["pair_keys"]).mean()
    section = f"""### Quality at Jaccard {THRESHOLD} (n = {DEFAULT_NGRAM}, {DEFAULT_NUM_PERM} permutations)

Data: {len(originals):,} distinct cleaned NSMC reviews (random, >= {MIN_LENGTH} characters, exact
duplicates removed) + {len(copies):,} planted copies of random reviews with 1 + len/40 light
random edits (character substitution, insertion or deletion, appended laughter, punctuation
or spacing change), shuffled: {truth['n_texts']:,} texts. Ground truth: all {len(truth['pairs']):,}
pairs at exact Jaccard >= {THRESHOLD} over the same shingles (prefix-filter join, provably
complete, {truth['seconds']:.1f} CPU s); {planted_share:.1%} of the planted copies are among them (an edit
of a short review can take it below {THRESHOLD}). Its components would remove
{truth['removed'].sum():,} texts (all but the smallest id of each).

- *Candidate pairs*: every pair sharing a bucket in some band (the LSH output: what the
  verified default checks; `--no-verify` links a star per bucket, which connects the same
  texts). Precision = share with true Jaccard >= {THRESHOLD}; recall = share of the
  ground-truth pairs among them.
- *Cluster pairs*: pairs of texts put in one cluster, against pairs in one ground-truth
  component (pair-counting precision and recall of the clustering).
- *Removed texts*: precision = share of the removed texts that the ground-truth components
  also remove; recall = share of the ground-truth removals that happen. (Survivor rule:
  smallest id, so these compare like with like.)

| run | candidate pairs | cand. precision | cand. recall | cluster-pair precision | cluster-pair recall | removed | removed precision | removed recall | CPU s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Clusters of the default run (size: how many): {histogram}; of the ground truth: {truth_histogram}.
Datasketch's rows include building its MinHash objects (SHA-1 per shingle) and querying
every text; ours include signatures, band keys, edges and, verified, fetching the candidates'
texts and the exact check.
"""
    return section, {"originals": originals}


def signature_speed_section(data_path: Path, originals: list[str]) -> str:
    """Throughput of `signatures` against datasketch `MinHash.bulk` on the same shingles, one core."""
    texts = originals[:SPEED_TEXTS]
    shingle_strings = []
    for text in texts:  # datasketch's input: the same shingles as strings (whitespace removed, n-grams)
        compact = "".join(text.split())
        grams = {compact[i:i + DEFAULT_NGRAM] for i in range(len(compact) - DEFAULT_NGRAM + 1)} or {compact}
        shingle_strings.append([g.encode("utf-8") for g in grams])
    datasketch_seconds = min(_timed(lambda: MinHash.bulk(shingle_strings, num_perm=DEFAULT_NUM_PERM))
                             for _ in range(2))
    ours_seconds = min(_timed(lambda: signatures(texts, DEFAULT_NUM_PERM, DEFAULT_NGRAM, SEED)) for _ in range(10))
    offsets, hashes = shingle_table(texts, DEFAULT_NGRAM)
    ours_minhash_only = min(_timed(lambda: signatures_from_shingles(offsets, hashes, DEFAULT_NUM_PERM, SEED))
                            for _ in range(10))
    everything = [clean_text(text) for text in read_nsmc_texts(data_path)]
    everything_seconds = min(_timed(lambda: signatures(everything, DEFAULT_NUM_PERM, DEFAULT_NGRAM, SEED))
                             for _ in range(2))
    tracemalloc.start()
    signatures(everything, DEFAULT_NUM_PERM, DEFAULT_NGRAM, SEED)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    n = len(texts)
    ratio = datasketch_seconds / ours_seconds
    shingles = sum(len(s) for s in shingle_strings)
    return f"""### Signature speed (one core, same run)

{n:,} cleaned NSMC reviews ({shingles:,} {DEFAULT_NGRAM}-gram shingles, distinct within each review), {DEFAULT_NUM_PERM} permutations,
best of several runs each, in CPU seconds of this single-threaded process (the machine is
shared, so wall time is noisier; ratios are what count). Datasketch gets its input prepared (lists of shingle bytes; that
preparation is not timed); ours starts from the raw strings and includes shingling.

| | CPU s | texts per CPU s |
|---|---:|---:|
| datasketch `MinHash.bulk` (affine32, SHA-1 per shingle) | {datasketch_seconds:.2f} | {n / datasketch_seconds:,.0f} |
| `transforms.minhash.signatures` (shingling included) | {ours_seconds:.3f} | {n / ours_seconds:,.0f} |
| `signatures_from_shingles` (permutations and minima only) | {ours_minhash_only:.3f} | {n / ours_minhash_only:,.0f} |
| `signatures`, all {len(everything):,} cleaned NSMC reviews in one batch | {everything_seconds:.2f} | {len(everything) / everything_seconds:,.0f} |

**Ratio: {ratio:.1f}× datasketch** (target ≥ 10×: {'met' if ratio >= 10 else 'NOT met'}). Peak memory
allocated by `signatures` on the {len(everything):,}-review batch (tracemalloc): {peak_mib:.0f} MiB, about
{peak_mib * 2**20 / len(everything):,.0f} bytes per review: the shingle table, the [num_perm, n] minima and the
returned [n, num_perm] uint32 signatures; the work buffer is fixed at 4 MiB. Callers bound it
by the batch size.
"""


def ngram_choice_section(originals: list[str]) -> str:
    """Why DEFAULT_NGRAM: planted copies still near-duplicate, distinct reviews flagged, LSH quality, per n."""
    copies, sources = plant_near_duplicates(originals, PLANTED, SEED + 1)
    texts = originals + copies
    n_originals = len(originals)
    planted = {(s, n_originals + k) for k, s in enumerate(sources)}
    rows = []
    variants = [(n, False) for n in (2, 3, 4, 5, 6)] + [(2, True), (3, True), (5, True)]
    for ngram, keep_spaces in variants:
        shingled = [t.replace(" ", VISIBLE_SPACE) for t in texts] if keep_spaces else texts
        truth = ground_truth(shingled, ngram)
        pairs = set(map(tuple, truth["pairs"].tolist()))
        planted_share = len(planted & pairs) / len(planted)
        natural = sum(1 for a, b in pairs if b < n_originals)
        edges, candidates, _ = our_edges(shingled, ngram, LSH_WEIGHTS, False)
        removed = removed_mask(edges, len(texts))
        hit = (removed & truth["removed"]).sum()
        found = np.isin(pair_set(candidates, len(texts)), truth["pair_keys"]).sum()
        rows.append(f"| {ngram} | {'kept' if keep_spaces else 'removed'} | {planted_share:.3f} | {natural} | "
                    f"{len(candidates):,} | {found / max(len(candidates), 1):.3f} | "
                    f"{hit / max(removed.sum(), 1):.3f} | {hit / truth['removed'].sum():.3f} |")
    bands, rows_per_band = lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *LSH_WEIGHTS)
    return f"""### Choice of n (and of removing whitespace)

Same {n_originals:,} reviews, another {len(copies):,} planted copies. Per shingling: the share of planted
copies still at Jaccard >= {THRESHOLD} to their source (does the definition catch a light edit?),
the pairs of distinct original reviews at >= {THRESHOLD} (what it flags besides), and MinHash+LSH
({bands}×{rows_per_band}, no verify) against that shingling's own exact ground truth. "Whitespace kept"
shingles the text with spaces in it.

| n | whitespace | planted copies at J >= {THRESHOLD} | distinct reviews at J >= {THRESHOLD} (pairs) | LSH candidate pairs | candidate precision | removed precision | removed recall |
|---:|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

n = {DEFAULT_NGRAM} with whitespace removed is the default: it keeps most lightly edited copies
above the threshold while flagging no more distinct reviews than longer n-grams do, and its
LSH candidates are the most precise (fewer pairs sit just below the threshold).
"""


def seed_spread_section(data_path: Path, seeds: range) -> str:
    """Removed-text precision and recall for other samples, plantings and MinHash seeds."""
    rows = []
    for seed in seeds:
        originals = distinct_clean_reviews(data_path, ORIGINALS, seed)
        copies, _ = plant_near_duplicates(originals, PLANTED, seed)
        texts = originals + copies
        truth = ground_truth(texts, DEFAULT_NGRAM)
        cells = []
        for weights, verify in [(LSH_WEIGHTS, False), (LSH_WEIGHTS_VERIFIED, True)]:
            edges, _, _ = our_edges(texts, DEFAULT_NGRAM, weights, verify, seed)
            removed = removed_mask(edges, len(texts))
            hit = (removed & truth["removed"]).sum()
            cells.append(f"{hit / max(removed.sum(), 1):.3f} | {hit / truth['removed'].sum():.3f}")
        rows.append(f"| {seed} | {truth['removed'].sum():,} | {' | '.join(cells)} |")
    unverified = "×".join(map(str, lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *LSH_WEIGHTS)))
    verified = "×".join(map(str, lsh_params(THRESHOLD, DEFAULT_NUM_PERM, *LSH_WEIGHTS_VERIFIED)))
    return f"""### Stability across samples and seeds

Other random samples of {ORIGINALS:,} reviews, other plantings, other MinHash seeds (the seed
sets all three); removed-text precision and recall.

| seed | ground-truth removals | `--no-verify` {unverified}: precision | `--no-verify`: recall | verified {verified} (default): precision | verified (default): recall |
|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
"""


def components_scale_section() -> str:
    """Time and peak memory of the single-process connected components on large random graphs."""
    rows = []
    rng = np.random.default_rng(SEED)
    for edges_count in (1_000_000, 4_000_000):
        edges = rng.integers(0, 2**40, size=(edges_count, 2), dtype=np.int64)
        edges[:, 1] = edges[rng.permutation(edges_count), 0]  # ~n nodes, mostly in one giant component
        tracemalloc.start()
        seconds = _timed(lambda: connected_components(edges))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append(f"| {edges_count:,} | {seconds:.2f} | {peak / 2**20:,.0f} | {peak / edges_count:.0f} |")
    return f"""### Scale of the components step (single-process union-find)

`connected_components` on random graphs with int64 node ids (nodes ≈ edges), one core.
Peak = memory allocated during the call (tracemalloc), on top of the edge array itself.

| edges | CPU s | peak MiB | bytes per edge |
|---:|---:|---:|---:|
{chr(10).join(rows)}
"""


def _timed(function) -> float:
    """CPU seconds of this process spent in `function` (the machine is shared; all of it runs on one core)."""
    started = time.process_time()
    function()
    return time.process_time() - started


def pipeline_rows(data_path: Path, workdir: Path) -> str:
    """Timing rows of the full `python -m pipeline.run` with near dedup, and its growth at 1x/2x/4x."""
    from bench.pipeline_near_dedup import pipeline_rows as rows

    return rows(data_path, workdir / "pipeline")


def truth_section(data_path: Path, workdir: Path) -> str:
    """`pipeline.run` itself against an exact ground truth, natural and planted (bench/near_dedup_truth.py)."""
    from bench.near_dedup_truth import truth_rows

    return truth_rows(data_path, workdir / "truth")[0]


def run(data_path: Path, workdir: Path) -> str:
    """The near-dedup benchmark section (Markdown)."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quality, data = quality_section(data_path)
    speed = signature_speed_section(data_path, data["originals"])
    choice = ngram_choice_section(data["originals"])
    spread = seed_spread_section(data_path, range(1, 4))
    scale = components_scale_section()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process, before the commands
    truth = truth_section(data_path, workdir)
    pipeline = pipeline_rows(data_path, workdir)
    return f"""## Near-duplicate removal (MinHash LSH)

Command: `make bench` or `python -m bench.bench_near_dedup`. Machine: {machine_line()}.
Peak resident memory of the benchmark process: {peak_rss_mib:,.0f} MiB (the commands it runs are
measured on their own). Took {time.perf_counter() - started:.0f} s.

{speed}
{quality}
{truth}
{spread}
{choice}
{scale}
{pipeline}"""


if __name__ == "__main__":
    section = run(NSMC_PATH, WORK_DIR / "near_dedup")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "near_dedup.md").write_text(section, encoding="utf-8")
    print(section)
