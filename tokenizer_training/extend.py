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

`--add-tokens N` adds instead the N words of a corpus whose own entry saves the most tokens
(occurrences x pieces saved, counted as the base tokenizer splits the text into words) and
reports tokens per word before and after on the corpus's held-out documents; see
`most_useful_words`.

The output is a normal tokenizer directory (the four files of tokenizer_training.loading's
normal form, AutoTokenizer-loadable, checked on load) plus `extension.json`, written last.
See docs/tokenize.md#extending-a-vocabulary.
"""
from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.cli import Progress
from tokenizer_training import corpus
from tokenizer_training.build import REPORT_FILE, TokenizeOptions, list_and_check_inputs, prepare_output, read_options
from tokenizer_training.errors import TokenizeError
from tokenizer_training.evaluate import evaluate
from tokenizer_training.loading import LoadedTokenizer, TokenizerSourceError, load_tokenizer, tokenizer_from_files
from tokenizer_training.sampling import document_uniforms
from transforms import storage, token_shards
from transforms.special_tokens import TOKENIZER_FILES, TOKENIZER_JSON

EXTENSION_FILE = "extension.json"
EXTENSION_FORMAT = "koforge-extension/1"
VOCAB_TXT = "vocab.txt"
UNUSED = re.compile(r"^\[unused\d+\]$")
UNMAPPED = -1  # the id map's value for a token of the other vocabulary that has no id in the new one
SHOWN = 20  # examples of left-out tokens (and of the chosen words' gains) in the report
MAX_WORD_CHARS = 100  # BERT's WordPiece max_input_chars_per_word: a longer word is [UNK] whatever the vocabulary
ENCODE_WORDS = 20_000  # distinct words encoded at a time when scoring them


@dataclass(frozen=True)
class ExtendOptions:
    base: str  # tokenizer directory or hub id
    output: str
    add_vocab_from: str | None = None  # the other WordPiece tokenizer, or
    add_tokens: int | None = None  # this many words of the corpus (`corpus`), the most useful first
    corpus: TokenizeOptions | None = None  # with add_tokens: the inputs and how to read them
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


class GrowingVocabulary:
    """The base vocabulary and the tokens placed into it: [unused] slots first (with fill_unused), then appended."""

    def __init__(self, base: LoadedTokenizer, fill_unused: bool) -> None:
        self.vocab = list(base.vocab)
        self.index = {token: token_id for token_id, token in enumerate(self.vocab)}
        self.free_slots = [token_id for token_id, token in enumerate(self.vocab) if UNUSED.match(token)] \
            if fill_unused else []
        self.added: list[tuple[str, int]] = []
        self.new_ids: set[int] = set()

    def place(self, surface: str) -> int:
        """The new id of a token the vocabulary lacks."""
        if self.free_slots:
            new_id = self.free_slots.pop(0)
            del self.index[self.vocab[new_id]]
            self.vocab[new_id] = surface
        else:
            new_id = len(self.vocab)
            self.vocab.append(surface)
        self.index[surface] = new_id
        self.new_ids.add(new_id)
        self.added.append((surface, new_id))
        return new_id


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
    growing = GrowingVocabulary(base, fill_unused)
    special_by_name = {other.vocab[token_id]: base.special_ids[role] for role, token_id in other.special_ids.items()}
    id_map, left_out, merged = [], [], 0
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
        if surface in growing.index:
            merged += growing.index[surface] in growing.new_ids
            id_map.append(growing.index[surface])
            continue
        id_map.append(growing.place(surface))
    if left_out:
        warnings.append(f"{len(left_out):,} tokens of {other.source} are left out: the base's normalizer or "
                        f"pre-tokenizer would never produce them (e.g. {', '.join(map(repr, left_out[:5]))})")
    return Extension(growing.vocab, growing.added, id_map, merged, left_out, warnings)


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


def count_words(base: LoadedTokenizer, options: TokenizeOptions, held_out: Path,
                progress: Progress) -> tuple[Counter, dict]:
    """Words of the corpus as the base tokenizer sees them (its normalizer and pre-tokenizer), counted
    over the documents that are not held out; the held-out ones go to `held_out`, one a line. Holds one
    count per distinct word (docs/tokenize.md#adding-a-corpuss-words)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(base.files[TOKENIZER_JSON].decode("utf-8"))
    files = list_and_check_inputs(options, None)
    counts, drops, facts = Counter(), Counter(), Counter()
    with open(held_out, "w", encoding="utf-8") as handle:
        for batch in corpus.read_batches(files, options.text_field, None, drops, limit=options.limit,
                                         read_options=read_options(options)):
            held = (document_uniforms(batch.texts, options.seed)[:, 0] < options.eval_fraction).tolist()
            for text, is_held in zip(batch.texts.to_pylist(), held):
                if is_held:
                    handle.write(" ".join(text.split()) + "\n")
                    continue
                normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
                counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
            facts["documents"] += len(held)
            facts["held_out"] += sum(held)
            progress.tick(f"counting words: {facts['documents']:,} documents read")
    if facts["documents"] == facts["held_out"]:
        raise TokenizeError(f"the input holds no usable document outside the held-out sample ({facts['documents']:,} "
                            "read); lower --eval-fraction or give more text")
    return counts, {**facts, "distinct_words": len(counts), "dropped": dict(sorted(drops.items()))}


def most_useful_words(base: LoadedTokenizer, counts: Counter, count: int) -> list[tuple[str, int]]:
    """The `count` words whose own entry saves the most tokens on the counted text, with that saving:
    occurrences x (pieces under the base vocabulary - 1). A word's entry always wins its own greedy
    longest match, so the saving is exact for the word itself; words it is a prefix of may change too,
    which the held-out comparison measures. Words the base turns into [UNK] save no tokens and are not chosen."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(base.files[TOKENIZER_JSON].decode("utf-8"))
    unk = base.special_ids["unk"]
    vocabulary = set(base.vocab)
    words = sorted(word for word in counts if len(word) <= MAX_WORD_CHARS and word not in vocabulary)
    gains = []
    for start in range(0, len(words), ENCODE_WORDS):
        chunk = words[start:start + ENCODE_WORDS]
        encodings = backend.encode_batch([[word] for word in chunk], is_pretokenized=True, add_special_tokens=False)
        gains.extend((counts[word] * (len(encoding.ids) - 1), word) for word, encoding in zip(chunk, encodings)
                     if len(encoding.ids) > 1 and unk not in encoding.ids)
    gains.sort(key=lambda item: (-item[0], item[1]))
    return [(word, gain) for gain, word in gains[:count]]


def corpus_extension(base: LoadedTokenizer, options: ExtendOptions, held_out: Path,
                     progress: Progress) -> tuple[Extension, dict, dict]:
    """--add-tokens N: (the extension, the report's source, the selection's facts)."""
    counts, facts = count_words(base, options.corpus, held_out, progress)
    chosen = most_useful_words(base, counts, options.add_tokens)
    growing = GrowingVocabulary(base, options.fill_unused)
    for word, _ in chosen:
        growing.place(word)
    warnings = []
    if len(chosen) < options.add_tokens:
        warnings.append(f"only {len(chosen):,} words of the corpus would save tokens, fewer than the "
                        f"{options.add_tokens:,} asked for")
    source = {"source": "corpus", "inputs": list(options.corpus.inputs), "fingerprint": None, "vocab_size": None,
              "lowercase": None}
    selection = {**facts, "asked": options.add_tokens, "tokens_saved": sum(gain for _, gain in chosen),
                 "best": [[word, gain] for word, gain in chosen[:SHOWN]]}
    return Extension(growing.vocab, growing.added, [], 0, [], warnings), source, selection


def source_facts(other: LoadedTokenizer, scratch: Path) -> dict:
    return {"source": other.source, "fingerprint": files_fingerprint(other.files, scratch),
            "vocab_size": len(other.vocab), "lowercase": lowercases(tokenizer_state(other))}


def make_report(base: LoadedTokenizer, source: dict, extension: Extension, fingerprints: dict[str, str],
                evaluation: dict, seconds: float, selection: dict | None) -> dict:
    filled = [token_id for _, token_id in extension.added if token_id < len(base.vocab)]
    return {
        "format": EXTENSION_FORMAT,
        "base": {"source": base.source, "fingerprint": fingerprints["base"], "vocab_size": len(base.vocab),
                 "lowercase": lowercases(tokenizer_state(base))},
        "source": source,
        **({"selection": selection} if selection is not None else {}),
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
    base = load(options.base, "--extend")
    staging = Path(storage.staging_dir(str(output)))
    storage.delete(str(staging))
    (staging / "tokenizer").mkdir(parents=True)
    try:
        eval_texts, selection = options.eval_texts, None
        if options.add_vocab_from is not None:
            other = load(options.add_vocab_from, "--add-vocab-from")
            extension = extend_vocabulary(base, other, options.fill_unused)
            source = source_facts(other, staging / "other")
        else:
            held_out = staging / "held_out.txt"
            extension, source, selection = corpus_extension(base, options, held_out, progress)
            eval_texts = (("held_out", str(held_out)), *eval_texts)
        for warning in extension.warnings:
            progress.say(f"warning: {warning}")
        files = extended_files(base, extension)
        try:
            extended = tokenizer_from_files(files, str(output), verify=True)
        except TokenizerSourceError as error:
            raise TokenizeError(f"the extended tokenizer does not load back: {error}") from error
        for name in TOKENIZER_FILES:
            (staging / "tokenizer" / name).write_bytes(files[name])
        fingerprints = {"base": files_fingerprint(base.files, staging / "base"),
                        "extended": token_shards.tokenizer_fingerprint(str(staging / "tokenizer"))}
        evaluation = compare(base, extended, eval_texts)
        report = make_report(base, source, extension, fingerprints, evaluation, time.perf_counter() - started,
                             selection)
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
