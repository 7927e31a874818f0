"""The BERT special tokens and the tokenizer directory's file names: their one definition.

pipeline.tokenize writes these files and tokens (ids 0..4), pipeline.shard looks the tokens
up and copies the files, the token shards fingerprint the files, and distill reads them back:
all of them import the names from here, so the layout cannot drift between writer and
readers. The layout is `koforge-tokenizer/1` (docs/formats.md#tokenizer-directory-koforge-tokenizer1).
"""
from __future__ import annotations

import json

SPECIAL_TOKEN_ROLES = ("pad", "unk", "cls", "sep", "mask")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in the vocabularies we train
# The files that define how text becomes ids, in the order pipeline.tokenize writes them.
# tokenizer_report.json (statistics, timings) is not one: re-running the same training must
# not change the tokenizer's fingerprint.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_JSON = "tokenizer.json"
# Where a tokenizer directory may name its special tokens differently; a later file wins.
SPECIAL_TOKEN_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")


def special_token_names(files: dict[str, bytes]) -> dict[str, str]:
    """Role -> token name: the BERT names, unless the directory's config files (name -> bytes) say otherwise.

    transformers writes either `"sep_token": "[SEP]"` or `"sep_token": {"content": "[SEP]", ...}`.
    """
    names = dict(zip(SPECIAL_TOKEN_ROLES, BERT_SPECIAL_TOKENS))
    for config in SPECIAL_TOKEN_CONFIGS:
        if config not in files:
            continue
        mapping = json.loads(files[config].decode("utf-8"))
        for role in names:
            value = mapping.get(f"{role}_token")
            if value is not None:
                names[role] = value["content"] if isinstance(value, dict) else value
    return names
