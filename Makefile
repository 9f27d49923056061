# clipgeo: the two commands of the README.
#   make run   set up .venv and run the main job on the offline default
#   make test  set up .venv (with test extras) and run the test suite
.PHONY: run test setup setup-test bench clean-data

run: setup
	.venv/bin/clipgeo run

test: setup-test
	.venv/bin/python -m pytest -q

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

bench: setup
	.venv/bin/python benchmarks/bench_geometry.py

clean-data:
	rm -rf clipgeo-data
