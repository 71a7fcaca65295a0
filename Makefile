# Two entry points for a fresh machine: `make demo` (the whole demo pipeline) and `make test` (the test suite).
# Both create the virtual environment first; it is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv params pull clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[pipeline,test]"
	touch $(STAMP)

demo: $(STAMP)
	DVC_NO_ANALYTICS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/adatosk tables --print

test: $(STAMP)
	DVC_NO_ANALYTICS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2

# params.yaml is the composition of params/ (what `dvc exp run` does); recompose it after editing params/.
params: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/python workflow/scripts/compose_params.py

# In a fresh clone: fetch every cached output from the DVC remote and mark it current for Snakemake too.
pull: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/dvc pull
	DVC_NO_ANALYTICS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --touch --cores 1

clean:
	rm -rf $(VENV) .pytest_cache
