"""`--preset NAME`: one command-line option that stands for a target's concrete Beam options.

    python -m pipeline.run --input 'gs://B/raw/*.jsonl.gz' --output gs://B/corpus \\
        --preset dataflow --project P --region europe-west4 --temp_location gs://B/tmp

`expand_preset` replaces `--preset NAME` by the options of that target (runners/<target>.py
says what each one is for). Every option the user passes explicitly wins over the preset's
default of the same name (the defaults come first, and Beam keeps an option's last value);
`--experiments` adds up instead (a user experiment replaces the
preset's experiment of the same key only). A preset that needs options the user did not
give is an error before any work starts, and so is an unknown preset.

`python -m runners.presets` lists the presets; with arguments it prints what they expand to.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from runners import dataflow, direct, flink, portable, spark

PRESET_OPTION = "--preset"
EXPERIMENTS = ("experiments", "experiment")  # Beam's two spellings of its one additive, comma-separated option


@dataclass(frozen=True)
class Preset:
    summary: str
    options: Callable[[dict[str, str | None]], list[str]]  # the user's options -> the preset's defaults
    required: tuple[tuple[str, ...], ...] = ()  # each entry: the user must give one of these options
    hint: str = ""  # how to get what is required, shown when it is missing


PRESETS: dict[str, Preset] = {
    "direct": Preset("Beam's in-process FnApiRunner, one in-memory worker (the default)", direct.in_memory_options),
    "direct-multiprocess": Preset("Beam's in-process FnApiRunner, one worker process per core",
                                  direct.multiprocess_options),
    "prism": Preset("Beam's Go Prism runner (downloaded by Beam on first use; not tested here)", direct.prism_options),
    "portable-embedded": Preset("PortableRunner with Beam's embedded job server, LOOPBACK workers",
                                portable.embedded_options),
    "dataflow": Preset("Google Cloud Dataflow, autoscaling n2-standard-4 workers, Dataflow Shuffle",
                       dataflow.options, dataflow.REQUIRED,
                       "e.g. --project my-project --region europe-west4 --temp_location gs://my-bucket/tmp"),
    "spark": Preset("Apache Spark through a Beam job server, DOCKER SDK harnesses", spark.options,
                    spark.REQUIRED, f"start a job server ({spark.JOB_SERVER_COMMAND}) and pass "
                                    "--job_endpoint localhost:8099, or pass --spark_master_url spark://HOST:7077"),
    "flink": Preset("Apache Flink through a Beam job server, DOCKER SDK harnesses", flink.options,
                    flink.REQUIRED, f"start a job server ({flink.JOB_SERVER_COMMAND}) and pass "
                                    "--job_endpoint localhost:8099, or pass --flink_master HOST:8081"),
}


def parse_options(beam_args: list[str]) -> list[tuple[str, str | None]]:
    """(name, value) of every `--name=value`, `--name value` and bare `--flag`, in order."""
    parsed = []
    index = 0
    while index < len(beam_args):
        token = beam_args[index]
        index += 1
        if not token.startswith("--"):
            continue
        name, equals, value = token[2:].partition("=")
        if not equals:
            value = None
            if index < len(beam_args) and not beam_args[index].startswith("--"):
                value = beam_args[index]
                index += 1
        parsed.append((name, value))
    return parsed


def pop_preset(beam_args: list[str]) -> tuple[str | None, list[str]]:
    """The preset's name (None without one) and the other arguments, untouched."""
    names, rest = [], []
    index = 0
    while index < len(beam_args):
        token = beam_args[index]
        index += 1
        if token == PRESET_OPTION:
            if index == len(beam_args) or beam_args[index].startswith("--"):
                raise ValueError(f"--preset needs a name: one of {', '.join(PRESETS)}")
            names.append(beam_args[index])
            index += 1
        elif token.startswith(PRESET_OPTION + "="):
            names.append(token.partition("=")[2])
        else:
            rest.append(token)
    if len(names) > 1:
        raise ValueError(f"--preset given {len(names)} times ({', '.join(names)}); pass one")
    return (names[0] if names else None), rest


def _experiment_key(experiment: str) -> str:
    return experiment.partition("=")[0]


def expand_preset(beam_args: list[str]) -> list[str]:
    """Replace `--preset NAME` by that target's Beam options; the user's own options win.

    Arguments without a preset come back unchanged. Raises ValueError for an unknown preset
    or when the preset needs an option the user did not give.
    """
    name, rest = pop_preset(list(beam_args))
    if name is None:
        return rest
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown --preset {name!r}; choose one of {', '.join(PRESETS)}")
    parsed = parse_options(rest)
    given = dict(parsed)
    missing = [" or ".join(f"--{option}" for option in alternatives) for alternatives in preset.required
               if not any(option in given for option in alternatives)]
    if missing:
        raise ValueError(f"--preset {name} needs {', '.join(missing)}" + (f"; {preset.hint}" if preset.hint else ""))
    user_experiments = {_experiment_key(part) for option, value in parsed if option in EXPERIMENTS and value
                        for part in value.split(",")}
    defaults = []
    for option in preset.options(given):
        option_name, _, value = option[2:].partition("=")
        if option_name in EXPERIMENTS:
            if _experiment_key(value) not in user_experiments:
                defaults.append(option)
        elif option_name not in given:
            defaults.append(option)
    # Defaults first: Beam's parser keeps an option's last value, so even an alias the user spells wins.
    return [*defaults, *rest]


def pipeline_options(beam_args: list[str]):
    """The `PipelineOptions` of a pipeline command: `--preset` expanded; by default Beam's
    in-process FnApiRunner with one in-memory worker (runners/direct.py says why not
    DirectRunner), whose workers log warnings only, not every bundle.

    Measured on 2 cores (BENCHMARKS.md), DirectRunner's multi_processing mode is slower for
    both pipelines, with 2.5-3.5x the memory: every batch crosses gRPC twice and each worker
    imports Beam (and pipeline.shard's tokenizer already uses every core). On many cores pass
    `--direct_num_workers 0 --direct_running_mode multi_processing` (`--preset
    direct-multiprocess`): the output is the same. Raises ValueError for a bad preset.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, WorkerOptions

    options = PipelineOptions(expand_preset(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = direct.IN_PROCESS_RUNNER
    if standard.runner == direct.IN_PROCESS_RUNNER:
        direct.shorten_state_sampling()
    worker = options.view_as(WorkerOptions)
    if worker.default_sdk_harness_log_level is None:
        worker.default_sdk_harness_log_level = "WARNING"
    return options


def describe() -> str:
    lines = ["presets (python -m pipeline.run ... --preset NAME [options]):"]
    for name, preset in PRESETS.items():
        required = ", ".join(" or ".join(f"--{o}" for o in alternatives) for alternatives in preset.required)
        lines.append(f"  {name:<20} {preset.summary}" + (f"; needs {required}" if required else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv in (["-h"], ["--help"]):
        print(describe())
        return 0
    try:
        print(" ".join(expand_preset(argv)))
    except ValueError as error:
        print(f"runners.presets: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
