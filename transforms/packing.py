"""Packing primitives of `pipeline.shard`: tokenize texts, hash documents to splits and buckets, pack rows.

The stages built from them are in transforms/shard_stages.py; the rules below are also in
docs/shard.md#packing.

Documents travel as one flat token array plus one length per document (the Arrow list
layout), so a batch of thousands of ~35-character comments is a few numpy arrays, never a
Python object per document.

Packing (every row is exactly seq_len ids, starts with [CLS], ends its content with [SEP],
then [PAD] to the end):

- `concat`: `[CLS] d1 [SEP] d2 [SEP] ... [SEP] [PAD]...`. Documents are placed greedily in
  order. A document that does not fit in the space left in the current row starts the next
  row. A document longer than a whole row (more than seq_len - 2 ids) is split: its first
  chunk fills the space left in the current row, the following chunks fill whole rows, the
  last chunk is followed by the next documents; every chunk ends with [SEP]. Nothing is
  truncated; split documents are counted.
- `none`: one document per row, `[CLS] doc [SEP] [PAD]...`; a document longer than
  seq_len - 2 ids becomes several rows of seq_len - 2 ids each (counted as split).

Empty documents (no ids after tokenization) take no space and are counted by the caller.
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def batch_bounds(char_lengths: np.ndarray, max_rows: int, max_chars: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most max_rows texts and (one text at least) max_chars characters."""
    ends = np.cumsum(char_lengths, dtype=np.int64)
    bounds, start = [], 0
    while start < len(char_lengths):
        before = int(ends[start - 1]) if start else 0
        stop = min(start + max_rows, int(np.searchsorted(ends, before + max_chars, side="right")))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        start = stop
    return bounds


def encode_texts(tokenizer, texts: Sequence[str], max_rows: int = 1024, max_chars: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize texts without special tokens; return (flat uint32 ids, int64 length per text).

    `tokenizer` is a `tokenizers.Tokenizer` with truncation and padding disabled. Texts go to
    `encode_batch_fast` (no offsets: packing does not need them) in batches of at most
    max_rows texts and max_chars characters, which bounds the tokenizer's memory (~40 bytes
    per id while a batch is held). Batch k+1 is tokenized on a helper thread (tokenizers
    releases the GIL) while this thread streams batch k's ids into numpy one encoding at a
    time (holding every `.ids` list at once costs 2-3x as much). 1,024 texts per batch was
    measured faster than 8,192 on NSMC (the setup: BENCHMARKS.md#token-shards-pipelineshard).
    """
    bounds = batch_bounds(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), max_rows, max_chars)
    flats, lengths = [np.zeros(0, np.uint32)], [np.zeros(0, np.int64)]

    def collect(encodings) -> None:
        counts = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        ids = itertools.chain.from_iterable(encoding.ids for encoding in encodings)
        flats.append(np.fromiter(ids, dtype=np.uint32, count=int(counts.sum())))
        lengths.append(counts)

    with ThreadPoolExecutor(max_workers=1) as helper:
        pending = None
        for start, stop in bounds:
            submitted = helper.submit(tokenizer.encode_batch_fast, list(texts[start:stop]), add_special_tokens=False)
            if pending is not None:
                collect(pending.result())
            pending = submitted
        if pending is not None:
            collect(pending.result())
    return np.concatenate(flats), np.concatenate(lengths)


def is_validation(split_hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask: a document belongs to validation when its split hash / 2**64 < fraction."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    return split_hashes < np.uint64(int(fraction * 2.0**64))


def shard_buckets(bucket_hashes: np.ndarray, n_buckets: int) -> np.ndarray:
    """The shard bucket (0 .. n_buckets - 1) of each document, from its bucket hash."""
    return (bucket_hashes % np.uint64(n_buckets)).astype(np.int64)


def bucket_count(tokens: int, shard_tokens: int) -> int:
    """How many shards a split of `tokens` ids gets so that each holds about `shard_tokens`."""
    return max(1, round(tokens / shard_tokens))


def take_documents(tokens: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder (or select) documents of a flat batch: (tokens, lengths) of documents `order`.

    The gather index is built as one running sum (+1 per id, a jump at each document's first
    id) in place, in int32 when it fits: 4-8 bytes of scratch per id, which is the peak of
    sorting a shard's documents.
    """
    lengths, order = np.asarray(lengths, dtype=np.int64), np.asarray(order, dtype=np.int64)
    new_lengths = lengths[order]
    kept = order[new_lengths > 0]  # empty documents add no ids
    sources = (np.cumsum(lengths) - lengths)[kept]
    kept_lengths = lengths[kept]
    destinations = np.cumsum(kept_lengths) - kept_lengths
    index_type = np.int32 if len(tokens) < 2**31 else np.int64
    gather = np.ones(int(kept_lengths.sum()), dtype=index_type)
    if len(kept):
        # at a document's first id, jump from the previous document's last source id to its first
        gather[destinations] = sources - np.concatenate(([0], sources[:-1] + kept_lengths[:-1] - 1))
        gather[0] = sources[0]
    np.cumsum(gather, out=gather)
    return tokens[gather], new_lengths


def _check(tokens: np.ndarray, lengths: np.ndarray, seq_len: int) -> None:
    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 ([CLS], one id, [SEP]), got {seq_len}")
    if (lengths < 0).any() or int(lengths.sum()) != len(tokens):
        raise ValueError(f"lengths (sum {int(lengths.sum())}) do not describe {len(tokens)} tokens")


def _fill(tokens, seg_lengths, dst_starts, n_rows, seq_len, cls, sep, pad) -> np.ndarray:
    """Rows of [PAD] with [CLS] first; segment i (the next seg_lengths[i] ids of `tokens`) at flat
    position dst_starts[i], then [SEP].

    The segments tile `tokens` in order and their destinations increase, so the k-th id goes
    to the k-th covered slot: a coverage mask (+1 at each start, -1 at each end, summed) places
    every id in one masked assignment, with one byte per slot of scratch.
    """
    seg_lengths, dst_starts = (np.asarray(a, dtype=np.int64) for a in (seg_lengths, dst_starts))
    flat = np.full(n_rows * seq_len, pad, dtype=tokens.dtype)
    sep_slots = dst_starts + seg_lengths
    steps = np.zeros(n_rows * seq_len + 1, dtype=np.int8)
    steps[dst_starts] = 1
    steps[sep_slots] = -1  # an end is a [SEP] slot, never another segment's start
    flat[np.cumsum(steps[:-1], dtype=np.int8).view(bool)] = tokens
    flat[sep_slots] = sep
    out = flat.reshape(n_rows, seq_len)
    out[:, 0] = cls
    return out


def pack_concat(tokens: np.ndarray, lengths: np.ndarray, seq_len: int, cls: int, sep: int, pad: int) -> tuple[np.ndarray, int]:
    """Pack documents several to a row (see the module docstring); return (rows [n, seq_len] of the dtype of tokens, split docs).

    Greedy placement is sequential, so the loop runs once per row, not once per document: a
    bisection over the prefix sums of (length + 1) finds how many documents fill the row.
    Only documents longer than a row are walked chunk by chunk.
    """
    _check(tokens, lengths, seq_len)
    capacity = seq_len - 1  # slots after [CLS]; a document of L ids takes L + 1 with its [SEP]
    lengths = np.asarray(lengths, dtype=np.int64)
    docs = np.flatnonzero(lengths)  # empty documents take no space
    doc_lengths = lengths[docs]
    ends = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(doc_lengths + 1, out=ends[1:])
    prefix = ends.tolist()
    is_long = doc_lengths + 1 > capacity
    long_docs = np.flatnonzero(is_long).tolist() + [len(docs)]
    runs: list[tuple[int, int, int]] = []  # (first doc, last doc + 1, destination of the first doc minus its prefix)
    chunks: dict[int, tuple[list[int], list[int]]] = {}  # long doc -> (chunk lengths, destinations)
    row = used = doc = 0
    for next_long in long_docs:
        while doc < next_long:  # short documents: whole rows at a time
            fits = bisect.bisect_right(prefix, prefix[doc] + capacity - used, doc, next_long + 1) - 1
            if fits > doc:
                runs.append((doc, fits, row * seq_len + 1 + used - prefix[doc]))
                used += prefix[fits] - prefix[doc]
                doc = fits
            if doc < next_long:  # the next one does not fit: it starts the next row
                row, used = row + 1, 0
        if next_long == len(docs):
            break
        pieces, destinations = chunks[next_long] = ([], [])
        length, position = int(doc_lengths[next_long]), 0
        while position < length:
            room = capacity - used - 1
            if room < 1:
                row, used, room = row + 1, 0, capacity - 1
            take = min(room, length - position)
            pieces.append(take)
            destinations.append(row * seq_len + 1 + used)
            used += take + 1
            position += take
        doc = next_long + 1
    n_rows = row + 1 if used else row
    segment_counts = np.ones(len(docs), dtype=np.int64)
    for long_doc, (pieces, _) in chunks.items():
        segment_counts[long_doc] = len(pieces)
    first_segment = np.cumsum(segment_counts) - segment_counts
    n_segments = int(segment_counts.sum())
    seg_lengths, dst_starts = np.empty(n_segments, dtype=np.int64), np.empty(n_segments, dtype=np.int64)
    short = first_segment[~is_long]
    seg_lengths[short] = doc_lengths[~is_long]
    run_bounds = np.array(runs, dtype=np.int64).reshape(-1, 3)
    dst_starts[short] = np.repeat(run_bounds[:, 2], run_bounds[:, 1] - run_bounds[:, 0]) + ends[:-1][~is_long]
    for long_doc, (pieces, destinations) in chunks.items():
        where = slice(first_segment[long_doc], first_segment[long_doc] + len(pieces))
        seg_lengths[where], dst_starts[where] = pieces, destinations
    return _fill(tokens, seg_lengths, dst_starts, n_rows, seq_len, cls, sep, pad), len(chunks)


def pack_none(tokens: np.ndarray, lengths: np.ndarray, seq_len: int, cls: int, sep: int, pad: int) -> tuple[np.ndarray, int]:
    """One document per row (long ones over several rows); return (rows [n, seq_len] of the dtype of tokens, split docs)."""
    _check(tokens, lengths, seq_len)
    chunk = seq_len - 2
    lengths = np.asarray(lengths, dtype=np.int64)
    chunks = -(-lengths // chunk)  # ceil; 0 for empty documents
    n_rows = int(chunks.sum())
    doc_of_row = np.repeat(np.arange(len(lengths)), chunks)
    index_in_doc = np.arange(n_rows) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    seg_lengths = np.minimum(chunk, lengths[doc_of_row] - index_in_doc * chunk)
    dst_starts = np.arange(n_rows, dtype=np.int64) * seq_len + 1
    rows = _fill(tokens, seg_lengths, dst_starts, n_rows, seq_len, cls, sep, pad)
    return rows, int(np.count_nonzero(chunks > 1))


PACKERS = {"concat": pack_concat, "none": pack_none}
