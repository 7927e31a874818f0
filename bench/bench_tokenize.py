"""Benchmark of `python -m pipeline.tokenize` against calling `tokenizers` directly on the same text.

The NSMC reviews are cleaned with transforms.clean.clean_text (empty results dropped) and
written as a clean-corpus directory (one Parquet part, rows sorted by id). Then, alternating,
REPEATS times each, in fresh processes:

- baseline: read the Parquet text column into a list, `BertWordPieceTokenizer(strip_accents=False,
  lowercase=False).train_from_iterator(list, vocab_size=30000, min_frequency=2,
  limit_alphabet=2**21)`, save vocab.txt and tokenizer.json;
- pipeline: `python -m pipeline.tokenize` with the same parameters (defaults: every document
  read twice, 1% held out and evaluated, the four tokenizer files and the report written).

Wall time from process start to exit, CPU time (user + system) and peak resident memory of
each. The development machine is shared with other work, so runs alternate and the verdict
uses the median of the per-round ratios (each pipeline run against the baseline run just
before it); best runs and CPU time are shown beside it. Target: pipeline <= 1.1x baseline.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
from pathlib import Path

from bench.common import (NSMC_PATH, RESULTS_DIR, WORK_DIR, machine_line, python_cmd, read_nsmc_texts,
                          timed_subprocess, write_clean_corpus)

TARGET = 1.1
REPEATS = 5
VOCAB_SIZE = 30000
MIN_FREQUENCY = 2
NO_ALPHABET_LIMIT = 1 << 21  # more than there are code points (BertWordPieceTokenizer refuses None)


def write_corpus(data_path: Path, root: Path) -> tuple[int, int]:
    """Cleaned NSMC as a contract-1 corpus directory; return (documents, UTF-8 bytes of text)."""
    from transforms.clean import clean_text

    texts = [text for text in map(clean_text, read_nsmc_texts(data_path)) if text]
    ids = [f"nsmc-{index:06d}" for index in range(len(texts))]
    write_clean_corpus(root, ids, texts)
    return len(texts), sum(len(text.encode("utf-8")) for text in texts)


def baseline(corpus_file: str, output: str) -> None:
    """The direct call: an in-memory list into BertWordPieceTokenizer.train_from_iterator."""
    import pyarrow.parquet as pq
    from tokenizers import BertWordPieceTokenizer

    texts = pq.read_table(corpus_file, columns=["text"]).column("text").to_pylist()
    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                       lowercase=False)
    tokenizer.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=MIN_FREQUENCY,
                                  limit_alphabet=NO_ALPHABET_LIMIT, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    Path(output).mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(output)
    tokenizer.save(str(Path(output) / "tokenizer.json"))


def run(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    documents, text_bytes = write_corpus(data_path, corpus)
    corpus_file = str(corpus / "clean" / "part-00000-of-00001.parquet")
    commands = {
        "baseline": python_cmd("-m", "bench.bench_tokenize", "--baseline", corpus_file, str(workdir / "baseline")),
        "pipeline": python_cmd("-m", "pipeline.tokenize", "--input", str(corpus), "--output",
                               str(workdir / "tokenizer"), "--vocab-size", str(VOCAB_SIZE), "--min-frequency",
                               str(MIN_FREQUENCY), "--overwrite"),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "pipeline": []}
    for _ in range(REPEATS):
        for name, command in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, peak_mib, _ = timed_subprocess(command)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            runs[name].append((seconds, cpu, peak_mib))
            print(f"{name}: {seconds:.1f} s, {cpu:.1f} CPU s, {peak_mib:.0f} MiB", file=sys.stderr, flush=True)
    walls = {name: [run[0] for run in values] for name, values in runs.items()}
    ratio = statistics.median(p / b for p, b in zip(walls["pipeline"], walls["baseline"]))
    best_ratio = min(walls["pipeline"]) / min(walls["baseline"])
    cpu_ratio = (statistics.median(run[1] for run in runs["pipeline"])
                 / statistics.median(run[1] for run in runs["baseline"]))
    report = json.loads((workdir / "tokenizer" / "tokenizer_report.json").read_text(encoding="utf-8"))
    evaluation = report["evaluation"]

    def row(name: str) -> str:
        times = walls[name]
        return (f"| {name} | {min(times):.1f} | {statistics.median(times):.1f} | "
                f"{statistics.median(run[1] for run in runs[name]):.1f} | {', '.join(f'{t:.1f}' for t in times)} | "
                f"{max(run[2] for run in runs[name]):,.0f} |")

    verdict = "meets" if ratio <= TARGET else "MISSES"
    return "\n".join([
        "## Tokenizer training (`pipeline.tokenize`)",
        "",
        "Command: `make bench` or `python -m bench.bench_tokenize`. " + machine_line() + ".",
        "",
        f"Input: the NSMC reviews cleaned with `clean_text` ({documents:,} non-empty documents, "
        f"{text_bytes / 1e6:.1f} MB of UTF-8 text) as one Parquet part. Both sides train a cased WordPiece "
        f"vocabulary of {VOCAB_SIZE:,} (min frequency {MIN_FREQUENCY}, no alphabet limit, accents kept), each in a "
        "fresh process, alternating, timed from process start to exit:",
        "",
        "- baseline: Parquet text column into a list, `BertWordPieceTokenizer.train_from_iterator(list)`, "
        "`save_model` + `save`;",
        "- pipeline: `python -m pipeline.tokenize --input CORPUS --output DIR --vocab-size 30000 --min-frequency 2` "
        "(two streaming passes over the Parquet, 1% held out and evaluated, four tokenizer files and the report "
        "written atomically).",
        "",
        "| run | best wall s | median wall s | median CPU s | all runs, wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
        row("baseline"),
        row("pipeline"),
        "",
        f"Ratio pipeline / baseline, median of the {REPEATS} per-round wall-time ratios: **{ratio:.2f}x**; "
        f"target <= {TARGET}x: {verdict}. Best run against best run: {best_ratio:.2f}x; median CPU time: "
        f"{cpu_ratio:.2f}x. The machine is shared with other work (see the spread of the runs), which is why "
        "the rounds alternate.",
        "",
        f"The pipeline's vocabulary, measured on its {report['eval_documents']:,} held-out documents: [UNK] "
        f"{evaluation['unk_rate']:.4%} of tokens, {evaluation['fertility']:.3f} tokens per word, "
        f"{evaluation['whole_word_share']:.1%} of words kept whole; {report['alphabet']['characters']:,} characters, "
        f"all with their ## form.",
        "",
    ])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline"]:
        baseline(*argv[1:3])
        return 0
    section = run(NSMC_PATH, WORK_DIR / "tokenize")
    print(section)
    (RESULTS_DIR / "tokenize.md").write_text(section, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
