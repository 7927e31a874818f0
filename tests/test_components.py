"""Candidate edges from LSH buckets, connected components and pair verification (transforms.components)."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from transforms.components import (
    _unique_edges,
    bucket_edges,
    cluster_size_histogram,
    connected_components,
    near_duplicate_components,
    star_edges,
    verify_pairs,
)
from transforms.minhash import DEFAULT_NGRAM, band_keys, exact_jaccard, lsh_params, signatures

BIG = 10**12  # node ids need not be small or dense


def reference_components(edges, nodes=()) -> dict[int, int]:
    """Node -> smallest node of its component, by a plain Python union-find."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for node in nodes:
        find(int(node))
    return {node: find(node) for node in parent}


def as_dict(result) -> dict[int, int]:
    ids, representatives = result
    assert np.all(np.diff(ids) > 0)  # sorted, unique
    return dict(zip(ids.tolist(), representatives.tolist()))


@pytest.mark.parametrize(
    "edges, nodes, expected",
    [
        # a chain given out of order and reversed
        ([(BIG + 4, BIG + 3), (BIG + 2, BIG + 3), (BIG + 5, BIG + 4), (BIG + 1, BIG + 2)], None,
         {BIG + i: BIG + 1 for i in range(1, 6)}),
        # a star whose centre is not the smallest id
        ([(50, 7), (50, 99), (50, 3), (50, 12)], None, {50: 3, 7: 3, 99: 3, 3: 3, 12: 3}),
        # several components, duplicate edges, self-loops, and isolated nodes
        ([(1, 2), (2, 1), (1, 2), (9, 9), (5, 6), (7, 6), (8, 8)], [4, 1, 100],
         {1: 1, 2: 1, 4: 4, 5: 5, 6: 5, 7: 5, 8: 8, 9: 9, 100: 100}),
        # two stars joined through a leaf
        ([(10, 11), (10, 12), (20, 21), (20, 22), (12, 22)], None, {n: 10 for n in (10, 11, 12, 20, 21, 22)}),
        # nothing but isolated nodes
        ([], [3, 1, 2], {1: 1, 2: 2, 3: 3}),
        ([], None, {}),
    ],
)
def test_crafted_graphs(edges, nodes, expected):
    result = connected_components(np.array(edges, dtype=np.int64).reshape(-1, 2), nodes)
    assert as_dict(result) == expected


def test_random_graphs_match_a_python_union_find():
    rng = np.random.default_rng(0)
    for trial in range(20):
        node_pool = rng.choice(10**9, size=200, replace=False)
        edges = rng.choice(node_pool, size=(int(rng.integers(0, 300)), 2))
        extra = rng.choice(node_pool, size=20)
        assert as_dict(connected_components(edges, extra)) == reference_components(edges, extra)


def test_long_chain():
    order = np.random.default_rng(1).permutation(50_000)
    edges = np.stack([order[:-1], order[1:]], axis=1)
    ids, representatives = connected_components(edges)
    assert len(ids) == 50_000 and np.all(representatives == 0)


def test_cluster_size_histogram():
    _, representatives = connected_components(np.array([(1, 2), (2, 3), (5, 6), (7, 8)]), nodes=[9])
    assert cluster_size_histogram(representatives) == {1: 1, 2: 2, 3: 1}
    assert cluster_size_histogram(np.array([], dtype=np.int64)) == {}


def brute_force_bucket_pairs(keys: np.ndarray, docs: np.ndarray) -> set[tuple[int, int]]:
    """Every pair of documents that share a key in some band."""
    pairs = set()
    for band in range(keys.shape[1]):
        buckets: dict[int, list[int]] = {}
        for key, doc in zip(keys[:, band].tolist(), docs.tolist()):
            buckets.setdefault(key, []).append(doc)
        for members in buckets.values():
            pairs.update(itertools.combinations(sorted(members), 2))
    return pairs


def id_bytes(docs) -> np.ndarray:
    """Integer node ids as fixed-width id bytes that sort like the integers (as the pipeline's ids sort)."""
    return np.array([f"{doc:012d}".encode() for doc in docs], dtype=np.bytes_)


def band_entries(keys: np.ndarray, docs: np.ndarray, partition_of_doc=None) -> list[dict]:
    """Unverified entries as transforms.corpus_stages.band_entries makes them (one dict per text partition)."""
    bands = keys.shape[1]
    partitions = np.zeros(len(docs), np.int32) if partition_of_doc is None else np.asarray(partition_of_doc)
    return [{"key": keys[partitions == p].ravel(), "row": np.repeat(np.flatnonzero(partitions == p), bands),
             "partition": int(p), "id": np.repeat(id_bytes(docs[partitions == p]), bands)}
            for p in np.unique(partitions)]


def edges_of(found) -> np.ndarray:
    if found is None:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.stack([found["a"].astype(np.int64), found["b"].astype(np.int64)], axis=1), axis=0)


def test_bucket_edges_are_bucket_stars_and_connect_like_all_pairs():
    rng = np.random.default_rng(2)
    for trial in range(10):
        n_docs, bands = 300, 4
        keys = rng.integers(0, 60, size=(n_docs, bands)).astype(np.uint64) + np.arange(bands, dtype=np.uint64) * 1000
        docs = rng.choice(10**9, size=n_docs, replace=False)
        edges = edges_of(bucket_edges(band_entries(keys, docs)))
        all_pairs = brute_force_bucket_pairs(keys, docs)
        edge_set = set(map(tuple, edges.tolist()))
        assert len(edge_set) == len(edges) and edge_set <= all_pairs
        assert np.all(edges[:, 0] < edges[:, 1])
        # each edge's low end is the smallest member of a bucket the high end is in
        smallest = {}
        for band in range(bands):
            for key, doc in zip(keys[:, band].tolist(), docs.tolist()):
                smallest[key] = min(smallest.get(key, doc), doc)
        expected_stars = {
            (smallest[key], doc)
            for band in range(bands)
            for key, doc in zip(keys[:, band].tolist(), docs.tolist())
            if smallest[key] != doc
        }
        assert edge_set == expected_stars
        assert as_dict(connected_components(edges, docs)) == reference_components(all_pairs, docs)
        shuffled = rng.permutation(n_docs)
        assert np.array_equal(edges_of(bucket_edges(band_entries(keys[shuffled], docs[shuffled]))), edges)
        # entries split by key partition, as the pipeline shuffles them: the union is the same edges
        entries = band_entries(keys, docs)[0]
        parts = [edges_of(bucket_edges([{**entries, **{name: entries[name][entries["key"] % np.uint64(5) == p]
                                                       for name in ("key", "row", "id")}}]))
                 for p in range(5)]
        assert np.array_equal(np.unique(np.concatenate(parts), axis=0), edges)


def test_near_duplicate_components_removes_all_but_the_smallest_id_per_partition():
    # 3-4 share a band-0 bucket, 1-5 another, 5-9 a band-1 bucket: clusters {1, 5, 9} and {3, 4}; 7 is alone.
    docs = np.array([1, 3, 4, 5, 7, 9])
    keys = np.array([[10, 20], [11, 21], [11, 22], [10, 23], [13, 25], [14, 23]], dtype=np.uint64)
    # text partitions: doc % 2
    found = bucket_edges(band_entries(keys, docs, (docs % 2).astype(np.int32)))
    result = near_duplicate_components([found])
    assert {p: ids.tolist() for p, ids in result["removed"].items()} == {0: [b"000000000004"],
                                                                        1: [b"000000000005", b"000000000009"]}
    assert result["histogram"] == {"2": 1, "3": 1} and result["edges"] == 3
    clusters = dict(zip(result["clusters"]["id"].tolist(), result["clusters"]["cluster_id"].tolist()))
    assert clusters == {b"000000000001": b"000000000001", b"000000000005": b"000000000001",
                        b"000000000009": b"000000000001", b"000000000003": b"000000000003",
                        b"000000000004": b"000000000003"}
    assert near_duplicate_components([]) == {"removed": {}, "clusters": None, "histogram": {}, "edges": 0}


def test_star_edges_by_partition_union_to_the_whole():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 500, size=(2000, 5)).astype(np.uint64) * np.uint64(2654435761)
    docs = np.arange(2000, dtype=np.int64) * 3
    flat_keys, flat_docs = keys.ravel(), np.repeat(docs, 5)
    parts = [star_edges(flat_keys[flat_keys % np.uint64(7) == p], flat_docs[flat_keys % np.uint64(7) == p])
             for p in range(7)]
    merged = np.unique(np.concatenate(parts), axis=0)
    assert np.array_equal(merged, star_edges(flat_keys, flat_docs))


def test_star_edges_reject_bad_input():
    with pytest.raises(ValueError, match="one node per key"):
        star_edges(np.zeros(3, dtype=np.uint64), np.array([1, 2]))
    assert star_edges(np.zeros(0, dtype=np.uint64), np.array([], dtype=np.int64)).shape == (0, 2)


def test_verify_pairs_is_the_exact_jaccard_threshold():
    a = ["가나다라마바", "가나다라마바", "정말 재밌어요", "전혀 다른 말"]
    b = ["가나다라마바", "가나다라마", "정말재밌어요", "완전히 새로운 문장"]
    # bigrams: identical, 4 of 5 (exactly 0.8), spacing only, disjoint
    assert np.allclose(exact_jaccard(a, b, 2), [1.0, 0.8, 1.0, 0.0])
    assert verify_pairs(a, b, 2, 0.8).tolist() == [True, True, True, False]
    assert verify_pairs(a, b, 2, 0.81).tolist() == [True, False, True, False]


def test_sample_corpus_near_duplicates_are_removed_and_distinct_comments_kept():
    sample_corpus = pytest.importorskip("pipeline.sample_corpus")
    from transforms.clean import clean_text

    corpus = sample_corpus.generate_sample(0)
    cleaned = {record["id"]: clean_text(record["text"]) for record in sample_corpus.sample_records(0)}
    by_text: dict[str, str] = {}
    for record_id in sorted(cleaned):
        if len(cleaned[record_id]) >= 10:
            by_text.setdefault(cleaned[record_id], record_id)  # exact dedup first: smallest id survives
    ids = sorted(by_text.values())
    id_to_text = {record_id: text for text, record_id in by_text.items()}
    texts = [id_to_text[i] for i in ids]
    bands, rows = lsh_params(0.8, 128)
    edges = edges_of(bucket_edges(band_entries(band_keys(signatures(texts), bands, rows), np.arange(len(texts)))))
    nodes, representatives = connected_components(edges)
    removed = {ids[n] for n, r in zip(nodes.tolist(), representatives.tolist()) if n != r}
    planted = {copy: by_text[cleaned[source]] for copy, source in corpus.near_duplicate_of.items()
               if copy in id_to_text}
    # of each planted pair (after exact dedup) the smaller id survives
    expected = {max(copy, source) for copy, source in planted.items()}
    assert len(expected) > 250 and expected <= removed
    # Beyond the planted pairs only texts of the "exact after cleaning" duplicates go: some of
    # them differ by a laughter run that cleaning shortens to two, not to the original's three.
    related = set(corpus.exact_duplicate_of) | set(corpus.exact_duplicate_of.values())
    assert removed - expected <= related
    assert not removed & (set(corpus.distinct_ids) - related - set(corpus.near_duplicate_of.values()))
    assert verify_pairs([texts[i] for i in edges[:, 0]], [texts[i] for i in edges[:, 1]], DEFAULT_NGRAM, 0.8).all()


@pytest.mark.parametrize("ngram, threshold", [(2, 0.8), (3, 0.5)])
def test_benchmark_ground_truth_join_is_exact(ngram, threshold):
    from bench.bench_near_dedup import exact_similar_pairs, light_edit
    from transforms.minhash import shingle_table

    rng = random.Random(ngram)
    alphabet = "가나다라마바사 ㅋ!"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30))) for _ in range(250)]
    texts += [light_edit(rng.choice(texts), rng, alphabet) for _ in range(150)]
    pairs, jaccard = exact_similar_pairs(*shingle_table(texts, ngram), threshold)
    first, second = np.triu_indices(len(texts), k=1)
    brute = exact_jaccard([texts[i] for i in first], [texts[j] for j in second], ngram)
    similar = brute >= threshold
    assert similar.sum() > 20
    assert np.array_equal(pairs, np.stack([first[similar], second[similar]], axis=1))
    assert np.allclose(jaccard, brute[similar])


@pytest.mark.parametrize("kind", ["small", "node numbers", "spread", "negative high words"])
def test_unique_edges_packs_or_lexsorts_to_the_same_sorted_distinct_rows(kind):
    """One int64 sort where the values pack (node numbers partition << 32 | row do), the lexsort where not."""
    rng = np.random.default_rng(11)
    for size in (0, 1, 7, 300):
        if kind == "small":
            edges = rng.integers(-5, 5, (size, 2))
        elif kind == "node numbers":
            edges = (rng.integers(0, 4, (size, 2)) << 32) | rng.integers(0, 7, (size, 2))
        elif kind == "spread":
            edges = rng.integers(-2**62, 2**62, (size, 2))
        else:
            edges = (rng.integers(-3, 3, (size, 2)) << 32) | rng.integers(0, 2**32, (size, 2))
        edges = np.concatenate([edges, edges[: size // 3]]).astype(np.int64)
        got = _unique_edges(edges)
        assert got.dtype == np.int64 and got.tolist() == np.unique(edges, axis=0).reshape(-1, 2).tolist()
