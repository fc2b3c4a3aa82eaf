# fno-jax: the two commands.  `make quickstart` and `make test` create and reuse .venv.
# Also: `make test-random` (property tests, new examples), `make mutation` (does the suite catch planted bugs?).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/quickstart
PYTEST_ARGS ?=

.PHONY: quickstart test test-random mutation lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

quickstart: $(STAMP)
	$(PY) -m experiments.quickstart --workdir=$(WORKDIR)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The property tests (hypothesis) with new random examples on every run; `make test` and CI draw the same examples
# each time (the "ci" profile in tests/conftest.py). Failing examples are kept in .hypothesis/ and replayed first.
HYPOTHESIS_TESTS := tests/test_properties.py tests/test_normalization.py tests/test_fuzz.py
test-random: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile --hypothesis-profile=random $(HYPOTHESIS_TESTS) $(PYTEST_ARGS)

# Plants realistic bugs in a copy of the code, one at a time, and reports which tests catch each (tests/mutation.py;
# minutes, not part of `make test`). MUTATION_ARGS="--only NAME ..." runs some of them.
MUTATION_ARGS ?=
mutation: $(STAMP)
	$(PY) tests/mutation.py $(MUTATION_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
