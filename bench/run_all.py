"""`make bench`: run every stage benchmark on the real NSMC sample and write BENCHMARKS.md.

Each `bench/bench_<stage>.py` exposes `run(data_path, workdir) -> str` returning a Markdown
section and writes it to `bench/results/<stage>.md` when run on its own
(`python -m bench.bench_<stage>`). This script runs them in the data's order (or only
collects the stored sections with `--collect-only`) and concatenates the sections.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from bench.common import NSMC_PATH, RESULTS_DIR, WORK_DIR

STAGES = ["clean", "near_dedup", "scale", "spark", "tokenize", "shard", "distill", "distill_value", "extend", "xla"]
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collect-only", action="store_true", help="only assemble bench/results/*.md")
    parser.add_argument("--only", nargs="*", default=None, help="stages to run (default: all)")
    args = parser.parse_args(argv)
    stages = args.only or STAGES
    if not args.collect_only:
        if not NSMC_PATH.exists():
            print(f"skipping benchmarks: {NSMC_PATH} is absent", file=sys.stderr)
            return 0
        for stage in stages:
            module = importlib.import_module(f"bench.bench_{stage}")
            print(f"== bench {stage}", flush=True)
            started = time.perf_counter()
            section = module.run(NSMC_PATH, WORK_DIR / stage)
            (RESULTS_DIR / f"{stage}.md").write_text(section, encoding="utf-8")
            print(section)
            print(f"(bench {stage} took {time.perf_counter() - started:.0f} s)", flush=True)
    sections = [
        (RESULTS_DIR / f"{stage}.md").read_text(encoding="utf-8")
        for stage in STAGES
        if (RESULTS_DIR / f"{stage}.md").exists()
    ]
    header = (
        "# Benchmarks\n\n"
        "Made by `make bench` (`python -m bench.run_all`) on the real NSMC sample "
        "(`../shared/data/nsmc_reviews.jsonl.xz`, 297,192 reviews). Each section names the "
        "command that produced it; every target is a ratio against a baseline measured in the "
        "same run.\n\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
