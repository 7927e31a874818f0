"""An independent, character-by-character statement of the KcBERT clean rules (DESIGN.md)."""
import re

import emoji

URL = re.compile(r"https?://(www\.)?[-a-zA-Z0-9@:%._+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b([-a-zA-Z0-9()@:%_+.~#?&//=]*)")
PUNCTUATION = set(" .,?!/@$%~％·∼()")
EMOJI_CHARS = {ch for sequence in emoji.EMOJI_DATA for ch in sequence}


def allowed(ch: str) -> bool:
    code = ord(ch)
    return (code <= 0x7F or ch in PUNCTUATION or 0x3131 <= code <= 0x3163 or 0xAC00 <= code <= 0xD7A3
            or ch in EMOJI_CHARS)


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def oracle_clean(text: str) -> str:
    # 1. every maximal run of disallowed characters -> one space
    out, in_run = [], False
    for ch in text:
        if allowed(ch):
            out.append(ch)
            in_run = False
        elif not in_run:
            out.append(" ")
            in_run = True
    text = "".join(out)
    # 2. URLs removed (the rule is the pattern itself)
    text = URL.sub("", text)
    # 3. strip
    text = text.strip()
    # 4. a word character repeated 4+ times in a row -> 2 copies
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] == text[i]:
            j += 1
        run = j - i
        out.append(text[i] * (2 if run >= 4 and is_word_char(text[i]) else run))
        i = j
    text = "".join(out)
    # ... whitespace runs -> one space, strip
    words, current = [], []
    for ch in text:
        if ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return " ".join(words)
