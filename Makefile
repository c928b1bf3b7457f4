# Two commands do everything on a fresh machine: `make demo` and `make test` (each runs ./setup.sh when .venv is absent).
PY := .venv/bin/python
.PHONY: setup demo test lint bench mutants mutants-sample clean

.venv/bin/python:
	./setup.sh

setup:
	./setup.sh

demo: .venv/bin/python
	$(PY) tools/finetune.py --cfg demo.yaml

# One thread per xdist worker: two workers with two OpenMP threads each on two cores slow torch down ~10x.
test: .venv/bin/python
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q tests

lint: .venv/bin/python
	$(PY) -m ruff check pointclora tools bench tests

bench: .venv/bin/python
	$(PY) bench/ops.py

# Mutation testing of the core modules, each against its own tests (not CI: hours from scratch; resumable, one
# worker, nice). Needs the dev extra (mutmut). Report: .mutants/report.md; the committed copy is docs/TESTING.md.
# mutants-sample: a seeded 5 % of every module's mutants, two workers: a quick estimate with 95 % intervals.
mutants: .venv/bin/python
	OMP_NUM_THREADS=1 nice -n 15 $(PY) bench/mutants.py $(MODULES)

mutants-sample: .venv/bin/python
	OMP_NUM_THREADS=1 nice -n 15 $(PY) bench/mutants.py --sample 0.05 --workers 2 $(MODULES)

clean:
	rm -rf .venv *.egg-info .pytest_cache
