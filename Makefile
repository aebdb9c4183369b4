# Two commands on a fresh Debian machine (as root): `make demo` and `make test`.
# Each bootstraps what is missing: Debian packages, then a .venv with roam installed editable.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
DEBS  := serf haproxy iptables iproute2 chromium chromium-driver python3-cryptography
STAMP := $(VENV)/.installed
DEBIAN_SITE := /usr/lib/python3/dist-packages

.PHONY: bootstrap debs venv bytecode test test-fast lint demo bench bench-scale soak clean

bootstrap: debs venv bytecode

debs:
	@missing=""; \
	command -v serf >/dev/null || missing="$$missing serf"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	test -d $(DEBIAN_SITE)/cryptography || missing="$$missing python3-cryptography"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(STAMP)

# roam's own modules byte-compiled, as pip does for a regular install. The editable install
# has none, and with PYTHONDONTWRITEBYTECODE set (as on this testbed) every agent compiled its
# ~130 modules from source at each start: 0.15 s of CPU per start and 1.3 MB more RSS for the
# agent's whole life (bench/idlemem.py; issue 18). Only changed files are compiled again, and
# Python checks each .pyc against its source (mtime and size), so a stale one is never used.
# The daemon runs as `python -OO` (peer/cli/__init__.py), so its optimised bytecode is made too.
bytecode: $(STAMP)
	@$(PY) -m compileall -q peer lb placement chaos
	@$(PY) -OO -m compileall -q peer lb placement chaos

# pyca/cryptography comes from Debian (python3-cryptography) where it is installed: Debian's
# build links the system's OpenSSL, which Python's own `ssl` maps in every agent already, where
# PyPI's wheel carries a second, static OpenSSL: 5.4 MB more RSS per agent (bench/idlemem.py;
# issues 16 and 18), and OpenSSL's security fixes then come with apt. Only that package and its
# metadata, and the cffi backend its bindings were built with, are linked into the venv (no other
# Debian module becomes visible); its own compiled parts are abi3, and the backend is built for
# CPython 3.11 (peer/trust/certs.py covers the API of version 38).
# pip resolves the links to /usr/lib, outside the venv, so it never uninstalls Debian's files.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	if [ -d $(DEBIAN_SITE)/cryptography ] && ls -d $(DEBIAN_SITE)/cryptography-*.dist-info >/dev/null 2>&1; then \
	  if [ -d "$$site/cryptography" ]; then $(PY) -m pip uninstall -y -q cryptography; fi; \
	  mkdir -p $(VENV)/debian && ln -sfn $(DEBIAN_SITE)/cryptography $(VENV)/debian/cryptography && \
	  ln -sfn $(DEBIAN_SITE)/cryptography-*.dist-info $(DEBIAN_SITE)/_cffi_backend.*.so $(VENV)/debian/ && \
	  echo "$(CURDIR)/$(VENV)/debian" > "$$site/roam-debian-cryptography.pth"; \
	fi
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@# The optimised bytecode of what the daemon (`python -OO`) imports: pip writes only the plain
	@# one, and with PYTHONDONTWRITEBYTECODE every agent start would compile every module (0.3 s).
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	$(PY) -OO -m compileall -q -j0 "$$site" >/dev/null || true; \
	if [ -w $(DEBIAN_SITE)/cryptography ]; then $(PY) -OO -m compileall -q $(DEBIAN_SITE)/cryptography >/dev/null || true; fi
	@touch $(STAMP)

# Two streams side by side: the static checks (import contracts, mypy) then the unit and
# property tests (CPU-bound, no agents), beside the integration and chaos tests (mostly
# waiting on real agents). Each pytest has its own temp dir; the markers split the tests, so
# every test runs exactly once. The first stream's output is shown after the second's.
test: bootstrap
	@checks_log=$$(mktemp /tmp/roam-checks.XXXXXX); \
	( $(VENV)/bin/lint-imports && $(PY) -m mypy peer placement lb chaos && \
	  $(PY) -m pytest -q -p no:cacheprovider --basetemp=/tmp/roam-pytest-unit \
		-m 'not integration and not netns' ) >$$checks_log 2>&1 & checks=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider --basetemp=/tmp/roam-pytest-int --durations=15 \
		-m 'integration or netns'; rc=$$?; \
	wait $$checks; checks_rc=$$?; \
	echo "--- import contracts, mypy, unit and property tests:"; cat $$checks_log; rm -f $$checks_log; \
	test $$rc -eq 0 -a $$checks_rc -eq 0

test-fast: bootstrap
	$(PY) -m pytest -q -m 'not integration and not netns'

demo: bootstrap
	$(PY) -m chaos demo --identity --report demo-report  # issue 19: a CA and mTLS between the clusters

# Every figure of issue 16 beside its goal and the paper's Table I; the cold start of the
# service's own command is measured in the same runs (bench/coldstart.py). See docs/benchmarks.md.
# The scripts that measure a goal append it to $ROAM_BENCH_GOALS; bench/goals.py prints them together last.
# The file is made only when a bench is asked for: a target-specific `:=` is expanded when the
# Makefile is read, so it made an empty file in /tmp on every `make`, `make test` included.
ifneq ($(filter bench bench-scale,$(MAKECMDGOALS)),)
BENCH_GOALS := $(shell mktemp /tmp/roam-bench-goals.XXXXXX)
endif
bench: export ROAM_BENCH_GOALS := $(BENCH_GOALS)
bench: bootstrap
	$(PY) bench/placement.py
	$(PY) bench/deploy.py
	$(PY) bench/reroute.py
	$(PY) bench/antientropy.py
	$(PY) bench/gossip.py
	$(PY) bench/migration.py
	$(PY) bench/derived.py  # issue 12: loss across SIGTERM restarts, heal after each lost derived file
	$(PY) bench/state.py  # issue 15: state handover window and bytes vs state size, beside seed 003's model
	$(PY) bench/goals.py "$$ROAM_BENCH_GOALS"

# Issue 18: real agents in namespaces at 10, 25 and 50 (about 8 min), then the 1,000 x 100,000
# simulation (about 10 min). See docs/scale.md.
bench-scale: export ROAM_BENCH_GOALS := $(BENCH_GOALS)
bench-scale: bootstrap
	$(PY) bench/scale.py --sizes 10 25 50
	$(PY) bench/simulate.py
	$(PY) bench/goals.py "$$ROAM_BENCH_GOALS"

soak: bootstrap
	$(PY) -m chaos run --scenario random --seed 1 --clusters 5 --services 20 --duration 600

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
