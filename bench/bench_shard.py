"""Benchmark of `python -m pipeline.shard` against raw `tokenizers` `encode_batch` on the same texts.

The cleaned NSMC reviews are written as a clean-corpus directory (8 Parquet parts, as
`pipeline.run` writes them), and again four times over (each review four times under four
ids, 32 parts): tokenizers has no cache, so every copy costs what the first did, and the
larger input shows the rate once the command's fixed start-up is amortised. A 32k
WordPiece tokenizer is trained on the reviews once. Then, alternating, four times each,
every one in a fresh process: the baseline (one `encode_batch` call over all texts, already
in memory; only the call is timed) at both sizes, `encode_batch_fast` (reference), the
whole command end to end at both sizes (start-up, reading, tokenizing, packing, writing
shards and manifest), the command in multi_processing mode, and the command on an empty
corpus (its fixed cost). Best of four for each, because the machine may be shared.
Target: pipeline token throughput >= 0.8x the baseline.
"""
from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizerFast

from bench.common import (machine_line, python_cmd, run_stage, timed_subprocess,
                          write_clean_corpus)
from transforms import token_shards as ts
from transforms.clean import clean_text
from transforms.special_tokens import BERT_SPECIAL_TOKENS

TARGET = 0.8
VOCAB_SIZE = 32000
SEQ_LEN = 128
REPEATS = 4
PARTS = 8
LARGE = 4  # NSMC x4: the larger input, where start-up is amortised


def read_records(data_path: Path) -> list[tuple[str, str]]:
    """(id, cleaned text) of every review, sorted by id."""
    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        return sorted((str(r["id"]), clean_text(r["text"])) for r in map(json.loads, handle))


def write_corpus(records: list[tuple[str, str]], root: Path, copies: int = 1) -> None:
    """The records as a clean corpus (koforge-clean-corpus/1), shaped like pipeline.run writes them: PARTS parts per copy of
    the data (records spread over them), rows sorted by id, zstd, 128Ki-row groups. Copy k of a
    record gets the id "<id>-<k>" (only when copies > 1)."""
    ids = [i if copies == 1 else f"{i}-{k}" for k in range(copies) for i, _ in records]
    write_clean_corpus(root, ids, [t for _ in range(copies) for _, t in records], parts=PARTS * copies)


def train_tokenizer(texts: list[str], path: Path) -> Path:
    """A KcBERT-like cased WordPiece, saved in the koforge-tokenizer/1 layout."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(BERT_SPECIAL_TOKENS)))
    BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                      cls_token="[CLS]", mask_token="[MASK]", do_lower_case=False).save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    return path


RAW_ENCODE = """
import glob, json, sys, time
import pyarrow.parquet as pq
from tokenizers import Tokenizer
corpus, tokenizer_json, method = sys.argv[1:]
texts = [t for path in sorted(glob.glob(corpus + "/clean/*.parquet")) for t in pq.read_table(path).column("text").to_pylist()]
tokenizer = Tokenizer.from_file(tokenizer_json)
started = time.perf_counter()
encodings = getattr(tokenizer, method)(texts, add_special_tokens=False)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "ids": sum(len(e.ids) for e in encodings)}))
"""


def raw_encode(corpus: Path, tokenizer_json: Path, method: str = "encode_batch") -> tuple[float, int]:
    """(seconds, ids) of one `encode_batch` (or `encode_batch_fast`) call over all texts, no special tokens.

    In a fresh process, like the pipeline; only the call is timed (the texts are already in memory).
    """
    _, _, stdout = timed_subprocess(python_cmd("-c", RAW_ENCODE, str(corpus), str(tokenizer_json), method))
    result = json.loads(stdout)
    return result["seconds"], result["ids"]


def write_empty_corpus(root: Path) -> Path:
    """A clean-corpus directory with no rows: running on it measures the command's fixed cost."""
    write_clean_corpus(root, [], [])
    return root


def shard_command(corpus: Path, tokenizer_dir: Path, output: Path, *extra: str) -> list[str]:
    return python_cmd("-m", "pipeline.shard", "--input", str(corpus), "--tokenizer", str(tokenizer_dir),
                      "--output", str(output), "--seq-len", str(SEQ_LEN), "--overwrite", "--quiet", "--json", *extra)


def run(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    records = read_records(data_path)
    texts = [text for _, text in records]
    corpus, corpus_large = workdir / "corpus", workdir / f"corpus-{LARGE}x"
    write_corpus(records, corpus)
    write_corpus(records, corpus_large, copies=LARGE)
    tokenizer_dir = train_tokenizer(texts, workdir / "tokenizer")
    tokenizer_json = tokenizer_dir / "tokenizer.json"
    output = workdir / "shards"
    default = shard_command(corpus, tokenizer_dir, output)
    large = shard_command(corpus_large, tokenizer_dir, workdir / f"shards-{LARGE}x")
    workers = f"--direct_running_mode=multi_processing --direct_num_workers={os.cpu_count()}"
    multi_processing = shard_command(corpus, tokenizer_dir, workdir / "shards-mp", *workers.split())
    empty = shard_command(write_empty_corpus(workdir / "empty"), tokenizer_dir, workdir / "shards-empty")
    runs: dict[str, list] = {key: [] for key in ("raw", "fast", "shard", "mp", "empty", "raw_large", "shard_large")}
    for _ in range(REPEATS):
        runs["raw"].append(raw_encode(corpus, tokenizer_json))
        runs["fast"].append(raw_encode(corpus, tokenizer_json, "encode_batch_fast"))
        runs["shard"].append(timed_subprocess(default))
        runs["mp"].append(timed_subprocess(multi_processing))
        runs["empty"].append(timed_subprocess(empty))
        runs["raw_large"].append(raw_encode(corpus_large, tokenizer_json))
        runs["shard_large"].append(timed_subprocess(large))
    (raw_seconds, raw_tokens), (raw_large_seconds, raw_large_tokens) = min(runs["raw"]), min(runs["raw_large"])
    fast_seconds = min(runs["fast"])[0]
    wall, mp_wall, fixed, large_wall = (min(runs[key])[0] for key in ("shard", "mp", "empty", "shard_large"))
    peak, mp_peak, large_peak = (max(peak for _, peak, _ in runs[key]) for key in ("shard", "mp", "shard_large"))
    counters = json.loads(min(runs["shard"])[2])["counters"]
    assert counters["tokens_read"] == raw_tokens, (counters["tokens_read"], raw_tokens)
    assert raw_large_tokens == LARGE * raw_tokens
    assert json.loads(min(runs["shard_large"])[2])["counters"]["tokens_read"] == raw_large_tokens
    manifest = ts.load_manifest(str(output))
    assert ts.load_manifest(str(workdir / "shards-mp")) == manifest  # same bytes, whatever the runner mode
    ratio, large_ratio = raw_seconds / wall, raw_large_seconds / large_wall
    added = raw_large_tokens - raw_tokens
    marginal, raw_marginal = added / (large_wall - wall), added / (raw_large_seconds - raw_seconds)
    # both times as straight lines through the two sizes, t(n) = intercept + n / rate: where raw / pipeline = TARGET
    intercept, raw_intercept = wall - raw_tokens / marginal, raw_seconds - raw_tokens / raw_marginal
    slope_gap = 1 / raw_marginal - TARGET / marginal
    break_even = (TARGET * intercept - raw_intercept) / slope_gap if slope_gap > 0 else None
    sequences = sum(info["sequences"] for info in manifest["splits"].values())
    non_pad = sum(info["tokens"] for info in manifest["splits"].values())
    rows = [
        ("raw `Tokenizer.encode_batch`, one call over the texts in memory (baseline)", raw_tokens, raw_seconds, "–"),
        ("raw `Tokenizer.encode_batch_fast`, the same (reference)", raw_tokens, fast_seconds, "–"),
        ("`python -m pipeline.shard`, end to end (fresh process, defaults)", raw_tokens, wall, f"{peak:,.0f}"),
        (f"the same with `{workers}`", raw_tokens, mp_wall, f"{mp_peak:,.0f}"),
        (f"raw `Tokenizer.encode_batch` on NSMC x{LARGE} (baseline)", raw_large_tokens, raw_large_seconds, "–"),
        (f"`python -m pipeline.shard` on NSMC x{LARGE}, end to end", raw_large_tokens, large_wall, f"{large_peak:,.0f}"),
    ]
    table = "\n".join(f"| {name} | {ids:,} | {seconds:.2f} | {ids / seconds:,.0f} | {mib} |" for name, ids, seconds, mib in rows)
    verdict = "meets" if large_ratio >= TARGET else "MISSES"
    small_verdict = "meets" if ratio >= TARGET else "misses"
    size_line = (f"the end-to-end ratio passes {TARGET}x from about {max(break_even, 0) / 1e6:.1f}M ids "
                 f"({max(break_even, 0) / raw_tokens:.1f}x NSMC; both times taken as straight lines through the two sizes)"
                 if break_even is not None else f"the ratio never reaches {TARGET}x")
    modes = ("faster" if mp_wall < wall else "slower") + f" ({mp_wall:.2f} s vs {wall:.2f} s)"
    return f"""## Token shards (`pipeline.shard`)

Command: `make bench` or `python -m bench.bench_shard` (section written to `bench/results/shard.md`).
Machine: {machine_line()}.

Input: the {len(texts):,} NSMC reviews cleaned with `transforms.clean.clean_text`, as a clean-corpus
directory of {PARTS} Parquet parts, and NSMC x{LARGE}: every review {LARGE} times under {LARGE} ids
({PARTS * LARGE} parts; tokenizers has no cache, so each copy costs what the first did). A
{VOCAB_SIZE:,}-id cased WordPiece trained on the reviews. Rows of one size tokenize the same
texts into the same ids (no special tokens). The pipeline's time is the whole command
(`--seq-len {SEQ_LEN} --packing concat`, Beam's DirectRunner in memory): Python and Beam
start-up, Parquet reading, tokenizing, hashing, the shuffle, sorting, packing, writing
shards and manifest. The baseline times only the `encode_batch` call, on texts already in
memory. Best of {REPEATS} alternating runs each; peak memory is the largest resident set of
the command and all its workers.

| what | ids | seconds | ids / s | peak MiB |
|---|---|---|---|---|
{table}

Ratio pipeline / baseline, end to end:

- NSMC x{LARGE} ({raw_large_tokens / 1e6:.1f}M ids): **{large_ratio:.2f}x** (target ≥ {TARGET}x: {verdict} it);
- NSMC ({raw_tokens / 1e6:.1f}M ids): **{ratio:.2f}x** ({small_verdict} the target at this size).

The command has a fixed cost the baseline does not pay: {fixed:.2f} s on an empty corpus
(Python, `import apache_beam` alone is ~1.3 s, pipeline construction, the runner), {fixed / wall:.0%} of
the NSMC run. Past it, an added id costs the pipeline no more than the baseline: from NSMC to NSMC x{LARGE} the
pipeline added {marginal:,.0f} ids/s and the baseline {raw_marginal:,.0f} ids/s
(**{marginal / raw_marginal:.2f}x**). So {size_line}, and a corpus of the
10-70 GB this tool is for (billions of ids) runs at the marginal rate. The pipeline calls
`encode_batch_fast` (no offsets, which packing does not need) in batches of 1,024 texts on a
helper thread while this thread copies the previous batch's ids into numpy; document ids are
hashed in numpy (`transforms.hashing`); ids cross the shuffle as {manifest['dtype']}.

Multi-processing (one worker process per core) was {modes}, with {mp_peak / peak:.1f}x the
memory, and gives the same manifest and shards; the default stays in memory, where the
tokenizer already uses every core. In memory, the shuffle holds every id of the corpus
(peak {large_peak:,.0f} MiB at NSMC x{LARGE}): corpora that do not fit go to a distributed runner
(README, "Running at scale").

Output (NSMC): {sequences:,} sequences of {SEQ_LEN} ids in {len(manifest['splits']['train']['shards'])} train + \
{len(manifest['splits']['validation']['shards'])} validation shards ({manifest['dtype']}); \
{non_pad / (sequences * SEQ_LEN):.1%} of the slots hold ids (the rest is [PAD]); \
{counters['documents_split']} documents split across sequences, {counters['documents_empty']} empty documents counted.
"""


if __name__ == "__main__":
    raise SystemExit(run_stage("shard", run))
