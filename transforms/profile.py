"""Profiles of the corpus for `pipeline.report`: pure, engine-free functions that return Counters.

They are meant to run inside the stages, on the batch a stage already holds, so that a
report never has to re-read a 70 GB corpus: their tallies are whole counts with string keys,
which add up across batches and workers like every other count of a stage (Beam counters,
`counts.json`) and land in stats.json through `stats_section`. Until the stages call them,
`pipeline.report` calls the same functions on a sample of the outputs and says so on the page.

- `length_histogram` / `length_tally`: text lengths (characters) in fixed, log-spaced
  buckets. The edges never depend on the data, so histograms of different batches, workers
  and runs add up and compare.
- `clean_rule_changes` / `clean_change_tally`: which rule of the clean (transforms.clean)
  changed how many texts, measured by applying the rules one at a time; the last state
  equals `clean_text`, which a test checks.
- `stats_section`: the profile keys of a run's summed tally, as stats.json's `profile`.
- `month_counts`, `token_lengths`, `split_words`: records per month, vocabulary entry
  lengths, and the frequent words a vocabulary cuts into many pieces.
"""
from __future__ import annotations

import bisect
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import numpy as np

from transforms.clean import (DISALLOWED_RUN, DISALLOWED_RUN_KEEPING_HANJA, REPEATED_NON_DIGIT_WORD_CHAR,
                              REPEATED_WORD_CHAR, SEED, URL_PATTERN, CleanOptions)

# Lower edges of the length buckets, in characters: 0, then 1-2-5 steps per decade up to 1M.
# Bucket `e` holds the lengths from `e` up to (not including) the next edge.
LENGTH_EDGES = (0,) + tuple(step * 10**power for power in range(7) for step in (1, 2, 5) if step * 10**power <= 10**6)
LENGTH_BEFORE = "length_before_"  # + edge: cleaned texts before the length filter
LENGTH_AFTER = "length_after_"  # + edge: texts that passed the length filter
CLEAN_SAMPLE = "clean_sample_"  # + rule (or "texts"): sampled texts, and how many each rule changed
PREFIXES = (LENGTH_BEFORE, LENGTH_AFTER, CLEAN_SAMPLE)  # every tally key of this module starts with one
CLEAN_SAMPLE_EVERY = 100  # one text in this many is profiled for the clean (the rest cost nothing)
# The clean's rules in the order transforms.clean applies them; "changed" is any change at all.
CLEAN_RULES = ("nfc", "disallowed_characters", "urls", "repeats", "whitespace")
ISO_MONTH = re.compile(r"^(\d{4})-(\d{2})")


def length_bucket(length: int) -> int:
    """The lower edge of the bucket that holds `length`."""
    return LENGTH_EDGES[bisect.bisect_right(LENGTH_EDGES, length) - 1]


def length_histogram(lengths: Iterable[int]) -> Counter:
    """{bucket lower edge: how many lengths fall in it} (see LENGTH_EDGES)."""
    return Counter(length_bucket(length) for length in lengths)


def length_tally(texts: Iterable[str], prefix: str) -> Counter:
    """The length histogram of texts as tally keys, `prefix + edge` (e.g. `length_before_10`).

    Vectorised (one searchsorted over the batch): it runs on every text of pipeline.run.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64)
    buckets = np.searchsorted(np.asarray(LENGTH_EDGES), lengths, side="right") - 1
    counts = np.bincount(buckets, minlength=len(LENGTH_EDGES))
    return Counter({f"{prefix}{LENGTH_EDGES[index]}": int(n) for index, n in enumerate(counts) if n})


def clean_steps(text: str, options: CleanOptions = SEED) -> list[tuple[str, str]]:
    """(rule, text after it) for each rule of the clean, in transforms.clean's order.

    The last text is `clean_text(text, options)`. The seed's strip (step 3) is folded into
    "whitespace": no rule in between can be changed by it.
    """
    steps = []
    if options.nfc:
        text = unicodedata.normalize("NFC", text)
        steps.append(("nfc", text))
    text = (DISALLOWED_RUN_KEEPING_HANJA if options.keep_hanja else DISALLOWED_RUN).sub(" ", text)
    steps.append(("disallowed_characters", text))
    steps.append(("urls", URL_PATTERN.sub("", text) if "http" in text else text))
    repeated = REPEATED_NON_DIGIT_WORD_CHAR if options.keep_digit_runs else REPEATED_WORD_CHAR
    steps.append(("repeats", repeated.sub(r"\1\1", steps[-1][1])))
    steps.append(("whitespace", " ".join(steps[-1][1].split())))
    return steps


def clean_rule_changes(raw_texts: Iterable[str], options: CleanOptions = SEED) -> Counter:
    """How many texts each rule of the clean changed: {"texts": n, "changed": n, rule: n, ...}.

    "disallowed_characters" counts texts in which a run of disallowed characters became a
    space (even a run of one, such as a tab); "whitespace" counts texts whose spacing the
    final collapse and strip changed.
    """
    counts: Counter = Counter()
    for raw in raw_texts:
        counts["texts"] += 1
        before = raw
        for rule, after in clean_steps(raw, options):
            counts[rule] += after != before
            before = after
        counts["changed"] += before != raw
    return counts


def clean_change_tally(raw_texts: list[str], options: CleanOptions = SEED, every: int = CLEAN_SAMPLE_EVERY
                       ) -> Counter:
    """`clean_rule_changes` of every `every`-th text of a batch, as tally keys `clean_sample_<rule>`.

    A fixed stride keeps it deterministic (a batch always holds the same lines) and its cost
    at 1/`every` of the clean's.
    """
    changes = clean_rule_changes(raw_texts[::every], options)
    return Counter({f"{CLEAN_SAMPLE}{key}": n for key, n in changes.items() if n})


def stats_section(counts: dict) -> dict:
    """The profile keys of a run's summed tally as stats.json's `profile` (empty dict: none were counted).

    {"length_before": {edge: n}, "length_after": {edge: n}, "length_edges": [...],
     "clean_sample": {"every": k, "texts": n, "changed": n, rule: n}}; edges as strings
    (JSON keys), in ascending order.
    """
    section: dict = {}
    for name, prefix in (("length_before", LENGTH_BEFORE), ("length_after", LENGTH_AFTER)):
        found = {int(key[len(prefix):]): n for key, n in counts.items() if key.startswith(prefix) and n}
        if found:
            section[name] = {str(edge): found[edge] for edge in sorted(found)}
    if section:
        section["length_edges"] = list(LENGTH_EDGES)
    clean = {key[len(CLEAN_SAMPLE):]: n for key, n in counts.items() if key.startswith(CLEAN_SAMPLE)}
    if clean:
        section["clean_sample"] = {"every": CLEAN_SAMPLE_EVERY, "texts": clean.get("texts", 0),
                                   "changed": clean.get("changed", 0),
                                   **{rule: clean.get(rule, 0) for rule in CLEAN_RULES}}
    return section


def without_profile(tally: dict) -> Counter:
    """The tally without this module's keys: the drop reasons and file counts alone (tests compare those)."""
    return Counter({key: n for key, n in tally.items() if not key.startswith(PREFIXES)})


def month_of(value: object) -> str | None:
    """'YYYY-MM' of an ISO date or timestamp string (or a date/datetime), else None."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = getattr(value, "isoformat", lambda: "")()
    match = ISO_MONTH.match(value)
    return f"{match.group(1)}-{match.group(2)}" if match and 1 <= int(match.group(2)) <= 12 else None


def month_counts(values: Iterable[object]) -> Counter:
    """{'YYYY-MM': records}; values that are not dates count under 'unknown'."""
    return Counter(month_of(value) or "unknown" for value in values)


def token_lengths(vocabulary: Iterable[str]) -> Counter:
    """{characters: entries} of a WordPiece vocabulary, `##` not counted, special and [unusedN] entries left out."""
    lengths: Counter = Counter()
    for token in vocabulary:
        if token.startswith("[") and token.endswith("]"):
            continue
        lengths[len(token[2:] if token.startswith("##") else token)] += 1
    return lengths


def split_words(tokenizer, texts: Iterable[str], min_pieces: int = 3, top: int = 20) -> list[dict]:
    """The `top` most frequent words that `tokenizer` (a tokenizers.Tokenizer) cuts into >= min_pieces pieces.

    A word is what the tokenizer's own normalizer and pre-tokenizer make of the text (for
    BERT: split at whitespace and punctuation), so `좋다!!` is three words and only WordPiece's
    cuts count as pieces. Counted over `texts` (a sample: the caller bounds it), each
    distinct word encoded once. Returns [{"word", "count", "pieces": [token, ...]}], most
    frequent first, ties by word.
    """
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    frequency: Counter = Counter()
    for text in texts:
        text = normalizer.normalize_str(text) if normalizer is not None else text
        if pre_tokenizer is not None:
            frequency.update(word for word, _ in pre_tokenizer.pre_tokenize_str(text))
        else:
            frequency.update(text.split())
    words = sorted(frequency)
    encodings = tokenizer.encode_batch([[word] for word in words], is_pretokenized=True, add_special_tokens=False)
    split = [{"word": word, "count": frequency[word], "pieces": encoding.tokens}
             for word, encoding in zip(words, encodings) if len(encoding.tokens) >= min_pieces]
    split.sort(key=lambda row: (-row["count"], row["word"]))
    return split[:top]
