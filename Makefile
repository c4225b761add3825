# padim-repro: `make reproduce` runs the whole reproduction and builds the book; `make test` runs the test suite.
# Every variable below can be overridden on the command line, e.g. `make category CATEGORY=pill D=200`.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
DATA_ROOT ?= data/mvtec_ad
RESULTS   ?= results
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

.PHONY: setup test bench category reproduce runs ablations results book clean-book

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are pinned in pyproject.toml (other builds pull multi-GB downloads).
	$(PY) -m pip install --quiet -e '.[notebooks,test]'
	touch $@
	@echo "Environment ready in $(VENV). For the browser check of the book: apt-get install chromium"

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_core.py --data-root $(DATA_ROOT) --weights $(WEIGHTS_RESNET18)
	$(PY) bench/bench_aupro.py

# One category through the papermill notebook; outputs keyed by config under $(RESULTS)/runs/.
category: setup
	$(PY) -m padim_repro category --category $(CATEGORY) --backbone $(BACKBONE) --data-root $(DATA_ROOT) \
	  --weights $(WEIGHTS) --layers $(LAYERS) --sigma $(SIGMA) --seed $(SEED) --device $(DEVICE) \
	  --results $(RESULTS) $(if $(D),--d $(D)) $(if $(FORCE),--force)

# Every category present x both backbones (resumable), then the results tables.
runs: setup
	$(PY) -m padim_repro reproduce --data-root $(DATA_ROOT) --results $(RESULTS) --device $(DEVICE) \
	  --weights resnet18=$(WEIGHTS_RESNET18) --weights wide_resnet50_2=$(WEIGHTS_WIDE_RESNET50_2) $(if $(FORCE),--force)

reproduce: setup runs book

book: setup
	$(PY) -m padim_repro book --results $(RESULTS)

clean-book:
	rm -rf book/_build
