# The README's two commands: `make run` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test venv system lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the local CPU wheel; an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[worker,dev]'
	# numba's kernels into its on-disk cache once, rather than at every new process's first step
	$(PY) -m worker.codecs.precompile
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Servers and the browser the test suite starts (throwaway instances on free ports).
system:
	@if ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server postgresql; \
	fi

run: venv
	$(VENV)/bin/slimpipe serve

test: venv system
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy slimpipe backend worker

clean:
	rm -rf $(VENV) var .pytest_cache
