"""Beam's in-process FnApiRunner on this machine: one in-memory worker, or one worker process per core.

The default runner of `pipeline.run` and `pipeline.shard` is the FnApiRunner itself, not
`DirectRunner`: since Beam 2.6x, `DirectRunner` hands a batch pipeline to the Go Prism
runner whenever it can download it (a machine with internet), so users on a laptop would
get a runner nothing here has run. Prism is an opt-in preset (`--preset prism`).

In-memory is the default: on a 2-core machine it is faster than multi-processing, where
every element crosses from the runner process to a worker process and back over gRPC
(BENCHMARKS.md). With many cores, multi-processing wins: the `direct_num_workers=0` of
`direct-multiprocess` means one worker process per core (Beam counts them on the machine
that runs the job). The output is byte-identical either way.
"""
from __future__ import annotations

IN_PROCESS_RUNNER = "FnApiRunner"


def in_memory_options(given: dict[str, str | None]) -> list[str]:
    return [f"--runner={IN_PROCESS_RUNNER}", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def multiprocess_options(given: dict[str, str | None]) -> list[str]:
    return [f"--runner={IN_PROCESS_RUNNER}", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]


def prism_options(given: dict[str, str | None]) -> list[str]:
    """Beam's Go runner: downloaded by Beam on first use (needs internet), not run by our tests (docs/scale.md)."""
    return ["--runner=PrismRunner"]
