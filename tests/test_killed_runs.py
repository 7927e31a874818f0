"""Killed runs (issue 8): SIGKILL mid-write leaves nothing a later stage accepts; a rerun gives the clean result."""
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.run import main as run_main

REPO = Path(__file__).resolve().parent.parent


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("clean", "rejected") for p in sorted((directory / sub).glob("*"))}


def start_run(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.run", "--output", str(out), "--quiet", *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the run ended before it could be killed mid-write")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def clean_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "corpus"
    assert run_main(["--output", str(out), "--quiet"]) == 0
    return digest(out)


@pytest.mark.slow
def test_run_killed_while_writing_parts_then_rerun(tmp_path, clean_result):
    out = tmp_path / "corpus"
    proc = start_run(out)
    kill_when(proc, lambda: any((out / "_temporary" / "clean").glob("part-*")))
    assert not (out / "stats.json").exists()
    assert not (out / "clean").exists()  # nothing outside the staging directory
    # the staging directory of a dead run is not an earlier run: a plain rerun replaces it
    assert run_main(["--output", str(out), "--quiet"]) == 0
    assert digest(out) == clean_result
    assert not (out / "_temporary").exists()


def test_run_killed_while_publishing_needs_overwrite(tmp_path, clean_result, capsys):
    out = tmp_path / "corpus"
    assert run_main(["--output", str(out), "--quiet"]) == 0
    (out / "stats.json").unlink()  # the state of a run killed after moving its files, before stats.json
    assert run_main(["--output", str(out), "--quiet"]) == 2
    assert "unfinished" in capsys.readouterr().err
    assert run_main(["--output", str(out), "--quiet", "--overwrite"]) == 0
    assert digest(out) == clean_result
