"""Builders shared by the tests/test_distill_*.py files (imported by them; holds no tests).

Tiny but real inputs for distillation: a WordPiece tokenizer directory trained on the
embedded sample corpus (contract 2 layout), token shards of it written with
transforms.token_shards (contract 3 layout), and small random BERT teachers saved with
safetensors. Everything is seeded and takes about a second.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from pipeline.sample_corpus import sample_records
from transforms import storage, token_shards
from transforms.clean import clean_text
from transforms.packing import encode_texts, pack_concat

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@lru_cache(maxsize=1)
def sample_texts() -> tuple[str, ...]:
    """Cleaned sample-corpus texts of at least 10 characters, in corpus order."""
    texts = (clean_text(record["text"]) for record in sample_records(0))
    return tuple(text for text in texts if len(text) >= 10)


# Standard-library modules whose docstrings give English prose of tens of thousands of words.
ENGLISH_MODULES = ("argparse", "collections", "json", "email.message", "http.client", "unittest", "logging", "pathlib",
                   "subprocess", "threading", "datetime", "decimal", "fractions", "statistics", "textwrap", "string",
                   "csv", "sqlite3", "zipfile", "tarfile", "shutil", "tempfile", "functools", "itertools", "typing",
                   "dataclasses", "enum", "inspect", "pdb", "doctest", "smtplib", "urllib.request", "calendar",
                   "heapq", "bisect", "random", "socket", "ssl")


@lru_cache(maxsize=1)
def english_texts() -> tuple[str, ...]:
    """English paragraphs (at least 40 characters) of the docstrings of standard-library classes and
    functions: real English text available offline, for English tokenizers and teachers."""
    texts = []
    for name in ENGLISH_MODULES:
        module = importlib.import_module(name)
        for _, value in sorted(vars(module).items()):
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__:
                for paragraph in (inspect.getdoc(value) or "").split("\n\n"):
                    text = " ".join(paragraph.split())
                    if len(text) >= 40 and re.search("[a-z]{3}", text):
                        texts.append(text)
    return tuple(texts)


def write_lines(path: Path, texts) -> Path:
    """A text file, one document a line (pipeline.tokenize --format text, --eval-text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(text.split()) + "\n" for text in texts), encoding="utf-8")
    return path


def build_tokenizer_dir(path: Path, texts, vocab_size: int = 800) -> Path:
    """Train a WordPiece tokenizer and save it the way pipeline.tokenize lays it out."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=False, tokenize_chinese_chars=True)
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    return path


def build_shards(root: Path, tokenizer_dir: Path, texts, seq_len: int = 32, train_shards: int = 2,
                 validation_every: int = 10) -> Path:
    """Pack the texts into rows and write train/validation shards plus a contract-3 manifest."""
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    vocab_size = tokenizer.get_vocab_size()
    ids = {name: tokenizer.token_to_id(token) for name, token in zip(("pad", "unk", "cls", "sep", "mask"), SPECIALS)}
    texts = list(texts)
    splits = {
        "train": [t for i, t in enumerate(texts) if i % validation_every],
        "validation": [t for i, t in enumerate(texts) if i % validation_every == 0],
    }
    dtype = token_shards.narrowest_dtype(vocab_size)
    shutil.copytree(tokenizer_dir, root / "tokenizer", dirs_exist_ok=True)
    manifest_splits = {}
    for split, split_texts in splits.items():
        flat, lengths = encode_texts(tokenizer, split_texts)
        rows, n_split = pack_concat(flat, lengths, seq_len, ids["cls"], ids["sep"], ids["pad"])
        entries = []
        for index, part in enumerate(np.array_split(rows, train_shards if split == "train" else 1)):
            relative = f"{split}/shard-{index:05d}.arrow"
            sha, tokens = token_shards.write_shard(str(root / relative), part, dtype)
            entries.append({"file": relative, "sequences": len(part), "tokens": tokens, "sha256": sha})
        manifest_splits[split] = {
            "sequences": sum(e["sequences"] for e in entries),
            "tokens": sum(e["tokens"] for e in entries),
            "documents": len(split_texts),
            "split_documents": n_split,
            "shards": entries,
        }
    manifest = {
        "format": token_shards.FORMAT,
        "seq_len": seq_len,
        "packing": "concat",
        "dtype": dtype,
        "vocab_size": vocab_size,
        "special_tokens": ids,
        "tokenizer_fingerprint": token_shards.tokenizer_fingerprint(str(root / "tokenizer")),
        "splits": manifest_splits,
        "options": {"seq_len": seq_len, "packing": "concat"},
    }
    storage.write_json_atomic(str(root / "manifest.json"), manifest)
    return root


def build_teacher(path: Path, tokenizer_dir: Path | None, vocab_size: int, layers: int = 4, hidden: int = 64,
                  heads: int = 4, seed: int = 0, initializer_range: float = 0.2) -> Path:
    """A small random BertForMaskedLM (safetensors), with the tokenizer files when given. The wide
    default initialisation gives peaked attention, i.e. a teacher with something to distil."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=64, initializer_range=initializer_range,
    )
    BertForMaskedLM(config).save_pretrained(str(path))
    if tokenizer_dir is not None:
        for file in tokenizer_dir.iterdir():
            shutil.copy2(file, path / file.name)
    return path


# The student the distillation tests train for a few steps on the CPU (its config file: build_world's "student_config").
TINY_STUDENT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                "max_position_embeddings": 64}


def build_world(root: Path, seq_len: int = 32) -> dict[str, Path]:
    """Tokenizer, shards, a 4-layer teacher and the TINY_STUDENT config file under root."""
    texts = sample_texts()
    tokenizer_dir = build_tokenizer_dir(root / "tokenizer", texts)
    shards = build_shards(root / "shards", tokenizer_dir, texts, seq_len=seq_len)
    vocab_size = json.loads((shards / "manifest.json").read_text())["vocab_size"]
    teacher = build_teacher(root / "teacher", tokenizer_dir, vocab_size)
    student_config = root / "student.json"
    student_config.write_text(json.dumps(TINY_STUDENT), encoding="utf-8")
    return {"tokenizer": tokenizer_dir, "shards": shards, "teacher": teacher, "student_config": student_config}
