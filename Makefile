# `make run`: install everything and run the platform with demo data.
# `make test`: install what the tests need and run them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	./scripts/system-packages run
	$(VENV)/bin/callcenter prompts
	$(VENV)/bin/callcenter run

test: $(STAMP)
	./scripts/system-packages test
	$(VENV)/bin/callcenter prompts
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy bus callcenter media ivr acd agent_ui bench

bench: $(STAMP)
	$(PY) -m bench.sip_capacity
	$(PY) -m bench.acd_routing

clean:
	rm -rf $(VENV) var
