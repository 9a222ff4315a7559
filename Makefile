PYTHON ?= python3
PIP = $(PYTHON) -m pip
# torch is pinned in the same pip command as everything that depends on it, so that pip takes
# the CPU build on disk instead of resolving a multi-GB CUDA build.
INSTALL = $(PIP) install -q torch==2.13.0 -e ".[distill,dev,demo,ray]"

.PHONY: install demo test lint bench clean

install:
	$(INSTALL)

demo: install
	$(PYTHON) -m rawpairs.demo --out demo_out --train-steps 30

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/isp.py
	$(PYTHON) benchmarks/build.py
	$(PYTHON) -m benchmarks.distill

clean:
	rm -rf demo_out build *.egg-info .pytest_cache .ruff_cache
