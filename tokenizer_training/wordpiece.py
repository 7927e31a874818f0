"""WordPiece vocabularies on HF `tokenizers`, as KcBERT (cased, 30,000) and LM-kor (lowercased, 2,000
[unused] of 42,000) built theirs, saved in the layout `transformers` loads.

Accents are never stripped: BERT's accent stripping decomposes text to NFD and drops the
combining marks, and NFD turns every Hangul syllable into its jamo, so `strip_accents` is
False even with lowercasing (transformers would otherwise tie it to `do_lower_case`).

Determinism. The `tokenizers` WordPiece trainer gives the `##` continuation form of each
character an id in hash-map order (huggingface/tokenizers#1794) and breaks merge ties by id,
so two runs over the same text can learn different vocabularies. Here the alphabet is
computed beforehand from a character count and handed to the trainer whole: the characters
(every one, or the --limit-alphabet most frequent) as its initial alphabet, and the `##`
form of each character that can continue a word as reserved tokens in code-point order.
The trainer then creates no token in hash order, and training depends on the text alone,
whatever the thread count. As in Google's BERT vocabularies, every kept character exists
in both forms, so no word becomes [UNK] only because a known character shows up in a new
position. The reserved `##` and [unused] entries are then made ordinary vocabulary entries:
only the five BERT special tokens stay added tokens, so text is never matched against them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from transforms.special_tokens import BERT_SPECIAL_TOKENS, SPECIAL_TOKEN_ROLES, TOKENIZER_FILES  # noqa: F401 (re-exported)

CONTINUATION = "##"
CODE_POINTS = 0x110000


def unused_tokens(count: int) -> list[str]:
    return [f"[unused{index}]" for index in range(count)]


def bert_tokenizer(lowercase: bool) -> Tokenizer:
    """An untrained BERT WordPiece pipeline: BERT normalizer without accent stripping, [CLS] A [SEP] B [SEP]."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", BERT_SPECIAL_TOKENS.index("[CLS]")), ("[SEP]", BERT_SPECIAL_TOKENS.index("[SEP]"))])
    return tokenizer


def count_characters(utf8: np.ndarray, counts: np.ndarray) -> None:
    """Add the code points of valid UTF-8 bytes (a uint8 array) to `counts` (CODE_POINTS int64s)."""
    code_points = np.frombuffer(utf8.tobytes().decode("utf-8").encode("utf-32-le"), dtype="<u4")
    counts += np.bincount(code_points, minlength=CODE_POINTS)


@dataclass(frozen=True)
class Alphabet:
    characters: tuple[str, ...]  # after normalization, in code-point order
    continuations: tuple[str, ...]  # the characters that can follow another inside a word
    dropped: int  # characters left out by the limit

    def reserved_tokens(self, unused: int) -> list[str]:
        """What the vocabulary holds before any merge, in id order (specials, [unused], ## forms)."""
        return [*BERT_SPECIAL_TOKENS, *unused_tokens(unused), *(CONTINUATION + char for char in self.continuations)]

    def base_size(self, unused: int) -> int:
        """Vocabulary entries taken before the first learned subword."""
        return len(self.reserved_tokens(unused)) + len(self.characters)


def build_alphabet(counts: np.ndarray, tokenizer: Tokenizer, limit: int | None) -> Alphabet:
    """The characters the trainer will see, from raw code-point counts, by the tokenizer's own rules.

    Each raw character is normalized between two letters and pre-tokenized: whitespace and
    removed control characters yield nothing; punctuation and CJK ideographs become words
    of their own (in the alphabet, never continuations); anything else stays glued to its
    neighbours and so can also continue a word.
    """
    totals: dict[str, int] = {}
    glued: set[str] = set()
    for code in np.flatnonzero(counts).tolist():
        words = [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.normalizer.normalize_str(f"a{chr(code)}a"))]
        inner = "".join(words)[1:-1]
        for char in inner:
            totals[char] = totals.get(char, 0) + int(counts[code])
        if len(words) == 1:
            glued.update(inner)
    ranked = sorted(totals, key=lambda char: (-totals[char], char))
    kept = ranked if limit is None else ranked[:limit]
    return Alphabet(tuple(sorted(kept)), tuple(sorted(glued.intersection(kept))), len(ranked) - len(kept))


def train(tokenizer: Tokenizer, batches: Iterable[list[str]], alphabet: Alphabet, vocab_size: int,
          min_frequency: int, unused: int) -> Tokenizer:
    """Stream the batches through the WordPiece trainer; the trained tokenizer, reserved entries made ordinary."""
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=alphabet.reserved_tokens(unused), limit_alphabet=len(alphabet.characters),
        initial_alphabet=list(alphabet.characters), continuing_subword_prefix=CONTINUATION)
    tokenizer.train_from_iterator(batches, trainer)
    state = json.loads(tokenizer.to_str())
    state["added_tokens"] = [token for token in state["added_tokens"] if token["content"] in BERT_SPECIAL_TOKENS]
    return Tokenizer.from_str(json.dumps(state, ensure_ascii=False))


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The tokens in id order (ids are 0..n-1 without gaps)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise AssertionError("the trained vocabulary has gaps in its ids")
    return tokens


def tokenizer_config(lowercase: bool, model_max_length: int) -> dict:
    """tokenizer_config.json for BertTokenizer(Fast), transformers 4 and 5."""
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": False,
        "tokenize_chinese_chars": True,
        "clean_up_tokenization_spaces": True,
        "model_max_length": model_max_length,
        **special_tokens_map(),
    }


def special_tokens_map() -> dict:
    return {f"{role}_token": token for role, token in zip(SPECIAL_TOKEN_ROLES, BERT_SPECIAL_TOKENS)}


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save(tokenizer: Tokenizer, directory: Path, lowercase: bool, model_max_length: int) -> None:
    """Write the four tokenizer files (koforge-tokenizer/1, docs/formats.md) into an existing directory."""
    contents = {
        "vocab.txt": "".join(token + "\n" for token in vocabulary(tokenizer)),
        "tokenizer.json": tokenizer.to_str(pretty=True) + "\n",
        "tokenizer_config.json": _json(tokenizer_config(lowercase, model_max_length)),
        "special_tokens_map.json": _json(special_tokens_map()),
    }
    for name in TOKENIZER_FILES:
        with open(directory / name, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(contents[name])
