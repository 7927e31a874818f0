"""The one exception `pipeline.tokenize` turns into a usage error (exit code 2, no traceback)."""
from __future__ import annotations


class TokenizeError(ValueError):
    """The inputs or options cannot produce a tokenizer; the message says what to change."""
