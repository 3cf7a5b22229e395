# `make demo` and `make test` set up everything they need (.venv, pinned stack, Java) and run.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
# The install reruns only when what it installs from changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt deploy/install.sh 2>/dev/null | sha256sum | cut -c1-12)
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP):
	deploy/install.sh $(VENV)
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(PY) -m scilens.demo --output demo-output

# pytest exits 5 when it collects no tests: a broken suite, so fail loudly.
test: install
	$(VENV)/bin/ruff check lib jobs tests bench
	$(PY) -m pytest; code=$$?; \
	  if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$code

lint: install
	$(VENV)/bin/ruff check lib jobs tests bench

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf demo-output .pytest_cache
