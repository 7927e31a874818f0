"""Verified near dedup: every pair an LSH bucket proposes (bounded for giant buckets), checked by true Jaccard.

Pure numpy functions, no engine. pipeline/beam_run.py composes them (docs/near-dedup.md):

    band entries (band key, row, text partition; no text), grouped by band partition
      -> bucket_pairs: the candidate pairs of every bucket with >= 2 members, as node pairs
      -> route_pairs: each pair to the text partition of the one of its two nodes with the
         larger rank (a fixed hash of the node: the copies of a pair found in several bands
         meet there and are checked once; a large bucket's (representative, member) pairs go
         to the members' partitions, see below), and a text request for each of its two
         nodes to the text partition that holds the record
    requests + that partition's records (joined by text partition)
      -> fetch_texts: the requested rows' id, text (and survivor key), sent to the pairs
    pairs + fetched texts (joined by the pairs' partition)
      -> verify_candidates: distinct pairs, true Jaccard, the edges that reach the threshold

Only the texts of records in a shared bucket travel, once per partition that checks one
of their pairs; band entries travel without text. A node is one record after exact
dedup: `text partition << 32 | row` in that partition's id-sorted table.

The bound: a bucket of at most `ALL_PAIRS_UP_TO` members gives all its pairs. A larger
bucket (thousands of near-identical spam comments) gives, with its members sorted by rank
(`node_ranks`: a bijective hash of the node, fixed by the texts, the ids and --num-shards,
not by workers or arrival), the pairs among its first `REPRESENTATIVES` members and every
other member paired with each of those: (m - R) * R + R * (R - 1) / 2 pairs for m members
instead of m * (m - 1) / 2. The representatives have the bucket's smallest ranks, so each
(representative, member) pair is checked in the member's partition: a partition checks about
R pairs per member of its own, however large the bucket grows, and the representatives (spread
over the partitions by the hash) each send their text to the partitions of their members.
What that can cost: a pair of members that are both past the first R of every large bucket
they share (and share no small bucket) is not checked; they still end up in one cluster
when each reaches the threshold with a representative, or when other pairs connect them.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

import numpy as np

from transforms.components import _unique_edges
from transforms.hashing import mix64
from transforms.minhash import pairwise_jaccard

ALL_PAIRS_UP_TO = 64  # K: buckets with at most this many members give all their pairs
REPRESENTATIVES = 8  # R: in a larger bucket, every member is paired with its first R members (by rank)
# Pairs verified together: their texts are shingled together (~40 bytes per character), so a partition with
# very many candidate pairs is verified in blocks of this many, each shingling only the texts it needs.
PAIRS_PER_BLOCK = 1 << 17
_ROW_BITS = np.int64(32)
_ROW_MASK = np.int64((1 << 32) - 1)


def node_numbers(partition: int, rows: np.ndarray) -> np.ndarray:
    """The nodes of rows of one text partition: partition << 32 | row (int64)."""
    return (np.int64(partition) << _ROW_BITS) | np.asarray(rows, dtype=np.int64)


def node_partitions(nodes: np.ndarray) -> np.ndarray:
    """The text partition of each node (int32)."""
    return (np.asarray(nodes, dtype=np.int64) >> _ROW_BITS).astype(np.int32)


def node_rows(nodes: np.ndarray) -> np.ndarray:
    return np.asarray(nodes, dtype=np.int64) & _ROW_MASK


def node_ranks(nodes: np.ndarray) -> np.ndarray:
    """A fixed, well-spread order of nodes (uint64; distinct nodes, distinct ranks): a large bucket's representatives
    are its smallest, and a pair is checked in the partition of its larger (the module docstring)."""
    return mix64(np.asarray(nodes, dtype=np.int64).view(np.uint64))


def bucket_pairs(entries: Iterable[dict], all_pairs_up_to: int = ALL_PAIRS_UP_TO,
                 representatives: int = REPRESENTATIVES) -> tuple[np.ndarray, Counter]:
    """Band entries of one band partition -> (candidate node pairs [m, 2] int64, low < high, distinct, sorted; tally).

    An entry is "key" (band keys; keys of different bands differ) and "row" arrays and the
    text "partition" of those rows, as transforms.corpus_stages.band_entries makes them;
    every entry of a bucket must be in the call. Buckets larger than `all_pairs_up_to` are
    bounded as the module docstring says, their members in rank order (`node_ranks`), and
    counted as `near_dedup_large_buckets`.
    """
    if representatives < 1 or all_pairs_up_to < representatives:
        raise ValueError(f"need 1 <= representatives <= all_pairs_up_to, got {representatives}, {all_pairs_up_to}")
    started = time.perf_counter()
    entries = [e for e in entries if len(e["key"])]
    tally: Counter = Counter(max_band_partition_entries=sum(len(e["key"]) for e in entries))
    pairs = _bucket_pairs(entries, all_pairs_up_to, representatives, tally)
    tally["seconds_bucket_pairs"] += time.perf_counter() - started
    return pairs, tally


def _bucket_pairs(entries: list[dict], all_pairs_up_to: int, representatives: int, tally: Counter) -> np.ndarray:
    if not entries:
        return np.zeros((0, 2), np.int64)
    keys = np.concatenate([e["key"] for e in entries])
    nodes = np.concatenate([node_numbers(e["partition"], e["row"]) for e in entries])
    # Most buckets hold one record: keep the shared ones (one integer sort). A small bucket gives all its
    # pairs, whatever the order of its members; only a large one is put in rank order.
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    shared = np.zeros(len(keys), dtype=bool)
    shared[1:] = sorted_keys[1:] == sorted_keys[:-1]
    shared[:-1] |= shared[1:].copy()
    keys, nodes = sorted_keys[shared], nodes[by_key[shared]]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(keys)])
    firsts, seconds = [], []
    small = sizes <= all_pairs_up_to
    for size in np.unique(sizes[small]):
        bucket_starts = starts[small & (sizes == size)][:, None]
        i, j = np.triu_indices(size, k=1)
        firsts.append((bucket_starts + i).ravel())
        seconds.append((bucket_starts + j).ravel())
    large = np.flatnonzero(~small)
    tally["near_dedup_large_buckets"] += len(large)
    i, j = np.triu_indices(representatives, k=1)
    for start, size in zip(starts[large], sizes[large]):
        members = nodes[start:start + size]
        nodes[start:start + size] = members[np.argsort(node_ranks(members))]
        others = np.arange(start + representatives, start + size)
        firsts += [start + i, np.tile(start + np.arange(representatives), len(others))]
        seconds += [start + j, np.repeat(others, representatives)]
    if not firsts:
        return np.zeros((0, 2), np.int64)
    a, b = nodes[np.concatenate(firsts)], nodes[np.concatenate(seconds)]
    distinct = a != b  # one record listed twice in a bucket is no pair
    return _unique_edges(np.stack([np.minimum(a, b)[distinct], np.maximum(a, b)[distinct]], axis=1))


def route_pairs(pairs: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """Candidate pairs -> ({pairs' partition: pairs}, {text partition: text requests}).

    A pair goes to the text partition of the node with the larger rank (`node_ranks`): a
    fixed choice (the copies of a pair meet), unbiased (the first node's partition is the
    smaller one, so always taking it would load low partitions twice as much as the
    average), and a large bucket's (representative, member) pairs go to the members'
    partitions, since its representatives have its smallest ranks. A request is the rows a text partition must send, each with the partition ("dest") of
    the pairs that need it, distinct.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    dest = node_partitions(np.where(node_ranks(pairs[:, 1]) > node_ranks(pairs[:, 0]), pairs[:, 1], pairs[:, 0]))
    by_dest = {int(d): pairs[dest == d] for d in np.unique(dest)}
    wanted = _unique_edges(np.stack([np.concatenate([pairs[:, 0], pairs[:, 1]]),
                                     np.concatenate([dest, dest]).astype(np.int64)], axis=1))
    holder = node_partitions(wanted[:, 0])
    requests = {int(p): {"row": node_rows(wanted[holder == p, 0]).astype(np.int32),
                         "dest": wanted[holder == p, 1].astype(np.int32)} for p in np.unique(holder)}
    return by_dest, requests


def fetch_texts(partition: int, tables: Iterable, requests: Iterable[dict], keep=None
                ) -> tuple[dict[int, dict], Counter]:
    """One text partition's records and the requests for them -> ({dest: {"node", "id", "text", "order"}}, tally).

    `tables`: the partition's exact-deduplicated, id-sorted records (one Arrow table, as
    transforms.corpus_stages.dedup_partition returns it; none if the partition is empty).
    "order" is the survivor key of each record under `keep` (transforms.survivors), or
    absent for smallest-id.
    """
    import pyarrow as pa

    from transforms.corpus_stages import fixed_width_ids
    from transforms.survivors import survivor_keys

    started = time.perf_counter()
    requests = [r for r in requests if len(r["row"])]
    tally = Counter(max_fetch_requests=sum(len(r["row"]) for r in requests))
    tables = list(tables)
    if not requests:
        return {}, tally
    if len(tables) != 1:
        raise ValueError(f"text partition {partition}: expected its one table of records, got {len(tables)}")
    wanted = _unique_edges(np.stack([np.concatenate([r["row"] for r in requests]).astype(np.int64),
                                     np.concatenate([r["dest"] for r in requests]).astype(np.int64)], axis=1))
    tally["max_fetch_distinct_requests"] = len(wanted)  # the texts sent: each row once per partition that needs it
    rows, inverse = np.unique(wanted[:, 0], return_inverse=True)
    records = tables[0].take(pa.array(rows))
    nodes = node_numbers(partition, rows)
    ids = fixed_width_ids(records.column("id"))
    texts = np.asarray(records.column("text").to_pylist(), dtype=object)
    order = survivor_keys(records, keep) if keep is not None else None
    fetched = {}
    for dest in np.unique(wanted[:, 1]):
        picked = inverse[wanted[:, 1] == dest]
        fetched[int(dest)] = {"node": nodes[picked], "id": ids[picked], "text": texts[picked],
                              **({"order": order[picked]} if order is not None else {})}
    tally["seconds_fetch_texts"] = time.perf_counter() - started
    return fetched, tally


def verify_candidates(pair_batches: Iterable[np.ndarray], fetched: Iterable[dict], ngram: int, threshold: float,
                      pairs_per_block: int = PAIRS_PER_BLOCK) -> tuple[dict | None, Counter]:
    """One partition's candidate pairs and their fetched texts -> (edges at true Jaccard >= threshold, tally).

    Pairs found in several bands (or band partitions) are checked once. The edges are the
    {"a", "a_partition", "b", "b_partition"} arrays (plus "a_order", "b_order" under a
    survivor key) that transforms.components.near_duplicate_components takes; None without
    an edge. Tally: near_dedup_pairs_checked, _verified, _rejected, max_verify_pairs (the
    pairs this call was given, repeats included: a pair comes once from every band partition
    that found it) and max_verify_distinct_pairs (bench/bench_scale.py's per-worker figures).
    The pairs are checked `pairs_per_block` at a time, so the shingles held at once are those
    of one block's texts however many pairs the partition has.
    """
    started = time.perf_counter()
    pair_batches = list(pair_batches)
    tally: Counter = Counter(max_verify_pairs=sum(len(p) for p in pair_batches))
    edges = _verify(pair_batches, fetched, ngram, threshold, tally, pairs_per_block)
    tally["seconds_verify_pairs"] += time.perf_counter() - started
    return edges, tally


def _similar(texts: np.ndarray, a: np.ndarray, b: np.ndarray, ngram: int, threshold: float, pairs_per_block: int
             ) -> np.ndarray:
    """Whether each pair (texts[a[i]], texts[b[i]]) reaches the threshold, `pairs_per_block` pairs at a time: each
    block shingles its own texts once (a text in several blocks is shingled in each)."""
    similar = np.zeros(len(a), dtype=bool)
    for start in range(0, len(a), pairs_per_block):
        block = slice(start, start + pairs_per_block)
        used, index = np.unique(np.concatenate([a[block], b[block]]), return_inverse=True)
        first, second = index[:len(index) // 2], index[len(index) // 2:]
        similar[block] = pairwise_jaccard(list(texts[used]), first, second, ngram) >= threshold
    return similar


def _verify(pair_batches, fetched, ngram: int, threshold: float, tally: Counter, pairs_per_block: int
            ) -> dict | None:
    batches = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in pair_batches]
    pairs = _unique_edges(np.concatenate(batches)) if batches else np.zeros((0, 2), np.int64)
    tally["max_verify_distinct_pairs"] = len(pairs)
    if not len(pairs):
        return None
    fetched = [f for f in fetched if len(f["node"])]
    nodes = np.concatenate([f["node"] for f in fetched])
    nodes, first = np.unique(nodes, return_index=True)
    ids = np.concatenate([f["id"] for f in fetched])[first]
    texts = np.concatenate([f["text"] for f in fetched])[first]
    order = np.concatenate([f["order"] for f in fetched])[first] if "order" in fetched[0] else None
    a, b = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    if not (np.array_equal(nodes[np.minimum(a, len(nodes) - 1)], pairs[:, 0])
            and np.array_equal(nodes[np.minimum(b, len(nodes) - 1)], pairs[:, 1])):
        raise ValueError("a candidate pair's text was not fetched")
    similar = _similar(texts, a, b, ngram, threshold, pairs_per_block)
    tally["near_dedup_pairs_checked"] += len(pairs)
    tally["near_dedup_pairs_verified"] += int(similar.sum())
    tally["near_dedup_pairs_rejected"] += int(len(pairs) - similar.sum())
    if not similar.any():
        return None
    a, b = a[similar], b[similar]
    edges = {"a": ids[a], "a_partition": node_partitions(nodes[a]), "b": ids[b], "b_partition": node_partitions(nodes[b])}
    if order is not None:
        edges.update(a_order=order[a], b_order=order[b])
    return edges
