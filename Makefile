# Set-up is part of every target: a fresh clone needs only Python 3.11+, pip and make.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench fuzz lab lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The main job: a whole room on this machine, no devices needed (p2pvoix/demo).
demo: $(STAMP)
	$(BIN)/p2pvoix demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Every decoder of a peer's bytes under the long hypothesis profile (docs/fuzzing.md): about ten
# minutes on two cores. FUZZ_EXAMPLES sets the examples per test; `make test` runs 30 of each.
FUZZ_EXAMPLES ?= 2500
fuzz: $(STAMP)
	P2PVOIX_FUZZ=long FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz \
	  --timeout=3600 -q --durations=10 $(PYTEST_ARGS)

# The network lab (docs/nat.md): homes behind NAT routers, relays, coturn, lossy links, each in a
# network namespace (root; skipped with the reason elsewhere), ending with a report table. Its
# fast cases also run in `make test`; the slow ones (marked lab_only) only here.
lab: $(STAMP)
	P2PVOIX_LAB=1 $(BIN)/python -m pytest tests/lab tests/test_netlab.py -rs $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check p2pvoix tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
