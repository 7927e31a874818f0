"""tests_xla/: the `--device xla` path on XLA's CPU backend, run by `make test-xla` in .venv-xla
(torch 2.9.0 + torch_xla 2.9.0). Kept apart from `make test` (pyproject's testpaths is tests/),
whose environment has no torch_xla; the modules here skip when torch_xla cannot be imported."""
from __future__ import annotations

import sys
from pathlib import Path

# The distillation fixtures (tiny tokenizer, shards, teacher) are tests/test_distill_fixtures.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
