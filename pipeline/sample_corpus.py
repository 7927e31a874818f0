"""The embedded sample corpus: realistic Korean news-comment-like JSON lines, generated.

`python -m pipeline.run` reads it when no `--input` is given, and the tests use its known
composition as a fixture. Generation is seeded and pure, so the corpus is identical on every
machine. It mixes distinct comments (built from clause pools so that two distinct comments
share at most one clause), exact duplicates (also ones that only become exact after
cleaning), planted near duplicates (one light edit of a long comment), very short lines,
laughter and ㅠㅠ runs, emoji, URLs, Hanja and other scripts, digits, and malformed lines.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import combinations
from pathlib import Path

from transforms.clean import clean_text

SUBJECTS = [
    "정부", "대통령", "국회의원들", "기자", "이 영화", "감독", "주연 배우", "우리 팀 선수들", "경찰", "회사 대표",
    "시청", "교육부", "야당", "여당", "검찰", "구단", "방송국", "아파트 관리소", "우리 동네 시장", "담임 선생님",
    "편의점 사장님", "택배 기사님", "의사 선생님들", "간호사분들", "소방관분들", "청년들", "어르신들", "학부모들",
    "이번 드라마", "그 가수", "신인 배우", "해설위원", "심판", "외국인 선수", "은행", "통신사", "배달앱", "카페 사장",
]
TOPICS = [
    "세금 문제", "집값", "최저임금", "출산율", "미세먼지", "교통 체증", "전기요금", "대학 입시", "군대 문제",
    "결말 부분", "연기력", "음악", "촬영 장소", "경기 운영", "판정", "선수 영입", "공약", "예산 집행", "물가",
    "청년 일자리", "부동산 정책", "기름값", "코로나 대책", "지하철 요금", "주차 문제", "층간소음", "배송 지연",
    "요금제", "시청률", "캐스팅", "연출", "대본", "편집", "광고", "댓글 여론", "환율", "금리", "수출 실적",
]
PREDICATES = [
    "진짜 너무하네요", "이해가 안 됩니다", "정신 좀 차렸으면 좋겠다", "응원합니다", "최고였어요", "실망이 큽니다",
    "말이 되냐", "다시 생각해봐야 한다", "고생 많으셨습니다", "이건 아니지", "기대 이상이었다", "왜 이렇게 됐을까",
    "책임져야 한다고 봅니다", "감동 받았어요", "웃음밖에 안 나온다", "어이가 없네", "잘 해결되길 바랍니다",
    "정말 대단하다", "누가 책임지나요", "앞으로가 더 걱정이다", "오랜만에 속이 시원하다", "납득이 안 간다",
    "설명이 필요해 보입니다", "그냥 넘어가면 안 된다", "눈물이 났어요", "한심하다 정말", "믿고 봅니다",
    "두고 보겠습니다", "제대로 하자", "이게 나라냐", "좋은 선택이었네요", "더 지켜봐야겠다",
]
ADVERBS = ["진짜", "정말", "완전", "너무", "솔직히", "아무리 봐도", "생각해보면", "요즘", "결국", "그래도", "역시"]
CONNECTORS = [",", ".", "..", "!", "?", " 그리고", " 근데", " 하지만", "!!"]
LAUGHTER = ["ㅋㅋㅋㅋㅋ", "ㅋㅋㅋ", "ㅎㅎㅎㅎ", "ㅠㅠㅠㅠㅠ", "ㅜㅜ", "ㄷㄷㄷㄷ", "ㅋㅋㅋㅋㅋㅋㅋㅋ", "하하하하하"]
EMOJI = ["😂", "👍", "❤️", "😡", "🙏", "🔥", "😭", "👏👏", "🤔", "🇰🇷"]
URLS = ["https://news.example.co.kr/article/12345", "http://www.example.com/view?id=77&page=2", "https://t.co/AbC123xyz"]
HANJA = ["韓國", "政府", "國會", "大統領", "經濟", "民主主義"]
FOREIGN = ["fake news", "LOL", "OMG", "팩트 check", "nice", "日本語", "Привет", "ok"]
DIGITS = ["10000원", "2024년", "3000만 원", "1등", "99.9%", "5000000", "24시간", "7번째"]
SHORT_LINES = ["ㅋㅋㅋ", "굿", "ㅇㅈ", "대박", "👍👍", "와..", "헐", "ㅠㅠ", "최고", "인정합니다", "ㄹㅇ", "ok", "?", "...", "1등"]
# Lines that become short or empty once Hanja and other scripts are removed.
FOREIGN_ONLY_LINES = ["日本語のコメントです", "大韓民國萬歲", "Привет как дела", "中国新闻评论", "ㅋ 日本"]


@dataclass
class SampleCorpus:
    """Raw JSON lines (bytes, some malformed) and what was planted in them."""

    lines: list[bytes]
    distinct_ids: list[str] = field(default_factory=list)
    exact_duplicate_of: dict[str, str] = field(default_factory=dict)  # id -> id of the copied comment
    near_duplicate_of: dict[str, str] = field(default_factory=dict)  # id -> id of the edited comment
    short_ids: list[str] = field(default_factory=list)
    malformed_lines: int = 0


def _with_particle(noun: str, rng: random.Random) -> str:
    """Attach a topic/subject particle that agrees with the final syllable (받침 or not)."""
    has_final_consonant = (ord(noun[-1]) - 0xAC00) % 28 != 0
    return noun + rng.choice(["", "도", "은" if has_final_consonant else "는", "이" if has_final_consonant else "가"])


def _clause(rng: random.Random) -> str:
    parts = [_with_particle(rng.choice(SUBJECTS), rng), rng.choice(TOPICS)]
    if rng.random() < 0.5:
        parts.insert(1, rng.choice(ADVERBS))
    parts.append(rng.choice(PREDICATES))
    return " ".join(parts)


def _decorate(text: str, rng: random.Random) -> str:
    """Add the noise real comments carry: laughter, emoji, URLs, Hanja, foreign words, digits."""
    roll = rng.random()
    if roll < 0.15:
        text += " " + rng.choice(LAUGHTER)
    elif roll < 0.25:
        text += " " + rng.choice(EMOJI)
    elif roll < 0.30:
        text += " " + rng.choice(URLS)
    elif roll < 0.35:
        text = rng.choice(HANJA) + " " + text
    elif roll < 0.42:
        text += " " + rng.choice(FOREIGN)
    elif roll < 0.50:
        text = text.replace(" ", " " + rng.choice(DIGITS) + " ", 1)
    return text


def _distinct_comments(count: int, rng: random.Random) -> list[str]:
    """Comments of 2-4 clauses; no two share a pair of clauses, so they are far from near duplicates."""
    seen_pairs: set[tuple[str, str]] = set()
    seen_clauses: set[str] = set()
    comments: list[str] = []
    while len(comments) < count:
        clauses = [_clause(rng) for _ in range(rng.choice([2, 2, 3, 3, 4]))]
        if len(set(clauses)) < len(clauses) or any(c in seen_clauses and rng.random() < 0.9 for c in clauses):
            continue
        pairs = {tuple(sorted(pair)) for pair in combinations(clauses, 2)}
        if pairs & seen_pairs:
            continue
        seen_pairs |= pairs
        seen_clauses.update(clauses)
        text = clauses[0] + "".join(rng.choice(CONNECTORS) + " " + clause for clause in clauses[1:])
        comments.append(_decorate(text, rng))
    return comments


def _light_edit(text: str, rng: random.Random) -> str:
    """One small edit of the kind reposted comments carry, visible after cleaning."""
    while clean_text(edited := _any_light_edit(text, rng)) == clean_text(text):
        pass
    return edited


def _any_light_edit(text: str, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return text + " " + rng.choice(["ㅋㅋ", "ㅠㅠ", "!!", "진짜"])
    if kind == 1:
        position = rng.randrange(len(text))
        return text[:position] + rng.choice("은는이가을를") + text[position + 1:]
    if kind == 2:
        position = rng.randrange(len(text))
        return text[:position] + text[position + 1:]
    return "ㄹㅇ " + text


def generate_sample(seed: int = 0, distinct: int = 2400, exact_duplicates: int = 300, near_duplicates: int = 300,
                    short: int = 200) -> SampleCorpus:
    """Generate the sample corpus; the same seed gives the same bytes."""
    rng = random.Random(seed)
    comments = _distinct_comments(distinct, rng)
    entries: list[tuple[str, str]] = [("distinct", text) for text in comments]  # (kind, text)
    origin: list[int | None] = [None] * len(entries)
    for _ in range(exact_duplicates):
        index = rng.randrange(distinct)
        text = comments[index]
        if rng.random() < 0.3:  # identical only after cleaning: extra spaces and removed symbols
            text = text.replace(" ", "  「」 ", 1)
        entries.append(("exact", text))
        origin.append(index)
    long_indices = [i for i, text in enumerate(comments) if len(text) >= 60 and not any(u in text for u in URLS)]
    for index in rng.sample(long_indices, min(near_duplicates, len(long_indices))):
        entries.append(("near", _light_edit(comments[index], rng)))
        origin.append(index)
    for _ in range(short):
        entries.append(("short", rng.choice(SHORT_LINES + FOREIGN_ONLY_LINES)))
        origin.append(None)

    order = list(range(len(entries)))
    rng.shuffle(order)
    start = date(2019, 1, 1)
    ids = {position: f"c{rank:06d}" for rank, position in enumerate(order)}
    corpus = SampleCorpus(lines=[])
    for rank, position in enumerate(order):
        kind, text = entries[position]
        record_id = ids[position]
        record = {"id": record_id, "date": (start + timedelta(days=rng.randrange(365))).isoformat(), "text": text}
        corpus.lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        if kind == "distinct":
            corpus.distinct_ids.append(record_id)
        elif kind == "exact":
            corpus.exact_duplicate_of[record_id] = ids[origin[position]]
        elif kind == "near":
            corpus.near_duplicate_of[record_id] = ids[origin[position]]
        else:
            corpus.short_ids.append(record_id)

    malformed = [
        b'{"id": "bad-json-1", "text": "\xeb\x8b\xab\xed\x9e\x88\xec\xa7\x80 \xec\x95\x8a\xec\x9d\x80 JSON"',
        b"[1, 2, 3]",
        b"12345",
        b'"just a string"',
        b'{"id": "no-text-1", "date": "2019-05-05"}',
        b'{"id": "null-text-1", "text": null}',
        b'{"id": "number-text-1", "text": 42}',
        b'{"id": "bad-utf8-1", "text": "\xed\x95\x9c\xea\xb5\xad\xff\xfe \xeb\x8c\x93\xea\xb8\x80"}',
        b"\xc3\x28 not utf-8 at all",
        b"",
        b"   ",
        b"{not json at all}",
    ]
    for offset, line in enumerate(malformed):
        corpus.lines.insert((offset * 397 + 11) % len(corpus.lines), line)
    corpus.malformed_lines = len(malformed)
    return corpus


def sample_records(seed: int = 0) -> list[dict]:
    """The well-formed records of the sample (id, date, raw text), in file order."""
    records = []
    for line in generate_sample(seed).lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            records.append(record)
    return records


def write_sample(path: Path, seed: int = 0) -> SampleCorpus:
    """Write the sample as a JSON-lines file (atomically) and return its composition."""
    corpus = generate_sample(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(b"\n".join(corpus.lines) + b"\n")
    partial.replace(path)
    return corpus
