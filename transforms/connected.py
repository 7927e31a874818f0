"""Distributed connected components of the near-duplicate graph: large-star / small-star rounds, in numpy.

Pure functions, no engine. pipeline/beam_run.py runs them as a fixed number of unrolled
GroupByKey rounds (docs/near-dedup.md, "Components"); the tests check them against scipy.

A node is one record: its id (fixed-width UTF-8 bytes), its survivor key under a --keep
rule ("order", transforms.survivors; absent for smallest-id) and its text partition
("part"). Nodes compare by (order, id), so the minimum of a component is its survivor. The
graph travels as *entries*: directed adjacency (node -> neighbour), keyed by the text
partition of the node, so one key holds the adjacency of one text partition's nodes (a
batch of nodes, never one element per node), and the final answer is already keyed as the
writers need it.

One round (`star_round`, Kiveris et al. 2014, "Connected Components in MapReduce and
Beyond") is a function over one key's entries. With m(u) = the smallest of u and its
neighbours:

- large-star: every neighbour v > u of u is linked to m(u);
- small-star: u and every neighbour v < u of u are linked to m(u).

Both keep every component connected and never add a node; alternated, they turn each
component into a star around its smallest node in O(log n) rounds in practice. The graph
runs `contract_round` instead, one GroupByKey a round instead of two: a key holds a batch
of nodes' adjacency, and every connected piece of it becomes a star around its smallest
node (a union-find over the key's edges), which includes both star steps of each of those
nodes. Measured (tests/test_connected.py; 10^5 nodes, 7 keys / 64 keys): a chain in random
order converges in 6 / 11 rounds, labels increasing along the chain in 4 / 7, where
large-star + small-star need 13 and 17 pairs (26 and 34 GroupByKeys). `finish` checks that every
component has become a star (each node has at most one smaller neighbour, and a node with
one has no larger neighbour) and reads off each node's representative; the nodes that fail
are counted. If any fail, the graph was not unrolled with enough rounds: the caller runs
`fallback_components` (an exact union-find) over the remaining edges instead, which holds
them in one worker, so a corpus never gets a wrong answer, only a slower one.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from transforms.components import connected_components, sorted_unique

MIN_ROUNDS = 4
# Rounds (1-based) whose input is checked for convergence: when no node of it is outside a star, the next round
# finishes (its input is the same stars) and the rounds after it run over nothing (pipeline/beam_run.py).
CHECKED_ROUNDS = (2, 4, 8, 16, 32)
ROUND_UNCONVERGED = "components_round_unconverged_nodes"  # tally key of a checked round: its input's count


def rounds_for(max_nodes: int) -> int:
    """Rounds (`contract_round`s, or large-star + small-star pairs) to unroll for components of up to `max_nodes` nodes.

    Measured worst case (tests/test_connected.py, the module docstring): a chain of 10^5
    nodes needs 11 `contract_round`s over 64 keys and at most log2(n) = 17 large-star +
    small-star pairs; log2 of the bound plus 3 leaves a margin for either.
    """
    return max(MIN_ROUNDS, math.ceil(math.log2(max(2, max_nodes))) + 3)


# ---------------------------------------------------------------- entries


def _side(edges: dict, end: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    return (np.asarray(edges[end]), np.asarray(edges[f"{end}_order"]) if f"{end}_order" in edges else None,
            np.asarray(edges[f"{end}_partition"], dtype=np.int32))


def edge_entries(edges: dict) -> dict[int, dict]:
    """Undirected edges {"a", "a_partition", "b", "b_partition"(, "a_order", "b_order")} -> {text partition: entries}.

    Both directions of every edge: a -> b keyed by a's partition, b -> a keyed by b's.
    """
    (a, a_order, a_part), (b, b_order, b_part) = _side(edges, "a"), _side(edges, "b")
    return _route(np.concatenate([a, b]), _cat(a_order, b_order), np.concatenate([a_part, b_part]),
                  np.concatenate([b, a]), _cat(b_order, a_order), np.concatenate([b_part, a_part]))


def _cat(first, second):
    return None if first is None else np.concatenate([first, second])


def _route(node, order, part, nb, nb_order, nb_part) -> dict[int, dict]:
    """Entries grouped by their node's partition, each group in input order: one stable sort, not a pass per
    partition (which would cost partitions x entries: 500 partitions at 70 GB)."""
    by_part = np.argsort(part, kind="stable")
    sorted_part = part[by_part]
    starts = np.flatnonzero(np.r_[True, sorted_part[1:] != sorted_part[:-1]]) if len(part) else np.zeros(0, np.int64)
    routed = {}
    for start, end in zip(starts, np.r_[starts[1:], len(part)]):
        picked = by_part[start:end]
        entry = {"id": node[picked], "nb": nb[picked], "nb_part": nb_part[picked]}
        if order is not None:
            entry.update(order=order[picked], nb_order=nb_order[picked])
        routed[int(sorted_part[start])] = entry
    return routed


class _Graph:
    """One key's entries as local integers: rank r < s exactly when node r's (order, id) < node s's."""

    def __init__(self, entries: Iterable[dict], partition: int | list[int]):
        entries = list(entries)
        partitions = partition if isinstance(partition, list) else [partition] * len(entries)
        partitions = [p for p, e in zip(partitions, entries) if len(e["id"])]
        entries = [e for e in entries if len(e["id"])]
        self.size = sum(len(e["id"]) for e in entries)
        if not entries:
            self.x = self.y = np.zeros(0, np.int64)
            self.ids, self.order, self.part = np.zeros(0, "S1"), None, np.zeros(0, np.int32)
            return
        n = self.size
        ids = np.concatenate([e["id"] for e in entries] + [e["nb"] for e in entries])
        part = np.concatenate([np.full(len(e["id"]), p, np.int32) for p, e in zip(partitions, entries)]
                              + [np.asarray(e["nb_part"], np.int32) for e in entries])
        order = (np.concatenate([e["order"] for e in entries] + [e["nb_order"] for e in entries])
                 if "order" in entries[0] else None)
        by_label = np.lexsort((ids,) if order is None else (ids, order))
        new = np.ones(len(ids), bool)
        new[1:] = ids[by_label][1:] != ids[by_label][:-1]  # a node is its id; its order follows from it
        rank = np.empty(len(ids), np.int64)
        rank[by_label] = np.cumsum(new) - 1
        firsts = by_label[new]
        self.ids, self.part = ids[firsts], part[firsts]
        self.order = order[firsts] if order is not None else None
        x, y = rank[:n], rank[n:]
        distinct = x != y
        key = sorted_unique(x[distinct] * len(firsts) + y[distinct])  # sorted by (x, y), no repeats
        self.x, self.y = key // len(firsts), key % len(firsts)

    def smallest(self) -> np.ndarray:
        """m(x) for every entry's node x: the smallest of x and its neighbours (entries are sorted by x, y)."""
        start = np.r_[True, self.x[1:] != self.x[:-1]] if len(self.x) else np.zeros(0, bool)
        first_y = self.y[np.maximum.accumulate(np.where(start, np.arange(len(self.x)), 0))]
        return np.minimum(self.x, first_y)

    def entries(self, a: np.ndarray, b: np.ndarray) -> dict[int, dict]:
        """Undirected local edges (a, b) -> both directions, routed by partition, without self-loops or repeats."""
        keep = a != b
        low, high = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
        key = sorted_unique(low * max(len(self.ids), 1) + high)
        low, high = key // max(len(self.ids), 1), key % max(len(self.ids), 1)
        node, nb = np.concatenate([low, high]), np.concatenate([high, low])
        order = self.order
        return _route(self.ids[node], None if order is None else order[node], self.part[node],
                      self.ids[nb], None if order is None else order[nb], self.part[nb])


def _round_start(partition: int, entries: Iterable[dict], first: bool) -> tuple[_Graph, Counter]:
    """The key's graph and the tally every round starts with (see star_round)."""
    graph = _Graph(entries, partition)
    tally = Counter(max_components_entries=graph.size, components_entries=graph.size)
    if first:
        tally["near_dedup_edges"] += int((graph.y > graph.x).sum())
    return graph, tally


def star_round(partition: int, entries: Iterable[dict], large: bool, first: bool = False
               ) -> tuple[dict[int, dict], Counter]:
    """One large-star (or small-star) round over one text partition's entries -> the next round's entries, tally.

    Tally: `max_components_entries` (entries this key held, combined by max), and
    `components_entries` (summed: entries shuffled into the round); `first`: the entries
    are the initial edges, whose distinct edges are counted as `near_dedup_edges`.
    """
    graph, tally = _round_start(partition, entries, first)
    if not len(graph.x):
        return {}, tally
    m = graph.smallest()
    if large:
        linked = graph.y > graph.x
        return graph.entries(graph.y[linked], m[linked]), tally
    smaller = graph.y < graph.x
    return graph.entries(np.concatenate([graph.y[smaller], graph.x]), np.concatenate([m[smaller], m])), tally


def contract_round(partition: int, entries: Iterable[dict], first: bool = False, check: bool = False
                   ) -> tuple[dict[int, dict], Counter]:
    """One round over one text partition's entries: every connected piece of the edges this key holds becomes a
    star around its smallest node -> the next round's entries, tally.

    The edges a key holds (its nodes' adjacency) are part of the graph, so a piece of them
    lies inside one component: linking its nodes to its smallest node keeps every component
    connected and adds no node. It includes a large-star and a small-star step of every
    node here (both link a node's neighbourhood to its smallest member, which is in its
    piece), so one round (one GroupByKey) does at least the work of that pair; a component
    that is a star around its smallest node stays one. Tally as `star_round`'s; with `check`, also
    ROUND_UNCONVERGED: how many of this key's nodes are not yet in a star (as `finish` counts them).
    """
    graph, tally = _round_start(partition, entries, first)
    if check:
        tally[ROUND_UNCONVERGED] += _unconverged(*_node_groups(graph)[1:])
    if not len(graph.x):
        return {}, tally
    local, representative = connected_components(np.stack([graph.x, graph.y], axis=1))  # ranks: min = smallest
    return graph.entries(local, representative), tally


def _rows(graph: _Graph, nodes: np.ndarray, representatives: np.ndarray) -> dict:
    """Cluster rows of the given local nodes, by id: {"id", "cluster_id", "kept"}."""
    by_id = np.argsort(graph.ids[nodes], kind="stable")
    nodes, representatives = nodes[by_id], representatives[by_id]
    return {"id": graph.ids[nodes], "cluster_id": graph.ids[representatives], "kept": nodes == representatives}


def _node_groups(graph: _Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(where each node's entries start, its smaller neighbours, its larger neighbours): entries are sorted by x."""
    start = np.r_[True, graph.x[1:] != graph.x[:-1]] if len(graph.x) else np.zeros(0, bool)
    group = np.cumsum(start) - 1
    smaller = np.bincount(group, weights=graph.y < graph.x, minlength=int(start.sum())).astype(np.int64)
    larger = np.bincount(group, weights=graph.y > graph.x, minlength=int(start.sum())).astype(np.int64)
    return start, smaller, larger


def _unconverged(smaller: np.ndarray, larger: np.ndarray) -> int:
    """Nodes not in a star around their component's smallest node: several smaller neighbours, or a smaller and a
    larger one. None in any key means every component is such a star."""
    return int(((smaller > 1) | ((smaller == 1) & (larger > 0))).sum())


def finish(partition: int, entries: Iterable[dict], first: bool = False) -> tuple[dict | None, int, Counter]:
    """One text partition's entries after the rounds -> (its cluster rows, nodes not yet in a star, tally).

    Rows: "id", "cluster_id" (the representative's id) and "kept" for every node of this
    partition that has an edge, by id, and "sizes" {cluster size: count} of the clusters
    whose representative is here. Valid only when no partition has an unconverged node
    (the caller sums the second value). `first`: the entries are the initial edges (no
    round ran), whose distinct edges are then counted as `near_dedup_edges`.
    """
    graph = _Graph(entries, partition)
    tally = Counter(max_components_entries=graph.size)
    if first:
        tally["near_dedup_edges"] += int((graph.y > graph.x).sum())
    if not len(graph.x):
        return None, 0, tally
    start, smaller, larger = _node_groups(graph)
    nodes = graph.x[start]
    unconverged = _unconverged(smaller, larger)
    tally["near_dedup_components_unconverged_nodes"] += unconverged
    representatives = np.minimum(nodes, graph.y[start])  # entries are sorted by (x, y): the first y is the smallest
    centres = smaller == 0
    sizes = Counter({int(size): int(n) for size, n in zip(*np.unique(larger[centres] + 1, return_counts=True))})
    return {**_rows(graph, nodes, representatives), "sizes": sizes}, unconverged, tally


def fallback_components(entry_lists: Iterable[tuple[int, Iterable[dict]]]) -> dict[int, dict]:
    """Exact components (one union-find) over every partition's remaining entries -> {partition: cluster rows}.

    `entry_lists`: (text partition, its entries) pairs. The correct answer when the unrolled
    rounds did not make every component a star; it holds all remaining edges in one worker.
    Rows as `finish` makes them; a cluster's size is listed in its representative's partition.
    """
    pairs = [(partition, entry) for partition, batch in entry_lists for entry in batch if len(entry["id"])]
    if not pairs:
        return {}
    graph = _Graph([entry for _, entry in pairs], [partition for partition, _ in pairs])
    local, representative = connected_components(np.stack([graph.x, graph.y], axis=1))
    reps, counts = np.unique(representative, return_counts=True)
    rows = {}
    for partition in np.unique(graph.part[local]):
        picked = graph.part[local] == partition
        here = graph.part[reps] == partition
        rows[int(partition)] = {**_rows(graph, local[picked], representative[picked]),
                                "sizes": Counter({int(s): int(n) for s, n in zip(*np.unique(counts[here],
                                                                                           return_counts=True))})}
    return rows


def shuffle(routed: Iterable[dict[int, dict]]) -> dict[int, list[dict]]:
    """{partition: entries} outputs grouped by partition: what a GroupByKey does (for tests and benchmarks)."""
    grouped: dict[int, list[dict]] = {}
    for output in routed:
        for partition, entry in output.items():
            grouped.setdefault(partition, []).append(entry)
    return grouped


def components_in_process(edge_batches: Iterable[dict], rounds: int, contract: bool = True
                          ) -> tuple[dict[int, dict], int, Counter]:
    """The whole method in one process, as the Beam graph runs it: ({partition: rows}, rounds run, tally).

    Runs up to `rounds` rounds (`contract_round`, as the graph does; or with contract=False,
    large-star + small-star pairs), stopping early once converged (the graph cannot: it
    unrolls them all), then `finish`, then `fallback_components` if needed.
    """
    tally: Counter = Counter()
    grouped = shuffle(edge_entries(edges) for edges in edge_batches)
    ran = 0
    while True:  # finish after every pair: stop at convergence, and know the edges of the input
        finished = {p: finish(p, entries, first=ran == 0) for p, entries in grouped.items()}
        unconverged = sum(n for _, n, _ in finished.values())
        if ran == 0:
            tally["near_dedup_edges"] = sum(counts["near_dedup_edges"] for _, _, counts in finished.values())
        if not unconverged or ran == rounds:
            break
        outputs = []
        for partition, entries in grouped.items():
            routed, counts = (contract_round(partition, entries) if contract
                              else star_round(partition, entries, True))
            outputs.append(routed)
            tally.update(counts)
        grouped = shuffle(outputs)
        if not contract:
            grouped = shuffle(star_round(partition, entries, False)[0] for partition, entries in grouped.items())
        ran += 1
    tally["near_dedup_components_unconverged_nodes"] = unconverged
    if unconverged:
        return fallback_components(grouped.items()), ran, tally
    return {p: rows for p, (rows, _, _) in finished.items() if rows is not None}, ran, tally
