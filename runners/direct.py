"""DirectRunner on this machine: one in-memory worker, or one worker process per core.

In-memory is the default of `pipeline.run`: on a 2-core machine it is faster than
multi-processing, where every element crosses from the runner process to a worker process
and back over gRPC (BENCHMARKS.md). With many cores, multi-processing wins: the
`direct_num_workers=0` of `direct-multiprocess` means one worker process per core (Beam
counts them on the machine that runs the job). The output is byte-identical either way.
"""
from __future__ import annotations


def in_memory_options(given: dict[str, str | None]) -> list[str]:
    return ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def multiprocess_options(given: dict[str, str | None]) -> list[str]:
    return ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]
