"""WordPiece vocabularies on HF tokenizers: streamed corpus reading, sampling, training, evaluation, tokenizer loading (docs/tokenize.md)."""
