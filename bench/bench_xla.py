"""The `--device xla` path on XLA's CPU backend: throughput next to eager CPU, and what each step costs XLA.

(a) tokens/s of the same `distill.train` run (NSMC shards, minilm, a 4-layer teacher and a 2-layer
    student) on `--device cpu` (eager) and `--device xla` (PJRT_DEVICE=CPU), in one interpreter
    (.venv-xla: torch 2.9.0 + torch_xla 2.9.0). For information only: XLA's CPU backend is not a TPU.
(b) graphs compiled, graphs executed and device-to-host transfers per step, from DISTILL_XLA_METRICS
    (distill.device.StepMetrics), for every objective: what tests_xla/ asserts, as numbers.
(c) the per-step host read the additive 4D mask removed (issue 20): the student's training step with
    a 2D attention mask through BertForMaskedLM's forward (how distill.train called the models
    before: transformers checks on the host whether the mask is all ones) against distill.models.encode
    with the additive mask, counted the same way.

Run by `make bench` (bench/run_all.py) in .venv, which has no torch_xla: the figures are then made by
`.venv-xla/bin/python -m bench.bench_xla` in a subprocess (`make test-xla` creates that virtualenv);
without it the section says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import NSMC_PATH, RESULTS_DIR, ROOT, WORK_DIR, machine_line

XLA_PYTHON = ROOT / ".venv-xla" / "bin" / "python"
TEACHER = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}
STUDENT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512,
           "max_position_embeddings": 512}
BATCH, STEPS, LOG_EVERY = 16, 40, 10
OBJECTIVES = {"minilm": (), "minilmv2": ("--relation-heads", "8"), "distilbert": ()}


def build_inputs(data_path: Path, workdir: Path) -> dict[str, Path]:
    """NSMC shards (bench_distill's chain), a random teacher of TEACHER's shape with their tokenizer,
    the student's config file."""
    from transformers import BertConfig, BertForMaskedLM

    from bench.bench_distill import build_nsmc_shards
    from distill.data import open_shard_dir

    shards = workdir / "shards"
    if not (shards / "manifest.json").exists():
        build_nsmc_shards(data_path, workdir, train_shards=2)
    teacher = workdir / "teacher"
    if not (teacher / "model.safetensors").exists():
        shard_dir = open_shard_dir(shards)
        import torch

        torch.manual_seed(0)
        BertForMaskedLM(BertConfig(vocab_size=len(shard_dir.vocab), **TEACHER)).save_pretrained(str(teacher))
        for name, content in shard_dir.tokenizer.files.items():
            (teacher / name).write_bytes(content)
    student = workdir / "student.json"
    student.write_text(json.dumps(STUDENT), encoding="utf-8")
    return {"shards": shards, "teacher": teacher, "student": student}


def train(inputs: dict[str, Path], output: Path, device: str, *extra: str, metrics_file: Path | None = None) -> float:
    """One distill.train run in a fresh process; its wall seconds."""
    env = {key: value for key, value in os.environ.items() if key != "DISTILL_XLA_METRICS"}
    env["PJRT_DEVICE"] = "CPU"
    if metrics_file is not None:
        metrics_file.unlink(missing_ok=True)
        env["DISTILL_XLA_METRICS"] = str(metrics_file)
    command = [sys.executable, "-m", "distill.train", "--shards", str(inputs["shards"]), "--teacher",
               str(inputs["teacher"]), "--student", str(inputs["student"]), "--output", str(output), "--overwrite",
               "--device", device, "--batch-size", str(BATCH), "--loader-workers", "1", "--quiet", *extra]
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, check=True)
    return time.perf_counter() - started


def steady_rate(output: Path) -> float:
    """tokens/s over the logged windows after the first (which holds the compilations)."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    later = records[1:]
    return sum(r["tokens"] - p["tokens"] for p, r in zip(records, later)) / sum(
        r["elapsed_s"] - p["elapsed_s"] for p, r in zip(records, later))


def throughput(inputs: dict[str, Path], workdir: Path) -> list[tuple[str, float, float]]:
    """(label, steady tokens/s, wall s) of the minilm run on each path."""
    common = ("--objective", "minilm", "--max-steps", str(STEPS), "--log-every", str(LOG_EVERY), "--save-every",
              str(STEPS))
    rows = []
    for label, device, precision in (("eager CPU, fp32", "cpu", "fp32"), ("XLA CPU backend, fp32", "xla", "fp32"),
                                     ("XLA CPU backend, bf16 (the TPU default)", "xla", "bf16")):
        output = workdir / f"rate-{device}-{precision}"
        wall = train(inputs, output, device, *common, "--precision", precision)
        rows.append((label, steady_rate(output), wall))
    return rows


def step_costs(inputs: dict[str, Path], workdir: Path) -> dict[str, dict]:
    """Per objective, from DISTILL_XLA_METRICS over 12 steps (log every 4, checkpoint at 8 and 12)."""
    costs = {}
    for objective, extra in OBJECTIVES.items():
        marks_file = workdir / f"marks-{objective}.jsonl"
        train(inputs, workdir / f"marks-{objective}", "xla", "--objective", objective, "--max-steps", "12",
              "--log-every", "4", "--save-every", "8", *extra, metrics_file=marks_file)
        marks = [json.loads(line) for line in marks_file.read_text(encoding="utf-8").splitlines()]
        steps = [m for m in marks if m["what"] == "step"]
        logs = [m for m in marks if m["what"] == "log"]
        saves = [m for m in marks if m["what"] == "save"]
        costs[objective] = {
            "compiles": [m["compiles"] for m in steps], "executions": [m["executions"] for m in steps],
            "to_host": [m["to_host"] for m in steps],
            "log_compiles": [m["compiles"] for m in logs], "log_to_host": [m["to_host"] for m in logs],
            "save_compiles": [m["compiles"] for m in saves], "save_to_host": [m["to_host"] for m in saves],
        }
    return costs


def mask_probe(steps: int = 12, warmup: int = 3) -> dict[str, dict]:
    """The student's step (forward, MLM loss, backward, AdamW) on XLA with each way of passing the
    mask: per-step executions, host transfers and compilations after the warm-up, and ms per step."""
    import torch
    import torch_xla
    from transformers import BertConfig, BertForMaskedLM

    from distill.attention import allowed_pairs, attention_bias, row_layout
    from distill.device import StepMetrics
    from distill.models import encode

    device = torch_xla.device()
    results = {}
    for label in ("2D mask through BertForMaskedLM (before)", "additive 4D mask through encode (now)"):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30_000, **{k: v for k, v in STUDENT.items()})
        model = BertForMaskedLM._from_config(config, attn_implementation="sdpa").to(device)
        model.tie_weights()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(5, 30_000, (BATCH, 128), generator=generator)
        ids[:, 100:] = 0  # padding: the mask is not all ones
        segments, positions = row_layout(ids, pad_id=0)
        bias = attention_bias(allowed_pairs(segments), torch.float32)
        batch = {name: tensor.to(device) for name, tensor in
                 (("ids", ids), ("mask", ids != 0), ("bias", bias), ("positions", positions))}

        def step():
            if label.startswith("2D"):
                logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
            else:
                logits = model.cls(encode(model.bert, batch["ids"], batch["bias"], batch["positions"]))
            loss = torch.nn.functional.cross_entropy(logits.view(-1, config.vocab_size), batch["ids"].view(-1),
                                                     ignore_index=0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch_xla.sync()

        for _ in range(warmup):
            step()
        before, started = StepMetrics.counts(), time.perf_counter()
        for _ in range(steps):
            step()
        after = StepMetrics.counts()
        results[label] = {**{key: (after[key] - before[key]) / steps for key in after},
                          "ms": (time.perf_counter() - started) / steps * 1e3}
    return results


def figures(data_path: Path, workdir: Path) -> dict:
    """Everything the section reports; runs in an interpreter with torch_xla."""
    os.environ["PJRT_DEVICE"] = "CPU"  # before torch_xla starts: XLA's CPU backend even on a TPU VM
    import torch
    import torch_xla

    workdir.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(data_path, workdir)
    return {"versions": f"torch {torch.__version__}, torch_xla {torch_xla.__version__}",
            "throughput": throughput(inputs, workdir), "steps": step_costs(inputs, workdir), "mask": mask_probe()}


def section(result: dict) -> str:
    rate_rows = "\n".join(f"| {label} | {rate:,.0f} | {rate / result['throughput'][0][1]:.2f}x | {wall:.0f} s |"
                          for label, rate, wall in result["throughput"])
    step_rows = "\n".join(
        f"| {objective} | {sum(c['compiles'])} ({', '.join(str(n) for n in c['compiles'])}) | "
        f"{max(c['executions'])} | {sum(c['to_host'])} | {sum(c['log_compiles']) + sum(c['save_compiles'])} | "
        f"{c['log_to_host'][0]} / {c['save_to_host'][0]} |"
        for objective, c in result["steps"].items())
    mask_rows = "\n".join(f"| {label} | {m['executions']:.1f} | {m['to_host']:.1f} | {m['compiles']:.1f} | {m['ms']:,.0f} |"
                          for label, m in result["mask"].items())
    return f"""## XLA (`distill.train --device xla` on XLA's CPU backend)

Command: `make bench` or `python -m bench.bench_xla` (figures made in .venv-xla: {result['versions']},
PJRT_DEVICE=CPU). Machine: {machine_line()}, shared with other jobs while this ran (wall figures are noisy;
ratios were measured in the same run). XLA's CPU backend is not a TPU: these figures say what the XLA
path costs and that it stays compiled, not how fast a TPU is. Data: the NSMC shards of the distillation
section (seq 128, vocabulary 30,000); teacher {TEACHER['num_hidden_layers']} layers x {TEACHER['hidden_size']} (random init),
student {STUDENT['num_hidden_layers']} layers x {STUDENT['hidden_size']}; batch {BATCH}, one replica.

### (a) tokens/s of the same minilm run ({STEPS} steps, logged every {LOG_EVERY}; the first window, which holds the compilations, left out)

| path | tokens/s | vs eager CPU | wall of the run |
|---|---:|---:|---:|
{rate_rows}

### (b) What XLA does per step (DISTILL_XLA_METRICS; 12 steps, logged every 4, checkpoints at 8 and 12)

| objective | graphs compiled in steps 1..12 (per step) | graphs executed per step | device-to-host transfers in the 12 steps | compilations in logging/checkpoint steps | transfers of a logging / checkpoint step |
|---|---|---:|---:|---:|---|
{step_rows}

Steps compile only while the step's variants first appear (step 1 creates the optimizer state, step 2
reads it, the step after the first log starts a fresh loss window); after that every step executes its
one graph and reads nothing back to the host. The host reads happen at logging steps (the logged
values) and checkpoints (the state), as designed. `make test-xla` asserts this for every objective,
across `--resume` too (tests_xla/test_xla_train.py).

### (c) The host read the additive mask removed (the student's step alone, mean of 12 steps after 3 warm-ups)

| how the mask reaches attention | graphs executed per step | device-to-host transfers per step | compilations per step | ms per step |
|---|---:|---:|---:|---:|
{mask_rows}

Until the attention-scope change (commit 9c6e2ac), distill.train called both models with a 2D padding
mask; transformers then checks on the host whether that mask is all ones (`_ignore_bidirectional_mask_sdpa`),
which on XLA cuts the lazy graph, executes the part before the check and copies the answer back: once for
the teacher and once for the student, every step (issue 20 counted 40 of 63 executions in 20 steps from
it). distill.models.encode hands the additive [batch, 1, seq, seq] mask to the embeddings and encoder
directly. On XLA's CPU backend the removed read costs little (the ms column is within this loaded
machine's noise; the additive mask itself is a [batch, seq, seq] tensor more to stream through memory);
what it saves is on a TPU, where each read stalls the host's tracing of the next step until the device
has run everything before it.
"""


def skipped(reason: str) -> str:
    return f"""## XLA (`distill.train --device xla` on XLA's CPU backend)

Skipped in this run: {reason}. `make test-xla` creates .venv-xla (torch 2.9.0 + torch_xla 2.9.0);
then `make bench` or `python -m bench.bench_xla` measures tokens/s on XLA's CPU backend next to eager
CPU, and compilations and host transfers per step.
"""


def run(data_path: Path, workdir: Path) -> str:
    """The section: measured here when torch_xla is importable, else by .venv-xla's interpreter."""
    if importlib.util.find_spec("torch_xla") is not None:
        return section(figures(data_path, workdir))
    if not XLA_PYTHON.exists():
        return skipped(f"torch_xla is not installed in {sys.executable} and {XLA_PYTHON} does not exist")
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "section.md"
    target.unlink(missing_ok=True)
    done = subprocess.run([str(XLA_PYTHON), "-m", "bench.bench_xla", "--workdir", str(workdir), "--section-to",
                           str(target)], cwd=ROOT, env={**os.environ, "NSMC_PATH": str(data_path)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return skipped(f"{XLA_PYTHON} -m bench.bench_xla failed:\n\n```\n{done.stderr[-3000:]}\n```")
    return target.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_xla", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--workdir", type=Path, default=WORK_DIR / "xla", help="where shards, teacher and runs go")
    parser.add_argument("--section-to", type=Path, default=RESULTS_DIR / "xla.md",
                        help="where the section goes (run() names a file here when it calls .venv-xla's interpreter)")
    args = parser.parse_args(argv)
    if not NSMC_PATH.exists():
        print(f"python -m bench.bench_xla: error: {NSMC_PATH} is absent (set NSMC_PATH)", file=sys.stderr)
        return 2
    text = run(NSMC_PATH, args.workdir)
    print(text)
    args.section_to.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
