"""Which duplicate survives (--keep; transforms.survivors): keys against a reference sort, exact survivors end to end."""
from __future__ import annotations

import functools
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.run import main, run
from transforms.survivors import KeepRule, survivor_keys

FIELDS = (("date", "str"), ("n", "int"), ("score", "float"))


def test_parse_rules_and_their_errors():
    assert KeepRule.parse("smallest-id") == KeepRule() and KeepRule().by_id
    assert KeepRule.parse("longest", FIELDS) == KeepRule("longest")
    assert KeepRule.parse("first-by:date", FIELDS) == KeepRule("first-by", "date", "str")
    assert KeepRule.parse("last-by:n", FIELDS) == KeepRule("last-by", "n", "int")
    assert str(KeepRule.parse("last-by:score", FIELDS)) == "last-by:score"
    for spec, message in (("newest", "must be one of"), ("longest:date", "must be one of"),
                          ("first-by:label", "'label' must be one of --keep-fields \\(date, n, score\\)"),
                          ("last-by:", "'FIELD' must be one of")):
        with pytest.raises(ValueError, match=message):
            KeepRule.parse(spec, FIELDS)
    with pytest.raises(ValueError, match="--keep-fields \\(none\\)"):
        KeepRule.parse("first-by:date")


def reference_order(ids, values, kind, field_type):
    """Indexes in survivor order by plain Python comparisons: values first (none last), then the id."""
    def compare(i, j):
        vi, vj = values[i], values[j]
        missing_i = vi is None or (field_type == "float" and vi != vi)
        missing_j = vj is None or (field_type == "float" and vj != vj)
        if missing_i != missing_j:
            return 1 if missing_i else -1
        if not missing_i and vi != vj:
            key_i, key_j = (vi.encode(), vj.encode()) if field_type == "str" else (vi, vj)
            smaller = -1 if key_i < key_j else 1
            return smaller if kind == "first-by" else -smaller
        return (ids[i] > ids[j]) - (ids[i] < ids[j])
    return sorted(range(len(ids)), key=functools.cmp_to_key(compare))


def test_survivor_keys_sort_like_the_rule():
    rng = random.Random(0)
    for trial in range(150):
        n = rng.randrange(1, 25)
        ids = [f"{i:03d}" for i in rng.sample(range(1000), n)]
        values = {
            "str": [None if rng.random() < 0.2 else "".join(rng.choice("ab가\x7f") for _ in range(rng.randrange(4)))
                    for _ in range(n)],
            "int": [None if rng.random() < 0.2 else rng.choice([-2**63, 2**63 - 1, 0, -1, rng.randrange(-99, 99)])
                    for _ in range(n)],
            "float": [None if rng.random() < 0.2 else rng.choice([float("nan"), -0.0, 0.0, -1.5, 1e300, float("inf"),
                                                                 float("-inf"), rng.uniform(-5, 5)]) for _ in range(n)],
        }
        texts = ["가" * rng.randrange(1, 5) for _ in range(n)]
        table = pa.table({"id": ids, "text": texts, "s": pa.array(values["str"], pa.string()),
                          "i": pa.array(values["int"], pa.int64()), "f": pa.array(values["float"], pa.float64())})
        id_bytes = np.array([i.encode() for i in ids])
        for column, field_type in (("s", "str"), ("i", "int"), ("f", "float")):
            for kind in ("first-by", "last-by"):
                keys = survivor_keys(table, KeepRule(kind, column, field_type))
                assert np.lexsort((id_bytes, keys)).tolist() == reference_order(ids, values[field_type], kind,
                                                                                 field_type)
        longest = np.lexsort((id_bytes, survivor_keys(table, KeepRule("longest"))))
        assert longest.tolist() == sorted(range(n), key=lambda i: (-len(texts[i]), ids[i]))
    assert survivor_keys(table, KeepRule()) is None


# An exact-duplicate group (E: one text four times, with a trailing space that cleaning drops), a near-duplicate
# group (N: three texts at Jaccard >= 0.8 of each other, one of them also twice exactly), ids that look numeric
# (S), and a text alone. Ids compare as strings: "10" < "a-9" < "b-2" < "c-1" and "nsmc-10" < "nsmc-9".
RECORDS = [
    {"id": "b-2", "text": "같은 댓글이 여러 번 올라왔어요", "date": "2020-03-01", "n": 5, "score": 1.5},
    {"id": "a-9", "text": "같은 댓글이 여러 번 올라왔어요 ", "date": "2019-12-31", "n": 7},
    {"id": "c-1", "text": "같은 댓글이 여러 번 올라왔어요", "n": -3, "score": 2.5},
    {"id": "10", "text": "같은 댓글이 여러 번 올라왔어요", "date": "2020-03-01", "n": 7, "score": 2.5},
    {"id": "n-1", "text": "이 영화는 정말 재미있고 감동적이었습니다", "date": "2021-06-01", "n": 2},
    {"id": "n-3", "text": "이 영화는 정말 재미있고 감동적이었습니다!!", "date": "2021-07-01", "n": 1, "score": 0.5},
    {"id": "n-2", "text": "이 영화는 정말 재미있고 감동적이었습니다.", "date": "2021-05-05", "score": 9.0},
    {"id": "n-0", "text": "이 영화는 정말 재미있고 감동적이었습니다", "date": "2022-01-01", "n": 2, "score": 9.0},
    {"id": "nsmc-9", "text": "숫자처럼 보이는 아이디의 중복 댓글", "date": "2020-01-01"},
    {"id": "nsmc-10", "text": "숫자처럼 보이는 아이디의 중복 댓글", "date": "2020-01-02"},
    {"id": "x-1", "text": "다른 어떤 리뷰와도 닮지 않은 혼자인 댓글", "date": "2000-01-01", "n": 0},
]
# rule -> (survivor of E, of N's exact pair n-0/n-1, of N, of S); x-1 always stays
SURVIVORS = {
    "smallest-id": ("10", "n-0", "n-0", "nsmc-10"),
    "longest": ("10", "n-0", "n-3", "nsmc-10"),  # E, S and the exact pair: one length each, so the smallest id
    "first-by:date": ("a-9", "n-1", "n-2", "nsmc-9"),
    "last-by:date": ("10", "n-0", "n-0", "nsmc-10"),  # E: b-2 and 10 tie on 2020-03-01; c-1 has no date
    "first-by:n": ("c-1", "n-0", "n-3", "nsmc-10"),  # n-0 and n-1 tie on 2; S has no n at all: smallest id
    "last-by:n": ("10", "n-0", "n-0", "nsmc-10"),  # E: a-9 and 10 tie on 7
    "first-by:score": ("b-2", "n-0", "n-3", "nsmc-10"),  # a-9 and n-1 have no score: last
    "last-by:score": ("10", "n-0", "n-0", "nsmc-10"),  # E: c-1 and 10 tie on 2.5; N: n-0 and n-2 tie on 9.0
}


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keep") / "comments.jsonl"
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in RECORDS), encoding="utf-8")
    return path


def run_keep(path, out, rule: str, *extra: str) -> tuple[dict, set, dict]:
    stats = run(["--input", str(path), "--output", str(out), "--keep-fields", "date,n:int,score:float",
                 "--keep", rule, "--min-chars", "5", "--num-shards", "3", "--write-clusters", "--quiet", *extra])
    kept = {row["id"] for part in sorted((out / "clean").glob("*.parquet")) for row in pq.read_table(part).to_pylist()}
    clusters = [row for part in sorted((out / "clusters").glob("*.parquet")) for row in pq.read_table(part).to_pylist()]
    return stats, kept, {row["id"]: (row["cluster_id"], row["kept"]) for row in clusters}


@pytest.mark.parametrize("rule", sorted(SURVIVORS))
def test_each_rule_keeps_exactly_its_survivors(records_file, tmp_path, rule):
    stats, kept, clusters = run_keep(records_file, tmp_path / "o", rule)
    exact, pair, near, numeric = SURVIVORS[rule]
    assert kept == {exact, near, numeric, "x-1"}
    assert stats["dropped"] == {"exact_duplicate": 5, "near_duplicate": 2}
    assert stats["options"]["keep"] == rule
    # the near-duplicate cluster: its three distinct texts, the survivor named as the cluster
    assert set(clusters) == {pair, "n-3", "n-2"}
    assert all(cluster_id == near and is_kept == (record_id == near)
               for record_id, (cluster_id, is_kept) in clusters.items())


@pytest.mark.parametrize("rule", ["longest", "first-by:date", "last-by:score"])
def test_rules_are_the_same_unverified_and_with_two_workers(records_file, tmp_path, rule):
    _, verified, _ = run_keep(records_file, tmp_path / "v", rule)
    _, unverified, clusters = run_keep(records_file, tmp_path / "u", rule, "--no-verify")
    _, workers, _ = run_keep(records_file, tmp_path / "w", rule, "--direct_num_workers", "2",
                             "--direct_running_mode", "multi_processing")
    exact, _, near, numeric = SURVIVORS[rule]
    assert verified == unverified == workers == {exact, near, numeric, "x-1"}


def test_bad_keep_rules_stop_before_any_work(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "o"), "--keep", "first-by:date"]) == 2
    assert "'date' must be one of --keep-fields (none)" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "o"), "--keep", "newest", "--keep-fields", "date"]) == 2
    assert "--keep must be one of smallest-id, longest, first-by:FIELD, last-by:FIELD" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
