"""Determinism across the whole chain (issue 8): run -> tokenize -> shard, twice and with 1 vs 2 workers."""
import hashlib
from pathlib import Path

import pytest

from pipeline import shard, tokenize
from pipeline.run import run

MULTIPROCESS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def checksums(directory: Path, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file; the run's own directory, which manifests name, is masked out."""
    root = str(directory.parent).encode()
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes().replace(root, b"ROOT")).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name not in ignore}


def chain(root: Path, beam_args: list[str]) -> dict[str, dict[str, str]]:
    corpus, tokenizer, shards = root / "corpus", root / "tokenizer", root / "shards"
    run(["--output", str(corpus), "--keep-fields", "date", "--quiet", *beam_args])
    assert tokenize.main(["--input", str(corpus), "--output", str(tokenizer), "--vocab-size", "900",
                          "--stratify-by", "date:month", "--sample-fraction", "0.5", "--quiet"]) == 0
    assert shard.main(["--input", str(corpus), "--tokenizer", str(tokenizer), "--output", str(shards),
                       "--seq-len", "64", "--shard-tokens", "20000", "--quiet", *beam_args]) == 0
    return {
        "corpus": checksums(corpus, ignore=("stats.json",)),  # stats.json holds timings
        "tokenizer": checksums(tokenizer, ignore=("tokenizer_report.json",)),  # ditto
        "shards": checksums(shards, ignore=("tokenizer_report.json",)),
    }


@pytest.mark.slow
def test_chain_is_byte_identical_across_runs_and_worker_counts(tmp_path):
    first = chain(tmp_path / "a", [])
    second = chain(tmp_path / "b", [])
    with_two_processes = chain(tmp_path / "c", MULTIPROCESS)
    assert len(first["corpus"]) >= 8 and len(first["shards"]) >= 4
    assert first == second == with_two_processes
