# Two entry points for a fresh machine: `make demo` (the whole demo pipeline) and `make test` (the test suite).
# Both create the virtual environment first; it is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv params pull clean

venv: $(STAMP)

# The editable install's build prints setuptools' notice "Editable installation." (InformationOnly, for every
# editable install of a project whose package sits at the top of the clone); it is silenced, nothing else.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e ".[pipeline,test]"
	touch $(STAMP)

# The demo pipeline (dvc.yaml) on every core: Snakemake runs its stages side by side, one thread each (the demo's
# train.threads and grid.efficiency.bench.threads), then `dvc commit` records them in dvc.lock, so that
# `dvc status` / `dvc repro` find the pipeline current. After a killed run, Snakemake reruns the jobs it left
# incomplete (--rerun-incomplete; a killed training resumes from its train_state.pt). `make demo
# EXPERIMENT=demo_seeds` first composes params.yaml for another experiment (params/experiment/demo_seeds.yaml: 5
# seeds per variant).
CORES ?= $(shell nproc 2>/dev/null || echo 2)
demo: $(STAMP)
ifdef EXPERIMENT
	DVC_NO_ANALYTICS=1 $(BIN)/python workflow/scripts/compose_params.py experiment=$(EXPERIMENT)
endif
	DVC_NO_ANALYTICS=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --quiet rules \
		--rerun-incomplete --config gpu_cpus=1 cpu_cpus=1
	DVC_NO_ANALYTICS=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc commit --force --quiet
	@cat results/tables/table?.md results/tables/all_tokens.md results/tables/soft_mask.md results/tables/comparisons.md
	@test ! -f results/tables/reproduction.md || cat results/tables/reproduction.md

test: $(STAMP)
	DVC_NO_ANALYTICS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadgroup

# ruff with the rules and line length of pyproject.toml ([tool.ruff]); .ci/run runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .

# params.yaml is the composition of params/ (what `dvc exp run` does); recompose it after editing params/.
params: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/python workflow/scripts/compose_params.py

# In a fresh clone: fetch every cached output from the DVC remote and mark it current for Snakemake too (a pull
# does not keep modification times: touch every output in DAG order; .dvcignore hides the `.snakemake_timestamp`
# this leaves in directory outputs from DVC).
pull: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/dvc pull
	DVC_NO_ANALYTICS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --touch --forceall --cores 1

clean:
	rm -rf $(VENV) .pytest_cache
