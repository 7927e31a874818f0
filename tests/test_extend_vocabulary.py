"""pipeline.tokenize --extend: base ids kept, the other vocabulary's tokens added, id map, casing, [unused] slots."""
from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline import tokenize
from test_distill_fixtures import english_texts, sample_texts, write_lines
from tokenizer_training.extend import EXTENSION_FILE, UNMAPPED, UNUSED, read_extension
from tokenizer_training.loading import load_tokenizer

NSMC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nsmc_reviews.jsonl.xz"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def run_cli(*argv: str) -> None:
    assert tokenize.main([*argv, "--quiet"]) == 0


def vocab(directory: Path) -> list[str]:
    return (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]


def korean_texts() -> list[str]:
    """The NSMC reviews when ../shared/data has them (the 30k vocabulary of the issue), else the sample corpus."""
    if NSMC.exists():
        with lzma.open(NSMC, "rt", encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle]
    return list(sample_texts())


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("texts")
    english = english_texts()
    korean = korean_texts()
    return {"ko": write_lines(root / "ko.txt", korean), "en": write_lines(root / "en.txt", english[::2]),
            "en_held_out": write_lines(root / "en_held_out.txt", english[1::2][:300]),
            "ko_held_out": write_lines(root / "ko_held_out.txt", korean[-300:])}


@pytest.fixture(scope="module")
def korean(tmp_path_factory, texts) -> Path:
    """Cased, 30,000 entries on NSMC (as pipeline.tokenize's benchmark), 1,200 on the sample corpus; 3 [unused]."""
    output = tmp_path_factory.mktemp("ko") / "tok"
    size = "30000" if NSMC.exists() else "1200"
    run_cli("--input", str(texts["ko"]), "--format", "text", "--output", str(output), "--vocab-size", size,
            "--unused-tokens", "3")
    return output


@pytest.fixture(scope="module")
def english(tmp_path_factory, texts) -> Path:
    """Lower-cased, as bert-base-uncased."""
    output = tmp_path_factory.mktemp("en") / "tok"
    run_cli("--input", str(texts["en"]), "--format", "text", "--output", str(output), "--vocab-size", "2000",
            "--lowercase")
    return output


@pytest.fixture(scope="module")
def extended(tmp_path_factory, korean, english, texts) -> Path:
    output = tmp_path_factory.mktemp("koen") / "tok"
    run_cli("--extend", str(korean), "--add-vocab-from", str(english), "--output", str(output),
            "--eval-text", f"en={texts['en_held_out']}", "--eval-text", f"ko={texts['ko_held_out']}")
    return output


def test_every_base_id_is_kept_and_the_missing_tokens_follow(korean, english, extended):
    base, other, new = vocab(korean), vocab(english), vocab(extended)
    if NSMC.exists():
        assert len(base) == 30000
    assert new[:len(base)] == base
    missing = [token for token in other if token not in set(base) and not UNUSED.match(token)]
    assert new[len(base):] == missing
    assert len(missing) > 500  # an English vocabulary mostly absent from a Korean one
    report = read_extension(str(extended))
    assert report["added"] == [[token, len(base) + index] for index, token in enumerate(missing)]
    assert report["vocab_size"] == len(new) and report["filled_unused"] == []


def test_id_map_sends_every_token_to_the_same_string(korean, english, extended):
    other, new = vocab(english), vocab(extended)
    id_map = read_extension(str(extended))["id_map"]
    assert len(id_map) == len(other)
    for token, new_id in zip(other, id_map):
        assert new[new_id] == token  # the same string in the new vocabulary: specials included (same names)
    assert "##ing" in other and new[id_map[other.index("##ing")]] == "##ing"  # a continuation stays one


def test_transformers_and_the_project_loader_read_it(korean, english, extended):
    fast = AutoTokenizer.from_pretrained(str(extended))
    assert fast.is_fast and len(fast) == len(vocab(extended))
    loaded = load_tokenizer(str(extended))  # checks AutoTokenizer's ids against tokenizer.json on probes
    assert loaded.vocab == vocab(extended)
    english_ids = fast("the parser returns an object")["input_ids"]
    tokens = fast.convert_ids_to_tokens(english_ids)
    assert tokens[0] == "[CLS]" and "returns" in tokens and "object" in tokens
    assert min(english_ids[1:-1]) >= 0 and "[UNK]" not in tokens


def test_report_compares_before_and_after(extended):
    report = read_extension(str(extended))
    en, ko = report["evaluation"]["en"], report["evaluation"]["ko"]
    assert en["after"]["fertility"] < en["before"]["fertility"]  # English words need fewer pieces
    assert en["before"]["words"] == en["after"]["words"] > 1000
    assert ko["after"]["unk_rate"] <= ko["before"]["unk_rate"]
    assert report["base"]["fingerprint"].startswith("sha256:") and report["base"]["lowercase"] is False
    assert report["source"]["lowercase"] is True
    assert any("lower-case text only" in warning for warning in report["warnings"])


def test_base_fingerprint_is_the_shards_fingerprint_of_the_base(korean, extended):
    from transforms.token_shards import tokenizer_fingerprint

    report = read_extension(str(extended))
    assert report["base"]["fingerprint"] == tokenizer_fingerprint(str(korean))
    assert report["fingerprint"] == tokenizer_fingerprint(str(extended))


def test_fill_unused_puts_the_first_new_tokens_into_the_slots(korean, english, tmp_path):
    output = tmp_path / "tok"
    run_cli("--extend", str(korean), "--add-vocab-from", str(english), "--output", str(output), "--fill-unused")
    base, new = vocab(korean), vocab(output)
    slots = [index for index, token in enumerate(base) if UNUSED.match(token)]
    assert slots == [5, 6, 7]
    report = read_extension(str(output))
    added = [token for token, _ in report["added"]]
    assert [new[index] for index in slots] == added[:3]
    assert new[len(base):] == added[3:]
    assert all(new[index] == base[index] for index in range(len(base)) if index not in slots)
    assert report["filled_unused"] == slots
    assert AutoTokenizer.from_pretrained(str(output)).convert_tokens_to_ids(added[0]) == 5


def test_a_lowercasing_base_maps_a_cased_vocabulary_onto_lower_case(texts, korean, tmp_path):
    lower = tmp_path / "lower"
    run_cli("--input", str(texts["ko"]), "--format", "text", "--output", str(lower), "--vocab-size", "4000",
            "--lowercase", "--limit", "3000")
    cased = tmp_path / "cased"
    run_cli("--input", str(texts["en"]), "--format", "text", "--output", str(cased), "--vocab-size", "2000")
    output = tmp_path / "tok"
    run_cli("--extend", str(lower), "--add-vocab-from", str(cased), "--output", str(output))
    other, new = vocab(cased), vocab(output)
    report = read_extension(str(output))
    assert all(token == token.lower() for token, _ in report["added"])
    assert report["merged"] > 0  # e.g. 'The' and 'the' share one new id
    for token, new_id in zip(other, report["id_map"]):
        if token not in SPECIALS:
            assert new_id != UNMAPPED and new[new_id] == token.lower()
    assert new[:len(vocab(lower))] == vocab(lower)


def test_clear_errors(capsys, korean, english, extended, tmp_path):
    def usage(*argv: str) -> str:
        assert tokenize.main([*argv, "--quiet"]) == 2
        return capsys.readouterr().err

    assert "--add-vocab-from OTHER_TOKENIZER" in usage("--extend", str(korean), "--output", str(tmp_path / "a"))
    assert "--vocab-size do(es) not apply" in usage("--extend", str(korean), "--add-vocab-from", str(english),
                                                   "--output", str(tmp_path / "a"), "--vocab-size", "10")
    assert "only apply with --extend" in usage("--input", "x.txt", "--add-vocab-from", str(english),
                                               "--output", str(tmp_path / "a"))
    assert "--input PATTERN" in usage("--output", str(tmp_path / "a"))
    assert "--overwrite" in usage("--extend", str(korean), "--add-vocab-from", str(english), "--output", str(extended))
    assert "no such directory" in usage("--extend", str(tmp_path / "none"), "--add-vocab-from", str(english),
                                        "--output", str(tmp_path / "b"))
    assert not (tmp_path / "b" / EXTENSION_FILE).exists()


def test_add_tokens_takes_the_words_that_save_the_most_tokens(korean, texts, tmp_path):
    """English words into the Korean vocabulary: the most frequent multi-piece words first."""
    output = tmp_path / "tok"
    run_cli("--extend", str(korean), "--add-tokens", "200", "--input", str(texts["en"]), "--format", "text",
            "--eval-fraction", "0.1", "--output", str(output), "--fill-unused")
    report = read_extension(str(output))
    new, old = vocab(output), vocab(korean)
    assert len(report["added"]) == 200 and len(new) == len(old) + 197  # three went into [unused0..2]
    assert new[5:8] == [token for token, _ in report["added"][:3]]
    assert all(new[index] == old[index] for index in range(len(old)) if index not in (5, 6, 7))
    base = AutoTokenizer.from_pretrained(str(korean))
    best = report["selection"]["best"]
    assert [gain for _, gain in best] == sorted((gain for _, gain in best), reverse=True)
    for word, gain in best[:5]:
        pieces = len(base.tokenize(word))
        assert pieces > 1 and gain % (pieces - 1) == 0  # occurrences x (pieces - 1)
    held_out = report["evaluation"]["held_out"]
    assert held_out["after"]["fertility"] < 0.9 * held_out["before"]["fertility"]
    assert report["selection"]["held_out"] > 0 and report["source"]["source"] == "corpus"
    assert AutoTokenizer.from_pretrained(str(output)).tokenize(best[0][0]) == [best[0][0]]


def test_add_tokens_errors(capsys, korean, tmp_path):
    def usage(*argv: str) -> str:
        assert tokenize.main([*argv, "--quiet"]) == 2
        return capsys.readouterr().err

    assert "needs --input" in usage("--extend", str(korean), "--add-tokens", "5", "--output", str(tmp_path / "a"))
    assert "one of them" in usage("--extend", str(korean), "--add-tokens", "5", "--add-vocab-from", str(korean),
                                  "--input", "x.txt", "--output", str(tmp_path / "a"))
    assert "--vocab-size do(es) not apply" in usage("--extend", str(korean), "--add-tokens", "5", "--input", "x.txt",
                                                   "--vocab-size", "9", "--output", str(tmp_path / "a"))
