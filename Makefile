# Developer and CI entry points. Everything runs with Debian's /usr/bin/python3 and the
# system PATH (a pyenv or other Python earlier on PATH is never used).
#
#   make deps    install what the tests need (Debian 12, as root; quiet and idempotent)
#   make test    deps, then the whole suite: tests/unit, tests/integration, tests/packaging;
#                a skip not allowed by tests/skips.py fails it (QUIESCE_STRICT_SKIPS=1)
#   make check   deps, then the quick layers only (everything but tests/packaging)
#   make demo    deps, then bench/demo.py
#   make completion  regenerate completion/quiesce from the parsers

SHELL := /bin/bash
PYTHON := /usr/bin/python3
SYSTEM_PATH := /usr/sbin:/usr/bin:/sbin:/bin
DEPS_DIR := $(CURDIR)/.deps
PYTEST_ARGS ?=

# mysql-connector-python has no Debian package: its pure-Python wheel goes to .deps/.
# 26.x needs Python >= 3.10 (Debian 12 has 3.11); 9.4.0 is the last release for 3.9.
MYSQL_CONNECTOR_VERSION := 26.10.0
MYSQL_CONNECTOR_STAMP := $(DEPS_DIR)/mysql_connector_python-$(MYSQL_CONNECTOR_VERSION).dist-info/METADATA

# Debian packages the test suite uses. Others may append to DEB_PACKAGES.
DEB_PACKAGES := mariadb-server mariadb-client \
	python3-pytest python3-pytest-timeout python3-pymysql python3-configargparse python3-pip \
	util-linux e2fsprogs procps ca-certificates \
	mmdebstrap galera-4 rsync iproute2

# MySQL 9.7 (Debian unstable root, built by mmdebstrap); a Galera cluster (galera-4, rsync
# state transfer, ss); PyMySQL's login to MySQL's caching_sha2_password over TCP without
# TLS (python3-cryptography, which python3-pymysql only recommends).
DEB_PACKAGES += python3-cryptography

# Loop-device filesystems (tests/integration/loopfs.py): losetup, mount, umount (mount),
# mkfs.ext4 and chattr (e2fsprogs), fsfreeze and unshare (util-linux).
DEB_PACKAGES += mount
# quiesce run's storage snapshots (tests/integration/test_run_snapshots.py): mkfs.btrfs
# and btrfs (btrfs-progs).
DEB_PACKAGES += btrfs-progs
# The snapshot schedulers' hooks (tests/integration/test_schedulers.py): sanoid, and the
# real ZFS it snapshots, which Debian's sanoid pulls in: zfs-fuse (this kernel has no ZFS
# module). Their timer and daemon are stopped again: the tests start zfs-fuse themselves
# and stop it, with the FUSE mount it makes (/zfs-kstat).
DEB_PACKAGES += sanoid zfs-fuse
# A real container (tests/integration/test_podman.py): podman and its runtime (crun).
DEB_PACKAGES += podman
# The example alerting rules' tests (tests/integration/test_alert_rules.py): promtool
# (prometheus; its service is not needed), reading the rules (python3-yaml).
DEB_PACKAGES += prometheus python3-yaml
# tests/packaging: build both packages (dpkg-buildpackage checks build-essential), lint
# them, the RPM scratch root (busybox) and offline dependency resolution (dnf,
# createrepo-c), the clean-chroot test (piuparts, mmdebstrap), the man-page and shell
# checks (man-db, groff-base; checkbashisms is in devscripts), copies of the tree (git).
DEB_PACKAGES += build-essential debhelper dh-python dpkg-dev lintian \
	rpm rpmlint dnf createrepo-c busybox-static \
	piuparts mmdebstrap debian-archive-keyring \
	man-db groff-base devscripts git

# zfs-autobackup (no Debian package), for its hook test only: kept out of PYTHONPATH.
ZFS_AUTOBACKUP_VERSION := 3.2
TOOLS_DIR := $(CURDIR)/.deps-tools
ZFS_AUTOBACKUP_STAMP := $(TOOLS_DIR)/zfs_autobackup-$(ZFS_AUTOBACKUP_VERSION).dist-info/METADATA

TEST_ENV := env PATH=$(SYSTEM_PATH) PYTHONPATH=$(CURDIR):$(DEPS_DIR) PYTHONDONTWRITEBYTECODE=1

.PHONY: deps deps-apt deps-python print-deb-packages test check demo completion clean

deps: deps-apt deps-python

# Installs only what is missing; prints nothing when all is there, the apt log on failure.
# Of prometheus only promtool is wanted: the server its package starts under systemd is
# stopped and disabled again.
deps-apt:
	@missing=""; \
	for pkg in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}\n' "$$pkg" 2>/dev/null | grep -qx installed || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: missing Debian packages:$$missing (run 'make deps' as root)" >&2; exit 1; fi; \
	  echo "deps: installing$$missing"; \
	  log=$$(mktemp); \
	  if ! { apt-get update -q && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; } >"$$log" 2>&1; then \
	    cat "$$log" >&2; rm -f "$$log"; exit 1; \
	  fi; \
	  rm -f "$$log"; \
	  case " $$missing " in *" prometheus "*) \
	    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || :; fi;; \
	  esac; \
	  case " $$missing " in *" sanoid "*) \
	    if [ -d /run/systemd/system ]; then systemctl disable --now sanoid.timer >/dev/null 2>&1 || :; fi;; \
	  esac; \
	  case " $$missing " in *" zfs-fuse "*) \
	    if [ -d /run/systemd/system ]; then systemctl disable --now zfs-fuse >/dev/null 2>&1 || :; \
	    else /etc/init.d/zfs-fuse stop >/dev/null 2>&1 || :; fi;; \
	  esac; \
	fi

# For tests/packaging/test_static.py: every tool the tests use is installed by deps.
print-deb-packages:
	@echo $(DEB_PACKAGES)

deps-python: $(MYSQL_CONNECTOR_STAMP) $(ZFS_AUTOBACKUP_STAMP)

# pip --target works with Debian 12's pip (23.0.1) and sidesteps its refusal to install
# into the system Python (PEP 668). Built in a scratch directory, then moved into place.
$(MYSQL_CONNECTOR_STAMP):
	@pyver=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	rm -rf "$(DEPS_DIR).new"; \
	log=$$(mktemp); \
	if ! PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q --disable-pip-version-check \
	      --no-warn-script-location --no-input --target "$(DEPS_DIR).new" \
	      --only-binary=:all: --platform any --implementation py --python-version "$$pyver" --no-deps \
	      "mysql-connector-python==$(MYSQL_CONNECTOR_VERSION)" >"$$log" 2>&1; then \
	  cat "$$log" >&2; rm -f "$$log"; rm -rf "$(DEPS_DIR).new"; exit 1; \
	fi; \
	rm -f "$$log"; \
	rm -rf "$(DEPS_DIR)"; mv "$(DEPS_DIR).new" "$(DEPS_DIR)"; \
	PYTHONPATH="$(DEPS_DIR)" $(PYTHON) -c 'import mysql.connector' || exit 1

$(ZFS_AUTOBACKUP_STAMP):
	@rm -rf "$(TOOLS_DIR).new"; \
	log=$$(mktemp); \
	if ! PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q --disable-pip-version-check \
	      --no-warn-script-location --no-input --target "$(TOOLS_DIR).new" --no-deps \
	      "zfs-autobackup==$(ZFS_AUTOBACKUP_VERSION)" >"$$log" 2>&1; then \
	  cat "$$log" >&2; rm -f "$$log"; rm -rf "$(TOOLS_DIR).new"; exit 1; \
	fi; \
	rm -f "$$log"; \
	rm -rf "$(TOOLS_DIR)"; mv "$(TOOLS_DIR).new" "$(TOOLS_DIR)"

test: deps
	$(TEST_ENV) QUIESCE_STRICT_SKIPS=1 $(PYTHON) -m pytest $(PYTEST_ARGS)

check: deps
	$(TEST_ENV) $(PYTHON) -m pytest -m "not packaging" $(PYTEST_ARGS)

demo: deps
	$(TEST_ENV) $(PYTHON) bench/demo.py

# The bash completion script, generated from the parsers and committed (tests/unit/test_completion.py
# fails when it is out of date); the package builds install it as it is.
completion:
	$(TEST_ENV) $(PYTHON) -m quiesce.completion > completion/quiesce.new
	mv completion/quiesce.new completion/quiesce

clean:
	rm -rf "$(DEPS_DIR)" "$(DEPS_DIR).new" "$(TOOLS_DIR)" "$(TOOLS_DIR).new" .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
