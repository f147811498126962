# Two commands do all the set-up: `make demo` and `make test`. Both are idempotent:
# the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint constraints lock-serve clean browser

install: $(STAMP)

# pyproject.toml gives the ranges, constraints.txt the exact versions installed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build pip takes from the local wheel folder (pinned in pyproject).
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,embeddings,dask]"
	touch $(STAMP)

# Re-pin constraints.txt to what the virtual environment holds (after changing a range in
# pyproject.toml and installing); its header comment is kept.
constraints:
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^driftloop=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The web-facing dependencies (pyproject's `serve` extra and everything they pull in) at the
# versions of constraints.txt, with the sha256 of every file PyPI has for each (any platform):
# `pip install --require-hashes -r requirements-serve.lock` refuses a file that differs.
lock-serve: install
	$(PY) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve'], sep='\n')" > .serve.in
	$(VENV)/bin/uv pip compile .serve.in -c constraints.txt --generate-hashes --universal --python-version 3.11 \
	  --no-annotate --custom-compile-command "make lock-serve" -q -o requirements-serve.lock
	rm -f .serve.in

demo: install
	$(VENV)/bin/driftloop demo

test: install browser lint
	$(PY) -m pytest -q

# The shape of the code: the layer contract, lint and format, and the types of the core and services.
lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The tier to run while editing: no server (Prefect's API, mlflow or evidently ui), no browser,
# no PostgreSQL, nothing marked slow; a test file per worker process (each loads the whole
# stack, about 1 GB). `make test` (all of it) stays the CI command.
FAST_WORKERS ?= 2
test-fast: install lint
	$(PY) -m pytest -q -m "not slow and not postgres and not server and not browser" -n $(FAST_WORKERS) --dist loadfile

# Debian's chromium for the dashboard test (headless). Installed where apt-get
# can run as root; elsewhere that one test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the headless-browser test will skip"

clean:
	rm -rf .driftloop .pytest_cache
