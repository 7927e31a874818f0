import random

from transforms.exact_dedup import dedup_exact


def test_smallest_id_survives_whatever_the_arrival_order():
    records = [("b", "같은 글"), ("a", "같은 글"), ("c", "다른 글"), ("가", "같은 글"), ("a0", "다른 글"), ("d", "혼자")]
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        columns = {"id": [r[0] for r in shuffled], "text": [r[1] for r in shuffled],
                   "source": ["f"] * len(shuffled), "line": list(range(len(shuffled)))}
        result = dedup_exact(columns)
        assert list(zip(result["id"], result["text"])) == [("a", "같은 글"), ("a0", "다른 글"), ("d", "혼자")]


def test_equal_ids_are_ordered_by_source_then_line():
    columns = {"id": ["x", "x", "x"], "text": ["t", "t", "u"], "source": ["b.txt", "a.txt", "a.txt"],
               "line": [1, 9, 3], "date": ["1", "2", "3"]}
    result = dedup_exact(columns)
    assert result == {"id": ["x", "x"], "text": ["u", "t"], "source": ["a.txt", "a.txt"], "line": [3, 9],
                      "date": ["3", "2"]}
    assert dedup_exact(columns, drop_duplicates=False)["line"] == [3, 9, 1]


def test_code_point_order_not_locale_or_length():
    columns = {"id": ["10", "9", "ㄱ", "Z", "a"], "text": ["s"] * 5, "source": ["f"] * 5, "line": [1, 2, 3, 4, 5]}
    assert dedup_exact(columns)["id"] == ["10"]
    assert dedup_exact(columns, drop_duplicates=False)["id"] == sorted(columns["id"])
