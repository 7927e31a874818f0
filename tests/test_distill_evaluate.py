"""`python -m distill.evaluate`: masked-LM metrics on validation shards, teacher agreement, sentiment fine-tuning."""
from __future__ import annotations

import gzip
import json
import math
import random

import pytest
import torch
from test_distill_fixtures import build_teacher, build_world

from distill.evaluate import main
from distill.finetune import read_sentiment_file, split_indices

torch.set_num_threads(1)
POSITIVE = ["응원합니다", "최고였어요", "감동 받았어요", "기대 이상이었다", "정말 대단하다", "믿고 봅니다"]
NEGATIVE = ["실망이 큽니다", "어이가 없네", "한심하다 정말", "납득이 안 간다", "이건 아니지", "이해가 안 됩니다"]
SUBJECTS = ["이 영화", "감독", "주연 배우", "이번 드라마", "그 가수", "신인 배우"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("distill_evaluate"))


def evaluate(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_masked_lm_metrics_and_agreement(world, tmp_path, capsys):
    args = ["--model", str(world["teacher"]), "--shards", str(world["shards"]), "--teacher", str(world["teacher"]),
            "--batch-size", "50", "--output", str(tmp_path / "report.json")]
    report = evaluate(capsys, *args)
    metrics = report["masked_lm"]
    assert metrics["teacher_agreement"] == 1.0
    assert metrics["teacher_mlm_accuracy"] == metrics["mlm_accuracy"]
    validation = json.loads((world["shards"] / "manifest.json").read_text())["splits"]["validation"]
    ordinary = validation["tokens"] - 2 * validation["sequences"]  # at least [CLS] and [SEP] per row are never masked
    assert 0.10 * ordinary < metrics["masked_tokens"] < 0.17 * ordinary
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["mlm_loss"]), rel=1e-12)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert evaluate(capsys, *args) == report  # deterministic masking
    other_seed = evaluate(capsys, *args[:-2], "--seed", "1")["masked_lm"]
    assert other_seed["mlm_loss"] != metrics["mlm_loss"]


def test_student_differs_from_teacher(world, tmp_path, capsys):
    student = build_teacher(tmp_path / "student", world["tokenizer"], vocab_size=800, layers=2, seed=7)
    metrics = evaluate(capsys, "--model", str(student), "--shards", str(world["shards"]), "--teacher",
                       str(world["teacher"]), "--max-batches", "2", "--batch-size", "32")["masked_lm"]
    assert 0.0 <= metrics["teacher_agreement"] < 0.5


def test_refuses_a_model_with_another_vocabulary(world, tmp_path, capsys):
    other = build_teacher(tmp_path / "other", None, vocab_size=700)
    assert main(["--model", str(other), "--shards", str(world["shards"])]) == 2
    assert "the model's vocab_size is 700" in capsys.readouterr().err


def sentiment_lines(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        positive = index % 2 == 0
        text = f"{rng.choice(SUBJECTS)} {rng.choice(POSITIVE if positive else NEGATIVE)}"
        rating = rng.choice([9, 10]) if positive else rng.choice([1, 2, 3, 4])
        lines.append(json.dumps({"id": str(index), "text": text, "rating": rating}, ensure_ascii=False))
    lines.append(json.dumps({"id": "n", "text": "그냥 그래요 보통", "rating": 6}, ensure_ascii=False))
    lines.append("{not json")
    lines.append(json.dumps({"id": "e", "text": "日本語", "rating": 10}, ensure_ascii=False))
    return lines


def test_read_sentiment_file_labels_and_counts(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(sentiment_lines(20)) + "\n", encoding="utf-8")
    data = read_sentiment_file(path)
    assert data.counts == {"read": 23, "kept": 20, "dropped_unlabelled": 1, "dropped_malformed": 1, "dropped_empty": 1}
    assert data.labels == [1, 0] * 10
    tsv = tmp_path / "ratings.txt"
    tsv.write_text("id\tdocument\tlabel\n1\t최고였어요 정말\t1\n2\t실망이 큽니다\t0\n3\t라벨없음\t\n", encoding="utf-8")
    data = read_sentiment_file(tsv)
    assert (data.texts, data.labels) == (["최고였어요 정말", "실망이 큽니다"], [1, 0])
    assert data.counts == {"read": 3, "kept": 2, "dropped_unlabelled": 1}
    train, test = split_indices(100, 0.1, seed=0)
    assert len(test) == 10 and sorted([*train, *test]) == list(range(100))


def test_sentiment_finetuning_learns_the_task(world, tmp_path, capsys):
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(sentiment_lines(240)) + "\n", encoding="utf-8")
    model = build_teacher(tmp_path / "model", world["tokenizer"], vocab_size=800, initializer_range=0.02)
    report = evaluate(capsys, "--model", str(model), "--sentiment", str(path), "--sentiment-epochs", "3",
                      "--sentiment-lr", "1e-3", "--sentiment-batch-size", "16", "--sentiment-test-fraction", "0.25")
    sentiment = report["sentiment"]
    assert (sentiment["train_examples"], sentiment["test_examples"]) == (180, 60)
    assert sentiment["accuracy"] >= 0.9 > sentiment["majority_baseline"]


def test_sentiment_formats_follow_the_project_suffixes(tmp_path):
    rows = "최고였어요 정말\t1\n실망이 큽니다\t0\n"
    (tmp_path / "plain.tsv").write_text(rows, encoding="utf-8")
    assert read_sentiment_file(tmp_path / "plain.tsv").labels == [1, 0]  # headerless TSV
    (tmp_path / "plain.txt").write_text(rows, encoding="utf-8")
    with pytest.raises(ValueError, match="the name says text, not a sentiment format.*--sentiment-format"):
        read_sentiment_file(tmp_path / "plain.txt")  # .txt is plain text unless its header says TSV
    assert read_sentiment_file(tmp_path / "plain.txt", "tsv").labels == [1, 0]
    (tmp_path / "table.csv").write_text("text,label\n좋아요 정말,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="the name says csv"):
        read_sentiment_file(tmp_path / "table.csv")
    lines = sentiment_lines(20)
    gz = tmp_path / "reviews.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    assert read_sentiment_file(gz).counts["kept"] == 20
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(ValueError, match="cannot be read to its end"):
        read_sentiment_file(truncated)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(("\n".join(lines) + "\n").encode("utf-8") + b'{"text": "\xff\xfe", "rating": 1}\n')
    assert read_sentiment_file(broken).counts["dropped_malformed"] == 2  # "{not json" and the bad UTF-8


def test_human_summary_progress_and_quiet(world, tmp_path, capsys):
    args = ["--model", str(world["teacher"]), "--shards", str(world["shards"]), "--max-batches", "2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].startswith("masked LM (validation, ")
    assert "accuracy" in captured.out and not captured.out.lstrip().startswith("{")
    assert captured.err.startswith("distill.evaluate [") and "masked-LM metrics of" in captured.err
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_usage_errors(capsys):
    assert main(["--model", "x"]) == 2
    assert capsys.readouterr().err == "python -m distill.evaluate: error: nothing to evaluate: give --shards and/or --sentiment\n"
    with pytest.raises(SystemExit) as exited:
        main(["--model", "x", "--sentiment-epoch", "2"])
    assert exited.value.code == 2
    assert "did you mean --sentiment-epochs?" in capsys.readouterr().err
