# The two commands a newcomer needs: `make demo` and `make test`. Both set up what is missing.
PY := .venv/bin/python

.PHONY: setup test test-slow lint demo bench clean
setup:
	@bash scripts/setup.sh

# ruff; who may import whom (ARCHITECTURE.md); the type checker over the runtime packages.
lint: setup
	@.venv/bin/ruff check .
	@$(PY) scripts/check_layers.py
	@$(PY) scripts/typecheck.py

# In parallel worker processes (pytest-xdist; at most 4, one per core); the slow tests
# measure and kill processes, so they run one at a time.
test: setup lint
	$(PY) -m pytest -q -m "not slow" -n auto --maxprocesses 4

# Soak, crash and load tests: too long for every run.
test-slow: setup
	$(PY) -m pytest -q -m slow

# DEMO_ARGS: e.g. make demo DEMO_ARGS="--report /tmp/payswitch-report" (HTML with plots)
demo: setup
	.venv/bin/payswitch demo $(DEMO_ARGS)

bench: setup
	$(PY) -m benchmarks.run all

clean:
	rm -rf .venv build *.egg-info .pytest_cache .hypothesis
