# The two commands: `make demo` and `make test`. Both bootstrap the machine first.

# uv on PATH, else the copy pip installed into python3 (resolved after bootstrap has run).
UV = $(shell command -v uv 2>/dev/null || { python3 -m uv --version >/dev/null 2>&1 && echo python3 -m uv; } || echo uv)
RUN = $(UV) run --frozen
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test lint typecheck pytest bootstrap bootstrap-postgres

demo: bootstrap
	$(RUN) cadenza demo $(DEMO_ARGS)

# Lint, types and tests all run, so one report shows every failure; any failure fails.
test: bootstrap-postgres
	@status=0; \
	echo "== ruff"; $(RUN) ruff check . || status=1; \
	echo "== mypy"; $(RUN) mypy || status=1; \
	echo "== pytest (sqlite + postgres)"; \
	CADENZA_TEST_POSTGRES=1 $(RUN) pytest -p no:cacheprovider --durations=10 $(PYTEST_ARGS) || status=1; \
	exit $$status

lint: bootstrap
	$(RUN) ruff check .

typecheck: bootstrap
	$(RUN) mypy

# The test suite alone, on both dialects; PYTEST_ARGS="tests/store -x" narrows it.
pytest: bootstrap-postgres
	CADENZA_TEST_POSTGRES=1 $(RUN) pytest -p no:cacheprovider $(PYTEST_ARGS)

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-postgres:
	@bash scripts/bootstrap.sh --postgres
