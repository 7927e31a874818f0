"""`python -m distill.train --device xla` on XLA's CPU backend (PJRT_DEVICE=CPU), one replica.

Every objective trains through logging steps, checkpoints and a `--resume`, each part in a fresh
process started the way a user starts it (torch_xla.launch included). DISTILL_XLA_METRICS
(distill.device.StepMetrics) counts what XLA did between the loop's marks, which is what a TPU
would pay for: graphs are compiled only while a variant of the step first appears (the first
three steps, the first logging step, the first checkpoint), and every training step executes
exactly one graph and reads nothing back to the host. A run without dropout in fp32 gives the CPU
path's losses: the XLA path trains the same model.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch_xla")

from test_distill_fixtures import TINY_STUDENT, build_world  # noqa: E402  (tests/, put on sys.path by conftest.py)

ROOT = Path(__file__).resolve().parents[1]
SETTLING_STEPS = 3  # step 1 creates the optimizer state, step 2 reads it, step 3 follows the first log


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("xla")
    paths = build_world(root)
    paths["student"] = paths["student_config"]
    paths["student_without_dropout"] = root / "student-without-dropout.json"
    paths["student_without_dropout"].write_text(
        json.dumps({**TINY_STUDENT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}), encoding="utf-8")
    return paths


def train(world, output: Path, *extra: str, device: str = "xla", metrics_file: Path | None = None) -> None:
    """distill.train in a fresh process, as a user runs it."""
    env = {key: value for key, value in os.environ.items() if key != "DISTILL_XLA_METRICS"}
    env.update(PJRT_DEVICE="CPU", PYTHONPATH=str(ROOT))
    if metrics_file is not None:
        env["DISTILL_XLA_METRICS"] = str(metrics_file)
    command = [sys.executable, "-m", "distill.train", "--shards", str(world["shards"]), "--teacher",
               str(world["teacher"]), "--output", str(output), "--device", device, "--batch-size", "16",
               "--loader-workers", "0", "--quiet", *extra]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]


def processes(metrics_file: Path) -> list[list[dict]]:
    """The marks of DISTILL_XLA_METRICS, one list per process (each starts with a "start" mark)."""
    runs: list[list[dict]] = []
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        mark = json.loads(line)
        if mark["what"] == "start":
            runs.append([])
        runs[-1].append(mark)
    return runs


def logged(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("objective, extra", [
    ("minilm", ()),
    ("minilmv2", ("--relation-heads", "8", "--grad-accum", "2")),  # accumulation stays inside the one step graph
    ("distilbert", ()),  # masking, MLM logits of both models, a projection to the teacher's width
])
def test_xla_steps_compile_once_and_never_read_the_host(world, tmp_path, objective, extra):
    output, metrics_file = tmp_path / "out", tmp_path / "xla-metrics.jsonl"
    common = ("--student", str(world["student"]), "--objective", objective, "--max-steps", "16", "--log-every", "2",
              "--save-every", "4", *extra)
    train(world, output, *common, "--run-steps", "8", metrics_file=metrics_file)
    train(world, output, *common, "--resume", metrics_file=metrics_file)

    runs = processes(metrics_file)
    assert [[mark["step"] for mark in run if mark["what"] == "step"] for run in runs] == [list(range(1, 9)),
                                                                                          list(range(9, 17))]
    for run in runs:
        steps, logs, saves = ([mark for mark in run if mark["what"] == what] for what in ("step", "log", "save"))
        assert [len(logs), len(saves)] == [4, 2]
        # Inside every step: the step's one graph, and no value read back to the host.
        assert [(mark["executions"], mark["to_host"]) for mark in steps] == [(1, 0)] * len(steps), steps
        # Compilation: only while the variants first appear, never again.
        assert [mark["compiles"] for mark in steps[SETTLING_STEPS:]] == [0] * (len(steps) - SETTLING_STEPS), steps
        assert [mark["compiles"] for mark in logs[1:] + saves[1:]] == [0] * 4, logs + saves
        assert sum(mark["compiles"] for mark in steps[:SETTLING_STEPS]) >= 1  # the counters see compilation ...
        assert all(mark["to_host"] > 0 for mark in logs + saves)  # ... and host reads, where they belong

    curve = logged(output)
    assert [record["step"] for record in curve] == list(range(2, 17, 2))
    assert all(math.isfinite(record["loss"]) for record in curve)
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert (output / "student" / "model.safetensors").is_file()
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["step-000000012", "step-000000016"]


def test_xla_fp32_run_gives_the_cpu_losses(world, tmp_path):
    """Without dropout (whose masks come from another generator on XLA) and in fp32, the XLA and the
    CPU run compute the same losses, step after step: the same gradients, clipping and AdamW
    updates. (A larger AdamW epsilon keeps the first updates, g/(|g|+eps), from turning the float
    rounding of near-zero gradients into visible differences.) It failed while moving the student
    to the XLA device untied the MLM decoder from the word embeddings (hidden_cosine 0.2% off at
    step 2): distill.loop.prepare re-ties them."""
    common = ("--student", str(world["student_without_dropout"]), "--objective", "distilbert", "--max-steps", "4",
              "--log-every", "1", "--precision", "fp32", "--adam-eps", "1e-3")
    train(world, tmp_path / "cpu", *common, device="cpu")
    train(world, tmp_path / "xla", *common)
    keys = ["loss", "soft_target_kl", "mlm_cross_entropy", "hidden_cosine"]
    cpu, xla = logged(tmp_path / "cpu"), logged(tmp_path / "xla")
    assert [record["step"] for record in xla] == [1, 2, 3, 4]
    for on_cpu, on_xla in zip(cpu, xla):
        for key in keys:
            assert on_xla[key] == pytest.approx(on_cpu[key], rel=2e-5), (on_cpu["step"], key)
