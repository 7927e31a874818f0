"""The fine-tuning tasks of the seeds' results table, as a registry of small pure pieces.

A `Task` is composed of a reader (file -> examples, `distill.tasks.readers`), a featurizer
(examples -> token ids, `distill.tasks.features`), a head (which transformers AutoModel class and how
its outputs become predictions, `distill.finetune`), a metric (`distill.tasks.metrics`) and the
default hyper-parameters of the public reference (KoELECTRA's fine-tuning configs,
monologg/KoELECTRA `finetune/config/<task>/koelectra-base-v3.json`). Nothing here imports torch.

See docs/evaluate.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable

from distill.tasks import readers

HEADS = ("sequence", "regression", "token", "qa")


@dataclass(frozen=True)
class HyperParameters:
    """How one task is fine-tuned; defaults are KoELECTRA's common settings."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 128
    weight_decay: float = 0.0
    warmup_proportion: float = 0.0
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    max_examples: int | None = None  # a seeded sample of at most N training examples
    max_eval_examples: int | None = None  # a seeded sample of at most N evaluation examples
    doc_stride: int = 128  # QA only
    max_query_length: int = 64  # QA only
    max_answer_length: int = 30  # QA only
    n_best: int = 20  # QA only

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, values: dict) -> HyperParameters:
        return replace(self, **values)


HYPERPARAMETER_NAMES = tuple(f.name for f in fields(HyperParameters))
QA_ONLY = ("doc_stride", "max_query_length", "max_answer_length", "n_best")


@dataclass(frozen=True)
class Task:
    name: str
    title: str  # the dataset's name
    reader: Callable[[str], readers.Dataset]
    head: str  # one of HEADS
    primary: tuple[str, ...]  # metric names the table column shows (EM/F1: two)
    column: str  # the table column header, as in the seeds' tables
    defaults: HyperParameters = field(default_factory=HyperParameters)
    source: str = ""  # where the defaults come from
    formats: str = ""  # the file format, one line
    splits: str = ""  # the files the seeds' tables train and score on


KOELECTRA = "monologg/KoELECTRA finetune/config/{}/koelectra-base-v3.json"

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("nsmc", "NSMC", readers.read_nsmc, "sequence", ("accuracy",), "NSMC<br>(Acc)",
             HyperParameters(epochs=10, batch_size=32, lr=5e-5), KOELECTRA.format("nsmc"),
             "ratings TSV (id, document, label) or JSON lines with text and rating/label",
             "ratings_train.txt -> ratings_test.txt"),
        Task("naver-ner", "Naver NER", readers.read_naver_ner, "token", ("f1",), "Naver NER<br>(F1)",
             HyperParameters(epochs=20, batch_size=32, lr=5e-5), KOELECTRA.format("naver-ner"),
             "words<TAB>tags a line, tags TYPE-B / TYPE-I / O", "train.tsv -> test.tsv (KoELECTRA's split)"),
        Task("paws", "PAWS-X (Korean)", readers.read_paws, "sequence", ("accuracy",), "PAWS<br>(Acc)",
             HyperParameters(epochs=15, batch_size=32, lr=3e-5), KOELECTRA.format("paws"),
             "TSV id, sentence1, sentence2, label", "translated_train.tsv -> test_2k.tsv"),
        Task("kornli", "KorNLI", readers.read_kornli, "sequence", ("accuracy",), "KorNLI<br>(Acc)",
             HyperParameters(epochs=15, batch_size=64, lr=5e-5), KOELECTRA.format("kornli"),
             "TSV sentence1, sentence2, gold_label", "multinli.train.ko.tsv -> xnli.test.ko.tsv"),
        Task("korsts", "KorSTS", readers.read_korsts, "regression", ("spearman",), "KorSTS<br>(Spearman)",
             HyperParameters(epochs=10, batch_size=32, lr=5e-5), KOELECTRA.format("korsts"),
             "TSV genre, filename, year, id, score, sentence1, sentence2", "sts-train.tsv -> sts-test.tsv"),
        Task("question-pair", "Question Pair", readers.read_question_pair, "sequence", ("accuracy",),
             "Question Pair<br>(Acc)", HyperParameters(epochs=10, batch_size=32, lr=5e-5),
             KOELECTRA.format("question-pair"), "TSV question1, question2, is_duplicate", "train.tsv -> test.tsv"),
        Task("korquad", "KorQuAD 1.0", readers.read_korquad, "qa", ("korquad_exact_match", "korquad_f1"),
             "KorQuaD<br>(Dev)<br>(EM/F1)",
             HyperParameters(epochs=7, batch_size=8, lr=5e-5, max_length=512, eval_batch_size=32),
             KOELECTRA.format("korquad"), "SQuAD v1.1 JSON", "KorQuAD_v1.0_train.json -> KorQuAD_v1.0_dev.json"),
        Task("hate-speech", "Korean Hate Speech", readers.read_hate_speech, "sequence", ("macro_f1",),
             "Korean-Hate-Speech<br>(Dev)<br>(F1)", HyperParameters(epochs=10, batch_size=32, lr=5e-5),
             KOELECTRA.format("hate-speech"), "TSV title, comment, bias, hate (none/offensive/hate)",
             "train.tsv -> val.tsv (the dev set)"),
    )
}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(name, TASK_NAMES, n=1)
        raise ValueError(f"unknown task {name!r}" + (f"; did you mean {close[0]}?" if close else "")
                         + f" (tasks: {', '.join(TASK_NAMES)})")
    return TASKS[name]
