"""distill.train and distill.evaluate on the command-line convention: the output directory policy,
--resume against the saved TrainConfig, --quiet/--json, Ctrl-C, fast --help, and the
restructured loop against a naive training loop written out here."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distill_fixtures import build_world
from transformers import BertForMaskedLM

from distill import loop, options
from distill.attention import allowed_pairs, attention_bias
from distill.configs import STUDENT_PRESETS, DistillConfig
from distill.data import ShardBatches, open_shard_dir, open_split
from distill.losses import Masks
from distill.masking import masking_spec
from distill.models import CapturingStudent, Teacher, load_teacher, term_losses
from distill.train import main
from pipeline import cli

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_cli")
    paths = build_world(root)
    return paths


def train(world, output: Path, *extra: str) -> int:
    return main([
        "--shards", str(world["shards"]), "--teacher", str(world["teacher"]), "--output", str(output),
        "--student", str(world["student_config"]), "--batch-size", "16", "--lr", "2e-3",
        "--warmup-steps", "1", "--shuffle-buffer", "500", "--loader-workers", "0", "--log-every", "1",
        *(() if "--objective" in extra else ("--objective", "minilm")), *extra,
    ])


def steps_logged(output: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]


def usage_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("python -m distill.train: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- --resume and the saved TrainConfig


@pytest.fixture
def sliced(world, tmp_path):
    """A 6-step run stopped after 2 steps (checkpoint step 2)."""
    output = tmp_path / "out"
    assert train(world, output, "--max-steps", "6", "--save-every", "2", "--run-steps", "2") == 0
    return output


def test_train_config_is_saved_with_resolved_values(world, sliced):
    saved = json.loads((sliced / "train_config.json").read_text())
    assert saved == options.TrainConfig(
        lr=2e-3, warmup_steps=1, max_steps=6, batch_size=16, grad_accum=1, weight_decay=0.01, max_grad_norm=1.0,
        adam_betas=[0.9, 0.999], adam_eps=1e-6, seed=0, precision="fp32", mlm_probability=None, shuffle_buffer=500,
        train_data=saved["train_data"], loader_workers=0, log_every=1, save_every=2, keep_checkpoints=2).to_dict()
    assert len(saved["train_data"]) == 16
    assert json.loads((sliced / "distill_config.json").read_text())["objective"] == "minilm"


def test_resume_with_another_batch_size_is_refused(world, sliced, capsys):
    before = {name: (sliced / name).read_bytes() for name in ("metrics.jsonl", "train_config.json")}
    capsys.readouterr()
    assert train(world, sliced, "--max-steps", "6", "--save-every", "2", "--resume", "--batch-size", "8") == 2
    err = capsys.readouterr().err
    line = usage_error_line(err)
    assert "--batch-size 16 -> 8: it changes the data order and what a step is" in line
    assert "--allow-config-change" in line
    assert "--resume: --batch-size changed since the checkpoint step-000000002: 16 -> 8 (refused)" in err
    assert {name: (sliced / name).read_bytes() for name in before} == before  # nothing written
    assert not (sliced / "student").exists() and not (sliced / cli.LOCK_FILE).exists()


def test_resume_refuses_every_guarded_change_at_once(world, sliced, capsys):
    capsys.readouterr()
    code = train(world, sliced, "--max-steps", "6", "--save-every", "2", "--resume", "--seed", "1",
                 "--grad-accum", "2", "--shuffle-buffer", "100")
    assert code == 2
    line = usage_error_line(capsys.readouterr().err)
    for option in ("--seed 0 -> 1", "--grad-accum 1 -> 2", "--shuffle-buffer 500 -> 100"):
        assert option in line
    code = train(world, sliced, "--max-steps", "6", "--resume", "--allow-config-change", "--objective", "minilmv2",
                 "--relation-heads", "8")
    assert code == 2  # another model: no option allows that
    assert "was trained with another distillation config (objective, reference, terms differ)" in capsys.readouterr().err


def test_resume_with_another_masking_rate_is_refused(world, tmp_path, capsys):
    output = tmp_path / "out"
    assert train(world, output, "--objective", "distilbert", "--max-steps", "4", "--save-every", "2",
                 "--run-steps", "2") == 0
    capsys.readouterr()
    assert train(world, output, "--objective", "distilbert", "--max-steps", "4", "--resume",
                 "--mlm-probability", "0.2") == 2
    assert "--mlm-probability 0.15 -> 0.2: it changes the masking" in usage_error_line(capsys.readouterr().err)


def test_resume_with_more_steps_and_another_lr_is_accepted_and_reported(world, sliced, capsys):
    capsys.readouterr()
    assert train(world, sliced, "--max-steps", "8", "--lr", "1e-3", "--save-every", "2", "--resume") == 0
    err = capsys.readouterr().err
    assert "--resume: --max-steps changed since the checkpoint step-000000002: 6 -> 8 (accepted)" in err
    assert "--resume: --lr changed since the checkpoint step-000000002: 0.002 -> 0.001 (accepted)" in err
    assert "error" not in err
    assert steps_logged(sliced) == list(range(1, 9))
    assert json.loads((sliced / "train_config.json").read_text())["max_steps"] == 8
    assert (sliced / "student" / "model.safetensors").is_file()


def test_allow_config_change_continues_after_the_same_rows(world, sliced, capsys):
    capsys.readouterr()
    assert train(world, sliced, "--max-steps", "4", "--save-every", "2", "--resume", "--batch-size", "8",
                 "--allow-config-change") == 0
    err = capsys.readouterr().err
    assert "--batch-size changed since the checkpoint step-000000002: 16 -> 8 (accepted)" in err
    state = torch.load(sliced / "checkpoints" / "step-000000004" / "state.pt", weights_only=True)
    assert state["loader"] == {"batches": 2 * 16 // 8 + 2, "seed": 0, "batch_size": 8}
    assert json.loads(state["train_config"])["batch_size"] == 8


def test_review_changes_without_a_model():
    saved = options.TrainConfig(lr=1e-3, warmup_steps=0, max_steps=10, batch_size=4, grad_accum=1, weight_decay=0.0,
                                max_grad_norm=1.0, adam_betas=[0.9, 0.999], adam_eps=1e-6, seed=0, precision="fp32", mlm_probability=0.15, shuffle_buffer=0,
                                train_data="abc", loader_workers=0, log_every=1, save_every=1, keep_checkpoints=1)
    lines: list[str] = []
    same = options.TrainConfig(**saved.to_dict())
    assert options.review_changes(saved.to_dict(), same, False, lines.append) == [] and lines == []
    changed = options.TrainConfig(**{**saved.to_dict(), "train_data": "def", "max_grad_norm": 2.0, "precision": "bf16"})
    with pytest.raises(cli.UsageError, match=r"--shards 'abc' -> 'def': the training data differs") as refused:
        options.review_changes(saved.to_dict(), changed, False, lines.append)
    assert "--precision 'fp32' -> 'bf16'" in str(refused.value) and "--max-grad-norm" not in str(refused.value)
    assert len(lines) == 3 and sum("(refused)" in line for line in lines) == 2
    assert options.review_changes(saved.to_dict(), changed, True, lines.append) == ["max_grad_norm", "precision",
                                                                                     "train_data"]
    older = {key: value for key, value in saved.to_dict().items() if key != "train_data"}  # a field added later
    assert options.review_changes(older, options.TrainConfig(**saved.to_dict()), False, lines.append) == []


# ---------------------------------------------------------------- the output directory


def test_non_empty_output_is_refused_without_resume_or_overwrite(world, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    assert train(world, output, "--max-steps", "2") == 2
    line = usage_error_line(capsys.readouterr().err)
    assert f"--output {output} is not empty (notes.txt)" in line
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_only_what_train_wrote(world, tmp_path):
    output = tmp_path / "out"
    assert train(world, output, "--max-steps", "3", "--save-every", "1") == 0
    (output / "notes.txt").write_text("mine")
    (output / "metrics.jsonl.0123456789abcdef0123456789abcdef.tmp").write_text("leftover")
    assert train(world, output, "--max-steps", "2", "--overwrite") == 0
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoints", "distill_config.json", "metrics.jsonl", "notes.txt", "student", "train_config.json"]
    assert (output / "notes.txt").read_text() == "mine"
    assert steps_logged(output) == [1, 2]
    assert [p.name for p in (output / "checkpoints").iterdir()] == ["step-000000002"]


def test_resume_and_overwrite_together_are_refused(world, tmp_path, capsys):
    assert train(world, tmp_path / "out", "--resume", "--overwrite") == 2
    assert "give --resume" in usage_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_running_job_holds_the_output(world, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / cli.LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    assert train(world, output, "--max-steps", "1") == 2
    assert "is being written by another run" in usage_error_line(capsys.readouterr().err)


def test_ctrl_c_exits_130_and_exports_nothing(world, tmp_path, capsys, monkeypatch):
    real_step = loop.train_step

    def interrupted_at_step_3(run, state, batches):
        if state.step == 2:
            raise KeyboardInterrupt
        return real_step(run, state, batches)

    monkeypatch.setattr(loop, "train_step", interrupted_at_step_3)
    output = tmp_path / "out"
    assert train(world, output, "--max-steps", "4", "--save-every", "1") == 130
    assert capsys.readouterr().err.splitlines()[-1] == "python -m distill.train: interrupted; nothing was published"
    assert not (output / "student").exists() and not (output / cli.LOCK_FILE).exists()
    assert steps_logged(output) == [1, 2]


# ---------------------------------------------------------------- reporting and parsing


def test_quiet_json_prints_only_the_summary(world, tmp_path, capsys):
    output = tmp_path / "out"
    assert train(world, output, "--max-steps", "2", "--quiet", "--json") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert (summary["step"], summary["max_steps"], summary["finished"]) == (2, 2, True)
    assert summary["student"] == str(output / "student") and summary["metrics"]["step"] == 2


def test_human_summary_and_progress_lines(world, tmp_path, capsys):
    output = tmp_path / "out"
    assert train(world, output, "--max-steps", "3", "--run-steps", "2") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("minilm distillation: step 2 of 3, loss ")
    assert captured.out.rstrip().endswith("step-000000002); continue with --resume")
    progress = captured.err.splitlines()
    assert all(line.startswith("distill.train [") for line in progress), progress
    assert any("step 2/3 loss" in line for line in progress)
    assert not any("Writing model" in line or "%|" in line for line in progress)  # no transformers bars


def test_misspelt_option_exits_2_with_a_suggestion(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        train(world, tmp_path / "out", "--batch-sise", "8")
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m distill.train: error: unknown option --batch-sise; did you mean --batch-size?")
    with pytest.raises(SystemExit):
        train(world, tmp_path / "out", "--batch", "8")  # no abbreviations
    assert "unknown option --batch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["distill.train", "distill.evaluate"])
def test_help_imports_neither_torch_nor_transformers(command):
    code = ("import runpy, sys\n"
            f"sys.argv = ['{command}', '--help']\n"
            "try:\n"
            f"    runpy.run_module('{command}', run_name='__main__')\n"
            "except SystemExit as exited:\n"
            "    assert exited.code == 0, exited.code\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'pyarrow') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "--quiet" in result.stdout and "--json" in result.stdout and "(default: " in result.stdout


def test_choices_match_the_modules_that_use_them():
    assert options.STUDENT_PRESET_NAMES == tuple(STUDENT_PRESETS)


# ---------------------------------------------------------------- the loop against a naive one


def naive_curve(world, config: DistillConfig, steps: int, grad_accum: int, log_every: int, lr: float,
                warmup: int) -> tuple[list[dict], dict]:
    """Metrics of a straight loop over the same parts (no DataLoader, window, state or checkpoints):
    per step, grad_accum micro-batches, each loss / grad_accum backward; AdamW as distill.train sets
    it up for distilbert (the reference's AdamW: betas 0.9/0.98, eps 1e-6, no weight decay, clipping at
    5.0, as in Hugging Face's distillation/distiller.py and train.py); linear warm-up and decay written
    out; logged values are the mean of the step means."""
    shards = open_shard_dir(world["shards"])
    teacher_model, _ = load_teacher(str(world["teacher"]))
    torch.manual_seed(0)
    student = BertForMaskedLM._from_config(config.student_config(), attn_implementation="sdpa")
    teacher = Teacher(teacher_model, config)
    model = CapturingStudent(student, config)
    spec = masking_spec(shards.vocab, shards.special_ids, shards.seq_len, 0.15)
    ids = shards.special_ids
    batches = iter(ShardBatches(open_split(shards, "train"), 16, seed=0, shuffle_buffer=500, masking=spec,
                                pad_id=ids["pad"], attention_scope="document", cls_id=ids["cls"], sep_id=ids["sep"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": 0.0},
                                   {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}],
                                  betas=(0.9, 0.98), eps=1e-6)
    weights = torch.tensor([term.weight for term in config.terms])
    heads = student.config.num_attention_heads
    curve, pending, tokens = [], [], 0
    model.train()
    for step in range(steps):
        rate = lr * (step + 1) / warmup if step < warmup else lr * (steps - step) / (steps - warmup)
        for group in optimizer.param_groups:
            group["lr"] = rate
        means = torch.zeros(len(config.terms) + 1)
        for _ in range(grad_accum):
            batch = next(batches)
            tokens += batch["tokens"]
            allowed = allowed_pairs(batch["segments"])
            inputs = (batch["input_ids"], attention_bias(allowed, torch.float32), batch["position_ids"], batch["positions"])
            t = teacher(*inputs)
            s = model(*inputs)
            masks = Masks(tokens=batch["attention_mask"], targets=batch["targets"], pairs=allowed)
            losses = torch.stack(term_losses(config.terms, s, t, masks, heads, teacher.num_heads))
            total = (losses * weights).sum()
            (total / grad_accum).backward()
            means += torch.cat([total.detach()[None], losses.detach()]) / grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
        pending.append(means)
        if (step + 1) % log_every == 0:
            values = (sum(pending) / len(pending)).tolist()
            curve.append({"step": step + 1, "loss": values[0], **dict(zip(config.term_labels(), values[1:])),
                          "lr": rate, "tokens": tokens})
            pending = []
    return curve, {name: tensor.detach() for name, tensor in student.state_dict().items()}


def test_loop_matches_a_naive_loop(world, tmp_path):
    """distilbert (masking, dropout, logits, a hidden-state projection), 2 micro-batches per step,
    a window of 2 steps per metrics line."""
    output = tmp_path / "out"
    assert train(world, output, "--objective", "distilbert", "--grad-accum", "2", "--max-steps", "6",
                 "--log-every", "2", "--warmup-steps", "2") == 0
    train_config = json.loads((output / "train_config.json").read_text())
    assert (train_config["adam_betas"], train_config["weight_decay"], train_config["max_grad_norm"]) == ([0.9, 0.98], 0.0, 5.0)
    config = DistillConfig.from_json((output / "distill_config.json").read_text())
    expected, weights = naive_curve(world, config, steps=6, grad_accum=2, log_every=2, lr=2e-3, warmup=2)
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [2, 4, 6]
    for got, want in zip(logged, expected):
        assert got["tokens"] == want["tokens"]
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (got["step"], key)
    exported = load_file(str(output / "student" / "model.safetensors"))
    for name, tensor in exported.items():
        assert torch.allclose(tensor, weights[name], rtol=1e-4, atol=1e-6), name


def test_bench_distill_parses_its_options():
    result = subprocess.run([sys.executable, "-m", "bench.bench_distill", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_xla_step_metrics_are_refused_off_xla(world, tmp_path, capsys, monkeypatch):
    """DISTILL_XLA_METRICS (distill.device.StepMetrics; tests_xla/ uses it) counts XLA's compilations
    and transfers: on another device it is refused before any work, not silently ignored."""
    monkeypatch.setenv("DISTILL_XLA_METRICS", str(tmp_path / "steps.jsonl"))
    capsys.readouterr()
    assert train(world, tmp_path / "out", "--max-steps", "2", "--device", "cpu") == 2
    assert "DISTILL_XLA_METRICS counts XLA compilations and transfers: it applies to --device xla only (this run " \
           "is on cpu); unset it" in usage_error_line(capsys.readouterr().err)
    assert not (tmp_path / "steps.jsonl").exists() and not (tmp_path / "out" / "metrics.jsonl").exists()
