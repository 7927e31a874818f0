"""Near-duplicate graph code in numpy: candidate edges from LSH buckets, connected components over them.

Pure functions, no engine: pipeline.run's Beam graph (pipeline/beam_run.py) calls, per band
partition, `bucket_edges` (with --no-verify: unverified stars) or the verified pairs of
transforms.near_pairs (the default); the components of those edges are then computed in
distributed rounds by transforms.connected, which uses `connected_components` only inside one
key (and for its fallback). `near_duplicate_components` is the single-process reference over
all edges that the benchmarks (bench/bench_near_dedup.py) and tests measure.
Near-duplicate removal keeps one text per connected component of the edge graph: the
smallest id, or the first under a --keep rule's survivor key (transforms.survivors), so
the survivor never depends on arrival order or partitioning.
docs/near-dedup.md describes the method; BENCHMARKS.md has its measured quality and cost.

`connected_components` is a union-find in one process over the edges it is given: it holds
them all and every node that has one.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_components

from transforms.minhash import exact_jaccard


PACKABLE = 3_037_000_499  # the largest n with n * n < 2**63: pairs of values below it pack into one int64


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of an integer array by one sort: numpy 2.4's np.unique hashes instead, 20x slower
    on millions of int64 keys (4.8 s against 0.24 s for 2M), which made the component rounds dominate 4x NSMC."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def _unique_edges(edges: np.ndarray) -> np.ndarray:
    """Rows (low, high) of int64 values without repeats, sorted.

    Each value is mapped, order kept, to a small number (its high 32 bits, less their
    minimum, times the span of its low 32 bits, plus those: node numbers `partition << 32 | row`
    become partition * (largest row + 1) + row), so a row packs into one int64 and one sort
    of those replaces a two-key lexsort (2.6x faster on 15M candidate pairs); values too
    spread out to pack take the lexsort.
    """
    if len(edges) == 0:
        return edges.reshape(0, 2)
    values = edges.ravel()
    high, low = values >> 32, values & 0xFFFFFFFF
    high_min, low_span = high.min(), int(low.max()) + 1
    if (int(high.max()) - int(high_min) + 1) * low_span < PACKABLE:  # checked in Python ints: no overflow
        compact = ((high - high_min) * low_span + low).reshape(-1, 2)
        size = int(compact.max()) + 1
        key = sorted_unique(compact[:, 0] * size + compact[:, 1])
        pair = np.stack([key // size, key % size], axis=1)
        return ((pair // low_span + high_min) << 32) | (pair % low_span)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges = edges[order]
    keep = np.ones(len(edges), dtype=bool)
    keep[1:] = (edges[1:] != edges[:-1]).any(axis=1)
    return edges[keep]


def star_edges(keys: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Edges (smallest node of the bucket, node) for every bucket key shared by several nodes.

    `keys[i]` is a bucket that `nodes[i]` fell into (one entry per node and band; keys of
    different bands must differ, as `band_keys` makes them). Works on any subset of
    buckets, e.g. one partition of a key-partitioned shuffle, as long as each bucket's
    entries are all in the call. Returns [m, 2] int64 sorted rows without repeats or
    self-loops.
    """
    keys = np.asarray(keys).ravel()
    nodes = np.asarray(nodes, dtype=np.int64).ravel()
    if len(keys) != len(nodes):
        raise ValueError(f"need one node per key, got {len(keys)} keys and {len(nodes)} nodes")
    order = np.lexsort((nodes, keys))
    keys, nodes = keys[order], nodes[order]
    bucket_start = np.ones(len(keys), dtype=bool)
    bucket_start[1:] = keys[1:] != keys[:-1]
    smallest = nodes[np.maximum.accumulate(np.where(bucket_start, np.arange(len(keys)), 0))]
    linked = nodes != smallest  # also skips a node listed twice in its own bucket
    return _unique_edges(np.stack([smallest[linked], nodes[linked]], axis=1))


def connected_components(edges: np.ndarray, nodes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an undirected graph: (node ids sorted, representative of each).

    The representative of a node is the smallest node id in its component. Nodes are those
    of `edges` ([m, 2] int64; repeats, either orientation and self-loops are fine) plus
    `nodes` if given (isolated ones represent themselves). Union-find in one process, via
    scipy's compiled connected components over a compacted sparse graph; see the module
    docstring for the scale where this stops working.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    listed = edges.ravel() if nodes is None else np.concatenate([edges.ravel(), np.asarray(nodes, np.int64).ravel()])
    ids, compact = np.unique(listed, return_inverse=True)
    compact = compact.ravel()
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (compact[0:2 * len(edges):2], compact[1:2 * len(edges):2])),
        shape=(len(ids), len(ids)),
    ).tocsr()
    _, labels = _scipy_components(graph, directed=True, connection="weak")
    _, first_of_label = np.unique(labels, return_index=True)  # ids are sorted: first = smallest
    return ids, ids[first_of_label[labels]]


def cluster_size_histogram(representatives: np.ndarray) -> dict[int, int]:
    """{cluster size: number of clusters}, from each node's representative, sizes ascending."""
    _, sizes = np.unique(np.asarray(representatives), return_counts=True)
    values, counts = np.unique(sizes, return_counts=True)
    return {int(size): int(count) for size, count in zip(values, counts)}


def verify_pairs(texts_a: Sequence[str], texts_b: Sequence[str], ngram: int, threshold: float) -> np.ndarray:
    """Bool mask: the true Jaccard of each candidate pair's n-gram sets reaches `threshold`."""
    return exact_jaccard(texts_a, texts_b, ngram) >= threshold


def bucket_edges(entries: Iterable[dict]) -> dict | None:
    """Band entries of one key partition -> unverified candidate edges: a star from each bucket's smallest id.

    The --no-verify mode. An entry is a dict of arrays ("key": band keys, "id": fixed-width
    id bytes, "order": survivor keys under a --keep rule other than smallest-id) and its
    text "partition", as transforms.corpus_stages.band_entries makes them. Band
    keys already mix in the band index, so a bucket is one key. A star links the same texts
    as all of the bucket's pairs. Returns {"a", "a_partition", "b", "b_partition"} arrays
    (and "a_order", "b_order"), or None without an edge.
    """
    entries = list(entries)
    keys = np.concatenate([e["key"] for e in entries])
    ids = np.concatenate([e["id"] for e in entries])
    partitions = np.concatenate([np.full(len(e["key"]), e["partition"], np.int32) for e in entries])
    order = np.concatenate([e["order"] for e in entries]) if "order" in entries[0] else None
    # Most buckets hold one text: find the shared ones with an integer sort, and number only
    # their ids (in sorted order, so the smallest number is the smallest id).
    sorted_keys = keys[by_key := np.argsort(keys, kind="stable")]
    shared = np.zeros(len(keys), dtype=bool)
    shared[1:] = sorted_keys[1:] == sorted_keys[:-1]
    shared[:-1] |= shared[1:].copy()
    candidates = by_key[shared]
    _, first, nodes = np.unique(ids[candidates], return_index=True, return_inverse=True)
    edges = star_edges(keys[candidates], nodes)
    heads, members = candidates[first[edges[:, 0]]], candidates[first[edges[:, 1]]]
    if not len(members):
        return None
    found = {"a": ids[heads], "a_partition": partitions[heads], "b": ids[members], "b_partition": partitions[members]}
    if order is not None:
        found.update(a_order=order[heads], b_order=order[members])
    return found


def near_duplicate_components(edge_batches: list[dict]) -> dict:
    """All edges -> ids to remove per text partition, the clusters and their size histogram.

    One union-find over every edge in a single worker (the module docstring gives the
    scale where that stops working). The survivor of a cluster is its smallest id, or,
    when the edges carry survivor keys ("a_order", "b_order"), the smallest (key, id): ids
    are numbered in that order before the components. `edges` counts the distinct edges
    (a pair found in several bands once); the clusters are listed by id.
    """
    if not edge_batches:
        return {"removed": {}, "clusters": None, "histogram": {}, "edges": 0}
    a = np.concatenate([e["a"] for e in edge_batches])
    b = np.concatenate([e["b"] for e in edge_batches])
    partitions = np.concatenate([np.concatenate([e["a_partition"] for e in edge_batches]),
                                 np.concatenate([e["b_partition"] for e in edge_batches])])
    names, first, inverse = np.unique(np.concatenate([a, b]), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if "a_order" in edge_batches[0]:
        keys = np.concatenate([np.concatenate([e["a_order"] for e in edge_batches]),
                               np.concatenate([e["b_order"] for e in edge_batches])])[first]
        by_survivor = np.lexsort((names, keys))  # number -> name index: survivors first
        number = np.empty(len(names), np.int64)
        number[by_survivor] = np.arange(len(names))
        inverse = number[inverse]
    else:
        by_survivor = np.arange(len(names))  # names are sorted: the smallest number is the smallest id
    edges = np.stack([inverse[:len(a)], inverse[len(a):]], axis=1)
    edges = np.unique(np.sort(edges, axis=1), axis=0)  # a pair found in several bands counts once
    numbers, representative = connected_components(edges)
    listed = np.argsort(by_survivor[numbers], kind="stable")  # the clusters by id
    nodes, representative = by_survivor[numbers][listed], by_survivor[representative][listed]
    removed_nodes = nodes[representative != nodes]
    removed_partitions = partitions[first[removed_nodes]]
    return {
        "removed": {int(partition): names[removed_nodes[removed_partitions == partition]]
                    for partition in np.unique(removed_partitions)},
        "clusters": {"id": names[nodes], "cluster_id": names[representative], "kept": representative == nodes},
        "histogram": {str(size): n for size, n in cluster_size_histogram(representative).items()},
        "edges": int(len(edges)),
    }
