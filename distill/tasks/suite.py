"""`--suite SUITE.json`: one file naming each task's files and hyper-parameters (no torch).

    {
      "name": "my-student",                       # optional: the table row's label
      "seeds": 3,                                 # optional: fine-tuning runs per task
      "defaults": {"max_examples": 2000},         # optional: hyper-parameters for every task
      "tasks": [
        {"task": "korsts", "train": "korsts/sts-train.tsv.xz", "eval": "korsts/sts-dev.tsv.xz", "epochs": 5},
        {"task": "kornli", "train": "kornli/xnli.dev.ko.tsv.xz", "eval": "kornli/xnli.test.ko.tsv.xz"}
      ]
    }

Relative paths are relative to the suite file's directory. A task appears at most once (one table
column each). Precedence, lowest first: the task's defaults (KoELECTRA's config), the suite's
`defaults`, the task's entry, then options given on the command line (`--epochs`, `--max-examples`,
...). Unknown keys, task names and values of the wrong type are refused with the reason.
See docs/evaluate.md#suites.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass

from distill.tasks import HYPERPARAMETER_NAMES, QA_ONLY, HyperParameters, get_task

INTEGERS = {"epochs", "batch_size", "max_length", "eval_batch_size", "max_examples", "max_eval_examples",
            "doc_stride", "max_query_length", "max_answer_length", "n_best"}
OPTIONAL = {"max_examples", "max_eval_examples"}  # may be null: all examples
FRACTIONS = {"weight_decay", "warmup_proportion"}  # in [0, 1)
ENTRY_KEYS = ("task", "train", "eval")
TOP_KEYS = ("name", "seeds", "defaults", "tasks")


class SuiteError(ValueError):
    """The suite file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class TaskRun:
    task: str
    train: str
    eval: str
    hyperparameters: HyperParameters


@dataclass(frozen=True)
class Suite:
    name: str | None
    seeds: int | None
    runs: list[TaskRun]


def unknown(key: str, known, where: str) -> SuiteError:
    close = difflib.get_close_matches(key, list(known), n=1)
    return SuiteError(f"{where}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                      + f" (known: {', '.join(known)})")


def check_value(name: str, value, where: str):
    """A hyper-parameter's value, type-checked."""
    if value is None and name in OPTIONAL:
        return None
    if name in INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SuiteError(f"{where}: {name} must be a positive integer, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SuiteError(f"{where}: {name} must be a number, not {value!r}")
    if name in FRACTIONS and not 0 <= value < 1:
        raise SuiteError(f"{where}: {name} must be in [0, 1), not {value!r}")
    if name not in FRACTIONS and not value > 0:
        raise SuiteError(f"{where}: {name} must be positive, not {value!r}")
    return float(value)


def hyperparameters(values: dict, where: str) -> dict:
    if not isinstance(values, dict):
        raise SuiteError(f"{where} must be an object of hyper-parameters")
    checked = {}
    for key, value in values.items():
        if key not in HYPERPARAMETER_NAMES:
            raise unknown(key, HYPERPARAMETER_NAMES, where)
        checked[key] = check_value(key, value, where)
    return checked


def resolve_path(path, base: str, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise SuiteError(f"{where} must be a file path")
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def parse_suite(data, base: str, overrides: dict | None = None, where: str = "suite") -> Suite:
    """The suite's runs with every hyper-parameter resolved; `overrides` (command-line options) win."""
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: expected a JSON object with a 'tasks' list")
    for key in data:
        if key not in TOP_KEYS:
            raise unknown(key, TOP_KEYS, where)
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{where}: 'tasks' must be a non-empty list of {{\"task\", \"train\", \"eval\", ...}} objects")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise SuiteError(f"{where}: name must be a string")
    seeds = data.get("seeds")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SuiteError(f"{where}: seeds must be a positive integer, not {seeds!r}")
    shared = hyperparameters(data.get("defaults", {}), f"{where}: defaults")
    runs, seen = [], set()
    for position, entry in enumerate(entries):
        at = f"{where}: tasks[{position}]"
        if not isinstance(entry, dict) or "task" not in entry:
            raise SuiteError(f"{at} must be an object with task, train and eval")
        try:
            task = get_task(entry["task"])
        except ValueError as error:
            raise SuiteError(f"{at}: {error}") from None
        at = f"{at} ({task.name})"
        if task.name in seen:
            raise SuiteError(f"{at}: the task appears twice (one table column each)")
        seen.add(task.name)
        for key in ("train", "eval"):
            if key not in entry:
                raise SuiteError(f"{at}: missing {key!r} (the {key} file of the task)")
        own = hyperparameters({k: v for k, v in entry.items() if k not in ENTRY_KEYS}, at)
        qa_only = [k for k in own if k in QA_ONLY and task.head != "qa"]
        if qa_only:
            raise SuiteError(f"{at}: {', '.join(qa_only)} apply to korquad only")
        merged = {**shared, **own, **(overrides or {})}
        merged = {k: v for k, v in merged.items() if task.head == "qa" or k not in QA_ONLY}
        runs.append(TaskRun(task.name, resolve_path(entry["train"], base, f"{at}: train"),
                            resolve_path(entry["eval"], base, f"{at}: eval"), task.defaults.updated(merged)))
    return Suite(name, seeds, runs)


def read_suite(path: str, overrides: dict | None = None) -> Suite:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise SuiteError(f"--suite {path}: no such file") from None
    except (OSError, ValueError) as error:
        raise SuiteError(f"--suite {path} is not a readable JSON file: {error}") from error
    return parse_suite(data, os.path.dirname(os.path.abspath(path)), overrides, f"--suite {path}")


__all__ = ["Suite", "TaskRun", "SuiteError", "parse_suite", "read_suite"]
