"""From a published teacher: its tokenizer through shards to student, whatever layout it ships.

The two blockers of issue 14 are here: a teacher directory used as the shards' tokenizer must
give a student that is the student (not a copy of the teacher), and a teacher without tokenizer
files must train (checked by vocab_size). Also: tokenizer layouts a published Korean BERT ships
(vocab.txt only, tokenizer.json only, a model directory), a mistyped local path, and MiniLM's
teacher-assistant recipe (a distilled student is the next run's teacher).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_distill_fixtures import TINY_STUDENT, build_teacher, build_world, sample_texts
from transformers import AutoModelForMaskedLM, AutoTokenizer

from distill.evaluate import main as evaluate_main
from distill.train import main as train_main
from pipeline import shard
from tokenizer_training.loading import TokenizerSourceError, infer_casing, load_tokenizer, looks_local
from transforms.special_tokens import TOKENIZER_FILES

torch.set_num_threads(1)
STUDENT_FILES = sorted(["config.json", "model.safetensors", *TOKENIZER_FILES])
OPTIONAL = {"generation_config.json"}  # transformers 4 saves it beside every BertForMaskedLM


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in OPTIONAL)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_teacher")
    paths = build_world(root)
    return paths


def train(world, output: Path, teacher: Path | str, *extra: str, shards: Path | None = None) -> int:
    return train_main(["--shards", str(shards or world["shards"]), "--teacher", str(teacher), "--output", str(output),
                       "--student", str(world["student_config"]), "--batch-size", "16", "--max-steps", "3",
                       "--shuffle-buffer", "500", "--loader-workers", "0", *extra])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_is_the_student(student_dir: Path, teacher_dir: Path) -> None:
    """The exported directory holds the 32-wide student and exactly the tokenizer files."""
    assert names(student_dir) == STUDENT_FILES
    assert json.loads((student_dir / "config.json").read_text())["hidden_size"] == 32
    assert sha256(student_dir / "model.safetensors") != sha256(teacher_dir / "model.safetensors")
    assert AutoModelForMaskedLM.from_pretrained(str(student_dir)).config.hidden_size == 32


def clean_corpus(root: Path) -> Path:
    """A clean corpus file of the sample texts (id, text), as pipeline.run writes them."""
    texts = list(sample_texts())
    root.mkdir(parents=True)
    pq.write_table(pa.table({"id": [f"doc-{i:05d}" for i in range(len(texts))], "text": texts}), root / "part-00000.parquet")
    return root / "part-00000.parquet"


def run_shard(corpus: Path, tokenizer: Path | str, output: Path) -> int:
    return shard.main(["--input", str(corpus), "--tokenizer", str(tokenizer), "--output", str(output), "--seq-len", "32",
                       "--validation-fraction", "0.1", "--quiet"])


def shard_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.arrow"))}


def test_a_teacher_directory_as_the_shards_tokenizer_gives_the_student(world, tmp_path):
    """Blocker 1, end to end: `pipeline.shard --tokenizer TEACHER_DIR` reads only the tokenizer files
    (the shards' tokenizer/ holds exactly them), and the exported student is the student."""
    corpus = clean_corpus(tmp_path / "corpus")
    assert run_shard(corpus, world["teacher"], tmp_path / "shards") == 0
    assert sorted(p.name for p in (tmp_path / "shards" / "tokenizer").iterdir()) == sorted(TOKENIZER_FILES)
    assert train(world, tmp_path / "out", world["teacher"], "--objective", "distilbert", shards=tmp_path / "shards") == 0
    assert_is_the_student(tmp_path / "out" / "student", world["teacher"])


@pytest.mark.parametrize("layout", ["vocab_only", "json_only", "model_dir"])
def test_the_same_tokenizer_in_any_layout_gives_the_same_shards(world, tmp_path, layout):
    """pipeline.shard with the tokenizer as vocab.txt alone (casing inferred: cased, no accent
    stripping), tokenizer.json alone, or a model directory: byte-identical token shards, and a
    normalised tokenizer/ of exactly the four files, which AutoTokenizer loads."""
    corpus = clean_corpus(tmp_path / "corpus")
    assert run_shard(corpus, world["tokenizer"], tmp_path / "reference") == 0
    source = tmp_path / layout
    if layout == "model_dir":
        shutil.copytree(world["teacher"], source)
    else:
        source.mkdir()
        name = "vocab.txt" if layout == "vocab_only" else "tokenizer.json"
        shutil.copy2(world["tokenizer"] / name, source / name)
    assert run_shard(corpus, source, tmp_path / "shards") == 0
    assert shard_files(tmp_path / "shards") == shard_files(tmp_path / "reference")
    tokenizer_dir = tmp_path / "shards" / "tokenizer"
    assert sorted(p.name for p in tokenizer_dir.iterdir()) == sorted(TOKENIZER_FILES)
    text = sample_texts()[3]
    assert AutoTokenizer.from_pretrained(str(tokenizer_dir))(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(str(world["tokenizer"]))(text)["input_ids"]


def test_shard_refuses_a_mistyped_tokenizer_path_and_a_foreign_tokenizer(world, tmp_path, capsys):
    corpus = clean_corpus(tmp_path / "corpus")
    assert run_shard(corpus, tmp_path / "no" / "such" / "teacher", tmp_path / "out") == 2
    assert "no such directory" in capsys.readouterr().err
    kobert = tmp_path / "kobert"
    kobert.mkdir()
    shutil.copy2(world["tokenizer"] / "vocab.txt", kobert / "vocab.txt")
    (kobert / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "KoBertTokenizer"}))
    assert run_shard(corpus, kobert, tmp_path / "out") == 2
    assert "names KoBertTokenizer, not a BERT WordPiece tokenizer" in capsys.readouterr().err
    lowered = tmp_path / "lowered"
    lowered.mkdir()
    shutil.copy2(world["tokenizer"] / "vocab.txt", lowered / "vocab.txt")
    (lowered / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))  # NFD turns Hangul to jamo
    assert run_shard(corpus, lowered, tmp_path / "out") == 2
    assert "of its own vocabulary words into [UNK]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_old_shards_holding_the_teachers_weights_still_export_the_student(world, tmp_path):
    """Blocker 1 on shards written before pipeline.shard normalised the tokenizer: their tokenizer/
    is a copy of the whole teacher directory (weights, config). The student must not become them."""
    shards = tmp_path / "shards"
    shutil.copytree(world["shards"], shards)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(world["teacher"] / name, shards / "tokenizer" / name)
    assert train(world, tmp_path / "out", world["teacher"], "--objective", "distilbert", shards=shards) == 0
    assert_is_the_student(tmp_path / "out" / "student", world["teacher"])


def test_a_teacher_without_tokenizer_files_trains_and_evaluates(world, tmp_path, capsys):
    """Blocker 2: a model directory without tokenizer files is checked by vocab_size only
    (transformers 5 would build a five-token tokenizer for it, and every id would differ)."""
    bare = build_teacher(tmp_path / "bare", None, vocab_size=800)
    assert names(bare) == ["config.json", "model.safetensors"]
    assert train(world, tmp_path / "out", bare, "--objective", "minilm") == 0
    assert_is_the_student(tmp_path / "out" / "student", bare)
    capsys.readouterr()
    assert evaluate_main(["--model", str(bare), "--shards", str(world["shards"]), "--max-batches", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["masked_lm"]["masked_tokens"] > 0
    small = build_teacher(tmp_path / "small", None, vocab_size=700)
    assert train(world, tmp_path / "out2", small) == 2
    assert "the teacher's vocab_size is 700 but the shards' tokenizer has 800 tokens" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["vocab_only", "json_only", "model_dir"])
def test_a_teacher_ships_its_tokenizer_in_any_layout(world, tmp_path, layout):
    """vocab.txt alone (most published Korean BERTs), tokenizer.json alone (transformers 5), or the whole
    model directory with tokenizer_config.json: the same vocabulary as the shards, so accepted."""
    teacher = build_teacher(tmp_path / "teacher", None, vocab_size=800)
    keep = {"vocab_only": ["vocab.txt"], "json_only": ["tokenizer.json"],
            "model_dir": ["vocab.txt", "tokenizer.json", "tokenizer_config.json"]}[layout]
    for name in keep:
        shutil.copy2(world["tokenizer"] / name, teacher / name)
    assert train(world, tmp_path / "out", teacher) == 0
    loaded = load_tokenizer(str(teacher))
    assert sorted(loaded.files) == sorted(TOKENIZER_FILES)
    assert loaded.vocab == load_tokenizer(str(world["shards"] / "tokenizer")).vocab


@pytest.mark.parametrize("missing", ["{tmp}/no/such/teacher", "./no-such-teacher", "runs/missing/teacher/"])
def test_a_mistyped_local_teacher_is_no_such_directory(world, tmp_path, capsys, monkeypatch, missing):
    monkeypatch.chdir(tmp_path)
    path = missing.format(tmp=tmp_path)
    assert looks_local(path)
    assert train(world, tmp_path / "out", path) == 2
    err = capsys.readouterr().err
    assert f"--teacher {path}: no such directory" in err
    assert "huggingface" not in err.lower() and "repo" not in err.lower()
    assert evaluate_main(["--model", path, "--shards", str(world["shards"])]) == 2
    assert f"--model {path}: no such directory" in capsys.readouterr().err
    with pytest.raises(TokenizerSourceError, match="no such directory"):
        load_tokenizer(path)


def test_hub_ids_are_not_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for hub_id in ("klue/bert-base", "beomi/kcbert-base", "bert-base-uncased"):
        assert not looks_local(hub_id)
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/teacher")  # its first part is a local directory


def test_teacher_assistant_recipe_a_distilled_student_is_the_next_teacher(world, tmp_path):
    """MiniLM's recipe for a large teacher: distil it into a same-depth narrow assistant, then the
    assistant into the small student (docs/distill.md, "Teacher assistant")."""
    assistant = tmp_path / "assistant.json"
    assistant.write_text(json.dumps({**TINY_STUDENT, "num_hidden_layers": 4}), encoding="utf-8")
    assert train(world, tmp_path / "ta", world["teacher"], "--student", str(assistant), "--objective", "minilm") == 0
    assistant_dir = tmp_path / "ta" / "student"
    assert train(world, tmp_path / "small", assistant_dir, "--objective", "minilm") == 0
    config = json.loads((tmp_path / "small" / "distill_config.json").read_text())
    assert (config["teacher_layers"], config["teacher_hidden_size"]) == (4, 32)
    assert_is_the_student(tmp_path / "small" / "student", assistant_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "small" / "student"))
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(assistant_dir)).get_vocab()


def test_a_hub_id_fetches_only_tokenizer_and_config_files(world, tmp_path, monkeypatch):
    """A hub id is downloaded with huggingface_hub, tokenizer and config files only (never weights),
    then read like a local directory. (Offline here: the download is replaced by a local snapshot.)"""
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    shutil.copytree(world["teacher"], snapshot)
    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = load_tokenizer("klue/bert-base")
    assert asked["repo_id"] == "klue/bert-base"
    assert sorted(asked["allow_patterns"]) == sorted([*TOKENIZER_FILES, "config.json"])
    assert loaded.vocab == load_tokenizer(str(world["tokenizer"])).vocab


def test_casing_inferred_from_a_bare_vocabulary():
    """Special and [unusedN] tokens say nothing about casing; Hangul forbids accent stripping."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
    assert infer_casing([*specials, "hello", "##s"])["lowercase"] is True  # an uncased English vocabulary
    assert infer_casing([*specials, "Hello", "##s"])["lowercase"] is False
    assert infer_casing([*specials, "한국", "##어"])["strip_accents"] is False
    assert infer_casing([*specials, "hello"])["strip_accents"] is None  # BERT's default: follows lower-casing
