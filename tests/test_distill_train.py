"""End to end on sample-corpus shards: the loss goes down, resuming is bit-for-bit, damaged
checkpoints are skipped, and the exported student round-trips through transformers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distill_fixtures import build_world, sample_texts
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertTokenizerFast

from distill.checkpoint import step_dirs
from distill.data import ShardBatches, open_shard_dir, open_split
from distill.loop import learning_rate
from distill.train import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_train")
    paths = build_world(root)
    return paths


def run(world, output: Path, *extra: str) -> int:
    return main([
        "--shards", str(world["shards"]), "--teacher", str(world["teacher"]), "--output", str(output),
        "--batch-size", "16", "--lr", "2e-3", "--warmup-steps", "2", "--shuffle-buffer", "500", *extra,
    ])


def metrics(output: Path) -> list[dict]:
    """The logged curve without the wall-clock fields."""
    timing = {"tokens_per_s", "elapsed_s"}
    return [
        {k: v for k, v in json.loads(line).items() if k not in timing}
        for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]


# The resume tests share one uninterrupted run: distilbert (dropout, masking, a hidden-state
# projection since the student is narrower than the teacher), 8 steps, every step logged.
RESUME_ARGS = ("--objective", "distilbert", "--max-steps", "8", "--log-every", "1", "--save-every", "2")


@pytest.fixture(scope="module")
def straight(world, tmp_path_factory):
    output = tmp_path_factory.mktemp("straight") / "out"
    assert run(world, output, "--student", str(world["student_config"]), *RESUME_ARGS, "--loader-workers", "2") == 0
    return output


TERMS = {"minilm": ["attention_kl", "value_relation_kl"],
         "minilmv2": ["query_relation_kl", "key_relation_kl", "value_relation_kl"],
         "distilbert": ["soft_target_kl", "mlm_cross_entropy", "hidden_cosine"]}


@pytest.mark.parametrize("objective, student", [
    ("minilm", "tiny"), ("minilmv2", "tiny"), ("distilbert", "tiny"),
    ("distilbert", "distil-3l"),  # DistilKoBERT: 3 teacher-shaped layers copied from teacher layers 0, 2, 3
])
def test_short_run_lowers_the_loss(world, tmp_path, objective, student):
    if student == "tiny":
        extra = ["--student", str(world["student_config"])]
    else:
        extra = ["--student", student, "--init-from-teacher-layers", "0,2,3"]
    if objective == "minilmv2":
        extra += ["--relation-heads", "8"]
    assert run(world, tmp_path / "out", "--objective", objective, *extra, "--max-steps", "40", "--log-every", "10",
               "--loader-workers", "0") == 0
    curve = metrics(tmp_path / "out")
    assert [line["step"] for line in curve] == [10, 20, 30, 40]
    assert curve[-1]["loss"] < 0.9 * curve[0]["loss"]
    for line in curve:
        assert set(TERMS[objective]) < set(line) and line["tokens"] > 0 and line["lr"] > 0
    config = json.loads((tmp_path / "out" / "distill_config.json").read_text())
    assert [term["name"] for term in config["terms"]] == TERMS[objective]
    assert config["init_from_teacher_layers"] == (None if student == "tiny" else [0, 2, 3])


def test_resume_is_bit_for_bit(world, straight, tmp_path):
    output = tmp_path / "out"
    args = ("--student", str(world["student_config"]), *RESUME_ARGS)
    assert run(world, output, *args, "--run-steps", "3", "--loader-workers", "0") == 0
    assert not (output / "student").exists()
    assert [p.name for p in step_dirs(output / "checkpoints")] == ["step-000000002", "step-000000003"]
    assert run(world, output, *args, "--resume", "--loader-workers", "1") == 0
    assert metrics(output) == metrics(straight)
    resumed = load_file(str(output / "student" / "model.safetensors"))
    reference = load_file(str(straight / "student" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


def test_damaged_latest_checkpoint_falls_back_to_the_previous(world, straight, tmp_path, capsys):
    output = tmp_path / "out"
    args = ("--student", str(world["student_config"]), *RESUME_ARGS, "--loader-workers", "0")
    assert run(world, output, *args, "--run-steps", "6") == 0
    assert [p.name for p in step_dirs(output / "checkpoints")] == ["step-000000004", "step-000000006"]
    weights = output / "checkpoints" / "step-000000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    assert run(world, output, *args, "--resume") == 0
    err = capsys.readouterr().err
    assert "distill.train: skipping checkpoint" in err and "model.safetensors does not match its checksum" in err
    assert "resuming from" in err and "step-000000004 at step 4" in err
    assert metrics(output) == metrics(straight)


def test_fresh_run_refuses_a_directory_with_checkpoints(world, straight, capsys):
    before = (straight / "metrics.jsonl").read_bytes()
    assert run(world, straight, "--student", str(world["student_config"]), *RESUME_ARGS, "--loader-workers", "0") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m distill.train: error: --output {straight} is not empty (checkpoints, ")
    assert "pass --resume to continue the run in it, --overwrite to replace" in err
    assert (straight / "metrics.jsonl").read_bytes() == before


def test_exported_student_round_trips_through_transformers(world, straight):
    student_dir = straight / "student"
    assert (student_dir / "model.safetensors").is_file()
    assert not list(student_dir.glob("*.bin"))
    config = json.loads((student_dir / "config.json").read_text())
    for flag in ("output_attentions", "output_hidden_states", "torchscript"):
        assert not config.get(flag, False), flag
    assert config.get("return_dict", True) is True
    assert config["architectures"] == ["BertForMaskedLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (32, 2, 800)

    masked_lm = AutoModelForMaskedLM.from_pretrained(str(student_dir))
    encoder = AutoModel.from_pretrained(str(student_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(student_dir))
    trained = load_file(str(step_dirs(straight / "checkpoints")[-1] / "model.safetensors"))
    state = masked_lm.state_dict()
    for name, tensor in trained.items():
        if name.startswith("student."):
            assert torch.equal(state[name.removeprefix("student.")], tensor), name
    text = sample_texts()[0]
    shard_tokenizer = BertTokenizerFast.from_pretrained(str(world["shards"] / "tokenizer"))
    assert tokenizer(text)["input_ids"] == shard_tokenizer(text)["input_ids"]
    inputs = tokenizer([text, sample_texts()[1]], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
        logits = masked_lm(**inputs).logits
    assert hidden.shape[-1] == 32 and logits.shape[-1] == 800
    assert torch.allclose(hidden, masked_lm.bert(**inputs).last_hidden_state, atol=1e-6)


def test_learning_rate_schedule():
    assert [round(learning_rate(s, 1.0, 4, 10), 4) for s in range(10)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 0.8333, 0.6667, 0.5, 0.3333, 0.1667]


def test_two_process_ddp_run_shares_the_global_batches(world, tmp_path):
    """torchrun with 2 CPU processes (gloo): rank r trains on global batches r, r+2, ...; the
    logged token count is the sum over both ranks, i.e. exactly the first 12 global batches.
    minilm stops the student's forward early and freezes the rest: DDP must find no unused parameter."""
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
        "-m", "distill.train", "--shards", str(world["shards"]), "--teacher", str(world["teacher"]),
        "--output", str(output), "--student", str(world["student_config"]), "--objective", "minilm",
        "--batch-size", "8", "--max-steps", "6", "--log-every", "6", "--shuffle-buffer", "500", "--loader-workers", "0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 process(es) on cpu" in done.stderr
    (line,) = metrics(output)
    split = open_split(open_shard_dir(world["shards"]), "train")
    single = ShardBatches(split, 8, seed=0, shuffle_buffer=500)
    assert line["tokens"] == sum(batch["tokens"] for _, batch in zip(range(12), single))
    assert AutoModelForMaskedLM.from_pretrained(str(output / "student")).config.num_hidden_layers == 2


def test_train_refuses_corrupt_shards_before_any_work(world, tmp_path, capsys):
    broken = tmp_path / "shards"
    shutil.copytree(world["shards"], broken)
    shard = broken / "train" / "shard-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    code = main(["--shards", str(broken), "--teacher", str(world["teacher"]), "--output", str(tmp_path / "out")])
    assert code == 2
    assert "checksum mismatch for train/shard-00000.arrow" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
