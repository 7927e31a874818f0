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
# Beam's state sampler is a thread per bundle that wakes every 200 ms (after a ramp from 2 ms), and the end of a
# bundle joins it: each long bundle ends with up to 200 ms (~100 ms on average) of idle wait, and the in-process
# runner runs the stages one after another. Sampling every 10 ms keeps the samples (Beam's msecs counters) without
# the wait: measured ~0.5 s of wall time of pipeline.run on NSMC (9-10 s; docs/scale.md).
IN_PROCESS_SAMPLING_MS = 10


def shorten_state_sampling() -> None:
    """The in-process workers' state sampler wakes every IN_PROCESS_SAMPLING_MS (above); Beam has no option for it.

    Changes the default of Beam's StateSampler in this process only (worker processes of other
    runners keep theirs); left alone if that signature is not the one this was written for.
    """
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (IN_PROCESS_SAMPLING_MS,)


def in_memory_options(given: dict[str, str | None]) -> list[str]:
    return [f"--runner={IN_PROCESS_RUNNER}", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def multiprocess_options(given: dict[str, str | None]) -> list[str]:
    return [f"--runner={IN_PROCESS_RUNNER}", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]


def prism_options(given: dict[str, str | None]) -> list[str]:
    """Beam's Go runner: downloaded by Beam on first use (needs internet), not run by our tests (docs/scale.md)."""
    return ["--runner=PrismRunner"]
