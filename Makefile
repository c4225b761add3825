# padim-repro: `make reproduce` runs the whole reproduction and builds the book; `make test` runs the test suite.
# Every variable below can be overridden on the command line, e.g. `make category CATEGORY=pill D=200`.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
DATA_ROOT ?= data/mvtec_ad
RESULTS   ?= results
BOOK_DIR  ?= book
# Backbone weights: tv_in1k (torchvision ImageNet weights from the timm hub, needs internet) or a local checkpoint.
WEIGHTS_RESNET18        ?= tv_in1k
WEIGHTS_WIDE_RESNET50_2 ?= tv_in1k
DEVICE    ?= auto
# One category (`make category`); empty D = the paper's value for the backbone (100 / 550).
CATEGORY  ?= bottle
BACKBONE  ?= resnet18
D         ?=
LAYERS    ?= layer1,layer2,layer3
SIGMA     ?= 4
SEED      ?= 1024
WEIGHTS   ?= $(if $(filter wide_resnet50_2,$(BACKBONE)),$(WEIGHTS_WIDE_RESNET50_2),$(WEIGHTS_RESNET18))
FORCE     ?=

.PHONY: setup test bench category reproduce data runs ablations book clean-book

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are pinned in pyproject.toml (other builds pull multi-GB downloads).
	$(PY) -m pip install --quiet -e '.[notebooks,test]'
	touch $@
	@echo "Environment ready in $(VENV). For the browser check of the book: make browser-deps"

test: setup
	$(PY) -m pytest -q

# Speed and memory (figures printed and written to $(RESULTS)/bench/, never asserted), anomalib's PaDiM beside ours
# in its own .venv-anomalib, then the book's Cost page.
# BENCH_ROUNDS: paired predict rounds (fit: half as many); ANOMALIB_PAIRS: alternated anomalib / ours processes.
BENCH_ROUNDS   ?= 9
# The bench's device: the CPU unless DEVICE names a GPU (`make reproduce` on a GPU machine keeps the CPU figures).
BENCH_DEVICE   ?= $(if $(filter cuda%,$(DEVICE)),$(DEVICE),cpu)
ANOMALIB_PAIRS ?= 2
# DEVICE=cuda: the same figures on the GPU (written beside the CPU's as *_cuda.json; the Cost page shows both).
bench: setup
	$(PY) bench/bench_core.py --data-root $(DATA_ROOT) --weights $(WEIGHTS_RESNET18) --rounds $(BENCH_ROUNDS) \
	  --device $(BENCH_DEVICE) --json $(RESULTS)/bench/core.json
	$(PY) bench/bench_aupro.py
	$(PY) bench/bench_own_images.py --data-root $(DATA_ROOT) --weights $(WEIGHTS_RESNET18) --maps \
	  --json $(RESULTS)/bench/own_images.json
	bash bench/setup_anomalib.sh
	$(PY) bench/compare_anomalib.py --data-root $(DATA_ROOT) --weights $(WEIGHTS_RESNET18) --pairs $(ANOMALIB_PAIRS) \
	  --device $(BENCH_DEVICE) --json $(RESULTS)/bench/anomalib_vs_ours.json
	$(PY) -m padim_repro cost --results $(RESULTS) --book-dir $(BOOK_DIR)

# One category through the papermill notebook; outputs keyed by config under $(RESULTS)/runs/.
category: setup
	$(PY) -m padim_repro category --category $(CATEGORY) --backbone $(BACKBONE) --data-root $(DATA_ROOT) \
	  --weights $(WEIGHTS) --layers $(LAYERS) --sigma $(SIGMA) --seed $(SEED) --device $(DEVICE) \
	  --results $(RESULTS) $(if $(D),--d $(D)) $(if $(FORCE),--force)

# MVTec AD into DATA_ROOT (about 4.9 GB): resumable, sha256-checked, extracted safely. MVTEC_URL: a mirror.
MVTEC_URL ?=
MVTEC_SHA256 ?=
data: setup
	$(PY) -m padim_repro download --data-root $(DATA_ROOT) $(if $(MVTEC_URL),--url $(MVTEC_URL)) \
	  $(if $(MVTEC_SHA256),--sha256 $(MVTEC_SHA256))

# Every category present x both backbones (resumable), then the results tables.
runs: setup
	$(PY) -m padim_repro reproduce --data-root $(DATA_ROOT) --results $(RESULTS) --book-dir $(BOOK_DIR) --device $(DEVICE) \
	  --weights resnet18=$(WEIGHTS_RESNET18) --weights wide_resnet50_2=$(WEIGHTS_WIDE_RESNET50_2) $(if $(FORCE),--force)

# Everything: the data (downloaded when DATA_ROOT holds no category), the runs, the ablations, the experiments beyond
# the paper, the how-to page on Magnetic Tile, the cost benchmarks, then the book. A step that fails does not stop the later ones (the book shows what
# exists); the exit status reports the failure. Each step's wall time goes to $(RESULTS)/reproduce_times.tsv (read by
# the book) and is printed at the end.
REPRODUCE_STEPS := runs ablations beyond howto bench
reproduce: setup
	@fail=0; mkdir -p $(RESULTS); times=$(RESULTS)/reproduce_times.tsv; printf 'step\tseconds\tstatus\n' > $$times.tmp; \
	t0=$$(date +%s); \
	$(PY) -m padim_repro download --data-root $(DATA_ROOT) --if-empty $(if $(MVTEC_URL),--url $(MVTEC_URL)) \
	  $(if $(MVTEC_SHA256),--sha256 $(MVTEC_SHA256)) || { rm -f $$times.tmp; exit 1; }; \
	printf 'data\t%s\tok\n' $$(( $$(date +%s) - t0 )) >> $$times.tmp; \
	for step in $(REPRODUCE_STEPS); do \
	  t0=$$(date +%s); if $(MAKE) --no-print-directory $$step; then st=ok; else st=failed; fail=1; fi; \
	  printf '%s\t%s\t%s\n' $$step $$(( $$(date +%s) - t0 )) $$st >> $$times.tmp; \
	done; \
	mv $$times.tmp $$times; \
	t0=$$(date +%s); if $(MAKE) --no-print-directory book; then st=ok; else st=failed; fail=1; fi; \
	echo "make reproduce: wall time per step"; \
	tail -n +2 $$times | awk -F'\t' -v book=$$(( $$(date +%s) - t0 )) -v bst=$$st \
	  '{ printf "  %-8s %6d s  %s\n", $$1, $$2, $$3; t += $$2 } \
	  END { printf "  %-8s %6d s  %s\n  %-8s %6d s = %.1f min\n", "book", book, bst, "total", t + book, (t + book) / 60 }'; \
	exit $$fail

# The paper's ablations (Tables I, II, the blur sigma, the preprocessing) with ResNet-18, resumable; e.g.
# `make ablations CATEGORIES=bottle,transistor`. Notebooks go to book/ablations/, rows to $(RESULTS)/ablations/.
ablations: setup
	$(PY) -m padim_repro ablations --data-root $(DATA_ROOT) --weights $(WEIGHTS_RESNET18) --results $(RESULTS) \
	  --book-dir $(BOOK_DIR) \
	  --device $(DEVICE) $(if $(CATEGORIES),--categories $(CATEGORIES)) $(if $(FORCE),--force)

book: setup
	$(PY) -m padim_repro book --results $(RESULTS) --book-dir $(BOOK_DIR)

clean-book:
	rm -rf book/_build

# Chromium, for the test that renders the built book in a headless browser (skipped without it). Debian package;
# needs root (or prefix with sudo).
.PHONY: browser-deps
browser-deps:
	apt-get update && apt-get install -y chromium

# Experiments beyond the paper (non-aligned MVTec AD, EfficientNet-Lite0 backbone, Magnetic Tile), each an executed
# notebook in book/beyond/ with CSVs in $(RESULTS)/beyond/; resumable. MT_ROOT: the Magnetic Tile Defect dataset.
MT_ROOT ?= $(dir $(patsubst %/,%,$(DATA_ROOT)))magnetic_tile
.PHONY: beyond
beyond: setup
	$(PY) -m padim_repro beyond --data-root $(DATA_ROOT) --mt-root $(MT_ROOT) --results $(RESULTS) --book-dir $(BOOK_DIR) \
	  --weights $(WEIGHTS_RESNET18) --device $(DEVICE) $(if $(FORCE),--force)

# Every command on a GPU against the CPU (bench/check_cuda.py): run, ablations, beyond and reproduce on a cut-down copy
# of two categories and of Magnetic Tile, every metric compared (<= 1e-4), timings printed; about 3 min on one GPU.
# It needs no `make setup` (a GPU machine may have its own torch and no package index): CHECK_PYTHON=python3.
CHECK_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
CHECK_DEVICE ?= $(if $(filter cuda%,$(DEVICE)),$(DEVICE),cuda)
.PHONY: check-cuda
check-cuda:
	$(CHECK_PYTHON) bench/check_cuda.py --data-root $(DATA_ROOT) --mt-root $(MT_ROOT) --weights $(WEIGHTS_RESNET18) \
	  --device $(CHECK_DEVICE)

# The how-to page "PaDiM on your own images" (book/howto/own_images.ipynb): `fit` and `predict` on Magnetic Tile, with
# and without tiles; recomputed every time (HOWTO_LIMIT=N: N >= 20 images per part, quick). Without Magnetic Tile at MT_ROOT
# it is skipped, saying so, and the book keeps the page saying how to produce it.
HOWTO_LIMIT ?= 0
.PHONY: howto
howto: setup
	@if [ ! -d "$(MT_ROOT)" ]; then echo "make howto: skipped, no Magnetic Tile at $(MT_ROOT) (set MT_ROOT)"; exit 0; fi; \
	$(PY) -m padim_repro.study.own_images_page --mt-root $(MT_ROOT) --weights $(WEIGHTS_RESNET18) --results $(RESULTS) \
	  --book-dir $(BOOK_DIR) --device $(DEVICE) --limit $(HOWTO_LIMIT)
