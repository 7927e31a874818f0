"""The declarative distillation config: student shape, initialisation, and the loss terms.

A run is fully described by a `DistillConfig` (saved as DIR/distill_config.json and inside
every checkpoint): which student, which teacher layers initialise it, and a list of
`LossTerm`s (a loss from `distill.losses.LOSSES`, its weight, the teacher and student layer
it compares, its parameters). The objectives of the CLI are presets that expand into terms.
Layer indices are 0-based encoder layer indices (-1 is the last).

See docs/distill.md, "Objectives".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import BertConfig

from distill.losses import LOSSES, RELATION_LOSSES, STUDENT_NEEDS, needs
from distill.recipes import OBJECTIVES, RECIPES, valid_relation_heads  # torch-free, where --help reads them

STUDENT_PRESETS: dict[str, dict] = {
    # KoMiniLM-23M and -68M (seed 000).
    "minilm-23m": {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536},
    "minilm-68m": {"num_hidden_layers": 6, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    # DistilKoBERT (seed 001): 3 layers of the teacher's shape, initialised from teacher layers 1, 5, 9.
    "distil-3l": {"num_hidden_layers": 3},
}
PRESET_INIT_LAYERS: dict[str, list[int]] = {"distil-3l": [0, 4, 8]}  # DistilKoBERT's extract_distilbert.py
# Shape-independent settings a preset student inherits from its teacher.
INHERITED = ("hidden_act", "layer_norm_eps", "max_position_embeddings", "type_vocab_size", "initializer_range")
# Flags that change what forward() returns; they belong to a call, not to a saved model.
RUNTIME_FLAGS = ("output_attentions", "output_hidden_states", "return_dict", "torchscript")
LOGIT_TERMS = frozenset(name for name, read in STUDENT_NEEDS.items() if "logits" in read)


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss. Layer terms compare teacher_layer with student_layer; logit terms have no layers."""

    name: str
    weight: float = 1.0
    teacher_layer: int | None = None
    student_layer: int | None = None
    params: dict = field(default_factory=dict)

    @property
    def is_layer_term(self) -> bool:
        return self.name not in LOGIT_TERMS


@dataclass(frozen=True)
class DistillConfig:
    """Everything that defines what is trained and how it is scored."""

    objective: str
    student: dict
    terms: list[LossTerm]
    init_from_teacher_layers: list[int] | None
    mlm_probability: float | None
    teacher_layers: int
    teacher_hidden_size: int
    attention_scope: str = "row"  # configs written before the option existed ran on whole rows
    reference: str = ""  # where the objective's default weights and optimizer come from (distill.recipes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DistillConfig":
        data = json.loads(text)
        data["terms"] = [LossTerm(**term) for term in data["terms"]]
        return cls(**data)

    def student_config(self) -> BertConfig:
        return BertConfig(**self.student)

    def reads(self, side: str) -> set[str]:
        """Everything the terms read from one side ("teacher" or "student")."""
        return set().union(*(needs(t.name, t.params, side) for t in self.terms))

    def teacher_depth(self) -> int:
        """Teacher layers the losses need: all of them when a loss reads the teacher's logits."""
        if self.needs_teacher_logits():
            return self.teacher_layers
        return max((t.teacher_layer for t in self.terms if needs(t.name, t.params, "teacher")), default=-1) + 1

    def needs_teacher_logits(self) -> bool:
        return bool(self.reads("teacher") & {"logits", "token_logits"})

    def needs_student_logits(self) -> bool:
        return bool(self.reads("student") & {"logits", "token_logits"})

    def needs_teacher(self) -> bool:
        return bool(self.reads("teacher"))

    def term_labels(self) -> list[str]:
        """Metric names: the loss name, with its layers when the name occurs more than once."""
        names = [t.name for t in self.terms]
        return [
            f"{t.name}@{t.teacher_layer}:{t.student_layer}" if names.count(t.name) > 1 else t.name for t in self.terms
        ]


def resolve_layer(index: int, count: int, what: str) -> int:
    """A 0-based layer index, negative counting from the end, checked against the layer count."""
    resolved = index + count if index < 0 else index
    if not 0 <= resolved < count:
        raise ValueError(f"{what} layer {index} does not exist (it has {count} layers, 0..{count - 1})")
    return resolved


def parse_layer_map(text: str) -> list[tuple[int, int]]:
    """'11:5,7:3' -> [(11, 5), (7, 3)] (teacher:student)."""
    pairs = []
    for item in text.split(","):
        teacher, sep, student = item.strip().partition(":")
        if not sep:
            raise ValueError(f"--layer-map entries are TEACHER:STUDENT, got {item!r}")
        pairs.append((int(teacher), int(student)))
    return pairs


def parse_weights(text: str) -> dict[str, float]:
    """'soft_target_kl=5,mlm_cross_entropy=2' -> {name: weight}; names must be known losses."""
    weights = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in LOSSES:
            raise ValueError(f"--loss-weights entries are NAME=WEIGHT with NAME one of {sorted(LOSSES)}, got {item!r}")
        weights[name] = float(value)
    return weights


def student_config_dict(spec: str, teacher: BertConfig, vocab_size: int, pad_id: int, seq_len: int | None = None) -> dict:
    """The student's BertConfig as a dict of its non-default values: a preset (shape from the
    preset, the rest from the teacher), or a BertConfig JSON file. The vocabulary is always the
    shards' (vocab_size, pad id): a JSON file that says otherwise is refused rather than silently
    trained at another size, as is one with fewer positions than the shards' sequences. Runtime
    flags such as output_attentions are dropped."""
    if spec in STUDENT_PRESETS:
        base = teacher.to_dict() if spec == "distil-3l" else {key: getattr(teacher, key) for key in INHERITED}
        values = {**base, **STUDENT_PRESETS[spec]}
    else:
        values = student_json(spec)
        conflicts = [f"{key} {values[key]} (the shards' tokenizer has {want})"
                     for key, want in (("vocab_size", vocab_size), ("pad_token_id", pad_id))
                     if key in values and values[key] != want]
        positions = values.get("max_position_embeddings", BertConfig().max_position_embeddings)
        if seq_len is not None and positions < seq_len:
            conflicts.append(f"max_position_embeddings {positions} (the shards' sequences have {seq_len} tokens)")
        if conflicts:
            raise ValueError(f"--student {spec} conflicts with the shards: {'; '.join(conflicts)}; remove these "
                             "keys (the student takes the shards' vocabulary) or fix them")
    values.update(vocab_size=vocab_size, pad_token_id=pad_id)
    for key in RUNTIME_FLAGS:
        values.pop(key, None)
    clean = BertConfig(**values).to_diff_dict()
    for key in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype", *RUNTIME_FLAGS):
        clean.pop(key, None)
    return clean


def student_json(spec: str) -> dict:
    """A student given as a BertConfig JSON file, or as a model directory (its config.json; the
    weights are loaded by distill.models.load_student_weights)."""
    path = Path(spec) / "config.json" if Path(spec).is_dir() else Path(spec)
    if not path.is_file():
        raise ValueError(f"--student must be one of {sorted(STUDENT_PRESETS)}, a BertConfig JSON file or a model "
                         f"directory with config.json; {spec} is none of these")
    values = json.loads(path.read_text(encoding="utf-8"))
    if values.get("model_type", "bert") != "bert":
        raise ValueError(f"{spec}: the student must be a BERT config, got model_type {values['model_type']!r}")
    return values


@dataclass(frozen=True)
class TermSettings:
    """The parameters the loss terms take (resolved: no None)."""

    relation_heads: int
    temperature: float
    soft_target_positions: str = "all"  # the DistilBERT reference: every real token
    relation_average: str = "sequence"  # the MiniLM papers: the mean of each sequence's mean


def term_params(name: str, family: str, settings: TermSettings) -> dict:
    """A term's parameters: MiniLMv2's relation heads, the relation average, the soft-target ones."""
    params: dict = {}
    if name in RELATION_LOSSES:
        params["average"] = settings.relation_average
        if name in ("query_relation_kl", "key_relation_kl") or (name == "value_relation_kl" and family == "minilmv2"):
            params["relation_heads"] = settings.relation_heads
    if name == "soft_target_kl":
        params.update(temperature=settings.temperature, positions=settings.soft_target_positions)
    return params


def objective_terms(
    objective: str,
    teacher_layers: int,
    student_layers: int,
    layer_map: list[tuple[int, int]] | None,
    settings: TermSettings,
    weights: dict[str, float],
) -> list[LossTerm]:
    """Expand an objective into loss terms with its recipe's weights; `weights` overrides weights,
    adds terms (with the objective's layer pairs) and removes terms (weight 0)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {objective!r}")
    recipe = RECIPES[objective]
    pairs = [
        (resolve_layer(t, teacher_layers, "teacher"), resolve_layer(s, student_layers, "student"))
        for t, s in (layer_map or [(-1, -1)])
    ]
    names = list(recipe.weights) + [name for name in weights if name not in recipe.weights]
    terms = []
    for name in names:
        weight = weights.get(name, recipe.weights.get(name, 1.0))
        if weight == 0:
            continue
        params = term_params(name, recipe.losses, settings)
        if name in LOGIT_TERMS:
            terms.append(LossTerm(name, weight, params=params))
        else:
            terms.extend(LossTerm(name, weight, t, s, params) for t, s in pairs)
    if not terms:
        raise ValueError("every loss term has weight 0: nothing to train")
    return terms


def inapplicable_options(given: dict[str, object], terms: list[LossTerm]) -> list[str]:
    """The options given (name -> value, None when not given) that no term of this run reads:
    accepting them silently would let a user believe they changed the run."""
    names = {term.name for term in terms}
    reads = {
        "--relation-heads": any("relation_heads" in term.params for term in terms),
        "--relation-average": bool(names & RELATION_LOSSES),
        "--temperature": "soft_target_kl" in names,
        "--soft-target-positions": "soft_target_kl" in names,
        "--mlm-probability": bool(names & LOGIT_TERMS),
        "--teacher-layer": any(term.is_layer_term for term in terms),
        "--layer-map": any(term.is_layer_term for term in terms),
    }
    return [option for option, value in given.items() if value is not None and not reads.get(option, True)]


def validate(config: DistillConfig, teacher: BertConfig) -> None:
    """Refuse configs that cannot work, before any training starts."""
    student = config.student_config()
    if student.hidden_size % student.num_attention_heads:
        raise ValueError(f"student hidden size {student.hidden_size} is not divisible by {student.num_attention_heads} heads")
    for term in config.terms:
        if term.name not in LOSSES:
            raise ValueError(f"unknown loss {term.name!r}; known: {sorted(LOSSES)}")
        if term.is_layer_term:
            resolve_layer(term.teacher_layer, teacher.num_hidden_layers, "teacher")
            resolve_layer(term.student_layer, student.num_hidden_layers, "student")
        heads = term.params.get("relation_heads")
        if heads is not None:
            for who, width in (("teacher", teacher.hidden_size), ("student", student.hidden_size)):
                if width % heads:
                    valid = ", ".join(map(str, valid_relation_heads(teacher.hidden_size, student.hidden_size)))
                    raise ValueError(f"--relation-heads {heads} does not divide the {who} hidden size {width}; "
                                     f"valid: {valid} (or auto)")
        elif term.name in ("attention_kl", "value_relation_kl") and student.num_attention_heads != teacher.num_attention_heads:
            raise ValueError(
                f"the minilm objective compares attention heads one to one: the teacher has "
                f"{teacher.num_attention_heads} heads, the student {student.num_attention_heads}; "
                "give the student as many heads or use --objective minilmv2"
            )
    deepest = max((t.student_layer for t in config.terms if t.is_layer_term), default=None)
    if not config.needs_student_logits() and deepest is not None and deepest < student.num_hidden_layers - 1:
        raise ValueError(
            f"student layers after {deepest} get no loss (no term reads them); map a teacher layer to the "
            f"last student layer {student.num_hidden_layers - 1} or use a shallower student"
        )
    init = config.init_from_teacher_layers
    if init is not None:
        if len(init) != student.num_hidden_layers:
            raise ValueError(
                f"--init-from-teacher-layers names {len(init)} layers but the student has {student.num_hidden_layers}"
            )
        for index in init:
            resolve_layer(index, teacher.num_hidden_layers, "teacher")
        shape = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "type_vocab_size")
        differing = [key for key in shape if getattr(student, key) != getattr(teacher, key)]
        if student.max_position_embeddings > teacher.max_position_embeddings:
            differing.append("max_position_embeddings")
        if differing:
            raise ValueError(
                f"cannot initialise the student from teacher layers: {', '.join(differing)} differ "
                "(layer copying needs the teacher's shape, as distil-3l has)"
            )
