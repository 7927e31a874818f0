"""The engine-free stages of pipeline.run (transforms.corpus_stages): exact records and tallies, without Beam."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.run import run
from transforms import components, connected, corpus_stages, near_pairs, profile
from transforms.clean import CleanOptions
from transforms.corpus_stages import LineBatch, NearDedupSettings, RunSettings, SourceFile
from transforms.reading import FieldSpec

REPO = Path(__file__).resolve().parent.parent


def settings(staging: str = "/nowhere", num_partitions: int = 4, keep_fields=(), near=None, **overrides) -> RunSettings:
    values = dict(fields=FieldSpec("text", "id", keep_fields), clean=CleanOptions(), min_chars=5, max_chars=20,
                  max_line_bytes=200, exact_dedup=True, near=near, num_partitions=num_partitions, staging=staging)
    return RunSettings(**{**values, **overrides})


def records_by_id(partitions: dict[int, pa.RecordBatch]) -> dict[str, dict]:
    """Every record, with the partition it went to."""
    return {row["id"]: {**row, "partition": partition}
            for partition, batch in partitions.items() for row in batch.to_pylist()}


def test_parse_clean_filter_on_json_lines():
    lines = [
        '{"id": "a", "text": "좋은 영화였어요 ㅋㅋㅋㅋㅋ", "date": "2020-01-02"}'.encode(),  # kept, laughter shortened
        '{"text": "아이디가 없는 리뷰입니다"}'.encode(),  # kept, id FILE:LINE
        b"",  # blank: counted, not rejected
        b'{"id": "b", "text": "short"}',  # 5 characters: kept (min 5)
        b'{"id": "c", "text": "four"}',  # too short
        '{"id": "d", "text": "이 리뷰는 스무 글자를 훨씬 넘어서 너무 깁니다"}'.encode(),  # too long (max 20)
        '{"id": "e", "text": "🙂🙂 좋아요"}'.encode(),  # kept: emoji are allowed characters
        b'{"id": "f", "text": "\\u4e00\\u4e8c"}',  # Hanja only: empty after clean
        b"\xff\xfe",  # invalid UTF-8
        b'{"id": "g", "text": 3}',  # text not a string
        b"[1]",  # not an object
        None,  # over --max-line-bytes
        '{"id": "h", "text": "날짜가 숫자인 리뷰", "date": 20200102}'.encode(),  # kept, the number kept as a string
    ]
    batch = LineBatch(SourceFile("/in/r.jsonl", "r.jsonl", "jsonl"), None, 11, lines,
                      counts=Counter(files_read=1))
    partitions, rejected, tally = corpus_stages.parse_clean_filter(batch, settings(keep_fields=(("date", "str"),)))
    records = records_by_id(partitions)
    assert {record_id: (r["text"], r["date"], r["source"], r["line"]) for record_id, r in records.items()} == {
        "a": ("좋은 영화였어요 ㅋㅋ", "2020-01-02", "r.jsonl", 11),
        "r.jsonl:0000000012": ("아이디가 없는 리뷰입니다", None, "r.jsonl", 12),
        "b": ("short", None, "r.jsonl", 14),
        "e": ("🙂🙂 좋아요", None, "r.jsonl", 17),
        "h": ("날짜가 숫자인 리뷰", "20200102", "r.jsonl", 23),
    }
    for record in records.values():
        assert record["partition"] == zlib.crc32(record["text"].encode()) % 4
    assert tally.pop("seconds_parse_clean") > 0
    assert profile.without_profile(tally) == Counter(
        input_records=13, files_read=1, blank_line=1, too_short=1, too_long=1, empty_after_clean=1, invalid_utf8=1,
        text_not_string=1, json_not_an_object=1, line_too_long=1)
    # the profile: 8 cleaned texts before the length filter (5 kept, too short, too long, empty), 5 after it
    before = {k: n for k, n in tally.items() if k.startswith(profile.LENGTH_BEFORE)}
    after = {k: n for k, n in tally.items() if k.startswith(profile.LENGTH_AFTER)}
    assert before[profile.LENGTH_BEFORE + "0"] == 1  # the text the clean emptied
    assert sum(before.values()) == 8 and sum(after.values()) == len(records) == 5
    assert profile.CLEAN_SAMPLE + "texts" not in tally  # lines 100, 200, ... are profiled for the clean: none here
    at_100 = corpus_stages.parse_clean_filter(LineBatch(batch.source, None, 100, lines[:3]), settings())[2]
    assert at_100[profile.CLEAN_SAMPLE + "texts"] == 1 and at_100[profile.CLEAN_SAMPLE + "repeats"] == 1  # ㅋㅋㅋㅋㅋ
    assert list(rejected) == [zlib.crc32(b"r.jsonl") % 4]
    assert [(r["line"], r["reason"], r["raw"]) for r in next(iter(rejected.values()))] == [
        (19, "invalid_utf8", "\\xff\\xfe"), (20, "text_not_string", '{"id": "g", "text": 3}'),
        (21, "json_not_an_object", "[1]"), (22, "line_too_long", "")]


def test_parse_clean_filter_on_tsv_and_text_and_a_read_error():
    tsv = LineBatch(SourceFile("/in/x.tsv", "x.tsv", "tsv"), ["id", "text", "label"], 2,
                    ["7\t재밌는 영화네요\t1".encode(), b"8\tbroken"], read_error="EOFError: cut short")
    partitions, rejected, tally = corpus_stages.parse_clean_filter(tsv, settings(keep_fields=(("label", "int"),)))
    assert {k: (r["text"], r["label"]) for k, r in records_by_id(partitions).items()} == {"7": ("재밌는 영화네요", 1)}
    assert profile.without_profile(tally) - Counter(seconds_parse_clean=tally["seconds_parse_clean"]) == Counter(
        input_records=3, malformed_row=1, read_error=1)
    assert [(r["line"], r["reason"]) for rows in rejected.values() for r in rows] == [(4, "read_error"),
                                                                                     (3, "malformed_row")]
    text = LineBatch(SourceFile("/in/t.txt", "t.txt", "text"), None, 1, ["한 줄에 댓글 하나".encode(), b"  "])
    partitions, rejected, tally = corpus_stages.parse_clean_filter(text, settings())
    assert list(records_by_id(partitions)) == ["t.txt:0000000001"] and rejected == {}
    assert tally["blank_line"] == 1 and tally["input_records"] == 2


def test_read_line_batches_numbers_lines_splits_batches_and_counts_files(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_stages, "LINES_PER_BATCH", 2)
    path = tmp_path / "x.tsv"
    path.write_bytes(b"id\ttext\n" + b"".join(b"%d\tline %d\n" % (i, i) for i in range(5)))
    source = SourceFile(str(path), "x.tsv", "tsv")
    batches = list(corpus_stages.read_line_batches(source, settings()))
    assert [(b.first_line, len(b.lines), dict(b.counts)) for b in batches] == [
        (2, 2, {}), (4, 2, {}), (6, 1, {"files_read": 1})]
    assert batches[0].header == ["id", "text"] and batches[2].lines == [b"4\tline 4"]
    limited = list(corpus_stages.read_line_batches(source, settings(), limit=3))
    assert [len(b.lines) for b in limited] == [2, 1]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress(b"".join(b"line %d\n" % i for i in range(50000)))[:-20])
    sources = [SourceFile(str(empty), "empty.txt", "text"), SourceFile(str(cut), "cut.txt.gz", "text")]
    batches = list(corpus_stages.read_files(sources, settings(max_line_bytes=1 << 20)))
    assert dict(batches[0].counts) == {"files_read": 1, "files_empty": 1} and batches[0].lines == []
    last = batches[-1]
    assert last.read_error.startswith("EOFError") and dict(last.counts) == {"files_read": 1,
                                                                            "files_with_read_errors": 1}
    assert 0 < sum(len(b.lines) for b in batches) < 50000
    assert [len(b.lines) for b in corpus_stages.read_files(sources[::-1], settings(), limit=3)] == [2, 1]


def test_partition_of_is_crc32_forever():
    """Changing the partition hash would change which file every record lands in: pinned."""
    assert [corpus_stages.partition_of(text, 8) for text in ("", "a", "가나다", "sample_comments.jsonl")] == [
        0, zlib.crc32(b"a") % 8, 6, zlib.crc32(b"sample_comments.jsonl") % 8]
    assert corpus_stages.partition_of("가나다", 8) == 6 == zlib.crc32("가나다".encode()) % 8


def test_fixed_width_ids_equal_the_encoded_strings():
    ids = ["a", "", "가나다", "x" * 40, "\U0001F600"]
    expected = np.array([i.encode() for i in ids], dtype=np.bytes_)
    got = corpus_stages.fixed_width_ids(pa.chunked_array([ids[:2], ids[2:]]))
    assert got.dtype == expected.dtype and got.tolist() == expected.tolist()
    sliced = corpus_stages.fixed_width_ids(pa.array(ids).slice(2, 2))
    assert sliced.tolist() == ["가나다".encode(), b"x" * 40]


def test_write_partition_drops_removed_ids_and_counts(tmp_path):
    run_settings = settings(staging=str(tmp_path), num_partitions=3)
    table = pa.table({"id": ["a", "b", "c"], "text": ["하나", "둘", "셋"]})
    path, tally = corpus_stages.write_partition(2, table, np.array([b"b"], dtype=np.bytes_), run_settings)
    assert path == str(tmp_path / "clean" / "part-00002-of-00003.parquet")
    assert pq.read_table(path).to_pylist() == [{"id": "a", "text": "하나"}, {"id": "c", "text": "셋"}]
    assert tally["near_duplicate"] == 1 and tally["output_records"] == 2


def run_without_beam(sources: list[SourceFile], run_settings: RunSettings) -> Counter:
    """The stages composed by hand, as any engine would: the shuffles are dicts of lists."""
    tally, records, rejects, bands = Counter(), defaultdict(list), defaultdict(list), defaultdict(list)
    for batch in corpus_stages.read_files(sources, run_settings):
        partitions, rejected, counts = corpus_stages.parse_clean_filter(batch, run_settings)
        tally += counts
        for partition, part in partitions.items():
            records[partition].append(part)
        for partition, rows in rejected.items():
            rejects[partition].append(rows)
    deduped = {}
    for partition, batches in records.items():
        deduped[partition], entries, counts = corpus_stages.dedup_partition(partition, batches, run_settings)
        tally += counts
        for band_partition, entry in entries.items():
            bands[band_partition].append(entry)
    clusters, _, counts = connected.components_in_process(near_edges(bands, deduped, run_settings, tally),
                                                          run_settings.near.rounds)
    tally["near_dedup_edges"] += counts["near_dedup_edges"]
    for partition, table in deduped.items():
        rows = clusters.get(partition)
        removed = rows["id"][~rows["kept"]] if rows is not None else None
        tally += corpus_stages.write_partition(partition, table, removed, run_settings)[1]
        if rows is not None:
            corpus_stages.write_clusters(partition, rows, run_settings)
    for partition, lists in rejects.items():
        corpus_stages.write_rejected(partition, lists, run_settings)
    return tally


def near_edges(bands: dict, tables: dict, run_settings: RunSettings, tally: Counter) -> list[dict]:
    """Band entries -> edges: unverified stars, or (verified) bucket pairs, texts fetched by partition, verified."""
    near = run_settings.near
    if not near.verify:
        return [e for entries in bands.values() if (e := components.bucket_edges(entries)) is not None]
    pairs, requests, fetched = defaultdict(list), defaultdict(list), defaultdict(list)
    for entries in bands.values():
        found, counts = near_pairs.bucket_pairs(entries)
        tally += counts
        by_dest, wanted = near_pairs.route_pairs(found)
        for partition, part in by_dest.items():
            pairs[partition].append(part)
        for partition, request in wanted.items():
            requests[partition].append(request)
    for partition, table in tables.items():
        texts, counts = near_pairs.fetch_texts(partition, [table], requests[partition], run_settings.keep)
        tally += counts
        for dest, part in texts.items():
            fetched[dest].append(part)
    edges = []
    for partition, parts in pairs.items():
        found, counts = near_pairs.verify_candidates(parts, fetched[partition], near.ngram, near.threshold)
        tally += counts
        edges += [found] if found is not None else []
    return edges


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("clean", "rejected", "clusters") for p in sorted((directory / sub).glob("*"))}


@pytest.mark.parametrize("verify, keep", [(True, "smallest-id"), (False, "smallest-id"), (True, "last-by:date")])
def test_the_stages_without_beam_write_what_pipeline_run_writes(tmp_path, verify, keep):
    """The engine-free functions alone, composed in plain Python, give pipeline.run's (Beam's) output bytes."""
    from transforms.survivors import KeepRule

    stats = run(["--output", str(tmp_path / "beam"), "--write-clusters", "--quiet", "--keep-fields", "date",
                 "--keep", keep] + ([] if verify else ["--no-verify"]))
    sample = tmp_path / "beam" / "sample_input" / "sample_comments.jsonl"
    near = NearDedupSettings(0.8, 128, 2, 0, stats["near_dedup"]["bands"], stats["near_dedup"]["rows"], verify)
    run_settings = settings(staging=str(tmp_path / "plain"), num_partitions=8, near=near, min_chars=10,
                            max_chars=None, max_line_bytes=8 << 20, write_clusters=True, keep_fields=(("date", "str"),),
                            keep=KeepRule.parse(keep, (("date", "str"),)))
    tally = run_without_beam([SourceFile(str(sample), "sample_comments.jsonl", "jsonl")], run_settings)
    written = digest(tmp_path / "beam")
    assert digest(tmp_path / "plain") == written and sum(name.startswith("clusters/") for name in written) == 8
    assert tally["output_records"] == stats["output_records"]
    assert {k: tally[k] for k in stats["dropped"]} == stats["dropped"]
    if verify:
        assert (tally["near_dedup_pairs_checked"], tally["near_dedup_pairs_verified"]) == (
            stats["near_dedup"]["candidate_pairs"], stats["near_dedup"]["verified_pairs"])


def test_stage_modules_know_no_engine():
    code = ("import sys; import transforms.corpus_stages, transforms.components, transforms.connected; "
            "print(sorted(m for m in sys.modules if m.startswith(('apache_beam', 'pyspark'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    for module in ("transforms/corpus_stages.py", "transforms/components.py", "transforms/connected.py"):
        assert "apache_beam" not in (REPO / module).read_text()


@pytest.mark.parametrize("value, kept", [(9, 9), ("7", 7), (2**63 - 1, 2**63 - 1), (2**63, None), (-2**63 - 1, None)])
def test_int_fields_outside_int64_are_bad_fields(value, kept):
    line = json.dumps({"id": "a", "text": "숫자 필드가 있는 리뷰", "n": value}).encode()
    batch = LineBatch(SourceFile("/in/r.jsonl", "r.jsonl", "jsonl"), None, 1, [line])
    partitions, _, tally = corpus_stages.parse_clean_filter(batch, settings(keep_fields=(("n", "int"),)))
    assert [r["n"] for r in records_by_id(partitions).values()] == ([kept] if kept is not None else [])
    assert tally["bad_field"] == (kept is None)
