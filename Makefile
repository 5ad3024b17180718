# Both targets do all setup on a fresh machine: create .venv, install, run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ROOT ?= demo-root

.PHONY: demo test bench render clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m calreport demo --root $(DEMO_ROOT)

# Tests run on every core (pytest-xdist; TEST_WORKERS=0 runs them in one process); the long
# versions of the reliability loops and hypothesis searches: CALREPORT_LONG_TESTS=1 make test
TEST_WORKERS ?= auto
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: $(VENV)/.installed
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_ROOT) .pytest_cache
