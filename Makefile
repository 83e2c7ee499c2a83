# One way to build, run and test. `make setup` first; everything runs in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup proto proto-check docs docs-check lint test test-all soak test-real-lean serve demo bench wheel-check ci

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"

proto:
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/buf lint

# Regenerate and fail if the committed code differs.
proto-check: proto
	git diff --exit-code -- kimina_grpc/v1
	@test -z "$$(git status --porcelain -- kimina_grpc/v1)" || (echo "untracked generated files" && exit 1)

# The configuration reference, docs/configuration.md, from the fields of the settings groups (kimina_grpc/settings/).
docs:
	$(BIN)/python scripts/gen_config_docs.py

# Fail if the committed reference differs from what the settings class says.
docs-check:
	$(BIN)/python scripts/gen_config_docs.py --check

lint:
	shellcheck tools/*.sh clients/*.sh scripts/*.sh .ci/run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The tests, without those marked slow (the fault soak, tests/test_soak.py, and a long sweep): `make test SLOW=1` or
# `make test-all` runs them too, as CI does (.ci/run).
SLOW ?=
test:
	$(BIN)/pytest -q $(if $(SLOW),,-m "not slow")

test-all:
	$(MAKE) test SLOW=1

# The fault soak (tests/test_soak.py) at full size: 5,000 proofs under every stand-in fault plus REPLs
# killed and stopped from outside, cancelled callers and a stalled reader; prints the server's
# RSS/fds/threads/children series. `make test-all` runs it with 600 (`make test` leaves it out).
soak:
	KIMINA_SOAK_PROOFS=5000 $(BIN)/pytest -q -s tests/test_soak.py

# The acceptance suite against real Lean (tests/real_lean: exploit proofs and the verdict expected at
# each trust level). Needs a workspace made by tools/install_lean.sh; skipped by `make test` without one.
test-real-lean:
	@test -n "$$LEAN_SERVER_WORKSPACE" || { echo "set LEAN_SERVER_WORKSPACE to a workspace made by tools/install_lean.sh"; exit 2; }
	$(BIN)/pytest -q -rs tests/real_lean

# Serves with the real Lean REPL (LEAN_SERVER_WORKSPACE, see tools/install_lean.sh), or with the
# stand-in REPL when LEAN_SERVER_REPL_COMMAND is set (see docs/client.md and docs/configuration.md).
# Without a key (LEAN_SERVER_API_KEY_FILE / LEAN_SERVER_API_KEY), a local server: 127.0.0.1, auth off.
serve:
	@if [ -z "$$LEAN_SERVER_API_KEY_FILE$$LEAN_SERVER_API_KEY$$LEAN_SERVER_AUTH" ]; then \
	  LEAN_SERVER_AUTH=off LEAN_SERVER_HOST="$${LEAN_SERVER_HOST:-127.0.0.1}" $(BIN)/kimina-grpc serve; \
	else $(BIN)/kimina-grpc serve; fi

# The server with the stand-in REPL and the stand-in ast_export instead of Lean, on 127.0.0.1 without auth:
# try the API on a machine without Lean (`kimina-grpc demo`, which works outside a checkout too).
demo:
	$(BIN)/kimina-grpc demo

bench:
	$(BIN)/python -m bench

# The wheel as users install it: client extra alone, then server (scripts/check_wheel.sh).
wheel-check:
	PY=$(PY) bash scripts/check_wheel.sh

ci: lint proto-check docs-check wheel-check test-all
