"""Who attends to whom in a packed row, and at which positions: --attention-scope document|row.

Why: pipeline.shard packs several documents into one row (`[CLS] d1 [SEP] d2 [SEP] ... [PAD]`).
A teacher was pre-trained on one text per sequence; run on a packed row as one sequence, every
document attends to its neighbours and sits at the positions its place in the row gives it, which
the teacher never saw. With the scope `document` (the default) a document attends only to
itself and its positions restart: teacher and student encode each document as if it were alone.

- Documents are the segments a [SEP] closes: a segment runs from the token after a [SEP] (or the
  row start) up to and including its [SEP]. Padding is no segment (-1).
- Positions restart at each segment: at 0 for a segment that starts with [CLS] (the first one), at
  1 for the others, which have no [CLS] in the row: their first word then has the position it had
  after [CLS] in pre-training.
- `row` keeps the row as one sequence (positions 0..seq-1, every real key visible): what
  distill.train did before the option existed.

The pairs (bool [batch, seq, seq]) feed the relation losses (distill.losses.Masks.pairs); the
same pairs as an additive float mask [batch, 1, seq, seq] feed transformers' sdpa attention
directly (distill.models.encode), with no host-side inspection of the mask and fixed shapes (XLA).
Every function here is vectorised and shape-stable.
"""
from __future__ import annotations

import torch
from torch import Tensor

SCOPES = ("document", "row")


def document_layout(input_ids: Tensor, cls_id: int, sep_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """(segments, position_ids), both long [batch, seq]: each token's document number within its
    row (-1 for padding) and its position within that document."""
    batch, seq = input_ids.shape
    is_sep = input_ids == sep_id
    closed = torch.cumsum(is_sep.long(), dim=1) - is_sep.long()  # [SEP]s strictly before each token
    index = torch.arange(seq, device=input_ids.device).expand(batch, seq)
    starts = torch.ones_like(is_sep)
    starts[:, 1:] = is_sep[:, :-1]  # a segment starts at the row start and after each [SEP]
    start = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    offset = (input_ids.gather(1, start) != cls_id).long()
    positions = index - start + offset
    real = input_ids != pad_id
    return torch.where(real, closed, torch.full_like(closed, -1)), torch.where(real, positions, torch.zeros_like(positions))


def row_layout(input_ids: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """(segments, position_ids) of a row taken as one sequence."""
    batch, seq = input_ids.shape
    real = input_ids != pad_id
    segments = torch.where(real, torch.zeros_like(input_ids), torch.full_like(input_ids, -1))
    return segments, torch.arange(seq, device=input_ids.device).expand(batch, seq).clone()


def layout(input_ids: Tensor, scope: str, cls_id: int, sep_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    if scope == "document":
        return document_layout(input_ids, cls_id, sep_id, pad_id)
    if scope == "row":
        return row_layout(input_ids, pad_id)
    raise ValueError(f"--attention-scope must be one of {SCOPES}, got {scope!r}")


def allowed_pairs(segments: Tensor) -> Tensor:
    """bool [batch, seq, seq]: query i may attend to key j when both are in the same document.
    Padded queries see only themselves, so that no softmax row is empty (their outputs are unused)."""
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] >= 0)
    return same | torch.eye(segments.shape[1], dtype=torch.bool, device=segments.device)


def attention_bias(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask sdpa takes, [batch, 1, seq, seq]: 0 where allowed, the dtype's minimum elsewhere."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
