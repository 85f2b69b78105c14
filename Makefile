# Two commands for a fresh clone:  make try   (offline try-out)   make test   (the test suite)
# Both create .venv on first use (see scripts/bootstrap.sh for how PyTorch is chosen).
VENV ?= .venv
export VENV

.PHONY: try test venv clean-venv

venv:
	@bash scripts/bootstrap.sh

try: venv
	@bash scripts/try.sh

test: venv
	$(VENV)/bin/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
