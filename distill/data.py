"""The shard loader: memory-mapped Arrow token shards -> fixed-shape, masked training batches.

The order of batches is a pure function of (seed, epoch, batch index), which is what makes a
run resumable at an exact position and independent of the number of loader workers:

- every epoch permutes the order of the shards, concatenates their rows into one stream and
  shuffles that stream inside consecutive windows of `shuffle_buffer` rows (a buffered shuffle
  whose buffer is refilled window by window, so nothing but the position has to be saved);
- global batch g of an epoch is stream rows [g*B, (g+1)*B); rank r of R takes the batches
  g = j*R + r, and loader worker w of W takes the rank's batches j = start + w + k*W, which the
  DataLoader hands out round-robin, i.e. in order;
- masking is seeded from (seed, epoch, g).

See docs/distill.md, "Data".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distill.attention import layout
from distill.masking import MaskingSpec, mask_tokens, prediction_slots
from tokenizer_training.loading import LoadedTokenizer, TokenizerSourceError, load_tokenizer
from transforms import token_shards
from transforms.token_shards import TokenShardError


@dataclass(frozen=True)
class ShardDir:
    """A verified shard directory: its manifest, its tokenizer (the normal-form files the student is
    exported with, and the vocabulary) and where things are."""

    root: Path
    manifest: dict
    tokenizer: LoadedTokenizer

    @property
    def vocab(self) -> list[str]:
        return self.tokenizer.vocab

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def special_ids(self) -> dict[str, int]:
        return {name: int(i) for name, i in self.manifest["special_tokens"].items()}


@dataclass(frozen=True)
class ShardSplit:
    """One split's shard files and their row counts."""

    paths: tuple[str, ...]
    rows: tuple[int, ...]
    seq_len: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


def open_shard_dir(root: str | Path, verify: bool = True) -> ShardDir:
    """Load and verify the manifest (checksums, tokenizer fingerprint) and read the tokenizer.

    The tokenizer is read through tokenizer_training.loading, so shards written before pipeline.shard
    normalised their tokenizer (a copy of a whole model directory, or a tokenizer.json without
    vocab.txt) still give exactly the tokenizer files, never weights. Raises TokenShardError with
    the reason when anything disagrees.
    """
    root = Path(root)
    manifest = token_shards.load_manifest(root, verify=verify)
    try:
        tokenizer = load_tokenizer(str(root / "tokenizer"), "the shards' tokenizer", verify=False)
    except TokenizerSourceError as error:
        raise TokenShardError(str(error)) from error
    if len(tokenizer.vocab) != int(manifest["vocab_size"]):
        raise TokenShardError(f"{root / 'tokenizer'} has {len(tokenizer.vocab)} tokens but manifest.json says "
                              f"vocab_size {manifest['vocab_size']}")
    return ShardDir(root=root, manifest=manifest, tokenizer=tokenizer)


def open_split(shards: ShardDir, split: str) -> ShardSplit:
    """The split's shard files in manifest order; a clear error when the split is absent or empty."""
    info = shards.manifest.get("splits", {}).get(split)
    if not info or not info.get("shards"):
        raise TokenShardError(f"{shards.root}: manifest.json has no {split!r} shards")
    paths = token_shards.shard_paths(shards.root, split, shards.manifest)
    rows = tuple(int(entry["sequences"]) for entry in info["shards"])
    return ShardSplit(paths=tuple(str(p) for p in paths), rows=rows, seq_len=shards.seq_len)


def window_permutation(seed: int, epoch: int, window: int, length: int) -> np.ndarray:
    """The shuffle of one buffer window of the stream."""
    return np.random.default_rng([seed, epoch, window, 1]).permutation(length)


def batch_seed(seed: int, epoch: int, global_batch: int) -> int:
    """The masking generator's seed for one batch."""
    return int(np.random.SeedSequence([seed, epoch, global_batch, 2]).generate_state(1, np.uint64)[0])


@dataclass
class ShardBatches(IterableDataset):
    """Batches of one rank, starting at its `start`-th batch; see the module docstring for the order.

    repeat=True: endless epochs, whole batches only (the remainder of an epoch is skipped, every
    rank gets the same count). repeat=False: one pass in stream order, last batch may be short.
    shuffle_buffer=0 keeps the shards' order (evaluation).
    """

    split: ShardSplit
    batch_size: int
    seed: int = 0
    shuffle_buffer: int = 0
    masking: MaskingSpec | None = None
    pad_id: int = 0
    rank: int = 0
    world_size: int = 1
    repeat: bool = True
    start: int = 0
    attention_scope: str = "row"
    cls_id: int | None = None
    sep_id: int | None = None
    # Several sources (distill.sources): this source's index in every batch, and the map of its
    # (teacher's) ids to the student's, which adds student_input_ids / student_targets.
    source: int | None = None
    student_map: np.ndarray | None = None
    _arrays: list[np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.attention_scope == "document" and (self.cls_id is None or self.sep_id is None):
            raise ValueError("attention scope document needs the [CLS] and [SEP] ids")
        if self.repeat and self.batches_per_epoch() == 0:
            raise ValueError(
                f"{self.split.total_rows} sequences are fewer than one batch of {self.batch_size} "
                f"per rank on {self.world_size} rank(s)"
            )

    def batches_per_epoch(self) -> int:
        """Batches this rank gets per epoch."""
        rows = self.split.total_rows
        if self.repeat:
            return rows // self.batch_size // self.world_size
        global_batches = -(-rows // self.batch_size)
        return len(range(self.rank, global_batches, self.world_size))

    def _epoch_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard order, cumulative row offsets of the shards in that order)."""
        count = len(self.split.paths)
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(count) if self.shuffle_buffer else np.arange(count)
        offsets = np.concatenate([[0], np.cumsum(np.asarray(self.split.rows, dtype=np.int64)[order])])
        return order, offsets

    def stream_rows(self, epoch: int, first: int, count: int, cache: "_StreamCache | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row index) of stream positions [first, first + count) of an epoch."""
        cache = cache or _StreamCache()
        positions = np.arange(first, first + count, dtype=np.int64)
        order, offsets = cache.layout(epoch, self._epoch_layout)
        if self.shuffle_buffer:
            total = int(offsets[-1])
            windows = positions // self.shuffle_buffer
            shuffled = np.empty_like(positions)
            for window in np.unique(windows).tolist():
                begin = window * self.shuffle_buffer
                length = min(self.shuffle_buffer, total - begin)
                permutation = cache.window(epoch, window, lambda: window_permutation(self.seed, epoch, window, length))
                here = windows == window
                shuffled[here] = begin + permutation[positions[here] - begin]
            positions = shuffled
        slot = np.searchsorted(offsets, positions, side="right") - 1
        return order[slot], positions - offsets[slot]

    def make_batch(self, epoch: int, global_batch: int, cache: "_StreamCache") -> dict:
        """Gather, convert and mask one batch."""
        first = global_batch * self.batch_size
        count = min(self.batch_size, self.split.total_rows - first)
        shard_ids, rows = self.stream_rows(epoch, first, count, cache)
        if self._arrays is None:
            self._arrays = [token_shards.open_shard(path) for path in self.split.paths]
        ids = np.empty((count, self.split.seq_len), dtype=np.int64)
        for shard in np.unique(shard_ids):
            here = shard_ids == shard
            ids[here] = self._arrays[int(shard)][rows[here]]
        input_ids = torch.from_numpy(ids)
        attention_mask = input_ids != self.pad_id
        segments, position_ids = layout(input_ids, self.attention_scope, self.cls_id, self.sep_id, self.pad_id)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "segments": segments,
            "position_ids": position_ids,
            "tokens": int(np.count_nonzero(ids != self.pad_id)),
        }
        if self.masking is not None:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, global_batch))
            batch["input_ids"], labels = mask_tokens(input_ids, self.masking, generator)
            batch["positions"], batch["targets"] = prediction_slots(labels, self.masking.max_predictions)
            batch["labels"] = labels
        if self.source is not None:
            batch["source"] = self.source
        if self.student_map is not None:
            student_ids = torch.from_numpy(self.student_map)
            batch["student_input_ids"] = student_ids[batch["input_ids"]]
            if "targets" in batch:
                targets = batch["targets"]
                batch["student_targets"] = torch.where(targets >= 0, student_ids[targets.clamp(min=0)], targets)
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        per_epoch = self.batches_per_epoch()
        cache = _StreamCache()
        index = self.start + worker
        while self.repeat or index < per_epoch:
            epoch, local = divmod(index, per_epoch)
            yield self.make_batch(epoch, local * self.world_size + self.rank, cache)
            index += workers


    def __getstate__(self) -> dict:
        """Worker processes started by spawn re-open the memory maps instead of receiving copies."""
        return {**self.__dict__, "_arrays": None}


class _StreamCache:
    """The current epoch's layout and shuffle window of one iterator (batches arrive in order,
    so one of each is enough)."""

    def __init__(self) -> None:
        self._layout: tuple[int, tuple] | None = None
        self._window: tuple[tuple[int, int], np.ndarray] | None = None

    def layout(self, epoch: int, make) -> tuple[np.ndarray, np.ndarray]:
        if self._layout is None or self._layout[0] != epoch:
            self._layout = (epoch, make(epoch))
        return self._layout[1]

    def window(self, epoch: int, window: int, make) -> np.ndarray:
        if self._window is None or self._window[0] != (epoch, window):
            self._window = ((epoch, window), make())
        return self._window[1]


class BatchStream:
    """A DataLoader over ShardBatches that counts what the training loop consumed, so that its
    state_dict is the exact position to resume from (prefetched batches are not counted)."""

    def __init__(self, dataset: ShardBatches, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.consumed = dataset.start

    def state_dict(self) -> dict:
        return {"batches": self.consumed, "seed": self.dataset.seed, "batch_size": self.dataset.batch_size}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Continue where `state` stopped. A loader with another seed or batch size is refused, or
        with strict=False (--allow-config-change) continues after the same number of rows."""
        if (state["seed"], state["batch_size"]) != (self.dataset.seed, self.dataset.batch_size):
            if strict:
                raise ValueError(
                    f"the checkpoint's loader ran with seed {state['seed']} and batch size {state['batch_size']}, "
                    f"not {self.dataset.seed} and {self.dataset.batch_size}"
                )
            self.consumed = int(state["batches"]) * int(state["batch_size"]) // self.dataset.batch_size
            return
        self.consumed = int(state["batches"])

    def epoch(self) -> int:
        return self.consumed // self.dataset.batches_per_epoch()

    def batches_per_epoch(self) -> int:
        """Micro-batches of one pass over the split (the default --max-steps is one pass)."""
        return self.dataset.batches_per_epoch()

    def __iter__(self) -> Iterator[dict]:
        self.dataset.start = self.consumed
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
            # Its own generator: creating the iterator must not draw from the global RNG that
            # dropout uses, or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator(),
        )
        for batch in loader:
            self.consumed += 1
            yield batch


def mix_schedule(weights: list[int]) -> list[int]:
    """One cycle of source indices, sum(weights) long, each source as often as its weight and spread
    evenly (smooth weighted round robin: 2:1 gives 0, 1, 0; ties go to the earlier source)."""
    current, total, cycle = [0] * len(weights), sum(weights), []
    for _ in range(total):
        current = [value + weight for value, weight in zip(current, weights)]
        chosen = max(range(len(weights)), key=lambda index: (current[index], -index))
        current[chosen] -= total
        cycle.append(chosen)
    return cycle


class MixedStream:
    """Several sources' BatchStreams, interleaved by a fixed schedule: micro-batch m (counted from the
    start of the run) comes from source schedule[m % len(schedule)]. Each stream keeps its own exact
    position, so the state is theirs and m is their sum: a resumed run continues the same sequence."""

    def __init__(self, names: list[str], streams: list[BatchStream], weights: list[int]) -> None:
        self.names, self.streams, self.schedule = names, streams, mix_schedule(weights)

    @property
    def consumed(self) -> int:
        return sum(stream.consumed for stream in self.streams)

    def state_dict(self) -> dict:
        return {"sources": {name: stream.state_dict() for name, stream in zip(self.names, self.streams)}}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        saved = state.get("sources")
        if saved is None or sorted(saved) != sorted(self.names):
            raise ValueError(f"the checkpoint's loader read the sources {sorted(saved or ['(one --shards)'])}, "
                             f"this run {sorted(self.names)}")
        for name, stream in zip(self.names, self.streams):
            stream.load_state_dict(saved[name], strict)
        cycles, rest = divmod(self.consumed, len(self.schedule))
        counts = [cycles * self.schedule.count(index) + self.schedule[:rest].count(index)
                  for index in range(len(self.streams))]
        if strict and counts != [stream.consumed for stream in self.streams]:
            raise ValueError(f"the checkpoint's loader positions {[s.consumed for s in self.streams]} do not follow "
                             f"this --mix (which gives {counts} after {self.consumed} micro-batches)")

    def epoch(self) -> int:
        """Passes every source has completed."""
        return min(stream.epoch() for stream in self.streams)

    def batches_per_epoch(self) -> int:
        """Micro-batches until every source has completed one pass (the default --max-steps)."""
        per_source = [stream.batches_per_epoch() * len(self.schedule) // self.schedule.count(index)
                      for index, stream in enumerate(self.streams)]
        return max(per_source)

    def __iter__(self) -> Iterator[dict]:
        iterators = [iter(stream) for stream in self.streams]
        while True:
            yield next(iterators[self.schedule[self.consumed % len(self.schedule)]])
