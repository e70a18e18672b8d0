# torokiki-pipe developer entry points.  CI runs `make test` (see .ci/run).
#
#   make demo   every examples/*.eml, then the reply flow (a get, a reply to
#               it with a photo, a reply to the "Saved" mail with words),
#               through the installed gateway against the reference website,
#               replies written to a temporary outbox; the HTML replies go to
#               build/demo/, with phone-size screenshots when chromium is there
#   make test   Debian packages the tests use (when root and missing), the
#               virtualenv, the type check, then pytest; "no tests collected"
#               is a failure
#   make unit   only the tests not marked integration (no process, no server,
#               none slow): the virtualenv as for test, no Debian packages;
#               "no tests collected" is a failure here too
#   make typecheck  only mypy (setup.cfg [mypy]): the package, and each
#               adapter against its port (torokiki_pipe/ports.py)
#   make min-versions  only the check that the lowest dependency versions
#               setup.cfg states work (tests/min-versions.txt; part of test)
#
# Every target can be run again: the venv is created only when absent and
# pip installs are no-ops when nothing changed.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check -q
PYTEST_ARGS ?= -q
# The integration tests deliver replies with msmtp and exercise procmail,
# Postfix, swaks, imapfilter and Dovecot's IMAP server; headless Chromium shows
# the HTML replies at phone size (tests/test_browser.py, make demo).
APT_PACKAGES := msmtp procmail postfix swaks imapfilter dovecot-imapd chromium rsyslog opendkim opendkim-tools opendmarc openssl

.PHONY: all demo test unit typecheck min-versions bench deps venv install install-test clean

all: test

$(VPY):
	$(PYTHON) -m venv $(VENV)

venv: $(VPY)

install: $(VPY)
	$(PIP) install -e .

install-test: $(VPY)
	$(PIP) install -e '.[test]'

demo: install
	$(VPY) -m torokiki_pipe.devtools.demo

test: deps install-test
	$(VPY) -m mypy
	@status=0; $(VPY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

# The integration marker is set in tests/conftest.py and the test modules.
unit: install-test
	@status=0; $(VPY) -m pytest $(PYTEST_ARGS) -m "not integration" || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make unit: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

typecheck: install-test
	$(VPY) -m mypy

# A scratch venv with exactly tests/min-versions.txt runs the examples through
# this tree's pipe; it skips, saying why, when the package index is unreachable.
min-versions: deps install-test
	$(VPY) -m pytest $(PYTEST_ARGS) -rs tests/test_min_versions.py

# apt-get only as root and only for what is missing; a Postfix or Dovecot
# that the install started is stopped again so that it holds no port (the
# tests start their own instances on free loopback ports).
deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make deps: not root or no apt-get; missing:$$missing (tests needing them skip)" >&2; \
	  exit 0; \
	fi; \
	echo "make deps: installing$$missing"; \
	apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	case " $$missing " in *" postfix "*) \
	  if /usr/sbin/postfix status >/dev/null 2>&1; then \
	    /usr/sbin/postfix stop >/dev/null 2>&1 || service postfix stop >/dev/null 2>&1 || true; \
	  fi;; \
	esac; \
	case " $$missing " in *" dovecot-imapd "*) \
	  service dovecot stop >/dev/null 2>&1 || true;; \
	esac

# The benchmark times the gateway as production installs it: a plain (not
# editable) install in its own venv, so no editable-install hook runs at start.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=
bench:
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip --disable-pip-version-check -q install --force-reinstall --no-deps .
	$(BENCH_VENV)/bin/python -m pip --disable-pip-version-check -q install .
	@# The floor the ratios are measured against is `import requests, mailparser`, as
	@# when the targets were set; the gateway itself no longer installs requests.
	$(BENCH_VENV)/bin/python -m pip --disable-pip-version-check -q install 'requests>=2.25'
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .mypy_cache $(BENCH_VENV)
