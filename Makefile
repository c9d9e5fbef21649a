# Two entry points: `make demo` (set up and render the sample) and `make test` (set up and run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
DEMO_OUT ?= outputs/demo
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[cpu,dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/saqt build --out $(DEMO_OUT)/build
	$(BIN)/saqt distortions render --sample --out $(DEMO_OUT)/contact --types 1-25 --levels 1-5
	@echo "Demo done: SAQT shards of the 5 sample photos x 125 distortions in $(DEMO_OUT)/build/ (manifest build.json),"
	@echo "and one labelled contact sheet per photo in $(DEMO_OUT)/contact/*_contact.png"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/distortions.py
	$(BIN)/python benchmarks/build.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
