"""Dynamic MLM masking (BERT's 80/10/10) as pure, fixed-shape functions of a batch tensor.

Shapes never depend on how many tokens were drawn: `mask_tokens` returns labels of the
batch's shape (-100 where nothing is predicted) and `prediction_slots` packs the masked
positions into a fixed number of slots per sequence, so that the MLM head only runs where
a prediction is made and XLA never sees a new shape. Randomness comes only from the
torch.Generator passed in, which the loader seeds from (seed, epoch, batch index): the
masks of a batch are the same however many workers or restarts there were.

See docs/distill.md, "Data".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

UNUSED_TOKEN = re.compile(r"^\[unused\d+\]$")


@dataclass(frozen=True)
class MaskingSpec:
    """Everything masking needs to know about the vocabulary.

    maskable: bool [vocab], False for special and reserved ([unusedN]) tokens and pad.
    replacement_ids: long, the ids a "random token" replacement is drawn from (the maskable ones).
    max_predictions: slots per sequence; at most this many tokens of a sequence are masked.
    """

    mask_id: int
    pad_id: int
    maskable: Tensor
    replacement_ids: Tensor
    probability: float
    max_predictions: int


def default_max_predictions(seq_len: int, probability: float) -> int:
    """Slots per sequence: the Bernoulli count's mean plus six standard deviations (a cap that
    binds on about one sequence in a billion), at least 1, at most seq_len."""
    mean = seq_len * probability
    return max(1, min(seq_len, math.ceil(mean + 6.0 * math.sqrt(mean * (1.0 - probability)))))


def masking_spec(vocab: list[str], special_ids: dict[str, int], seq_len: int, probability: float = 0.15) -> MaskingSpec:
    """Build the spec from the vocabulary (tokens in id order) and the manifest's special token ids."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"--mlm-probability must be in (0, 1), got {probability}")
    maskable = np.ones(len(vocab), dtype=bool)
    maskable[[int(i) for i in special_ids.values()]] = False
    maskable[[i for i, token in enumerate(vocab) if UNUSED_TOKEN.match(token)]] = False
    if not maskable.any():
        raise ValueError("the vocabulary has no ordinary tokens to mask")
    return MaskingSpec(
        mask_id=int(special_ids["mask"]),
        pad_id=int(special_ids["pad"]),
        maskable=torch.from_numpy(maskable),
        replacement_ids=torch.from_numpy(np.flatnonzero(maskable)).long(),
        probability=probability,
        max_predictions=default_max_predictions(seq_len, probability),
    )


def mask_tokens(input_ids: Tensor, spec: MaskingSpec, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(masked inputs, labels): each maskable token is chosen with spec.probability (at most
    spec.max_predictions per row, earliest first); a chosen token becomes [MASK] 80% of the time,
    a random ordinary token 10%, stays itself 10%. labels hold the original id where chosen, -100 elsewhere."""
    chosen = spec.maskable[input_ids] & (torch.rand(input_ids.shape, generator=generator) < spec.probability)
    chosen &= chosen.cumsum(dim=1) <= spec.max_predictions
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = spec.replacement_ids[
        torch.randint(len(spec.replacement_ids), input_ids.shape, generator=generator)
    ]
    replaced = torch.where(action < 0.9, random_ids, input_ids)
    replaced = torch.where(action < 0.8, torch.full_like(input_ids, spec.mask_id), replaced)
    return torch.where(chosen, replaced, input_ids), labels


def prediction_slots(labels: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """(positions, targets), both [batch, slots]: the masked positions of each row in order, then
    position 0 with target -100 for the empty slots. Fixed shape: no masked_select."""
    batch, seq = labels.shape
    chosen = labels != -100
    rank = chosen.cumsum(dim=1) - 1
    # Unchosen positions and any beyond the slot count go to a dump column that is dropped.
    index = torch.where(chosen & (rank < slots), rank, torch.full_like(rank, slots))
    positions = torch.zeros(batch, slots + 1, dtype=torch.long, device=labels.device)
    positions.scatter_(1, index, torch.arange(seq, device=labels.device).expand(batch, seq))
    positions = positions[:, :slots]
    filled = torch.arange(slots, device=labels.device) < chosen.sum(dim=1, keepdim=True)
    targets = torch.where(filled, labels.gather(1, positions), torch.full_like(positions, -100))
    return positions, targets
