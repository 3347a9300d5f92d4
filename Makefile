# Two set-up commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test run check-config bench clean systemd-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/zalo-bridge demo

test: $(VENV)/.installed-test systemd-tools
	$(BIN)/python -m pytest -q

# The unit-file tests need systemd-analyze; install Debian's systemd package if it is missing.
systemd-tools:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (for systemd-analyze)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; fi; }

run: $(VENV)/.installed
	$(BIN)/zalo-bridge run --config config.toml

check-config: $(VENV)/.installed
	$(BIN)/zalo-bridge check-config --config config.toml

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/store.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
