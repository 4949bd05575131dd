# Two commands do everything on a fresh machine:
#   make demo   -- build .venv, then run the main job on the embedded default (MNIST-1D)
#   make test   -- build .venv, then lint, type-check and run the test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SYSTEM  := $(VENV)/.system
# Debian packages some tests use: Chromium renders the HTML report, dataset-fashion-mnist holds Fashion-MNIST.
DEBIAN_PACKAGES := chromium dataset-fashion-mnist

.PHONY: demo test lint typecheck pytest reproduce clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

# Installed when this runs as root on a Debian-like system; elsewhere the tests that need them skip, naming
# the command that installs them.
$(SYSTEM):
	@mkdir -p $(VENV)
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(DEBIAN_PACKAGES) >/dev/null) \
	  || echo "warning: apt-get could not install $(DEBIAN_PACKAGES); the tests that need them skip"; \
	else \
	  echo "note: not root or no apt-get: tests needing $(DEBIAN_PACKAGES) skip (apt-get install $(DEBIAN_PACKAGES))"; \
	fi
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m sharpness.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks reproductions

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs on every core (pytest-xdist; each worker keeps one torch thread); PYTEST_WORKERS=0 runs it in
# this process alone, as a debugger wants.
PYTEST_WORKERS ?= auto
pytest: $(STAMP) $(SYSTEM)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

test: lint typecheck pytest

# The paper's settings at CPU scale (every reproductions/* folder with a study.yaml), one after another
# (about 1-2 hours each on a 2-core CPU); each resumes where it stopped.
# One setting: bash reproductions/reproduce.sh vit_scratch
REPRODUCTIONS := $(notdir $(patsubst %/study.yaml,%,$(wildcard reproductions/*/study.yaml)))
reproduce: $(STAMP) $(SYSTEM)
	for s in $(REPRODUCTIONS); do BIN=$(BIN) bash reproductions/reproduce.sh $$s || exit 1; done

clean:
	rm -rf $(VENV) runs
