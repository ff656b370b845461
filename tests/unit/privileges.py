"""Unit tests that need root: they make files owned by other users, act as another user,
or check quiesce's rules for files that root owns. The RPM's %check runs tests/unit as the
build user (mock's mockbuild), where root cannot be had; `make test` runs them as root."""

import os

import pytest

ROOT_REASON = "needs root (unprivileged package builds run these unit tests as the build user)"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_REASON)
