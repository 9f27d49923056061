# clipgeo: the two commands of the README.
#   make run   set up .venv and run the main job on the offline default
#   make test  set up .venv (with test extras) and run the test suite
.PHONY: run test setup setup-test bench clean-data lock stress

run: setup
	.venv/bin/clipgeo run

test: setup-test
	.venv/bin/python -m pytest -q -n 2 --dist loadgroup

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

bench: setup
	.venv/bin/python benchmarks/bench_geometry.py

# Regenerate requirements.lock from the working .venv (after changing a dependency on purpose);
# --all keeps setuptools (torch requires a recent one), pip itself is left out.
lock:
	{ sed -n '1,3p' requirements.lock; .venv/bin/pip freeze --all --exclude-editable | grep -v '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# Three pipelines at once on one data home, ROUNDS times (default 5): the five rounds of this
# concurrency check live here; `make test` runs it once (CLIPGEO_CONCURRENCY_ROUNDS unset = 1).
stress: setup-test
	CLIPGEO_CONCURRENCY_ROUNDS=$${ROUNDS:-5} .venv/bin/python -m pytest -q tests/test_operations.py -k three_pipelines_on_one_home

clean-data:
	rm -rf clipgeo-data
