# Two commands for a fresh clone:  make try   (offline try-out)   make test   (the test suite)
# Both create .venv on first use (see scripts/bootstrap.sh for how PyTorch is chosen).
VENV ?= .venv
export VENV

.PHONY: try test lint venv clean-venv

venv:
	@bash scripts/bootstrap.sh

try: venv
	@bash scripts/try.sh

test: venv
	$(VENV)/bin/python -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
