# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint clean wheelhouse lock

setup: $(STAMP)

# torch pinned: a bare `torch` requirement could pull a multi-GB CUDA build. Triton pinned too: the
# ahead-of-time compile for sm_90 (kernels/aot.py, in the tests) binds launches through Triton's
# runtime internals, checked against this version (and 3.6, the GPU image's).
TORCH_PINS := torch==2.13.0 triton==3.9.0
# Every version .venv gets, pip and setuptools included, comes from the lock (a pip constraints file),
# so a new Ray or MLflow release cannot change a fresh set-up; `make lock` refreshes it. -c adds to
# the constraints the machine's pip config may have, it does not replace them. The pins are named
# again so that a lock out of step with them fails here. A changed lock re-installs.
LOCK := requirements.lock
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) $(TORCH_PINS) -e '.[dev]'
	touch $(STAMP)

# The newest versions the index serves within the pins and pyproject.toml, resolved in a scratch
# venv (.venv is left alone) and frozen into the lock. Local labels (+cpu) are dropped, as in the pins:
# `==2.13.0` takes the +cpu wheel wherever the machine's pip finds one. The lock's leading comment
# lines are kept.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_PINS) -e '.[dev]'
	{ sed -n '/^#/!q;p' $(LOCK); $(LOCK_VENV)/bin/python -m pip freeze --all --exclude attnsweep \
	  | sed -E 's/\+[A-Za-z0-9.]+$$//' | LC_ALL=C sort -f -t = -k 1,1; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(VENV)/bin/attnsweep run sweep=smoke

# Two workers: the tests that start services (Ray, clusters, servers, CLI runs) run in one, one after
# the other; the kernel, workload and analysis tests fill the other (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Hydra's wheels, and NVML's bindings (nvidia-ml-py), for a GPU host without network
# (benchmarks/gpu_check.sh installs them from .whl/): the versions .venv has, for CPython 3.12 (all pure Python). antlr4-python3-runtime 4.9.3 is an
# sdist only: its wheel is built here. A wheel already in .whl/ is kept, other versions of it removed.
# .venv is set up when missing, but never reinstalled for this (no dependency on the stamp).
WHEELHOUSE := .whl
HYDRA_WHEELS := hydra-core omegaconf antlr4-python3-runtime nvidia-ml-py
wheelhouse:
	@test -x $(PY) || $(MAKE) setup
	@mkdir -p $(WHEELHOUSE)
	@set -e; for name in $(HYDRA_WHEELS); do \
	  version=$$($(PY) -c "from importlib.metadata import version; print(version('$$name'))"); \
	  stem=$$(echo $$name | tr - _); \
	  for old in $(WHEELHOUSE)/$$stem-*.whl; do case $$old in *"*"*|*/$$stem-$$version-*) ;; *) rm -v $$old;; esac; done; \
	  if ls $(WHEELHOUSE)/$$stem-$$version-*.whl >/dev/null 2>&1; then echo "$(WHEELHOUSE): $$name $$version already there"; continue; fi; \
	  $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -d $(WHEELHOUSE) $$name==$$version 2>/dev/null \
	  || $(PY) -m pip wheel -q --no-deps -w $(WHEELHOUSE) $$name==$$version; \
	  ls $(WHEELHOUSE)/$$stem-$$version-*.whl; \
	done

clean:
	rm -rf results reports mlflow.db mlflow.db-wal mlflow.db-shm mlruns
