"""Benchmark of `python -m pipeline.shard` against raw `tokenizers` `encode_batch` on the same texts.

The cleaned NSMC reviews are written as a clean-corpus directory (two Parquet parts) and a
32k WordPiece tokenizer is trained on them once. Then, alternating, twice each: the raw
baseline (`Tokenizer.encode_batch` over all texts in this process) and the whole command
end to end in a fresh process (Beam start-up, reading, tokenizing, packing, writing,
manifest). Best of two for each, because the machine is shared; target: pipeline token
throughput >= 0.8x the baseline. For reference, also `encode_batch_fast` alone and the
command on DirectRunner's multi_processing mode.
"""
from __future__ import annotations

import json
import lzma
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizerFast

from bench.common import NSMC_PATH, RESULTS_DIR, WORK_DIR, machine_line, python_cmd, timed_subprocess
from transforms import token_shards as ts
from transforms.clean import clean_text

TARGET = 0.8
VOCAB_SIZE = 32000
SEQ_LEN = 128
REPEATS = 2
PARTS = 8
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_corpus(data_path: Path, root: Path) -> list[str]:
    """Cleaned NSMC as contract 1, shaped like pipeline.run writes it for this size: 8 parts
    (records spread over them), rows sorted by id, zstd, 128Ki-row groups. Return the texts."""
    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        records = sorted((str(r["id"]), clean_text(r["text"])) for r in map(json.loads, handle))
    (root / "clean").mkdir(parents=True, exist_ok=True)
    for part in range(PARTS):
        chunk = records[part::PARTS]
        pq.write_table(pa.table({"id": [i for i, _ in chunk], "text": [t for _, t in chunk]}),
                       root / "clean" / f"part-{part:05d}-of-{PARTS:05d}.parquet",
                       compression="zstd", row_group_size=128 * 1024)
    return [text for _, text in records]


def train_tokenizer(texts: list[str], path: Path) -> Path:
    """A KcBERT-like cased WordPiece, saved in the contract 2 layout."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS))
    BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                      cls_token="[CLS]", mask_token="[MASK]", do_lower_case=False).save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    return path


def raw_encode(tokenizer_json: Path, texts: list[str], method: str = "encode_batch") -> tuple[float, int]:
    """(seconds, ids) of one `encode_batch` (or `encode_batch_fast`) over all texts, no special tokens."""
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    started = time.perf_counter()
    encodings = getattr(tokenizer, method)(texts, add_special_tokens=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(e.ids) for e in encodings)


def run(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    texts = write_corpus(data_path, corpus)
    tokenizer_dir = train_tokenizer(texts, workdir / "tokenizer")
    output = workdir / "shards"
    command = python_cmd("-m", "pipeline.shard", "--input", str(corpus), "--tokenizer", str(tokenizer_dir),
                         "--output", str(output), "--seq-len", str(SEQ_LEN), "--overwrite")
    multi_processing = [*command, "--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count()}"]
    raw_runs, fast_runs, shard_runs, mp_runs = [], [], [], []
    for _ in range(REPEATS):
        raw_runs.append(raw_encode(tokenizer_dir / "tokenizer.json", texts))
        fast_runs.append(raw_encode(tokenizer_dir / "tokenizer.json", texts, "encode_batch_fast"))
        shard_runs.append(timed_subprocess(command))
        mp_runs.append(timed_subprocess(multi_processing))
    raw_seconds, raw_tokens = min(raw_runs)
    fast_seconds, _ = min(fast_runs)
    wall, _, stdout = min(shard_runs)
    peak_mib = max(peak for _, peak, _ in shard_runs)
    mp_wall, mp_peak = min(mp_runs)[0], max(peak for _, peak, _ in mp_runs)
    counters = json.loads(stdout)["counters"]
    manifest = ts.load_manifest(str(output))
    assert counters["tokens_read"] == raw_tokens, (counters["tokens_read"], raw_tokens)
    raw_rate, shard_rate = raw_tokens / raw_seconds, raw_tokens / wall
    ratio = shard_rate / raw_rate
    train = manifest["splits"]["train"]
    sequences = sum(info["sequences"] for info in manifest["splits"].values())
    non_pad = sum(info["tokens"] for info in manifest["splits"].values())
    rows = [
        ("raw `Tokenizer.encode_batch` (baseline, in process)", f"{raw_seconds:.2f}", f"{raw_rate:,.0f}", "–"),
        ("raw `Tokenizer.encode_batch_fast` (reference, in process)", f"{fast_seconds:.2f}",
         f"{raw_tokens / fast_seconds:,.0f}", "–"),
        ("`python -m pipeline.shard` (end to end, fresh process)", f"{wall:.2f}", f"{shard_rate:,.0f}", f"{peak_mib:,.0f}"),
        (f"the same with `--direct_running_mode=multi_processing --direct_num_workers={os.cpu_count()}`",
         f"{mp_wall:.2f}", f"{raw_tokens / mp_wall:,.0f}", f"{mp_peak:,.0f}"),
    ]
    table = "\n".join(f"| {name} | {s} | {r} | {m} |" for name, s, r, m in rows)
    verdict = "meets" if ratio >= TARGET else "MISSES"
    return f"""## Token shards (`pipeline.shard`)

Command: `make bench` or `python -m bench.bench_shard` (section written to `bench/results/shard.md`).
Machine: {machine_line()}.

Input: the {len(texts):,} NSMC reviews cleaned with `transforms.clean.clean_text`, as a clean-corpus
directory of 8 Parquet parts; a {VOCAB_SIZE:,}-id cased WordPiece trained on them. Both rows tokenize
the same texts into the same {raw_tokens:,} ids (no special tokens); the pipeline's time is the whole
command with defaults (`--seq-len {SEQ_LEN} --packing concat`, Beam's DirectRunner in memory):
Python and Beam start-up, Parquet reading, tokenizing, hashing, the shuffle, sorting, packing,
writing shards and manifest. Best of {REPEATS} alternating runs each (the machine is shared); peak
memory is the largest resident set of the command and all its workers.

| what | seconds | ids / s | peak MiB |
|---|---|---|---|
{table}

Ratio pipeline / baseline: **{ratio:.2f}x** (target ≥ {TARGET}x: {verdict} it).
Output: {sequences:,} sequences of {SEQ_LEN} ids in {len(train['shards'])} train + \
{len(manifest['splits']['validation']['shards'])} validation shards ({manifest['dtype']}), \
{non_pad / (sequences * SEQ_LEN):.1%} of the slots hold ids (the rest is [PAD]), \
{counters['documents_split']} documents split across rows, {counters['documents_empty']} empty documents counted.
The pipeline tokenizes with `encode_batch_fast` (no offsets, which packing does not need); the
second row shows that call alone, so the gap between it and the pipeline is Beam's and packing's
cost. The last row is why the command keeps Beam's in-memory DirectRunner by default: the tokenizer
already uses every core, and worker processes add gRPC transfers, start-up and memory.
"""


if __name__ == "__main__":
    if not NSMC_PATH.exists():
        print(f"skipping: {NSMC_PATH} is absent", file=sys.stderr)
        raise SystemExit(0)
    section = run(NSMC_PATH, WORK_DIR / "shard")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "shard.md").write_text(section, encoding="utf-8")
    print(section)
