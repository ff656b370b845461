"""Fixtures for the packaging tests: build tools, and the packages built once per run.

The tests that build, install or remove packages need root (they really install the
packages on this machine); without root they are skipped. Their tools come from
`make deps` (the Makefile's DEB_PACKAGES): a missing one fails the tests, it is never a
reason to skip. The static checks in test_static.py run as anyone.
"""

import pytest

from . import helpers

# Debian packages the packaging tests use: building and linting both packages, the RPM
# scratch root (busybox) and offline dependency resolution (dnf, createrepo-c), the
# clean-chroot test (piuparts, mmdebstrap), the man-page check, and the runtime
# dependencies of quiesce and the server the install test freezes. All are in the
# Makefile's DEB_PACKAGES (test_static checks that).
BUILD_TOOLS = [
    "build-essential", "debhelper", "dh-python", "python3-configargparse", "dpkg-dev", "lintian",
    "rpm", "rpmlint", "dnf", "createrepo-c", "busybox-static",
    "piuparts", "mmdebstrap", "debian-archive-keyring",
    "man-db", "groff-base", "devscripts",
    "mariadb-server", "mariadb-client",
]


@pytest.fixture(scope="session")
def root():
    if not helpers.is_root():
        pytest.skip("packaging tests install real packages: run them as root")


@pytest.fixture(scope="session")
def build_tools(root):
    missing = helpers.missing_apt_packages(BUILD_TOOLS)
    if missing:
        pytest.fail("Debian packages missing: %s: run 'make deps' (as root)" % " ".join(missing),
                    pytrace=False)


@pytest.fixture(scope="session")
def debs(build_tools, tmp_path_factory):
    """The .deb of the tree, and a rebuilt newer version whose conffile changed."""
    first = helpers.build_deb(str(tmp_path_factory.mktemp("deb-current")))
    newer = helpers.build_deb(str(tmp_path_factory.mktemp("deb-newer")),
                              version=first["version"] + "+pkgtest1",
                              config_append="# Added by the upgrade test build.\n")
    return {"current": first, "newer": newer}


@pytest.fixture(scope="session")
def rpms(build_tools, tmp_path_factory):
    """The RPM of the tree, and a rebuilt newer release whose config file changed."""
    first = helpers.build_rpm(str(tmp_path_factory.mktemp("rpm-current")))
    newer = helpers.build_rpm(str(tmp_path_factory.mktemp("rpm-newer")), release="2",
                              config_append="# Added by the upgrade test build.\n")
    return {"current": first, "newer": newer}
