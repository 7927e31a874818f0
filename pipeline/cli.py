"""The one command-line convention of every koforge command (run, tokenize, shard, distill.train/evaluate).

- Errors: `python -m CMD: error: ...` on stderr, exit status 2, from `UsageError` (or the
  parser itself); options cannot be abbreviated.
- Pipelines take Beam's own options after ours. Anything neither we nor Beam know is an
  error with a suggestion, and so is one of ours spelt the Beam way (`--min_chars`): Beam
  would otherwise keep it as an unknown option and the run would do something else.
- `--quiet`: no progress lines (stderr). The human summary goes to stdout; `--json` prints
  the machine-readable summary there instead.
- `--overwrite` wherever a command writes an output directory; `OutputLock` refuses a second
  run into a directory that a running job holds.
- Ctrl-C: one line, exit status 130, nothing published (outputs are staged, then published).
- `--help` is fast: commands import Beam, torch and transformers only after parsing.

See docs/cli.md.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

PROGRESS_SECONDS = 5.0
LOCK_FILE = ".koforge.lock"
INTERRUPTED_EXIT = 130
USAGE_EXIT = 2
# Beam logs this on every import when the optional Google clients are absent; it is not about the run.
BEAM_IMPORT_NOISE = ("apitools not found",)


class UsageError(Exception):
    """Bad arguments or unusable input, found before (or instead of) work: exit status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the convention's defaults: no abbreviations, defaults shown in --help."""

    def __init__(self, command: str, description: str, epilog: str | None = None):
        super().__init__(prog=f"python -m {command}", description=description, epilog=epilog,
                         allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def own_options(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]

    def parse_args(self, args=None, namespace=None):
        """argparse's parse_args, with a suggestion for a misspelt option (commands without Beam options)."""
        parsed, rest = self.parse_known_args(args, namespace)
        if rest:
            self.error(unknown_argument(rest[0], self.own_options()))
        return parsed


def unknown_argument(token: str, candidates: list[str]) -> str:
    """The error for an argument nobody understood: the option it resembles, if any."""
    if not token.startswith("--"):
        return f"unexpected argument {token!r}"
    flag = token.split("=", 1)[0]
    spelt_ours = "--" + flag[2:].replace("_", "-")
    if spelt_ours in candidates:
        return f"unknown option {flag}; did you mean {spelt_ours}?"
    close = difflib.get_close_matches(flag, candidates, n=1, cutoff=0.75)
    return f"unknown option {flag}" + (f"; did you mean {close[0]}?" if close else "")


def add_output_options(parser: ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the {what} of an earlier run in the output directory (only what this "
                             "command writes is removed)")


def add_reporting_options(parser: ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--json", action="store_true",
                        help="print the machine-readable summary (JSON) on stdout instead of the human one")


def add_limit_option(parser: ArgumentParser, unit: str) -> None:
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help=f"read only the first N {unit} (quick trials)")


def add_beam_options(parser: ArgumentParser) -> None:
    from runners.presets import PRESETS  # light: no Beam import

    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a target's Beam options in one word (python -m runners.presets lists them); "
                             "default: Beam's in-process runner")
    parser.epilog = ((parser.epilog + "\n") if parser.epilog else "") + (
        "Any other option must be a Beam pipeline option (--runner, --direct_num_workers, --project, ...).")


ENGINES = ("beam", "spark")


def add_engine_options(parser: ArgumentParser) -> None:
    """--engine and the Spark settings (docs/spark.md); Beam's settings are --preset and Beam's own options."""
    parser.add_argument("--engine", choices=ENGINES, default="beam",
                        help="beam: Apache Beam on any Beam runner (--preset, Beam options); spark: Apache Spark "
                             "through PySpark (pip install 'koforge[spark]'; docs/spark.md); same output bytes")
    parser.add_argument("--spark-master", default=None, metavar="URL",
                        help="--engine spark: local[*] (the default), local[N], spark://HOST:7077, yarn, k8s://...; "
                             "a SparkSession already active (spark-submit) is used as it is")
    parser.add_argument("--spark-conf", action="append", default=[], type=spark_conf, metavar="KEY=VALUE",
                        help="--engine spark: a Spark setting (e.g. spark.executor.memory=4g); repeatable")


def add_pipeline_command_options(parser: ArgumentParser, limit_unit: str, outputs: str) -> None:
    """The options every pipeline command on an engine (pipeline.run, pipeline.shard) ends with: --limit, the output,
    reporting, the engine and its settings, Beam's presets."""
    add_limit_option(parser, limit_unit)
    add_output_options(parser, outputs)
    add_reporting_options(parser)
    add_engine_options(parser)
    add_beam_options(parser)


def spark_conf(text: str) -> tuple[str, str]:
    """An argparse type: KEY=VALUE of a Spark setting."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or not key.startswith("spark."):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with a Spark key (spark.executor.memory=4g)")
    return key.strip(), value


def check_engine_arguments(args: argparse.Namespace, beam_args: list[str]) -> None:
    """Settings of one engine given to the other are an error, not silently unused."""
    if args.engine == "spark" and beam_args:
        raise UsageError(f"{beam_args[0]} is a Beam option; --engine spark takes --spark-master and --spark-conf")
    if args.engine == "beam" and (args.spark_master or args.spark_conf):
        raise UsageError("--spark-master and --spark-conf need --engine spark")


def number(kind: type = int, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], int | float]:
    """An argparse type: an int or float within an interval; the message names the interval.

    The one definition of every numeric option's check (e.g. `number(float, 0, 1, high_open=True)`
    is a fraction in [0, 1)).
    """
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        below = low is not None and (value < low or (low_open and value == low))
        above = high is not None and (value > high or (high_open and value == high))
        if below or above or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"{value} is not in {interval}")
        return value
    return parse


positive_int = number(int, 1)


def parse_with_beam_options(parser: ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options and the Beam options after them; an option that is neither stops the command."""
    args, rest = parser.parse_known_args(argv)
    check_beam_arguments(parser, rest)
    if getattr(args, "preset", None):
        rest = ["--preset", args.preset, *rest]
    return args, rest


def check_beam_arguments(parser: ArgumentParser, rest: list[str]) -> None:
    """Exit 2 for anything in `rest` that Beam would not understand as one of its own options.

    One of ours spelt with underscores is refused first, before Beam is imported.
    """
    ours = parser.own_options()
    for token in rest:
        if token.startswith("--") and "--" + token.split("=", 1)[0][2:].replace("_", "-") in ours:
            parser.error(unknown_argument(token, ours))
    known = beam_option_names() if any(token.startswith("--") for token in rest) else set()
    takes_value = False  # the previous token was `--name` without `=value`: this one may be its value
    for token in rest:
        if not token.startswith("--"):
            if not takes_value:
                parser.error(unknown_argument(token, ours))
            takes_value = False
            continue
        if token.split("=", 1)[0] not in known:
            parser.error(unknown_argument(token, ours + sorted(known)) + " (not an option of this command, nor of Beam)")
        takes_value = "=" not in token


def beam_option_names() -> set[str]:
    """Every `--option` Beam's PipelineOptions classes declare (as Beam itself collects them)."""
    quiet_beam_import()
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    pending, seen = list(PipelineOptions.__subclasses__()), set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:  # an option two classes declare: the first one is enough
            pass
    return {flag for action in parser._actions for flag in action.option_strings}


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in BEAM_IMPORT_NOISE)


def quiet_beam_import() -> None:
    """Keep Beam's import-time warnings about absent optional clients off a normal run's stderr."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropImportNoise) for f in root.filters):
        root.addFilter(_DropImportNoise())
        for handler in root.handlers:
            handler.addFilter(_DropImportNoise())


def runner_in_use(options) -> str:
    """The Beam runner these PipelineOptions run on, as the summaries print it (e.g. "FnApiRunner (in_memory, 1
    worker)"): the one actually asked for, so a switch (DirectRunner -> Prism) is never silent (docs/scale.md)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    if name.rsplit(".", 1)[-1] in ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner"):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers
        name += (f" ({direct.direct_running_mode}, "
                 f"{'one worker per core' if workers == 0 else f'{workers} worker(s)'})")
    return name


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Progress lines on stderr: at most one every PROGRESS_SECONDS, none with --quiet."""

    def __init__(self, command: str, enabled: bool = True, stream: TextIO | None = None,
                 every: float = PROGRESS_SECONDS):
        self.command = command
        self.stream = (stream or sys.stderr) if enabled else None
        self.every = every
        self.started = self.last = time.perf_counter()

    def say(self, message: str, now: float | None = None) -> None:
        """A line now (phase changes)."""
        if self.stream is not None:
            elapsed = (time.perf_counter() if now is None else now) - self.started
            print(f"{self.command} [{format_duration(elapsed)}] {message}", file=self.stream, flush=True)

    def tick(self, message: str | Callable[[], str]) -> None:
        """A line if the last one is PROGRESS_SECONDS old; `message` may be a callable, built only then."""
        now = time.perf_counter()
        if self.stream is not None and now - self.last >= self.every:
            self.last = now
            self.say(message() if callable(message) else message, now)

    def count(self, done: int, unit: str, total: int | None = None) -> None:
        """`done` units so far, their rate and (with a total) the share."""
        def line() -> str:
            rate = done / max(self.last - self.started, 1e-9)
            share = f" of {total:,} ({done / total:.0%})" if total else ""
            return f"{done:,}{share} {unit}, {rate:,.0f}/s"
        self.tick(line)


def emit_summary(args: argparse.Namespace, human: str, machine: dict) -> None:
    """The human summary, or with --json the machine-readable one, on stdout."""
    if getattr(args, "json", False):
        print(json.dumps(machine, indent=2, ensure_ascii=False, sort_keys=True, default=str))
    else:
        print(human)


class OutputLock:
    """`DIR/.koforge.lock` while a command writes DIR: a second run into DIR is refused.

    The lock holds the host and pid; a lock left by a process that no longer runs on this
    host (a killed run) is taken over. Remote outputs (gs://, s3://) cannot be locked
    atomically through pyarrow.fs and are not locked (docs/cli.md).
    """

    def __init__(self, output: str):
        self.path = None if "://" in output else os.path.join(os.path.abspath(output), LOCK_FILE)
        self.output = output
        self.created_directory = False

    def __enter__(self) -> OutputLock:
        if self.path is None:
            return self
        self.created_directory = not os.path.isdir(os.path.dirname(self.path))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise UsageError(f"{self.output} is being written by another run ({holder}); wait for it to "
                                     f"finish, or delete {self.path} if that run is gone") from None
                os.unlink(self.path)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise UsageError(f"cannot lock {self.output}: {self.path} keeps reappearing")

    def _holder(self) -> str | None:
        """'pid N on HOST' when the lock's process still runs (or runs elsewhere), None when it is stale."""
        try:
            host, pid = open(self.path, encoding="utf-8").read().split()
            pid_number = int(pid)
        except (OSError, ValueError):
            return None
        if host != socket.gethostname():
            return f"pid {pid} on {host}"
        try:
            os.kill(pid_number, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"pid {pid}"

    def __exit__(self, *exc) -> None:
        """Release the lock; a directory made only to hold it (the run failed early) goes too."""
        if self.path is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self.created_directory and not os.listdir(os.path.dirname(self.path)):
            os.rmdir(os.path.dirname(self.path))


def run_command(command: str, body: Callable[[], object]) -> int:
    """Run a command's body with the convention's exits: 0, 2 for a UsageError, 130 on Ctrl-C."""
    try:
        body()
    except UsageError as error:
        print(f"python -m {command}: error: {error}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print(f"python -m {command}: interrupted; nothing was published", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0
