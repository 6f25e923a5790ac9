# lorakit: two commands do everything on a fresh machine.
#   make lab   create .venv, install the kit, open JupyterLab on notebooks/
#   make test  same set-up, then unit tests + every notebook under nbval (quick mode)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ARGS ?=
# Jupyter refuses to start as root (containers, CI) unless told to
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test unit notebooks quick-times readme student install compat clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The older library generation (transformers 4, diffusers 0.35, peft 0.17: constraints-compat.txt) in .venv-compat,
# with the same torch as .venv. tests/test_generations.py compares the two; CI builds it before `make test`.
COMPAT := .venv-compat
COMPAT_STAMP := $(COMPAT)/.installed
$(COMPAT_STAMP): pyproject.toml constraints.txt constraints-compat.txt
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	grep '^torch==' constraints.txt | cat - constraints-compat.txt > $(COMPAT)/constraints.txt
	$(COMPAT)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT)/bin/python -m pip install --quiet -c $(COMPAT)/constraints.txt -e ".[dev]"
	touch $(COMPAT_STAMP)

compat: $(COMPAT_STAMP)

lab: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/jupyter lab $(AS_ROOT) $(LAB_ARGS) notebooks/

# JupyterLab's defaults for this environment (the venv's app settings, not the user's): no news pop-up,
# no update check. A room without internet should not be asked about either.
$(LAB_SETTINGS): $(STAMP)
	mkdir -p $(dir $@)
	printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

# Unit tests, then every notebook executed in quick mode under nbval.
# TEST_WORKERS pytest processes (pytest-xdist; a file's tests, and so a notebook's cells, stay on one worker), one
# thread each: much of quick mode is Python and kernel start-up, which one process cannot spread over two cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	LORAKIT_QUICK=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -rs \
	  -n $(TEST_WORKERS) --dist loadfile tests notebooks --nbval-lax

# The fast unit tests only (no pipeline-level or subprocess tests, no notebooks): well under a minute.
unit: $(STAMP)
	LORAKIT_QUICK=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -rs tests -m "not slow"

# Execute every notebook in place in full mode, so committed notebooks carry full-mode outputs.
# One or a few: make notebooks NOTEBOOKS=notebooks/04_mode_collapse.ipynb
NOTEBOOKS ?= notebooks/[0-9]*.ipynb
notebooks: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  LORAKIT_QUICK=0 HF_HUB_OFFLINE=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.store_widget_state=True "$$nb" || exit 1; \
	done

# The student edition: every notebook with its exercises' solutions stubbed and outputs cleared, in student/.
# A student notebook that exists is kept (it may hold a learner's work); STUDENT_ARGS=--overwrite replaces it.
STUDENT_ARGS ?=
student: $(STAMP)
	$(BIN)/python -m lorakit student $(STUDENT_ARGS)

# Rewrite README.md's result tables and each notebook's at-a-glance block from notebooks/results/
# (after `make notebooks`).
readme: $(STAMP)
	$(BIN)/python -m lorakit readme

# Time every notebook in quick mode and record the times for the notebooks' at-a-glance blocks.
quick-times: $(STAMP)
	LORAKIT_QUICK=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q notebooks --nbval-lax
	$(BIN)/python -m lorakit readme --record-quick

clean-venv:
	rm -rf $(VENV)
