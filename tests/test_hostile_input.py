"""Hostile input (issue 8): every case is a counted drop with a reason, or a clear error; never a crash."""
import gzip
import json
import unittest.mock

import orjson

import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.run import run
from transforms import drop_reasons, reading

FIELDS = reading.FieldSpec("text", "id", (("date", "str"), ("rating", "int")))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(reading.FORMATS))
def test_parse_line_never_raises_on_arbitrary_bytes(raw, fmt):
    parsed = reading.parse_line(raw, fmt, FIELDS, ["id", "text", "date", "rating"])
    assert parsed in drop_reasons.DROP_REASONS or (isinstance(parsed, tuple) and isinstance(parsed[1], str))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(
                        st.sampled_from(["id", "text", "date", "rating", "x"]), children, max_size=5),
                    max_leaves=10))
def test_parse_line_on_arbitrary_json(value):
    raw = json.dumps(value).encode()
    parsed = reading.parse_line(raw, "jsonl", FIELDS, None)
    if isinstance(parsed, tuple):
        record_id, text, kept = parsed
        assert isinstance(text, str) and text == value["text"]
        assert record_id is None or (isinstance(record_id, str) and record_id)
        assert set(kept) == {"date", "rating"}
    else:
        assert parsed in drop_reasons.DROP_REASONS


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(
                        st.sampled_from(["id", "text", "date", "rating", "x"]), children, max_size=5),
                    max_leaves=10), st.booleans(), st.sampled_from(["", "\ufeff", " ", "\t"]))
@example({"id": 2**70, "text": "x"}, True, "")
@example({"id": "a", "text": "x", "rating": -(2**65)}, True, "")
@example({"id": "a", "text": "x", "x": 2**64 + 1}, False, "")
@example({"id": "a", "text": "x", "x": float("nan")}, False, "\ufeff")
def test_parse_line_reads_json_as_pythons_json_does(value, ascii_only, prefix):
    """orjson reads the common case; with it refused every time (Python's json alone) each line parses the same:
    integers past 64 bits in the id or a kept field, NaN and Infinity, lone surrogates, a BOM."""
    raw = (prefix + json.dumps(value, ensure_ascii=ascii_only)).encode("utf-8", "surrogatepass")
    fields = reading.FieldSpec("text", "id", (("date", "str"), ("rating", "int"), ("x", "float")))
    with unittest.mock.patch.object(reading.orjson, "loads", side_effect=orjson.JSONDecodeError("off", "", 0)):
        expected = reading.parse_line(raw, "jsonl", fields, None)
    parsed = reading.parse_line(raw, "jsonl", fields, None)
    assert repr(parsed) == repr(expected)  # repr: a kept NaN is not equal to itself

HOSTILE_LINES = [
    (b'\xef\xbb\xbf{"id": "bom", "text": "BOM\\uc73c\\ub85c \\uc2dc\\uc791\\ud558\\ub294 \\uccab \\uc904\\uc785\\ub2c8\\ub2e4"}', None),
    (b'{"id": "crlf", "text": "CRLF\\ub85c \\ub05d\\ub098\\ub294 \\uc904\\ub3c4 \\uad1c\\ucc2e\\uc544\\uc694"}\r', None),
    ('{"id": "lone-cr", "text": "줄 가운데\\r캐리지 리턴이 있는 댓글"}'.encode(), None),
    ('{"id": "nul", "text": "널 문자가\\u0000 들어간 댓글입니다"}'.encode(), None),
    ('{"id": "surrogate-text", "text": "짝 없는 서로게이트 \\ud800 가 든 댓글"}'.encode(), None),
    ('{"id": "\\udc00", "text": "아이디가 서로게이트뿐인 댓글입니다"}'.encode(), "bad_id"),
    ('{"id": "surrogate-field", "text": "날짜 필드가 이상한 댓글입니다", "date": "\\ud83d"}'.encode(), "bad_field"),
    ('{"id": "bad-rating", "text": "평점이 숫자가 아닌 댓글입니다", "rating": [1]}'.encode(), "bad_field"),
    ('{"id": {"nested": 1}, "text": "아이디가 객체인 댓글입니다"}'.encode(), "bad_id"),
    (b"[1, 2]", "json_not_an_object"),
    (b"3.14", "json_not_an_object"),
    (b"null", "json_not_an_object"),
    (b'{"id": "null-text", "text": null}', "missing_text"),
    (b'{"id": "no-text"}', "missing_text"),
    (b'{"id": "list-text", "text": ["a"]}', "text_not_string"),
    (b'{"id": "cut', "malformed_json"),
    (b"[" * 100000 + b"]" * 100000, "malformed_json"),  # nesting deeper than the parser's recursion limit
    (b'{"id": "bad-bytes", "text": "\xed\xa0\x80 encoded surrogate"}', "invalid_utf8"),
    (b"\x80\x81\x82", "invalid_utf8"),
    (b"", "blank_line"),
    (b"\t \t", "blank_line"),
]


def test_hostile_lines_are_counted_and_rejected(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "hostile.jsonl").write_bytes(b"\n".join(line for line, _ in HOSTILE_LINES))
    (inputs / "empty.jsonl").write_bytes(b"")
    (inputs / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"id": "g", "text": "x"}\n' * 1000)[:-30])
    out = tmp_path / "out"
    stats = run(["--input", str(inputs / "*"), "--output", str(out), "--keep-fields", "date,rating:int",
                 "--min-chars", "1", "--no-near-dedup", "--no-exact-dedup", "--quiet"])
    assert stats["input_records"] == stats["output_records"] + sum(stats["dropped"].values())
    expected = {}
    for _, reason in HOSTILE_LINES:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    rows = [row for path in sorted((out / "clean").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    gzip_rows = [row for row in rows if row["id"] == "g"]
    assert stats["dropped"] == {**expected, "read_error": 1}
    assert stats["files"]["empty"] == 1 and stats["files"]["with_read_errors"] == 1
    kept = {row["id"]: row["text"] for row in rows if row["id"] != "g"}
    assert kept == {
        "bom": "BOM으로 시작하는 첫 줄입니다",
        "crlf": "CRLF로 끝나는 줄도 괜찮아요",
        "lone-cr": "줄 가운데 캐리지 리턴이 있는 댓글",
        "nul": "널 문자가\x00 들어간 댓글입니다",
        "surrogate-text": "짝 없는 서로게이트 가 든 댓글",
    }
    assert 0 < len(gzip_rows) < 1000
    rejected = [json.loads(line) for path in (out / "rejected").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert len(rejected) == sum(n for reason, n in stats["dropped"].items() if reason != "blank_line")
    assert {row["reason"] for row in rejected} == set(expected) - {"blank_line"} | {"read_error"}
