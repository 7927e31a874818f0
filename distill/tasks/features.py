"""Featurizers: examples -> model inputs (token ids, token types, targets), pure and numpy-only.

Text is tokenized by the model's own tokenizer, read through `tokenizer_training.loading` (the
project's one tokenizer path) and run by the `tokenizers` library; special tokens, truncation and
windows are placed here, so every featurizer is a function of token ids that the tests check
directly. Layouts are BERT's, as KoELECTRA's fine-tuning code builds them:

- one sentence: `[CLS] a [SEP]`, token types 0, truncated to `max_length`;
- a pair: `[CLS] a [SEP] b [SEP]`, types 0 then 1, the longer side shortened first, one token at a
  time (transformers' `longest_first`);
- token classification: each word tokenized alone (a word that yields no token becomes `[UNK]`), the
  word's tag on its first sub-token and -100 (ignored) on the others; words cut by `max_length` are
  predicted `O` when scored;
- extractive QA: `[CLS] question [SEP] window [SEP]`, the question cut to `max_query_length` tokens,
  the context in windows of what is left of `max_length`, each window starting `doc_stride` tokens
  after the previous one (BERT's and KoELECTRA's `doc_stride`); a training window that does not hold
  the whole first answer points at `[CLS]` (SQuAD v1.1 training, as transformers' squad features).

See docs/evaluate.md#how-examples-become-inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distill.tasks.readers import QAExample, TaggedExample, TextExample

IGNORE = -100


@dataclass
class Features:
    """Model inputs, one entry per feature (QA examples may give several features)."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    targets: dict[str, np.ndarray | list[np.ndarray]]  # labels, or start_positions/end_positions
    extra: dict[str, list] = field(default_factory=dict)  # what decoding needs (word index, offsets, example)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int
    pad: int
    unk: int


class TaskTokenizer:
    """A model's WordPiece tokenizer (tokenizer_training.loading's normal form), without special
    tokens, padding or truncation: the featurizers place those."""

    def __init__(self, tokenizer_json: str, special_ids: dict[str, int]):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.specials = Specials(special_ids["cls"], special_ids["sep"], special_ids["pad"], special_ids["unk"])
        self.vocab_size = self.backend.get_vocab_size()

    @classmethod
    def of_model(cls, model: str, who: str = "--model") -> TaskTokenizer:
        """The tokenizer a model directory (or hub id) ships; refused when it ships none."""
        from tokenizer_training.loading import TokenizerSourceError, load_tokenizer

        try:
            loaded = load_tokenizer(model, who, verify=False)
        except TokenizerSourceError as error:
            raise ValueError(f"{error}; fine-tuning tokenizes its texts with the model's own tokenizer: copy the "
                             "tokenizer files (vocab.txt or tokenizer.json) of the shards it was trained on into "
                             "the model directory") from error
        return cls(loaded.files["tokenizer.json"].decode("utf-8"), loaded.special_ids)

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def words(self, sentences: list[tuple[str, ...]]) -> list[tuple[list[int], list[int | None]]]:
        encodings = self.backend.encode_batch([list(words) for words in sentences], is_pretokenized=True,
                                              add_special_tokens=False)
        return [(encoding.ids, encoding.word_ids) for encoding in encodings]

    def with_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [(encoding.ids, encoding.offsets) for encoding in encodings]


def as_ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# ---------------------------------------------------------------- sentences and pairs


def single(ids: list[int], max_length: int, specials: Specials) -> tuple[list[int], list[int]]:
    body = ids[: max(0, max_length - 2)]
    return [specials.cls, *body, specials.sep], [0] * (len(body) + 2)


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """transformers' longest_first: cut the longer side down to the other's length, then both alike, the
    second side losing the odd token (as if one token at a time went from the longer, b when equal)."""
    remove = max(0, len(a) + len(b) - budget)
    first = min(abs(len(a) - len(b)), remove)
    second = remove - first
    if len(a) > len(b):
        cut_a, cut_b = first + second // 2, second - second // 2
    else:
        cut_a, cut_b = second // 2, first + second - second // 2
    return a[: len(a) - cut_a], b[: len(b) - cut_b]


def pair(a: list[int], b: list[int], max_length: int, specials: Specials) -> tuple[list[int], list[int]]:
    a, b = truncate_pair(a, b, max(0, max_length - 3))
    return [specials.cls, *a, specials.sep, *b, specials.sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def text_features(examples: list[TextExample], tokenizer: TaskTokenizer, max_length: int, regression: bool) -> Features:
    """Sentences or pairs (one or two segments) with a class id or a score."""
    first = tokenizer.ids([e.text for e in examples])
    has_pair = any(e.pair is not None for e in examples)
    second = tokenizer.ids([e.pair or "" for e in examples]) if has_pair else None
    input_ids, types = [], []
    for index, ids in enumerate(first):
        tokens, kinds = (pair(ids, second[index], max_length, tokenizer.specials) if has_pair
                         else single(ids, max_length, tokenizer.specials))
        input_ids.append(as_ids(tokens))
        types.append(as_ids(kinds))
    labels = np.asarray([e.label for e in examples], dtype=np.float32 if regression else np.int64)
    return Features(input_ids, types, {"labels": labels})


# ---------------------------------------------------------------- token classification


def tagged(ids: list[int], word_ids: list[int | None], tags: tuple[int, ...], max_length: int,
           specials: Specials) -> tuple[list[int], list[int], list[int]]:
    """(input ids, label per position, word index per position or -1): the tag on each word's first
    sub-token; a word without tokens gets [UNK] (KoELECTRA); cut to max_length with [CLS] and [SEP]."""
    tokens, labels, words = [], [], []
    position = 0
    for word, tag in enumerate(tags):
        start = position
        while position < len(ids) and word_ids[position] == word:
            position += 1
        pieces = ids[start:position] or [specials.unk]
        tokens.extend(pieces)
        labels.extend([tag] + [IGNORE] * (len(pieces) - 1))
        words.extend([word] + [-1] * (len(pieces) - 1))
    body = max(0, max_length - 2)
    tokens, labels, words = tokens[:body], labels[:body], words[:body]
    return [specials.cls, *tokens, specials.sep], [IGNORE, *labels, IGNORE], [-1, *words, -1]


def token_features(examples: list[TaggedExample], tokenizer: TaskTokenizer, max_length: int) -> Features:
    encoded = tokenizer.words([e.words for e in examples])
    input_ids, types, labels, words = [], [], [], []
    for example, (ids, word_ids) in zip(examples, encoded):
        tokens, targets, word_index = tagged(ids, word_ids, example.tags, max_length, tokenizer.specials)
        input_ids.append(as_ids(tokens))
        types.append(np.zeros(len(tokens), dtype=np.int64))
        labels.append(as_ids(targets))
        words.append(as_ids(word_index))
    return Features(input_ids, types, {"labels": labels}, {"word_index": words})


# ---------------------------------------------------------------- extractive QA


def windows(length: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token windows of at most `budget` tokens over `length` tokens, each starting
    `stride` tokens after the previous one, until one reaches the end."""
    if budget < 1:
        raise ValueError(f"no room for context: max_length leaves {budget} tokens after the question")
    spans, start = [], 0
    while True:
        end = min(start + budget, length)
        spans.append((start, end))
        if end >= length:
            return spans
        start += max(1, min(stride, budget))


def answer_tokens(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """(first, last) context token covering the answer's characters [start_char, end_char), or None."""
    first = next((i for i, (s, e) in enumerate(offsets) if e > start_char), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end_char), None)
    if first is None or last is None or last < first:
        return None
    return first, last


def qa_features(examples: list[QAExample], tokenizer: TaskTokenizer, max_length: int, doc_stride: int,
                max_query_length: int, train: bool) -> Features:
    """Windows of each example's context behind its question; targets are token positions of the
    first answer (0 = [CLS] when the window misses it); extra maps positions back to characters."""
    questions = tokenizer.ids([e.question for e in examples])
    contexts = tokenizer.with_offsets([e.context for e in examples])
    sp = tokenizer.specials
    input_ids, types, starts, ends, example_index, offsets_out = [], [], [], [], [], []
    for index, (example, question, (ctx_ids, ctx_offsets)) in enumerate(zip(examples, questions, contexts)):
        question = question[:max_query_length]
        budget = max_length - len(question) - 3
        answer = None
        if train:
            text, start_char = example.answers[0]
            answer = answer_tokens(ctx_offsets, start_char, start_char + len(text))
        for start, end in windows(len(ctx_ids), budget, doc_stride):
            prefix = len(question) + 2
            input_ids.append(as_ids([sp.cls, *question, sp.sep, *ctx_ids[start:end], sp.sep]))
            types.append(as_ids([0] * prefix + [1] * (end - start + 1)))
            spans = np.full((len(input_ids[-1]), 2), -1, dtype=np.int64)
            if end > start:
                spans[prefix : prefix + end - start] = np.asarray(ctx_offsets[start:end], dtype=np.int64)
            offsets_out.append(spans)
            example_index.append(index)
            if answer is not None and start <= answer[0] and answer[1] < end:
                starts.append(prefix + answer[0] - start)
                ends.append(prefix + answer[1] - start)
            else:
                starts.append(0)
                ends.append(0)
    targets = {"start_positions": as_ids(starts), "end_positions": as_ids(ends)}
    return Features(input_ids, types, targets, {"example_index": example_index, "offsets": offsets_out})


def best_spans(start_logits: list[np.ndarray], end_logits: list[np.ndarray], features: Features,
               examples: list[QAExample], n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """The answer text of each example: over its windows, the context span (start <= end, at most
    max_answer_length tokens) with the largest start + end logit among the n_best starts and ends of
    each window (BERT's SQuAD decoding); an example whose windows hold no valid span gets ''."""
    best: dict[int, tuple[float, str]] = {}
    for start_row, end_row, offsets, index in zip(start_logits, end_logits, features.extra["offsets"],
                                                  features.extra["example_index"]):
        context = offsets[:, 0] >= 0
        if not context.any():
            continue
        positions = np.flatnonzero(context)
        top_starts = positions[np.argsort(-start_row[positions], kind="stable")[:n_best]]
        top_ends = positions[np.argsort(-end_row[positions], kind="stable")[:n_best]]
        grid = start_row[top_starts][:, None] + end_row[top_ends][None, :]
        length = top_ends[None, :] - top_starts[:, None]
        grid = np.where((length >= 0) & (length < max_answer_length), grid, -np.inf)
        flat = int(np.argmax(grid))
        score = float(grid.flat[flat])
        if score == -np.inf:
            continue
        s, e = top_starts[flat // grid.shape[1]], top_ends[flat % grid.shape[1]]
        if index not in best or score > best[index][0]:
            context_text = examples[index].context
            best[index] = (score, context_text[offsets[s, 0] : offsets[e, 1]])
    return {example.qid: best[i][1] if i in best else "" for i, example in enumerate(examples)}
