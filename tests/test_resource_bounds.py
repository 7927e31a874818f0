"""Resource bounds (issue 8): a huge line and a giant duplicate cluster stay within bounded memory."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.run import run

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mib(args: list[str]) -> float:
    """Peak resident memory of a command, from GNU time."""
    proc = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB=%M", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.rsplit("PEAK_KB=", 1)[1].split()[0]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs GNU time")
def test_a_100_mb_line_does_not_raise_memory(tmp_path):
    small, huge = tmp_path / "small.txt", tmp_path / "huge.txt"
    lines = "".join(f"메모리 상한을 확인하는 {i}번째 보통 댓글입니다\n" for i in range(1000))
    small.write_text(lines)
    with open(huge, "w") as handle:
        handle.write(lines)
        for _ in range(100):
            handle.write("가나다라마바사아자차" * 34953)  # ~1 MiB of UTF-8 a write, no newline: one 100 MiB line
        handle.write("\n" + lines)
    command = [sys.executable, "-m", "pipeline.run", "--no-near-dedup", "--quiet", "--max-line-bytes", str(4 << 20)]
    baseline = peak_rss_mib(command + ["--input", str(small), "--output", str(tmp_path / "a")])
    with_line = peak_rss_mib(command + ["--input", str(huge), "--output", str(tmp_path / "b")])
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert stats["dropped"]["line_too_long"] == 1 and stats["output_records"] == 1000
    assert with_line < baseline + 40, (baseline, with_line)  # the line itself would be 100+ MiB


def test_one_giant_near_duplicate_cluster(tmp_path):
    base = "대통령은 최저임금 한심하다 정말, 배달앱 물가 최고였어요!! 교육부가 그래도 대학 입시 더 지켜봐야겠다"
    texts = [f"{base} {i:04d}" for i in range(3000)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"r{i:05d}", "text": t}, ensure_ascii=False)
                              for i, t in enumerate(texts)))
    stats = run(["--input", str(path), "--output", str(tmp_path / "o"), "--write-clusters", "--quiet"])
    histogram = stats["near_dedup"]["cluster_size_histogram"]
    assert histogram == {"3000": 1}
    kept = {row["id"] for p in (tmp_path / "o" / "clean").glob("*.parquet") for row in pq.read_table(p).to_pylist()}
    assert "r00000" in kept and not any(f"r{i:05d}" in kept for i in range(1, 3000))
    assert stats["input_records"] == stats["output_records"] + sum(stats["dropped"].values())
