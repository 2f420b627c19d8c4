# asr_nb: the two commands a new user needs are `make demo` and `make test`.
# Both install everything first (idempotent: re-running skips what is done).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# g++/cmake/zlib: kenlm (n-gram LM queries) builds from its source distribution
# chromium + chromium-driver: the documentation site's browser test (tests/test_site.py)
APT_PKGS := espeak-ng sox libsndfile1 g++ cmake zlib1g-dev chromium chromium-driver

.PHONY: install system venv demo test test-nbs test-py sync-check readme bench docs clean

install: system venv

system:
	@if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null || ! ldconfig -p | grep -q libsndfile || ! command -v g++ >/dev/null || ! command -v cmake >/dev/null || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing system packages: $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

## The main job: the tiny end-to-end recipe on the built-in synthetic corpus.
demo: install
	$(BIN)/asr_nb_demo

## Everything CI checks: notebooks clean, package in sync, notebook tests, pytest.
## The site build is part of it (about 30 s on 2 cores): tests/test_site.py checks the fresh build in Chromium.
test: install sync-check test-nbs docs test-py

sync-check:
	@before=$$(find nbs asr_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' | sort | xargs md5sum); \
	$(BIN)/nbdev_clean >/dev/null && \
	mid=$$(find nbs asr_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' | sort | xargs md5sum); \
	if [ "$$before" != "$$mid" ]; then echo "FAIL: nbdev_clean changed notebooks (run nbdev_clean and commit)"; diff <(echo "$$before") <(echo "$$mid"); exit 1; fi; \
	$(BIN)/nbdev_export && \
	after=$$(find nbs asr_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' | sort | xargs md5sum); \
	if [ "$$mid" != "$$after" ]; then echo "FAIL: nbdev_export changed asr_nb/ (notebooks and package out of sync)"; diff <(echo "$$mid") <(echo "$$after"); exit 1; fi; \
	rb=$$(md5sum README.md 2>/dev/null); $(MAKE) -s readme; \
	if [ "$$rb" != "$$(md5sum README.md)" ]; then echo "FAIL: README.md was not generated from nbs/index.ipynb (run make readme and commit)"; exit 1; fi; \
	echo "sync-check: notebooks clean, package in sync, README generated from nbs/index.ipynb"

test-nbs:
	$(BIN)/nbdev_test --n_workers 2 --timing

test-py:
	$(BIN)/python -m pytest -q tests

## README.md is generated from nbs/index.ipynb (its markdown cells; nbdev_readme needs quarto, which cannot be installed offline).
readme:
	@$(BIN)/python -c "import nbformat; nb = nbformat.read('nbs/index.ipynb', as_version=4); \
	open('README.md', 'w', encoding='utf-8').write('\n\n'.join(c.source.strip() for c in nb.cells if c.cell_type == 'markdown') + '\n')"

bench: install
	$(BIN)/python bench/run_all.py

## The documentation site: Sphinx + myst-nb reads nbs/*.ipynb with their stored outputs (nothing is executed)
## and autodoc the docstrings; open docs/_build/html/index.html. Incremental: re-running rebuilds what changed.
docs: install
	$(BIN)/sphinx-build -b html -q -j 2 docs docs/_build/html
	@echo 'docs: open docs/_build/html/index.html'

clean:
	rm -rf $(VENV) build dist *.egg-info _proc _docs docs/_build
