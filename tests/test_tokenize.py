"""pipeline.tokenize: transformers loading, round trips, reserved tokens, report, sampling, determinism, errors."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import socket
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, BertTokenizerFast

from pipeline import tokenize
from pipeline.cli import Progress
from pipeline.sample_corpus import sample_records
from tokenizer_training import wordpiece
from tokenizer_training.build import TokenizeOptions, build_tokenizer
from tokenizer_training.evaluate import evaluate
from tokenizer_training.sampling import StratifiedSelection, StratifyBy, document_uniforms
from transforms.clean import clean_text
from transforms.hashing import polynomial_hashes, utf8_buffers

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 900


def write_corpus(directory: Path, records: list[dict]) -> Path:
    """A contract-1 clean corpus directory: DIR/clean/part-00000-of-00001.parquet, rows sorted by id."""
    records = sorted(records, key=lambda record: record["id"])
    (directory / "clean").mkdir(parents=True)
    table = pa.table({name: [record[name] for record in records] for name in ("id", "text", "date")})
    pq.write_table(table, directory / "clean" / "part-00000-of-00001.parquet")
    stats = {"input_records": len(records), "output_records": len(records), "dropped": {}}
    (directory / "stats.json").write_text(json.dumps(stats))  # pipeline.run's mark of a finished run
    return directory


def run_cli(*argv: str) -> None:
    assert tokenize.main([*argv, "--quiet"]) == 0


def tokenizer_bytes(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in wordpiece.TOKENIZER_FILES}


def report_without_timings(directory: Path) -> dict:
    report = json.loads((directory / "tokenizer_report.json").read_text(encoding="utf-8"))
    del report["seconds"]
    return report


@pytest.fixture(scope="module")
def records() -> list[dict]:
    cleaned = [{**record, "text": clean_text(record["text"])} for record in sample_records()]
    return [record for record in cleaned if record["text"]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, records) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), records)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> Path:
    """Cased, 3 [unused] tokens, 5% held out."""
    output = tmp_path_factory.mktemp("trained") / "tokenizer"
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--unused-tokens", "3",
            "--eval-fraction", "0.05")
    return output


# ---------------------------------------------------------------- the tokenizer directory


def test_transformers_loads_it_with_the_same_ids(trained, records):
    texts = [record["text"] for record in records]
    tokenizer = Tokenizer.from_file(str(trained / "tokenizer.json"))
    expected = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
    for loaded in (AutoTokenizer.from_pretrained(str(trained)), BertTokenizerFast.from_pretrained(str(trained))):
        assert loaded(texts)["input_ids"] == expected
        assert loaded.convert_tokens_to_ids(list(wordpiece.BERT_SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
        assert (loaded.pad_token, loaded.unk_token, loaded.cls_token, loaded.sep_token, loaded.mask_token) == \
            wordpiece.BERT_SPECIAL_TOKENS
        assert len(loaded) == VOCAB
    assert all(ids[0] == 2 and ids[-1] == 3 for ids in expected)
    vocab_lines = (trained / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab_lines[-1] == "" and vocab_lines[:-1] == [tokenizer.id_to_token(i) for i in range(VOCAB)]
    config = json.loads((trained / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["strip_accents"] is False
    assert config["do_lower_case"] is False and config["model_max_length"] == 512


def test_korean_round_trip(trained, records):
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    for sentence in ["대통령은 진짜 너무하네요!! ㅋㅋ", "이 영화 최고였어요, 감동 받았어요"]:
        assert tokenizer.decode(tokenizer(sentence)["input_ids"], skip_special_tokens=True) == sentence
    unk = tokenizer.unk_token_id
    checked = 0
    for text in (record["text"] for record in records):
        ids = tokenizer(text)["input_ids"]
        if unk in ids:
            continue
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == text.replace(" ", ""), text  # WordPiece keeps every character
        checked += 1
    assert checked > 0.9 * len(records)


def test_reserved_unused_tokens_are_plain_vocabulary_entries(trained):
    tokenizer = Tokenizer.from_file(str(trained / "tokenizer.json"))
    assert [tokenizer.id_to_token(i) for i in range(8)] == [*wordpiece.BERT_SPECIAL_TOKENS, "[unused0]", "[unused1]",
                                                           "[unused2]"]
    added = json.loads((trained / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [token["content"] for token in added] == list(wordpiece.BERT_SPECIAL_TOKENS)
    # Only the BERT special tokens are matched in raw text; "[unused1]" is ordinary text.
    encoding = tokenizer.encode("[unused1] [MASK]", add_special_tokens=False)
    assert tokenizer.token_to_id("[unused1]") not in encoding.ids and encoding.tokens[-1] == "[MASK]"
    assert len(encoding.ids) > 2
    assert AutoTokenizer.from_pretrained(str(trained)).convert_tokens_to_ids("[unused2]") == 7


def test_every_character_has_its_continuation_form(trained):
    vocab = Tokenizer.from_file(str(trained / "tokenizer.json")).get_vocab()
    hangul = [token for token in vocab if len(token) == 1 and "가" <= token <= "힣"]
    assert len(hangul) > 100
    assert all("##" + char in vocab for char in hangul)


def test_report_values(trained, records):
    report = json.loads((trained / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["vocab_size"] == report["vocab_size_requested"] == VOCAB
    assert report["special_tokens"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert report["documents"]["usable"] == len(records)
    assert report["sampled_documents"] + report["eval_documents"] == len(records)
    expected, spread = 0.05 * len(records), 4 * (0.05 * 0.95 * len(records)) ** 0.5
    assert abs(report["eval_documents"] - expected) < spread
    evaluation = report["evaluation"]
    assert evaluation["documents"] == report["eval_documents"]
    assert 0 <= evaluation["unk_rate"] < 0.01
    assert 1.0 < evaluation["fertility"] < 3.0
    assert 0.3 < evaluation["whole_word_share"] < 1.0
    assert report["alphabet"]["characters"] > 200 and report["alphabet"]["dropped_by_limit"] == 0
    assert report["seconds"]["training"] > 0 and report["options"]["unused_tokens"] == 3


def test_held_out_documents_are_exactly_those_the_hash_sets_aside(trained, records):
    texts = [record["text"] for record in records]
    held_out = document_uniforms(pa.array(texts, pa.large_string()), 0)[:, 0] < 0.05
    report = json.loads((trained / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["eval_documents"] == held_out.sum()
    held_out_texts = {text for text, out in zip(texts, held_out) if out}
    training_texts = {text for text, out in zip(texts, held_out) if not out}
    assert held_out_texts and not held_out_texts & training_texts  # duplicates never straddle the split


def test_evaluate_counts_by_hand():
    tokenizer = wordpiece.bert_tokenizer(lowercase=False)
    tokens = [*wordpiece.BERT_SPECIAL_TOKENS, "영화", "##는", "좋", "##다", "!"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
    result = evaluate(tokenizer, ["영화는 좋다!", "영화 별로"])
    # words: 영화는 (영화 ##는), 좋다! (좋 ##다 !), 영화 (영화), 별로 ([UNK])
    assert result["documents"] == 2 and result["words"] == 4 and result["tokens"] == 7
    assert result["unk_tokens"] == 1 and result["unk_words"] == 1 and result["whole_words"] == 1
    assert result["unk_rate"] == round(1 / 7, 6) and result["fertility"] == 1.75 and result["whole_word_share"] == 0.25


# ---------------------------------------------------------------- determinism and options


def test_entry_point_is_byte_identical_with_one_thread(trained, corpus, tmp_path):
    """`python -m pipeline.tokenize` in a fresh process with one thread writes the same files."""
    output = tmp_path / "again"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tokenize", "--input", str(corpus / "clean" / "*.parquet"), "--output",
         str(output), "--vocab-size", str(VOCAB), "--unused-tokens", "3", "--eval-fraction", "0.05"],
        cwd=ROOT, env={**os.environ, "RAYON_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "survey:" in result.stderr and "computing WordPiece merges" in result.stderr
    assert str(output) in result.stdout and "kept whole" in result.stdout
    assert tokenizer_bytes(output) == tokenizer_bytes(trained)
    first, second = report_without_timings(trained), report_without_timings(output)
    assert first["options"].pop("inputs") != second["options"].pop("inputs")
    assert first == second


def test_lowercase_keeps_hangul_syllables_and_accents(corpus, tmp_path):
    output = tmp_path / "lower"
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--lowercase")
    tokenizer = Tokenizer.from_file(str(output / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    assert not any("\u1100" <= char <= "\u11ff" for token in vocab for char in token)  # no NFD jamo
    assert sum(len(token) == 1 and "가" <= token <= "힣" for token in vocab) > 100
    loaded = AutoTokenizer.from_pretrained(str(output))
    for normalizer in (tokenizer.normalizer, loaded.backend_tokenizer.normalizer):
        assert normalizer.normalize_str("Café 대통령 OMG") == "café 대통령 omg"  # accent and syllables kept
    encoding = tokenizer.encode("대통령 OMG", add_special_tokens=False)
    assert "[UNK]" not in encoding.tokens and tokenizer.decode(encoding.ids) == "대통령 omg"
    assert loaded("대통령 OMG")["input_ids"] == tokenizer.encode("대통령 OMG").ids
    decoded = loaded.decode(loaded("정말 최고")["input_ids"], skip_special_tokens=True)
    assert decoded == "정말 최고" and unicodedata.is_normalized("NFC", decoded)
    config = json.loads((output / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["do_lower_case"] is True and config["strip_accents"] is False


def test_limit_alphabet_keeps_the_most_frequent_characters(corpus, tmp_path, records):
    output = tmp_path / "limited"
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--limit-alphabet", "100")
    report = json.loads((output / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["alphabet"]["characters"] == 100 and report["alphabet"]["dropped_by_limit"] > 0
    vocab = Tokenizer.from_file(str(output / "tokenizer.json")).get_vocab()
    counts = Counter("".join(record["text"] for record in records).replace(" ", ""))
    ranked = sorted(counts, key=lambda char: (-counts[char], char))
    assert len(ranked) > 200 and all(char in vocab for char in ranked[:50])
    assert not any(char in vocab or "##" + char in vocab for char in ranked[150:])


def test_input_formats_give_the_same_vocabulary(corpus, records, tmp_path):
    """Sampling hashes the text and training counts words, so the file format cannot change the result."""
    texts = [record["text"] for record in records]
    lines = [json.dumps({"id": record["id"], "text": record["text"]}, ensure_ascii=False) for record in records]
    jsonl = "\n".join(lines[:1500] + ["{not json", json.dumps({"id": "x"})] + lines[1500:]) + "\n"
    (tmp_path / "a").mkdir()
    with gzip.open(tmp_path / "a" / "part1.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(jsonl)
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "b" / "deep" / "texts.txt.zst").write_bytes(
        zstandard.ZstdCompressor().compress(("\n".join(texts[:2000]) + "\n\n").encode("utf-8")))
    (tmp_path / "b" / "more.txt.xz").write_bytes(lzma.compress(("\n".join(texts[2000:3000]) + "\n").encode()))
    (tmp_path / "b" / "rest.txt.bz2").write_bytes(bz2.compress(("\n".join(texts[3000:]) + "\n").encode()))
    reference = tmp_path / "from_parquet"
    run_cli("--input", str(corpus), "--output", str(reference), "--vocab-size", str(VOCAB))
    for name, inputs in {"jsonl": [str(tmp_path / "a" / "*.jsonl.gz")],
                         "text": [str(tmp_path / "b" / "**" / "*.zst"), str(tmp_path / "b" / "*.txt.*")]}.items():
        run_cli("--input", *inputs, "--output", str(tmp_path / name), "--vocab-size", str(VOCAB))
        assert (tmp_path / name / "vocab.txt").read_bytes() == (reference / "vocab.txt").read_bytes(), name
    report = json.loads((tmp_path / "jsonl" / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["documents"]["dropped"] == {"malformed_json": 1, "missing_text": 1}
    text_report = json.loads((tmp_path / "text" / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert text_report["documents"]["dropped"] == {"blank_line": 1} and len(text_report["inputs"]) == 3


def test_stratified_run_samples_exact_stratum_shares(records, tmp_path):
    strata = {"2019-01": 1200, "2019-02": 600, "2019-03": 45, "2019-04": 7}
    synthetic, index = [], 0
    for month, count in strata.items():
        for day in range(count):
            record = records[index % len(records)]
            synthetic.append({"id": f"s{index:06d}", "date": f"{month}-{day % 28 + 1:02d}",
                              "text": f"{record['text']} {index}"})
            index += 1
    corpus = write_corpus(tmp_path / "corpus", synthetic)
    output = tmp_path / "stratified"
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--sample-fraction", "0.1",
            "--stratify-by", "date:month", "--eval-fraction", "0")
    report = json.loads((output / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["sampling"]["strata"] == [
        {"stratum": month, "documents": count, "sampled": int(0.1 * count + 0.5)} for month, count in strata.items()]
    assert report["sampled_documents"] == 120 + 60 + 5 + 1


def test_stratified_selection_is_exact_and_seeded():
    keys = ["a"] * 1000 + ["b"] * 300 + ["c"] * 13
    order = np.random.default_rng(0).permutation(len(keys))
    keys = [keys[i] for i in order]
    texts = pa.array([f"document {i}" for i in range(len(keys))], pa.large_string())
    kept = {}
    for seed in (0, 1):
        selection = StratifiedSelection(Counter(keys), 0.1)
        draws = document_uniforms(texts, seed)[:, 1]
        mask = np.concatenate([selection.keep(draws[i:i + 100], keys[i:i + 100]) for i in range(0, len(keys), 100)])
        assert Counter(key for key, keep in zip(keys, mask) if keep) == {"a": 100, "b": 30, "c": 1}
        kept[seed] = mask
    assert (kept[0] != kept[1]).any()


def test_bernoulli_sample_keeps_stratum_shares_within_binomial_noise():
    sizes = {"2019-01": 20000, "2019-02": 8000, "2019-03": 2000}
    texts = pa.array([f"{month} comment number {i}" for month, size in sizes.items() for i in range(size)],
                     pa.large_string())
    draws = document_uniforms(texts, seed=7)
    keep = draws[:, 1] < 0.1
    start = 0
    for size in sizes.values():
        share = keep[start:start + size].mean()
        assert abs(share - 0.1) < 4 * (0.1 * 0.9 / size) ** 0.5
        start += size
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.03


def test_stratify_spec():
    assert StratifyBy.parse("date:month").key("2019-03-28") == "2019-03"
    assert StratifyBy.parse("date:day").key("2019-03-28T10:00:00") == "2019-03-28"
    assert StratifyBy.parse("date:year").key("not a date") is None
    assert StratifyBy.parse("source").key(None) is None and StratifyBy.parse("rating").key(7) == "7"


def test_hashes_are_pure_functions_of_the_text():
    rng = np.random.default_rng(3)
    texts = ["".join(rng.choice(list("가나다라 abc😂"), size=int(n))) for n in rng.integers(0, 400, size=300)]
    texts.append("긴 문서 " * 2000)
    array = pa.array(texts, pa.large_string())
    offsets, data = utf8_buffers(array)
    multiplier = 0x9E3779B97F4A7C15
    reference = [sum((byte + 1) * pow(multiplier, j, 1 << 64) for j, byte in enumerate(text.encode())) % (1 << 64)
                 for text in texts]
    for block in (61, 4096, 1 << 18):  # blocks cut texts anywhere; the long text spans many
        assert polynomial_hashes(offsets, data, multiplier, block).tolist() == reference
    together = document_uniforms(array, 11)
    alone = np.vstack([document_uniforms(pa.array([text], pa.large_string()), 11) for text in texts[::37]])
    assert (together[::37] == alone).all() and (document_uniforms(array.slice(3, 50), 11) == together[3:53]).all()
    assert (document_uniforms(array, 12) != together).all(axis=1).mean() > 0.99


def test_default_seed_draws_depend_on_the_byte_order():
    """Seed 0 once gave multiplier 1: the draws were a function of byte sum and length alone."""
    anagrams = pa.array(["좋아요 정말", "정말 좋아요", "ab", "ba"], pa.large_string())
    draws = document_uniforms(anagrams, 0)
    assert draws[0, 0] != draws[1, 0] and draws[2, 0] != draws[3, 0]
    numbers = pa.array([f"review {i}" for i in range(20000)], pa.large_string())
    assert len(np.unique(document_uniforms(numbers, 0)[:, 0])) == 20000


def test_alphabet_follows_the_tokenizer_rules():
    counts = np.zeros(wordpiece.CODE_POINTS, dtype=np.int64)
    sample = "가가가 나! A é 中 \t\x00"
    wordpiece.count_characters(np.frombuffer(sample.encode("utf-8"), dtype=np.uint8), counts)
    assert {chr(code): int(counts[code]) for code in np.flatnonzero(counts)} == Counter(sample)
    cased = wordpiece.build_alphabet(counts, wordpiece.bert_tokenizer(lowercase=False), limit=None)
    assert cased.characters == ("!", "A", "é", "中", "가", "나")
    assert cased.continuations == ("A", "é", "가", "나")  # punctuation and CJK never continue a word
    lowered = wordpiece.build_alphabet(counts, wordpiece.bert_tokenizer(lowercase=True), limit=2)
    assert lowered.characters == ("!", "가") and lowered.dropped == 4  # ties broken by code point


def test_progress_lines(corpus, tmp_path):
    import io

    stream = io.StringIO()
    build_tokenizer(TokenizeOptions(inputs=(str(corpus),), output=str(tmp_path / "out"), vocab_size=VOCAB),
                    Progress("pipeline.tokenize", stream=stream, every=0.0))
    lines = stream.getvalue().splitlines()
    assert any("survey: " in line and "documents read" in line for line in lines)
    assert any("training: " in line and "sampled" in line for line in lines)
    assert lines[-1].endswith(f"wrote {tmp_path / 'out'}")


# ---------------------------------------------------------------- errors


def expect_usage_error(capsys, *argv: str) -> str:
    """Exit status 2 and one `python -m pipeline.tokenize: error: ...` line (argparse adds its usage first)."""
    try:
        status = tokenize.main([*argv, "--quiet"])
    except SystemExit as exited:  # argparse's own checks (types, ranges)
        status = exited.code
    assert status == 2
    error = capsys.readouterr().err
    assert "python -m pipeline.tokenize: error: " in error and "Traceback" not in error
    return error


def test_clear_errors(capsys, corpus, tmp_path):
    out = str(tmp_path / "out")
    assert "matches no file" in expect_usage_error(capsys, "--input", str(tmp_path / "*.parquet"), "--output", out)
    assert "no such file or directory" in expect_usage_error(capsys, "--input", str(tmp_path / "nope"), "--output", out)
    (tmp_path / "emptydir").mkdir()
    assert "Parquet shards" in expect_usage_error(capsys, "--input", str(tmp_path / "emptydir"), "--output", out)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in expect_usage_error(capsys, "--input", str(tmp_path / "broken.parquet"),
                                                               "--output", out)
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    assert "input is empty" in expect_usage_error(capsys, "--input", str(tmp_path / "empty.parquet"), "--output", out)
    (tmp_path / "blank.txt").write_text("\n  \n\n", encoding="utf-8")
    assert "no usable document" in expect_usage_error(capsys, "--input", str(tmp_path / "blank.txt"), "--output", out)
    error = expect_usage_error(capsys, "--input", str(corpus), "--output", out, "--vocab-size", "300")
    assert "--vocab-size 300 is too small" in error and "--limit-alphabet" in error
    assert "leaves no room" in expect_usage_error(capsys, "--input", str(corpus), "--output", out, "--vocab-size",
                                                  "10", "--unused-tokens", "5")
    assert "-1 is not in [0, 18446744073709551615]" in expect_usage_error(capsys, "--input", str(corpus), "--output", out, "--seed", "-1")
    assert "not in (0, 1]" in expect_usage_error(capsys, "--input", str(corpus), "--output", out,
                                                 "--sample-fraction", "0")
    assert "FIELD:month" in expect_usage_error(capsys, "--input", str(corpus), "--output", out,
                                               "--stratify-by", "date:week")
    assert "no column 'when'" in expect_usage_error(capsys, "--input", str(corpus), "--output", out,
                                                    "--stratify-by", "when")
    assert "no fields" in expect_usage_error(capsys, "--input", str(tmp_path / "blank.txt"), "--output", out,
                                             "--stratify-by", "date")
    (tmp_path / "undated.jsonl").write_text(json.dumps({"text": "날짜 없는 댓글입니다", "date": None}) + "\n")
    assert "no document has a usable 'date' value" in expect_usage_error(
        capsys, "--input", str(tmp_path / "undated.jsonl"), "--output", out, "--stratify-by", "date:day")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(corpus, unfinished)
    (unfinished / "stats.json").unlink()
    assert "unfinished pipeline.run output" in expect_usage_error(capsys, "--input", str(unfinished), "--output", out)
    assert not Path(out).exists()
    Path(out).mkdir()
    (Path(out) / "vocab.txt").write_text("x")
    assert "--overwrite" in expect_usage_error(capsys, "--input", str(corpus), "--output", out)
    assert "did you mean --vocab-size" in expect_usage_error(capsys, "--input", str(corpus), "--output", out,
                                                              "--vocab_size", "900")


def test_error_from_a_fresh_process_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.tokenize", "--input", str(tmp_path / "missing"),
                             "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error: --input" in result.stderr and "Traceback" not in result.stderr


def test_overwrite_replaces_only_the_tokenizer_files(corpus, trained, tmp_path):
    output = tmp_path / "replace"
    output.mkdir()
    (output / "notes.txt").write_text("the user's own file")
    (output / "vocab.txt").write_text("[PAD]\n")  # an earlier tokenizer's file: replaced
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--unused-tokens", "3",
            "--eval-fraction", "0.05", "--overwrite")
    expected = sorted([*wordpiece.TOKENIZER_FILES, "tokenizer_report.json", "notes.txt"])
    assert sorted(path.name for path in output.iterdir()) == expected
    assert (output / "notes.txt").read_text() == "the user's own file"
    assert tokenizer_bytes(output) == tokenizer_bytes(trained)
    assert [path.name for path in tmp_path.iterdir()] == ["replace"]  # no temporary directory left behind


def test_writing_into_a_directory_with_other_files_keeps_them(corpus, trained, tmp_path):
    output = tmp_path / "shared"
    output.mkdir()
    (output / "README.md").write_text("mine")
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB), "--unused-tokens", "3",
            "--eval-fraction", "0.05")
    assert (output / "README.md").read_text() == "mine"
    assert tokenizer_bytes(output) == tokenizer_bytes(trained)


def test_limit_trains_on_the_first_documents_only(corpus, records, tmp_path):
    run_cli("--input", str(corpus), "--output", str(tmp_path / "limited"), "--vocab-size", str(VOCAB),
            "--eval-fraction", "0", "--limit", "50")
    report = json.loads((tmp_path / "limited" / "tokenizer_report.json").read_text(encoding="utf-8"))
    assert report["documents"]["usable"] == 50 and report["sampled_documents"] == 50
    assert report["options"]["limit"] == 50


def test_json_summary_is_the_report(corpus, tmp_path, capsys):
    assert tokenize.main(["--input", str(corpus), "--output", str(tmp_path / "out"), "--vocab-size", str(VOCAB),
                          "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "tokenizer_report.json").read_text(encoding="utf-8"))


def test_a_held_lock_refuses_a_second_run(corpus, tmp_path, capsys):
    from pipeline.cli import LOCK_FILE

    output = tmp_path / "locked"
    output.mkdir()
    (output / LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")  # this very process holds it
    error = expect_usage_error(capsys, "--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB))
    assert "being written by another run" in error
    assert sorted(path.name for path in output.iterdir()) == [LOCK_FILE]
    (output / LOCK_FILE).write_text("somehost-that-is-gone 1\n".replace("somehost-that-is-gone", socket.gethostname())
                                    .replace(" 1\n", " 999999999\n"))  # a dead pid on this host: a stale lock
    run_cli("--input", str(corpus), "--output", str(output), "--vocab-size", str(VOCAB))
    assert not (output / LOCK_FILE).exists() and (output / "vocab.txt").exists()
