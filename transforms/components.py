"""Candidate edges from LSH buckets and connected components over them, in numpy (no Beam).

Near-duplicate removal keeps one text per connected component of the candidate graph: the
one with the smallest node id (the pipeline maps record ids to sortable integers), so the
survivor never depends on arrival order or partitioning.

Scale of the single-combine union-find (`connected_components`): it holds every edge and
every node that has an edge in one process. Measured (`bench/bench_near_dedup.py`, random
graphs with int64 ids): ~90 bytes of peak memory per edge inside the call, ~110 with the
edge array itself, and ~1 s per million edges on one core; texts without an edge never
reach it. Near-dedup edges are few (one per duplicate text per colliding band, as a star
per bucket), so 10^7 edges (~1 GiB) is a corpus of tens of millions of comments with a
heavy duplicate rate, well inside one worker. Past ~10^8 edges (~11 GiB) the combine no
longer fits a typical worker: then cut the edges first (`verify_pairs` drops the false
candidates; a higher threshold makes fewer), give the combine a high-memory worker, or run
distributed connected components instead: large-star/small-star rounds (Kiveris et al.
2014), unrolled as a fixed number of Beam GroupByKey stages over the edges.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_components

from transforms.minhash import exact_jaccard


def _unique_edges(edges: np.ndarray) -> np.ndarray:
    """Rows (low, high) without repeats, sorted."""
    if len(edges) == 0:
        return edges.reshape(0, 2)
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


def candidate_edges(bucket_keys: np.ndarray, doc_index: np.ndarray) -> np.ndarray:
    """Star edges for documents sharing a bucket key in any band: [m, 2] int64 (low, high).

    `bucket_keys` is `band_keys(...)`, [n_docs, bands]; `doc_index[i]` is row i's node id.
    Each bucket links its members to its smallest member; edges are deduplicated.
    """
    bucket_keys = np.asarray(bucket_keys)
    doc_index = np.asarray(doc_index, dtype=np.int64)
    if bucket_keys.ndim != 2 or len(bucket_keys) != len(doc_index):
        raise ValueError(f"need bucket keys [n_docs, bands] and n_docs node ids, got shapes "
                         f"{bucket_keys.shape} and {doc_index.shape}")
    if len(np.unique(doc_index)) != len(doc_index):
        raise ValueError("doc_index must not repeat a node id")
    return star_edges(bucket_keys, np.repeat(doc_index, bucket_keys.shape[1]))


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
