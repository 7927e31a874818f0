"""`pipeline.tokenize --extend`: a base WordPiece vocabulary grown by another's tokens, every base id kept.

Why: KoEnBERT (seed 002) taught a Korean BERT English by adding to its vocabulary the tokens of
an English BERT's vocabulary that it lacked; LM-kor reserved [unused] slots for domain tokens
added later. Both need the base model's ids to stay valid, so the extension only appends
(or fills [unused] slots with `fill_unused`), and writes the map a distillation needs to read
one vocabulary's ids in the other.

How a token of the other vocabulary becomes a token of the new one:

- Its `##`-style continuation prefix (tokenizer.json's `continuing_subword_prefix`) is
  replaced by the base's: `##ing` stays a continuation, `ing` a word start, whatever each
  vocabulary calls the prefix.
- Its body goes through the base's normalizer, because the base tokenizer only ever matches
  normalized text: with a lower-casing base and a cased other vocabulary, `Hello` becomes
  `hello` (and merges with `hello` when both exist: the id map sends both there). With a
  cased base and an uncased other vocabulary (KoEnBERT: klue/bert-base and bert-base-uncased)
  tokens are added as they are and a warning says they match lower-case text only.
- A body the base's pre-tokenizer would split (or that normalizes to nothing) could never be
  matched and is left out, counted in the report.
- The other's special tokens map to the base's of the same role; its [unused] slots map to
  nothing (-1 in the id map): they never occur in text.

The output is a normal tokenizer directory (the four files of tokenizer_training.loading's
normal form, AutoTokenizer-loadable, checked on load) plus `extension.json`, written last.
See docs/tokenize.md#extending-a-vocabulary.
"""
from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.cli import Progress
from tokenizer_training.build import REPORT_FILE, prepare_output
from tokenizer_training.errors import TokenizeError
from tokenizer_training.evaluate import evaluate
from tokenizer_training.loading import LoadedTokenizer, TokenizerSourceError, load_tokenizer, tokenizer_from_files
from transforms import storage, token_shards
from transforms.special_tokens import TOKENIZER_FILES, TOKENIZER_JSON

EXTENSION_FILE = "extension.json"
EXTENSION_FORMAT = "koforge-extension/1"
VOCAB_TXT = "vocab.txt"
UNUSED = re.compile(r"^\[unused\d+\]$")
UNMAPPED = -1  # the id map's value for a token of the other vocabulary that has no id in the new one
SHOWN = 20  # examples of left-out tokens in the report


@dataclass(frozen=True)
class ExtendOptions:
    base: str  # tokenizer directory or hub id
    output: str
    add_vocab_from: str  # the other WordPiece tokenizer
    fill_unused: bool = False  # put the first new tokens into the base's [unused] slots
    eval_texts: tuple[tuple[str, str], ...] = ()  # (name, text file) pairs for the before/after report
    overwrite: bool = False


@dataclass(frozen=True)
class Extension:
    """The new vocabulary and how it was made."""

    vocab: list[str]  # in id order: the base's (filled [unused] slots replaced), then the appended tokens
    added: list[tuple[str, int]]  # (token, new id) in the order the other vocabulary lists them
    id_map: list[int]  # other id -> new id, UNMAPPED where none
    merged: int  # other tokens that normalize onto a token another other token already gave
    left_out: list[str]  # other tokens that the base tokenizer could never produce
    warnings: list[str]


def tokenizer_state(tokenizer: LoadedTokenizer) -> dict:
    return json.loads(tokenizer.files[TOKENIZER_JSON].decode("utf-8"))


def lowercases(state: dict) -> bool:
    """Whether a tokenizer.json's normalizer lower-cases (BertNormalizer, Lowercase, or one in a Sequence)."""
    normalizer = state.get("normalizer") or {}
    kind = normalizer.get("type")
    if kind == "Sequence":
        return any(lowercases({"normalizer": part}) for part in normalizer.get("normalizers", []))
    return kind == "Lowercase" or (kind == "BertNormalizer" and bool(normalizer.get("lowercase")))


def continuation_prefix(state: dict) -> str:
    return state["model"].get("continuing_subword_prefix") or "##"


def extend_vocabulary(base: LoadedTokenizer, other: LoadedTokenizer, fill_unused: bool) -> Extension:
    """Every token of `other` that `base` lacks, in `other`'s id order, appended to `base` (see the module docstring)."""
    from tokenizers import Tokenizer

    base_state, other_state = tokenizer_state(base), tokenizer_state(other)
    base_backend = Tokenizer.from_str(base.files[TOKENIZER_JSON].decode("utf-8"))
    base_prefix, other_prefix = continuation_prefix(base_state), continuation_prefix(other_state)
    warnings = []
    if not lowercases(base_state) and lowercases(other_state):
        warnings.append(f"{base.source} is cased and {other.source} lower-cases: the added tokens are lower-case and "
                        "match lower-case text only (upper-case words keep the base's pieces)")
    vocab = list(base.vocab)
    index = {token: token_id for token_id, token in enumerate(vocab)}
    free_slots = [token_id for token_id, token in enumerate(vocab) if UNUSED.match(token)] if fill_unused else []
    special_by_name = {other.vocab[token_id]: base.special_ids[role] for role, token_id in other.special_ids.items()}
    id_map, added, left_out, merged, new_ids = [], [], [], 0, set()
    for token in other.vocab:
        if token in special_by_name:
            id_map.append(special_by_name[token])
            continue
        if UNUSED.match(token):
            id_map.append(UNMAPPED)
            continue
        continuation = token.startswith(other_prefix) and len(token) > len(other_prefix)
        body = token[len(other_prefix):] if continuation else token
        normalized = base_backend.normalizer.normalize_str(body) if base_backend.normalizer else body
        words = base_backend.pre_tokenizer.pre_tokenize_str(normalized) if base_backend.pre_tokenizer else [(normalized, None)]
        if not normalized or len(words) != 1 or words[0][0] != normalized:
            id_map.append(UNMAPPED)
            left_out.append(token)
            continue
        surface = base_prefix + normalized if continuation else normalized
        if surface in index:
            merged += index[surface] in new_ids
            id_map.append(index[surface])
            continue
        if free_slots:
            new_id = free_slots.pop(0)
            del index[vocab[new_id]]
            vocab[new_id] = surface
        else:
            new_id = len(vocab)
            vocab.append(surface)
        index[surface] = new_id
        new_ids.add(new_id)
        added.append((surface, new_id))
        id_map.append(new_id)
    if left_out:
        warnings.append(f"{len(left_out):,} tokens of {other.source} are left out: the base's normalizer or "
                        f"pre-tokenizer would never produce them (e.g. {', '.join(map(repr, left_out[:5]))})")
    return Extension(vocab, added, id_map, merged, left_out, warnings)


def extended_files(base: LoadedTokenizer, extension: Extension) -> dict[str, bytes]:
    """The base's four files with the new vocabulary: tokenizer.json's WordPiece vocabulary and vocab.txt;
    a filled [unused] slot that the base listed as an added token stops being one."""
    from tokenizers import Tokenizer

    state = tokenizer_state(base)
    state["model"]["vocab"] = {token: token_id for token_id, token in enumerate(extension.vocab)}
    replaced = {base.vocab[token_id] for _, token_id in extension.added if token_id < len(base.vocab)}
    state["added_tokens"] = [token for token in state.get("added_tokens", []) if token["content"] not in replaced]
    tokenizer = Tokenizer.from_str(json.dumps(state, ensure_ascii=False))
    return {**base.files,
            VOCAB_TXT: "".join(token + "\n" for token in extension.vocab).encode("utf-8"),
            TOKENIZER_JSON: (tokenizer.to_str(pretty=True) + "\n").encode("utf-8")}


def files_fingerprint(files: dict[str, bytes], scratch: Path) -> str:
    """transforms.token_shards' fingerprint of a tokenizer's files (written into `scratch` to hash them):
    the base's equals the fingerprint of shards tokenized with it."""
    scratch.mkdir(parents=True)
    for name, data in files.items():
        (scratch / name).write_bytes(data)
    fingerprint = token_shards.tokenizer_fingerprint(str(scratch))
    storage.delete(str(scratch))
    return fingerprint


def text_lines(path: str) -> Iterator[str]:
    """One document a line (compressed by suffix), for the before/after report."""
    with storage.open_decompressed(path) as raw, io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if text:
                yield text


def compare(base: LoadedTokenizer, extended: LoadedTokenizer, eval_texts) -> dict:
    """Per held-out text: [UNK] rate, tokens per word and whole-word share before and after."""
    from tokenizers import Tokenizer

    before = Tokenizer.from_str(base.files[TOKENIZER_JSON].decode("utf-8"))
    after = Tokenizer.from_str(extended.files[TOKENIZER_JSON].decode("utf-8"))
    return {name: {"before": evaluate(before, text_lines(path)), "after": evaluate(after, text_lines(path))}
            for name, path in eval_texts}


def make_report(options: ExtendOptions, base: LoadedTokenizer, other: LoadedTokenizer, extension: Extension,
                fingerprints: dict[str, str], evaluation: dict, seconds: float) -> dict:
    filled = [token_id for _, token_id in extension.added if token_id < len(base.vocab)]
    return {
        "format": EXTENSION_FORMAT,
        "base": {"source": base.source, "fingerprint": fingerprints["base"], "vocab_size": len(base.vocab),
                 "lowercase": lowercases(tokenizer_state(base))},
        "source": {"source": other.source, "fingerprint": fingerprints["other"], "vocab_size": len(other.vocab),
                   "lowercase": lowercases(tokenizer_state(other))},
        "fingerprint": fingerprints["extended"],
        "vocab_size": len(extension.vocab),
        "added": [[token, token_id] for token, token_id in extension.added],
        "filled_unused": filled,
        "merged": extension.merged,
        "left_out": {"count": len(extension.left_out), "examples": extension.left_out[:SHOWN]},
        "id_map": extension.id_map,
        "evaluation": evaluation,
        "warnings": extension.warnings,
        "seconds": round(seconds, 3),
    }


def load(source: str, what: str) -> LoadedTokenizer:
    try:
        return load_tokenizer(source, what)
    except TokenizerSourceError as error:
        raise TokenizeError(str(error)) from error


def extend_tokenizer(options: ExtendOptions, progress: Progress | None = None) -> dict:
    """Extend, check with transformers, write the directory (extension.json last); return extension.json's content."""
    progress = progress or Progress("pipeline.tokenize")
    started = time.perf_counter()
    for _, path in options.eval_texts:
        if not storage.is_file(path):
            raise TokenizeError(f"--eval-text {path}: no such file")
    output = prepare_output(options.output, options.overwrite)
    base, other = load(options.base, "--extend"), load(options.add_vocab_from, "--add-vocab-from")
    extension = extend_vocabulary(base, other, options.fill_unused)
    for warning in extension.warnings:
        progress.say(f"warning: {warning}")
    files = extended_files(base, extension)
    try:
        extended = tokenizer_from_files(files, str(output), verify=True)
    except TokenizerSourceError as error:
        raise TokenizeError(f"the extended tokenizer does not load back: {error}") from error
    staging = Path(storage.staging_dir(str(output)))
    storage.delete(str(staging))
    (staging / "tokenizer").mkdir(parents=True)
    try:
        for name in TOKENIZER_FILES:
            (staging / "tokenizer" / name).write_bytes(files[name])
        fingerprints = {"base": files_fingerprint(base.files, staging / "base"),
                        "other": files_fingerprint(other.files, staging / "other"),
                        "extended": token_shards.tokenizer_fingerprint(str(staging / "tokenizer"))}
        evaluation = compare(base, extended, options.eval_texts)
        report = make_report(options, base, other, extension, fingerprints, evaluation, time.perf_counter() - started)
        entries = [(str(staging / "tokenizer" / name), name) for name in TOKENIZER_FILES]
        # A tokenizer_report.json of an earlier pipeline.tokenize run would describe other files.
        storage.publish(str(staging), str(output), entries, replaced=(REPORT_FILE,), marker=EXTENSION_FILE)
        storage.write_json_atomic(str(output / EXTENSION_FILE), report, sort_keys=False)
    finally:
        storage.delete(str(staging))
    progress.say(f"wrote {output}")
    return report


def read_extension(directory: str) -> dict:
    """DIR/extension.json, checked for its format (distill.extend and distill.train read the id map from it)."""
    path = storage.join(directory, EXTENSION_FILE)
    if not storage.is_file(path):
        raise ValueError(f"{directory}: no {EXTENSION_FILE}; make the tokenizer with python -m pipeline.tokenize "
                         "--extend BASE --add-vocab-from OTHER --output DIR")
    report = storage.read_json(path)
    if report.get("format") != EXTENSION_FORMAT:
        raise ValueError(f"{path}: format {report.get('format')!r}, expected {EXTENSION_FORMAT}")
    return report
