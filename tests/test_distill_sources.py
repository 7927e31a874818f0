"""distill.train with several (teacher, shards) sources: the KoEnBERT recipe end to end on tiny models,
exact resume, the mix schedule, and the refusals decided before training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distill_fixtures import build_shards, build_teacher, build_tokenizer_dir, english_texts, sample_texts
from transformers import AutoModelForMaskedLM, AutoTokenizer

from distill import extend
from distill.checkpoint import step_dirs
from distill.data import mix_schedule
from distill.train import main
from tokenizer_training.extend import ExtendOptions, extend_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Korean and English tokenizers, shards and 4x64 teachers; the Korean vocabulary extended with the
    English one; the student: a 2x32 Korean BERT grown to the extended vocabulary by distill.extend."""
    root = tmp_path_factory.mktemp("sources")
    paths: dict[str, Path] = {}
    for name, texts, seed in (("ko", sample_texts(), 0), ("en", english_texts(), 1)):
        tokenizer = build_tokenizer_dir(root / f"{name}-tok", texts)
        shards = build_shards(root / f"{name}-shards", tokenizer, texts)
        size = json.loads((shards / "manifest.json").read_text())["vocab_size"]
        paths[name] = build_teacher(root / f"{name}-teacher", tokenizer, size, seed=seed)
        paths[f"{name}-shards"], paths[f"{name}-tok"], paths[f"{name}-size"] = shards, tokenizer, size
    extend_tokenizer(ExtendOptions(base=str(paths["ko-tok"]), output=str(root / "koen-tok"),
                                   add_vocab_from=str(paths["en-tok"])))
    small = build_teacher(root / "ko-small", paths["ko-tok"], paths["ko-size"], layers=2, hidden=32, heads=4, seed=3,
                          initializer_range=0.02)
    assert extend.main(["--model", str(small), "--tokenizer", str(root / "koen-tok"), "--init", "subword-mean",
                        "--output", str(root / "student"), "--quiet"]) == 0
    paths["student"] = root / "student"
    return paths


def sources(world) -> list[str]:
    return ["--source", f"ko={world['ko']}:{world['ko-shards']}", "--source", f"en={world['en']}:{world['en-shards']}"]


def run(world, output: Path, *extra: str) -> int:
    return main([*sources(world), "--student", str(world["student"]), "--output", str(output), "--objective",
                 "minilmv2", "--relation-heads", "8", "--batch-size", "8", "--lr", "2e-3", "--warmup-steps", "2",
                 "--shuffle-buffer", "200", "--quiet", *extra])


def metrics(output: Path) -> list[dict]:
    timing = {"tokens_per_s", "elapsed_s"}
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def test_mix_schedule_spreads_each_source_by_its_weight():
    assert mix_schedule([1, 1]) == [0, 1]
    assert mix_schedule([2, 1]) == [0, 1, 0]
    assert mix_schedule([1, 3]) == [1, 0, 1, 1]
    assert sorted(mix_schedule([3, 2, 1])) == [0, 0, 0, 1, 1, 2]


def test_two_teachers_lower_both_losses_and_the_student_exports(world, tmp_path):
    output = tmp_path / "out"
    assert run(world, output, "--max-steps", "40", "--log-every", "10", "--grad-accum", "2", "--lr", "6e-3",
               "--batch-size", "16", "--loader-workers", "0") == 0
    curve = metrics(output)
    assert [line["step"] for line in curve] == [10, 20, 30, 40]
    for name in ("ko", "en"):
        assert curve[-1][f"loss_{name}"] < 0.95 * curve[0][f"loss_{name}"], name
    # ko=1,en=1 with two micro-batches a step: one of each, so the step loss is the sources' mean
    assert abs(curve[-1]["loss"] - (curve[-1]["loss_ko"] + curve[-1]["loss_en"]) / 2) < 1e-4
    student = AutoModelForMaskedLM.from_pretrained(str(output / "student"))
    tokenizer = AutoTokenizer.from_pretrained(str(output / "student"))
    assert student.config.vocab_size == len(tokenizer) == len((world["student"] / "vocab.txt").read_text().splitlines())
    ids = tokenizer(["좋은 영화였다", "the function returns a string"], padding=True, return_tensors="pt")
    assert student(**ids).logits.shape[-1] == len(tokenizer)
    train_config = json.loads((output / "train_config.json").read_text())
    assert train_config["mix"] == {"ko": 1, "en": 1}


def test_english_batches_reach_the_student_in_its_own_ids(world):
    """The en source's loader maps its (teacher's) ids through extension.json: same strings, student ids."""
    import argparse

    from distill import device as devices
    from distill.loop import prepare

    args = argparse.Namespace(
        source=sources(world)[1::2], mix="ko=1,en=2", student=str(world["student"]), objective="minilmv2",
        relation_heads=8, relation_average=None, temperature=None, soft_target_positions=None, mlm_probability=None,
        teacher_layer=None, layer_map=None, loss_weights=None, init_from_teacher_layers=None, attention_scope="document",
        batch_size=4, grad_accum=3, max_steps=5, shuffle_buffer=100, loader_workers=0, seed=0, shards=None,
        teacher=None)
    setup = prepare(args, devices.init_runtime("cpu"), "fp32")
    batches = iter(setup.stream)
    step = [next(batches) for _ in range(3)]
    assert [batch["source"] for batch in step] == [1, 0, 1]  # en twice, ko once, every step
    en_vocab = (world["en-tok"] / "vocab.txt").read_text(encoding="utf-8").splitlines()
    student_vocab = (world["student"] / "vocab.txt").read_text(encoding="utf-8").splitlines()
    english = step[0]
    assert [student_vocab[i] for i in english["student_input_ids"].flatten().tolist()] == \
        [en_vocab[i] for i in english["input_ids"].flatten().tolist()]
    assert "student_input_ids" not in step[1]  # the Korean shards are in the student's base ids already


def test_two_source_resume_is_bit_for_bit(world, tmp_path):
    args = ("--max-steps", "8", "--log-every", "1", "--save-every", "2", "--mix", "ko=1,en=2", "--grad-accum", "2")
    straight = tmp_path / "straight"
    assert run(world, straight, *args, "--loader-workers", "2") == 0
    output = tmp_path / "out"
    assert run(world, output, *args, "--run-steps", "3", "--loader-workers", "0") == 0
    assert [p.name for p in step_dirs(output / "checkpoints")] == ["step-000000002", "step-000000003"]
    assert run(world, output, *args, "--resume", "--loader-workers", "1") == 0
    assert metrics(output) == metrics(straight)
    # schedule en, ko, en (mix_schedule([1, 2]) = [1, 0, 1]), two micro-batches a step: ko in micro-batches 1, 4, 7, ...
    assert [line["loss_ko"] is not None for line in metrics(output)] == [True, False, True, True, False, True, True, False]
    assert all(line["loss_en"] is not None for line in metrics(output))
    resumed = load_file(str(output / "student" / "model.safetensors"))
    reference = load_file(str(straight / "student" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


def test_refusals_before_training(world, tmp_path, capsys):
    def usage(*argv: str) -> str:
        assert main([*argv, "--output", str(tmp_path / "x"), "--quiet"]) == 2
        return capsys.readouterr().err

    ko, en = sources(world)[1], sources(world)[3]
    # a student without the English tokens: the en shards' ids have no student id
    assert "is not the student's" in usage("--source", ko, "--source", en, "--objective", "minilmv2",
                                           "--relation-heads", "8", "--student", str(world["ko"]))
    # soft targets compare the teacher's logits (English vocabulary) with the student's
    assert "compares their logits" in usage("--source", ko, "--source", en, "--objective", "distilbert",
                                            "--student", str(world["student"]))
    assert "--mix names en, xx" in usage("--source", ko, "--source", en, "--mix", "xx=1,en=1")
    assert "not both" in usage("--source", ko, "--shards", str(world["ko-shards"]))
    assert "NAME=TEACHER:SHARDS" in usage("--source", "ko")
    assert "--mix only applies with --source" in usage("--shards", str(world["ko-shards"]), "--teacher",
                                                       str(world["ko"]), "--mix", "ko=1")
    assert "required: --shards, --teacher" in usage()
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_one_source_student_starts_from_a_model_directory(world, tmp_path, capsys):
    """--student DIR with --shards/--teacher: the student starts from the directory's weights (a learning
    rate of 1e-12 leaves them as they were); a directory of another vocabulary is refused."""
    small = world["student"].parent / "ko-small"
    common = ["--shards", str(world["ko-shards"]), "--teacher", str(world["ko"]), "--objective", "minilmv2",
              "--relation-heads", "8", "--batch-size", "4", "--max-steps", "1", "--lr", "1e-12", "--quiet"]
    assert main([*common, "--student", str(small), "--output", str(tmp_path / "out"), "--loader-workers", "0"]) == 0
    trained = load_file(str(tmp_path / "out" / "student" / "model.safetensors"))
    start = load_file(str(small / "model.safetensors"))
    assert torch.allclose(trained["bert.embeddings.word_embeddings.weight"],
                          start["bert.embeddings.word_embeddings.weight"], atol=1e-6)
    assert main([*common, "--student", str(world["student"]), "--output", str(tmp_path / "x")]) == 2
    assert "vocab_size" in capsys.readouterr().err


def test_two_process_ddp_run_follows_one_schedule(world, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks take the same source at every micro-batch, each
    its own global batches of it; the logged tokens are exactly the first 4 global batches of each source."""
    import os
    import subprocess
    import sys

    from distill.data import ShardBatches, open_shard_dir, open_split
    from distill.sources import source_seed

    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29600 + os.getpid() % 1000), "-m", "distill.train", *sources(world), "--student",
               str(world["student"]), "--output", str(output), "--objective", "minilmv2", "--relation-heads", "8",
               "--batch-size", "8", "--max-steps", "4", "--log-every", "4", "--shuffle-buffer", "200",
               "--loader-workers", "0"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = metrics(output)
    expected = 0
    for index, name in enumerate(("ko", "en")):
        split = open_split(open_shard_dir(world[f"{name}-shards"]), "train")
        batches = ShardBatches(split, 8, seed=source_seed(0, index), shuffle_buffer=200)
        expected += sum(batch["tokens"] for _, batch in zip(range(4), batches))
    assert line["tokens"] == expected
    assert line["loss_ko"] > 0 and line["loss_en"] > 0


@pytest.mark.parametrize("objective", ["minilm", "distilbert"])
def test_two_teachers_of_one_vocabulary_run_every_objective(world, tmp_path, objective):
    """Two Korean teachers on the same shards: no id map, so the logit terms (distilbert) apply too."""
    second = build_teacher(tmp_path / "ko-teacher-2", world["ko-tok"], world["ko-size"], seed=7)
    student = tmp_path / "student.json"
    student.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                   "intermediate_size": 64, "max_position_embeddings": 64}), encoding="utf-8")
    assert main(["--source", f"a={world['ko']}:{world['ko-shards']}", "--source", f"b={second}:{world['ko-shards']}",
                 "--student", str(student), "--objective", objective, "--output", str(tmp_path / "out"),
                 "--batch-size", "8", "--max-steps", "4", "--log-every", "2", "--loader-workers", "0", "--quiet"]) == 0
    lines = metrics(tmp_path / "out")
    assert [line["step"] for line in lines] == [2, 4]
    assert all(line["loss_a"] > 0 and line["loss_b"] > 0 for line in lines)
    assert (tmp_path / "out" / "student" / "model.safetensors").exists()
