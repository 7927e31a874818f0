"""Each objective's reference recipe: loss weights, optimizer and schedule, with where they come from.

Why: a run without options should be the published recipe of its objective, and every way in which
it is not should be an option the user chose (and that distill_config.json / train_config.json
record). The values below were read from the reference code where it is public; the `sources`
say which file or paper each comes from (docs/distill.md, "Reference recipes", repeats them).

No torch here: `--help` and the option checks read these before anything heavy is imported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

DISTILBERT_SOURCE = ("Hugging Face transformers examples/research_projects/distillation (Sanh et al. 2019): "
                     "train.py defaults (learning_rate 5e-4, adam_epsilon 1e-6, weight_decay 0.0, max_grad_norm 5.0, "
                     "warmup_prop 0.05, temperature 2.0, restrict_ce_to_mask off), distiller.py (AdamW betas 0.9/0.98, "
                     "linear schedule with warm-up), README command (alpha_ce 5.0, alpha_mlm 2.0, alpha_cos 1.0)")
DISTILKOBERT_SOURCE = ("monologg/DistilKoBERT distillation/: train_single_gpu_3_layer.sh and 3_layer_train_multi_gpu.sh "
                       "(alpha_ce 0.33, alpha_mlm 0.33, alpha_cos 0.33), scripts/extract_distilbert.py (3 layers from "
                       "teacher layers [0, 4, 8]), train.py and distiller.py (the DistilBERT optimizer and schedule above)")
MINILMV2_SOURCE = ("Wang et al. 2021 (MiniLMv2, arXiv:2012.15828) as reproduced by bloomberg/minilmv2.bb run.sh: "
                   "learning rate 6e-4, Adam betas 0.9/0.999, epsilon 1e-6, weight decay 0.01, 4,000 warm-up steps "
                   "of 400,000 then linear decay, 48 relation heads for a base-size teacher (64 for large); gradient "
                   "clipping 1.0 is the Hugging Face Trainer default that reproduction runs with")
MINILM_SOURCE = ("Wang et al. 2020 (MiniLM, arXiv:2002.10957): Adam, 4,000 warm-up steps then linear decay, "
                 "weight decay 0.01, as MiniLMv2 above; peak learning rate 6e-4 as the authors state in "
                 "microsoft/unilm issue #360")


@dataclass(frozen=True)
class Recipe:
    """What an objective means by default. `losses` is the loss family (the terms); warm-up is
    `warmup_steps` capped at `warmup_fraction` of the run, or that fraction alone when None."""

    losses: str
    weights: dict[str, float]
    lr: float
    adam_betas: tuple[float, float]
    adam_eps: float
    weight_decay: float
    max_grad_norm: float
    warmup_steps: int | None
    warmup_fraction: float
    student: str
    source: str
    temperature: float | None = None
    init_from_teacher_layers: tuple[int, ...] | None = field(default=None)


RECIPES: dict[str, Recipe] = {
    "minilm": Recipe("minilm", {"attention_kl": 1.0, "value_relation_kl": 1.0}, 6e-4, (0.9, 0.999), 1e-6, 0.01, 1.0,
                     4000, 0.05, "minilm-23m", MINILM_SOURCE),
    "minilmv2": Recipe("minilmv2", {"query_relation_kl": 1.0, "key_relation_kl": 1.0, "value_relation_kl": 1.0}, 6e-4,
                       (0.9, 0.999), 1e-6, 0.01, 1.0, 4000, 0.05, "minilm-23m", MINILMV2_SOURCE),
    "distilbert": Recipe("distilbert", {"soft_target_kl": 5.0, "mlm_cross_entropy": 2.0, "hidden_cosine": 1.0}, 5e-4,
                         (0.9, 0.98), 1e-6, 0.0, 5.0, None, 0.05, "minilm-23m", DISTILBERT_SOURCE, temperature=2.0),
    "distilkobert": Recipe("distilbert", {"soft_target_kl": 0.33, "mlm_cross_entropy": 0.33, "hidden_cosine": 0.33},
                           5e-4, (0.9, 0.98), 1e-6, 0.0, 5.0, None, 0.05, "distil-3l", DISTILKOBERT_SOURCE,
                           temperature=2.0, init_from_teacher_layers=(0, 4, 8)),
}
OBJECTIVES = tuple(RECIPES)
# Relation heads the MiniLMv2 references use, in order of preference: 48 for base-size teachers,
# 64 for large ones (1024 wide), then smaller counts for narrower models.
RELATION_HEAD_CHOICES = (48, 64, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1)
LARGE_TEACHER_WIDTH = 1024
MIN_RELATION_HEAD_SIZE = 6  # dimensions per relation head: 384 / 64, a small student of a large teacher in MiniLMv2


def default_warmup(recipe: Recipe, max_steps: int) -> int:
    """The recipe's warm-up for a run of max_steps: never more than its fraction of the run, so a
    short run leaves warm-up (4,000 steps of a 120-step run would keep the lr at 2.5% of its peak)."""
    fraction = math.ceil(recipe.warmup_fraction * max_steps)
    return fraction if recipe.warmup_steps is None else min(recipe.warmup_steps, fraction)


def valid_relation_heads(teacher_width: int, student_width: int) -> list[int]:
    """Every relation head count that divides both hidden sizes."""
    common = math.gcd(teacher_width, student_width)
    return [count for count in range(1, common + 1) if common % count == 0]


def auto_relation_heads(teacher_width: int, student_width: int) -> int:
    """The reference count (48 for a base teacher, 64 for a large one) when it divides both widths,
    else the first of RELATION_HEAD_CHOICES that does; in both cases only counts that leave every
    relation head at least MIN_RELATION_HEAD_SIZE dimensions on each side (the references' narrowest:
    a 384-wide student of a large teacher under 64 heads), since a 2-dimensional head relates almost nothing and costs
    as much attention memory as a real one. 1 when no count does."""
    order = list(RELATION_HEAD_CHOICES)
    if teacher_width >= LARGE_TEACHER_WIDTH:
        order.remove(64)
        order.insert(0, 64)
    narrower = min(teacher_width, student_width)
    return next((count for count in order if teacher_width % count == 0 and student_width % count == 0
                 and narrower // count >= MIN_RELATION_HEAD_SIZE), 1)
