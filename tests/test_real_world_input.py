"""Real-world input shapes (issue 13), each written by the test itself: the exact records kept and drop counts,
or the exact error with exit status 2 before any work.

Every case of issue 13's "Why" is here: multi-line quoted CSV (petitions), NSMC's pandas-written
ratings.txt, misspelt options, a wrong --text-field (JSON and TSV), a TSV header without the text
column, a JSON array (.json), CP949/EUC-KR text, decomposed (NFD) Hangul, a directory as --input,
--keep-fields lable:int, repeated --input, and pipeline.tokenize on Arrow binaries and CP949 text;
plus a runaway quote and files written without quoting (KorSTS-style).
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run as run_module
from pipeline import tokenize
from transforms import preflight

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--no-near-dedup", "--quiet"]


def corpus(out: Path) -> list[dict]:
    return sorted((row for path in sorted((out / "clean").glob("*.parquet")) for row in pq.read_table(path).to_pylist()),
                  key=lambda row: row["id"])


def rejected(out: Path) -> list[tuple]:
    rows = [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted((row["source"], row["line"], row["reason"]) for row in rows)


def run_ok(tmp_path: Path, *argv: str) -> tuple[dict, list[dict], Path]:
    out = tmp_path / "out"
    stats = run_module.run([*argv, "--output", str(out), "--overwrite", *QUICK])
    assert stats["input_records"] == stats["output_records"] + sum(stats["dropped"].values())
    return stats, corpus(out), out


def run_error(capsys, tmp_path: Path, *argv: str) -> str:
    """Exit status 2, one error line, and nothing written (the output directory is never created)."""
    out = tmp_path / "refused"
    assert run_module.main([*argv, "--output", str(out), *QUICK]) == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m pipeline.run: error: ") and error.count("\n") == 1, error
    assert not out.exists()
    return error[len("python -m pipeline.run: error: "):].strip()


# ---------------------------------------------------------------- CSV and TSV by RFC 4180


PETITIONS = (
    'category,title,content,votes\n'
    '정치,"청원 제목, 쉼표 포함","첫째 줄 내용입니다\n'
    '둘째 줄에 ""따옴표""가 있습니다\n'
    '\n'
    '빈 줄 다음 넷째 줄",120\n'
    '교육,짧은 제목,한 줄짜리 청원 내용입니다,5\r\n'
    '"경제","CRLF 청원","마지막 청원은 CRLF 줄바꿈으로\r\n'
    '끝납니다",7\r\n'
)


def test_multi_line_quoted_csv_gives_whole_records_numbered_by_their_first_line(tmp_path):
    """Petitions as Excel and pandas write them: before issue 13, 2 malformed_row and garbage continuation lines."""
    (tmp_path / "petitions.csv").write_bytes(PETITIONS.encode())
    stats, rows, out = run_ok(tmp_path, "--input", str(tmp_path / "petitions.csv"), "--text-field", "content",
                              "--keep-fields", "title,votes:int")
    assert rows == [
        {"id": "petitions.csv:0000000002", "title": "청원 제목, 쉼표 포함", "votes": 120,
         "text": '첫째 줄 내용입니다 둘째 줄에 "따옴표"가 있습니다 빈 줄 다음 넷째 줄'},
        {"id": "petitions.csv:0000000006", "title": "짧은 제목", "votes": 5, "text": "한 줄짜리 청원 내용입니다"},
        {"id": "petitions.csv:0000000007", "title": "CRLF 청원", "votes": 7, "text": "마지막 청원은 CRLF 줄바꿈으로 끝납니다"},
    ]
    assert stats["input_records"] == 3 and stats["dropped"] == {}
    assert stats["quoting"] == {"records_read_literally": 0, "records_spanning_lines": 2}
    assert not (out / "rejected").exists() or rejected(out) == []


def nsmc_ratings(path: Path) -> None:
    """NSMC's ratings_*.txt as pandas writes them (DataFrame.to_csv(sep='\\t'): csv.writer, QUOTE_MINIMAL)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerows([["id", "document", "label"],
                      ["6270596", '"무조건 달려"', "1"],
                      ["9274899", '"무조건 달려"라는 말밖에 안 나오는 영화', "1"],
                      ["8544678", "탭이\t들어간 리뷰도 있습니다", "0"],
                      ["6825595", "평범한 리뷰 한 줄입니다", "0"],
                      ["10000000", "", "1"]])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def test_nsmc_ratings_written_by_pandas_lose_their_csv_quotes(tmp_path):
    nsmc_ratings(tmp_path / "ratings_test.txt")
    assert '"""무조건 달려"""' in (tmp_path / "ratings_test.txt").read_text(encoding="utf-8")
    stats, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "ratings_test.txt"), "--format", "tsv",
                            "--text-field", "document", "--keep-fields", "label:int", "--min-chars", "1")
    assert rows == [
        {"id": "6270596", "text": '"무조건 달려"', "label": 1},
        {"id": "6825595", "text": "평범한 리뷰 한 줄입니다", "label": 0},
        {"id": "8544678", "text": "탭이 들어간 리뷰도 있습니다", "label": 0},
        {"id": "9274899", "text": '"무조건 달려"라는 말밖에 안 나오는 영화', "label": 1},
    ]
    assert stats["dropped"] == {"empty_after_clean": 1} and stats["input_records"] == 5


def test_a_tsv_read_as_plain_text_and_a_header_without_the_column_stop_before_work(tmp_path, capsys):
    nsmc_ratings(tmp_path / "ratings_test.txt")
    ratings = str(tmp_path / "ratings_test.txt")
    assert run_error(capsys, tmp_path, "--input", ratings, "--text-field", "document") == (
        "ratings_test.txt is read as plain text (one document a line), but its first line is a TSV header with the "
        "column 'document': pass --format tsv")
    assert run_error(capsys, tmp_path, "--input", ratings, "--format", "tsv") == (
        "ratings_test.txt: its header has no column 'text' for --text-field (columns: 'id', 'document', 'label')")
    assert run_error(capsys, tmp_path, "--input", ratings, "--format", "tsv", "--text-field", "document",
                     "--id-field", "review_id") == (
        "ratings_test.txt: its header has no column 'review_id' for --id-field (columns: 'id', 'document', 'label')")
    assert run_error(capsys, tmp_path, "--input", ratings, "--format", "tsv", "--text-field", "document",
                     "--keep-fields", "lable:int") == (
        "--keep-fields 'lable': no sampled record has this field (did you mean 'label'?); the fields found: "
        "document, id, label")
    assert run_error(capsys, tmp_path, "--input", ratings, "--format", "csv", "--text-field", "document") == (
        "ratings_test.txt: its header has no column 'document' for --text-field (columns: 'id\\tdocument\\tlabel'); "
        "the header is tab-separated: --format tsv")


def test_a_header_without_an_id_column_is_fine_when_the_id_field_is_the_default(tmp_path):
    (tmp_path / "r.tsv").write_text("review\tscore\n아이디 없는 리뷰 한 줄입니다\t3\n", encoding="utf-8")
    _, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "r.tsv"), "--text-field", "review")
    assert rows == [{"id": "r.tsv:0000000002", "text": "아이디 없는 리뷰 한 줄입니다"}]


RUNAWAY = ['id,text,rating', '1,"첫 번째 리뷰는 정상입니다",5', '2,"두 번째 리뷰는 따옴표가 닫히지 않습니다,3'] + [
    f"{i},{i}번째 리뷰도 따옴표 없이 정상입니다,4" for i in range(3, 203)]


@pytest.mark.parametrize("quoting", ["auto", "rfc4180"])
def test_a_runaway_quote_damages_one_line_not_the_rest_of_the_file(tmp_path, quoting):
    (tmp_path / "reviews.csv").write_text("\n".join(RUNAWAY) + "\n", encoding="utf-8")
    stats, rows, out = run_ok(tmp_path, "--input", str(tmp_path / "reviews.csv"), "--quoting", quoting,
                              "--max-line-bytes", "2000", "--keep-fields", "rating:int")
    expected = {"1": ("첫 번째 리뷰는 정상입니다", 5)} | {
        str(i): (f"{i}번째 리뷰도 따옴표 없이 정상입니다", 4) for i in range(3, 203)}
    if quoting == "auto":  # the line whose quote never closes is read with its quote as a character
        expected["2"] = ('"두 번째 리뷰는 따옴표가 닫히지 않습니다', 3)
        assert stats["dropped"] == {} and stats["quoting"]["records_read_literally"] == 1
    else:
        assert stats["dropped"] == {"bad_quoting": 1} and rejected(out) == [("reviews.csv", 3, "bad_quoting")]
    assert {row["id"]: (row["text"], row["rating"]) for row in rows} == expected
    assert stats["input_records"] == 202


def test_files_written_without_quoting(tmp_path):
    """KorSTS, KorNLI and PAWS-X: quotes are part of the sentences. auto reads a line that is not valid RFC 4180
    as it is (every quote kept), but takes a line whose quotes are all valid RFC 4180 as RFC 4180 quoting (a field quoted
    from end to end loses those quotes); --quoting none keeps every quote."""
    lines = ["score\tsentence1\tsentence2",
             '4.0\t"슈퍼맨" 셔츠를 입은 개는 담요 위에서 잔다.\t슈퍼맨 셔츠를 입은 갈색 개가 누워 있다.',
             '1.2\t"요정은 존재하지 않는다는 말"\t"새티어는 존재하지 않는다" - 좋아.',
             '3.0\t"상처! 스스로 설명해 주실 수 있겠습니까?\t나는 네가 분명히 설명하기를 원해!',
             '2.0\t"온전히 인용된 문장입니다"\t다른 문장']
    (tmp_path / "sts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, auto, _ = run_ok(tmp_path, "--input", str(tmp_path / "sts.tsv"), "--text-field", "sentence1")
    _, none, _ = run_ok(tmp_path, "--input", str(tmp_path / "sts.tsv"), "--text-field", "sentence1",
                        "--quoting", "none")
    assert [row["text"] for row in none] == ['"슈퍼맨" 셔츠를 입은 개는 담요 위에서 잔다.', '"요정은 존재하지 않는다는 말"',
                                             '"상처! 스스로 설명해 주실 수 있겠습니까?', '"온전히 인용된 문장입니다"']
    assert [row["text"] for row in auto] == ['"슈퍼맨" 셔츠를 입은 개는 담요 위에서 잔다.', '"요정은 존재하지 않는다는 말"',
                                             '"상처! 스스로 설명해 주실 수 있겠습니까?', "온전히 인용된 문장입니다"]
    assert [row["id"] for row in auto] == [f"sts.tsv:{line:010d}" for line in (2, 3, 4, 5)]


# ---------------------------------------------------------------- JSON arrays


def test_a_json_array_is_read_element_by_element(tmp_path):
    """e9t/nsmc's raw/*.json: one JSON array a file (before issue 13: every line a malformed_json)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    reviews = [{"movie_id": 1, "review": "다시 봐도 감동적인 영화입니다", "rating": 10, "date": "2015-01-02"},
               {"movie_id": 1, "review": "기대보다 지루했어요 별로였습니다", "rating": 3, "date": "2015-01-03"},
               "not an object",
               {"movie_id": 1, "rating": 5},
               {"movie_id": 1, "review": "배우들의 연기가 정말 좋았습니다", "rating": "열", "date": "2015-01-05"}]
    (raw / "movie_1.json").write_text(json.dumps(reviews, ensure_ascii=False, indent=2), encoding="utf-8")
    (raw / "movie_2.json").write_text(json.dumps([{"id": "m2-a", "review": "한 줄로 된 배열 파일의 첫 리뷰",
                                                   "rating": 8}], ensure_ascii=False), encoding="utf-8")
    (raw / "lines.json").write_text(json.dumps({"review": "배열이 아니면 JSON lines로 읽습니다"}, ensure_ascii=False)
                                    + "\n", encoding="utf-8")
    stats, rows, out = run_ok(tmp_path, "--input", str(raw), "--text-field", "review", "--keep-fields",
                              "rating:int,date")
    assert rows == [
        {"id": "lines.json:0000000001", "text": "배열이 아니면 JSON lines로 읽습니다", "rating": None, "date": None},
        {"id": "m2-a", "text": "한 줄로 된 배열 파일의 첫 리뷰", "rating": 8, "date": None},
        {"id": "movie_1.json:0000000001", "text": "다시 봐도 감동적인 영화입니다", "rating": 10, "date": "2015-01-02"},
        {"id": "movie_1.json:0000000002", "text": "기대보다 지루했어요 별로였습니다", "rating": 3, "date": "2015-01-03"},
    ]
    assert stats["dropped"] == {"json_not_an_object": 1, "missing_text": 1, "bad_field": 1}
    assert rejected(out) == [("movie_1.json", 3, "json_not_an_object"), ("movie_1.json", 4, "missing_text"),
                             ("movie_1.json", 5, "bad_field")]  # N: the element's index in the array


def test_json_mistakes_stop_before_work(tmp_path, capsys):
    reviews = [{"document": "필드 이름이 다른 리뷰입니다", "label": 1}, {"document": "두 번째 리뷰입니다"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in reviews), encoding="utf-8")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "a.jsonl")) == (
        "a.jsonl: none of its first 2 JSON records has the field 'text' for --text-field; the keys found (records "
        "with each): document (2), label (1)")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "a.jsonl"), "--text-field", "document",
                     "--keep-fields", "lable:int") == (
        "--keep-fields 'lable': no sampled record has this field (did you mean 'label'?); the fields found: "
        "document, label")
    (tmp_path / "b.jsonl").write_text(json.dumps(reviews, ensure_ascii=False, indent=1), encoding="utf-8")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "b.jsonl"), "--text-field", "document") == (
        "b.jsonl holds a JSON array, not JSON lines: name it .json or pass --format json (a .json file whose first "
        "character is '[' is read as one array of records)")
    _, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "b.jsonl"), "--format", "json", "--text-field",
                        "document")
    assert rows == [{"id": "b.jsonl:0000000001", "text": "필드 이름이 다른 리뷰입니다"},
                    {"id": "b.jsonl:0000000002", "text": "두 번째 리뷰입니다"}]


# ---------------------------------------------------------------- encodings and NFD

KOREAN = ["윈도우에서 저장한 댓글입니다", "똠방각하라는 말은 처음 들어봐요", "완성형 한글만 있는 세 번째 줄"]


def test_cp949_text_stops_with_the_fix_and_reads_with_it(tmp_path, capsys):
    (tmp_path / "comments.txt").write_bytes("\r\n".join(KOREAN).encode("cp949"))
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "comments.txt")) == (
        "comments.txt: 3 of its first 3 records are not valid UTF-8 but read as CP949 (EUC-KR): pass --encoding cp949")
    stats, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "comments.txt"), "--encoding", "cp949")
    assert [(row["id"], row["text"]) for row in rows] == [(f"comments.txt:{i:010d}", text)
                                                          for i, text in enumerate(KOREAN, 1)]
    # EUC-KR lacks 똠 (CP949 only): with --encoding euc-kr that line is undecodable, the others read
    stats, rows, out = run_ok(tmp_path, "--input", str(tmp_path / "comments.txt"), "--encoding", "euc-kr")
    assert [row["text"] for row in rows] == [KOREAN[0], KOREAN[2]] and stats["dropped"] == {"undecodable": 1}
    assert rejected(out) == [("comments.txt", 2, "undecodable")]
    assert "--encoding 'latin-1' is not supported" in run_error(capsys, tmp_path, "--input",
                                                                 str(tmp_path / "comments.txt"), "--encoding", "latin-1")


def test_cp949_csv_with_a_korean_header(tmp_path):
    (tmp_path / "export.csv").write_bytes('번호,내용,작성일\n1,"엑셀에서 저장한, 쉼표 든 내용",2020-01-01\n'.encode("cp949"))
    _, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "export.csv"), "--encoding", "cp949", "--text-field",
                        "내용", "--id-field", "번호", "--keep-fields", "작성일")
    assert rows == [{"id": "1", "text": "엑셀에서 저장한, 쉼표 든 내용", "작성일": "2020-01-01"}]


def test_nfd_hangul_stops_unless_composed_or_allowed(tmp_path, capsys):
    (tmp_path / "mac.txt").write_text("\n".join(unicodedata.normalize("NFD", text) for text in KOREAN),
                                      encoding="utf-8")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "mac.txt")) == (
        "mac.txt: 3 of its first 3 records hold decomposed Hangul (NFD: conjoining jamo U+1100-U+11FF, as macOS file "
        "names and PDF text have); cleaning would delete the jamo: pass --nfc to compose them into syllables (or "
        "--allow-nfd to keep the seed's behaviour)")
    _, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "mac.txt"), "--nfc")
    assert [row["text"] for row in rows] == KOREAN
    stats, rows, _ = run_ok(tmp_path, "--input", str(tmp_path / "mac.txt"), "--allow-nfd")
    assert rows == [] and stats["dropped"] == {"empty_after_clean": 3}  # the seed deletes every jamo


# ---------------------------------------------------------------- binary input, directories, nothing usable


def arrow_file(path: Path) -> Path:
    table = pa.table({"text": KOREAN * 50})
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    return path


def test_binary_files_stop_before_work(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.txt").write_text("\n".join(KOREAN), encoding="utf-8")
    arrow_file(inputs / "shard.arrow")
    assert run_error(capsys, tmp_path, "--input", str(inputs)) == (
        "shard.arrow is an Arrow IPC file, not text (one document a line), JSON lines, a JSON array, TSV or CSV in a "
        "text encoding; leave it out of --input (a directory means every file under it)")
    pq.write_table(pa.table({"text": KOREAN}), tmp_path / "corpus.parquet")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "corpus.parquet")).startswith(
        "corpus.parquet is a Parquet file, not text")
    (tmp_path / "utf16.txt").write_text("\n".join(KOREAN), encoding="utf-16")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "utf16.txt")).startswith(
        "utf16.txt is UTF-16 text, not text")


def test_directories_and_repeated_inputs_add_up(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "deep" / "deeper").mkdir(parents=True)
    (inputs / "a.txt").write_text("첫 번째 파일의 댓글입니다\n", encoding="utf-8")
    (inputs / "deep" / "b.jsonl").write_text('{"text": "두 번째 파일의 댓글입니다"}\n', encoding="utf-8")
    (inputs / "deep" / "deeper" / "c.csv").write_text("text\n세 번째 파일의 댓글입니다\n", encoding="utf-8")
    (tmp_path / "d.json").write_text('[{"text": "네 번째 파일의 댓글입니다"}]', encoding="utf-8")
    stats, rows, _ = run_ok(tmp_path, "--input", str(inputs), "--input", str(tmp_path / "d.json"))
    assert stats["files"]["matched"] == 4
    assert [(row["id"], row["text"]) for row in rows] == [
        ("d.json:0000000001", "네 번째 파일의 댓글입니다"), ("in/a.txt:0000000001", "첫 번째 파일의 댓글입니다"),
        ("in/deep/b.jsonl:0000000001", "두 번째 파일의 댓글입니다"),
        ("in/deep/deeper/c.csv:0000000002", "세 번째 파일의 댓글입니다")]


def test_empty_input_and_a_run_that_reads_nothing_usable(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "empty.txt")) == (
        "the input holds no records: 1 file(s), all empty")
    (tmp_path / "blank.txt").write_text("\n \n\t\n", encoding="utf-8")
    assert run_error(capsys, tmp_path, "--input", str(tmp_path / "blank.txt")) == (
        "blank.txt: no usable document among its first 3 records (blank_line 3)")
    # the checks read the first records only; should every record still be unusable, the run ends with exit 2
    monkeypatch.setattr(preflight, "check_samples", lambda samples, checks: None)
    (tmp_path / "keys.jsonl").write_text('{"body": "본문 필드만 있는 레코드입니다"}\n' * 3, encoding="utf-8")
    out = tmp_path / "after"
    assert run_module.main(["--input", str(tmp_path / "keys.jsonl"), "--output", str(out), *QUICK]) == 2
    assert capsys.readouterr().err == (
        f"python -m pipeline.run: error: none of the 3 records read is a usable document (missing_text 3); {out}/"
        "rejected/ holds an excerpt of each (stats.json: the counts)\n")
    assert json.loads((out / "stats.json").read_text())["dropped"] == {"missing_text": 3}


# ---------------------------------------------------------------- misspelt options


def command(module: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("argv, message", [
    (["--text_field", "document"], "unknown option --text_field; did you mean --text-field?"),
    (["--limt", "100"], "unknown option --limt; did you mean --limit? (not an option of this command, nor of Beam)"),
    (["--near-dedup-treshold", "0.9"], "unknown option --near-dedup-treshold; did you mean --near-dedup-threshold? "
                                       "(not an option of this command, nor of Beam)"),
    (["--encodng", "cp949"], "unknown option --encodng; did you mean --encoding? (not an option of this command, "
                             "nor of Beam)"),
])
def test_misspelt_options_stop_with_a_suggestion(tmp_path, argv, message):
    proc = command("pipeline.run", "--output", str(tmp_path / "o"), *argv)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"python -m pipeline.run: error: {message}"
    assert not (tmp_path / "o").exists()


def test_misspelt_tokenize_options_stop_with_a_suggestion(tmp_path):
    proc = command("pipeline.tokenize", "--input", "x", "--output", str(tmp_path / "o"), "--text_field", "document")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "python -m pipeline.tokenize: error: unknown option --text_field; did you mean --text-field?")


# ---------------------------------------------------------------- pipeline.tokenize: the same checks


def tokenize_error(capsys, *argv: str) -> str:
    status = tokenize.main([*argv, "--quiet"])
    error = capsys.readouterr().err
    assert status == 2 and error.startswith("python -m pipeline.tokenize: error: "), error
    return error[len("python -m pipeline.tokenize: error: "):].strip()


def test_tokenize_refuses_binary_undecodable_and_misnamed_input(tmp_path, capsys):
    out = str(tmp_path / "tok")
    arrow = arrow_file(tmp_path / "shard.arrow")
    assert tokenize_error(capsys, "--input", str(arrow), "--output", out) == (
        f"{arrow} is an Arrow IPC file, not text (one document a line), JSON lines, a JSON array, TSV or CSV in a "
        "text encoding; leave it out of --input (a directory means every file under it)")
    (tmp_path / "cp949.txt").write_bytes("\n".join(KOREAN * 20).encode("cp949"))
    assert tokenize_error(capsys, "--input", str(tmp_path / "cp949.txt"), "--output", out) == (
        f"{tmp_path / 'cp949.txt'}: 60 of its first 60 records are not valid UTF-8 but read as CP949 (EUC-KR): pass "
        "--encoding cp949")
    (tmp_path / "nfd.txt").write_text("\n".join(unicodedata.normalize("NFD", t) for t in KOREAN), encoding="utf-8")
    assert "the vocabulary would learn jamo, not syllables" in tokenize_error(
        capsys, "--input", str(tmp_path / "nfd.txt"), "--output", out)
    nsmc_ratings(tmp_path / "ratings.txt")
    assert tokenize_error(capsys, "--input", str(tmp_path / "ratings.txt"), "--output", out, "--text-field",
                          "document").endswith("pass --format tsv")
    assert tokenize_error(capsys, "--input", str(tmp_path / "ratings.txt"), "--output", out, "--format", "tsv",
                          "--text-field", "doc").endswith("its header has no column 'doc' for --text-field (columns: "
                                                          "'id', 'document', 'label')")
    assert not Path(out).exists() or not any(Path(out).iterdir())


def test_tokenize_reads_cp949_json_arrays_and_quoted_tsv(tmp_path):
    texts = [f"{text} {i}번째" for i in range(40) for text in KOREAN]
    (tmp_path / "cp949.txt").write_bytes("\n".join(texts).encode("cp949"))
    (tmp_path / "array.json").write_text(json.dumps([{"text": t} for t in texts], ensure_ascii=False, indent=1),
                                         encoding="utf-8")
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([["text"]] + [[t] for t in texts])
    (tmp_path / "quoted.tsv").write_text(buffer.getvalue(), encoding="utf-8")
    vocabularies = []
    for name, extra in (("cp949.txt", ["--encoding", "cp949"]), ("array.json", []), ("quoted.tsv", [])):
        out = tmp_path / f"tok-{name}"
        assert tokenize.main(["--input", str(tmp_path / name), "--output", str(out), "--vocab-size", "300",
                              "--quiet", *extra]) == 0
        report = json.loads((out / "tokenizer_report.json").read_text(encoding="utf-8"))
        assert report["documents"]["usable"] == len(texts) and report["documents"]["dropped"] == {}
        vocabularies.append((out / "vocab.txt").read_bytes())
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
