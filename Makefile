# The book's commands. `make book` sets everything up and builds the book; `make test` runs the tests.
# Every target installs what it needs first, so each works on its own on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROFILE ?= cpu
NB     ?= 01_training
ARGS   ?=
TRAIN_ARGS ?=
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMEDRIVER := /usr/bin/chromedriver
# Debian packages, as root or through sudo.
APT_INSTALL := if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq

.PHONY: setup book test browser-test chapter bench clean-book status records

setup: $(VENV)/.installed $(FMNIST) $(CHROMEDRIVER) _vendor/.complete

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed (pins numpy 2.4, matplotlib 3.11)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The real Fashion-MNIST files, offline, from Debian's package.
$(FMNIST):
	@$(APT_INSTALL) dataset-fashion-mnist

# Headless Chromium and its driver for the browser test (tests/test_browser.py), from Debian: never
# downloaded at run time.
$(CHROMEDRIVER):
	@$(APT_INSTALL) chromium chromium-driver

# MathJax, require.js and the widget manager, so the HTML renders offline.
_vendor/.complete: tools/vendor_js.sh
	bash tools/vendor_js.sh

# The pipeline: train what has no record (Ray, one model a core; TRAIN_ARGS="--address auto" for a cluster),
# write the records of what is not yet analysed, then build every page from the records. With the profile's
# records committed (results/cpu/runs/), the first two steps find nothing to do and no checkpoint is read.
# FRESH=1 recomputes everything: it moves the profile's records and results aside (never deletes them).
FRESH ?=
book: setup
	@if [ -n "$(FRESH)" ]; then $(BIN)/python tools/fresh.py --profile $(PROFILE); fi
	$(BIN)/widedeep train --profile $(PROFILE) $(TRAIN_ARGS)
	$(BIN)/widedeep analyse --profile $(PROFILE) --runs-only
	# --all: rebuild every page, or Sphinx skips unchanged sources and keeps outputs of another profile
	WIDEDEEP_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . --all -W --keep-going
	$(BIN)/python tools/run_summary.py --profile $(PROFILE)

# What the profile's run has trained and recorded, and what is left (per run; core-hours on this machine).
status: setup
	$(BIN)/widedeep status --profile $(PROFILE)

# the per-run records of every finished run, and the README's paragraph on the run (commit them together)
records: setup
	OMP_NUM_THREADS=1 $(BIN)/widedeep analyse --profile $(PROFILE) --runs-only
	$(BIN)/python tools/run_summary.py --profile $(PROFILE)

test: setup
	$(BIN)/pytest --nbval-lax

# The published book (_build/html, built by `make book` if missing) in headless Chromium: nothing fetched
# from outside the book, no raw TeX, no empty widget, no JavaScript error. `make test` checks a smoke build.
browser-test: setup
	test -f _build/html/book/intro.html || $(MAKE) book
	WIDEDEEP_BOOK_HTML=_build/html WIDEDEEP_REQUIRE_BROWSER=1 $(BIN)/pytest -m browser tests/test_browser.py

chapter: setup
	$(BIN)/widedeep chapter $(NB) --profile $(PROFILE) $(ARGS)

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

clean-book:
	rm -rf _build
