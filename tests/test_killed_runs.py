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


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    from pipeline import tokenize

    root = tmp_path_factory.mktemp("chain")
    assert run_main(["--output", str(root / "corpus"), "--quiet"]) == 0
    assert tokenize.main(["--input", str(root / "corpus"), "--output", str(root / "tokenizer"),
                          "--vocab-size", "900", "--quiet"]) == 0
    return root / "corpus", root / "tokenizer"


def shard_command(corpus: Path, tokenizer: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.shard", "--input", str(corpus), "--tokenizer", str(tokenizer),
            "--output", str(out), "--seq-len", "32", "--shard-tokens", "2000", "--quiet"]


@pytest.mark.slow
def test_shard_killed_mid_run_is_refused_downstream_then_rerun(tmp_path, corpus_and_tokenizer):
    from transforms import token_shards

    corpus, tokenizer = corpus_and_tokenizer
    reference = tmp_path / "reference"
    subprocess.run(shard_command(corpus, tokenizer, reference), cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "shards"
    proc = subprocess.Popen(shard_command(corpus, tokenizer, out), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any((out / "_temporary").rglob("*.arrow")))
    assert not (out / "manifest.json").exists()
    assert {p.name for p in out.iterdir()} <= {"_temporary", ".koforge.lock"}  # nothing outside the staging directory
    with pytest.raises(token_shards.TokenShardError, match="manifest"):
        token_shards.load_manifest(str(out))
    subprocess.run(shard_command(corpus, tokenizer, out), cwd=REPO, check=True, capture_output=True)
    files = lambda d: {str(p.relative_to(d)): p.read_bytes().replace(str(d).encode(), b"")  # noqa: E731
                       for p in sorted(d.rglob("*")) if p.is_file() and p.name != "tokenizer_report.json"}
    assert files(out) == files(reference)
    assert token_shards.load_manifest(str(out))["splits"]["train"]["sequences"] > 0
