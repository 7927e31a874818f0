"""transforms.reading's records (issue 13): RFC 4180 TSV/CSV across lines, JSON arrays, encodings; the preflight."""
from __future__ import annotations

import csv
import io
import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import drop_reasons, preflight, reading
from transforms.reading import Damaged, Literal, RecordReader

FIELDS = reading.FieldSpec("text", "id", ())


def records(data: bytes, fmt: str, quoting: str = "auto", max_bytes: int = 1 << 20, chunk_bytes: int = 1 << 20,
            encoding: str = "utf-8") -> tuple[RecordReader, list]:
    reader = RecordReader(io.BytesIO(data), fmt, max_bytes, quoting, encoding, chunk_bytes)
    return reader, list(reader)


# ---------------------------------------------------------------- RFC 4180 against Python's csv module

FIELD_TEXT = st.text(alphabet=st.sampled_from(list('ab 가댓,\t"\n\r\'')), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(FIELD_TEXT, min_size=3, max_size=3), min_size=1, max_size=8),
       st.sampled_from(["tsv", "csv"]), st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
       st.sampled_from(["\n", "\r\n"]), st.integers(min_value=1, max_value=64))
def test_rows_written_by_the_csv_module_read_back_exactly(rows, fmt, quoting, terminator, chunk_bytes):
    """What csv.writer (and so pandas.to_csv) writes is read back field for field, whatever the chunk size."""
    rows = [[field.replace("\r", "") for field in row] for row in rows]  # a bare CR inside a field is not kept
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", quoting=quoting, lineterminator=terminator)
    writer.writerow(["id", "text", "label"])
    writer.writerows(rows)
    reader, read = records(buffer.getvalue().encode(), fmt, "rfc4180", chunk_bytes=chunk_bytes)
    assert reader.header == ["id", "text", "label"]
    got = [reading.split_fields(record.decode(), "\t" if fmt == "tsv" else ",") for _, record in read]
    expected = [[field.replace("\r\n", "\n") for field in row] for row in rows]
    blank = [row == ["", "", ""] and quoting == csv.QUOTE_MINIMAL for row in rows]  # written as an empty line
    assert [row for row, is_blank in zip(got, blank) if not is_blank] == [
        row for row, is_blank in zip(expected, blank) if not is_blank]
    first_lines = [2]
    for row in rows[:-1]:
        first_lines.append(first_lines[-1] + 1 + sum(field.count("\n") for field in row))
    assert [number for number, _ in read] == first_lines


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab,"\t 가')), max_size=20))
def test_split_fields_agrees_with_the_strict_csv_module(line):
    try:
        expected = next(csv.reader([line], strict=True)) or [""]  # csv gives [] for an empty line
    except csv.Error:
        expected = None
    assert reading.split_fields(line, ",") == expected
    scanned = reading.scan_row(line.encode(), 0x2C, False, 0)
    if expected is not None:
        assert scanned == (False, len(expected), False)
    else:
        assert scanned[0] or scanned[2]  # an open quote at the end, or text after a closing quote


def test_quoted_fields_span_lines_and_keep_their_first_line_number():
    data = 'id,text\n1,"첫 줄\n""둘째"" 줄\n\n넷째 줄"\n2,보통 줄\n3,"CRLF\r\n줄바꿈"\r\n'.encode()
    reader, read = records(data, "csv")
    assert read == [(2, '1,"첫 줄\n""둘째"" 줄\n\n넷째 줄"'.encode()), (6, "2,보통 줄".encode()),
                    (7, '3,"CRLF\n줄바꿈"'.encode())]
    assert reading.split_fields(read[0][1].decode(), ",") == ["1", '첫 줄\n"둘째" 줄\n\n넷째 줄']
    assert reader.counts == {"records_spanning_lines": 2} and reader.next_number == 9


def test_a_record_that_does_not_close_is_given_up_at_its_first_line():
    lines = ['id,text,n', '1,"닫히지 않는 따옴표,1'] + [f"{i},보통 리뷰 {i},{i}" for i in range(2, 60)]
    data = "\n".join(lines).encode()
    for quoting, first in (("auto", Literal(lines[1].encode())), ("rfc4180", Damaged("bad_quoting", lines[1].encode()))):
        reader, read = records(data, "csv", quoting, max_bytes=200)  # the runaway is given up after 200 bytes
        assert read[0] == (2, first)
        assert read[1:] == [(i + 1, lines[i].encode()) for i in range(2, 60)]
        assert reader.counts.get("records_read_literally", 0) == (quoting == "auto")
    assert reading.parse_line(Literal(lines[1].encode()), "csv", FIELDS, ["id", "text", "n"]) == (
        "1", '"닫히지 않는 따옴표', {})
    # the end of the file, a quote followed by text, or the wrong number of fields end it the same way
    for data, first in ((b'id,text\n1,"open', 2), (b'id,text\n1,"a\nb"c,2\n2,x', 2), (b'id,text\n1,"a\nb",c\n2,x', 2)):
        _, read = records(data, "csv", "auto")
        assert read[0] == (first, Literal(data.split(b"\n")[1]))
        assert all(isinstance(record, bytes) for _, record in read[1:])
    _, read = records(b'id,text\n1,"a\n' + b"x" * 300 + b'"\n2,y', "csv", "auto", max_bytes=100)
    assert read == [(2, Literal(b'1,"a')), (3, None), (4, b"2,y")]  # the too-long line is its own drop


def test_a_runaway_quote_holds_at_most_one_record_in_memory():
    good = "".join(f"{i},따옴표 없는 보통 댓글 {i}번째 줄입니다\n" for i in range(200_000)).encode()  # ~10 MB
    data = b'id,text\n0,"never closed\n' + good
    tracemalloc.start()
    reader = RecordReader(io.BytesIO(data), "csv", 64 << 10, "auto", chunk_bytes=64 << 10)
    count = sum(1 for _ in reader)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 200_001 and reader.counts == {"records_read_literally": 1}
    assert peak < 4 << 20, peak  # the file is 10 MB; a record may hold 64 KiB


def test_quoting_none_reads_quotes_as_characters():
    data = 'id\ttext\n1\t"인용"으로 시작하는 문장\n2\t"온전히 인용된 문장"\n'.encode()
    _, read = records(data, "tsv", "none")
    assert [reading.parse_line(record, "tsv", FIELDS, ["id", "text"], quoting="none")[1] for _, record in read] == [
        '"인용"으로 시작하는 문장', '"온전히 인용된 문장"']
    _, read = records(data, "tsv", "auto")  # auto: the first is not RFC 4180 (read as is), the second is
    assert [reading.parse_line(record, "tsv", FIELDS, ["id", "text"])[1] for _, record in read] == [
        '"인용"으로 시작하는 문장', "온전히 인용된 문장"]


# ---------------------------------------------------------------- JSON arrays


@settings(max_examples=200, deadline=None)
@given(st.lists(st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='a"\\[]{},가 \n', max_size=8),
                             lambda children: st.lists(children, max_size=3)
                             | st.dictionaries(st.text(alphabet='a"\\]}', max_size=3), children, max_size=3),
                             max_leaves=8), max_size=6),
       st.sampled_from([None, 1, 2]), st.integers(min_value=1, max_value=16))
def test_json_array_elements_are_found_whatever_the_chunks(elements, indent, chunk_bytes):
    data = json.dumps(elements, ensure_ascii=False, indent=indent).encode()
    reader, read = records(data, "json", chunk_bytes=chunk_bytes)
    assert reader.kind == "json-array"
    assert [number for number, _ in read] == list(range(1, len(elements) + 1))
    assert [json.loads(element) for _, element in read] == elements


def test_json_array_edge_cases():
    _, read = records(b'\xef\xbb\xbf  [ {"a": 1} , 2,, "x"]  trailing', "json")
    assert read == [(1, b'{"a": 1}'), (2, b"2"), (3, Damaged("malformed_json", b"")), (4, b'"x"'),
                    (5, Damaged("malformed_json", b"trailing"))]
    assert records(b"[]", "json")[1] == [] and records(b" [ ] ", "json")[1] == []
    assert records(b'[{"a": 1}, {"b":', "json")[1] == [(1, b'{"a": 1}'), (2, b'{"b":')]  # cut short: malformed
    big = b'[{"text": "' + b"x" * 500 + b'"}, {"text": "short"}]'
    assert records(big, "json", max_bytes=100, chunk_bytes=64)[1] == [(1, None), (2, b'{"text": "short"}')]
    reader, read = records(b'{"a": 1}\n\n{"b": 2}', "json")  # not an array: JSON lines, numbered by line
    assert reader.kind == "jsonl" and read == [(1, b'{"a": 1}'), (2, b""), (3, b'{"b": 2}')]
    reader, read = records(b"[1]\n[2]", "jsonl")  # .jsonl is always JSON lines
    assert reader.kind == "jsonl" and len(read) == 2


# ---------------------------------------------------------------- encodings


def test_encodings_decode_per_record():
    assert [reading.check_encoding(name) for name in ("UTF8", "cp949", "ms949", "uhc", "EUC-KR", "euckr")] == [
        "utf-8", "cp949", "cp949", "cp949", "euc_kr", "euc_kr"]
    for name in ("latin-1", "utf-16", "nope"):
        with pytest.raises(reading.InputFormatError, match="cp949"):
            reading.check_encoding(name)
    line = '{"id": "a", "text": "똠방각하 펲시콜라"}'.encode("cp949")  # 똠, 펲: CP949 only, not in EUC-KR
    assert reading.parse_line(line, "jsonl", FIELDS, None) == "invalid_utf8"
    assert reading.parse_line(line, "jsonl", FIELDS, None, "cp949") == ("a", "똠방각하 펲시콜라", {})
    assert reading.parse_line(line, "jsonl", FIELDS, None, "euc_kr") == "undecodable"
    header_and_row = "번호,내용\n1,\"쉼표, 든 내용\"\n".encode("cp949")
    reader, read = records(header_and_row, "csv", encoding="cp949")
    assert reader.header == ["번호", "내용"] and reading.parse_line(
        read[0][1], "csv", reading.FieldSpec("내용", "번호"), reader.header, "cp949") == ("1", "쉼표, 든 내용", {})


# ---------------------------------------------------------------- the preflight, on samples


def sample(tmp_path, name: str, data: bytes, checks: preflight.Checks, fmt: str | None = None):
    path = tmp_path / name
    path.write_bytes(data)
    return preflight.sample_file(str(path), name, fmt or reading.detect_format(name), checks)


def test_samples_and_their_messages(tmp_path):
    checks = preflight.Checks(FIELDS)
    korean = ["첫 번째 댓글입니다", "두 번째 댓글입니다", "세 번째 댓글입니다"]
    cp949 = sample(tmp_path, "a.txt", "\n".join(korean).encode("cp949"), checks)
    assert (cp949.records, cp949.undecodable, cp949.decodes_as) == (3, 3, {"cp949": 3})
    assert preflight.check_file(cp949, checks) == (
        "a.txt: 3 of its first 3 records are not valid UTF-8 but read as CP949 (EUC-KR): pass --encoding cp949")
    utf8 = sample(tmp_path, "b.txt", "\n".join(korean).encode(), preflight.Checks(FIELDS, encoding="cp949"))
    assert preflight.check_file(utf8, preflight.Checks(FIELDS, encoding="cp949")).endswith("pass --encoding utf-8")
    mostly_fine = sample(tmp_path, "c.txt", "\n".join(korean * 3).encode() + b"\n\xff\xfe", checks)
    assert preflight.check_file(mostly_fine, checks) is None and mostly_fine.dropped == {"invalid_utf8": 1}
    arrow = sample(tmp_path, "d.arrow", b"ARROW1\x00\x00" + b"\x00" * 100, checks)
    assert arrow.binary == "an Arrow IPC file" and arrow.records == 0
    nul = sample(tmp_path, "e.txt", b"text\x00with a nul", checks)
    assert nul.binary == "binary data (1 NUL bytes among its first 15 bytes)"
    stray = sample(tmp_path, "e2.txt", "\n".join(korean * 10).encode() + b"\x00", checks)  # one NUL in 840 bytes
    assert stray.binary is None and stray.parsed == 30
    nfd = sample(tmp_path, "f.txt", "\n".join(["\u1100\u1161 조합형"] + ["완성형 댓글"] * 99).encode(), checks)
    assert nfd.nfd == 1 and preflight.check_file(nfd, checks) is None  # 1% is not above 1%
    nfd = sample(tmp_path, "g.txt", "\n".join(["\u1100\u1161 조합형"] * 2 + ["완성형 댓글"] * 98).encode(), checks)
    assert "--nfc" in preflight.check_file(nfd, checks)
    assert preflight.check_file(nfd, preflight.Checks(FIELDS, nfd_allowed=True)) is None
    keys = sample(tmp_path, "h.jsonl", b'{"document": "x", "label": 1}\n{"document": "y"}\n', checks)
    assert preflight.check_file(keys, checks) == (
        "h.jsonl: none of its first 2 JSON records has the field 'text' for --text-field; "
        "the keys found (records with each): document (2), label (1)")


def test_sampling_stops_after_the_first_records(tmp_path):
    lines = [json.dumps({"text": f"댓글 {i}"}) for i in range(5000)] + ['{"other": 1}'] * 5000
    found = sample(tmp_path, "big.jsonl", "\n".join(lines).encode(), preflight.Checks(FIELDS))
    assert found.records == preflight.SAMPLE_RECORDS and found.keys == {"text": preflight.SAMPLE_RECORDS}


def test_kept_fields_and_an_empty_input():
    text_only = preflight.FileSample("a.txt", "text", records=3, parsed=3)
    with pytest.raises(preflight.PreflightError, match="the input has no fields"):
        preflight.check_samples([text_only], preflight.Checks(reading.FieldSpec("text", "id", (("date", "str"),))))
    table = preflight.FileSample("b.tsv", "tsv", header=["id", "document", "label"], records=1, parsed=1)
    with pytest.raises(preflight.PreflightError) as raised:
        preflight.check_samples([text_only, table],
                                preflight.Checks(reading.FieldSpec("document", "id", (("lable", "int"),))))
    assert str(raised.value) == ("--keep-fields 'lable': no sampled record has this field (did you mean 'label'?); "
                                 "the fields found: document, id, label")
    with pytest.raises(preflight.PreflightError, match="the input holds no records: 2 file"):
        preflight.check_samples([preflight.FileSample("x.txt", "text")] * 2, preflight.Checks(FIELDS))


def test_unusable_run_message():
    assert preflight.unusable_run(0, {}) is None
    assert preflight.unusable_run(3, {"missing_text": 2, "too_short": 1}) is None
    assert preflight.unusable_run(3, {"missing_text": 2, "blank_line": 1}) == (
        "none of the 3 records read is a usable document (missing_text 2, blank_line 1)")
    assert set(drop_reasons.UNREADABLE) < set(drop_reasons.DROP_REASONS)


def test_tokenize_offers_the_formats_and_quotings_of_reading():
    """pipeline.tokenize names them itself (its --help imports no pyarrow): they must stay those of reading."""
    from pipeline import tokenize

    choices = {action.option_strings[0]: action.choices for action in tokenize.build_parser()._actions
               if action.option_strings and action.choices}
    assert tuple(choices["--format"]) == ("auto", *reading.FORMATS)
    assert tuple(choices["--quoting"]) == reading.QUOTINGS
