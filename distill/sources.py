"""Several (teacher, shards) sources in one distill.train run: KoEnBERT's two teachers at once.

    python -m distill.train --source ko=ko-bert/:shards-ko/ --source en=en-bert/:shards-en/ \\
        --mix ko=1,en=1 --student koen-bert/ --objective minilmv2 --output run/

Why: KoEnBERT (seed 002) distilled an extended Korean BERT with MiniLMv2 from an English
teacher on English text and, in the same run, from the Korean teacher on Korean text, so that
the student learns English without forgetting Korean.

Which vocabulary the shards carry: each source's shards are tokenized with its own teacher's
tokenizer (as for a single teacher), so the teacher reads them as they are; the student reads
the same token sequence through a map of the teacher's ids into its own vocabulary, decided
here before training:

- the identity when the shards' vocabulary is the student's;
- the extension's base (student directory's extension.json, `base.fingerprint`): every base id
  kept, [unused] slots the extension filled map to nothing;
- the extension's source (`source.fingerprint`): extension.json's `id_map`.

A source whose shards' tokenizer is none of these is refused, and so is one whose vocabulary
has an ordinary token without a student id (only [unused] slots may lack one: they never occur
in text; they read as the student's [UNK]). A map that is not the identity changes the
vocabulary the student's logits are over, so objectives whose losses compare the teacher's
logits with the student's (distilbert's soft targets) are refused for such a source; the
relation and hidden-state losses of minilm and minilmv2 compare no vocabulary.

All teachers must have the same shape (layers, hidden size, heads) and all shards the same
sequence length: one DistillConfig describes the run. Micro-batches come from the sources by a
fixed schedule (distill.data.MixedStream), each source's loader seeded apart, so a run is
deterministic and resumes exactly. See docs/distill.md#several-teachers.
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import BertForMaskedLM

from distill import device as devices
from distill import options
from distill.configs import validate
from distill.data import MixedStream, ShardDir, open_shard_dir, open_split
from distill.models import CapturingStudent, Teacher, check_vocabulary, init_from_teacher, load_student_weights
from distill.models import load_teacher, model_vocabulary
from tokenizer_training.extend import EXTENSION_FILE, UNUSED, files_fingerprint, read_extension
from tokenizer_training.loading import LoadedTokenizer, has_tokenizer, load_tokenizer, read_tokenizer_sources

SHOWN = 5


def student_vocabulary(args: argparse.Namespace, first: ShardDir) -> tuple[LoadedTokenizer, dict | None]:
    """(the student's tokenizer, its extension.json or None): a --student model directory's own, else
    the first source's shards'."""
    spec = args.student
    if spec and Path(spec).is_dir() and has_tokenizer(read_tokenizer_sources(spec)):
        extension = read_extension(spec) if (Path(spec) / EXTENSION_FILE).is_file() else None
        return load_tokenizer(spec, "--student", verify=False), extension
    return first.tokenizer, None


def fingerprint(tokenizer: LoadedTokenizer) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        return files_fingerprint(tokenizer.files, Path(scratch) / "tokenizer")


def student_map(name: str, shards: ShardDir, student: LoadedTokenizer, extension: dict | None) -> np.ndarray | None:
    """The source's ids -> the student's (None: the same ids), or ValueError saying why it cannot be mapped."""
    if shards.vocab == student.vocab:
        return None
    own = fingerprint(shards.tokenizer)
    if extension is not None and own == extension["base"]["fingerprint"]:
        mapping = np.arange(extension["base"]["vocab_size"], dtype=np.int64)
        mapping[extension["filled_unused"]] = -1
    elif extension is not None and own == extension["source"]["fingerprint"]:
        mapping = np.asarray(extension["id_map"], dtype=np.int64)
    else:
        known = " or its extension's base and source" if extension is not None else ""
        raise ValueError(f"--source {name}: the shards' tokenizer ({shards.root / 'tokenizer'}) is not the student's"
                         f"{known}, so its ids cannot be read in the student's vocabulary; tokenize the shards with "
                         "the teacher's tokenizer, and give --student the model distill.extend made from it")
    if len(mapping) != len(shards.vocab):
        raise ValueError(f"--source {name}: extension.json maps {len(mapping):,} ids, the shards have "
                         f"{len(shards.vocab):,} tokens")
    lost = [shards.vocab[index] for index in np.flatnonzero(mapping < 0).tolist() if not UNUSED.match(shards.vocab[index])]
    if lost:
        raise ValueError(f"--source {name}: {len(lost):,} tokens of the shards' vocabulary have no id in the student's "
                         f"(e.g. {', '.join(map(repr, lost[:SHOWN]))}); extend the student's vocabulary with them")
    if np.array_equal(mapping, np.arange(len(mapping))):
        return None  # the base's ids, unchanged in the student's vocabulary: nothing to map
    return np.where(mapping < 0, student.special_ids["unk"], mapping)


def source_seed(seed: int, index: int) -> int:
    """Each source's loader seed (data order and masking), apart from the others'; the first keeps --seed."""
    if index == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "little")


def check_same_shape(teachers: list, names: list[str]) -> None:
    shapes = [(t.config.num_hidden_layers, t.config.hidden_size, t.config.num_attention_heads) for t in teachers]
    if len(set(shapes)) > 1:
        described = ", ".join(f"{name} {layers}x{hidden} ({heads} heads)" for name, (layers, hidden, heads)
                              in zip(names, shapes))
        raise ValueError(f"the --source teachers differ in shape ({described}); one run distils teachers of one "
                         "shape (KoEnBERT: klue/bert-base and bert-base-uncased, both 12x768)")


def train_data_fingerprint(names: list[str], shard_dirs: list[ShardDir]) -> str:
    """Every source's train split, by name: the sha256 of their shard files' sha256s."""
    lines = [f"{name}:{entry['sha256']}" for name, shards in zip(names, shard_dirs)
             for entry in shards.manifest["splits"]["train"]["shards"]]
    return hashlib.sha256("\n".join(lines).encode("ascii")).hexdigest()[:16]


def prepare_sources(args: argparse.Namespace, runtime: devices.Runtime, precision: str):
    """loop.prepare for --source runs: every source's shards and teacher, the student's vocabulary and
    the id maps, one DistillConfig, the student, and the mixed loader."""
    from distill import loop

    specs = [options.parse_source(text) for text in args.source]
    names = [name for name, _, _ in specs]
    mix = options.parse_mix(args.mix, names)
    shard_dirs = [open_shard_dir(shards) for _, _, shards in specs]
    splits = [open_split(shards, "train") for shards in shard_dirs]
    teachers = []
    for (name, teacher, _), shards in zip(specs, shard_dirs):
        model, head_trained = load_teacher(teacher, f"--source {name}'s teacher")
        check_vocabulary(f"--source {name}'s teacher", model.config.vocab_size,
                         model_vocabulary(teacher, f"--source {name}'s teacher"), shards.vocab)
        teachers.append((model, head_trained))
    check_same_shape([model for model, _ in teachers], names)
    lengths = {shards.seq_len for shards in shard_dirs}
    if len(lengths) > 1:
        raise ValueError(f"the --source shards have different sequence lengths ({sorted(lengths)}); pack them alike")
    student_tokenizer, extension = student_vocabulary(args, shard_dirs[0])
    maps = [student_map(name, shards, student_tokenizer, extension) for name, shards in zip(names, shard_dirs)]
    first_model = teachers[0][0]
    config = loop.build_config(args, first_model.config, shard_dirs[0], student_tokenizer)
    for (name, _, _), (model, head_trained), shards in zip(specs, teachers, shard_dirs):
        validate(config, model.config)
        if not head_trained and config.needs_teacher_logits():
            raise ValueError(f"--source {name}'s teacher has no trained MLM head, which the {args.objective} objective needs")
        if shards.vocab != student_tokenizer.vocab and config.needs_teacher_logits():
            raise ValueError(f"--source {name}: its teacher's vocabulary is not the student's, and the {args.objective} "
                             "objective compares their logits; use --objective minilmv2 or minilm, or drop the logit "
                             "terms with --loss-weights")
    if config.init_from_teacher_layers and shard_dirs[0].vocab != student_tokenizer.vocab:
        raise ValueError(f"initialising the student from teacher layers copies the embeddings of --source {names[0]}'s "
                         "teacher, whose vocabulary is not the student's; start from a --student model directory")
    limit = min(first_model.config.max_position_embeddings, config.student["max_position_embeddings"])
    if shard_dirs[0].seq_len > limit:
        raise ValueError(f"the shards' sequences have {shard_dirs[0].seq_len} tokens, more than the {limit} positions "
                         "of the models")

    torch.manual_seed(args.seed)
    student = BertForMaskedLM._from_config(config.student_config(), attn_implementation="sdpa")
    load_student_weights(student, args.student)
    if config.init_from_teacher_layers:
        init_from_teacher(student, first_model, config.init_from_teacher_layers)
    dtype = devices.DTYPES[precision]
    runtime_teachers = [Teacher(model, config).to(runtime.device, dtype) for model, _ in teachers] \
        if config.needs_teacher() else None
    model = CapturingStudent(student, config).to(runtime.device)
    streams = [loop.make_stream(args, runtime, shards, split, config, seed=source_seed(args.seed, index),
                                source=index, student_map=mapping)
               for index, (shards, split, mapping) in enumerate(zip(shard_dirs, splits, maps))]
    stream = MixedStream(names, streams, [mix[name] for name in names])
    max_steps = args.max_steps or max(1, stream.batches_per_epoch() // args.grad_accum)
    return loop.Setup(config, shard_dirs[0], runtime_teachers[0] if runtime_teachers else None, model, stream,
                      max_steps, teachers=runtime_teachers, source_names=names, mix=mix,
                      student_files=student_tokenizer.files, train_data=train_data_fingerprint(names, shard_dirs))

