# yolo-distill — every target sets up what it needs (the virtualenv) by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Interim demo (until the pipeline issue lands the full `make demo`): teacher -> distilled student on coco8.
DEMO_DATA ?= ../shared/data/coco8/data.yaml
DEMO_OUT  ?= runs/demo
DEMO_ARGS ?= --epochs 3 --imgsz 128 --batch 8 --device cpu

.PHONY: install test test-all lint format demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/yolo-distill train --data $(DEMO_DATA) --model yolov8s.yaml $(DEMO_ARGS) --out $(DEMO_OUT)/teacher plots=False
	$(BIN)/yolo-distill distill --data $(DEMO_DATA) --student yolov8n.yaml --teacher $(DEMO_OUT)/teacher/weights/best.pt \
		--loss cwd $(DEMO_ARGS) --out $(DEMO_OUT)/student plots=False
	@echo "demo: distilled student in $(DEMO_OUT)/student (weights/best.pt, results.csv, distill.json)"

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
