# Every target runs in a virtual environment: the active one if there is one ($VIRTUAL_ENV), else
# a project-local .venv created on first use. A distribution's "externally managed" python3
# (PEP 668) then never blocks the install, and nothing touches the system's site-packages.
PYTHON_SYSTEM ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PYTHON := $(VENV)/bin/python
PIP = $(PYTHON) -m pip
# torch is pinned in the same pip command as everything that depends on it, so that pip takes
# the CPU build on disk instead of resolving a multi-GB CUDA build.
INSTALL = $(PIP) install -q torch==2.13.0 -e ".[distill,dev,demo,ray]"

.PHONY: install demo test lint bench clean

$(VENV)/bin/python:
	@$(PYTHON_SYSTEM) -m venv $(VENV) || { rm -rf $(VENV); echo "error: cannot create $(VENV): install Python's venv module (Debian/Ubuntu: apt-get install python3-venv) or activate a virtual environment first" >&2; exit 1; }

install: $(VENV)/bin/python
	$(INSTALL)

demo: install
	$(PYTHON) -m examples.demo --out demo_out --train-steps 30

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m benchmarks.isp
	$(PYTHON) -m benchmarks.build
	$(PYTHON) -m benchmarks.ray_build
	$(PYTHON) -m benchmarks.distill
	$(PYTHON) -m benchmarks.at_load

clean:
	rm -rf demo_out build *.egg-info .pytest_cache .ruff_cache
