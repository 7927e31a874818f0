"""MLM masking and the shard loader: fixed shapes, special tokens, exact order, resumption, bad shards."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_distill_fixtures import build_shards, build_tokenizer_dir, sample_texts

from distill.data import BatchStream, ShardBatches, ShardSplit, open_shard_dir, open_split
from distill.masking import default_max_predictions, mask_tokens, masking_spec, prediction_slots
from transforms.token_shards import TokenShardError, open_shard

torch.set_num_threads(1)
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"] + [f"tok{i}" for i in range(93)]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_data")
    texts = sample_texts()
    tokenizer = build_tokenizer_dir(root / "tokenizer", texts)
    return build_shards(root / "shards", tokenizer, texts, seq_len=32, train_shards=3)


def batch_of_ids(generator: torch.Generator, rows: int = 64, seq: int = 40) -> torch.Tensor:
    ids = torch.randint(7, len(VOCAB), (rows, seq), generator=generator)
    ids[:, 0] = SPECIAL["cls"]
    lengths = torch.randint(3, seq + 1, (rows,), generator=generator)
    positions = torch.arange(seq)[None, :]
    ids = torch.where(positions == lengths[:, None] - 1, SPECIAL["sep"], ids)
    ids = torch.where(positions >= lengths[:, None], SPECIAL["pad"], ids)
    ids[0, 5] = SPECIAL["unk"]
    ids[1, 6] = 5  # [unused0]
    return ids


def test_mask_tokens_never_touches_special_tokens_and_keeps_shapes():
    spec = masking_spec(VOCAB, SPECIAL, seq_len=40, probability=0.5)
    ids = batch_of_ids(torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(ids, spec, torch.Generator().manual_seed(1))
    assert inputs.shape == ids.shape and labels.shape == ids.shape
    special = ids < 7
    assert (labels[special] == -100).all()
    assert torch.equal(inputs[special], ids[special])
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert (inputs[chosen] >= 7).logical_or(inputs[chosen] == SPECIAL["mask"]).all()  # never a special id but [MASK]


def test_mask_tokens_rates_and_determinism():
    spec = masking_spec(VOCAB, SPECIAL, seq_len=128, probability=0.15)
    ids = torch.randint(7, len(VOCAB), (512, 128), generator=torch.Generator().manual_seed(2))
    inputs, labels = mask_tokens(ids, spec, torch.Generator().manual_seed(3))
    chosen = labels != -100
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    as_mask = (inputs == SPECIAL["mask"]) & chosen
    kept = (inputs == ids) & chosen
    assert as_mask.sum().item() / chosen.sum().item() == pytest.approx(0.8, abs=0.02)
    # "kept" includes random draws that hit the original token (1 in 93): 0.1 + 0.1 / 93.
    assert kept.sum().item() / chosen.sum().item() == pytest.approx(0.1 + 0.1 / 93, abs=0.015)
    again = mask_tokens(ids, spec, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_masking_caps_predictions_per_row():
    spec = masking_spec(VOCAB, SPECIAL, seq_len=40, probability=0.9)
    assert spec.max_predictions == 40  # 36 + 6 * 1.9 rounds past the row length
    small = masking_spec(VOCAB, SPECIAL, seq_len=128, probability=0.15)
    assert small.max_predictions == default_max_predictions(128, 0.15) == 44
    capped = type(spec)(**{**spec.__dict__, "max_predictions": 3})
    _, labels = mask_tokens(batch_of_ids(torch.Generator().manual_seed(4)), capped, torch.Generator().manual_seed(5))
    assert ((labels != -100).sum(dim=1) <= 3).all()


def test_prediction_slots_match_a_loop():
    spec = masking_spec(VOCAB, SPECIAL, seq_len=40, probability=0.3)
    _, labels = mask_tokens(batch_of_ids(torch.Generator().manual_seed(6)), spec, torch.Generator().manual_seed(7))
    positions, targets = prediction_slots(labels, spec.max_predictions)
    assert positions.shape == targets.shape == (labels.shape[0], spec.max_predictions)
    for row in range(labels.shape[0]):
        masked = [i for i in range(labels.shape[1]) if labels[row, i] != -100]
        count = len(masked)
        assert positions[row, :count].tolist() == masked
        assert targets[row, :count].tolist() == [int(labels[row, i]) for i in masked]
        assert (targets[row, count:] == -100).all()


def split_of(rows: list[int], seq_len: int = 4) -> ShardSplit:
    return ShardSplit(paths=tuple(f"shard{i}" for i in range(len(rows))), rows=tuple(rows), seq_len=seq_len)


def all_rows(dataset: ShardBatches, epoch: int) -> list[tuple[int, int]]:
    per_epoch = dataset.split.total_rows // dataset.batch_size
    shard, row = dataset.stream_rows(epoch, 0, per_epoch * dataset.batch_size)
    return list(zip(shard.tolist(), row.tolist()))


def test_stream_is_a_shuffled_permutation_per_epoch():
    dataset = ShardBatches(split_of([50, 30, 41]), batch_size=8, seed=3, shuffle_buffer=16)
    first, second = all_rows(dataset, 0), all_rows(dataset, 1)
    everything = {(s, r) for s, n in enumerate([50, 30, 41]) for r in range(n)}
    assert len(set(first)) == len(first) == 120 and set(first) <= everything
    assert first != second
    unshuffled = ShardBatches(split_of([50, 30, 41]), batch_size=8, shuffle_buffer=0)
    assert all_rows(unshuffled, 0) == sorted(everything)[:120]


def test_ranks_and_workers_partition_the_batches(shard_dir):
    shards = open_shard_dir(shard_dir)
    split = open_split(shards, "train")
    spec = masking_spec(shards.vocab, shards.special_ids, shards.seq_len)

    def rows_seen(rank: int, world: int, workers: int, count: int) -> list[bytes]:
        dataset = ShardBatches(split, 16, seed=1, shuffle_buffer=200, masking=spec, rank=rank, world_size=world)
        stream = BatchStream(dataset, num_workers=workers)
        seen = []
        for index, batch in enumerate(stream):
            seen.append(batch)
            if index + 1 == count:
                break
        return seen

    single = rows_seen(0, 1, 0, 6)
    with_workers = rows_seen(0, 1, 2, 6)
    for a, b in zip(single, with_workers):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    rank0, rank1 = rows_seen(0, 2, 0, 3), rows_seen(1, 2, 0, 3)
    # Global batch g goes to rank g % 2: interleaving the ranks gives the single-process order.
    interleaved = [b for pair in zip(rank0, rank1) for b in pair]
    for a, b in zip(single, interleaved):
        assert torch.equal(a["labels"], b["labels"])


def test_stream_resumes_at_the_exact_batch_across_epochs(shard_dir):
    shards = open_shard_dir(shard_dir)
    split = open_split(shards, "train")
    spec = masking_spec(shards.vocab, shards.special_ids, shards.seq_len)
    make = lambda: BatchStream(ShardBatches(split, 256, seed=5, shuffle_buffer=500, masking=spec))  # noqa: E731
    straight = make()
    per_epoch = straight.dataset.batches_per_epoch()
    assert per_epoch == split.total_rows // 256
    reference = [b for _, b in zip(range(per_epoch + 3), straight)]
    interrupted = make()
    for _, _ in zip(range(per_epoch - 2), interrupted):
        pass
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b for _, b in zip(range(5), resumed)]
    for a, b in zip(reference[per_epoch - 2 :], rest):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
    assert resumed.epoch() == 1
    for batch in reference:
        assert batch["input_ids"].shape == (256, 32)
        assert torch.equal(batch["attention_mask"], batch["input_ids"] != 0)
    with pytest.raises(ValueError, match="seed 5"):
        BatchStream(ShardBatches(split, 256, seed=6, masking=spec)).load_state_dict(state)


def test_evaluation_pass_covers_every_row_once_in_order(shard_dir):
    shards = open_shard_dir(shard_dir)
    split = open_split(shards, "validation")
    batches = list(ShardBatches(split, 100, repeat=False))
    ids = torch.cat([b["input_ids"] for b in batches])
    expected = np.concatenate([open_shard(p) for p in split.paths]).astype(np.int64)
    assert torch.equal(ids, torch.from_numpy(expected))
    assert sum(b["tokens"] for b in batches) == shards.manifest["splits"]["validation"]["tokens"]


def test_corrupt_or_incomplete_shards_are_refused(shard_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shard_dir, broken)
    shard = broken / "train" / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TokenShardError, match="checksum mismatch for train/shard-00001.arrow"):
        open_shard_dir(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(TokenShardError, match="no manifest.json"):
        open_shard_dir(broken)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ShardBatches(open_split(open_shard_dir(shard_dir), "validation"), 100_000)
