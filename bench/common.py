"""Shared helpers for the benchmarks: data location, timing and peak memory."""
from __future__ import annotations

import json
import lzma
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NSMC_PATH = Path(os.environ.get("NSMC_PATH", ROOT.parent / "shared" / "data" / "nsmc_reviews.jsonl.xz"))
RESULTS_DIR = ROOT / "bench" / "results"
WORK_DIR = ROOT / "bench_output"


def run_stage(stage: str, run) -> int:
    """`python -m bench.bench_<stage>` on its own: run(NSMC, bench_output/<stage>), the section to
    bench/results/<stage>.md and stdout; a skip (exit 0) when the NSMC sample is absent."""
    if not NSMC_PATH.exists():
        print(f"skipping: {NSMC_PATH} is absent", file=sys.stderr)
        return 0
    section = run(NSMC_PATH, WORK_DIR / stage)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{stage}.md").write_text(section, encoding="utf-8")
    print(section)
    return 0


def machine_line() -> str:
    """One line naming the machine, for every section."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def read_nsmc_texts(path: Path = NSMC_PATH) -> list[str]:
    """The raw review texts, in file order."""
    with lzma.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def _tree_rss_kb(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, summed, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def timed_subprocess(args: list[str], cwd: Path = ROOT, env: dict | None = None) -> tuple[float, float, str]:
    """Run a command in a fresh process; return (wall seconds, peak MiB, stdout).

    Peak memory is the largest sum of resident memory over the process and all its
    children (Beam's multi-processing workers included), sampled every 50 ms.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak_kb = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_kb
        while not stop.is_set():
            peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return wall, peak_kb / 1024, stdout


def python_cmd(*module_args: str) -> list[str]:
    """`python -m ...` with the interpreter running the benchmark."""
    return [sys.executable, *module_args]


def write_clean_corpus(root: Path, ids: list[str], texts: list[str], parts: int = 1) -> None:
    """A clean-corpus directory as pipeline.run leaves it (contract 1): `clean/part-*.parquet`,
    record i in part i % parts, rows sorted by id, and a stats.json marking the run finished."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sorted(zip(ids, texts))
    (root / "clean").mkdir(parents=True, exist_ok=True)
    for part in range(parts):
        chunk = records[part::parts]
        pq.write_table(pa.table({"id": pa.array([i for i, _ in chunk], pa.string()),
                                 "text": pa.array([t for _, t in chunk], pa.string())}),
                       root / "clean" / f"part-{part:05d}-of-{parts:05d}.parquet",
                       compression="zstd", row_group_size=128 * 1024)
    stats = {"input_records": len(records), "output_records": len(records), "dropped": {}}
    (root / "stats.json").write_text(json.dumps(stats))
