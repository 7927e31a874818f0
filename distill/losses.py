"""Distillation losses: pure, vectorised functions of captured tensors and masks.

Every loss has the signature ``f(student: Side, teacher: Side, masks: Masks, **params) -> Tensor``
and returns a 0-dim float32 tensor. No per-example Python loops, no ``.item()``, no
data-dependent shapes: the same graph runs on CPU, CUDA and XLA without recompiling.
Padding is handled with masks (padded keys get no probability, padded query rows and
empty prediction slots get no weight), never by selecting elements.

See docs/distill.md, "Objectives".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Side:
    """What one model produced that a loss term reads (absent fields are None).

    query/key/value: one layer's attention projections, [batch, seq, hidden] (heads concatenated).
    hidden: one layer's output hidden states, [batch, seq, hidden] (already projected to the
    teacher's width for the student when the widths differ).
    logits: MLM logits at the prediction slots, [batch, slots, vocab].
    token_logits: MLM logits at every position, [batch, seq, vocab] (soft targets at all tokens).
    num_heads: attention heads of the layer the projections come from.
    """

    query: Tensor | None = None
    key: Tensor | None = None
    value: Tensor | None = None
    hidden: Tensor | None = None
    logits: Tensor | None = None
    num_heads: int = 1
    token_logits: Tensor | None = None


@dataclass(frozen=True)
class Masks:
    """tokens: bool [batch, seq], True for real (non-pad) tokens.
    targets: long [batch, slots], the original token id at each prediction slot, -100 for an empty slot.
    pairs: bool [batch, seq, seq], True where query i may attend to key j (the models' attention:
    block-diagonal per document with --attention-scope document); None means every real key."""

    tokens: Tensor
    targets: Tensor
    pairs: Tensor | None = None

    def allowed_keys(self) -> Tensor:
        """bool [batch, seq or 1, seq]: the keys each query row may see."""
        return self.pairs if self.pairs is not None else self.tokens[:, None, :]


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[batch, seq, hidden] -> [batch * heads, seq, hidden / heads], in float32."""
    batch, seq, width = x.shape
    if width % heads:
        raise ValueError(f"hidden size {width} is not divisible by {heads} heads")
    return x.float().view(batch, seq, heads, width // heads).transpose(1, 2).reshape(batch * heads, seq, width // heads)


def relation_log_probs(left: Tensor, right: Tensor, heads: int, allowed: Tensor) -> Tensor:
    """log softmax(left_h right_hᵀ / √d_h) per head over the allowed keys: [batch, heads, seq, seq].

    With left = Q and right = K this is the self-attention distribution; with left = right = V
    it is MiniLM's value relation. `allowed` is bool [batch, seq or 1, seq] (Masks.allowed_keys):
    the same keys the models' attention sees, so the rebuilt distribution is the attention's.
    The scale goes into the small left operand and the mask into the product (fused by baddbmm for
    one key mask per row, added in place for per-query pairs): the [batch, heads, seq, seq] scores
    are written once before the softmax.
    """
    batch, seq, width = left.shape
    left_h, right_h = _split_heads(left, heads), _split_heads(right, heads)
    left_h = left_h * (1.0 / math.sqrt(left_h.shape[-1]))
    bias = torch.zeros(allowed.shape, device=left.device).masked_fill(~allowed, torch.finfo(torch.float32).min)
    if allowed.shape[1] == 1:
        bias = bias[:, None].expand(batch, heads, 1, seq).reshape(batch * heads, 1, seq)
        scores = torch.baddbmm(bias, left_h, right_h.transpose(1, 2)).view(batch, heads, seq, seq)
    else:
        scores = torch.bmm(left_h, right_h.transpose(1, 2)).view(batch, heads, seq, seq)
        scores.add_(bias[:, None])
    return scores.log_softmax(dim=-1)


def relation_kl(teacher_log_probs: Tensor, student_log_probs: Tensor, tokens: Tensor, average: str = "sequence") -> Tensor:
    """KL(teacher ‖ student) per query row, averaged over heads and real query tokens: of each
    sequence, then over the sequences (average="sequence", MiniLM's formula per example), or over
    all real query tokens of the batch at once (average="pooled").

    Keys outside the allowed set need no mask here: the teacher gives them probability exactly 0
    (and the student's log-probability there is finite), so they add 0 and pass back no gradient.
    """
    per_row = torch.einsum("bhij,bhij->bhi", teacher_log_probs.exp(), teacher_log_probs - student_log_probs)
    rows = tokens[:, None, :].to(per_row.dtype)
    heads = per_row.shape[1]
    if average == "pooled":
        return (per_row * rows).sum() / (rows.sum() * heads).clamp(min=1.0)
    if average != "sequence":
        raise ValueError(f"relation average must be sequence or pooled, got {average!r}")
    lengths = rows.sum(dim=(1, 2))
    per_sequence = (per_row * rows).sum(dim=(1, 2)) / (lengths * heads).clamp(min=1.0)
    return per_sequence.sum() / (lengths > 0).sum().clamp(min=1).to(per_sequence.dtype)


def _self_relation_kl(student_x: Tensor, teacher_x: Tensor, student_heads: int, teacher_heads: int, masks: Masks,
                      average: str) -> Tensor:
    allowed = masks.allowed_keys()
    teacher_lp = relation_log_probs(teacher_x, teacher_x, teacher_heads, allowed)
    student_lp = relation_log_probs(student_x, student_x, student_heads, allowed)
    return relation_kl(teacher_lp, student_lp, masks.tokens, average)


def attention_kl(student: Side, teacher: Side, masks: Masks, average: str = "sequence") -> Tensor:
    """MiniLM: KL between the teacher's and the student's self-attention distributions (same head count)."""
    if student.num_heads != teacher.num_heads:
        raise ValueError(
            f"attention_kl needs the same number of heads (teacher {teacher.num_heads}, student {student.num_heads}); "
            "use the minilmv2 objective, whose relation heads are independent of attention heads"
        )
    allowed = masks.allowed_keys()
    teacher_lp = relation_log_probs(teacher.query, teacher.key, teacher.num_heads, allowed)
    student_lp = relation_log_probs(student.query, student.key, student.num_heads, allowed)
    return relation_kl(teacher_lp, student_lp, masks.tokens, average)


def value_relation_kl(student: Side, teacher: Side, masks: Masks, relation_heads: int | None = None,
                      average: str = "sequence") -> Tensor:
    """KL between value relations softmax(V Vᵀ/√d); relation_heads None means the attention heads (MiniLM v1)."""
    if relation_heads is None and student.num_heads != teacher.num_heads:
        raise ValueError("value_relation_kl without relation_heads needs the same number of heads in teacher and student")
    return _self_relation_kl(student.value, teacher.value, relation_heads or student.num_heads,
                             relation_heads or teacher.num_heads, masks, average)


def query_relation_kl(student: Side, teacher: Side, masks: Masks, relation_heads: int, average: str = "sequence") -> Tensor:
    """MiniLMv2: KL between query-query relations split into relation_heads heads."""
    return _self_relation_kl(student.query, teacher.query, relation_heads, relation_heads, masks, average)


def key_relation_kl(student: Side, teacher: Side, masks: Masks, relation_heads: int, average: str = "sequence") -> Tensor:
    """MiniLMv2: KL between key-key relations split into relation_heads heads."""
    return _self_relation_kl(student.key, teacher.key, relation_heads, relation_heads, masks, average)


def soft_target_kl(student: Side, teacher: Side, masks: Masks, temperature: float = 2.0, positions: str = "all") -> Tensor:
    """DistilBERT: KL(softmax(t/T) ‖ softmax(s/T)) × T², averaged over every real token (positions
    "all": the reference, whose restrict_ce_to_mask is off by default) or over the masked ones
    (positions "masked": the prediction slots)."""
    if positions == "all":
        teacher_logits, student_logits, where = teacher.token_logits, student.token_logits, masks.tokens
    elif positions == "masked":
        teacher_logits, student_logits, where = teacher.logits, student.logits, masks.targets != -100
    else:
        raise ValueError(f"soft-target positions must be all or masked, got {positions!r}")
    teacher_lp = (teacher_logits.float() / temperature).log_softmax(dim=-1)
    student_lp = (student_logits.float() / temperature).log_softmax(dim=-1)
    per_position = (teacher_lp.exp() * (teacher_lp - student_lp)).sum(dim=-1)
    weight = where.to(per_position.dtype)
    return (per_position * weight).sum() / weight.sum().clamp(min=1.0) * temperature**2


def mlm_cross_entropy(student: Side, teacher: Side, masks: Masks) -> Tensor:
    """Masked-LM cross-entropy of the student against the original tokens at the filled slots."""
    logits = student.logits.float()
    per_slot = F.cross_entropy(logits.flatten(0, 1), masks.targets.flatten(), ignore_index=-100, reduction="none")
    filled = (masks.targets != -100).to(per_slot.dtype)
    return per_slot.sum() / filled.sum().clamp(min=1.0)


def hidden_cosine(student: Side, teacher: Side, masks: Masks) -> Tensor:
    """DistilBERT: 1 - cos(student hidden, teacher hidden), averaged over real tokens."""
    cosine = F.cosine_similarity(student.hidden.float(), teacher.hidden.float(), dim=-1)
    tokens = masks.tokens.to(cosine.dtype)
    return ((1.0 - cosine) * tokens).sum() / tokens.sum().clamp(min=1.0)


LossFn = Callable[..., Tensor]

LOSSES: dict[str, LossFn] = {
    "attention_kl": attention_kl,
    "value_relation_kl": value_relation_kl,
    "query_relation_kl": query_relation_kl,
    "key_relation_kl": key_relation_kl,
    "soft_target_kl": soft_target_kl,
    "mlm_cross_entropy": mlm_cross_entropy,
    "hidden_cosine": hidden_cosine,
}

# What each loss reads from a side: layer tensors ("query", "key", "value", "hidden") or "logits".
# The teacher needs nothing for mlm_cross_entropy.
STUDENT_NEEDS: dict[str, frozenset[str]] = {
    "attention_kl": frozenset({"query", "key"}),
    "value_relation_kl": frozenset({"value"}),
    "query_relation_kl": frozenset({"query"}),
    "key_relation_kl": frozenset({"key"}),
    "soft_target_kl": frozenset({"logits"}),
    "mlm_cross_entropy": frozenset({"logits"}),
    "hidden_cosine": frozenset({"hidden"}),
}
TEACHER_NEEDS: dict[str, frozenset[str]] = {**STUDENT_NEEDS, "mlm_cross_entropy": frozenset()}
RELATION_LOSSES = frozenset({"attention_kl", "value_relation_kl", "query_relation_kl", "key_relation_kl"})


def needs(name: str, params: dict, side: str) -> frozenset[str]:
    """What a term with these parameters reads from one side ("teacher" or "student"): the soft
    targets at every token read the logits of every position ("token_logits"), not the slots'."""
    wanted = (TEACHER_NEEDS if side == "teacher" else STUDENT_NEEDS)[name]
    if name == "soft_target_kl" and params.get("positions", "all") == "all":
        return frozenset({"token_logits"})
    return wanted
