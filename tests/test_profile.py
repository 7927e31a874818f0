"""transforms.profile (issue 19): the pure counts a stage can tally for pipeline.report."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from pipeline.sample_corpus import sample_records
from transforms import profile
from transforms.clean import CleanOptions, clean_text


def test_length_edges_are_fixed_and_log_spaced():
    edges = profile.LENGTH_EDGES
    assert edges[:8] == (0, 1, 2, 5, 10, 20, 50, 100) and edges[-1] == 1_000_000
    assert list(edges) == sorted(set(edges))


@pytest.mark.parametrize("length, bucket", [(0, 0), (1, 1), (2, 2), (4, 2), (5, 5), (9, 5), (10, 10), (19, 10),
                                            (20, 20), (999, 500), (1000, 1000), (5_000_000, 1_000_000)])
def test_length_bucket(length, bucket):
    assert profile.length_bucket(length) == bucket


def test_length_histogram_and_tally_add_up_across_batches():
    texts = ["", "a", "abcd", "x" * 10, "y" * 10, "z" * 150]
    assert profile.length_histogram(map(len, texts)) == Counter({0: 1, 1: 1, 2: 1, 10: 2, 100: 1})
    whole = profile.length_tally(texts, profile.LENGTH_BEFORE)
    assert whole == profile.length_tally(texts[:3], profile.LENGTH_BEFORE) + profile.length_tally(
        texts[3:], profile.LENGTH_BEFORE)
    assert whole["length_before_10"] == 2 and sum(whole.values()) == len(texts)


@pytest.mark.parametrize("options", [CleanOptions(), CleanOptions(nfc=True, keep_digit_runs=True, keep_hanja=True)])
def test_clean_steps_end_in_clean_text(options):
    rng = random.Random(0)
    texts = [record["text"] for record in sample_records() if isinstance(record.get("text"), str)]
    texts += ["ㅋㅋㅋㅋㅋ 10000원 https://example.com/a?b=1 大韓 \t end", "\u1100\u1161 decomposed", ""]
    for text in rng.sample(texts, 400) + texts[-3:]:
        assert profile.clean_steps(text, options)[-1][1] == clean_text(text, options)


def test_clean_rule_changes_counts_each_rule_once_per_text():
    texts = ["그냥 평범한 문장입니다",  # nothing changes
             "좋아요ㅋㅋㅋㅋㅋ",  # repeats
             "링크 https://example.com/x 보세요",  # URL, then the double space
             "「인용」 문장",  # disallowed characters (and the space they leave at the start)
             "  앞뒤 공백  "]  # whitespace only
    counts = profile.clean_rule_changes(texts)
    assert counts["texts"] == 5
    assert counts["repeats"] == 1 and counts["urls"] == 1 and counts["disallowed_characters"] == 1
    assert counts["whitespace"] == 3 and counts["changed"] == 4 and counts["nfc"] == 0
    assert counts["changed"] == sum(clean_text(text) != text for text in texts)


def test_clean_change_tally_samples_every_nth_text():
    texts = ["ㅋㅋㅋㅋㅋ"] * 250
    tally = profile.clean_change_tally(texts, every=100)
    assert tally == Counter({"clean_sample_texts": 3, "clean_sample_repeats": 3, "clean_sample_changed": 3})


def test_stats_section_from_a_summed_tally():
    counts = Counter({"input_records": 9, "length_before_10": 4, "length_before_2": 1, "length_after_10": 4})
    counts += profile.clean_change_tally(["ㅋㅋㅋㅋㅋ", "ok"], every=1)
    section = profile.stats_section(counts)
    assert section["length_before"] == {"2": 1, "10": 4} and list(section["length_before"]) == ["2", "10"]
    assert section["length_after"] == {"10": 4} and section["length_edges"] == list(profile.LENGTH_EDGES)
    assert section["clean_sample"]["texts"] == 2 and section["clean_sample"]["repeats"] == 1
    assert profile.stats_section(Counter({"input_records": 3})) == {}
    assert profile.without_profile(counts) == Counter({"input_records": 9})


def test_months():
    assert profile.month_of("2019-08-15") == "2019-08" and profile.month_of("2019-13-01") is None
    assert profile.month_of(None) is None and profile.month_of("yesterday") is None
    assert profile.month_counts(["2019-01-02", "2019-01-30T10:00", "", None]) == Counter(
        {"2019-01": 2, "unknown": 2})


def test_token_lengths_leave_out_special_tokens_and_hashes():
    assert profile.token_lengths(["[PAD]", "[unused0]", "가", "##나다", "abc"]) == Counter({1: 1, 2: 1, 3: 1})


def test_split_words_uses_the_tokenizers_own_words():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {token: index for index, token in enumerate(
        ["[UNK]", "!", "가", "##나", "##다", "나", "다", "좋", "##라"])}
    tokenizer = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rows = profile.split_words(tokenizer, ["가나다!! 가나다", "가나다라 좋", "나"], min_pieces=3)
    assert rows == [{"word": "가나다", "count": 2, "pieces": ["가", "##나", "##다"]},
                    {"word": "가나다라", "count": 1, "pieces": ["가", "##나", "##다", "##라"]}]
