"""The fine-tuning tasks' pure pieces (distill.tasks): metrics against reference implementations on
fixed predictions, readers on each distributed format, featurizers, suites and the table row."""
from __future__ import annotations

import json
import lzma
import random
import re
import string
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from test_distill_fixtures import build_tokenizer_dir, sample_texts

from distill.tasks import TASK_NAMES, TASKS, HyperParameters, get_task, metrics, table
from distill.tasks.features import (IGNORE, Specials, TaskTokenizer, answer_tokens, best_spans, pair, qa_features,
                                    single, tagged, text_features, token_features, truncate_pair, windows)
from distill.tasks.readers import (NER_LABELS, QAExample, TaggedExample, TaskFormatError, read_hate_speech,
                                   read_korquad, read_kornli, read_korsts, read_naver_ner, read_nsmc, read_paws,
                                   read_question_pair)
from distill.tasks.suite import SuiteError, parse_suite

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "korean-benchmarks"
needs_benchmarks = pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="../shared/data/korean-benchmarks is absent")


# ---------------------------------------------------------------- metrics: entities


def test_entities_follow_conlleval_chunking_with_suffix_tags():
    assert metrics.entities(["PER-B", "PER-I", "O", "LOC-B"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert metrics.entities(["O", "PER-I", "PER-I", "LOC-I"]) == {("PER", 1, 2), ("LOC", 3, 3)}  # I after O starts one
    assert metrics.entities(["PER-B", "PER-B"]) == {("PER", 0, 0), ("PER", 1, 1)}
    assert metrics.entities(["PER-B", "ORG-I", "ORG-I"]) == {("PER", 0, 0), ("ORG", 1, 2)}  # a type change ends one
    assert metrics.entities(["O", "O"]) == set()


def test_entity_f1_on_hand_made_sequences():
    gold = [["PER-B", "PER-I", "O", "LOC-B"], ["O", "ORG-B", "ORG-I", "ORG-I"], ["DAT-B", "DAT-I", "O"]]
    predicted = [["PER-B", "PER-I", "O", "LOC-I"], ["O", "ORG-I", "ORG-I", "O"], ["DAT-B", "DAT-B", "O"]]
    # gold: PER 0-1, LOC 3, ORG 1-3, DAT 0-1 (4); predicted: PER 0-1, LOC 3 (both right), ORG 1-2, DAT 0, DAT 1 (5)
    scores = metrics.entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 5)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert metrics.entity_scores(gold, gold)["f1"] == 1.0
    assert metrics.entity_scores(gold, [["O"] * len(s) for s in gold]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_entity_f1_matches_seqeval_when_installed():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "O", "O", *NER_LABELS[1:7]]
    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 4))]
        predicted = [[rng.choice(tags) for _ in sentence] for sentence in gold]
        ours = metrics.entity_scores(gold, predicted)
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, predicted, suffix=True), abs=1e-12)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, predicted, suffix=True), abs=1e-12)


# ---------------------------------------------------------------- metrics: QA (official semantics, written again)


def squad_reference(text: str) -> str:
    """SQuAD v1.1's evaluate-v1.1.py normalize_answer, as published."""
    def remove_articles(t):
        return re.sub(r"\b(a|an|the)\b", " ", t)

    def white_space_fix(t):
        return " ".join(t.split())

    def remove_punc(t):
        exclude = set(string.punctuation)
        return "".join(ch for ch in t if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(text.lower())))


def korquad_reference(text: str) -> str:
    """KorQuAD 1.0's evaluate-v1.0.py normalize_answer, as published."""
    for symbol in ["'", '"', "《", "》", "<", ">", "〈", "〉", "\\(", "\\)", "‘", "’"]:
        text = re.sub(symbol, " ", text)
    exclude = set(string.punctuation)
    text = "".join(ch for ch in text.lower() if ch not in exclude)
    return " ".join(text.split())


def korquad_reference_f1(prediction: str, gold: str) -> float:
    p = [c for token in korquad_reference(prediction).split() for c in token]
    g = [c for token in korquad_reference(gold).split() for c in token]
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


STRINGS = ["The Eiffel Tower", "eiffel tower.", "《해리 포터》", "해리 포터", "1,000원", "  서울(특별시)  종로구 ",
           "‘an’ apple", "A theory", "그는 \"안녕\"이라고 했다", "<b>태그</b>", "〈논어〉편", "Theatre the end"]


def test_normalisations_match_the_official_scripts():
    for text in STRINGS:
        assert metrics.squad_normalize(text) == squad_reference(text), text
        assert metrics.korquad_normalize(text) == korquad_reference(text), text
    for prediction in STRINGS:
        for gold in STRINGS:
            assert metrics.korquad_f1(prediction, gold) == pytest.approx(korquad_reference_f1(prediction, gold))


def test_qa_scores_on_fixed_predictions():
    answers = {"q1": ["The Eiffel Tower"], "q2": ["《해리 포터》"], "q3": ["종로구", "서울 종로구"], "q4": ["1,000원"],
               "q5": ["답"]}
    predictions = {"q1": "eiffel tower.", "q2": "해리 포터", "q3": "서울특별시 종로구", "q4": "1000원"}  # q5 unanswered
    scores = metrics.qa_scores(answers, predictions)
    # KorQuAD: q1 EM 0, char F1 2*11/25 (eiffeltower in theeiffeltower); q2 EM 1; q3 best of 종로구 (6/11) and
    # 서울종로구 (5 of 8 and 5 of 5: 10/13); q4 EM 1; q5 0.
    assert scores["korquad_exact_match"] == pytest.approx(2 / 5)
    assert scores["korquad_f1"] == pytest.approx((22 / 25 + 1 + 10 / 13 + 1 + 0) / 5)
    # SQuAD: q1 EM 1 (articles go); q2 0 (《 》 are not ASCII punctuation); q3 tokens: 종로구 -> 2/3,
    # 서울 종로구 -> 1 common of 2 and 2: 1/2; q4 EM 1.
    assert scores["squad_exact_match"] == pytest.approx(2 / 5)
    assert scores["squad_f1"] == pytest.approx((1 + 0 + 2 / 3 + 1 + 0) / 5)


# ---------------------------------------------------------------- metrics: classification and correlation


def test_correlations_are_scipys_and_undefined_for_constants():
    gold, predicted = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    scores = metrics.correlations(gold, predicted)
    assert scores["spearman"] == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert scores["pearson"] == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 200).astype(float)  # many ties
    predicted = gold + rng.normal(0, 2, 200)
    scores = metrics.correlations(gold, predicted)
    assert scores["spearman"] == pytest.approx(spearmanr(predicted, gold)[0], abs=1e-12)
    assert scores["pearson"] == pytest.approx(pearsonr(predicted, gold)[0], abs=1e-12)
    assert metrics.correlations(gold, np.full(200, 2.5)) == {"pearson": None, "spearman": None}


def test_accuracy_and_macro_f1():
    gold, predicted = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    assert metrics.accuracy(gold, predicted) == pytest.approx(4 / 6)
    assert metrics.macro_f1(gold, predicted) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert metrics.macro_f1([0, 1, 2], [0, 0, 0]) == pytest.approx((2 / 4 + 0 + 0) / 3)


def test_macro_f1_matches_scikit_learn_when_installed():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(50):
        gold, predicted = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
        expected = sklearn.f1_score(gold, predicted, average="macro", zero_division=0)
        assert metrics.macro_f1(gold, predicted) == pytest.approx(expected, abs=1e-12)


def test_mean_and_sample_standard_deviation():
    means, stds = metrics.mean_and_std([{"a": 1.0, "b": None}, {"a": 2.0, "b": 0.5}, {"a": 4.0, "b": 0.5}])
    assert means == {"a": pytest.approx(7 / 3), "b": None}
    assert stds["a"] == pytest.approx((42 / 18) ** 0.5)
    assert metrics.mean_and_std([{"a": 0.5}]) == ({"a": 0.5}, {"a": 0.0})


# ---------------------------------------------------------------- readers


def write(path: Path, text: str, xz: bool = False) -> Path:
    if xz:
        path.write_bytes(lzma.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_pair_and_regression_readers(tmp_path):
    kornli = read_kornli(write(tmp_path / "nli.tsv.xz", "sentence1\tsentence2\tgold_label\n그가 \"왔다\t그는 왔다\t"
                                                         "entailment\n비가 온다\t맑다\tcontradiction\n", xz=True))
    assert [(e.text, e.pair, e.label) for e in kornli.examples] == [('그가 "왔다', "그는 왔다", 1), ("비가 온다", "맑다", 0)]
    assert kornli.labels == ("contradiction", "entailment", "neutral") and kornli.counts == {"read": 2, "kept": 2}
    paws = read_paws(write(tmp_path / "paws.tsv", "id\tsentence1\tsentence2\tlabel\n1\t가\t나\t1\n2\t\t나\t0\n"))
    assert [(e.text, e.label) for e in paws.examples] == [("가", 1)] and paws.counts["dropped_empty"] == 1
    pairs = read_question_pair(write(tmp_path / "qp.tsv", "question1\tquestion2\tis_duplicate\n뭐야?\t무엇?\t1\n"))
    assert pairs.examples[0].label == 1 and pairs.examples[0].pair == "무엇?"
    sts = read_korsts(write(tmp_path / "sts.tsv", "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
                                                 "main\tx\t2012\t0001\t3.800\t가\t나\n"))
    assert (sts.examples[0].label, sts.examples[0].text, sts.examples[0].pair, sts.labels) == (3.8, "가", "나", None)


def test_nsmc_hate_speech_and_ner_readers(tmp_path):
    ratings = read_nsmc(write(tmp_path / "ratings_test.txt", "id\tdocument\tlabel\n1\t재밌다\t1\n2\t\t0\n"))
    assert [(e.text, e.label) for e in ratings.examples] == [("재밌다", 1), ("", 0)]  # empty documents kept, as KoELECTRA
    lines = [{"text": "최고", "rating": 10}, {"text": "보통", "rating": 6}, {"text": "별로", "label": 0}]
    jsonl = read_nsmc(write(tmp_path / "r.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines) + "{x\n"))
    assert [(e.text, e.label) for e in jsonl.examples] == [("최고", 1), ("별로", 0)]
    assert jsonl.counts == {"read": 4, "kept": 2, "dropped_unlabelled": 1, "dropped_malformed": 1}
    hate = read_hate_speech(write(tmp_path / "hate.tsv", 'title\tcomment\tbias\thate\n"""따옴표"" 제목, [종합]"\t좋네요\t'
                                                         "none\tnone\n제목\t노래\"대단한 너\"였어요\tgender\thate\n"))
    assert [(e.text, e.label) for e in hate.examples] == [("좋네요", 0), ('노래"대단한 너"였어요', 2)]
    ner = read_naver_ner(write(tmp_path / "ner.tsv", "이순신 장군 .\tPER-B CVL-B O\n\n레이 앨런 출전\tPER-B PER-I O\n"))
    assert ner.examples[1].words == ("레이", "앨런", "출전")
    assert [NER_LABELS[t] for t in ner.examples[1].tags] == ["PER-B", "PER-I", "O"] and ner.counts["kept"] == 2


def test_korquad_reader(tmp_path):
    data = {"version": "KorQuAD_v1.0_dev", "data": [{"title": "t", "paragraphs": [{"context": "서울은 한국의 수도이다.",
            "qas": [{"id": "1", "question": "한국의 수도는?", "answers": [{"text": "서울", "answer_start": 0},
                                                                      {"text": "서울은", "answer_start": 0}]}]}]}]}
    dataset = read_korquad(write(tmp_path / "dev.json", json.dumps(data, ensure_ascii=False)))
    assert dataset.examples == [QAExample("1", "한국의 수도는?", "서울은 한국의 수도이다.", (("서울", 0), ("서울은", 0)))]


@pytest.mark.parametrize(("reader", "content", "message"), [
    (read_kornli, "premise\thypothesis\tlabel\na\tb\tentailment\n", "expected sentence1<TAB>sentence2<TAB>gold_label"),
    (read_kornli, "sentence1\tsentence2\tgold_label\na\tb\tmaybe\n", "gold_label 'maybe' is none of"),
    (read_korsts, "sentence1\tsentence2\tgold_label\na\tb\tneutral\n", "not the KorSTS header"),
    (read_korsts, "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\nm\tx\t1\t1\t7\ta\tb\n", "not a number from 0 to 5"),
    (read_paws, "id\tsentence1\tsentence2\tlabel\n1\ta\n", "line 2 has 2 fields"),
    (read_nsmc, "text,label\n좋다,1\n", "NSMC expects the ratings TSV"),
    (read_naver_ner, "이순신 장군\tPER-B\n", "2 words and 1 tags"),
    (read_naver_ner, "이순신\tB-PER\n", "B/I go after the type, as PER-B"),
    (read_naver_ner, "sentence\ttags\twhat\n", "Naver NER expects one sentence a line"),
    (read_hate_speech, "comments\tcontain_gender_bias\tbias\thate\na\tFalse\tnone\tnone\n", "missing title, comment"),
    (read_korquad, "[1, 2]", "expected SQuAD v1.1 JSON"),
])
def test_readers_refuse_other_formats_with_the_reason(tmp_path, reader, content, message):
    with pytest.raises(TaskFormatError, match=re.escape(message)):
        reader(write(tmp_path / "input.tsv", content))


@needs_benchmarks
def test_readers_read_the_included_sets_as_distributed():
    sts = read_korsts(BENCHMARKS / "korsts" / "sts-train.tsv.xz")
    assert sts.counts == {"read": 5749, "kept": 5749} and sts.examples[0].label == 5.0
    nli = read_kornli(BENCHMARKS / "kornli" / "xnli.dev.ko.tsv.xz")
    assert len(nli.examples) == 2490 and Counter(e.label for e in nli.examples) == {0: 830, 1: 830, 2: 830}
    paws = read_paws(BENCHMARKS / "paws" / "dev_2k.tsv.xz")
    assert paws.counts["read"] == 2000 and set(e.label for e in paws.examples) == {0, 1}


# ---------------------------------------------------------------- featurizers

SPECIALS = Specials(cls=2, sep=3, pad=0, unk=1)


def test_single_and_pair_layouts_truncate_like_transformers():
    assert single([10, 11, 12], 4, SPECIALS) == ([2, 10, 11, 3], [0, 0, 0, 0])
    assert truncate_pair(list(range(10)), [7, 8, 9, 10], 8) == (list(range(4)), [7, 8, 9, 10])
    assert truncate_pair([1, 2, 3], list(range(10)), 6) == ([1, 2, 3], [0, 1, 2])
    a, b = truncate_pair(list(range(10)), list(range(10)), 7)  # equal lengths: the second side first
    assert (len(a), len(b)) == (4, 3)
    assert pair([5, 6], [7], 16, SPECIALS) == ([2, 5, 6, 3, 7, 3], [0, 0, 0, 0, 1, 1])


def test_tagged_words_label_their_first_piece_and_get_unk_when_empty():
    ids, word_ids = [5, 6, 7, 8], [0, 0, 2, 2]  # word 1 yields no token
    tokens, labels, words = tagged(ids, word_ids, (1, 3, 5), 16, SPECIALS)
    assert tokens == [2, 5, 6, 1, 7, 8, 3]
    assert labels == [IGNORE, 1, IGNORE, 3, 5, IGNORE, IGNORE]
    assert words == [-1, 0, -1, 1, 2, -1, -1]
    tokens, labels, words = tagged(ids, word_ids, (1, 3, 5), 5, SPECIALS)  # cut after 3 pieces
    assert tokens == [2, 5, 6, 1, 3] and words == [-1, 0, -1, 1, -1]


def test_windows_step_by_the_stride_until_the_end():
    assert windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert windows(3, 4, 2) == [(0, 3)]
    assert windows(9, 4, 8) == [(0, 4), (4, 8), (8, 9)]  # the stride never skips tokens
    with pytest.raises(ValueError, match="no room for context"):
        windows(5, 0, 2)
    assert answer_tokens([(0, 2), (3, 5), (5, 7)], 3, 7) == (1, 2)
    assert answer_tokens([(0, 2), (3, 5)], 8, 9) is None


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return TaskTokenizer.of_model(str(build_tokenizer_dir(tmp_path_factory.mktemp("tok"), sample_texts())))


def test_features_with_a_real_tokenizer(tokenizer):
    from distill.tasks.readers import TextExample

    features = text_features([TextExample("이 영화 최고였어요", 1, "감독 응원합니다")], tokenizer, 64, regression=False)
    ids = features.input_ids[0].tolist()
    assert ids[0] == tokenizer.specials.cls and ids.count(tokenizer.specials.sep) == 2
    assert features.token_type_ids[0].tolist() == [0] * (ids.index(tokenizer.specials.sep) + 1) + \
        [1] * (len(ids) - ids.index(tokenizer.specials.sep) - 1)
    tagged_features = token_features([TaggedExample(("대통령은", "세금", "문제"), (1, 0, 3))], tokenizer, 64)
    labels = tagged_features.targets["labels"][0]
    assert [int(x) for x in labels[labels != IGNORE]] == [1, 0, 3]
    assert tagged_features.extra["word_index"][0][labels != IGNORE].tolist() == [0, 1, 2]


def test_qa_windows_point_at_the_answer_and_decode_back_to_it(tokenizer):
    filler = " ".join(sample_texts()[:6])
    context = f"{filler} 정답은 최저임금 입니다. {filler}"
    start = context.index("최저임금")
    example = QAExample("q", "정답은 무엇입니까?", context, (("최저임금", start),))
    features = qa_features([example], tokenizer, max_length=48, doc_stride=16, max_query_length=8, train=True)
    assert len(features) > 3
    hits = 0
    for offsets, s, e in zip(features.extra["offsets"], features.targets["start_positions"],
                             features.targets["end_positions"]):
        if s:
            hits += 1
            assert context[offsets[s, 0] : offsets[e, 1]] == "최저임금"
    assert hits >= 1
    # decoding: the best start+end over every window, mapped back to the context's characters
    window = int(np.flatnonzero(features.targets["start_positions"])[-1])
    starts = [np.zeros(len(ids)) for ids in features.input_ids]
    ends = [np.zeros(len(ids)) for ids in features.input_ids]
    starts[window][features.targets["start_positions"][window]] = 5.0
    ends[window][features.targets["end_positions"][window]] = 5.0
    starts[0][0], ends[0][0] = 50.0, 50.0  # [CLS] is never an answer
    assert best_spans(starts, ends, features, [example]) == {"q": "최저임금"}


# ---------------------------------------------------------------- registry, suites and the table


def test_registry_matches_the_seeds_table_order():
    assert TASK_NAMES == ("nsmc", "naver-ner", "paws", "kornli", "korsts", "question-pair", "korquad", "hate-speech")
    assert TASKS["paws"].defaults.lr == 3e-5 and TASKS["kornli"].defaults.batch_size == 64
    assert TASKS["korquad"].defaults.max_length == 512 and TASKS["naver-ner"].defaults.epochs == 20
    with pytest.raises(ValueError, match="did you mean korsts"):
        get_task("kosts")


def test_suite_resolves_paths_and_precedence(tmp_path):
    data = {"name": "mine", "seeds": 2, "defaults": {"epochs": 2, "max_examples": 100},
            "tasks": [{"task": "korsts", "train": "sts/train.tsv", "eval": "/abs/dev.tsv", "epochs": 4},
                      {"task": "korquad", "train": "q.json", "eval": "q.json", "doc_stride": 64}]}
    suite = parse_suite(data, str(tmp_path), overrides={"max_examples": 50})
    assert (suite.name, suite.seeds) == ("mine", 2)
    sts, qa = suite.runs
    assert sts.train == str(tmp_path / "sts" / "train.tsv") and sts.eval == "/abs/dev.tsv"
    assert (sts.hyperparameters.epochs, sts.hyperparameters.max_examples, sts.hyperparameters.lr) == (4, 50, 5e-5)
    assert (qa.hyperparameters.epochs, qa.hyperparameters.doc_stride, qa.hyperparameters.batch_size) == (2, 64, 8)


@pytest.mark.parametrize(("data", "message"), [
    ({"tasks": []}, "'tasks' must be a non-empty list"),
    ({"tasks": [{"task": "kornli", "train": "a"}]}, "missing 'eval'"),
    ({"tasks": [{"task": "kornly", "train": "a", "eval": "b"}]}, "did you mean kornli?"),
    ({"tasks": [{"task": "kornli", "train": "a", "eval": "b", "epoch": 3}]}, "unknown key 'epoch'; did you mean 'epochs'?"),
    ({"tasks": [{"task": "kornli", "train": "a", "eval": "b", "lr": "fast"}]}, "lr must be a number"),
    ({"tasks": [{"task": "kornli", "train": "a", "eval": "b", "doc_stride": 64}]}, "apply to korquad only"),
    ({"tasks": [{"task": "nsmc", "train": "a", "eval": "b"}] * 2}, "appears twice"),
    ({"seeds": 0, "tasks": [{"task": "nsmc", "train": "a", "eval": "b"}]}, "seeds must be a positive integer"),
    ({"task": "nsmc"}, "unknown key 'task'; did you mean 'tasks'?"),
])
def test_suite_errors_say_where_and_why(data, message):
    with pytest.raises(SuiteError, match=re.escape(message)):
        parse_suite(data, "/base")


def test_table_row_in_the_seeds_layout():
    assert table.header().count("|") == table.separator().count("|") == len(TASKS) + 3
    result = {"runs": [{}, {}, {}], "primary": ["korquad_exact_match", "korquad_f1"],
              "mean": {"korquad_exact_match": 0.8266, "korquad_f1": 0.9162},
              "std": {"korquad_exact_match": 0.001, "korquad_f1": 0.0025}}
    kornli = {"runs": [{}], "primary": ["accuracy"], "mean": {"accuracy": 0.78}, "std": {"accuracy": 0.0}}
    row = table.row("KoMiniLM", {"korquad": result, "kornli": kornli}, 23_000_000)
    assert row == "| KoMiniLM | 23M | - | - | - | 78.00 | - | - | 82.66±0.10 / 91.62±0.25 | - |"
    assert HyperParameters().updated({"epochs": 2}).epochs == 2
