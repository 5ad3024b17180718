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

# `calreport demo` builds only into an empty directory; a previous demo's root (it has the demo's
# manifest) is removed first, so `make demo` rebuilds it; anything else in DEMO_ROOT is refused.
demo: $(VENV)/.installed
	if [ -f $(DEMO_ROOT)/data/demo/harvest-files.json ]; then rm -rf $(DEMO_ROOT); fi
	$(PY) -m calreport demo --root $(DEMO_ROOT)

# Tests run under pytest-xdist with two workers more than the machine's cores: about a third of the
# suite's time is spent waiting (CLI subprocesses, Chromium, deliberate timeouts, fsync), and on
# 2 cores 4 workers finished in 189 s against 222 s for 2 (1,337 tests, same commit, quiet machine).
# TEST_WORKERS=0 runs them in one process; the long versions of the reliability loops and
# hypothesis searches: CALREPORT_LONG_TESTS=1 make test
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: the suite starts ~100 Python
# processes (workers, CLI runs, import probes), and each would otherwise compile calreport again.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)) + 2)")
test: $(VENV)/.installed
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: $(VENV)/.installed
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_ROOT) .pytest_cache
