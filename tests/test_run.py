"""End-to-end tests of `python -m pipeline.run` (issue 2) on the sample corpus and crafted files."""
import bz2
import gzip
import hashlib
import json
import lzma
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.run import main, run
from pipeline.sample_corpus import generate_sample
from tests.clean_oracle import oracle_clean

REPO = Path(__file__).resolve().parent.parent


def read_corpus(directory: Path) -> list[dict]:
    rows = []
    for path in sorted((directory / "clean").glob("part-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def tree_digest(directory: Path, subdirs=("clean", "rejected", "clusters")) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in subdirs for p in sorted((directory / sub).glob("*")) if p.is_file()}


def assert_conserved(stats: dict) -> None:
    assert stats["input_records"] == stats["output_records"] + sum(stats["dropped"].values())


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "corpus"
    stats = run(["--output", str(out), "--no-near-dedup", "--keep-fields", "date", "--quiet"])
    return out, stats


def test_sample_run_accounts_for_every_record(sample_run):
    out, stats = sample_run
    corpus = generate_sample()
    assert stats["input_records"] == len(corpus.lines)
    assert_conserved(stats)
    assert json.loads((out / "stats.json").read_text()) == stats
    dropped = stats["dropped"]
    assert dropped["exact_duplicate"] == len(corpus.exact_duplicate_of)
    assert dropped["invalid_utf8"] == 2 and dropped["malformed_json"] == 2 and dropped["blank_line"] == 2
    assert dropped["json_not_an_object"] == 3 and dropped["missing_text"] == 2 and dropped["text_not_string"] == 1
    assert stats["output_records"] == len(read_corpus(out))
    assert not (out / "_temporary").exists()


def test_sample_output_is_clean_sorted_and_keeps_smallest_id(sample_run):
    out, _ = sample_run
    raw = {}
    for line in generate_sample().lines:
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            raw[record["id"]] = record
    rows = read_corpus(out)
    assert set(rows[0]) == {"id", "text", "date"}
    for path in sorted((out / "clean").glob("part-*.parquet")):
        ids = pq.read_table(path).column("id").to_pylist()
        assert ids == sorted(ids)
    assert len({row["text"] for row in rows}) == len(rows)
    groups = defaultdict(list)
    for record_id, record in raw.items():
        text = oracle_clean(record["text"])
        if len(text) >= 10:
            groups[text].append(record_id)
    assert {row["id"] for row in rows} == {min(ids) for ids in groups.values()}
    for row in rows:
        assert row["text"] == oracle_clean(raw[row["id"]]["text"])
        assert row["date"] == raw[row["id"]]["date"]


def test_rejected_records_name_source_line_and_reason(sample_run):
    out, stats = sample_run
    rejected = [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
                for line in path.read_text().splitlines()]
    reasons = defaultdict(int)
    for row in rejected:
        reasons[row["reason"]] += 1
        assert row["source"] == "sample_comments.jsonl" and row["line"] >= 1
    reported = {k: v for k, v in stats["dropped"].items() if k in reasons}
    assert dict(reasons) == reported
    lines = (out / "sample_input" / "sample_comments.jsonl").read_bytes().split(b"\n")
    bad = next(row for row in rejected if row["reason"] == "invalid_utf8")
    assert b"\xff" in lines[bad["line"] - 1] or b"\xc3\x28" in lines[bad["line"] - 1]


@pytest.fixture(scope="module")
def near_dedup_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("near") / "corpus"
    stats = run(["--output", str(out), "--write-clusters", "--quiet"])
    return out, stats


def test_near_dedup_removes_planted_near_duplicates_and_keeps_distinct(near_dedup_run):
    out, stats = near_dedup_run
    corpus = generate_sample()
    assert_conserved(stats)
    kept = {row["id"] for row in read_corpus(out)}
    exact_group = {d: [d] for d in corpus.distinct_ids}
    for copy, source in corpus.exact_duplicate_of.items():
        exact_group[source].append(copy)
    near_of = {source: near_id for near_id, source in corpus.near_duplicate_of.items()}
    expected = {min(min(group), near_of.get(d, min(group))) for d, group in exact_group.items()}
    assert kept == expected
    near = stats["near_dedup"]
    assert stats["dropped"]["near_duplicate"] == near["removed"] == len(corpus.near_duplicate_of)
    assert near["cluster_size_histogram"] == {"2": len(corpus.near_duplicate_of)}
    clusters = [row for path in sorted((out / "clusters").glob("part-*.parquet"))  # one file per text partition
                for row in pq.read_table(path).to_pylist()]
    assert len(clusters) == 2 * len(corpus.near_duplicate_of)
    for row in clusters:
        assert row["kept"] == (row["id"] == row["cluster_id"]) == (row["id"] in kept)
        assert row["cluster_id"] <= row["id"]


def test_the_run_records_its_runner_components_and_what_one_worker_held(near_dedup_run, capsys):
    from pipeline.run import summary

    _, stats = near_dedup_run
    assert stats["options"]["runner"] == "FnApiRunner (in_memory, 1 worker(s))"
    assert "runner: FnApiRunner (in_memory, 1 worker(s))" in summary(stats)
    components = stats["near_dedup"]["components"]
    assert components["rounds"] >= 4 and components["unconverged_nodes"] == 0
    held = stats["per_worker_max"]
    assert 0 < held["max_write_removed_ids"] < stats["near_dedup"]["removed"]  # a writer holds its own partition's
    assert 0 < held["max_components_entries"] <= 4 * stats["near_dedup"]["removed"]
    assert held["max_dedup_partition_records"] < stats["input_records"]


def test_same_output_in_memory_and_with_two_processes(tmp_path, near_dedup_run):
    out, _ = near_dedup_run
    other = tmp_path / "mp"
    run(["--output", str(other), "--write-clusters", "--quiet",
         "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert tree_digest(other) == tree_digest(out)
    again = tmp_path / "again"
    run(["--output", str(again), "--write-clusters", "--quiet"])
    assert tree_digest(again) == tree_digest(out)


def write_compressed(path: Path, data: bytes) -> Path:
    openers = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}
    path.write_bytes(openers.get(path.suffix, lambda b: b)(data))
    return path


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".xz", ".zst"])
def test_formats_and_compressions(tmp_path, suffix):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_compressed(inputs / f"a.txt{suffix}", "첫 번째 댓글입니다 ㅋㅋㅋㅋㅋ\n\n두 번째 댓글은 이것입니다\n".encode())
    write_compressed(inputs / f"b.tsv{suffix}",
                     "id\tdocument\tlabel\n7\t영화가 정말 재밌었어요 👍\t1\n8\t broken row\n".encode())
    write_compressed(inputs / f"c.csv{suffix}",
                     'id,document,score\nx1,"쉼표, 들어간 댓글도\n""괜찮습니다""",3.5\n'.encode())
    out = tmp_path / "out"
    stats = run(["--input", str(inputs / "*"), "--output", str(out), "--text-field", "document",
                 "--no-near-dedup", "--quiet", "--keep-fields", "label:int"])
    # the tsv and the csv have `document`; the csv has no label (null) and the text file no fields
    assert_conserved(stats)
    rows = {row["id"]: row for row in read_corpus(out)}
    assert rows["7"] == {"id": "7", "text": "영화가 정말 재밌었어요 👍", "label": 1}
    assert rows["x1"] == {"id": "x1", "text": '쉼표, 들어간 댓글도 "괜찮습니다"', "label": None}
    assert rows[f"a.txt{suffix}:0000000001"]["text"] == "첫 번째 댓글입니다 ㅋㅋ"
    assert rows[f"a.txt{suffix}:0000000003"]["label"] is None
    assert stats["dropped"] == {"blank_line": 1, "malformed_row": 1}
    assert stats["input_records"] == 6
    assert stats["quoting"] == {"records_read_literally": 0, "records_spanning_lines": 1}


def test_keep_fields_types_and_bad_values(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "a", "text": "평점이 숫자로 들어있는 리뷰", "rating": 9},
        {"id": "b", "text": "평점이 문자열로 들어있는 리뷰", "rating": "7"},
        {"id": "c", "text": "평점이 이상한 값인 리뷰입니다", "rating": "열"},
        {"id": "d", "text": "평점이 없는 리뷰도 남습니다"},
    ]))
    stats = run(["--input", str(path), "--output", str(tmp_path / "o"), "--keep-fields", "rating:int",
                 "--no-near-dedup", "--quiet"])
    rows = {row["id"]: row["rating"] for row in read_corpus(tmp_path / "o")}
    assert rows == {"a": 9, "b": 7, "d": None}
    assert stats["dropped"] == {"bad_field": 1}


def test_long_lines_truncated_gzip_and_empty_file(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    huge = "가" * (7 << 20)  # 21 MB of UTF-8 on one line
    (inputs / "huge.txt").write_text(f"짧은 줄이지만 열 글자는 넘어요\n{huge}\n마지막 줄도 열 글자는 넘습니다\n")
    (inputs / "empty.txt").write_bytes(b"")
    full = gzip.compress("\n".join(f"잘린 압축 파일의 {i}번째 줄입니다" for i in range(20000)).encode())
    (inputs / "cut.txt.gz").write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    stats = run(["--input", str(inputs / "*"), "--output", str(out), "--max-line-bytes", str(1 << 20),
                 "--no-near-dedup", "--quiet"])
    assert_conserved(stats)
    assert stats["dropped"]["line_too_long"] == 1
    assert stats["dropped"]["read_error"] == 1
    assert stats["files"] == {**stats["files"], "matched": 3, "empty": 1}
    texts = {row["text"] for row in read_corpus(out)}
    assert "마지막 줄도 열 글자는 넘습니다" in texts and "짧은 줄이지만 열 글자는 넘어요" in texts
    assert 0 < sum(t.startswith("잘린 압축") for t in texts) < 20000
    rejected = [json.loads(l) for p in (out / "rejected").glob("*.jsonl") for l in p.read_text().splitlines()]
    assert {(r["source"], r["reason"]) for r in rejected} == {("huge.txt", "line_too_long"),
                                                             ("cut.txt.gz", "read_error")}


def test_limit_reads_only_the_first_lines(tmp_path):
    stats = run(["--output", str(tmp_path / "o"), "--limit", "500", "--no-near-dedup", "--quiet"])
    assert stats["input_records"] == 500
    assert_conserved(stats)


def test_usage_errors_come_before_any_work(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nothing*.txt"), "--output", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("열 글자가 넘는 댓글 하나입니다\n")
    out = tmp_path / "o2"
    assert main(["--input", str(tmp_path / "in.txt"), "--output", str(out), "--no-near-dedup", "--quiet"]) == 0
    assert main(["--input", str(tmp_path / "in.txt"), "--output", str(out), "--no-near-dedup", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "in.txt"), "--output", str(out), "--no-near-dedup", "--quiet",
                 "--overwrite"]) == 0
    not_a_directory = tmp_path / "file.txt"
    not_a_directory.write_text("x")
    assert main(["--input", str(tmp_path / "in.txt"), "--output", str(not_a_directory / "o"), "--quiet"]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "--output", str(tmp_path / "o"),
                           "--no-near-dedup"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "read 3,212 records" in proc.stdout and "exact_duplicate" in proc.stdout


def test_bad_keep_fields_and_unwritable_sample_output_are_usage_errors(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "o"), "--keep-fields", "rating:bool"]) == 2
    assert "must be str, int or float" in capsys.readouterr().err
    not_a_directory = tmp_path / "file.txt"
    not_a_directory.write_text("x")
    assert main(["--output", str(not_a_directory / "o")]) == 2  # the sample corpus cannot be written there
    assert "cannot write" in capsys.readouterr().err


# ---------------------------------------------------------------- the command-line convention (pipeline/cli.py)


def command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.run", *argv], cwd=REPO, capture_output=True, text=True)


def test_misspelt_options_exit_2_with_a_suggestion(tmp_path):
    for argv, suggestion in ((["--min_chars", "3"], "did you mean --min-chars?"),
                             (["--limt", "5"], "did you mean --limit?")):
        proc = command("--output", str(tmp_path / "o"), *argv)
        assert proc.returncode == 2 and suggestion in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_help_is_fast_and_lists_the_preset():
    started = time.perf_counter()
    proc = command("--help")
    assert proc.returncode == 0 and "--preset" in proc.stdout and "--json" in proc.stdout
    assert time.perf_counter() - started < 3  # no Beam import (about 1 s on its own); typically 0.5 s


def test_json_summary_equals_stats_and_quiet_keeps_the_summary(tmp_path):
    proc = command("--output", str(tmp_path / "o"), "--no-near-dedup", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    for key in ("input_records", "output_records", "dropped", "files", "num_shards"):
        assert summary[key] == stats[key]
    assert proc.stderr == ""  # --quiet: no progress, and no Beam warnings either
    quiet = command("--output", str(tmp_path / "q"), "--no-near-dedup", "--quiet")
    assert quiet.stdout.startswith("read 3,212 records") and quiet.stderr == ""
    loud = command("--output", str(tmp_path / "l"), "--no-near-dedup")
    assert loud.stderr.startswith("pipeline.run [0m") and "WARNING" not in loud.stderr


def test_stats_record_every_option_resolved(tmp_path):
    stats = run(["--output", str(tmp_path / "o"), "--quiet", "--limit", "100"])
    options = stats["options"]
    assert options["ngram"] == stats["near_dedup"]["ngram"] == 2 and options["num_shards"] == stats["num_shards"] == 8
    assert options["limit"] == 100 and options["input"] == [str(tmp_path / "o" / "sample_input" /
                                                                "sample_comments.jsonl")]
    assert options["beam_options"] == [] and options["preset"] is None


def test_a_held_lock_refuses_a_second_run(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".koforge.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")  # this live process holds it
    assert main(["--output", str(out), "--quiet"]) == 2
    assert "being written by another run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".koforge.lock"]


def test_repeated_inputs_add_up(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.txt").write_text("첫 번째 파일의 댓글입니다\n")
    (inputs / "sub" / "b.txt").write_text("두 번째 파일의 댓글입니다\n")
    stats = run(["--input", str(inputs / "a.txt"), "--input", str(inputs / "sub" / "b.txt"), "--output",
                 str(tmp_path / "o"), "--no-near-dedup", "--quiet"])
    assert stats["files"]["matched"] == 2 and stats["output_records"] == 2
    assert {row["id"] for row in read_corpus(tmp_path / "o")} == {"a.txt:0000000001", "sub/b.txt:0000000001"}
    directory = run(["--input", str(inputs), "--output", str(tmp_path / "d"), "--no-near-dedup", "--quiet"])
    assert directory["files"]["matched"] == 2  # a directory is every file under it
    assert {row["id"] for row in read_corpus(tmp_path / "d")} == {"a.txt:0000000001", "sub/b.txt:0000000001"}


def test_overwrite_removes_only_what_pipeline_run_writes(tmp_path):
    out = tmp_path / "o"
    run(["--output", str(out), "--no-near-dedup", "--quiet", "--num-shards", "9"])
    (out / "notes.txt").write_text("mine")
    run(["--output", str(out), "--no-near-dedup", "--quiet", "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "clean").iterdir()) == [f"part-{i:05d}-of-00008.parquet" for i in range(8)]


def test_ctrl_c_publishes_nothing(tmp_path, monkeypatch, capsys):
    from pipeline import beam_run

    out = tmp_path / "o"
    run(["--output", str(out), "--no-near-dedup", "--quiet"])
    before = tree_digest(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(beam_run, "build_graph", interrupted)
    assert main(["--output", str(out), "--quiet", "--overwrite", "--num-shards", "3"]) == 130
    assert "interrupted; nothing was published" in capsys.readouterr().err
    assert tree_digest(out) == before and (out / "stats.json").exists() and not (out / ".koforge.lock").exists()
