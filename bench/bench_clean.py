"""Issue 2 benchmark: `clean_text` vs the seed's clean, and `pipeline.run` vs the plain loop.

`python -m bench.bench_clean` (or `make bench`). Both comparisons are ratios measured in
the same run on the real NSMC sample.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from bench.common import NSMC_PATH, RESULTS_DIR, WORK_DIR, machine_line, python_cmd, read_nsmc_texts, timed_subprocess
from bench.seed_clean import clean as seed_clean
from transforms.clean import clean_batch, clean_text

REPEATS = 3
BATCH = 20_000


def best_of(function, items: list) -> float:
    """Best wall time of REPEATS passes of `function` over the items (single core)."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for item in items:
            function(item)
        times.append(time.perf_counter() - started)
    return min(times)


def run_pipeline(data_path: Path, out: Path, *extra: str) -> tuple[float, float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, _ = timed_subprocess(python_cmd("-m", "pipeline.run", "--input", str(data_path), "--output",
                                                str(out), "--quiet", *extra))
    return wall, peak, json.loads((out / "stats.json").read_text())


def run_loop(data_path: Path, out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    wall, peak, _ = timed_subprocess(python_cmd("-m", "bench.baseline_loop", str(data_path), str(out / "loop.parquet")))
    return wall, peak


def run(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    texts = read_nsmc_texts(data_path)
    batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
    seed_seconds = best_of(seed_clean, texts)
    ours_seconds = best_of(clean_text, texts)
    batch_seconds = best_of(clean_batch, batches)
    loop_wall, loop_peak = run_loop(data_path, workdir)
    run_wall, run_peak, stats = run_pipeline(data_path, workdir / "run", "--no-near-dedup")
    multi_wall, multi_peak, _ = run_pipeline(data_path, workdir / "run-mp", "--no-near-dedup", "--direct_num_workers",
                                             "2", "--direct_running_mode", "multi_processing")
    loop_wall_2, _ = run_loop(data_path, workdir)  # bracket the pipeline runs: the loop's time is their mean
    loop_mean = (loop_wall + loop_wall_2) / 2
    ratio = run_wall / loop_mean
    return f"""## Clean pipeline (issue 2)

Command: `make bench` (`python -m bench.bench_clean`). Machine: {machine_line()}.
Data: {len(texts):,} NSMC reviews (`{data_path.name}`).

| measurement | baseline | ours | ratio | target |
|---|---|---|---|---|
| clean, single core (best of {REPEATS}) | seed `clean()`: {len(texts) / seed_seconds:,.0f} texts/s | `clean_text`: {len(texts) / ours_seconds:,.0f} texts/s | {seed_seconds / ours_seconds:.2f}x throughput | >= 1.0x |
| clean, single core, batches of {BATCH:,} (best of {REPEATS}) | seed `clean()`: {len(texts) / seed_seconds:,.0f} texts/s | `clean_batch`: {len(texts) / batch_seconds:,.0f} texts/s | {seed_seconds / batch_seconds:.2f}x throughput | (used by the pipeline) |
| read + clean + filter + exact dedup + Parquet | plain loop: {loop_mean:.1f} s (runs: {loop_wall:.1f}, {loop_wall_2:.1f}), peak {loop_peak:,.0f} MiB | `pipeline.run --no-near-dedup`: {run_wall:.1f} s, peak {run_peak:,.0f} MiB | {ratio:.2f}x wall time | <= 1.5x, peak <= 2048 MiB |
| the same, DirectRunner multi-processing with 2 workers | plain loop: {loop_mean:.1f} s | `--direct_num_workers 2 --direct_running_mode multi_processing`: {multi_wall:.1f} s, peak {multi_peak:,.0f} MiB | {multi_wall / loop_mean:.2f}x wall time | (why the default is one in-memory worker) |

The pipeline kept {stats['output_records']:,} of {stats['input_records']:,} records
(dropped: {', '.join(f'{k} {v:,}' for k, v in stats['dropped'].items())}); the loop keeps the same
texts. Wall times are whole processes (interpreter start and imports included); peak memory
is the largest resident set of the process tree.
"""


if __name__ == "__main__":
    section = run(NSMC_PATH, WORK_DIR / "clean")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "clean.md").write_text(section, encoding="utf-8")
    print(section)
