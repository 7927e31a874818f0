"""The one command-line convention (pipeline.cli): errors, suggestions, Beam options, locks, progress, exits."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("pipeline.run", "pipeline.tokenize", "pipeline.shard", "distill.train", "distill.evaluate")


def parser_with_beam_options() -> cli.ArgumentParser:
    parser = cli.ArgumentParser("pipeline.example", "an example command")
    parser.add_argument("--min-chars", type=int, default=10)
    cli.add_limit_option(parser, "lines")
    cli.add_reporting_options(parser)
    cli.add_beam_options(parser)
    return parser


def usage_error(capsys, parse, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        parse(list(argv))
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_beam_options_pass_and_ours_parse():
    args, beam_args = cli.parse_with_beam_options(parser_with_beam_options(), [
        "--min-chars", "3", "--runner", "DirectRunner", "--direct_num_workers=2", "--preset", "direct"])
    assert (args.min_chars, args.preset, args.limit, args.quiet, args.json) == (3, "direct", None, False, False)
    assert beam_args == ["--preset", "direct", "--runner", "DirectRunner", "--direct_num_workers=2"]


def test_misspelt_and_unknown_options_stop_with_a_suggestion(capsys):
    parse = lambda argv: cli.parse_with_beam_options(parser_with_beam_options(), argv)  # noqa: E731
    assert usage_error(capsys, parse, "--min_chars", "3") == (
        "python -m pipeline.example: error: unknown option --min_chars; did you mean --min-chars?")
    assert "unknown option --limt; did you mean --limit?" in usage_error(capsys, parse, "--limt", "100")
    assert "did you mean --direct_num_workers?" in usage_error(capsys, parse, "--direct_num_worker", "2")
    assert "unknown option --near-dedup-treshold" in usage_error(capsys, parse, "--near-dedup-treshold", "0.9")
    assert "unexpected argument 'stray'" in usage_error(capsys, parse, "stray")
    assert "argument --preset: invalid choice" in usage_error(capsys, parse, "--preset", "dataflw")
    assert "argument --limit: 0 is not in [1, inf)" in usage_error(capsys, parse, "--limit", "0")


def test_no_abbreviations(capsys):
    parser = cli.ArgumentParser("pipeline.example", "x")
    parser.add_argument("--overwrite", action="store_true")
    assert "unknown option --over" in usage_error(capsys, parser.parse_args, "--over")


def test_run_command_exit_statuses(capsys):
    def bad():
        raise cli.UsageError("--input 'x' matches no file")

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run_command("pipeline.example", lambda: None) == 0
    assert cli.run_command("pipeline.example", bad) == 2
    assert capsys.readouterr().err == "python -m pipeline.example: error: --input 'x' matches no file\n"
    assert cli.run_command("pipeline.example", interrupted) == 130
    assert capsys.readouterr().err == "python -m pipeline.example: interrupted; nothing was published\n"


def test_progress_is_throttled_and_quiet_is_silent(monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0, 12.5, 20.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = cli.Progress("pipeline.example", stream=stream, every=5.0)  # started at 0
    for done in (10, 600, 700, 1250):  # at 1, 6, 7 and 12.5 s
        progress.count(done, "records")
    assert stream.getvalue().splitlines() == ["pipeline.example [0m06s] 600 records, 100/s",
                                              "pipeline.example [0m12s] 1,250 records, 100/s"]
    silent = cli.Progress("pipeline.example", enabled=False, every=0.0)
    silent.say("nothing")  # no stream: nothing written anywhere, no error
    assert silent.stream is None


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    output = tmp_path / "out"
    with cli.OutputLock(str(output)):
        assert (output / cli.LOCK_FILE).read_text().split() == [socket.gethostname(), str(os.getpid())]
        with pytest.raises(cli.UsageError, match="being written by another run"):
            with cli.OutputLock(str(output)):
                pass
    assert not output.exists()  # made only to hold the lock, and the run wrote nothing
    output.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (output / cli.LOCK_FILE).write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")
    with cli.OutputLock(str(output)):
        assert (output / cli.LOCK_FILE).read_text().split()[1] == str(os.getpid())
    assert output.is_dir() and not (output / cli.LOCK_FILE).exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_fast_and_lists_defaults(command):
    """--help imports neither Beam nor torch nor transformers (they take seconds to import)."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['{command}', '--help']\n"
            "try:\n"
            f"    runpy.run_module('{command}', run_name='__main__')\n"
            "except SystemExit as exited:\n"
            "    assert exited.code == 0, exited.code\n"
            "heavy = sorted(m for m in ('apache_beam', 'torch', 'transformers') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "(default:" in result.stdout and "--quiet" in result.stdout and "--json" in result.stdout
    if command.startswith("pipeline."):
        assert "--overwrite" in result.stdout and ("--preset" in result.stdout or command == "pipeline.tokenize")


def test_number_types_name_their_interval():
    import argparse

    fraction = cli.number(float, 0, 1, high_open=True)
    assert fraction("0") == 0.0 and fraction("0.5") == 0.5
    for bad, message in (("1", "1.0 is not in [0, 1)"), ("-0.1", "-0.1 is not in [0, 1)"),
                         ("nan", "nan is not in [0, 1)"), ("half", "'half' is not a number")):
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)")):
            fraction(bad)
    assert cli.positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="'3.5' is not an integer"):
        cli.positive_int("3.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"0 is not in \[1, inf\)"):
        cli.positive_int("0")
    open_below = cli.number(float, 0, 1, low_open=True)
    with pytest.raises(argparse.ArgumentTypeError, match=r"0.0 is not in \(0, 1\]"):
        open_below("0")
    assert open_below("1") == 1.0
