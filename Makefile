# hookedicl: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install everything they need (torch's CPU build first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench lab publish clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hookedicl demo

test: $(STAMP)
	$(PY) -m pytest -n auto

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lab: $(STAMP)
	$(PIP) install -q -e ".[notebooks]"
	$(VENV)/bin/jupyter lab notebooks/

# make publish ANALYSIS=<name> RUN=<run dir> [OUT=<dir>]  (see analyses/README.md)
publish: $(STAMP)
	$(VENV)/bin/hookedicl publish $(ANALYSIS) --run $(RUN) $(if $(OUT),--out $(OUT))

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) runs .pytest_cache
