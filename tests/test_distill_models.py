"""Teacher/student plumbing: layer-selection init, teacher truncation, Q/K/V hooks, vocabulary and config checks."""
from __future__ import annotations

import json

import pytest
import torch
from test_distill_fixtures import build_teacher, build_world
from transformers import BertConfig, BertForMaskedLM

from distill.attention import allowed_pairs, attention_bias, row_layout
from distill.configs import DistillConfig, TermSettings, objective_terms, student_config_dict, validate
from distill.losses import relation_log_probs
from distill.models import (
    CapturingStudent,
    LayerCapture,
    StopForward,
    Teacher,
    encode,
    VocabularyMismatch,
    check_vocabulary,
    init_from_teacher,
    load_teacher,
)
from distill.train import main as train_main

torch.set_num_threads(1)


def row_inputs(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(additive attention mask, position ids) of rows taken whole, as the models take them."""
    segments, positions = row_layout(torch.where(mask, ids, torch.zeros_like(ids)), pad_id=0)
    return attention_bias(allowed_pairs(segments), torch.float32), positions


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("distill_models"))


def make_config(teacher: BertConfig, objective: str, student: str = "distil-3l", layer_map=None, init=None,
                relation_heads: int = 4) -> DistillConfig:
    student_dict = student_config_dict(student, teacher, teacher.vocab_size, 0)
    return DistillConfig(
        objective=objective,
        student=student_dict,
        terms=objective_terms(objective, teacher.num_hidden_layers, student_dict["num_hidden_layers"], layer_map,
                              TermSettings(relation_heads, 2.0, soft_target_positions="masked"), {}),
        init_from_teacher_layers=init,
        mlm_probability=0.15,
        teacher_layers=teacher.num_hidden_layers,
        teacher_hidden_size=teacher.hidden_size,
    )


def test_init_from_teacher_copies_the_chosen_layers_embeddings_and_head(world):
    teacher, head_trained = load_teacher(str(world["teacher"]))
    assert head_trained
    config = make_config(teacher.config, "distilbert", init=[0, 2, 3])
    validate(config, teacher.config)
    torch.manual_seed(1)
    student = BertForMaskedLM(config.student_config())
    init_from_teacher(student, teacher, [0, 2, 3])
    for student_index, teacher_index in enumerate([0, 2, 3]):
        s_state = student.bert.encoder.layer[student_index].state_dict()
        t_state = teacher.bert.encoder.layer[teacher_index].state_dict()
        assert s_state.keys() == t_state.keys()
        for name in s_state:
            assert torch.equal(s_state[name], t_state[name]), name
        other = teacher.bert.encoder.layer[1].state_dict()
        assert not torch.equal(s_state["attention.self.query.weight"], other["attention.self.query.weight"])
    for name, tensor in teacher.bert.embeddings.state_dict().items():
        assert torch.equal(student.bert.embeddings.state_dict()[name], tensor), name
    assert torch.equal(student.cls.predictions.transform.dense.weight, teacher.cls.predictions.transform.dense.weight)
    assert torch.equal(student.cls.predictions.bias, teacher.cls.predictions.bias)
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight


def test_teacher_runs_only_the_layers_the_losses_need(world):
    full, _ = load_teacher(str(world["teacher"]))
    reference, _ = load_teacher(str(world["teacher"]))
    config = make_config(full.config, "minilm", student="minilm-23m", layer_map=[(1, -1)], relation_heads=4)
    student_dict = {**config.student, "num_attention_heads": 4}  # the minilm objective pairs heads one to one
    config = DistillConfig(**{**config.__dict__, "student": student_dict})
    teacher = Teacher(full, config)
    assert len(teacher.bert.encoder.layer) == 2 and teacher.head is None
    ids = torch.randint(5, 800, (2, 12))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 8:] = False
    feed_forward_calls = []
    teacher.bert.encoder.layer[1].intermediate.register_forward_hook(lambda *_: feed_forward_calls.append(1))
    captured = teacher(ids, *row_inputs(ids, mask), None)
    assert sorted(captured) == ["1.key", "1.query", "1.value"]
    assert feed_forward_calls == []  # the pass stops once layer 1's V is computed
    probe = LayerCapture(reference.bert, {1: {"query", "key", "value"}})
    with torch.no_grad():
        hidden, probed = probe.run(reference.bert, ids, *row_inputs(ids, mask))
    assert hidden.shape == (2, 12, 64)
    assert probed.keys() == captured.keys()
    for key, tensor in probed.items():
        assert torch.equal(captured[key], tensor)
    logits_config = make_config(reference.config, "distilbert")
    assert len(Teacher(load_teacher(str(world["teacher"]))[0], logits_config).bert.encoder.layer) == 4


def test_hooked_query_key_give_the_attention_probabilities(world):
    """The distribution rebuilt from hooked Q and K equals what eager attention returns as output_attentions."""
    model, _ = load_teacher(str(world["teacher"]))
    eager = BertForMaskedLM.from_pretrained(str(world["teacher"]), attn_implementation="eager").eval()
    capture = LayerCapture(model.bert, {2: {"query", "key"}})
    ids = torch.randint(5, 800, (2, 10))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        _, captured = capture.run(model.bert, ids, *row_inputs(ids, mask))
        attentions = eager.bert(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[2]
    probs = relation_log_probs(captured["2.query"], captured["2.key"], 4, mask[:, None, :]).exp()
    real_queries = mask[:, None, :, None].expand_as(probs)  # padded query rows are no loss's concern
    assert torch.allclose(probs[real_queries], attentions[real_queries], atol=1e-5)


def test_minilm_student_stops_after_the_last_qkv_and_freezes_what_no_loss_reaches(world):
    """Every parameter left trainable gets a gradient (what DDP requires), nothing else is trainable."""
    teacher, _ = load_teacher(str(world["teacher"]))
    config = make_config(teacher.config, "minilm", student="distil-3l")
    student = CapturingStudent(BertForMaskedLM(config.student_config()), config)
    ids = torch.randint(5, 800, (2, 12))
    outputs = student(ids, *row_inputs(ids, torch.ones_like(ids, dtype=torch.bool)))
    assert sorted(outputs) == ["2.key", "2.query", "2.value"]
    sum(tensor.sum() for tensor in outputs.values()).backward()
    trainable = {name for name, p in student.named_parameters() if p.requires_grad}
    with_grad = {name for name, p in student.named_parameters() if p.grad is not None}
    assert trainable == with_grad
    frozen = {name for name, p in student.named_parameters() if not p.requires_grad}
    assert "student.bert.encoder.layer.2.intermediate.dense.weight" in frozen
    assert "student.bert.encoder.layer.2.attention.self.value.weight" in trainable
    assert "student.cls.predictions.transform.dense.weight" in frozen
    assert not any(name.startswith("student.bert.encoder.layer.1.") for name in frozen)


def test_student_captures_and_projects_for_hidden_cosine(world):
    """The projection to the teacher's width is linear without bias: projected = W h, written out."""
    teacher, _ = load_teacher(str(world["teacher"]))
    config = make_config(teacher.config, "distilbert", student="minilm-23m")
    student = CapturingStudent(BertForMaskedLM(config.student_config()), config)
    assert list(student.projections) == ["2"]  # term 2 is hidden_cosine, 384 -> 64
    assert [name for name, _ in student.projections.named_parameters()] == ["2.weight"]  # no bias to absorb the loss
    ids = torch.randint(5, 800, (2, 12))
    outputs = student(ids, *row_inputs(ids, torch.ones_like(ids, dtype=torch.bool)), torch.zeros(2, 3, dtype=torch.long))
    assert outputs["projected.2"].shape == (2, 12, 64)
    weight = student.projections["2"].weight
    hidden = outputs[f"{config.terms[2].student_layer}.hidden"]
    by_hand = torch.tensor([[[sum(weight[o, c].item() * hidden[b, i, c].item() for c in range(384)) for o in range(3)]
                             for i in range(2)] for b in range(1)])
    assert torch.allclose(outputs["projected.2"][:1, :2, :3], by_hand, atol=1e-4)
    assert outputs["logits"].shape == (2, 3, 800)


def test_vocabulary_checks():
    vocab = ["[PAD]", "[UNK]", "a", "b"]
    check_vocabulary("the teacher", 4, list(vocab), vocab)
    check_vocabulary("the teacher", 4, None, vocab)
    with pytest.raises(VocabularyMismatch, match="vocab_size is 5 but the shards' tokenizer has 4"):
        check_vocabulary("the teacher", 5, None, vocab)
    with pytest.raises(VocabularyMismatch, match="differs from the shards' at 2 ids, first at id 2"):
        check_vocabulary("the teacher", 4, ["[PAD]", "[UNK]", "b", "a"], vocab)


def test_train_refuses_a_teacher_with_another_vocabulary(world, tmp_path, capsys):
    other = build_teacher(tmp_path / "other", None, vocab_size=900)
    code = train_main(["--shards", str(world["shards"]), "--teacher", str(other), "--output", str(tmp_path / "out"),
                       "--max-steps", "1", "--loader-workers", "0"])
    assert code == 2
    assert "the teacher's vocab_size is 900 but the shards' tokenizer has 800 tokens" in capsys.readouterr().err
    swapped = build_teacher(tmp_path / "swapped", world["tokenizer"], vocab_size=800)
    lines = (swapped / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lines[10], lines[11] = lines[11], lines[10]
    (swapped / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (swapped / "tokenizer.json").unlink()  # the tokenizer is rebuilt from the swapped vocab.txt
    code = train_main(["--shards", str(world["shards"]), "--teacher", str(swapped), "--output", str(tmp_path / "out"),
                       "--max-steps", "1", "--loader-workers", "0"])
    assert code == 2
    assert "differs from the shards' at 2 ids, first at id 10" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "objective, student, change, message",
    [
        ("minilm", "minilm-23m", {}, "the teacher has 4 heads, the student 12"),
        ("minilmv2", "minilm-23m", {"relation_heads": 5}, "--relation-heads 5 does not divide"),
        ("minilmv2", "minilm-23m", {"layer_map": [(-1, 2)]}, "student layers after 2 get no loss"),
        ("distilbert", "minilm-23m", {"init": [0, 1, 2, 3, 0, 1]}, "hidden_size, num_attention_heads, intermediate_size"),
        ("distilbert", "distil-3l", {"init": [0, 1]}, "names 2 layers but the student has 3"),
    ],
)
def test_validate_refuses_configs_that_cannot_work(objective, student, change, message):
    teacher = BertConfig(vocab_size=800, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
    config = make_config(teacher, objective, student=student, layer_map=change.get("layer_map"), init=change.get("init"),
                         relation_heads=change.get("relation_heads", 4))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate(config, teacher)


def test_config_round_trips_through_json(world):
    teacher, _ = load_teacher(str(world["teacher"]))
    config = make_config(teacher.config, "minilmv2", student="minilm-23m", layer_map=[(2, 3), (3, 5)])
    assert DistillConfig.from_json(config.to_json()) == config
    assert config.term_labels()[:2] == ["query_relation_kl@2:3", "query_relation_kl@3:5"]
    assert config.teacher_depth() == 4
    assert json.loads(config.to_json())["terms"][0]["params"] == {"average": "sequence", "relation_heads": 4}


def packed_batch(world, rows: int = 6) -> dict:
    """Real packed rows of the sample-corpus shards holding several documents, with the document layout."""
    from distill.data import ShardBatches, open_shard_dir, open_split

    shards = open_shard_dir(world["shards"])
    ids = shards.special_ids
    batches = ShardBatches(open_split(shards, "train"), 256, pad_id=ids["pad"], repeat=False,
                           attention_scope="document", cls_id=ids["cls"], sep_id=ids["sep"])
    batch = next(iter(batches))
    several = torch.nonzero(batch["segments"].max(dim=1).values >= 1).flatten()[:rows]
    keys = ("input_ids", "segments", "position_ids")
    return {**{key: batch[key][several] for key in keys}, "cls": ids["cls"], "sep": ids["sep"]}


def documents_of(row: list[int], cls: int, sep: int, pad: int = 0) -> list[tuple[int, int, int]]:
    """(start, end, first position) of each document of a packed row, found by walking it: a
    document ends with its [SEP]; it starts at position 0 when it starts with [CLS], else at 1."""
    found, start = [], 0
    for index, token in enumerate(row):
        if token == pad:
            break
        if token == sep:
            found.append((start, index + 1, 0 if row[start] == cls else 1))
            start = index + 1
    return found


def test_document_scope_encodes_each_document_as_if_it_were_alone(world):
    """Teacher and student on packed rows with --attention-scope document: each document's hidden
    states and Q/K/V equal those of transformers' own forward of that document alone (no padding,
    positions restarting), within 1e-5."""
    batch = packed_batch(world)
    assert len(batch["input_ids"]) == 6 and (batch["segments"].max(dim=1).values >= 1).all()
    teacher, _ = load_teacher(str(world["teacher"]))
    reference, _ = load_teacher(str(world["teacher"]))
    config = make_config(teacher.config, "minilm", student="distil-3l", layer_map=[(3, 2)])
    student = CapturingStudent(BertForMaskedLM(config.student_config()), config).eval()
    wrapped = Teacher(teacher, config)
    bias = attention_bias(allowed_pairs(batch["segments"]), torch.float32)
    with torch.no_grad():
        packed = {"teacher": wrapped(batch["input_ids"], bias, batch["position_ids"], None),
                  "student": student(batch["input_ids"], bias, batch["position_ids"])}
        packed["teacher"]["last"] = encode(reference.bert, batch["input_ids"], bias, batch["position_ids"])
    probes = {"teacher": LayerCapture(reference.bert, {3: {"query", "key", "value"}}),
              "student": LayerCapture(student.student.bert, {2: {"query", "key", "value"}})}
    models = {"teacher": reference.bert, "student": student.student.bert}
    checked = 0
    for b, row in enumerate(batch["input_ids"].tolist()):
        for start, end, first in documents_of(row, batch["cls"], batch["sep"]):
            alone = torch.tensor([row[start:end]])
            positions = torch.arange(first, first + end - start)[None]
            for side in ("teacher", "student"):
                with torch.no_grad():  # transformers' own forward: one unpadded sequence, its own positions
                    try:
                        single = {"last": models[side](input_ids=alone, position_ids=positions).last_hidden_state}
                    except StopForward:  # the student's own hook cuts its pass after the last projection
                        single = {}
                single.update(probes[side]._store)
                probes[side]._store = {}
                assert single
                for key, tensor in single.items():
                    assert torch.allclose(packed[side][key][b, start:end], tensor[0], atol=1e-5), (side, key, b, start)
                    checked += 1
    assert checked > 20
