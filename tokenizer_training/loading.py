"""Any BERT WordPiece tokenizer -> exactly the files of a koforge tokenizer directory.

Why: a teacher is usually a published Korean BERT, whose tokenizer comes in one of several
layouts: `vocab.txt` alone (most Korean BERTs), `vocab.txt` with `tokenizer_config.json`
beside the model's `config.json` and weights, `tokenizer.json` without `vocab.txt` (what
transformers 5 saves), or a hub id. `pipeline.shard --tokenizer`, `distill.train` and
`distill.evaluate` all read a tokenizer through `load_tokenizer`, which turns any of these into
the same four files (`vocab.txt`, `tokenizer.json`, `tokenizer_config.json`,
`special_tokens_map.json`: transforms.special_tokens.TOKENIZER_FILES) and never reads anything
else: weights in a teacher's directory can no longer reach the shards, and from there the
exported student (the bug of issue 14, where the "student" was a copy of the teacher).

What is kept and what is written:

- Files the source has are kept byte for byte (a directory written by pipeline.tokenize is its
  own normal form, so its fingerprint does not change). The missing ones are derived:
  `vocab.txt` from `tokenizer.json`'s vocabulary, `tokenizer.json` from `vocab.txt` with BERT's
  pipeline (as transformers' BertConverter builds it), the two config files from the facts.
- Casing is taken from `tokenizer.json`'s normalizer, else from `tokenizer_config.json` (with
  transformers' defaults), else, for a directory that says nothing about it, inferred from the
  vocabulary: lower-casing only when no token has an upper-case letter, and never accent
  stripping when the vocabulary holds Hangul syllables, because BERT's accent stripping
  decomposes every syllable into jamo and the whole text becomes [UNK].
- Checks: a WordPiece model, ids 0..n-1 without gaps, `vocab.txt` and `tokenizer.json` agreeing,
  the five special tokens present, and the tokenizer tokenizing its own vocabulary without
  turning most of it into [UNK] (the sign of a wrong casing setting). When transformers is
  installed, the written files are loaded back with `AutoTokenizer` and must give the same ids.

A local-looking path that does not exist is "no such directory", never a hub call; a hub id is
fetched with `huggingface_hub.snapshot_download`, tokenizer and config files only.
See docs/distill.md ("From a published teacher") and docs/formats.md.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transforms import storage
from transforms.special_tokens import SPECIAL_TOKEN_ROLES, TOKENIZER_FILES, TOKENIZER_JSON, special_token_names

VOCAB_TXT = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
MODEL_CONFIG = "config.json"  # read for model_max_length only; never copied
if TYPE_CHECKING:  # tokenizers is imported where it is used: pipeline.shard --help stays light
    from tokenizers import Tokenizer
# Fast tokenizer classes whose backend is BERT's WordPiece pipeline.
WORDPIECE_CLASSES = {"BertTokenizer", "BertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast",
                     "DistilBertTokenizer", "DistilBertTokenizerFast", "PreTrainedTokenizerFast",
                     "TokenizersBackend"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
MAX_UNK_SHARE = 0.5  # of the vocabulary's own words; a correct tokenizer maps almost none to [UNK]
PROBES = ("한국어 모델을 공유합니다.", "KoBERT와 KLUE-BERT, 그리고 kcbert!", "ㅋㅋㅋ 진짜 재밌다 10000점",
          "Hello World, 2024년 1월", "日本語 中文 Ünïcödé")


class TokenizerSourceError(ValueError):
    """The source cannot be read as a BERT WordPiece tokenizer; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer in its normal form: the four files, what they define, and what was derived."""

    source: str
    files: dict[str, bytes]  # exactly TOKENIZER_FILES
    vocab: list[str]  # tokens in id order
    special_ids: dict[str, int]  # role (pad, unk, cls, sep, mask) -> id
    notes: list[str] = field(default_factory=list)  # files derived, settings inferred


# ---------------------------------------------------------------- where the files are


def looks_local(source: str) -> bool:
    """Whether `source` is meant as a path (local or gs:// s3://) rather than a hub id."""
    if storage.is_remote(source) or os.path.isabs(source) or source.startswith((".", "~")) or source.endswith("/"):
        return True
    if "\\" in source or source.count("/") > 1 or not HUB_ID.match(source):
        return True
    first = source.split("/")[0]
    return os.path.exists(source) or ("/" in source and os.path.isdir(first))


def resolve_directory(source: str, what: str = "tokenizer") -> str:
    """The directory holding `source`'s files: the path itself, or a hub snapshot of the
    tokenizer and config files (weights are never downloaded). Raises TokenizerSourceError."""
    if looks_local(source):
        path = source if storage.is_remote(source) else os.path.expanduser(source)
        if not storage.is_dir(path):
            raise TokenizerSourceError(f"{what} {source}: no such directory")
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=source, allow_patterns=[*TOKENIZER_FILES, MODEL_CONFIG])
    except Exception as error:  # offline, unknown repo, gated repo: all end the same way
        raise TokenizerSourceError(f"{what} {source}: not a local directory, and the hub could not provide it "
                                   f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


def read_tokenizer_sources(directory: str) -> dict[str, bytes]:
    """The tokenizer files (and config.json) a directory has, by name; nothing else is read."""
    files = {}
    for name in (*TOKENIZER_FILES, MODEL_CONFIG):
        path = storage.join(directory, name)
        if storage.is_file(path):
            files[name] = storage.read_bytes(path)
    return files


def has_tokenizer(files: dict[str, bytes]) -> bool:
    """A tokenizer is defined by tokenizer.json or vocab.txt; config files alone define none."""
    return TOKENIZER_JSON in files or VOCAB_TXT in files


# ---------------------------------------------------------------- the WordPiece backend


def parse_vocab_txt(data: bytes) -> list[str]:
    """vocab.txt: one token a line, ids in line order (BERT's load_vocab: only the newline is cut; a
    token listed twice maps to its last line, the earlier id is never produced)."""
    tokens = data.decode("utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def infer_casing(vocab: list[str]) -> dict:
    """BERT normalizer settings for a vocabulary that comes without any: lower-case only when no
    token has an upper-case letter; no accent stripping when Hangul syllables are in the vocabulary."""
    words = [token for token in vocab if not (token.startswith("[") and token.endswith("]"))]  # not [CLS], [unused0]
    lowercase = not any(char.isupper() for token in words for char in token)
    hangul = any("\uac00" <= char <= "\ud7a3" for token in vocab for char in token)
    return {"lowercase": lowercase, "strip_accents": False if hangul else None, "handle_chinese_chars": True}


def casing_from_config(config: dict) -> dict:
    """BERT normalizer settings from tokenizer_config.json, with transformers' defaults."""
    return {"lowercase": bool(config.get("do_lower_case", True)), "strip_accents": config.get("strip_accents"),
            "handle_chinese_chars": bool(config.get("tokenize_chinese_chars", True))}


def wordpiece_tokenizer(vocab: list[str], names: dict[str, str], casing: dict) -> Tokenizer:
    """BERT's pipeline over a vocabulary, as transformers' BertConverter builds it from vocab.txt."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {token: index for index, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(vocab=ids, unk_token=names["unk"], max_input_chars_per_word=100,
                                           continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, **casing)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls, sep = names["cls"], names["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
    tokenizer.add_special_tokens([AddedToken(names[role], special=True, normalized=False)
                                  for role in SPECIAL_TOKEN_ROLES])
    return tokenizer


def vocabulary(tokenizer: Tokenizer, source: str) -> list[str]:
    """Tokens in id order; ids must run 0..n-1 without gaps (shards and embeddings index by id)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise TokenizerSourceError(f"{source}: the tokenizer's ids are not 0..{len(tokens) - 1} without gaps")
    return tokens


def backend(files: dict[str, bytes], names: dict[str, str], source: str) -> tuple[Tokenizer, list[str], list[str]]:
    """(tokenizers.Tokenizer, vocabulary, notes) from tokenizer.json, else from vocab.txt."""
    from tokenizers import Tokenizer

    notes = []
    if TOKENIZER_JSON in files:
        try:
            tokenizer = Tokenizer.from_str(files[TOKENIZER_JSON].decode("utf-8"))
        except Exception as error:
            raise TokenizerSourceError(f"{source}: tokenizer.json cannot be read ({error})") from error
        kind = json.loads(tokenizer.to_str())["model"]["type"]
        if kind != "WordPiece":
            raise TokenizerSourceError(f"{source}: tokenizer.json holds a {kind} model; koforge's shards and students "
                                       "need a BERT WordPiece tokenizer")
        vocab = vocabulary(tokenizer, source)
        if VOCAB_TXT in files and parse_vocab_txt(files[VOCAB_TXT]) != vocab:
            raise TokenizerSourceError(f"{source}: vocab.txt and tokenizer.json list different vocabularies")
        return tokenizer, vocab, notes
    vocab = parse_vocab_txt(files[VOCAB_TXT])
    if TOKENIZER_CONFIG in files:
        casing = casing_from_config(json.loads(files[TOKENIZER_CONFIG]))
    else:
        casing = infer_casing(vocab)
        notes.append(f"no tokenizer_config.json: casing inferred from the vocabulary (lowercase "
                     f"{casing['lowercase']}, strip_accents {casing['strip_accents']})")
    missing = [names[role] for role in SPECIAL_TOKEN_ROLES if names[role] not in vocab]
    if missing:
        raise TokenizerSourceError(f"{source}: the tokenizer lacks special tokens: {', '.join(missing)}")
    notes.append("tokenizer.json built from vocab.txt (BERT's WordPiece pipeline)")
    return wordpiece_tokenizer(vocab, names, casing), vocab, notes


# ---------------------------------------------------------------- checks


def check_tokenizer_class(files: dict[str, bytes], source: str) -> None:
    """Refuse a directory whose config names a tokenizer that is not BERT's WordPiece (KoBERT's
    SentencePiece tokenizer, XLM-R's, ...): its vocab.txt, if any, would be read wrongly."""
    if TOKENIZER_CONFIG not in files:
        return
    try:
        config = json.loads(files[TOKENIZER_CONFIG])
    except ValueError as error:
        raise TokenizerSourceError(f"{source}: tokenizer_config.json is not JSON ({error})") from error
    name = config.get("tokenizer_class")
    if (name is not None and name not in WORDPIECE_CLASSES) or "auto_map" in config:
        raise TokenizerSourceError(f"{source}: tokenizer_config.json names {name or 'custom code (auto_map)'}, not a "
                                   "BERT WordPiece tokenizer; koforge needs a fast WordPiece tokenizer")


def special_ids(tokenizer: Tokenizer, names: dict[str, str], source: str) -> dict[str, int]:
    ids = {role: tokenizer.token_to_id(name) for role, name in names.items()}
    missing = [f"{role} {names[role]}" for role, token_id in ids.items() if token_id is None]
    if missing:
        raise TokenizerSourceError(f"{source}: the tokenizer lacks special tokens: {', '.join(missing)}")
    return ids


def check_unknown_share(tokenizer: Tokenizer, vocab: list[str], unk_id: int, source: str) -> None:
    """Refuse a tokenizer that turns most of its own vocabulary into [UNK]: its normalizer does not
    fit its vocabulary (typically lower-casing with accent stripping over Hangul syllables)."""
    words = [token for token in vocab if token and not token.startswith(("##", "[")) and not token.isspace()]
    words = words[:: max(1, len(words) // 2000)]
    if not words:
        return
    unknown = sum(unk_id in encoding.ids for encoding in tokenizer.encode_batch(words, add_special_tokens=False))
    if unknown > MAX_UNK_SHARE * len(words):
        raise TokenizerSourceError(
            f"{source}: the tokenizer turns {unknown} of {len(words)} of its own vocabulary words into [UNK], so its "
            "settings do not fit its vocabulary (lower-casing or accent stripping over a cased or Hangul vocabulary?). "
            "Give the directory a tokenizer_config.json with the right do_lower_case and strip_accents")


# ---------------------------------------------------------------- the normal form


def _json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def derived_config(tokenizer: Tokenizer, names: dict[str, str], files: dict[str, bytes]) -> dict:
    """tokenizer_config.json for a source without one: the class and casing its normalizer implies
    (transformers 4 re-applies do_lower_case to a BERT normalizer on load, so they must agree)."""
    state = json.loads(tokenizer.to_str()).get("normalizer") or {}
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if state.get("type") == "BertNormalizer":
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": state["lowercase"],
                  "strip_accents": state["strip_accents"], "tokenize_chinese_chars": state["handle_chinese_chars"],
                  "clean_up_tokenization_spaces": True}
    if MODEL_CONFIG in files:
        positions = json.loads(files[MODEL_CONFIG]).get("max_position_embeddings")
        if isinstance(positions, int):
            config["model_max_length"] = positions
    return {**config, **{f"{role}_token": names[role] for role in SPECIAL_TOKEN_ROLES}}


def normal_files(files: dict[str, bytes], tokenizer: Tokenizer, vocab: list[str], names: dict[str, str]) -> dict[str, bytes]:
    """The four files: the source's own where it has them, the rest derived."""
    derived = {
        VOCAB_TXT: lambda: "".join(token + "\n" for token in vocab).encode("utf-8"),
        TOKENIZER_JSON: lambda: (tokenizer.to_str(pretty=True) + "\n").encode("utf-8"),
        TOKENIZER_CONFIG: lambda: _json_bytes(derived_config(tokenizer, names, files)),
        SPECIAL_TOKENS_MAP: lambda: _json_bytes({f"{role}_token": names[role] for role in SPECIAL_TOKEN_ROLES}),
    }
    return {name: files[name] if name in files else derived[name]() for name in TOKENIZER_FILES}


def verify_with_transformers(files: dict[str, bytes], tokenizer: Tokenizer, source: str) -> None:
    """Load the written files with AutoTokenizer (when transformers is installed): it must be a fast
    tokenizer with the same vocabulary and the same ids on probe texts as tokenizer.json."""
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with tempfile.TemporaryDirectory() as directory:
            write_tokenizer_dir(files, directory)
            loaded = AutoTokenizer.from_pretrained(directory)
            probes = list(PROBES)
            expected = [encoding.ids for encoding in tokenizer.encode_batch(probes)]
            same = loaded.is_fast and loaded.get_vocab() == tokenizer.get_vocab(with_added_tokens=True) \
                and loaded(probes)["input_ids"] == expected
    except Exception as error:
        raise TokenizerSourceError(f"{source}: transformers cannot load the tokenizer files ({error})") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    if not same:
        raise TokenizerSourceError(f"{source}: transformers tokenizes differently from tokenizer.json (do "
                                   "tokenizer_config.json's do_lower_case/strip_accents contradict it?)")


def write_tokenizer_dir(files: dict[str, bytes], directory: str) -> None:
    """Write the files (and nothing else) into `directory`, creating it."""
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(data)


def load_tokenizer(source: str, what: str = "tokenizer", verify: bool = True) -> LoadedTokenizer:
    """`source` (a directory, gs:// s3:// path or hub id) as its four normal-form files; raises
    TokenizerSourceError naming what is wrong (no such directory, no tokenizer files, not WordPiece,
    missing special tokens, settings that do not fit the vocabulary).

    pipeline.tokenize's own output (all four files and its report) is not re-checked with
    transformers: its files are the ones tests load with AutoTokenizer, and importing
    transformers costs seconds of every pipeline.shard run (docs/shard.md).
    """
    directory = resolve_directory(source, what)
    files = read_tokenizer_sources(directory)
    if not has_tokenizer(files):
        raise TokenizerSourceError(f"{what} {source}: no tokenizer files (tokenizer.json or vocab.txt)")
    return tokenizer_from_files(files, source, verify and not written_by_pipeline_tokenize(directory, files))


def written_by_pipeline_tokenize(directory: str, files: dict[str, bytes]) -> bool:
    """All four tokenizer files and pipeline.tokenize's report, in its format, beside them."""
    from tokenizer_training.build import REPORT_FILE, REPORT_FORMAT

    report = storage.join(directory, REPORT_FILE)
    if not all(name in files for name in TOKENIZER_FILES) or not storage.is_file(report):
        return False
    try:
        return storage.read_json(report).get("format") == REPORT_FORMAT
    except (ValueError, AttributeError):
        return False


def tokenizer_from_files(files: dict[str, bytes], source: str, verify: bool = True) -> LoadedTokenizer:
    """The normal form of a source's files (see load_tokenizer)."""
    check_tokenizer_class(files, source)
    try:
        names = special_token_names(files)
    except ValueError as error:
        raise TokenizerSourceError(f"{source}: a tokenizer config file is not JSON ({error})") from error
    tokenizer, vocab, notes = backend(files, names, source)
    ids = special_ids(tokenizer, names, source)
    check_unknown_share(tokenizer, vocab, ids["unk"], source)
    normal = normal_files(files, tokenizer, vocab, names)
    notes += [f"{name} derived" for name in TOKENIZER_FILES if name not in files and name != TOKENIZER_JSON]
    if verify:
        verify_with_transformers(normal, tokenizer, source)
    return LoadedTokenizer(source, normal, vocab, ids, notes)


def model_vocabulary(source: str, what: str = "the model") -> list[str] | None:
    """A model's tokenizer vocabulary in id order, or None when its directory holds no tokenizer
    files: such a model is checked by vocab_size only (transformers 5 would instead hand back a
    five-token tokenizer, and every id would look different)."""
    files = read_tokenizer_sources(resolve_directory(source, what))
    if not has_tokenizer(files):
        return None
    return tokenizer_from_files(files, source, verify=False).vocab
