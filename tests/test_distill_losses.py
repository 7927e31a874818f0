"""Each distillation loss against its formula written out naively (loops), masks included: relation
losses averaged per sequence (MiniLM's formula per example) or pooled, restricted to each document's
keys, soft targets at every real token (the DistilBERT reference) or at the masked ones."""
from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    LOSSES,
    Masks,
    Side,
    attention_kl,
    hidden_cosine,
    key_relation_kl,
    mlm_cross_entropy,
    query_relation_kl,
    soft_target_kl,
    value_relation_kl,
)

torch.set_num_threads(1)
BATCH, SEQ = 3, 7
# Real tokens per row: a full row, a padded row, a row with a single token.
LENGTHS = [7, 4, 1]


def token_mask() -> torch.Tensor:
    return torch.arange(SEQ)[None, :] < torch.tensor(LENGTHS)[:, None]


def random_side(generator: torch.Generator, width: int, heads: int, vocab: int = 11, slots: int = 3) -> Side:
    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).float() * 2

    return Side(
        query=rand(BATCH, SEQ, width),
        key=rand(BATCH, SEQ, width),
        value=rand(BATCH, SEQ, width),
        hidden=rand(BATCH, SEQ, width),
        logits=rand(BATCH, slots, vocab),
        num_heads=heads,
        token_logits=rand(BATCH, SEQ, vocab),
    )


# Documents of each row's real tokens (a packed row: row 0 holds three documents, row 1 two).
DOCUMENTS = [[0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1], [0]]


def document_masks(generator: torch.Generator) -> Masks:
    """Masks whose pairs let a query see only the keys of its own document."""
    base = masks(generator)
    segments = torch.full((BATCH, SEQ), -1)
    for b, docs in enumerate(DOCUMENTS):
        segments[b, : len(docs)] = torch.tensor(docs)
    pairs = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] >= 0)
    return Masks(tokens=base.tokens, targets=base.targets, pairs=pairs | torch.eye(SEQ, dtype=torch.bool))


def masks(generator: torch.Generator, vocab: int = 11) -> Masks:
    targets = torch.randint(vocab, (BATCH, 3), generator=generator)
    targets[1, 2] = -100
    targets[2, :] = -100  # a row whose slots are all empty
    return Masks(tokens=token_mask(), targets=targets)


def naive_softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def naive_relation_kl(s_left, s_right, t_left, t_right, s_heads, t_heads, heads_for_mean, average="sequence",
                      documents=None) -> float:
    """KL(teacher row ‖ student row) over the keys a query may see (its document's real keys), per
    (b, head, real query i); averaged per sequence then over sequences, or pooled over all rows."""
    per_sequence, total, rows = [], 0.0, 0
    for b in range(BATCH):
        n = LENGTHS[b]
        docs = documents[b] if documents else [0] * n
        seq_total = 0.0
        for h in range(heads_for_mean):
            for i in range(n):
                keys = [j for j in range(n) if docs[j] == docs[i]]
                dist = []
                for left, right, heads in ((t_left, t_right, t_heads), (s_left, s_right, s_heads)):
                    d = left.shape[-1] // heads
                    scores = [
                        sum(float(left[b, i, h * d + c]) * float(right[b, j, h * d + c]) for c in range(d)) / math.sqrt(d)
                        for j in keys
                    ]
                    dist.append(naive_softmax(scores))
                p_t, p_s = dist
                seq_total += sum(p * math.log(p / q) for p, q in zip(p_t, p_s))
        per_sequence.append(seq_total / (heads_for_mean * n))
        total += seq_total
        rows += heads_for_mean * n
    return total / rows if average == "pooled" else sum(per_sequence) / len(per_sequence)


def test_attention_kl_matches_naive():
    g = torch.Generator().manual_seed(1)
    student, teacher = random_side(g, 8, 2), random_side(g, 12, 2)
    expected = naive_relation_kl(student.query, student.key, teacher.query, teacher.key, 2, 2, 2)
    assert attention_kl(student, teacher, masks(g)).item() == pytest.approx(expected, rel=1e-5)


def test_value_relation_kl_matches_naive_with_attention_heads_and_relation_heads():
    g = torch.Generator().manual_seed(2)
    student, teacher = random_side(g, 8, 2), random_side(g, 12, 2)
    m = masks(g)
    expected = naive_relation_kl(student.value, student.value, teacher.value, teacher.value, 2, 2, 2)
    assert value_relation_kl(student, teacher, m).item() == pytest.approx(expected, rel=1e-5)
    # MiniLMv2: 4 relation heads, teacher (12 wide) and student (8 wide) split into 4 each.
    expected = naive_relation_kl(student.value, student.value, teacher.value, teacher.value, 4, 4, 4)
    assert value_relation_kl(student, teacher, m, relation_heads=4).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss, field", [(query_relation_kl, "query"), (key_relation_kl, "key")])
def test_minilmv2_relations_match_naive(loss, field):
    g = torch.Generator().manual_seed(3)
    student, teacher = random_side(g, 8, 2), random_side(g, 12, 3)
    s, t = getattr(student, field), getattr(teacher, field)
    expected = naive_relation_kl(s, s, t, t, 4, 4, 4)
    assert loss(student, teacher, masks(g), relation_heads=4).item() == pytest.approx(expected, rel=1e-5)


def test_relation_losses_ignore_padding_as_keys_and_as_queries():
    g = torch.Generator().manual_seed(4)
    student, teacher = random_side(g, 8, 2), random_side(g, 8, 2)
    m = masks(g)
    pad = ~m.tokens[..., None]

    def scramble(side: Side) -> Side:
        noise = lambda x: torch.where(pad, torch.randn(x.shape, generator=g) * 100, x)  # noqa: E731
        return Side(noise(side.query), noise(side.key), noise(side.value), side.hidden, side.logits, side.num_heads)

    for name in ("attention_kl", "value_relation_kl"):
        before = LOSSES[name](student, teacher, m)
        after = LOSSES[name](scramble(student), scramble(teacher), m)
        assert after.item() == pytest.approx(before.item(), rel=1e-6)
        assert before.item() > 0.01


def test_relation_loss_is_zero_for_identical_sides_and_gradients_are_finite():
    g = torch.Generator().manual_seed(5)
    side = random_side(g, 8, 2)
    m = masks(g)
    assert attention_kl(side, side, m).item() == pytest.approx(0.0, abs=1e-6)
    query = side.query.clone().requires_grad_(True)
    student = Side(query=query, key=side.key, value=side.value, num_heads=2)
    loss = attention_kl(student, random_side(g, 8, 2), m)
    loss.backward()
    assert torch.isfinite(query.grad).all()
    assert query.grad[~m.tokens].abs().sum() == 0  # padded queries get no gradient


def test_attention_kl_refuses_different_head_counts():
    g = torch.Generator().manual_seed(6)
    with pytest.raises(ValueError, match="same number of heads"):
        attention_kl(random_side(g, 8, 2), random_side(g, 8, 4), masks(g))


def naive_soft_target(student_logits, teacher_logits, where, temperature) -> float:
    """Mean over the chosen positions of KL(softmax(t/T) ‖ softmax(s/T)), times T²."""
    total, count = 0.0, 0
    for b, k in where:
        p_t = naive_softmax([float(x) / temperature for x in teacher_logits[b, k]])
        p_s = naive_softmax([float(x) / temperature for x in student_logits[b, k]])
        total += sum(p * math.log(p / q) for p, q in zip(p_t, p_s))
        count += 1
    return total / count * temperature**2


def test_soft_target_kl_matches_naive_at_masked_slots_and_at_every_real_token():
    g = torch.Generator().manual_seed(7)
    student, teacher = random_side(g, 8, 2), random_side(g, 8, 2)
    m = masks(g)
    temperature = 2.5
    slots = [(b, k) for b in range(BATCH) for k in range(3) if m.targets[b, k] != -100]
    expected = naive_soft_target(student.logits, teacher.logits, slots, temperature)
    got = soft_target_kl(student, teacher, m, temperature=temperature, positions="masked").item()
    assert got == pytest.approx(expected, rel=1e-5)
    real = [(b, i) for b in range(BATCH) for i in range(LENGTHS[b])]  # the reference's default: every real token
    expected = naive_soft_target(student.token_logits, teacher.token_logits, real, temperature)
    assert soft_target_kl(student, teacher, m, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)
    assert soft_target_kl(student, teacher, m, temperature=temperature, positions="all").item() == pytest.approx(
        expected, rel=1e-5)
    assert abs(expected - naive_soft_target(student.logits, teacher.logits, slots, temperature)) > 0.01


def test_mlm_cross_entropy_matches_naive():
    g = torch.Generator().manual_seed(8)
    student = random_side(g, 8, 2)
    m = masks(g)
    losses = [
        -math.log(naive_softmax([float(x) for x in student.logits[b, k]])[int(m.targets[b, k])])
        for b in range(BATCH)
        for k in range(3)
        if m.targets[b, k] != -100
    ]
    assert mlm_cross_entropy(student, Side(), m).item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_hidden_cosine_matches_naive():
    g = torch.Generator().manual_seed(9)
    student, teacher = random_side(g, 8, 2), random_side(g, 8, 2)
    values = []
    for b in range(BATCH):
        for i in range(LENGTHS[b]):
            s, t = student.hidden[b, i].tolist(), teacher.hidden[b, i].tolist()
            dot = sum(x * y for x, y in zip(s, t))
            values.append(1 - dot / (math.sqrt(sum(x * x for x in s)) * math.sqrt(sum(y * y for y in t))))
    assert hidden_cosine(student, teacher, masks(g)).item() == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_logit_losses_are_zero_without_filled_slots():
    g = torch.Generator().manual_seed(10)
    student, teacher = random_side(g, 8, 2), random_side(g, 8, 2)
    empty = Masks(tokens=token_mask(), targets=torch.full((BATCH, 3), -100))
    assert soft_target_kl(student, teacher, empty, positions="masked").item() == 0.0
    assert mlm_cross_entropy(student, teacher, empty).item() == 0.0


@pytest.mark.parametrize("name, field, heads, relation_heads", [
    ("attention_kl", "query", 2, None), ("value_relation_kl", "value", 2, None),
    ("value_relation_kl", "value", 2, 4), ("query_relation_kl", "query", 2, 4), ("key_relation_kl", "key", 2, 4),
])
@pytest.mark.parametrize("average", ["sequence", "pooled"])
def test_relation_losses_per_sequence_or_pooled_within_each_document(name, field, heads, relation_heads, average):
    """Every relation loss, restricted to each document's keys (--attention-scope document), with
    both averages, against the loops. The two averages differ on rows of different lengths."""
    g = torch.Generator().manual_seed(11)
    student, teacher = random_side(g, 8, heads), random_side(g, 12, heads)
    params = {"average": average, **({"relation_heads": relation_heads} if relation_heads else {})}
    h = relation_heads or heads
    if name == "attention_kl":
        args = (student.query, student.key, teacher.query, teacher.key)
    else:
        s_x, t_x = getattr(student, field), getattr(teacher, field)
        args = (s_x, s_x, t_x, t_x)
    for m, documents in ((document_masks(g), DOCUMENTS), (masks(g), None)):
        expected = naive_relation_kl(*args, h, h, h, average=average, documents=documents)
        assert LOSSES[name](student, teacher, m, **params).item() == pytest.approx(expected, rel=1e-5)
    pooled = naive_relation_kl(*args, h, h, h, average="pooled", documents=DOCUMENTS)
    per_sequence = naive_relation_kl(*args, h, h, h, average="sequence", documents=DOCUMENTS)
    assert abs(pooled - per_sequence) > 1e-3 * abs(pooled)
