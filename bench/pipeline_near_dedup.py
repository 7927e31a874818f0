"""Issue 3 pipeline figures: `pipeline.run` with near dedup vs the plain loop, and growth at 1x/2x/4x.

Called from bench/bench_near_dedup.py (`pipeline_rows`); on its own:
`python -m bench.pipeline_near_dedup` prints the rows.
"""
from __future__ import annotations

import json
import lzma
import random
from pathlib import Path

from bench.bench_clean import run_loop, run_pipeline
from bench.common import NSMC_PATH, WORK_DIR

EDIT_CHARACTERS = "ㅋㅎ가나다은는이가을를 .!"
GROWTH_FACTORS = (1, 2, 4)


def edited(text: str, rng: random.Random) -> str:
    """One light random edit, so a replica is not an exact duplicate (it may be a near one)."""
    position = rng.randrange(len(text) + 1)
    kind = rng.randrange(3)
    if kind == 0 or not text:
        return text[:position] + rng.choice(EDIT_CHARACTERS) + text[position:]
    position = min(position, len(text) - 1)
    if kind == 1:
        return text[:position] + rng.choice(EDIT_CHARACTERS) + text[position + 1:]
    return text[:position] + text[position + 1:]


def write_replicated(data_path: Path, target: Path, factor: int, seed: int = 0) -> int:
    """NSMC once as it is plus `factor - 1` edited replicas, as uncompressed JSON lines."""
    rng = random.Random(seed)
    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as out:
        for replica in range(factor):
            for record in records:
                if replica:
                    record = {**record, "id": f"{record['id']}-r{replica}", "text": edited(record["text"], rng)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records) * factor


def pipeline_rows(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    plain = workdir / "nsmc-1x.jsonl"
    sizes = {factor: write_replicated(data_path, workdir / f"nsmc-{factor}x.jsonl", factor) for factor in GROWTH_FACTORS}
    loop_wall, loop_peak = run_loop(plain, workdir / "loop")
    near_wall, near_peak, near_stats = run_pipeline(plain, workdir / "near")
    loop_wall_2, _ = run_loop(plain, workdir / "loop")
    loop_mean = (loop_wall + loop_wall_2) / 2
    growth = {}
    for factor in GROWTH_FACTORS:
        wall, peak, stats = (near_wall, near_peak, near_stats) if factor == 1 else run_pipeline(
            workdir / f"nsmc-{factor}x.jsonl", workdir / f"near-{factor}x")
        growth[factor] = (wall, peak, stats)
    rows = [
        "| measurement | baseline | ours | ratio | target |",
        "|---|---|---|---|---|",
        f"| read + clean + filter + dedup + write (uncompressed JSON lines) | plain loop (exact dedup only): "
        f"{loop_mean:.1f} s (runs: {loop_wall:.1f}, {loop_wall_2:.1f}), peak {loop_peak:,.0f} MiB | "
        f"`pipeline.run` with near dedup: {near_wall:.1f} s, peak {near_peak:,.0f} MiB | "
        f"{near_wall / loop_mean:.2f}x wall time | <= 2.0x |",
    ]
    base_wall = growth[1][0]
    growth_rows = ["| input | records | wall | vs 1x | peak memory | near duplicates removed | exact removed |",
                   "|---|---|---|---|---|---|---|"]
    for factor, (wall, peak, stats) in growth.items():
        growth_rows.append(
            f"| {factor}x | {sizes[factor]:,} | {wall:.1f} s | {wall / base_wall:.2f}x | {peak:,.0f} MiB | "
            f"{stats['dropped'].get('near_duplicate', 0):,} | {stats['dropped'].get('exact_duplicate', 0):,} |")
    return f"""### Full pipeline with near dedup

`pipeline.run` (default options: DirectRunner in one process, 2-grams, 128 permutations,
threshold 0.8) on the NSMC sample as uncompressed JSON lines, against the plain loop of the
clean benchmark on the same file, measured in the same run:

{chr(10).join(rows)}

Growth: the NSMC sample plus edited replicas (each replica record gets one random
character insertion, substitution or deletion, so it is not an exact duplicate; most become
near duplicates of their original). Target: 4x input costs <= 4.6x the 1x time.

{chr(10).join(growth_rows)}
"""


if __name__ == "__main__":
    print(pipeline_rows(NSMC_PATH, WORK_DIR / "near_dedup_pipeline"))
