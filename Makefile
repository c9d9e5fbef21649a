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
	$(BIN)/saqt distortions render --sample --out $(DEMO_OUT)
	@echo "Demo done: 125 distortions of each sample photo, with one contact sheet per photo, in $(DEMO_OUT)/ (open $(DEMO_OUT)/*_contact.png)"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/distortions.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
