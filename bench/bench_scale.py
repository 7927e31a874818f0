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
RECORDS_PER_PARTITION = 4_000  # --num-shards = size / this: the partition size stays fixed
STEPS = {  # per_worker_max key -> what it is
    "max_dedup_partition_records": "records in one text partition (exact dedup + MinHash)",
    "max_band_partition_entries": "LSH band entries in one band partition (buckets -> pairs)",
    "max_fetch_requests": "texts one text partition is asked for (verification)",
    "max_verify_pairs": "candidate pairs one partition verifies",
    "max_components_entries": "adjacency entries one key holds in a components round",
    "max_write_records": "records one writer writes",
    "max_write_removed_ids": "removed ids one writer holds",
}


def write_corpus(records: list[dict], target: Path, size: int, share: float, seed: int = 0) -> None:
    """`size` records: (1 - share) of them distinct NSMC records, the rest edited copies of those."""
    rng = random.Random(seed)
    originals = records[: size - int(size * share)]
    with open(target, "w", encoding="utf-8") as out:
        for record in originals:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        for copy in range(size - len(originals)):
            source = originals[rng.randrange(len(originals))]
            out.write(json.dumps({**source, "id": f"{source['id']}-c{copy}", "text": edited(source["text"], rng)},
                                 ensure_ascii=False) + "\n")


def run(data_path: Path, workdir: Path) -> str:
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    random.Random(1).shuffle(records)
    results = {}
    for share in SHARES:
        for size in SIZES:
            corpus = workdir / f"corpus-{int(share * 100)}-{size}.jsonl"
            write_corpus(records, corpus, size, share)
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
        f"{', '.join(f'{s:,}' for s in SIZES)} records built from NSMC: a share of them (0%, 25%, 50%) lightly "
        f"edited copies of the others (one random insertion, substitution or deletion). `--num-shards` = records / "
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
band entries of a band partition, the records and removed ids of a writer, and the adjacency a
components key holds (at 25% and 50%): no step holds the whole corpus's edges or removed ids.
Two kinds of growth remain. (1) At 0% the figures are tiny (hundreds) and grow because the
corpora are samples of one fixed population: the natural near-duplicate pairs among N sampled
reviews grow as N^2, i.e. per partition as N; a real corpus whose duplicate rate does not change
with its size does not do that. (2) The texts fetched and pairs verified by one partition grow
sublinearly (about 1.3-1.4x for 4x) at 25% and 50%: a bucket larger than the all-pairs bound
pairs every member with its first 8 members (transforms/near_pairs.py), the largest bucket
(short, common reviews) grows with the corpus, and half of its pairs go to the partitions of
those 8 representatives (a pair goes to one of its two records' partitions, picked by a hash of
the pair). Before that choice every pair went to its first record's partition, the smaller one,
which loaded the low partitions twice as much as the average: the largest `max_verify_pairs`
here fell from 27,668 to 14,658 (50%, 160,000 records) with it. That hot spot is the
verification step's, not the components'."""


if __name__ == "__main__":
    from bench.common import RESULTS_DIR

    text = run(NSMC_PATH, WORK_DIR / "scale")
    (RESULTS_DIR / "scale.md").write_text(text, encoding="utf-8")
    print(text)
