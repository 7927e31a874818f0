"""The KcBERT `clean()` (seed 004), exactly, and opt-in improvements.

The seed builds its allowed-character class by joining every key of `emoji.UNICODE_EMOJI`;
that dict is gone from emoji 2.x, so the set is taken from `emoji.EMOJI_DATA` (every code
point of every emoji sequence). The class is compiled as sorted ranges instead of the
seed's thousands of repeated characters, and two shortcuts skip work the seed always does:
the URL pattern needs "http", and `repeat_normalize`'s whitespace collapse + strip equals
`" ".join(text.split())` (both use Python's Unicode whitespace). Tests pin the result to a
character-by-character oracle and to the seed function itself.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import emoji

ALLOWED_PUNCTUATION = " .,?!/@$%~％·∼()"
ASCII_RANGE = ("\x00", "\x7f")
COMPATIBILITY_JAMO_RANGE = ("ㄱ", "ㅣ")  # U+3131–U+3163
HANGUL_SYLLABLE_RANGE = ("가", "힣")  # U+AC00–U+D7A3
HANJA_RANGES = (("\u3400", "\u4dbf"), ("\u4e00", "\u9fff"), ("\uf900", "\ufaff"))

URL_PATTERN = re.compile(
    r"https?:\/\/(www\.)?[-a-zA-Z0-9@:%._\+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b([-a-zA-Z0-9()@:%_\+.~#?&//=]*)"
)
REPEATED_WORD_CHAR = re.compile(r"(\w)\1{3,}")
# The seed's rule minus digits: `10000` stays `10000` (opt-in `keep_digit_runs`).
REPEATED_NON_DIGIT_WORD_CHAR = re.compile(r"([^\W\d])\1{3,}")


@lru_cache(maxsize=None)
def emoji_code_points() -> frozenset[str]:
    """Every code point that occurs in any emoji sequence of the installed emoji package."""
    return frozenset("".join(emoji.EMOJI_DATA))


def allowed_code_points(keep_hanja: bool = False) -> list[tuple[int, int]]:
    """The allowed set of step 1 as sorted, merged, inclusive code-point ranges."""
    ranges = [tuple(map(ord, r)) for r in (ASCII_RANGE, COMPATIBILITY_JAMO_RANGE, HANGUL_SYLLABLE_RANGE)]
    ranges += [(ord(c), ord(c)) for c in ALLOWED_PUNCTUATION]
    ranges += [(ord(c), ord(c)) for c in emoji_code_points()]
    if keep_hanja:
        ranges += [tuple(map(ord, r)) for r in HANJA_RANGES]
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [(low, high) for low, high in merged]


def _disallowed_run_pattern(keep_hanja: bool) -> re.Pattern[str]:
    def escape(code: int) -> str:
        return f"\\U{code:08x}"

    body = "".join(
        escape(low) if low == high else f"{escape(low)}-{escape(high)}"
        for low, high in allowed_code_points(keep_hanja)
    )
    return re.compile(f"[^{body}]+")


DISALLOWED_RUN = _disallowed_run_pattern(keep_hanja=False)


def clean_text(text: str) -> str:
    """KcBERT's clean(): disallowed runs -> one space, URLs removed, repeats -> 2, spaces collapsed."""
    text = DISALLOWED_RUN.sub(" ", text)
    if "http" in text:
        text = URL_PATTERN.sub("", text)
    # The seed strips here; no whitespace can take part in a repeat, so the final strip covers it.
    text = REPEATED_WORD_CHAR.sub(r"\1\1", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class CleanOptions:
    """Documented, opt-in departures from the seed. All False is the seed's clean exactly."""

    nfc: bool = False  # NFC-normalise first, so decomposed jamo sequences become syllables
    keep_digit_runs: bool = False  # do not turn 10000 into 100
    keep_hanja: bool = False  # keep CJK ideographs instead of replacing them with a space

    @property
    def is_seed(self) -> bool:
        return not (self.nfc or self.keep_digit_runs or self.keep_hanja)


def make_cleaner(options: CleanOptions = CleanOptions()) -> Callable[[str], str]:
    """The cleaning function for these options; the seed's `clean_text` when none is set."""
    if options.is_seed:
        return clean_text
    disallowed = _disallowed_run_pattern(options.keep_hanja) if options.keep_hanja else DISALLOWED_RUN
    repeated = REPEATED_NON_DIGIT_WORD_CHAR if options.keep_digit_runs else REPEATED_WORD_CHAR

    def clean(text: str) -> str:
        if options.nfc:
            text = unicodedata.normalize("NFC", text)
        text = disallowed.sub(" ", text)
        if "http" in text:
            text = URL_PATTERN.sub("", text)
        text = repeated.sub(r"\1\1", text)
        return " ".join(text.split())

    return clean
