"""Teacher and student models: loading, vocabulary checks, initialisation, truncation, Q/K/V capture.

The student can be initialised from teacher layers; the teacher is cut to the depth the losses need.

Q, K and V are read from forward hooks on the attention projections (the `query`, `key`,
`value` Linear modules), so the models keep their fast attention kernels (sdpa) and never
materialise attention probabilities for `output_attentions`; the losses rebuild the
distributions they need from Q and K.

See docs/distill.md, "Objectives" (how it runs).
"""
from __future__ import annotations

from functools import partial

import os

import torch
from torch import Tensor, nn
from transformers import AutoModelForMaskedLM, BertForMaskedLM, BertModel

from distill.configs import DistillConfig, LossTerm
from distill.losses import LOSSES, Masks, Side, needs
from tokenizer_training.loading import TokenizerSourceError, looks_local, model_vocabulary  # noqa: F401 (re-exported)

LAYER_KINDS = ("query", "key", "value", "hidden")


def quiet_transformers(verbose: bool) -> None:
    """Keep transformers' and the hub's load reports and progress bars off stderr (unless --verbose)."""
    if verbose:
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()


class VocabularyMismatch(ValueError):
    """A model was trained with another vocabulary than the shards'."""


def check_model_path(name_or_path: str, who: str) -> None:
    """A local-looking path that does not exist is "no such directory", not a hub lookup that ends
    in network errors."""
    if looks_local(name_or_path) and not os.path.isdir(os.path.expanduser(name_or_path)):
        raise ValueError(f"{who} {name_or_path}: no such directory")


def load_teacher(name_or_path: str, option: str = "--teacher") -> tuple[BertForMaskedLM, bool]:
    """(model, whether its checkpoint had an MLM head): a BERT masked-LM teacher (or, for
    distill.extend, the model named by `option`) from a local directory or a hub id, in eval mode,
    frozen, fp32 (cast to bf16 on the device later, after the student has copied what it needs)."""
    check_model_path(name_or_path, option)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            name_or_path, attn_implementation="sdpa", output_loading_info=True
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load {option} {name_or_path!r}: {error}") from error
    if not isinstance(model, BertForMaskedLM):
        raise ValueError(f"{option} must be a BERT model (model_type 'bert'), {name_or_path} is {model.config.model_type!r}")
    model.eval().requires_grad_(False)
    return model, not any(key.startswith("cls.") for key in info["missing_keys"])


def load_student_weights(student: BertForMaskedLM, spec: str | None) -> bool:
    """When --student is a model directory (e.g. distill.extend's output), start from its weights;
    returns whether it was one. Its config.json already gave the student's shape."""
    if not spec or not os.path.isdir(spec):
        return False
    model, _ = load_teacher(spec, "--student")
    missing, unexpected = student.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [key for key in missing if not key.endswith("position_ids")]:
        raise ValueError(f"--student {spec}: its weights do not fit its config.json (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return True


def check_vocabulary(who: str, vocab_size: int, vocab: list[str] | None, shard_vocab: list[str]) -> None:
    """Refuse a model (`who`: "the teacher", "the model") whose vocabulary is not the shards':
    the size always, every token when the model ships a tokenizer (`vocab` in id order, from
    tokenizer_training.loading.model_vocabulary; None for a model without tokenizer files)."""
    if vocab_size != len(shard_vocab):
        raise VocabularyMismatch(
            f"{who}'s vocab_size is {vocab_size} but the shards' tokenizer has {len(shard_vocab)} tokens: "
            "the shards must be tokenized with the model's own vocabulary"
        )
    if vocab is None:
        return
    by_id = dict(enumerate(vocab))
    shard_by_id = dict(enumerate(shard_vocab))
    differing = sorted(i for i in set(by_id) | set(shard_by_id) if by_id.get(i) != shard_by_id.get(i))
    if differing:
        first = differing[0]
        raise VocabularyMismatch(
            f"{who}'s tokenizer differs from the shards' at {len(differing)} ids, first at id {first} "
            f"({who} has {by_id.get(first)!r}, the shards {shard_by_id.get(first)!r})"
        )


def init_from_teacher(student: BertForMaskedLM, teacher: BertForMaskedLM, layers: list[int]) -> None:
    """Copy the teacher's embeddings, the chosen encoder layers (student layer i <- teacher layer
    layers[i]) and the MLM head transform and bias (the decoder is tied to the embeddings)."""
    with torch.no_grad():
        student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
        for student_index, teacher_index in enumerate(layers):
            student.bert.encoder.layer[student_index].load_state_dict(teacher.bert.encoder.layer[teacher_index].state_dict())
        student.cls.predictions.transform.load_state_dict(teacher.cls.predictions.transform.state_dict())
        student.cls.predictions.bias.copy_(teacher.cls.predictions.bias)


def wanted_layers(terms: list[LossTerm], side: str) -> dict[int, set[str]]:
    """layer -> the tensors ("query", "key", "value", "hidden") the terms read from it on one side."""
    wanted: dict[int, set[str]] = {}
    for term in terms:
        kinds = needs(term.name, term.params, side) - {"logits", "token_logits"}
        if kinds:
            layer = term.teacher_layer if side == "teacher" else term.student_layer
            wanted.setdefault(layer, set()).update(kinds)
    return wanted


def encode(bert: BertModel, input_ids: Tensor, attention_bias: Tensor, position_ids: Tensor) -> Tensor:
    """The encoder's last hidden state for a precomputed additive mask [batch, 1, seq, seq] and
    explicit position ids (distill.attention). Embeddings and encoder are called directly, so the
    mask reaches sdpa as given in transformers 4 and 5 alike, without BertModel's mask preparation
    (which inspects the mask on the host to drop an all-ones one) and without the unused pooler."""
    hidden = bert.embeddings(input_ids=input_ids, position_ids=position_ids)
    return bert.encoder(hidden, attention_mask=attention_bias)[0]


PROJECTIONS = ("query", "key", "value")  # in the order BertSelfAttention runs them


class StopForward(Exception):
    """Raised by a capture hook once everything the losses read has been computed."""


class LayerCapture:
    """Forward hooks that keep the outputs of chosen attention projections and encoder layers of a BertModel.

    With stop_early, the forward pass is cut (StopForward) right after the last wanted projection
    of the deepest wanted layer when that layer's output itself is not wanted: MiniLM reads only
    Q/K/V of its last layer, so that layer's attention output and feed-forward never run.
    """

    def __init__(self, bert: BertModel, wanted: dict[int, set[str]], stop_early: bool = False) -> None:
        self._store: dict[str, Tensor] = {}
        self.stop_layer: int | None = None
        for layer, kinds in sorted(wanted.items()):
            block = bert.encoder.layer[layer]
            for kind in sorted(kinds):
                module = block if kind == "hidden" else getattr(block.attention.self, kind)
                module.register_forward_hook(partial(self._keep, f"{layer}.{kind}"))
        if stop_early and wanted:
            deepest = max(wanted)
            if "hidden" not in wanted[deepest]:
                last = max(wanted[deepest], key=PROJECTIONS.index)
                getattr(bert.encoder.layer[deepest].attention.self, last).register_forward_hook(self._stop)
                self.stop_layer = deepest

    def _keep(self, key: str, module: nn.Module, inputs: tuple, output) -> None:
        self._store[key] = output[0] if isinstance(output, tuple) else output

    @staticmethod
    def _stop(module: nn.Module, inputs: tuple, output) -> None:
        raise StopForward

    def run(self, bert: BertModel, input_ids: Tensor, attention_bias: Tensor,
            position_ids: Tensor) -> tuple[Tensor | None, dict[str, Tensor]]:
        """(last hidden state, or None when the pass was cut early; the captured tensors keyed "LAYER.KIND")."""
        try:
            hidden = encode(bert, input_ids, attention_bias, position_ids)
        except StopForward:
            hidden = None
        captured, self._store = self._store, {}
        return hidden, captured


def gather_slots(hidden: Tensor, positions: Tensor) -> Tensor:
    """[batch, seq, width] at [batch, slots] positions -> [batch, slots, width]."""
    return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def head_outputs(head: nn.Module, hidden: Tensor, slots: Tensor | None, reads: set[str]) -> dict[str, Tensor]:
    """The MLM head's logits where the losses read them: at every position ("token_logits") and/or at
    the prediction slots ("logits", gathered from the former when both are read)."""
    outputs = {}
    if "token_logits" in reads:
        outputs["token_logits"] = head(hidden)
        if "logits" in reads:
            outputs["logits"] = gather_slots(outputs["token_logits"], slots)
    elif "logits" in reads:
        outputs["logits"] = head(gather_slots(hidden, slots))
    return outputs


class Teacher:
    """The frozen teacher, cut to the depth the losses need; calling it returns the captured tensors
    (and the logits the losses read). Never wrapped in DDP."""

    def __init__(self, model: BertForMaskedLM, config: DistillConfig) -> None:
        depth = config.teacher_depth()
        model.bert.encoder.layer = nn.ModuleList(list(model.bert.encoder.layer)[:depth])
        model.config.num_hidden_layers = depth
        self._model = model
        self.bert = model.bert
        self.reads = config.reads("teacher")
        self.head = model.cls if config.needs_teacher_logits() else None
        self.num_heads = model.config.num_attention_heads
        self._capture = LayerCapture(self.bert, wanted_layers(config.terms, "teacher"), stop_early=self.head is None)

    def to(self, device: torch.device, dtype: torch.dtype) -> "Teacher":
        self.bert.to(device=device, dtype=dtype)
        if self.head is not None:
            self.head.to(device=device, dtype=dtype)
            self._model.tie_weights()  # on XLA, .to() gives each module a new Parameter: one decoder copy, not two
        return self

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, attention_bias: Tensor, position_ids: Tensor,
                 slots: Tensor | None) -> dict[str, Tensor]:
        hidden, outputs = self._capture.run(self.bert, input_ids, attention_bias, position_ids)
        if self.head is not None:
            outputs.update(head_outputs(self.head, hidden, slots, self.reads))
        return outputs


class CapturingStudent(nn.Module):
    """The student (BertForMaskedLM) with capture hooks and, for hidden-state cosine terms between
    different widths, linear maps to the teacher's width. They have no bias: a bias alone can turn
    every student vector towards the teachers' mean direction and absorb the cosine loss without
    the student learning anything. forward() returns the captured tensors, the projected hidden
    states ("projected.TERM") and the logits the losses read. This is the module DDP wraps; only
    `student` is exported."""

    def __init__(self, student: BertForMaskedLM, config: DistillConfig) -> None:
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.projections = nn.ModuleDict(
            {
                str(index): nn.Linear(width, config.teacher_hidden_size, bias=False)
                for index, term in enumerate(config.terms)
                if term.name == "hidden_cosine" and width != config.teacher_hidden_size
            }
        )
        self.projected_layers = {key: config.terms[int(key)].student_layer for key in self.projections}
        self.reads = config.reads("student")
        self.with_logits = config.needs_student_logits()
        self._capture = LayerCapture(student.bert, wanted_layers(config.terms, "student"),
                                     stop_early=not self.with_logits)
        # Freeze what no loss reaches, so that DDP need not search for unused parameters: without
        # logits the MLM head, and after an early stop the last layer's attention output and FFN.
        if not self.with_logits:
            student.cls.predictions.transform.requires_grad_(False)
            student.cls.predictions.bias.requires_grad_(False)
        if self._capture.stop_layer is not None:
            block = student.bert.encoder.layer[self._capture.stop_layer]
            for part in (block.attention.output, block.intermediate, block.output):
                part.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_bias: Tensor, position_ids: Tensor,
                slots: Tensor | None = None) -> dict[str, Tensor]:
        hidden, outputs = self._capture.run(self.student.bert, input_ids, attention_bias, position_ids)
        for key, projection in self.projections.items():
            outputs[f"projected.{key}"] = projection(outputs[f"{self.projected_layers[key]}.hidden"])
        if self.with_logits:
            outputs.update(head_outputs(self.student.cls, hidden, slots, self.reads))
        return outputs


def _side(outputs: dict[str, Tensor], layer: int | None, heads: int, hidden_key: str | None = None) -> Side:
    return Side(
        query=outputs.get(f"{layer}.query"),
        key=outputs.get(f"{layer}.key"),
        value=outputs.get(f"{layer}.value"),
        hidden=outputs.get(hidden_key) if hidden_key in outputs else outputs.get(f"{layer}.hidden"),
        logits=outputs.get("logits"),
        num_heads=heads,
        token_logits=outputs.get("token_logits"),
    )


def term_losses(
    terms: list[LossTerm],
    student_outputs: dict[str, Tensor],
    teacher_outputs: dict[str, Tensor],
    masks: Masks,
    student_heads: int,
    teacher_heads: int,
) -> list[Tensor]:
    """Each term's (unweighted) loss, in the order of `terms`."""
    return [
        LOSSES[term.name](
            _side(student_outputs, term.student_layer, student_heads, f"projected.{index}"),
            _side(teacher_outputs, term.teacher_layer, teacher_heads),
            masks,
            **term.params,
        )
        for index, term in enumerate(terms)
    ]
