"""pipeline.shard and transforms.packing: packing rules, round trips, counts, determinism, refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizerFast

from pipeline import shard
from pipeline.sample_corpus import sample_records
from transforms import token_shards as ts
from transforms.clean import clean_text
from transforms.packing import (
    bucket_count,
    document_hashes,
    is_validation,
    pack_concat,
    pack_none,
    shard_buckets,
    take_documents,
)

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, CLS, SEP = 0, 2, 3
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
        return shard.DocBatch(
            pa.array([ids[i] for i in order]), np.array(order, dtype=np.uint64),
            np.array(sum((docs[i] for i in order), []), dtype=np.uint32), np.array([len(docs[i]) for i in order]),
        ).sorted_by_id()

    first, second = batch([0, 1, 2]), batch([2, 0, 1])
    assert first.ids.to_pylist() == second.ids.to_pylist() == ["a", "a", "b"]
    assert first.tokens.tolist() == second.tokens.tolist() == [5, 5, 8, 9, 7]
    assert first.lengths.tolist() == [2, 2, 1] and first.bucket_hashes.tolist() == second.bucket_hashes.tolist() == [2, 1, 0]


def test_split_and_bucket_hashes_are_stable():
    hashes = document_hashes(["a", "b", "c"], seed=0)
    assert hashes.dtype == np.uint64 and hashes.shape == (3, 2)
    np.testing.assert_array_equal(hashes, document_hashes(["a", "b", "c"], seed=0))
    assert not np.array_equal(hashes, document_hashes(["a", "b", "c"], seed=1))
    many = document_hashes([f"doc{i}" for i in range(20000)], seed=0)
    assert 0.08 < is_validation(many[:, 0], 0.1).mean() < 0.12
    assert not is_validation(many[:, 0], 0.0).any()
    assert np.bincount(shard_buckets(many[:, 1], 4), minlength=4).min() > 4500
    assert bucket_count(10, 1000) == 1 and bucket_count(3600, 1000) == 4


# ---------------------------------------------------------------- fixtures for the pipeline


def _save_tokenizer(tokenizer: Tokenizer, path: Path) -> Path:
    """Contract 2 layout: tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json."""
    BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=False,
    ).save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    roles = dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], SPECIALS))
    (path / "special_tokens_map.json").write_text(json.dumps(roles), encoding="utf-8")
    return path


def _bert_pieces(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _write_corpus(root: Path, ids: list[str], texts: list[str]) -> Path:
    """A clean-corpus directory (contract 1): two Parquet parts, rows sorted by id, extra columns carried.

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


def run_shard(corpus: dict, output: Path, *extra: str, tokenizer: Path | None = None, input_dir: Path | None = None) -> dict:
    """pipeline.shard in this process (default runner: DirectRunner, in memory); return the verified manifest."""
    code = shard.main([
        "--input", str(input_dir or corpus["corpus"]), "--tokenizer", str(tokenizer or corpus["tokenizer"]),
        "--output", str(output), "--seq-len", str(SEQ_LEN), "--shard-tokens", str(SHARD_TOKENS),
        "--validation-fraction", str(FRACTION), *extra,
    ])
    assert code == 0
    return ts.load_manifest(str(output))


def expected_layout(corpus: dict, tokenizer_dir: Path, shard_tokens: int = SHARD_TOKENS) -> dict:
    """Per split, per non-empty shard bucket, the document ids in the documented order (bucket, then id)."""
    tokenizer = shard.load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    ids = corpus["ids"]
    encoded = {i: e.ids for i, e in zip(ids, tokenizer.encode_batch(corpus["texts"], add_special_tokens=False))}
    hashes = document_hashes(ids, seed=0)
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
    tokenizer = shard.load_tokenizer(str(corpus["tokenizer"] / "tokenizer.json"))
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
    with pytest.raises(SystemExit) as exit_info:
        run_shard(corpus, output)
    assert exit_info.value.code == 2
    assert "already holds token shards (manifest.json); pass --overwrite" in capsys.readouterr().err
    assert ts.load_manifest(str(output))["seq_len"] == 16  # untouched
    manifest = run_shard(corpus, output, "--overwrite")
    assert manifest["seq_len"] == SEQ_LEN
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "tokenizer", "train", "validation"]
    (output / "manifest.json").unlink()  # as if finalization had been interrupted
    with pytest.raises(SystemExit) as exit_info:
        run_shard(corpus, output)
    assert exit_info.value.code == 2 and "no manifest.json (an interrupted run?)" in capsys.readouterr().err


def test_null_ids_are_refused_before_work(corpus, tmp_path, capsys):
    pq.write_table(pa.table({"id": ["a", None], "text": ["좋아요", "별로"]}), tmp_path / "nulls.parquet")
    with pytest.raises(SystemExit) as exit_info:
        run_shard(corpus, tmp_path / "out", input_dir=tmp_path / "*.parquet")
    assert exit_info.value.code == 2 and "row group 0 has 1 rows with a null id" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda c, t: ["--input", str(t / "nothing")], "not a finished pipeline.run output (no stats.json"),
    (lambda c, t: ["--input", str(t / "*.parquet")], "no input files match"),
    (lambda c, t: ["--tokenizer", str(t)], "no tokenizer.json"),
    (lambda c, t: ["--text-field", "body"], "no column 'body'"),
    (lambda c, t: ["--seq_len", "64"], "did you mean --seq-len"),
    (lambda c, t: ["--seq-len", "2"], "--seq-len must be at least 3"),
    (lambda c, t: ["--validation-fraction", "1.0"], "--validation-fraction must be in"),
    (lambda c, t: ["--preset", "nope"], "unknown --preset 'nope'"),
])
def test_bad_input_is_a_clear_error_before_work(corpus, tmp_path, capsys, change, message):
    with pytest.raises(SystemExit) as exit_info:
        run_shard(corpus, tmp_path / "out", *change(corpus, tmp_path))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
