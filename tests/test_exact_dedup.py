"""Exact dedup of one partition (transforms.corpus_stages.dedup_partition): the smallest id survives, in any order."""
import random

import pyarrow as pa

from transforms.clean import CleanOptions
from transforms.corpus_stages import RunSettings, dedup_partition, first_of_each
from transforms.reading import FieldSpec


def settings(exact: bool = True, keep_fields=()) -> RunSettings:
    return RunSettings(fields=FieldSpec("text", "id", keep_fields), clean=CleanOptions(), min_chars=1, max_chars=None,
                       max_line_bytes=1 << 20, exact_dedup=exact, near=None, num_partitions=1, staging="/nowhere")


def batch(run_settings: RunSettings, rows: list[tuple]) -> pa.RecordBatch:
    """Records (id, text, source, line, *kept fields) as the parse stage makes them."""
    schema = run_settings.record_schema()
    columns = {"id": [r[0] for r in rows], "text": [r[1] for r in rows], "source": [r[2] for r in rows],
               "line": [r[3] for r in rows]}
    for index, (name, _) in enumerate(run_settings.fields.keep_fields):
        columns[name] = [r[4 + index] for r in rows]
    return pa.RecordBatch.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


def dedup(run_settings: RunSettings, *batches: list[tuple]) -> tuple[list[dict], int]:
    table, bands, tally = dedup_partition(0, [batch(run_settings, rows) for rows in batches], run_settings)
    assert bands == {} and table.schema == run_settings.output_schema()
    return table.to_pylist(), tally["exact_duplicate"]


def test_smallest_id_survives_whatever_the_arrival_order():
    records = [("b", "같은 글"), ("a", "같은 글"), ("c", "다른 글"), ("가", "같은 글"), ("a0", "다른 글"), ("d", "혼자")]
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        rows = [(record_id, text, "f", line) for line, (record_id, text) in enumerate(shuffled)]
        kept, removed = dedup(settings(), rows[:2], rows[2:])  # two batches, as from two parse bundles
        assert [(r["id"], r["text"]) for r in kept] == [("a", "같은 글"), ("a0", "다른 글"), ("d", "혼자")]
        assert removed == 3


def test_equal_ids_are_ordered_by_source_then_line():
    run_settings = settings(keep_fields=(("date", "str"),))
    rows = [("x", "t", "b.txt", 1, "1"), ("x", "t", "a.txt", 9, "2"), ("x", "u", "a.txt", 3, "3")]
    kept, removed = dedup(run_settings, rows)
    assert kept == [{"id": "x", "text": "u", "date": "3"}, {"id": "x", "text": "t", "date": "2"}] and removed == 1
    kept, removed = dedup(settings(exact=False, keep_fields=(("date", "str"),)), rows)
    assert [r["date"] for r in kept] == ["3", "2", "1"] and removed == 0


def test_code_point_order_not_locale_or_length():
    ids = ["10", "9", "ㄱ", "Z", "a", "가", "\U0001F600"]
    rows = [(record_id, "s", "f", line) for line, record_id in enumerate(ids)]
    assert [r["id"] for r in dedup(settings(), rows)[0]] == ["10"]
    assert [r["id"] for r in dedup(settings(exact=False), rows)[0]] == sorted(ids)


def test_first_of_each():
    assert first_of_each(pa.array(["a", "b", "a", "c", "b", "c", "d"])).tolist() == [0, 1, 3, 6]
    assert first_of_each(pa.chunked_array([["x", "y"], ["x", "z"]])).tolist() == [0, 1, 3]
    assert first_of_each(pa.array([], pa.string())).tolist() == []
