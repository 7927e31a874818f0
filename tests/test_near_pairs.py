"""Verified near dedup (transforms.near_pairs): bounded bucket pairs, text fetching and verification."""
from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from transforms import near_pairs
from transforms.components import near_duplicate_components
from transforms.corpus_stages import NearDedupSettings, band_entries
from transforms.minhash import exact_jaccard
from transforms.near_pairs import bucket_pairs, fetch_texts, node_numbers, node_ranks, route_pairs, verify_candidates
from transforms.survivors import KeepRule


def entries_of(keys: np.ndarray, partitions: np.ndarray, rows: np.ndarray) -> list[dict]:
    """Verified-mode entries (one dict per text partition) from one [n, bands] key array."""
    bands = keys.shape[1]
    return [{"key": keys[partitions == p].ravel(), "row": np.repeat(rows[partitions == p], bands).astype(np.int32),
             "partition": int(p)} for p in np.unique(partitions)]


def brute_force_pairs(keys: np.ndarray, nodes: np.ndarray) -> set[tuple[int, int]]:
    """Every pair of nodes that share a key in some band."""
    pairs = set()
    for band in range(keys.shape[1]):
        buckets = defaultdict(list)
        for key, node in zip(keys[:, band].tolist(), nodes.tolist()):
            buckets[key].append(node)
        for members in buckets.values():
            pairs.update(itertools.combinations(sorted(members), 2))
    return pairs


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def random_buckets(rng, n_records: int, bands: int, n_keys: int, n_partitions: int):
    keys = rng.integers(0, n_keys, size=(n_records, bands)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys += np.arange(bands, dtype=np.uint64)  # keys of different bands differ
    partitions = rng.integers(0, n_partitions, size=n_records)
    rows = np.zeros(n_records, np.int64)
    for p in range(n_partitions):
        rows[partitions == p] = rng.permutation(int((partitions == p).sum()))
    return keys, partitions, rows, node_numbers(0, 0) + (partitions.astype(np.int64) << 32) + rows


def test_bucket_pairs_are_all_pairs_of_every_bucket_up_to_the_bound():
    rng = np.random.default_rng(0)
    for trial in range(15):
        n_records, bands = int(rng.integers(50, 400)), int(rng.integers(1, 6))
        keys, partitions, rows, nodes = random_buckets(rng, n_records, bands, int(rng.integers(5, 80)), 4)
        expected = brute_force_pairs(keys, nodes)
        pairs, tally = bucket_pairs(entries_of(keys, partitions, rows), all_pairs_up_to=n_records)
        assert as_set(pairs) == expected and len(pairs) == len(expected) and tally["near_dedup_large_buckets"] == 0
        assert np.all(pairs[:, 0] < pairs[:, 1]) and np.array_equal(pairs, np.unique(pairs, axis=0))
        # split by band partition (key % 3), as the shuffle delivers them: the union is the same pairs
        parts = []
        for band_partition in range(3):
            picked = [{**e, "key": e["key"][e["key"] % np.uint64(3) == band_partition],
                       "row": e["row"][e["key"] % np.uint64(3) == band_partition]}
                      for e in entries_of(keys, partitions, rows)]
            parts.append(bucket_pairs(picked, all_pairs_up_to=n_records)[0])
        assert as_set(np.concatenate(parts)) == expected


def test_a_bucket_over_the_bound_pairs_every_member_with_its_first_representatives():
    members = np.array([5, 3, 9, 1, 7, 2, 8, 6, 4, 0], dtype=np.int64)  # rows of partition 1, given shuffled
    keys = np.full((len(members), 1), 42, dtype=np.uint64)
    entry = [{"key": keys.ravel(), "row": members.astype(np.int32), "partition": 1}]
    pairs, tally = bucket_pairs(entry, all_pairs_up_to=4, representatives=3)
    by_rank = [int(n) for n in sorted(node_numbers(1, np.arange(10)), key=lambda n: int(node_ranks(np.array([n]))[0]))]
    representatives, others = by_rank[:3], by_rank[3:]  # the members of smallest rank
    assert set(representatives) != set(node_numbers(1, np.arange(3)).tolist())  # not the first by node
    expected = {tuple(sorted((a, b))) for i, a in enumerate(representatives) for b in representatives[i + 1:]}
    expected |= {tuple(sorted((r, m))) for r in representatives for m in others}
    assert as_set(pairs) == expected and len(pairs) == 3 + 7 * 3 and tally["near_dedup_large_buckets"] == 1
    # at the bound itself, all pairs
    assert len(bucket_pairs(entry, all_pairs_up_to=10, representatives=3)[0]) == 45
    with pytest.raises(ValueError, match="representatives"):
        bucket_pairs(entry, all_pairs_up_to=2, representatives=3)


def test_route_pairs_sends_each_pair_to_one_of_its_partitions_evenly_and_requests_both_texts():
    pairs = np.array([[node_numbers(0, 4), node_numbers(2, 1)], [node_numbers(0, 4), node_numbers(0, 7)],
                      [node_numbers(1, 0), node_numbers(2, 1)]], dtype=np.int64)
    by_dest, requests = route_pairs(pairs)
    routed = {tuple(pair): dest for dest, batch in by_dest.items() for pair in batch.tolist()}
    assert sorted(routed) == sorted(map(tuple, pairs.tolist())) and routed[tuple(pairs[1])] == 0
    for (a, b), dest in routed.items():
        assert dest in (a >> 32, b >> 32)
    expected = defaultdict(set)  # both texts of every pair, to the pair's partition
    for (a, b), dest in routed.items():
        expected[a >> 32].add((a & 0xFFFFFFFF, dest))
        expected[b >> 32].add((b & 0xFFFFFFFF, dest))
    assert {p: sorted(zip(r["row"].tolist(), r["dest"].tolist())) for p, r in requests.items()} == {
        p: sorted(rows) for p, rows in expected.items()}
    again = route_pairs(pairs[::-1])[0]  # a pair's partition is fixed by the pair alone
    assert {tuple(pair): dest for dest, batch in again.items() for pair in batch.tolist()} == routed
    # Unbiased: random pairs (first node in the smaller partition) load 16 partitions within 10% of the mean,
    # where "the first node's partition" would give partition 0 about twice the mean and partition 15 almost none.
    rng = np.random.default_rng(1)
    ends = np.sort((rng.integers(0, 16, (40_000, 2)) << 32) + rng.integers(0, 1000, (40_000, 2)), axis=1)
    loads = np.array([len(route_pairs(ends)[0].get(p, [])) for p in range(16)])
    assert np.all(np.abs(loads / loads.mean() - 1) < 0.1)
    # A large bucket of 4,000 members in 16 partitions: each (representative, member) pair is checked in the
    # member's partition, so a partition checks 8 pairs per member of its own (+ the 28 among representatives),
    # not half of the bucket's 32,000 pairs in the few partitions of the representatives.
    partitions, rows = rng.integers(0, 16, 4000), np.arange(4000)
    entry = [{"key": np.full(int((partitions == p).sum()), 7, np.uint64), "row": rows[partitions == p].astype(np.int32),
              "partition": p} for p in range(16)]
    pairs, _ = bucket_pairs(entry)
    routed = route_pairs(pairs)[0]
    ranks = node_ranks(node_numbers(0, 0) + (partitions.astype(np.int64) << 32) + rows)
    representatives = set((node_numbers(0, 0) + (partitions.astype(np.int64) << 32) + rows)[np.argsort(ranks)[:8]])
    for dest, batch in routed.items():
        for a, b in batch.tolist():
            member = b if a in representatives else a
            assert member >> 32 == dest or (a in representatives and b in representatives)
    members_per_partition = np.bincount(partitions, minlength=16)
    assert max(len(batch) for batch in routed.values()) <= 8 * members_per_partition.max() + 28


def texts_table(texts: list[str], partition: int = 0) -> pa.Table:
    """A text partition's records: ids p{partition}-{row:04d}."""
    return pa.table({"id": [f"p{partition}-{i:04d}" for i in range(len(texts))], "text": texts})


def test_fetch_and_verify_keep_exactly_the_pairs_at_the_threshold():
    # bigrams: (0, 1) share 4 of 5: exactly 0.8; (0, 2) 1.0 (spacing); (1, 2) 0.8; 3 is unlike all of them
    tables = {0: texts_table(["가나다라마바", "전혀 다른 말이다"]), 1: texts_table(["가나다라마", "가나다 라마바"], 1)}
    node = {name: node_numbers(p, r) for name, (p, r) in {"a": (0, 0), "x": (0, 1), "b": (1, 0), "c": (1, 1)}.items()}
    pairs = np.array(sorted([(node["a"], node["b"]), (node["a"], node["c"]), (node["b"], node["c"]),
                             (node["a"], node["x"]), (node["b"], node["c"])]), dtype=np.int64)  # one repeated
    by_dest, requests = route_pairs(pairs)
    fetched = defaultdict(list)
    for partition, table in tables.items():
        sent, tally = fetch_texts(partition, [table], [requests[partition], requests[partition]])  # asked twice
        assert tally["max_fetch_requests"] == 2 * tally["max_fetch_distinct_requests"] == 2 * sum(
            len(texts["node"]) for texts in sent.values())  # each text sent once per partition that needs it
        for dest, texts in sent.items():
            fetched[dest].append(texts)
    edges = []
    counts = Counter()
    for dest, part in by_dest.items():
        found, tally = verify_candidates([part, part[:1]], fetched[dest], 2, 0.8)  # repeats are checked once
        assert tally["max_verify_pairs"] == len(part) + 1  # what the call held, the repeat included
        assert tally["max_verify_distinct_pairs"] == len(np.unique(part, axis=0))
        counts.update({k: v for k, v in tally.items() if not k.startswith(("seconds", "max_"))})
        edges += [found] if found is not None else []
    assert counts == Counter(near_dedup_pairs_checked=4, near_dedup_pairs_verified=3, near_dedup_pairs_rejected=1)
    got = sorted((a, b) for e in edges for a, b in zip(e["a"].tolist(), e["b"].tolist()))
    assert got == [(b"p0-0000", b"p1-0000"), (b"p0-0000", b"p1-0001"), (b"p1-0000", b"p1-0001")]
    strict = [verify_candidates([part], fetched[dest], 2, 0.81) for dest, part in by_dest.items()]
    assert [(a, b) for found, _ in strict if found is not None for a, b in zip(found["a"].tolist(),
                                                                             found["b"].tolist())] == [
        (b"p0-0000", b"p1-0001")]
    assert sum(tally["near_dedup_pairs_rejected"] for _, tally in strict) == 3


def verified_chain(texts_by_partition: dict[int, list[str]], near: NearDedupSettings, keep=KeepRule(),
                   all_pairs_up_to=near_pairs.ALL_PAIRS_UP_TO, num_partitions: int = 3,
                   pairs_per_block: int = near_pairs.PAIRS_PER_BLOCK):
    """The verified stages composed in plain Python, as pipeline/beam_run.py composes them: (components, tally)."""
    tables = {p: texts_table(texts, p) for p, texts in texts_by_partition.items()}
    bands = defaultdict(list)
    for p, table in tables.items():
        for band_partition, entry in band_entries(table, p, near, num_partitions, keep).items():
            bands[band_partition].append(entry)
    tally, pairs_by, requests_by, fetched = Counter(), defaultdict(list), defaultdict(list), defaultdict(list)
    for entries in bands.values():
        pairs, counts = bucket_pairs(entries, all_pairs_up_to)
        tally += counts
        by_dest, requests = route_pairs(pairs)
        for d, part in by_dest.items():
            pairs_by[d].append(part)
        for p, request in requests.items():
            requests_by[p].append(request)
    for p, table in tables.items():
        for d, texts in fetch_texts(p, [table], requests_by[p], keep)[0].items():
            fetched[d].append(texts)
    edges = []
    for d, parts in pairs_by.items():
        found, counts = verify_candidates(parts, fetched[d], near.ngram, near.threshold, pairs_per_block)
        tally += counts
        edges += [found] if found is not None else []
    return near_duplicate_components(edges), +Counter({k: v for k, v in tally.items() if not k.startswith("sec")})


def test_verified_chain_equals_brute_force_verification_of_every_bucket_pair():
    """Random short texts with edited copies: edges = every LSH bucket pair at true J >= t, nothing else."""
    from transforms.minhash import band_keys, signatures

    rng = random.Random(5)
    alphabet = "가나다라마바사아 ㅋ!"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(8, 20))) for _ in range(300)]
    for _ in range(200):
        source = list(rng.choice(texts))
        source[rng.randrange(len(source))] = rng.choice(alphabet)
        texts.append("".join(source))
    texts = list(dict.fromkeys(texts))
    near = NearDedupSettings(0.6, 64, 2, 3, 16, 4, True)
    by_partition = defaultdict(list)
    for index, text in enumerate(texts):
        by_partition[index % 3].append(text)
    found, tally = verified_chain(by_partition, near)
    ids = [f"p{p}-{r:04d}".encode() for p, part in by_partition.items() for r in range(len(part))]
    flat = [text for part in by_partition.values() for text in part]
    keys = band_keys(signatures(flat, 64, 2, 3), 16, 4)
    candidates = sorted(brute_force_pairs(keys, np.arange(len(flat))))
    jaccard = exact_jaccard([flat[i] for i, _ in candidates], [flat[j] for _, j in candidates], 2)
    similar = {(min(ids[i], ids[j]), max(ids[i], ids[j])) for (i, j), s in zip(candidates, jaccard) if s >= 0.6}
    assert tally["near_dedup_pairs_checked"] == len(candidates) > 100
    assert tally["near_dedup_pairs_verified"] == len(similar) > 50
    # the same components as a union-find over the brute-force verified pairs; the smallest id survives
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in similar:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected_removed = {node for node in parent if root(node) != node}
    removed = {i for part in found["removed"].values() for i in part.tolist()}
    assert removed == expected_removed and found["edges"] == len(similar)
    # verified a few pairs at a time (each block shingles only its own texts): the same answer
    for pairs_per_block in (1, 7):
        in_blocks, tally_in_blocks = verified_chain(by_partition, near, pairs_per_block=pairs_per_block)
        assert tally_in_blocks == tally and in_blocks["edges"] == found["edges"]
        assert {p: part.tolist() for p, part in in_blocks["removed"].items()} == {
            p: part.tolist() for p, part in found["removed"].items()}


def test_thousands_of_spam_copies_cost_a_bounded_number_of_pair_checks():
    """5,000 near-identical comments: ~12.5M pairs unbounded; each member is checked against R representatives."""
    base = "이 영화 정말 최고입니다 꼭 보세요 강력 추천합니다 진짜로요"
    texts = [f"{base} {i}" for i in range(5000)]
    near = NearDedupSettings(0.8, 128, 2, 0, 16, 8, True)  # the default's bands x rows
    found, tally = verified_chain({0: texts[:2500], 1: texts[2500:]}, near, num_partitions=4)
    bound = near.bands * len(texts) * near_pairs.REPRESENTATIVES
    assert tally["near_dedup_large_buckets"] >= 1
    assert tally["near_dedup_pairs_checked"] <= bound < len(texts) * (len(texts) - 1) // 2 / 10
    assert found["histogram"] == {"5000": 1}  # one cluster: every copy reaches a representative
    assert sum(len(part) for part in found["removed"].values()) == 4999
    assert found["clusters"]["id"][found["clusters"]["kept"]].tolist() == [b"p0-0000"]


def test_verified_chain_honours_the_keep_rule():
    near = NearDedupSettings(0.8, 128, 2, 0, 14, 9, True)
    texts = {0: ["가나다라마바사아자차", "완전히 다른 문장입니다"], 1: ["가나다라마바사아자차카"]}  # p0-0000 ~ p1-0000
    found, _ = verified_chain(texts, near, keep=KeepRule("longest"))
    assert {p: part.tolist() for p, part in found["removed"].items()} == {0: [b"p0-0000"]}
    assert dict(zip(found["clusters"]["id"].tolist(), found["clusters"]["kept"].tolist())) == {
        b"p0-0000": False, b"p1-0000": True}
    found, _ = verified_chain(texts, near)  # smallest id
    assert {p: part.tolist() for p, part in found["removed"].items()} == {1: [b"p1-0000"]}


def test_pipeline_run_reports_what_verification_did(tmp_path):
    """The sample corpus: stats.json and the summary count candidate, verified and rejected pairs; --no-verify none."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    verified = subprocess.run([sys.executable, "-m", "pipeline.run", "--output", str(tmp_path / "v"), "--quiet"],
                              cwd=repo, capture_output=True, text=True, check=True).stdout
    unverified = subprocess.run([sys.executable, "-m", "pipeline.run", "--output", str(tmp_path / "u"), "--quiet",
                                 "--no-verify"], cwd=repo, capture_output=True, text=True, check=True).stdout
    stats = {name: json.loads((tmp_path / name / "stats.json").read_text()) for name in ("v", "u")}
    near = {name: {key: value for key, value in stats[name]["near_dedup"].items()
                   if key in ("bands", "rows", "verify", "candidate_pairs", "verified_pairs", "rejected_pairs",
                              "pair_bound", "removed", "clusters")} for name in stats}
    assert near["v"] == {"bands": 16, "rows": 8, "verify": True, "candidate_pairs": 301, "verified_pairs": 300,
                         "rejected_pairs": 1, "pair_bound": {"all_pairs_up_to": 64, "representatives": 8,
                                                             "large_buckets": 0}, "removed": 300, "clusters": 300}
    assert near["u"] == {"bands": 11, "rows": 11, "verify": False, "candidate_pairs": 300, "verified_pairs": None,
                         "rejected_pairs": None, "removed": 300, "clusters": 300}
    assert ("near dedup: J>=0.8 (16 bands x 8 rows, 2-grams): 301 candidate pairs verified: 300 at the threshold, "
            "1 rejected; 300 clusters, 300 removed; cluster sizes {2:300}") in verified
    assert ("near dedup: J>=0.8 (11 bands x 11 rows, 2-grams): 300 candidate pairs, not verified (--no-verify); "
            "300 clusters, 300 removed; cluster sizes {2:300}") in unverified
    assert stats["v"]["options"]["verify"] is True and stats["u"]["options"]["verify"] is False
