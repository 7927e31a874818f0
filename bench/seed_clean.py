"""The seed's clean() as KcBERT published it (seed 004), with emoji 2.x's EMOJI_DATA.

Kept verbatim as the reference for tests and as the baseline of the clean benchmark.
"""
import re

import emoji
from soynlp.normalizer import repeat_normalize

emojis = "".join(emoji.EMOJI_DATA.keys())
pattern = re.compile(f"[^ .,?!/@$%~％·∼()\x00-\x7Fㄱ-ㅣ가-힣{emojis}]+")
url_pattern = re.compile(
    r"https?:\/\/(www\.)?[-a-zA-Z0-9@:%._\+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b([-a-zA-Z0-9()@:%_\+.~#?&//=]*)"
)


def clean(x):
    x = pattern.sub(" ", x)
    x = url_pattern.sub("", x)
    x = x.strip()
    x = repeat_normalize(x, num_repeats=2)
    return x
