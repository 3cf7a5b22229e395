# `make demo` and `make test` set up everything they need (both stacks' venvs, Java) and run.
#   .venv          the current stack (constraints/current.txt): make demo, make lint, make bench
#   .venv-horovod  the horovod stack (constraints/horovod.txt); make test runs the suite on both
SHELL := /bin/bash
VENV  := .venv
HVENV := .venv-horovod
PY    := $(VENV)/bin/python
# A stack's install reruns only when what it installs from changes: pyproject, its constraints, the script.
inputs = $(shell cat pyproject.toml constraints/$(1).txt deploy/install.sh 2>/dev/null | sha256sum | cut -c1-12)
STAMP_CURRENT := $(VENV)/.installed-current-$(call inputs,current)
STAMP_HOROVOD := $(HVENV)/.installed-horovod-$(call inputs,horovod)
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: install install-current install-horovod demo test lint bench clean

install: install-current install-horovod
install-current: $(STAMP_CURRENT)
install-horovod: $(STAMP_HOROVOD)

$(STAMP_CURRENT):
	deploy/install.sh current $(VENV)
	rm -f $(VENV)/.installed-* && touch $@

$(STAMP_HOROVOD):
	deploy/install.sh horovod $(HVENV)
	rm -f $(HVENV)/.installed-* && touch $@

demo: install-current
	$(PY) -m scilens.demos --output demo-output

# lint once (ruff, mypy), then the whole suite on each stack in turn; fails if either run fails. pytest exits 5
# when it collects no tests: a broken suite, so that fails loudly too. -rs lists every skip with its reason;
# --durations shows where the time budget goes.
test: install lint
	@failed=; for venv in $(VENV) $(HVENV); do \
	  stack=$$(cat $$venv/.scilens-stack | cut -d' ' -f1); \
	  echo "=== make test: the whole suite on the $$stack stack ($$venv) ==="; start=$$(date +%s); \
	  $$venv/bin/python -m pytest -rs --durations=25; code=$$?; \
	  if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests on $$stack" >&2; code=1; fi; \
	  echo "=== make test: $$stack stack exited $$code after $$(( $$(date +%s) - start )) s ==="; \
	  [ $$code -eq 0 ] || failed="$$failed $$stack"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: failed on:$$failed" >&2; exit 1; fi

# ruff (with mccabe C90 and numpydoc D rules on lib/) and mypy on lib/scilens; both configured in pyproject.toml.
lint: install-current
	$(VENV)/bin/ruff check lib jobs tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf demo-output .pytest_cache
