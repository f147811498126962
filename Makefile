# Two commands do all the set-up: `make demo` and `make test`. Both are idempotent:
# the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build pip takes from this machine's disk (pinned in pyproject).
	$(PY) -m pip install -q -e ".[dev,embeddings,dask]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/driftloop demo

test: install browser
	$(PY) -m pytest -q

# Debian's chromium for the dashboard test (headless). Installed where apt-get
# can run as root; elsewhere that one test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the headless-browser test will skip"

clean:
	rm -rf .driftloop .pytest_cache
