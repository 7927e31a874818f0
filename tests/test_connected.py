"""Distributed connected components (transforms.connected): large-star / small-star rounds against scipy."""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from transforms import connected

PARTITIONS = 7


def as_edges(pairs: np.ndarray, order: np.ndarray | None = None) -> dict:
    """Integer node pairs as the pipeline's edges: ids as fixed-width bytes that sort like the integers."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    ids = np.char.encode(np.char.zfill(pairs.astype(str), 9), "ascii")
    parts = ((pairs * 2654435761) % PARTITIONS).astype(np.int32)
    edges = {"a": ids[:, 0], "a_partition": parts[:, 0], "b": ids[:, 1], "b_partition": parts[:, 1]}
    if order is not None:
        edges.update(a_order=order[pairs[:, 0]], b_order=order[pairs[:, 1]])
    return edges


def expected(pairs: np.ndarray, n: int, order: np.ndarray | None = None) -> dict[int, int]:
    """Node -> the survivor of its component (smallest (order, id)), by scipy, for nodes with an edge (no self-loop)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = scipy_components(graph, directed=False)
    rank = np.arange(n) if order is None else np.lexsort((np.arange(n), order))
    best = {}
    for node in (rank if order is not None else range(n)):
        best.setdefault(labels[node], int(node))
    return {int(node): best[labels[node]] for node in np.unique(pairs)}


def result_map(rows: dict[int, dict]) -> dict[int, int]:
    found = {}
    for partition, table in rows.items():
        assert np.all(table["id"][:-1] < table["id"][1:])  # by id, each node once
        for node, rep, kept in zip(table["id"], table["cluster_id"], table["kept"]):
            assert (int(node) * 2654435761) % PARTITIONS == partition
            assert kept == (node == rep)
            found[int(node)] = int(rep)
    return found


def check(pairs, n, order=None, rounds=64, batches=3, contract=True):
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    split = np.array_split(np.arange(len(pairs)), batches)
    rows, ran, tally = connected.components_in_process(
        [as_edges(pairs[part], order) for part in split if len(part)], rounds, contract)
    truth = expected(pairs, n, order)
    assert result_map(rows) == truth
    sizes = sum((table["sizes"] for table in rows.values()), start=Counter())
    _, counts = np.unique(list(truth.values()), return_counts=True)
    assert dict(sizes) == {int(s): int(c) for s, c in zip(*np.unique(counts, return_counts=True))}
    distinct = {tuple(sorted(p)) for p in pairs.tolist() if p[0] != p[1]}
    assert tally["near_dedup_edges"] == len(distinct)
    return ran, tally


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("contract", [True, False], ids=["contract", "large-small-star"])
def test_random_graphs_match_scipy(seed, contract):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    pairs = rng.integers(0, n, size=(int(rng.integers(1, 2 * n)), 2))
    check(pairs, n, contract=contract)


@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_with_survivor_keys(seed):
    rng = np.random.default_rng(100 + seed)
    n = 300
    # variable-width keys, compared with NUL padding as transforms.survivors' keys are
    order = np.array([bytes([1]) + bytes(rng.integers(65, 70, size=int(rng.integers(0, 4))).tolist())
                      for _ in range(n)], dtype=object).astype(np.bytes_)
    pairs = rng.integers(0, n, size=(400, 2))
    check(pairs, n, order)


def test_stars_duplicates_and_self_loops():
    star = [(50, 7), (50, 99), (50, 3), (50, 12), (3, 50), (7, 7)]
    for contract in (True, False):
        check(star, 100, contract=contract)
        check([(10, 11), (10, 12), (20, 21), (20, 22), (12, 22)], 30, contract=contract)


def test_too_few_rounds_fall_back_to_the_exact_answer():
    order = np.random.default_rng(2).permutation(2_000)
    pairs = np.stack([order[:-1], order[1:]], axis=1)
    ran, tally = check(pairs, 2_000, rounds=1, contract=False)
    assert ran == 1 and tally["near_dedup_components_unconverged_nodes"] > 0


def test_long_chain_and_giant_component_converge_within_the_unrolled_rounds():
    started = time.perf_counter()
    n = 100_000
    rng = np.random.default_rng(3)
    order = rng.permutation(n)
    chain = np.stack([order[:-1], order[1:]], axis=1)
    sorted_chain = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)  # labels in chain order
    giant = np.concatenate([chain[: n // 2], rng.integers(0, n, size=(n, 2))])  # one component of ~10^5
    for graph, most in ((chain, 6), (sorted_chain, 4), (giant, 4)):  # rounds measured with 7 keys
        ran, tally = check(graph, n, rounds=connected.rounds_for(n), batches=8)
        assert tally["near_dedup_components_unconverged_nodes"] == 0 and ran <= most < connected.rounds_for(n)
    short = 20_000  # large-star + small-star pairs on the worst case (about log2(n) pairs), smaller to stay fast
    ran, tally = check(sorted_chain[:short - 1], short, rounds=connected.rounds_for(short), batches=8, contract=False)
    assert tally["near_dedup_components_unconverged_nodes"] == 0 and ran <= 15 < connected.rounds_for(short)
    assert time.perf_counter() - started < 60


def test_rounds_grow_with_the_log_of_the_bound():
    assert connected.rounds_for(1) == connected.MIN_ROUNDS
    assert connected.rounds_for(10**5) < connected.rounds_for(10**9) <= 40


@pytest.mark.parametrize("rounds", [0, 1, 8])
def test_the_beam_rounds_give_the_exact_clusters_and_fall_back_when_unrolled_too_few(rounds):
    """pipeline/beam_run.py's components on a chain (needs several rounds) in the in-process runner."""
    import apache_beam as beam

    from pipeline import beam_run

    order = np.random.default_rng(5).permutation(300)
    pairs = np.stack([order[:-1], order[1:]], axis=1)
    batches = [as_edges(part) for part in np.array_split(pairs, 4)]
    from apache_beam.testing.util import assert_that

    def exact(elements):
        found = dict(elements)
        assert len(found) == len(elements)  # one row set per partition
        assert result_map(found) == expected(pairs, 300)
        assert sum((table["sizes"] for table in found.values()), start=Counter()) == Counter({300: 1})

    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        rows, counts = beam_run._components(pipeline | beam.Create(batches), rounds)
        assert_that(rows, exact)


def test_the_beam_rounds_stop_carrying_stars_once_a_checked_round_saw_them_converged():
    """Clusters of 2-4 nodes are stars after two rounds: round 2's check finds none left, round 3 finishes them,
    and rounds 4..24 run over nothing (the entries summed over all rounds stay at a few rounds' worth)."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from pipeline import beam_run

    rng = np.random.default_rng(6)
    pairs = np.concatenate([np.stack([base, base + rng.integers(1, 4, len(base))], axis=1)
                            for base in (np.arange(0, 4000, 8), np.arange(4, 4000, 8))])
    batches = [as_edges(part) for part in np.array_split(pairs, 3)]
    from apache_beam.testing.util import assert_that

    def exact(elements):
        assert result_map(dict(elements)) == expected(pairs, 4000)

    pipeline = beam.Pipeline(runner="FnApiRunner")
    rows, _ = beam_run._components(pipeline | beam.Create(batches), 24)
    assert_that(rows, exact)
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_name("components_entries"))["counters"]
    shuffled = sum(counter.committed for counter in query)
    assert 0 < shuffled <= 3 * 2 * 2 * len(pairs)  # rounds 1-3 at most (2 entries an edge, doubled by both ends)
