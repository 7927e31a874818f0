import json
import lzma

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.seed_clean import clean as seed_clean
from bench.common import NSMC_PATH
from pipeline.sample_corpus import sample_records
from tests.clean_oracle import oracle_clean
from transforms.clean import CleanOptions, allowed_code_points, clean_batch, clean_text


@pytest.mark.parametrize("raw, cleaned", [
    ("ㅋㅋㅋㅋㅋ 웃기네요", "ㅋㅋ 웃기네요"),
    ("ㅋㅋㅋ 세 번은 그대로", "ㅋㅋㅋ 세 번은 그대로"),
    ("ㅠㅠㅠㅠㅠㅠ", "ㅠㅠ"),
    ("10000원 냈어요", "100원 냈어요"),  # the seed's own quirk
    ("기사 https://news.example.co.kr/a?id=1 보세요", "기사 보세요"),
    ("링크 http://www.naver.com 끝", "링크 끝"),
    ("좋아요 😂👍 최고", "좋아요 😂👍 최고"),
    ("❤️ 하트", "❤️ 하트"),
    ("韓國 정부", "정부"),
    ("한국어 日本語のテキスト 섞임", "한국어 섞임"),
    ("가 Привет мир 나", "가 나"),
    ("  앞뒤   공백\t탭  ", "앞뒤 공백 탭"),
    ("가격은 ％ · ∼ (괄호) 유지", "가격은 ％ · ∼ (괄호) 유지"),
    ("「따옴표」", "따옴표"),
    ("ㄱㄴㄷ ㅏㅑ", "ㄱㄴㄷ ㅏㅑ"),
    ("aaaa bbbbbbb", "aa bb"),
    ("", ""),
])
def test_clean_rules(raw, cleaned):
    assert clean_text(raw) == cleaned
    assert clean_batch(["앞 글", raw, "뒤 글"]) == ["앞 글", cleaned, "뒤 글"]
    assert oracle_clean(raw) == cleaned
    assert seed_clean(raw) == cleaned


def test_allowed_ranges_cover_the_seed_set():
    ranges = allowed_code_points()
    assert ranges == sorted(ranges)
    assert all(high + 1 < next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))  # merged
    allowed = lambda code: any(low <= code <= high for low, high in ranges)  # noqa: E731
    assert allowed(ord("가")) and allowed(ord("힣")) and allowed(ord("ㄱ")) and allowed(ord("ㅣ"))
    assert not allowed(ord("ㆍ")) and not allowed(ord("韓")) and not allowed(0x80)
    assert allowed(0x200D) and allowed(0xFE0F)  # ZWJ and variation selector occur in emoji sequences


def test_sample_corpus_matches_oracle_and_seed():
    texts = [record["text"] for record in sample_records()]
    assert len(texts) > 3000
    expected = [oracle_clean(text) for text in texts]
    assert clean_batch(texts) == expected
    assert [clean_text(text) for text in texts] == expected
    assert [seed_clean(text) for text in texts] == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("ㅋㅎㅠ가나다힣韓國abc1 0\t\n.!?😂❤️\u200d\ufe0f/:hptsw") + [
    "http://", "https://www.", ".com", "ㅋㅋㅋㅋ", "\x85", "\u3000", "\u2028", "\x1f"]), max_size=40).map("".join))
def test_clean_equals_oracle_and_seed_on_generated_text(text):
    assert clean_text(text) == oracle_clean(text) == seed_clean(text)
    assert clean_batch([text, text + "ㅋㅋㅋㅋ", "ㅋㅋ" + text]) == [clean_text(t) for t in (text, text + "ㅋㅋㅋㅋ", "ㅋㅋ" + text)]


@pytest.mark.nsmc
@pytest.mark.skipif(not NSMC_PATH.exists(), reason="NSMC sample absent")
def test_nsmc_matches_seed_and_oracle():
    with lzma.open(NSMC_PATH, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    seed = [seed_clean(t) for t in texts]
    assert [clean_text(t) for t in texts] == seed
    assert [c for i in range(0, len(texts), 20000) for c in clean_batch(texts[i:i + 20000])] == seed
    assert all(clean_text(t) == oracle_clean(t) for t in texts[::10])


@pytest.mark.parametrize("options, raw, cleaned", [
    (CleanOptions(keep_digit_runs=True), "10000원 ㅋㅋㅋㅋ", "10000원 ㅋㅋ"),
    (CleanOptions(keep_hanja=True), "韓國 정부 日本", "韓國 정부 日本"),
    (CleanOptions(nfc=True), "\u1100\u1161\u11a8 먹자", "각 먹자"),  # conjoining jamo -> syllable
    (CleanOptions(), "\u1100\u1161\u11a8 먹자", "먹자"),
])
def test_opt_in_options(options, raw, cleaned):
    assert clean_text(raw, options) == cleaned
    assert clean_batch([raw, "ㅋㅋㅋㅋ"], options) == [cleaned, "ㅋㅋ"]


def test_empty_batch():
    assert clean_batch([]) == []
    assert clean_batch(["", " "]) == ["", ""]
