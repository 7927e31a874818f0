"""Readers: each fine-tuning task's file, as distributed, into examples and counts (no torch).

Every reader takes a path (local, gs:// or s3://; .xz, .gz, .bz2 and .zst read directly through
`transforms.storage.open_decompressed`) and returns a `Dataset`: the examples in file order, the
label names, and counts (`read`, `kept` and one count per drop reason), so nothing disappears
without a counter. A file that is not in the task's format (another header, a missing column, a
label outside the task's set, unequal word and tag counts) raises `TaskFormatError` naming the line,
what was expected, and the fix; `distill.evaluate` turns it into exit status 2.

The formats (docs/evaluate.md#formats):

- `nsmc`: NSMC's ratings TSV (`id document label`), or JSON lines with `text` and `rating` (1-4
  negative, 9-10 positive, others unlabelled) or `label`, as `../shared/data/nsmc_reviews.jsonl.xz`.
- `hate-speech`: TSV `title comment bias hate` (RFC 4180 quoting: titles are quoted), `hate` in
  none / offensive / hate.
- `kornli`: TSV `sentence1 sentence2 gold_label` (entailment / neutral / contradiction).
- `paws`: TSV `id sentence1 sentence2 label` (0/1); `question-pair`: TSV `question1 question2 is_duplicate`.
- `korsts`: TSV `genre filename year id score sentence1 sentence2`, score 0-5.
- `naver-ner`: no header; `words<TAB>tags` a line, space-separated, as many tags as words, tags
  `TYPE-B` / `TYPE-I` / `O` (KoELECTRA's files).
- `korquad`: SQuAD v1.1 JSON (`data[].paragraphs[].context`, `qas[].id/question/answers[]`).

The TSV files of KorNLI, KorSTS, PAWS-X and Question Pair are read as KoELECTRA's processors read
them: one record a line, fields split on tabs, quotes being ordinary characters (their sentences
hold unbalanced quotes). Rows with an empty sentence are dropped (`dropped_empty`) where KoELECTRA
drops them (PAWS, Question Pair).
"""
from __future__ import annotations

import csv
import io
import json
import lzma
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

READ_FAILURES = (EOFError, OSError, lzma.LZMAError, zlib.error)


class TaskFormatError(ValueError):
    """The file is not in the task's format; the message names the line, the expectation and the fix."""


@dataclass(frozen=True)
class TextExample:
    """A sentence (text) or a sentence pair (text, pair) with a class id or a score."""

    text: str
    label: int | float
    pair: str | None = None


@dataclass(frozen=True)
class TaggedExample:
    """A sentence as words, with one tag id per word."""

    words: tuple[str, ...]
    tags: tuple[int, ...]


@dataclass(frozen=True)
class QAExample:
    """A question on a context, with the gold answers as (text, character start)."""

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Dataset:
    examples: list
    labels: tuple[str, ...] | None  # class or tag names by id; None for regression and QA
    counts: dict[str, int] = field(default_factory=dict)


def read_text(path: str) -> str:
    """The whole file, decompressed and decoded (UTF-8, a BOM dropped)."""
    from transforms import storage  # pyarrow: imported when a file is read, not by --help

    path = str(path)
    if not storage.is_file(path):
        raise TaskFormatError(f"{path}: no such file")
    try:
        with storage.open_decompressed(path) as stream:
            data = stream.read()
    except READ_FAILURES as error:
        raise TaskFormatError(f"{path} cannot be read to its end (truncated or corrupt?): {error}") from error
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise TaskFormatError(f"{path} is not UTF-8 ({error}); convert it, e.g. iconv -f cp949 -t utf-8") from error


def lines_of(text: str) -> list[str]:
    """Lines without their ending (\\n or \\r\\n); a final empty line is not a line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ---------------------------------------------------------------- TSV tables with a header


def table_rows(path: str, what: str, columns: tuple[str, ...], quoting: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) of a TSV file whose header names `columns` (others may be
    present, in any order). `quoting`: RFC 4180 fields (csv module), else plain tab splits."""
    text = read_text(path)
    if quoting:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"', strict=False)
        records = ((reader.line_num, row) for row in reader)
    else:
        records = ((number, line.split("\t")) for number, line in enumerate(lines_of(text), 1))
    header_line, header = next(records, (1, None))
    expected = "<TAB>".join(columns)
    if header is None:
        raise TaskFormatError(f"{path}: empty file; {what} expects a TSV with the header {expected}")
    header = [name.strip() for name in header]
    missing = [name for name in columns if name not in header]
    if missing:
        shown = "<TAB>".join(header)[:200]
        raise TaskFormatError(f"{path}: line {header_line} is not the {what} header: expected {expected}, found "
                              f"{shown!r} (missing {', '.join(missing)}); give the {what} file as distributed, "
                              "or another --task")
    index = {name: header.index(name) for name in columns}
    for number, fields in records:
        if not fields or fields == [""]:
            continue
        if len(fields) < len(header):
            raise TaskFormatError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)} "
                                  f"({expected}); is it a TSV file of another task?")
        yield number, {name: fields[position] for name, position in index.items()}


def class_label(value: str, names: tuple[str, ...], path: str, number: int, column: str) -> int:
    value = value.strip()
    if value not in names:
        raise TaskFormatError(f"{path}: line {number}: {column} {value!r} is none of {', '.join(names)}")
    return names.index(value)


def read_pairs(path: str, what: str, first: str, second: str, label: str, names: tuple[str, ...],
               drop_empty: bool) -> Dataset:
    counts: Counter = Counter()
    examples = []
    for number, row in table_rows(path, what, (first, second, label)):
        counts["read"] += 1
        if drop_empty and (row[first] == "" or row[second] == ""):
            counts["dropped_empty"] += 1
            continue
        examples.append(TextExample(row[first], class_label(row[label], names, path, number, label), row[second]))
    counts["kept"] = len(examples)
    return Dataset(examples, names, dict(counts))


KORNLI_LABELS = ("contradiction", "entailment", "neutral")  # KoELECTRA's KorNLIProcessor order
BINARY_LABELS = ("0", "1")
HATE_LABELS = ("none", "offensive", "hate")


def read_kornli(path: str) -> Dataset:
    return read_pairs(path, "KorNLI", "sentence1", "sentence2", "gold_label", KORNLI_LABELS, drop_empty=False)


def read_paws(path: str) -> Dataset:
    return read_pairs(path, "PAWS-X", "sentence1", "sentence2", "label", BINARY_LABELS, drop_empty=True)


def read_question_pair(path: str) -> Dataset:
    return read_pairs(path, "Question Pair", "question1", "question2", "is_duplicate", BINARY_LABELS, drop_empty=True)


def read_korsts(path: str) -> Dataset:
    counts: Counter = Counter()
    examples = []
    columns = ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")
    for number, row in table_rows(path, "KorSTS", columns):
        counts["read"] += 1
        try:
            score = float(row["score"])
        except ValueError:
            score = math.nan
        if not 0.0 <= score <= 5.0:
            raise TaskFormatError(f"{path}: line {number}: score {row['score']!r} is not a number from 0 to 5")
        examples.append(TextExample(row["sentence1"], score, row["sentence2"]))
    counts["kept"] = len(examples)
    return Dataset(examples, None, dict(counts))


def read_hate_speech(path: str) -> Dataset:
    counts: Counter = Counter()
    examples = []
    for number, row in table_rows(path, "Korean Hate Speech", ("title", "comment", "bias", "hate"), quoting=True):
        counts["read"] += 1
        examples.append(TextExample(row["comment"], class_label(row["hate"], HATE_LABELS, path, number, "hate")))
    counts["kept"] = len(examples)
    return Dataset(examples, HATE_LABELS, dict(counts))


# ---------------------------------------------------------------- NSMC


def rating_label(rating) -> int | None:
    """NSMC: ratings 1-4 are negative (0), 9-10 positive (1), anything else has no label."""
    if isinstance(rating, bool) or not isinstance(rating, (int, float)):
        return None
    return 0 if 1 <= rating <= 4 else 1 if 9 <= rating <= 10 else None


def read_nsmc(path: str) -> Dataset:
    """NSMC's ratings TSV (header `id document label`) or JSON lines with text and rating/label; the
    texts as they are (KoELECTRA's NsmcProcessor keeps empty documents too)."""
    path = str(path)
    text = read_text(path)
    lines = lines_of(text)
    first = next((line for line in lines if line.strip()), "")
    counts: Counter = Counter()
    examples = []
    if first.lstrip().startswith("{"):
        for line in lines:
            if not line.strip():
                continue
            counts["read"] += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                counts["dropped_malformed"] += 1
                continue
            if "rating" in record:
                label = rating_label(record["rating"])
            else:
                label = record.get("label") if record.get("label") in (0, 1) else None
            if label is None:
                counts["dropped_unlabelled"] += 1
                continue
            examples.append(TextExample(record["text"], label))
    else:
        header = first.split("\t")
        if "document" not in header or "label" not in header:
            raise TaskFormatError(f"{path}: NSMC expects the ratings TSV with the header id<TAB>document<TAB>label "
                                  f"(ratings_train.txt, ratings_test.txt) or JSON lines with text and rating, found "
                                  f"{first[:200]!r}")
        for number, row in table_rows(path, "NSMC", ("document", "label")):
            counts["read"] += 1
            examples.append(TextExample(row["document"], class_label(row["label"], BINARY_LABELS, path, number, "label")))
    counts["kept"] = len(examples)
    if not examples:
        raise TaskFormatError(f"{path}: no labelled review ({dict(counts)})")
    return Dataset(examples, BINARY_LABELS, dict(counts))


# ---------------------------------------------------------------- Naver NER

# KoELECTRA's NaverNerProcessor label list (the tag set of the Naver NLP Challenge 2018 data).
NER_TYPES = ("PER", "FLD", "AFW", "ORG", "LOC", "CVL", "DAT", "TIM", "NUM", "EVT", "ANM", "PLT", "MAT", "TRM")
NER_LABELS = ("O", *(f"{kind}-{tag}" for kind in NER_TYPES for tag in ("B", "I")))


def read_naver_ner(path: str) -> Dataset:
    """One sentence a line: words<TAB>tags, space-separated, as many tags as words."""
    path = str(path)
    counts: Counter = Counter()
    examples = []
    for number, line in enumerate(lines_of(read_text(path)), 1):
        if not line.strip():
            continue
        counts["read"] += 1
        parts = line.split("\t")
        if len(parts) != 2:
            raise TaskFormatError(f"{path}: line {number} has {len(parts) - 1} tabs; Naver NER expects one sentence a "
                                  "line as words<TAB>tags (no header), e.g. '이순신 장군 .<TAB>PER-B CVL-B O'")
        words, tags = parts[0].split(), parts[1].split()
        if len(words) != len(tags):
            raise TaskFormatError(f"{path}: line {number} has {len(words)} words and {len(tags)} tags; each word "
                                  "needs exactly one tag")
        unknown = [tag for tag in tags if tag not in NER_LABELS]
        if unknown:
            hint = " (B/I go after the type, as PER-B, not B-PER)" if any(t[:2] in ("B-", "I-") for t in unknown) else ""
            raise TaskFormatError(f"{path}: line {number}: tag {unknown[0]!r} is not a Naver NER tag{hint}; the tags "
                                  f"are O and TYPE-B / TYPE-I for TYPE in {' '.join(NER_TYPES)}")
        if not words:
            counts["dropped_empty"] += 1
            continue
        examples.append(TaggedExample(tuple(words), tuple(NER_LABELS.index(tag) for tag in tags)))
    counts["kept"] = len(examples)
    return Dataset(examples, NER_LABELS, dict(counts))


# ---------------------------------------------------------------- KorQuAD


def read_korquad(path: str) -> Dataset:
    """SQuAD v1.1 JSON: every question of every paragraph, its answers as (text, start)."""
    path = str(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise TaskFormatError(f"{path} is not JSON ({error}); KorQuAD 1.0 files are SQuAD v1.1 JSON "
                              "(KorQuAD_v1.0_train.json, KorQuAD_v1.0_dev.json)") from error
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise TaskFormatError(f"{path}: expected SQuAD v1.1 JSON with a 'data' list of articles, found {keys}")
    counts: Counter = Counter()
    examples = []
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise TaskFormatError(f"{path}: data[{a}].paragraphs[{p}] has no context string")
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise TaskFormatError(f"{path}: {where} needs an id and a question")
                counts["read"] += 1
                answers = []
                for answer in qa.get("answers", []):
                    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) \
                            or not isinstance(answer.get("answer_start"), int):
                        raise TaskFormatError(f"{path}: {where}: an answer needs text and an integer answer_start")
                    answers.append((answer["text"], answer["answer_start"]))
                if not answers:
                    counts["dropped_unanswerable"] += 1  # SQuAD 2.0 style; v1.1 has none
                    continue
                examples.append(QAExample(str(qa["id"]), qa["question"], context, tuple(answers)))
    counts["kept"] = len(examples)
    if not examples:
        raise TaskFormatError(f"{path}: no answered question found ({dict(counts)})")
    return Dataset(examples, None, dict(counts))
