"""pipeline.shard, its stages (transforms.shard_stages) and transforms.packing: packing rules, the stage
functions on hand-made input, round trips, counts, determinism, the command line, refusals."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizerFast

from pipeline import beam_shard, shard
from pipeline.cli import LOCK_FILE
from pipeline.sample_corpus import sample_records
from transforms import shard_stages as stages
from transforms import token_shards as ts
from transforms.clean import clean_text
from transforms.hashing import text_hashes
from transforms.packing import bucket_count, is_validation, pack_concat, pack_none, shard_buckets, take_documents
from transforms.special_tokens import BERT_SPECIAL_TOKENS, SPECIAL_TOKEN_ROLES, special_token_names

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = list(BERT_SPECIAL_TOKENS)
PAD, CLS, SEP = 0, 2, 3
SPECIAL_IDS = {"pad": PAD, "unk": 1, "cls": CLS, "sep": SEP, "mask": 4}
SEQ_LEN = 32
SHARD_TOKENS = 12_000
FRACTION = 0.1


# ---------------------------------------------------------------- packing, pure


def test_pack_concat_layout():
    tokens = np.arange(11, 31, dtype=np.uint32)
    lengths = np.array([3, 0, 5, 12, 0])
    rows, n_split = pack_concat(tokens, lengths, 8, CLS, SEP, PAD)
    np.testing.assert_array_equal(rows, [
        [2, 11, 12, 13, 3, 0, 0, 0],  # the 5-id document does not fit in the 3 slots left: next row
        [2, 14, 15, 16, 17, 18, 3, 0],  # one slot left, no room for an id and its [SEP]
        [2, 19, 20, 21, 22, 23, 24, 3],  # the 12-id document is longer than a row: split
        [2, 25, 26, 27, 28, 29, 30, 3],
    ])
    assert n_split == 1


def test_pack_concat_long_document_fills_the_current_row_first():
    tokens = np.arange(10, 25, dtype=np.uint32)
    rows, n_split = pack_concat(tokens, np.array([2, 10, 3]), 8, CLS, SEP, PAD)
    np.testing.assert_array_equal(rows, [
        [2, 10, 11, 3, 12, 13, 14, 3],
        [2, 15, 16, 17, 18, 19, 20, 3],
        [2, 21, 3, 22, 23, 24, 3, 0],
    ])
    assert n_split == 1


def test_pack_none_layout():
    tokens = np.arange(11, 31, dtype=np.uint32)
    rows, n_split = pack_none(tokens, np.array([3, 0, 5, 12]), 8, CLS, SEP, PAD)
    np.testing.assert_array_equal(rows, [
        [2, 11, 12, 13, 3, 0, 0, 0],
        [2, 14, 15, 16, 17, 18, 3, 0],
        [2, 19, 20, 21, 22, 23, 24, 3],
        [2, 25, 26, 27, 28, 29, 30, 3],
    ])
    assert n_split == 1


def test_packers_reject_bad_arguments():
    with pytest.raises(ValueError, match="seq_len must be at least 3"):
        pack_concat(np.zeros(1, np.uint32), np.array([1]), 2, CLS, SEP, PAD)
    with pytest.raises(ValueError, match="do not describe"):
        pack_none(np.zeros(3, np.uint32), np.array([1, 1]), 8, CLS, SEP, PAD)


def _segments(rows: np.ndarray) -> list[list[int]]:
    """Every row's content split at [SEP]; checks [CLS] first, [SEP] last and only [PAD] after."""
    out = []
    for row in rows.tolist():
        assert row[0] == CLS
        end = max(i for i, t in enumerate(row) if t != PAD)
        assert row[end] == SEP and all(t == PAD for t in row[end + 1:])
        piece: list[int] = []
        for token in row[1:end + 1]:
            if token == SEP:
                assert piece, "empty segment"
                out.append(piece)
                piece = []
            else:
                piece.append(token)
    return out


def _regroup(segments: list[list[int]], lengths: list[int]) -> tuple[list[list[int]], int]:
    """Join consecutive segments back into documents of the given lengths; return (documents, split count)."""
    docs, n_split, position = [], 0, 0
    for length in lengths:
        ids: list[int] = []
        pieces = 0
        while len(ids) < length:
            ids += segments[position]
            position += 1
            pieces += 1
        assert len(ids) == length, "a document boundary fell inside a segment"
        docs.append(ids)
        n_split += pieces > 1
    assert position == len(segments)
    return docs, n_split


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=40),
    st.integers(3, 24),
    st.sampled_from(["concat", "none"]),
)
def test_packing_keeps_every_id_in_order(lengths, seq_len, packing):
    lengths = np.array(lengths, dtype=np.int64)
    tokens = np.arange(5, 5 + int(lengths.sum()), dtype=np.uint32)
    packer = pack_concat if packing == "concat" else pack_none
    rows, n_split = packer(tokens, lengths, seq_len, CLS, SEP, PAD)
    assert rows.shape[1] == seq_len and rows.dtype == np.uint32
    segments = _segments(rows) if len(rows) else []
    docs, regrouped_splits = _regroup(segments, [int(n) for n in lengths if n])
    assert sum(docs, []) == tokens.tolist()
    # Exactly the documents longer than a row ([CLS] and [SEP] aside) are split, in both modes.
    assert n_split == regrouped_splits == int(np.count_nonzero(lengths > seq_len - 2))
    if packing == "none":
        assert len(rows) == sum(-(-int(n) // (seq_len - 2)) for n in lengths)


def pack_concat_one_document_at_a_time(tokens, lengths, seq_len, cls, sep, pad):
    """The greedy `concat` layout written out one document at a time, with plain lists."""
    capacity, rows, row, n_split, source = seq_len - 1, [], None, 0, 0

    def new_row():
        rows.append([cls])
        return rows[-1]

    for length in (int(n) for n in lengths):
        doc = tokens[source:source + length].tolist()
        source += length
        if not doc:
            continue
        if length + 1 > capacity:
            n_split += 1
        elif row is None or length + 1 > seq_len - len(row):
            row = new_row()
        while doc:
            if row is None or seq_len - len(row) < 2:  # no room for one id and its [SEP]
                row = new_row()
            take = min(seq_len - len(row) - 1, len(doc))
            row += doc[:take] + [sep]
            doc = doc[take:]
    padded = [r + [pad] * (seq_len - len(r)) for r in rows]
    return np.array(padded, dtype=tokens.dtype).reshape(len(padded), seq_len), n_split


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=60), st.integers(3, 24))
def test_pack_concat_equals_the_one_document_at_a_time_layout(lengths, seq_len):
    lengths = np.array(lengths, dtype=np.int64)
    tokens = np.arange(5, 5 + int(lengths.sum()), dtype=np.uint16)
    rows, n_split = pack_concat(tokens, lengths, seq_len, CLS, SEP, PAD)
    expected, expected_split = pack_concat_one_document_at_a_time(tokens, lengths, seq_len, CLS, SEP, PAD)
    assert rows.dtype == np.uint16 and n_split == expected_split
    np.testing.assert_array_equal(rows, expected)


def test_take_documents_reorders_variable_length_documents():
    tokens = np.array([1, 2, 3, 4, 5, 6], dtype=np.uint32)
    taken, lengths = take_documents(tokens, np.array([2, 0, 3, 1]), np.array([3, 0, 2]))
    assert taken.tolist() == [6, 1, 2, 3, 4, 5] and lengths.tolist() == [1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=25), st.data())
def test_take_documents_equals_slicing_each_document(lengths, data):
    order = data.draw(st.lists(st.integers(0, len(lengths) - 1), max_size=30)) if lengths else []
    tokens = np.arange(sum(lengths), dtype=np.uint16)
    starts = np.cumsum([0] + lengths)
    taken, taken_lengths = take_documents(tokens, np.array(lengths, dtype=np.int64), np.array(order, dtype=np.int64))
    assert taken.dtype == np.uint16 and taken_lengths.tolist() == [lengths[i] for i in order]
    assert taken.tolist() == [int(t) for i in order for t in tokens[starts[i]:starts[i + 1]]]


def test_duplicate_ids_get_one_order_whatever_the_arrival():
    def batch(order):
        ids, docs = ["b", "a", "a"], [[7], [8, 9], [5, 5]]
        return stages.DocBatch(
            pa.array([ids[i] for i in order]), np.array(order, dtype=np.uint64),
            np.array(sum((docs[i] for i in order), []), dtype=np.uint32), np.array([len(docs[i]) for i in order]),
        ).sorted_by_id()

    first, second = batch([0, 1, 2]), batch([2, 0, 1])
    assert first.ids.to_pylist() == second.ids.to_pylist() == ["a", "a", "b"]
    assert first.tokens.tolist() == second.tokens.tolist() == [5, 5, 8, 9, 7]
    assert first.lengths.tolist() == [2, 2, 1] and first.bucket_hashes.tolist() == second.bucket_hashes.tolist() == [2, 1, 0]


def test_split_and_bucket_hashes_are_stable():
    hashes = text_hashes(["a", "b", "c"], seed=0)
    assert hashes.dtype == np.uint64 and hashes.shape == (3, 2)
    np.testing.assert_array_equal(hashes, text_hashes(["a", "b", "c"], seed=0))
    assert not np.array_equal(hashes, text_hashes(["a", "b", "c"], seed=1))
    many = text_hashes([f"doc{i}" for i in range(20000)], seed=0)
    assert 0.08 < is_validation(many[:, 0], 0.1).mean() < 0.12
    assert not is_validation(many[:, 0], 0.0).any()
    assert np.bincount(shard_buckets(many[:, 1], 4), minlength=4).min() > 4500
    assert bucket_count(10, 1000) == 1 and bucket_count(3600, 1000) == 4


# ---------------------------------------------------------------- fixtures for the pipeline


def _save_tokenizer(tokenizer: Tokenizer, path: Path) -> Path:
    """The koforge-tokenizer/1 layout: tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json."""
    BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=False,
    ).save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    roles = {f"{role}_token": token for role, token in zip(SPECIAL_TOKEN_ROLES, SPECIALS)}
    (path / "special_tokens_map.json").write_text(json.dumps(roles), encoding="utf-8")
    return path


def _bert_pieces(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _write_corpus(root: Path, ids: list[str], texts: list[str]) -> Path:
    """A clean-corpus directory (koforge-clean-corpus/1): two Parquet parts, rows sorted by id, extra columns carried.

    The parts interleave (even and odd positions in id order), so reading them one after the
    other is not id order: only the pipeline's own sort can give the documented order.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    (root / "clean").mkdir(parents=True)
    for part, chosen in enumerate((order[0::2], order[1::2])):
        pq.write_table(
            pa.table({
                "id": [ids[i] for i in chosen],
                "text": [texts[i] for i in chosen],
                "rating": pa.array([i % 10 for i in chosen], pa.int64()),
            }),
            root / "clean" / f"part-{part:05d}-of-00002.parquet",
        )
    (root / "stats.json").write_text(json.dumps({"input_records": len(ids), "output_records": len(ids),
                                                 "dropped": {}}))  # pipeline.run's mark of a finished run
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The sample records, cleaned, exact duplicates dropped, plus empty, bracketed and very long documents."""
    root = tmp_path_factory.mktemp("shard")
    seen, ids, texts = set(), [], []
    for record in sample_records(0):
        text = clean_text(record["text"])
        if text and text not in seen:
            seen.add(text)
            ids.append(record["id"])
            texts.append(text)
    long_text = " ".join(texts[:15])
    ids += ["z-empty", "z-blank", "z-long", "z-brackets"]
    texts += ["", "   ", long_text, "좋아요 [SEP] 진짜 [CLS] 최고"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    _bert_pieces(tokenizer).train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1500, special_tokens=SPECIALS))
    return {
        "root": root,
        "ids": ids,
        "texts": texts,
        "corpus": _write_corpus(root / "corpus", ids, texts),
        "tokenizer": _save_tokenizer(tokenizer, root / "tokenizer"),
    }


def shard_args(corpus: dict, output: Path, *extra: str, tokenizer: Path | None = None,
               input_dir: Path | None = None) -> list[str]:
    return ["--input", str(input_dir or corpus["corpus"]), "--tokenizer", str(tokenizer or corpus["tokenizer"]),
            "--output", str(output), "--seq-len", str(SEQ_LEN), "--shard-tokens", str(SHARD_TOKENS),
            "--validation-fraction", str(FRACTION), "--quiet", *extra]


def exit_status(argv: list[str]) -> int:
    """pipeline.shard's exit status in this process: main's return value, or argparse's SystemExit code."""
    try:
        return shard.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def run_shard(corpus: dict, output: Path, *extra: str, tokenizer: Path | None = None, input_dir: Path | None = None) -> dict:
    """pipeline.shard in this process (default runner: in memory); return the verified manifest."""
    assert shard.main(shard_args(corpus, output, *extra, tokenizer=tokenizer, input_dir=input_dir)) == 0
    return ts.load_manifest(str(output))


def expected_layout(corpus: dict, tokenizer_dir: Path, shard_tokens: int = SHARD_TOKENS) -> dict:
    """Per split, per non-empty shard bucket, the document ids in the documented order (bucket, then id)."""
    tokenizer = stages.load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    ids = corpus["ids"]
    encoded = {i: e.ids for i, e in zip(ids, tokenizer.encode_batch(corpus["texts"], add_special_tokens=False))}
    hashes = text_hashes(ids, seed=0)
    validation = is_validation(hashes[:, 0], FRACTION)
    layout = {}
    for split, members in (("train", np.flatnonzero(~validation)), ("validation", np.flatnonzero(validation))):
        n_buckets = bucket_count(sum(len(encoded[ids[m]]) + 1 for m in members), shard_tokens)
        buckets = dict(zip(members, shard_buckets(hashes[members, 1], n_buckets)))
        layout[split] = [
            sorted(ids[m] for m in members if buckets[m] == b) for b in sorted(set(buckets.values()))
        ]
    return {"layout": layout, "encoded": encoded, "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def concat_run(corpus) -> dict:
    output = corpus["root"] / "concat"
    return {"output": output, "manifest": run_shard(corpus, output)}


# ---------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("packing", ["concat", "none"])
def test_round_trip_gives_back_the_documents_in_order(corpus, concat_run, packing):
    if packing == "concat":
        output, manifest = concat_run["output"], concat_run["manifest"]
    else:
        output = corpus["root"] / "none"
        manifest = run_shard(corpus, output, "--packing", "none")
    expected = expected_layout(corpus, corpus["tokenizer"])
    tokenizer, encoded = expected["tokenizer"], expected["encoded"]
    texts = dict(zip(corpus["ids"], corpus["texts"]))
    for split in ts.SPLITS:
        shards = manifest["splits"][split]["shards"]
        buckets = expected["layout"][split]
        assert len(shards) == len(buckets) and len(buckets) >= (3 if split == "train" else 1)
        split_total = 0
        for entry, doc_ids in zip(shards, buckets):
            rows = ts.open_shard(str(output / entry["file"]))
            if packing == "none":
                assert all(np.count_nonzero(row == SEP) == 1 for row in rows)
            kept = [i for i in doc_ids if encoded[i]]
            docs, n_split = _regroup(_segments(rows), [len(encoded[i]) for i in kept])
            for doc_id, ids in zip(kept, docs):
                assert ids == encoded[doc_id]
                assert tokenizer.decode(ids) == tokenizer.decode(tokenizer.encode(texts[doc_id], add_special_tokens=False).ids)
            assert n_split == entry["split_documents"]
            assert entry["documents"] == len(kept)
            split_total += n_split
        assert split_total == manifest["splits"][split]["split_documents"]
    long_ids = encoded["z-long"]
    assert len(long_ids) > 3 * SEQ_LEN  # really split, and found whole above: not truncated
    assert manifest["splits"]["train"]["split_documents"] + manifest["splits"]["validation"]["split_documents"] >= 1


def test_counts_match_the_manifest(corpus, concat_run):
    output, manifest = concat_run["output"], concat_run["manifest"]
    assert manifest["seq_len"] == SEQ_LEN and manifest["packing"] == "concat" and manifest["dtype"] == "uint16"
    assert manifest["special_tokens"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert manifest["vocab_size"] == Tokenizer.from_file(str(corpus["tokenizer"] / "tokenizer.json")).get_vocab_size()
    assert manifest["tokenizer_fingerprint"] == ts.tokenizer_fingerprint(str(corpus["tokenizer"]))
    assert sorted(p.name for p in (output / "tokenizer").iterdir()) == sorted(p.name for p in corpus["tokenizer"].iterdir())
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "tokenizer", "train", "validation"]
    assert manifest["documents_read"] == len(corpus["ids"])
    empty = sum(info["empty_documents"] for info in manifest["splits"].values())
    packed = sum(info["documents"] for info in manifest["splits"].values())
    assert empty == 2 and packed + empty == manifest["documents_read"]
    for split, info in manifest["splits"].items():
        files = sorted((output / split).iterdir())
        assert [f"{split}/{f.name}" for f in files] == [entry["file"] for entry in info["shards"]]
        for entry in info["shards"]:
            rows = ts.open_shard(str(output / entry["file"]))
            assert len(rows) == entry["sequences"] and int(np.count_nonzero(rows != PAD)) == entry["tokens"]
        assert sum(e["sequences"] for e in info["shards"]) == info["sequences"]
    train_tokens = [e["tokens"] for e in manifest["splits"]["train"]["shards"]]
    assert max(train_tokens) < 2 * SHARD_TOKENS and min(train_tokens) > SHARD_TOKENS / 2  # near --shard-tokens
    assert manifest["options"]["seq_len"] == SEQ_LEN and manifest["options"]["validation_fraction"] == FRACTION


def test_validation_and_train_never_share_a_document(corpus, concat_run):
    manifest, output = concat_run["manifest"], concat_run["output"]
    layout = expected_layout(corpus, corpus["tokenizer"])
    train = {i for bucket in layout["layout"]["train"] for i in bucket}
    validation = {i for bucket in layout["layout"]["validation"] for i in bucket}
    assert not train & validation and train | validation == set(corpus["ids"])
    assert 0.05 * len(corpus["ids"]) < len(validation) < 0.15 * len(corpus["ids"])

    def documents(split):  # decoded documents as they sit in the shards (split documents joined by _regroup above)
        rows = [ts.open_shard(str(output / e["file"])) for e in manifest["splits"][split]["shards"]]
        return {tuple(s) for r in rows for s in _segments(r)}

    encoded = layout["encoded"]
    unique = {}
    for doc_id, ids in encoded.items():
        unique.setdefault(tuple(ids), []).append(doc_id)
    train_docs, validation_docs = documents("train"), documents("validation")
    for ids, owners in unique.items():
        if len(owners) == 1 and ids and len(ids) <= SEQ_LEN - 2 and owners[0] in validation:
            assert ids in validation_docs and ids not in train_docs


def test_special_tokens_in_text_are_tokenized_as_text(corpus, concat_run):
    tokenizer = stages.load_tokenizer(str(corpus["tokenizer"] / "tokenizer.json"))
    ids = tokenizer.encode("좋아요 [SEP] 진짜 [CLS] 최고", add_special_tokens=False).ids
    assert SEP not in ids and CLS not in ids


def test_byte_identical_with_one_and_two_workers(corpus, concat_run, tmp_path):
    """Same bytes from multi-processing with 1 and 2 workers (through the CLI) and from the in-memory run."""
    outputs = []
    for workers in (1, 2):
        output = tmp_path / f"workers-{workers}"
        subprocess.run(
            [sys.executable, "-m", "pipeline.shard", "--input", str(corpus["corpus"]), "--tokenizer", str(corpus["tokenizer"]),
             "--output", str(output), "--seq-len", str(SEQ_LEN), "--shard-tokens", str(SHARD_TOKENS),
             "--validation-fraction", str(FRACTION), "--direct_running_mode=multi_processing",
             f"--direct_num_workers={workers}"],
            cwd=ROOT, check=True, capture_output=True,
        )
        outputs.append(output)
    reference = concat_run["output"]
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert len(files) >= 6
    for output in outputs:
        assert sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file()) == files
        for name in files:
            assert (output / name).read_bytes() == (reference / name).read_bytes(), name


def test_shards_load_with_datasets(concat_run, tmp_path):
    datasets = pytest.importorskip("datasets")
    output, manifest = concat_run["output"], concat_run["manifest"]
    paths = ts.shard_paths(str(output), "train", manifest)
    loaded = datasets.load_dataset("arrow", data_files={"train": paths}, cache_dir=str(tmp_path / "hf"))["train"]
    assert len(loaded) == manifest["splits"]["train"]["sequences"]
    expected = np.concatenate([ts.open_shard(p) for p in paths])
    np.testing.assert_array_equal(np.array(loaded.with_format("numpy")["input_ids"]), expected)


def test_large_vocabulary_gets_uint32(corpus, tmp_path):
    """A vocabulary over 65,536 ids: ids above 65,535 must survive, so the shards are uint32."""
    chars = sorted({c for text in corpus["texts"] for c in text if not c.isspace()})
    vocab = {token: i for i, token in enumerate(SPECIALS + [f"[unused{i}]" for i in range(70_000)])}
    for char in chars:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(f"##{char}", len(vocab))
    tokenizer_dir = _save_tokenizer(_bert_pieces(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))), tmp_path / "tok")
    small = _write_corpus(tmp_path / "small", corpus["ids"][:300], corpus["texts"][:300])
    manifest = run_shard(corpus, tmp_path / "out", tokenizer=tokenizer_dir, input_dir=small)
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] > 65536
    rows = np.concatenate([ts.open_shard(p) for p in ts.shard_paths(str(tmp_path / "out"), "train", manifest)])
    assert rows.dtype == np.uint32 and rows.max() > 65535


def test_refuses_to_overwrite_without_the_flag(corpus, tmp_path, capsys):
    output = tmp_path / "out"
    run_shard(corpus, output, "--seq-len", "16")
    assert exit_status(shard_args(corpus, output)) == 2
    assert "already holds token shards (manifest.json); pass --overwrite" in capsys.readouterr().err
    assert ts.load_manifest(str(output))["seq_len"] == 16  # untouched
    manifest = run_shard(corpus, output, "--overwrite")
    assert manifest["seq_len"] == SEQ_LEN
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "tokenizer", "train", "validation"]
    (output / "manifest.json").unlink()  # as if publishing had been interrupted
    assert exit_status(shard_args(corpus, output)) == 2
    assert "no manifest.json (an interrupted run?)" in capsys.readouterr().err


def test_overwrite_removes_only_what_shard_writes(corpus, concat_run, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine", encoding="utf-8")
    (output / "extra").mkdir()
    (output / "extra" / "keep.bin").write_bytes(b"keep")
    run_shard(corpus, output)  # files of other programs are not an earlier run: no --overwrite needed
    run_shard(corpus, output, "--overwrite")
    assert (output / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (output / "extra" / "keep.bin").read_bytes() == b"keep"
    assert sorted(p.name for p in output.iterdir()) == ["extra", "manifest.json", "notes.txt", "tokenizer", "train",
                                                         "validation"]
    reference = concat_run["output"]
    for entry in concat_run["manifest"]["splits"]["train"]["shards"]:
        assert (output / entry["file"]).read_bytes() == (reference / entry["file"]).read_bytes()


def test_a_leftover_staging_directory_is_replaced(corpus, concat_run, tmp_path):
    output = tmp_path / "out"
    (output / "_temporary" / "train").mkdir(parents=True)
    (output / "_temporary" / "train" / "bucket-00099.arrow").write_bytes(b"from a killed run")
    manifest = run_shard(corpus, output)
    assert manifest["splits"] == concat_run["manifest"]["splits"]
    assert not (output / "_temporary").exists()


def test_null_ids_are_refused_before_work(corpus, tmp_path, capsys):
    pq.write_table(pa.table({"id": ["a", None], "text": ["좋아요", "별로"]}), tmp_path / "nulls.parquet")
    assert exit_status(shard_args(corpus, tmp_path / "out", input_dir=tmp_path / "*.parquet")) == 2
    assert "row group 0 has 1 rows with a null id" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda c, t: ["--input", str(t / "nothing")], "no such file or directory"),
    (lambda c, t: ["--input", str(t / "*.parquet")], "matches no file"),
    (lambda c, t: ["--tokenizer", str(t)], "no tokenizer files (tokenizer.json or vocab.txt)"),
    (lambda c, t: ["--tokenizer", str(t / "no" / "such")], "no such directory"),
    (lambda c, t: ["--text-field", "body"], "no column 'body'"),
    (lambda c, t: ["--seq_len", "64"], "unknown option --seq_len; did you mean --seq-len?"),
    (lambda c, t: ["--seq-lenght", "64"], "unknown option --seq-lenght; did you mean --seq-len?"),
    (lambda c, t: ["--seq-len", "2"], "--seq-len must be at least 3"),
    (lambda c, t: ["--validation-fraction", "1.0"], "--validation-fraction must be in"),
    (lambda c, t: ["--limit", "0"], "argument --limit: 0 is not in [1, inf)"),
    (lambda c, t: ["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
    (lambda c, t: ["--preset", "dataflow"], "needs --project"),
])
def test_bad_input_is_a_clear_error_before_work(corpus, tmp_path, capsys, change, message):
    assert exit_status(shard_args(corpus, tmp_path / "out", *change(corpus, tmp_path))) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the command line


def test_json_summary_matches_the_manifest(corpus, tmp_path, capsys):
    output = tmp_path / "out"
    capsys.readouterr()
    run_shard(corpus, output, "--json")
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert summary["output"] == str(output) and summary["manifest"] == str(output / "manifest.json")
    assert summary["documents_read"] == manifest["documents_read"] == len(corpus["ids"])
    for split, info in manifest["splits"].items():
        assert summary["splits"][split] == {key: value for key, value in info.items() if key != "shards"} | {
            "shards": len(info["shards"])}
    counters = summary["counters"]
    assert counters["documents_read"] == manifest["documents_read"]
    assert counters["sequences_written"] == sum(info["sequences"] for info in manifest["splits"].values())
    assert counters["tokens_written"] == sum(info["tokens"] for info in manifest["splits"].values())
    assert counters["shards_written"] == sum(len(info["shards"]) for info in manifest["splits"].values())
    assert captured.err == ""  # --quiet: no progress lines


def test_human_summary_by_default_and_progress_on_stderr(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shard.cli, "PROGRESS_SECONDS", 0.0)
    args = [arg for arg in shard_args(corpus, tmp_path / "out") if arg != "--quiet"]
    assert shard.main(args) == 0
    captured = capsys.readouterr()
    manifest = ts.load_manifest(str(tmp_path / "out"))
    sequences = sum(info["sequences"] for info in manifest["splits"].values())
    assert captured.out.startswith(f"{tmp_path / 'out'}: {sequences:,} sequences of {SEQ_LEN} ids (uint16)")
    assert f"{len(corpus['ids']):,} documents read" in captured.out and "manifest: " in captured.out
    assert "pipeline.shard [" in captured.err and "documents;" in captured.err and "publishing" in captured.err


def test_limit_reads_exactly_the_first_documents(corpus, tmp_path):
    """--limit N gives the shards of exactly the first N rows, in file and row order, and nothing else."""
    parts = sorted((corpus["corpus"] / "clean").glob("*.parquet"))
    first_part_rows = pq.ParquetFile(parts[0]).metadata.num_rows
    limit = first_part_rows + 7  # crosses into the second file
    first_rows = pa.concat_tables([pq.read_table(path) for path in parts]).slice(0, limit)
    (tmp_path / "first").mkdir()
    pq.write_table(first_rows, tmp_path / "first" / "rows.parquet")
    limited = run_shard(corpus, tmp_path / "limited", "--limit", str(limit))
    exact = run_shard(corpus, tmp_path / "exact", input_dir=tmp_path / "first" / "rows.parquet")
    assert limited["documents_read"] == limit
    assert sum(info["documents"] + info["empty_documents"] for info in limited["splits"].values()) == limit
    assert limited["options"]["limit"] == limit and exact["options"]["limit"] is None
    assert limited["splits"] == exact["splits"]  # the same shard bytes (sha256 in the entries)


def test_a_held_lock_refuses_a_second_run(corpus, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")  # a live process
    assert exit_status(shard_args(corpus, output)) == 2
    assert "is being written by another run" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == [LOCK_FILE]  # nothing staged, nothing published
    (output / LOCK_FILE).write_text(f"{socket.gethostname()} {2**22 + 12345}\n", encoding="utf-8")  # a dead one
    run_shard(corpus, output)
    assert not (output / LOCK_FILE).exists()


def test_ctrl_c_publishes_nothing(corpus, tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(beam_shard, "run", interrupted)
    output = tmp_path / "out"
    assert shard.main(shard_args(corpus, output)) == 130
    assert "interrupted; nothing was published" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == ["_temporary"]  # staged only; the next run replaces it


def test_help_lists_preset_and_imports_neither_beam_nor_tokenizers():
    code = ("import sys; from pipeline import shard; text = shard.build_parser().format_help(); "
            "print('--preset' in text, '--limit' in text, 'apache_beam' in sys.modules, 'tokenizers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    assert result.stdout.split() == ["True", "True", "False", "False"]
    help_run = subprocess.run([sys.executable, "-m", "pipeline.shard", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_run.returncode == 0 and "--preset" in help_run.stdout and "--seq-len" in help_run.stdout


# ---------------------------------------------------------------- the stages, on hand-made input


def _settings(tmp_path: Path, **changes) -> stages.ShardSettings:
    return stages.ShardSettings(inputs=("unused",), tokenizer="unused", output=str(tmp_path / "out"),
                                **{"seq_len": 8, "special_tokens": SPECIAL_IDS, **changes})


def _batch(ids: list[str], docs: list[list[int]], hashes: list[int] | None = None) -> stages.DocBatch:
    return stages.DocBatch(pa.array(ids, pa.string()), np.array(hashes or [0] * len(ids), dtype=np.uint64),
                           np.array(sum(docs, []), dtype=np.uint16), np.array([len(d) for d in docs], dtype=np.int64))


def _word_tokenizer():
    vocab = {token: index for index, token in enumerate(SPECIALS + ["a", "b", "c"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def test_tokenize_unit_gives_flat_batches_and_a_tally(tmp_path):
    table = pa.table({"id": ["d2", "d1", "d3", "d4"], "text": ["a b", "", "c c x", None]})
    batches, tally = stages.tokenize_unit(table, _settings(tmp_path, validation_fraction=0.0), _word_tokenizer())
    assert list(batches) == ["train"]
    train = batches["train"]
    assert train.ids.to_pylist() == ["d2", "d1", "d3", "d4"] and train.tokens.dtype == np.uint16
    assert train.tokens.tolist() == [5, 6, 7, 7, 1] and train.lengths.tolist() == [2, 0, 3, 0]
    assert train.bucket_hashes.tolist() == text_hashes(["d2", "d1", "d3", "d4"], 0)[:, 1].tolist()
    assert tally == Counter(documents_read=4, documents_empty=2, documents_validation=0, tokens_read=5)


def test_tokenize_unit_splits_by_the_hash_of_the_id(tmp_path):
    ids = [f"doc{i}" for i in range(200)]
    table = pa.table({"id": ids, "body": ["a"] * 200})
    settings = _settings(tmp_path, validation_fraction=0.3, seed=5, text_field="body")
    batches, tally = stages.tokenize_unit(table, settings, _word_tokenizer())
    expected = is_validation(text_hashes(ids, 5)[:, 0], 0.3)
    assert batches["validation"].ids.to_pylist() == [i for i, v in zip(ids, expected) if v]
    assert batches["train"].ids.to_pylist() == [i for i, v in zip(ids, expected) if not v]
    assert tally["documents_validation"] == int(expected.sum()) and 40 < tally["documents_validation"] < 80


def test_split_slots_and_assign_buckets(tmp_path):
    batch = _batch(["w", "x", "y", "z"], [[5], [6, 6], [], [7, 7, 7]], hashes=[5, 2, 7, 4])
    assert stages.split_slots(batch) == 6 + 4  # ids, and one [SEP] per document
    parts = stages.assign_buckets(batch, 30, _settings(tmp_path, shard_tokens=10))  # 3 buckets: hash mod 3
    assert [(bucket, part.ids.to_pylist(), part.tokens.tolist()) for bucket, part in parts] == [
        (1, ["y", "z"], [7, 7, 7]), (2, ["w", "x"], [5, 6, 6])]
    assert [bucket for bucket, _ in stages.assign_buckets(batch, 10, _settings(tmp_path, shard_tokens=10))] == [0]
    assert stages.assign_buckets(_batch([], []), 10, _settings(tmp_path, shard_tokens=10)) == []


def test_pack_bucket_sorts_packs_and_counts(tmp_path):
    settings = _settings(tmp_path)
    first = _batch(["c", "a"], [[30], [10, 11, 12]])
    second = _batch(["e", "b"], [[], [20, 21, 22, 23, 24, 25, 26, 27]])  # b: longer than a row (6 ids)
    rows, record, tally = stages.pack_bucket("train", 2, [first, second], settings)
    assert rows.dtype == np.uint16 and rows.tolist() == [
        [2, 10, 11, 12, 3, 20, 21, 3],  # a, then b fills what is left of the row
        [2, 22, 23, 24, 25, 26, 27, 3],
        [2, 30, 3, 0, 0, 0, 0, 0],  # c; e is empty and takes no space
    ]
    assert record == {"split": "train", "bucket": 2, "documents": 3, "empty_documents": 1, "split_documents": 1,
                      "sequences": 3, "tokens": 19, "sha256": None, "staged": None}
    assert tally == Counter(documents_split=1, documents_packed=3, sequences_written=3, tokens_written=19,
                            shards_written=1)
    rows_again, record_again, _ = stages.pack_bucket("train", 2, [second, first], settings)  # arrival order
    assert rows_again.tolist() == rows.tolist() and record_again == record


def test_pack_bucket_none_packing(tmp_path):
    rows, record, _ = stages.pack_bucket("validation", 0, [_batch(["b", "a"], [[7, 8], [5]])],
                                         _settings(tmp_path, packing="none"))
    assert rows.tolist() == [[2, 5, 3, 0, 0, 0, 0, 0], [2, 7, 8, 3, 0, 0, 0, 0]]
    assert record["sequences"] == 2 and record["tokens"] == 7 and record["split_documents"] == 0


def test_write_bucket_stages_one_shard(tmp_path):
    settings = _settings(tmp_path)
    rows, record, _ = stages.pack_bucket("train", 2, [_batch(["a"], [[10, 11]])], settings)
    written = stages.write_bucket(rows, record, settings)
    staged = tmp_path / "out" / "_temporary" / "train" / "bucket-00002.arrow"
    assert written == {**record, "sha256": ts.file_sha256(str(staged)), "staged": str(staged)}
    np.testing.assert_array_equal(ts.open_shard(str(staged)), rows)
    empty_rows, empty_record, tally = stages.pack_bucket("train", 3, [_batch(["e"], [[]])], settings)
    assert stages.write_bucket(empty_rows, empty_record, settings) == empty_record and tally["shards_written"] == 0
    assert not (tmp_path / "out" / "_temporary" / "train" / "bucket-00003.arrow").exists()


def test_index_and_split_summaries(tmp_path):
    settings = _settings(tmp_path)
    record = {"documents": 1, "empty_documents": 0, "split_documents": 0, "sequences": 1, "tokens": 3}
    records = [
        {**record, "split": "train", "bucket": 4, "sha256": "b4", "staged": "s/train/bucket-00004.arrow"},
        {**record, "split": "validation", "bucket": 0, "sha256": "v0", "staged": "s/validation/bucket-00000.arrow"},
        {**record, "split": "train", "bucket": 1, "sha256": "b1", "staged": "s/train/bucket-00001.arrow"},
        {**record, "split": "train", "bucket": 2, "empty_documents": 2, "sequences": 0, "tokens": 0, "documents": 0,
         "sha256": None, "staged": None},
    ]
    stages.write_index(records, settings)
    assert [(r["split"], r["bucket"]) for r in stages.read_index(settings)] == [
        ("train", 1), ("train", 2), ("train", 4), ("validation", 0)]
    splits, moves = stages.split_summaries(stages.read_index(settings))
    assert moves == [("s/train/bucket-00001.arrow", "train/shard-00000.arrow"),
                     ("s/train/bucket-00004.arrow", "train/shard-00001.arrow"),
                     ("s/validation/bucket-00000.arrow", "validation/shard-00000.arrow")]
    assert splits["train"] == {"sequences": 2, "tokens": 6, "documents": 2, "empty_documents": 2, "split_documents": 0,
                               "shards": [{"file": "train/shard-00000.arrow", "sequences": 1, "tokens": 3,
                                           "documents": 1, "split_documents": 0, "sha256": "b1"},
                                          {"file": "train/shard-00001.arrow", "sequences": 1, "tokens": 3,
                                           "documents": 1, "split_documents": 0, "sha256": "b4"}]}
    assert [shard_entry["sha256"] for shard_entry in splits["validation"]["shards"]] == ["v0"]


def test_plan_units_lists_row_groups_and_applies_the_limit(tmp_path):
    paths = []
    for name, rows in (("a.parquet", 3), ("b.parquet", 4)):
        pq.write_table(pa.table({"id": [f"{name}{i}" for i in range(rows)], "text": ["x"] * rows}),
                       tmp_path / name, row_group_size=2)
        paths.append(str(tmp_path / name))
    a, b = paths
    R = stages.ReadUnit
    assert stages.plan_units(paths, "text") == ([R(a, 0), R(a, 1), R(b, 0), R(b, 1)], 7)
    assert stages.plan_units(paths, "text", limit=6) == ([R(a, 0), R(a, 1), R(b, 0), R(b, 1, 1)], 6)
    assert stages.plan_units(paths, "text", limit=5) == ([R(a, 0), R(a, 1), R(b, 0)], 5)
    assert stages.plan_units(paths, "text", limit=4) == ([R(a, 0), R(a, 1), R(b, 0, 1)], 4)
    assert stages.plan_units(paths, "text", limit=2) == ([R(a, 0)], 2)
    assert stages.plan_units(paths, "text", limit=100) == ([R(a, 0), R(a, 1), R(b, 0), R(b, 1)], 7)
    assert stages.read_unit(R(b, 1, 1), "text").column("id").to_pylist() == ["b.parquet2"]
    with pytest.raises(stages.ShardInputError, match="no column 'body'"):
        stages.plan_units(paths, "body")


@pytest.mark.parametrize("changes, message", [
    ({"seq_len": 2}, "--seq-len must be at least 3"),
    ({"validation_fraction": 1.0}, "--validation-fraction must be in"),
    ({"seed": -1}, "--seed must be in"),
    ({"shard_tokens": 4}, "--shard-tokens (4) must be at least --seq-len (8)"),
    ({"packing": "zip"}, "--packing must be one of concat, none"),
])
def test_settings_refuse_bad_values(tmp_path, changes, message):
    with pytest.raises(stages.ShardInputError) as error:
        _settings(tmp_path, **changes)
    assert message in str(error.value)


def test_special_token_names_follow_the_config_files():
    assert special_token_names({}) == dict(zip(SPECIAL_TOKEN_ROLES, BERT_SPECIAL_TOKENS))
    files = {"tokenizer_config.json": json.dumps({"sep_token": {"content": "</s>"}, "pad_token": "<pad>"}).encode(),
             "special_tokens_map.json": json.dumps({"pad_token": "<p>"}).encode()}
    assert special_token_names(files) == {"pad": "<p>", "unk": "[UNK]", "cls": "[CLS]", "sep": "</s>",
                                          "mask": "[MASK]"}
