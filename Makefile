# Every target runs inside .venv at the repository root.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: setup demo test test-xla bench clean-demo

setup: $(STAMP)

# torch==2.13.0 is the CPU build on local disk; an unpinned torch downloads GBs of CUDA.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[distill,test,report,spark]'
	touch $(STAMP)

# The sample corpus through the data stages: clean corpus, vocabulary, token shards, and the report page on them.
demo: setup
	$(PY) -m pipeline.run --output demo_output/corpus --keep-fields date --write-clusters --overwrite
	$(PY) -m pipeline.tokenize --input demo_output/corpus --output demo_output/tokenizer --vocab-size 1000 --stratify-by date:month --overwrite
	$(PY) -m pipeline.shard --input demo_output/corpus --tokenizer demo_output/tokenizer --output demo_output/shards --seq-len 128 --overwrite
	$(PY) -m pipeline.report demo_output/corpus demo_output/tokenizer demo_output/shards --output demo_output/report.html --overwrite
	@echo "report: open file://$(CURDIR)/demo_output/report.html in a browser"

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

# The --device xla path on XLA's CPU backend (docs/tpu.md), in its own virtualenv: torch_xla 2.9.0
# needs torch 2.9.0 exactly, PyPI's CUDA build (~7 GB; it imports without a GPU), installed in one
# resolve with the project so that nothing replaces that torch. tests_xla/ is not part of `make test`.
XLA_VENV := .venv-xla
XLA_STAMP := $(XLA_VENV)/.installed

$(XLA_STAMP): pyproject.toml
	python3 -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/pip install -q --upgrade pip
	$(XLA_VENV)/bin/pip install -q torch==2.9.0 torch_xla==2.9.0 -e '.[distill]' pytest pytest-xdist
	touch $(XLA_STAMP)

test-xla: $(XLA_STAMP)
	PJRT_DEVICE=CPU $(XLA_VENV)/bin/python -m pytest -q -n 2 tests_xla

bench: setup
	$(PY) -m bench.run_all
