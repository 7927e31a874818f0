"""How well a vocabulary fits held-out text: [UNK] rate, fertility and whole words.

A word is a whitespace-separated piece of the text, as a reader would count words (BERT's
pre-tokenizer splits punctuation off as well, so `좋다!!` is one word of three tokens). Each
word is encoded on its own (pre-tokenized input), so every token is attributed to the word
it came from.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from tokenizers import Tokenizer

ENCODE_BATCH = 1024


def evaluate(tokenizer: Tokenizer, texts: Iterable[str]) -> dict:
    """Totals and rates over the texts: unk_rate (per token), unk_word_rate, fertility, whole_word_share."""
    unk_id = tokenizer.token_to_id("[UNK]")
    totals = {"documents": 0, "words": 0, "tokens": 0, "unk_tokens": 0, "unk_words": 0, "whole_words": 0}
    batch: list[list[str]] = []
    for text in texts:
        batch.append(text.split())
        if len(batch) == ENCODE_BATCH:
            _add_batch(tokenizer, batch, unk_id, totals)
            batch = []
    if batch:
        _add_batch(tokenizer, batch, unk_id, totals)
    words, tokens = totals["words"], totals["tokens"]
    return {
        **totals,
        "unk_rate": round(totals["unk_tokens"] / tokens, 6) if tokens else None,
        "unk_word_rate": round(totals["unk_words"] / words, 6) if words else None,
        "fertility": round(tokens / words, 6) if words else None,
        "whole_word_share": round(totals["whole_words"] / words, 6) if words else None,
    }


def _add_batch(tokenizer: Tokenizer, batch: list[list[str]], unk_id: int, totals: dict) -> None:
    encodings = tokenizer.encode_batch(batch, is_pretokenized=True, add_special_tokens=False)
    for words, encoding in zip(batch, encodings):
        totals["documents"] += 1
        if not words:
            continue
        ids = np.asarray(encoding.ids, dtype=np.int64)
        word_ids = np.asarray(encoding.word_ids, dtype=np.int64)
        per_word = np.bincount(word_ids, minlength=len(words))
        unk_per_word = np.bincount(word_ids, weights=ids == unk_id, minlength=len(words))
        totals["words"] += len(words)
        totals["tokens"] += len(ids)
        totals["unk_tokens"] += int(unk_per_word.sum())
        totals["unk_words"] += int((unk_per_word > 0).sum())
        totals["whole_words"] += int(((per_word == 1) & (unk_per_word == 0)).sum())
