"""Reading one file in byte ranges (transforms.ranges, corpus_stages.plan_ranges/read_range): the same records,
line numbers and counts as one reader, whatever the cut; pipeline.run's outputs byte-identical split or not."""
import gzip
import hashlib
import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from pipeline.run import run
from transforms import corpus_stages, ranges
from transforms.clean import CleanOptions
from transforms.corpus_stages import FileRange, RunSettings, SourceFile
from transforms.reading import FieldSpec


def line_pieces(data: bytes) -> list[bytes]:
    """The lines of `data` with their endings, written out plainly: what the ranges together must give."""
    pieces, position = [], 0
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end + 1
        pieces.append(data[position:end])
        position = end
    return pieces


def test_ranges_give_every_line_once_and_count_what_they_give():
    generator = random.Random(7)
    for _ in range(3000):
        data = bytes(generator.choice(b"ab\n\r\xea\xb0\x80") for _ in range(generator.randint(0, 60)))
        range_bytes = generator.randint(1, 20)
        given, counted = [], []
        for start, end in ranges.cut(len(data), range_bytes):
            counted.append(ranges.count_lines(io.BytesIO(data), start, end, chunk_bytes=generator.randint(1, 9)))
            stream = ranges.RangeStream(io.BytesIO(data), start, end, chunk_bytes=generator.randint(1, 7))
            part = b""
            while chunk := stream.read1(generator.choice([-1, 2, 100])):
                part += chunk
            given.append(part)
        assert b"".join(given) == data
        assert [len(line_pieces(part)) for part in given] == counted
        assert sum(counted) == len(line_pieces(data))


def test_cut_covers_the_file_in_near_equal_ranges():
    assert ranges.cut(0, 10) == [(0, 0)]
    assert ranges.cut(10, 10) == [(0, 10)]
    assert ranges.cut(25, 10) == [(0, 8), (8, 16), (16, 25)]


def settings(**overrides) -> RunSettings:
    values = dict(fields=FieldSpec("text", "id"), clean=CleanOptions(), min_chars=1, max_chars=None,
                  max_line_bytes=60, exact_dedup=True, near=None, num_partitions=2, staging="/nowhere")
    return RunSettings(**{**values, **overrides})


def records_and_counts(batches) -> tuple[list, Counter]:
    records, counts = [], Counter()
    for batch in batches:
        records += [(batch.line_of(offset), line) for offset, line in enumerate(batch.lines)]
        if batch.read_error is not None:
            records.append((batch.end_line, batch.read_error))
        counts.update(batch.counts)
    return records, counts


def read_split(source: SourceFile, run_settings: RunSettings, range_bytes: int):
    planned = corpus_stages.plan_ranges([source], range_bytes)
    counted = [(part, corpus_stages.count_range_lines(part)) for part in reversed(planned)]  # any order
    numbered = corpus_stages.number_ranges(counted)
    assert [part.index for part in numbered] == list(range(len(planned)))
    return records_and_counts(batch for part in numbered for batch in corpus_stages.read_range(part, run_settings)), \
        len(planned)


HANGUL = "가나다라마바사아자차카타파하"
SHAPES = {
    "text": ("t.txt", "text", "none", "utf-8",
             "첫 줄\n\n둘째 줄 " + HANGUL + "\n" + "x" * 70 + "\n  \n마지막 " + HANGUL + "\n"),
    "crlf_no_final_newline": ("c.txt", "text", "none", "utf-8",
                              "하나\r\n둘 " + HANGUL + "\r\n\r\n" + "긴" * 30 + "\r\n끝 줄"),
    "jsonl": ("j.jsonl", "jsonl", "none", "utf-8",
              "".join(json.dumps({"id": i, "text": HANGUL[: i % 9 + 1]}, ensure_ascii=False) + "\n" for i in range(12))
              + "{broken\n\n" + json.dumps({"text": "x" * 50}) + "\n"),
    "tsv_unquoted": ("u.tsv", "tsv", "none", "utf-8",
                     "id\ttext\n" + "".join(f"{i}\t{HANGUL[i % 5:]} \"따옴표\n" for i in range(9)) + "bad row\n"),
    "cp949": ("k.txt", "text", "none", "cp949", ("한국어 " + HANGUL + "\n") * 6 + "끝"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_split_reading_equals_one_reader_on_every_shape(tmp_path, shape):
    name, fmt, quoting, encoding, text = SHAPES[shape]
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    source = SourceFile(str(path), name, fmt, quoting, size=path.stat().st_size)
    run_settings = settings(encoding=encoding)
    whole = records_and_counts(corpus_stages.read_line_batches(source, run_settings))
    assert whole[0] and whole[1]["files_read"] == 1
    for range_bytes in (1, 2, 3, 5, 7, 16, 64, 1 << 20):
        split, pieces = read_split(source, run_settings, range_bytes)
        assert split == whole, range_bytes
        assert pieces > 1 or range_bytes >= len(text.encode(encoding))
    if shape == "text":  # an oversized line is one line_too_long record (None) at its own number, split or not
        assert (4, None) in whole[0] and whole[0][-1] == (6, ("마지막 " + HANGUL).encode())


def test_only_uncompressed_one_record_per_line_files_are_split(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"line\n" * 100)
    packed = tmp_path / "b.txt.gz"
    packed.write_bytes(gzip.compress(b"line\n" * 100))

    def pieces(path: Path, fmt: str, quoting: str = "auto") -> int:
        source = SourceFile(str(path), path.name, fmt, quoting, size=path.stat().st_size)
        return len(corpus_stages.plan_ranges([source], 64))

    assert pieces(plain, "text") == 8 and pieces(plain, "jsonl") == 8 and pieces(plain, "tsv", "none") == 8
    assert pieces(packed, "text") == 1  # compressed: one reader
    assert pieces(plain, "tsv") == 1 and pieces(plain, "csv", "rfc4180") == 1  # a quoted field may hold a newline
    assert pieces(plain, "json") == 1  # may be one JSON array
    assert corpus_stages.plan_ranges([SourceFile(str(plain), "a.txt", "text")], 64) == [
        FileRange(SourceFile(str(plain), "a.txt", "text"))]  # size unknown: read whole


def test_a_range_that_fails_reports_its_read_error_at_its_first_line(tmp_path):
    path = tmp_path / "gone.txt"
    path.write_bytes(b"one\ntwo\nthree\nfour\n")
    source = SourceFile(str(path), "gone.txt", "text", size=path.stat().st_size)
    second = corpus_stages.number_ranges([(FileRange(source, 0, 0, 8), 2), (FileRange(source, 1, 8, 19), 2)])[1]
    path.unlink()
    batches = list(corpus_stages.read_range(second, settings()))
    assert len(batches) == 1 and batches[0].read_error.startswith("FileNotFoundError")
    assert batches[0].first_line == 3 and dict(batches[0].counts) == {"files_with_read_errors": 1}


def tree(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != "stats.json"}


def comparable(stats: dict) -> dict:
    """stats.json without what differs between any two runs (timings) or names the options (the range size)."""
    return {key: value for key, value in stats.items() if key not in ("timings", "options")}


def test_pipeline_run_writes_the_same_bytes_split_into_tiny_ranges(tmp_path):
    lines = []
    for number in range(400):
        text = f"{HANGUL[number % 7:]} 리뷰 번호 {number % 150} 입니다"
        lines.append(json.dumps({"id": f"r{number % 350}", "text": text}, ensure_ascii=False) if number % 3 else text)
    texts = tmp_path / "in" / "mixed.txt"
    texts.parent.mkdir()
    texts.write_bytes(("\r\n".join(line if i % 3 == 0 else line.split('"text": "')[-1].rstrip('"}')
                                   for i, line in enumerate(lines)) + "\r\n\r\n" + "끝" * 5000).encode())
    (tmp_path / "in" / "records.jsonl").write_bytes("\n".join(lines[1::3] + lines[2::3]).encode())
    outputs, stats = [], []
    for range_bytes in ("1000", str(1 << 26)):
        out = tmp_path / f"out-{range_bytes}"
        stats.append(run(["--input", str(tmp_path / "in"), "--format", "auto", "--output", str(out),
                          "--min-chars", "3", "--max-line-bytes", "4000", "--write-clusters", "--quiet",
                          "--read-range-bytes", range_bytes]))
        outputs.append(tree(out))
    assert outputs[0] == outputs[1] and len(outputs[0]) > 4
    assert stats[0]["dropped"]["line_too_long"] == 1 and stats[0]["dropped"]["near_duplicate"] > 0
    first, second = (comparable(json.loads((tmp_path / f"out-{size}" / "stats.json").read_text()))
                     for size in ("1000", str(1 << 26)))
    assert first == second and first["profile"]["clean_sample"]["texts"] > 0
