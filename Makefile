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
	$(BIN)/saqt bank synth --source sample-bank --out $(DEMO_OUT)/bank
	$(BIN)/saqt label --build $(DEMO_OUT)/build --bank $(DEMO_OUT)/bank --encoder effnet-lite0 --rule topk --k 3 --out $(DEMO_OUT)/labels
	$(BIN)/saqt fidelity --bank $(DEMO_OUT)/bank --encoder effnet-lite0 --rule topk --k 3 --json $(DEMO_OUT)/fidelity.json
	$(BIN)/saqt distortions render --sample --out $(DEMO_OUT)/contact
	@echo "Demo done in $(DEMO_OUT)/: build/ (5 sample photos x 125 distortions), bank/ (a proxy-scored bank),"
	@echo "labels/ and saqt-iqa/ under labels/ (the labelled training set), contact/*_contact.png (every distortion)"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/distortions.py
	$(BIN)/python benchmarks/build.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
