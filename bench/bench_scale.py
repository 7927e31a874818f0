"""Issue 15: what one worker holds at growing corpus size, from the pipeline's own `max_*` counts.

`python -m bench.bench_scale` (also in `make bench`): synthetic corpora built from the NSMC
sample with a controlled near-duplicate share (0%, 25%, 50% of the records are lightly
edited copies of others), at growing sizes, each run through `python -m pipeline.run` with
`--num-shards` growing with the size, so a partition holds the same number of records at
every size. Every step reports the most one key / one bundle held as a `max_*` count
(pipeline/beam_run.py; combined by max, not summed) in stats.json's `per_worker_max`. The
section shows those figures and their growth from the smallest to the largest corpus: at a
fixed partition size no per-worker quantity may grow linearly with the corpus.
"""
from __future__ import annotations

import json
import lzma
import random
import time
from pathlib import Path

from bench.bench_clean import run_pipeline
from bench.common import NSMC_PATH, WORK_DIR
from bench.pipeline_near_dedup import edited

SIZES = (40_000, 80_000, 160_000)  # records per corpus
SHARES = (0.0, 0.25, 0.5)  # near-duplicate share: edited copies of other records
# --num-shards = size / this: the partition size stays fixed, and there are at least 2.5x as many partitions as
# LSH bands (see READING: how many copies of a candidate pair arrive depends on the partitions up to the bands)
RECORDS_PER_PARTITION = 1_000
HANGUL_FIRST, HANGUL_SYLLABLES = 0xAC00, 11_172  # 가 .. 힣
STEPS = {  # per_worker_max key -> what it is
    "max_dedup_partition_records": "records in one text partition (exact dedup + MinHash)",
    "max_band_partition_entries": "LSH band entries in one band partition (buckets -> pairs)",
    "max_fetch_requests": "text requests one text partition receives (verification; repeats included)",
    "max_fetch_distinct_requests": "texts one text partition sends (each once per partition that needs it)",
    "max_verify_pairs": "candidate pairs one partition receives (repeats included)",
    "max_verify_distinct_pairs": "distinct candidate pairs one partition verifies",
    "max_components_entries": "adjacency entries one key holds in a components round",
    "max_write_records": "records one writer writes",
    "max_write_removed_ids": "removed ids one writer holds",
}


def unique_text(review: str, rng: random.Random) -> str:
    """A review with random Hangul syllables as long as itself (at least 10) appended: two such texts are near
    duplicates only by chance, whichever reviews they come from (see write_corpus)."""
    return review + " " + "".join(chr(HANGUL_FIRST + rng.randrange(HANGUL_SYLLABLES)) for _ in range(max(10, len(review))))


def write_corpus(texts: list[str], target: Path, size: int, share: float, seed: int = 0) -> None:
    """`size` records: (1 - share) of them originals (`unique_text` of a random NSMC review), the rest lightly
    edited copies of random originals.

    The originals are made unique because a growing sample of one fixed population (NSMC)
    holds more of that population's natural near-duplicate pairs per record as it grows (N
    records hold ~N^2 / 297k of them): per-partition figures would then grow with the corpus
    because of the sample, not of the pipeline. Here the near-duplicate structure is the same
    at every size: each original has `share / (1 - share)` edited copies on average.
    """
    rng = random.Random(seed)
    originals = [unique_text(texts[rng.randrange(len(texts))], rng) for _ in range(size - int(size * share))]
    with open(target, "w", encoding="utf-8") as out:
        for number, text in enumerate(originals):
            out.write(json.dumps({"id": f"o{number}", "text": text}, ensure_ascii=False) + "\n")
        for copy in range(size - len(originals)):
            text = edited(originals[rng.randrange(len(originals))], rng)
            out.write(json.dumps({"id": f"c{copy}", "text": text}, ensure_ascii=False) + "\n")


def run(data_path: Path, workdir: Path) -> str:
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    results = {}
    for share in SHARES:
        for size in SIZES:
            corpus = workdir / f"corpus-{int(share * 100)}-{size}.jsonl"
            write_corpus(texts, corpus, size, share)
            shards = size // RECORDS_PER_PARTITION
            wall, _, stats = run_pipeline(corpus, workdir / "out", "--num-shards", str(shards))
            results[share, size] = (shards, wall, stats)
            corpus.unlink()
    return section(results, time.perf_counter() - started)


def section(results: dict, seconds: float) -> str:
    lines = [
        "## Scale: what one worker holds (issue 15)",
        "",
        f"Command: `python -m bench.bench_scale` (also in `make bench`). Took {seconds:.0f} s. Corpora of "
        f"{', '.join(f'{s:,}' for s in SIZES)} records built from NSMC (`write_corpus`): a share of them (0%, 25%, "
        f"50%) lightly edited copies of the others (one random insertion, substitution or deletion), the others "
        f"unique texts (an NSMC review with random syllables appended), so the duplicate structure is the same at "
        f"every size. `--num-shards` = records / "
        f"{RECORDS_PER_PARTITION:,}, so a partition holds the same number of records at every size. Each figure is "
        "the largest amount one key / one bundle held in that step, as the pipeline counts it (`per_worker_max` in "
        "stats.json: `max_*` counts combined by max). Growth: the largest corpus's figure over the smallest's, "
        f"for {SIZES[-1] // SIZES[0]}x the records.",
        "",
        "| step: the most one worker held | share | " + " | ".join(f"{s:,} records" for s in SIZES)
        + " | growth |",
        "|---|---:|" + "---:|" * len(SIZES) + "---:|",
    ]
    for key, meaning in STEPS.items():
        for share in SHARES:
            values = [results[share, size][2].get("per_worker_max", {}).get(key) for size in SIZES]
            if not any(values):
                continue
            growth = f"{values[-1] / values[0]:.2f}x" if values[0] else "–"
            lines.append(f"| `{key}`: {meaning} | {share:.0%} | "
                         + " | ".join(f"{v:,}" if v is not None else "–" for v in values) + f" | {growth} |")
    lines += ["", "| share | records | --num-shards | near duplicates removed | clusters | component rounds "
              "(unconverged nodes) | wall |", "|---:|---:|---:|---:|---:|---|---:|"]
    for (share, size), (shards, wall, stats) in results.items():
        near = stats["near_dedup"]
        components = near.get("components", {})
        lines.append(f"| {share:.0%} | {size:,} | {shards} | {near['removed']:,} | {near['clusters']:,} | "
                     f"{components.get('rounds')} ({components.get('unconverged_nodes')}) | {wall:.1f} s |")
    lines += ["", READING, ""]
    return "\n".join(lines)


READING = """How to read it. Flat (growth ~1.0x at every share): the records of a dedup partition, the
band entries of a band partition, the records and removed ids of a writer, the adjacency a
components key holds, and the distinct pairs a partition verifies and the texts it sends: no step
holds the whole corpus's edges, pairs or removed ids, and the work per partition follows the
partition, not the corpus. What grows a little is the number of *copies*: a candidate pair found
in several of the 16 LSH bands comes once from every band partition that found it (its bands'
buckets sit in different band partitions), and so do the requests for its texts; with P band
partitions a pair found in all 16 bands arrives in P * (1 - (1 - 1/P)^16) copies on average: 13.3
for P = 40, 15.2 for P = 160 (1.14x), never more than 16. So the repeats-included figures
(`max_fetch_requests`, `max_verify_pairs`) grow with --num-shards toward that bound of the bands,
not with the corpus; each pair is verified once (`max_verify_distinct_pairs`). The 0% rows hold
almost nothing: unique texts have no near duplicates (the few pairs are chance collisions).
The corpora's originals are made unique (`write_corpus`) because a growing sample of NSMC holds
more of NSMC's natural near-duplicate pairs per record as it grows: with plain NSMC samples
(BENCHMARKS.md before this change) the per-partition pairs grew 1.3-1.4x for 4x records because of
the sample, not of the pipeline."""


if __name__ == "__main__":
    from bench.common import RESULTS_DIR

    text = run(NSMC_PATH, WORK_DIR / "scale")
    (RESULTS_DIR / "scale.md").write_text(text, encoding="utf-8")
    print(text)
