"""Defaults that cannot silently waste a run, and each objective's reference recipe.

Warm-up against its rule, relation heads auto against the references' choices, options that no
loss term reads refused, student configs that conflict with the shards refused, the resolved
optimizer of each objective against the reference values written out here (with their sources),
the distilkobert preset, the start banner, and tokens/s after --resume.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from test_distill_fixtures import TINY_STUDENT, build_teacher, build_world

from distill import loop
from distill.data import ShardBatches, open_shard_dir, open_split
from distill.recipes import RECIPES, auto_relation_heads, default_warmup, valid_relation_heads
from distill.train import main

torch.set_num_threads(1)
# The reference values, written out from the sources (not read from distill.recipes):
# DistilBERT: Hugging Face examples/research_projects/distillation train.py + distiller.py;
# DistilKoBERT: monologg/DistilKoBERT distillation/*.sh (alpha 0.33 each), scripts/extract_distilbert.py;
# MiniLMv2: bloomberg/minilmv2.bb run.sh; MiniLM: the same Adam set-up, lr 6e-4 (microsoft/unilm#360).
REFERENCE = {
    "minilm": {"lr": 6e-4, "adam_betas": [0.9, 0.999], "adam_eps": 1e-6, "weight_decay": 0.01, "max_grad_norm": 1.0},
    "minilmv2": {"lr": 6e-4, "adam_betas": [0.9, 0.999], "adam_eps": 1e-6, "weight_decay": 0.01, "max_grad_norm": 1.0},
    "distilbert": {"lr": 5e-4, "adam_betas": [0.9, 0.98], "adam_eps": 1e-6, "weight_decay": 0.0, "max_grad_norm": 5.0},
    "distilkobert": {"lr": 5e-4, "adam_betas": [0.9, 0.98], "adam_eps": 1e-6, "weight_decay": 0.0, "max_grad_norm": 5.0},
}
WEIGHTS = {
    "minilm": {"attention_kl": 1.0, "value_relation_kl": 1.0},
    "minilmv2": {"query_relation_kl": 1.0, "key_relation_kl": 1.0, "value_relation_kl": 1.0},
    "distilbert": {"soft_target_kl": 5.0, "mlm_cross_entropy": 2.0, "hidden_cosine": 1.0},
    "distilkobert": {"soft_target_kl": 0.33, "mlm_cross_entropy": 0.33, "hidden_cosine": 0.33},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_recipes")
    paths = build_world(root)
    # 12 layers, as DistilKoBERT's teacher (KoBERT): the preset copies layers 0, 4 and 8.
    paths["deep_teacher"] = build_teacher(root / "deep", paths["tokenizer"], 800, layers=12, hidden=32, heads=4)
    return paths


def train(world, output: Path, *extra: str, student: bool = True) -> int:
    return main(["--shards", str(world["shards"]), "--output", str(output), "--batch-size", "16",
                 "--shuffle-buffer", "500", "--loader-workers", "0", "--log-every", "1",
                 *(("--teacher", str(world["teacher"])) if "--teacher" not in extra else ()),
                 *(("--student", str(world["student_config"])) if student else ()), *extra])


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_default_warmup_never_exceeds_five_percent_of_the_run():
    for steps in (1, 20, 120, 1000, 80_000, 400_000):
        assert default_warmup(RECIPES["minilm"], steps) == min(4000, math.ceil(0.05 * steps))
        assert default_warmup(RECIPES["distilbert"], steps) == math.ceil(0.05 * steps)  # warmup_prop 0.05
    assert default_warmup(RECIPES["minilmv2"], 400_000) == 4000  # the reference's 4,000 of 400,000


def test_relation_heads_auto_picks_the_references_counts():
    assert auto_relation_heads(768, 384) == 48  # base teacher (MiniLMv2: 48)
    assert auto_relation_heads(1024, 384) == 64  # large teacher (MiniLMv2: 64)
    assert auto_relation_heads(1024, 768) == 64
    assert auto_relation_heads(768, 256) == 32  # 48 does not divide 256; 64 would leave 4 dimensions a head
    assert auto_relation_heads(512, 128) == 16  # not 64 two-dimensional heads
    assert auto_relation_heads(64, 32) == 4
    assert auto_relation_heads(12, 6) == 1  # too narrow for any count to keep 6 dimensions
    assert valid_relation_heads(64, 32) == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("objective, extra, refused", [
    ("minilm", ["--relation-heads", "8"], "--relation-heads"),
    ("distilbert", ["--relation-heads", "auto"], "--relation-heads"),
    ("minilmv2", ["--temperature", "3"], "--temperature"),
    ("minilm", ["--soft-target-positions", "masked"], "--soft-target-positions"),
    ("minilm", ["--mlm-probability", "0.2"], "--mlm-probability"),
    ("distilbert", ["--relation-average", "pooled"], "--relation-average"),
    ("distilbert", ["--loss-weights", "hidden_cosine=0", "--teacher-layer", "2"], "--teacher-layer"),
])
def test_options_that_no_term_reads_are_refused(world, tmp_path, capsys, objective, extra, refused):
    assert train(world, tmp_path / "out", "--objective", objective, "--max-steps", "2", *extra) == 2
    line = error_line(capsys)
    assert f"{refused} does not apply to this run" in line and f"--objective {objective}" in line
    assert not (tmp_path / "out").exists()


def test_an_option_applies_once_a_term_reads_it(world, tmp_path):
    assert train(world, tmp_path / "out", "--objective", "minilm", "--max-steps", "2", "--mlm-probability", "0.2",
                 "--loss-weights", "mlm_cross_entropy=1") == 0
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["mlm_probability"] == 0.2


@pytest.mark.parametrize("extra, message", [
    (["--warmup-steps", "10", "--max-steps", "10"], "--warmup-steps 10 is not below --max-steps 10"),
    (["--objective", "minilmv2", "--relation-heads", "5", "--max-steps", "2"],
     "--relation-heads 5 does not divide the teacher hidden size 64; valid: 1, 2, 4, 8, 16, 32 (or auto)"),
])
def test_settings_that_would_waste_the_run_are_refused(world, tmp_path, capsys, extra, message):
    assert train(world, tmp_path / "out", *extra) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": 1234}, "vocab_size 1234 (the shards' tokenizer has 800)"),
    ({"pad_token_id": 7}, "pad_token_id 7 (the shards' tokenizer has 0)"),
    ({"max_position_embeddings": 16}, "max_position_embeddings 16 (the shards' sequences have 32 tokens)"),
])
def test_a_student_config_that_conflicts_with_the_shards_is_refused(world, tmp_path, capsys, change, message):
    config = tmp_path / "student.json"
    config.write_text(json.dumps({**TINY_STUDENT, **change}), encoding="utf-8")
    assert train(world, tmp_path / "out", "--student", str(config), "--max-steps", "2", student=False) == 2
    line = error_line(capsys)
    assert f"--student {config} conflicts with the shards" in line and message in line


@pytest.mark.parametrize("objective", ["minilm", "minilmv2", "distilbert"])
def test_each_objective_defaults_to_its_reference_recipe(world, tmp_path, objective):
    output = tmp_path / "out"
    assert train(world, output, "--objective", objective, "--max-steps", "40", "--run-steps", "1") == 0
    train_config = json.loads((output / "train_config.json").read_text())
    assert {key: train_config[key] for key in REFERENCE[objective]} == REFERENCE[objective]
    assert train_config["warmup_steps"] == 2  # 5% of 40
    distill_config = json.loads((output / "distill_config.json").read_text())
    assert {term["name"]: term["weight"] for term in distill_config["terms"]} == WEIGHTS[objective]
    assert distill_config["reference"] == RECIPES[objective].source and distill_config["attention_scope"] == "document"
    params = {term["name"]: term["params"] for term in distill_config["terms"]}
    if objective == "distilbert":
        assert params["soft_target_kl"] == {"temperature": 2.0, "positions": "all"}
    else:
        expected = {"average": "sequence", **({"relation_heads": 4} if objective == "minilmv2" else {})}
        assert all(value == expected for value in params.values())


def test_distilkobert_preset_is_the_published_recipe(world, tmp_path):
    """3 layers of the teacher's shape initialised from teacher layers 0, 4, 8 (DistilKoBERT's "1, 5, 9번째"),
    soft targets, MLM and cosine at 0.33 each, temperature 2, the DistilBERT optimizer."""
    output = tmp_path / "out"
    assert train(world, output, "--objective", "distilkobert", "--teacher", str(world["deep_teacher"]),
                 "--max-steps", "3", student=False) == 0
    distill_config = json.loads((output / "distill_config.json").read_text())
    assert distill_config["init_from_teacher_layers"] == [0, 4, 8]
    assert distill_config["student"]["num_hidden_layers"] == 3 and distill_config["student"]["hidden_size"] == 32
    assert {term["name"]: term["weight"] for term in distill_config["terms"]} == WEIGHTS["distilkobert"]
    train_config = json.loads((output / "train_config.json").read_text())
    assert {key: train_config[key] for key in REFERENCE["distilkobert"]} == REFERENCE["distilkobert"]


def test_the_banner_lists_every_resolved_setting(world, tmp_path, capsys):
    assert train(world, tmp_path / "out", "--objective", "minilmv2", "--max-steps", "2") == 0
    err = capsys.readouterr().err
    for part in ("minilmv2: student", "2 layers, hidden 32, 4 heads", "running 4 of 4 layers",
                 "terms: query_relation_kl x1 (average sequence, relation_heads 4)", "attention scope document",
                 "masking off", "schedule: 2 steps, warm-up 1, peak lr 0.0006, linear decay to 0",
                 "AdamW betas 0.9,0.999 eps 1e-06 weight decay 0.01; clip 1",
                 "batch 16 x 1 accumulated x 1 process(es) on cpu, fp32; seed 0"):
        assert part in err, part


class Clock:
    """time.perf_counter for distill.loop: one second per call, so a log interval is known exactly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_tokens_per_second_after_resume_counts_only_tokens_since_the_restart(world, tmp_path, monkeypatch):
    """A checkpoint in the middle of a log window (step 3 of the window of steps 3-4) restores the
    window's tokens for the logged total; the rate after the restart counts only step 4's tokens,
    over the one clock second between the restart and the log."""
    output = tmp_path / "out"
    args = ("--objective", "minilm", "--max-steps", "4", "--log-every", "2", "--save-every", "3")
    assert train(world, output, *args) == 0
    shutil.rmtree(output / "checkpoints" / "step-000000004")  # as if killed after step 3's checkpoint
    shutil.rmtree(output / "student")
    monkeypatch.setattr(loop, "time", Clock())
    assert train(world, output, *args, "--resume") == 0
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    batches = ShardBatches(open_split(open_shard_dir(world["shards"]), "train"), 16, seed=0, shuffle_buffer=500)
    tokens = [batch["tokens"] for _, batch in zip(range(4), batches)]
    assert [line["step"] for line in lines] == [2, 4]
    assert lines[1]["tokens"] == sum(tokens)  # the logged total still counts the whole window
    assert lines[1]["tokens_per_s"] == tokens[3]  # step 4's tokens in one second, not steps 3 and 4's
